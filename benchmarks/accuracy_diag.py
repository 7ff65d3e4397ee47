"""Accuracy of the diagonal-Gaussian KL in float32: gkl_jax against peers and an exact reference.

Every implementation gets float32 inputs in its own parametrization (gkl_jax: log-variance, variance
and standard deviation; the hand-written formula: log-variance; distrax, TFP, numpyro, torch: the
scale) and is compared with the exact KL of exactly those float32 inputs, computed with mpmath at
50 digits. The figure is the maximum relative error over the rows of a (128, 64) batch.

Run:  python benchmarks/accuracy_diag.py [--rows 128] [--dim 64]
          [--out benchmarks/results/accuracy_diag.md]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _peers

import gkl_jax

mpmath.mp.dps = 50


def exact_kl_rows(mp, sp, mq, sq, param: str) -> np.ndarray:
    """Exact KL(p || q) per row of float32 inputs, evaluated in 50-digit arithmetic."""
    out = np.empty(mp.shape[0])
    for r in range(mp.shape[0]):
        total = mpmath.mpf(0)
        for a, b, c, d in zip(mp[r], sp[r], mq[r], sq[r], strict=True):
            a, b, c, d = (mpmath.mpf(float(v)) for v in (a, b, c, d))
            if param == "log_var":
                vp, vq = mpmath.exp(b), mpmath.exp(d)
            elif param == "var":
                vp, vq = b, d
            else:
                vp, vq = b * b, d * d
            total += (a - c) ** 2 / vq + vp / vq - 1 - mpmath.log(vp / vq)
        out[r] = float(total / 2)
    return out


def regimes(rng: np.random.Generator, rows: int, dim: int):
    """Yields (name, mu_p, log_var_p, mu_q, log_var_q) in float64."""
    shape = (rows, dim)

    def base():
        return rng.normal(size=shape), rng.uniform(-3.0, 1.0, size=shape)

    mp, lp = base()
    mq, lq = base()
    yield "typical VAE (independent p, q)", mp, lp, mq, lq
    for delta in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        mp, lp = base()
        mq = mp * (1 + delta * rng.normal(size=shape))
        lq = lp * (1 + delta * rng.normal(size=shape))
        yield f"nearly identical, rel. perturbation {delta:g}", mp, lp, mq, lq
    mp, lp = base()
    yield "mean only differs (1e-3)", mp, lp, mp + 1e-3 * rng.normal(size=shape), lp
    mp, lp = base()
    yield "variance only differs (1e-4)", mp, lp, mp, lp * (1 + 1e-4 * rng.normal(size=shape))
    mp, mq = 1e3 * rng.normal(size=shape), 1e3 * rng.normal(size=shape)
    lp, lq = rng.uniform(-30, 30, shape), rng.uniform(-30, 30, shape)
    yield "log-var in [-30, 30], large mean gaps", mp, lp, mq, lq


def as_param(lv: np.ndarray, param: str) -> np.ndarray:
    if param == "log_var":
        return lv.astype(np.float32)
    if param == "var":
        return np.exp(lv).astype(np.float32)
    return np.exp(0.5 * lv).astype(np.float32)


def max_rel_err(got, ref) -> float:
    got = np.asarray(got, np.float64)
    return float(np.max(np.abs(got - ref) / np.abs(ref)))


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)

    peers = _peers.available()
    ours = {
        p: jax.jit(lambda a, b, c, d, p=p: gkl_jax.kl_diag(a, b, c, d, param=p))
        for p in ("log_var", "std", "var")
    }
    cols = [f"gkl_jax ({p})" for p in ours] + list(peers)
    lines = [
        "| regime | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    rng = np.random.default_rng(args.seed)
    worst = {c: 0.0 for c in cols}
    for name, mp, lp, mq, lq in regimes(rng, args.rows, args.dim):
        mp32, mq32 = mp.astype(np.float32), mq.astype(np.float32)
        inputs = {p: (as_param(lp, p), as_param(lq, p)) for p in ("log_var", "std", "var")}
        refs = {p: exact_kl_rows(mp32, *_interleave(inputs[p], mq32), p) for p in inputs}
        errs = {}
        for p, fn in ours.items():
            got = fn(mp32, inputs[p][0], mq32, inputs[p][1])
            errs[f"gkl_jax ({p})"] = max_rel_err(got, refs[p])
        for peer, (p, fn) in peers.items():
            got = np.asarray(fn(mp32, inputs[p][0], mq32, inputs[p][1]))
            errs[peer] = max_rel_err(got, refs[p])
        for c in cols:
            worst[c] = max(worst[c], errs[c])
        lines.append(f"| {name} | " + " | ".join(f"{errs[c]:.1e}" for c in cols) + " |")
    lines.append("| **worst case** | " + " | ".join(f"**{worst[c]:.1e}**" for c in cols) + " |")

    # KL(p, p) must be exactly zero.
    mp, lp = rng.normal(size=(args.rows, args.dim)), rng.uniform(-3, 1, (args.rows, args.dim))
    zeros = {
        p: float(jnp.max(jnp.abs(fn(*(2 * (mp.astype(np.float32), as_param(lp, p)))))))
        for p, fn in ours.items()
    }
    table = "\n".join(lines)
    device = jax.devices()[0].device_kind
    text = (
        f"Max relative error of KL(p || q) in float32 vs exact (mpmath, 50 digits), "
        f"batch ({args.rows}, {args.dim}), jax {jax.__version__} on {device}.\n\n{table}\n\n"
        f"KL(p, p) for gkl_jax: max |value| = {max(zeros.values())} (exactly zero).\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


def _interleave(spreads, mq32):
    """(s_p, s_q), mu_q -> (s_p, mu_q, s_q) for exact_kl_rows' argument order."""
    return spreads[0], mq32, spreads[1]


if __name__ == "__main__":
    main()

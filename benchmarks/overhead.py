"""Per-call overhead at training-step size: a jitted (128, 8) KL against the hand-written formula.

A VAE step calls the KL term on a small batch thousands of times, so what matters there is the cost
of one jitted call (dispatch included), not throughput. For a (128, 8) float32 batch this times,
interleaved round-robin (so that a load change hits every function alike), the median of many
back-to-back calls of:

* the hand-written formulas (the pair KL and the VAE term ``-0.5 * sum(1 + lv - mu^2 - e^lv)``),
* ``gkl_jax.kl_diag`` (log_var, var and std), ``gkl_jax.kl_diag_standard``,
* ``gkl_jax.kl`` on two ``DiagGaussian`` pytrees,
* the same gkl_jax calls traced inside ``gkl_jax.checked`` (the opt-in value checks),

and reports each as a ratio to its hand-written counterpart measured in the same run. It also
counts the check primitives in each function's jaxpr (0 expected outside the checked mode).

Run:  python benchmarks/overhead.py [--rows 128] [--dim 8] [--out benchmarks/results/overhead.md]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gkl_jax


def hand_pair(mp, lp, mq, lq):
    return 0.5 * jnp.sum(lq - lp + (jnp.exp(lp) + (mp - mq) ** 2) / jnp.exp(lq) - 1.0, axis=-1)


def hand_standard(m, lv):
    return -0.5 * jnp.sum(1.0 + lv - m * m - jnp.exp(lv), axis=-1)


def count_checks(fn, *args) -> int:
    """Number of checkify ``check`` equations in the jaxpr of ``fn(*args)``, recursively."""

    def walk(jaxpr) -> int:
        n = 0
        for eqn in jaxpr.eqns:
            n += eqn.primitive.name == "check"
            for v in eqn.params.values():
                for sub in v if isinstance(v, list | tuple) else (v,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        n += walk(inner)
        return n

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--calls", type=int, default=2000, help="calls per timing sample")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing samples")
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.rows, args.dim)
    mp, mq = (jnp.asarray(rng.normal(size=shape), jnp.float32) for _ in range(2))
    lp, lq = (jnp.asarray(rng.normal(scale=0.3, size=shape), jnp.float32) for _ in range(2))
    vp, vq, sp, sq = jnp.exp(lp), jnp.exp(lq), jnp.exp(0.5 * lp), jnp.exp(0.5 * lq)
    p, q = gkl_jax.DiagGaussian(mp, lp), gkl_jax.DiagGaussian(mq, lq)

    def checked(fn):
        return jax.jit(lambda *a: gkl_jax.checked(fn)(*a)[1])

    cases = {
        # name: (function, arguments, baseline name)
        "hand-written pair": (jax.jit(hand_pair), (mp, lp, mq, lq), None),
        "hand-written VAE term": (jax.jit(hand_standard), (mp, lp), None),
        "kl_diag (log_var)": (jax.jit(gkl_jax.kl_diag), (mp, lp, mq, lq), "hand-written pair"),
        "kl_diag (var)": (
            jax.jit(lambda *a: gkl_jax.kl_diag(*a, param="var")),
            (mp, vp, mq, vq),
            "hand-written pair",
        ),
        "kl_diag (std)": (
            jax.jit(lambda *a: gkl_jax.kl_diag(*a, param="std")),
            (mp, sp, mq, sq),
            "hand-written pair",
        ),
        "kl(DiagGaussian, DiagGaussian)": (jax.jit(gkl_jax.kl), (p, q), "hand-written pair"),
        "kl_diag_standard": (
            jax.jit(gkl_jax.kl_diag_standard),
            (mp, lp),
            "hand-written VAE term",
        ),
        "kl_diag (log_var), checked mode": (
            checked(gkl_jax.kl_diag),
            (mp, lp, mq, lq),
            "hand-written pair",
        ),
        "kl_diag_standard, checked mode": (
            checked(gkl_jax.kl_diag_standard),
            (mp, lp),
            "hand-written VAE term",
        ),
    }
    for fn, a, _ in cases.values():
        jax.block_until_ready(fn(*a))

    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (fn, a, _) in cases.items():
            out = fn(*a)
            t0 = time.perf_counter()
            for _ in range(args.calls):
                out = fn(*a)
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - t0) / args.calls * 1e6)

    med = {name: statistics.median(s) for name, s in samples.items()}
    lines = [
        f"# Per-call time, jitted, ({args.rows}, {args.dim}) float32, CPU "
        f"({jax.devices()[0].device_kind}, jax {jax.__version__})",
        "",
        f"Median of {args.rounds} interleaved samples of {args.calls} back-to-back calls each.",
        "",
        "| function | us / call | ratio to hand-written | check eqns in jaxpr |",
        "|---|---:|---:|---:|",
    ]
    for name, (fn, a, base) in cases.items():
        ratio = "1.00 (baseline)" if base is None else f"{med[name] / med[base]:.2f}"
        checks = "-" if "checked" in name else str(count_checks(fn, *a))
        lines.append(f"| {name} | {med[name]:.2f} | {ratio} | {checks} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

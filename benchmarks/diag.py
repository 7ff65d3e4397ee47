"""Diagonal KL: forward and value + gradient against the hand-written formulas, the peers and the
memory bounds; compiled structure; eager calls against jitted ones.

Sections (each a markdown string), called by ``benchmarks/run.py``:

* :func:`speed`: jitted forward and value + gradient (all inputs) of ``kl_diag`` in each
  parametrization and ``kl_diag_standard``, next to the hand-written formula of the same
  parametrization (``jnp`` and ``jax.grad``), distrax, TFP on JAX, numpyro and torch (CPU) where
  installed, and the memory bounds (read the inputs once; read 4 and write 4 arrays). Ratios are
  to the hand-written formula measured in the same interleaved rounds.
* :func:`structure`: fusions and exponentials in the compiled value + gradient (XLA's HLO).
* :func:`eager`: eager calls of the public closed-form functions against the same call under
  ``jax.jit``, and the first call's time (trace + compile).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

import gkl_jax
from benchmarks import _peers
from benchmarks._timing import first_call, interleaved

# ---------------------------------------------------------------------------------------------
# hand-written formulas, one per parametrization (what a user writes without gkl_jax)
# ---------------------------------------------------------------------------------------------


def hand_log_var(mp, lp, mq, lq):
    return 0.5 * jnp.sum(lq - lp + (jnp.exp(lp) + (mp - mq) ** 2) / jnp.exp(lq) - 1.0, axis=-1)


def hand_std(mp, sp, mq, sq):
    return jnp.sum(jnp.log(sq / sp) + (sp * sp + (mp - mq) ** 2) / (2 * sq * sq) - 0.5, axis=-1)


def hand_var(mp, vp, mq, vq):
    return 0.5 * jnp.sum(jnp.log(vq / vp) + (vp + (mp - mq) ** 2) / vq - 1.0, axis=-1)


def hand_standard(m, lv):
    return -0.5 * jnp.sum(1.0 + lv - m * m - jnp.exp(lv), axis=-1)


HAND = {"log_var": hand_log_var, "std": hand_std, "var": hand_var}


def inputs(rows: int, dim: int, seed: int = 0) -> dict[str, tuple[jax.Array, ...]]:
    """float32 inputs of one pair batch in each parametrization (same Gaussians)."""
    rng = np.random.default_rng(seed)
    mp, mq = (rng.normal(size=(rows, dim)).astype(np.float32) for _ in range(2))
    lp, lq = (rng.uniform(-3, 1, size=(rows, dim)).astype(np.float32) for _ in range(2))
    out = {
        "log_var": (mp, lp, mq, lq),
        "std": (mp, np.exp(0.5 * lp), mq, np.exp(0.5 * lq)),
        "var": (mp, np.exp(lp), mq, np.exp(lq)),
    }
    return {k: tuple(jnp.asarray(a, jnp.float32) for a in v) for k, v in out.items()}


def _gkl(param):
    return lambda a, b, c, d: gkl_jax.kl_diag(a, b, c, d, param=param)


def _vg(fn, n):
    return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(n))))


def _rows(timings, groups, unit, digits):
    """Table rows ``| name | time [min-max] | ratio |`` with the ratio to each group's base."""
    lines = []
    for name, base in groups:
        t = timings[name]
        ratio = "1.00 (baseline)" if base is None else f"{t.median / timings[base].median:.2f}"
        lines.append(f"| {name} | {t.fmt(unit, digits)} | {ratio} |")
    return lines


def speed(rows: int, dim: int, *, rounds: int, calls: int, peers: bool = True) -> str:
    args = inputs(rows, dim)
    lv = args["log_var"]
    small = rows * dim <= 1 << 14
    unit, digits, label = (1e-6, 2, "us") if small else (1e-3, 2, "ms")

    fwd = {
        "read the 4 inputs once (memory bound)": (
            jax.jit(lambda a, b, c, d: jnp.sum(a) + jnp.sum(b) + jnp.sum(c) + jnp.sum(d)),
            lv,
        )
    }
    groups = [("read the 4 inputs once (memory bound)", "hand-written, log_var")]
    for param in ("log_var", "std", "var"):
        fwd[f"hand-written, {param}"] = (jax.jit(HAND[param]), args[param])
        fwd[f"gkl_jax.kl_diag, {param}"] = (jax.jit(_gkl(param)), args[param])
        groups += [
            (f"hand-written, {param}", None),
            (f"gkl_jax.kl_diag, {param}", f"hand-written, {param}"),
        ]
    fwd["hand-written VAE term"] = (jax.jit(hand_standard), lv[:2])
    fwd["gkl_jax.kl_diag_standard"] = (jax.jit(gkl_jax.kl_diag_standard), lv[:2])
    groups += [
        ("hand-written VAE term", None),
        ("gkl_jax.kl_diag_standard", "hand-written VAE term"),
    ]
    pair = (gkl_jax.DiagGaussian(lv[0], lv[1]), gkl_jax.DiagGaussian(lv[2], lv[3]))
    fwd["gkl_jax.kl(DiagGaussian, DiagGaussian)"] = (jax.jit(gkl_jax.kl), pair)
    groups.append(("gkl_jax.kl(DiagGaussian, DiagGaussian)", "hand-written, log_var"))
    torch_case = None
    if peers:
        for name, (param, fn) in _peers.available().items():
            if name == "hand-written jnp":
                continue
            if name == "torch":
                np_args = tuple(np.asarray(a) for a in args[param])
                torch_case = (fn, np_args)
                continue
            fwd[name] = (jax.jit(fn), args[param])
            groups.append((name, "hand-written, log_var"))
    t_fwd = interleaved(fwd, rounds=rounds, calls=calls)
    if torch_case is not None:  # eager torch: time it separately, fewer calls
        t_fwd |= interleaved(
            {"torch (CPU, eager)": torch_case}, rounds=rounds, calls=max(1, calls // 4)
        )
        groups.append(("torch (CPU, eager)", "hand-written, log_var"))

    vg = {
        "read 4 + write 4 arrays (memory bound)": (
            jax.jit(lambda a, b, c, d: (a + 1, b + 1, c + 1, d + 1)),
            lv,
        )
    }
    vgroups = [("read 4 + write 4 arrays (memory bound)", "hand-written autodiff, log_var")]
    for param in ("log_var", "std", "var"):
        vg[f"hand-written autodiff, {param}"] = (_vg(HAND[param], 4), args[param])
        vg[f"gkl_jax.kl_diag, {param}"] = (_vg(_gkl(param), 4), args[param])
        vgroups += [
            (f"hand-written autodiff, {param}", None),
            (f"gkl_jax.kl_diag, {param}", f"hand-written autodiff, {param}"),
        ]
    vg["hand-written VAE term autodiff"] = (_vg(hand_standard, 2), lv[:2])
    vg["gkl_jax.kl_diag_standard"] = (_vg(gkl_jax.kl_diag_standard, 2), lv[:2])
    vg["read 2 + write 2 arrays (memory bound)"] = (jax.jit(lambda a, b: (a + 1, b + 1)), lv[:2])
    vgroups += [
        ("hand-written VAE term autodiff", None),
        ("gkl_jax.kl_diag_standard", "hand-written VAE term autodiff"),
        ("read 2 + write 2 arrays (memory bound)", "hand-written VAE term autodiff"),
    ]
    t_vg = interleaved(vg, rounds=rounds, calls=calls)

    bound4 = t_vg["read 4 + write 4 arrays (memory bound)"].median
    bound2 = t_vg["read 2 + write 2 arrays (memory bound)"].median
    lines = [
        f"### Diagonal KL, ({rows}, {dim}) float32, jit: forward",
        "",
        f"{label} per call: median [min-max] of {rounds} interleaved rounds of {calls} calls; "
        "ratio of medians to the hand-written formula of the same parametrization.",
        "",
        f"| implementation | {label} / call | ratio |",
        "|---|---|---|",
        *_rows(t_fwd, groups, unit, digits),
        "",
        f"### Diagonal KL, ({rows}, {dim}) float32, jit: value + gradient (all inputs)",
        "",
        f"| implementation | {label} / call | ratio |",
        "|---|---|---|",
        *_rows(t_vg, vgroups, unit, digits),
        "",
        "Ratio to the memory bound (read 4 + write 4 arrays; read 2 + write 2 for the VAE term): "
        + ", ".join(
            f"{n} {t_vg[n].median / b:.2f}x"
            for n, b in (
                ("gkl_jax.kl_diag, log_var", bound4),
                ("hand-written autodiff, log_var", bound4),
                ("gkl_jax.kl_diag_standard", bound2),
                ("hand-written VAE term autodiff", bound2),
            )
        )
        + ".",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# compiled structure
# ---------------------------------------------------------------------------------------------


def hlo_counts(fn, args) -> dict[str, int]:
    """Fusions, exponentials, logs and divisions in the optimized HLO of ``fn(*args)``."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    entry = text[text.index("ENTRY") :]
    return {
        "fusions": len(re.findall(r"= [^=]*\bfusion\(", entry)),
        "exponential": len(re.findall(r"\bexponential\(", text)),
        "log": len(re.findall(r"\blog\(", text)),
        "divide": len(re.findall(r"\bdivide\(", text)),
    }


def structure(rows: int, dim: int) -> str:
    args = inputs(rows, dim)
    vg = lambda fn, n: jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(n)))  # noqa: E731
    cases = [
        ("hand-written, log_var", vg(hand_log_var, 4), args["log_var"]),
        ("gkl_jax.kl_diag, log_var", vg(_gkl("log_var"), 4), args["log_var"]),
        ("hand-written, std", vg(hand_std, 4), args["std"]),
        ("gkl_jax.kl_diag, std", vg(_gkl("std"), 4), args["std"]),
        ("hand-written VAE term", vg(hand_standard, 2), args["log_var"][:2]),
        ("gkl_jax.kl_diag_standard", vg(gkl_jax.kl_diag_standard, 2), args["log_var"][:2]),
    ]
    lines = [
        f"### Compiled value + gradient, ({rows}, {dim}) float32 (optimized HLO, "
        f"{jax.devices()[0].platform})",
        "",
        "| function | fusions | exp | log | divide |",
        "|---|---|---|---|---|",
    ]
    for name, fn, a in cases:
        c = hlo_counts(fn, a)
        lines.append(
            f"| {name} | {c['fusions']} | {c['exponential']} | {c['log']} | {c['divide']} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# eager vs jit
# ---------------------------------------------------------------------------------------------


def _full_args(batch, dim, seed=0):
    rng = np.random.default_rng(seed)

    def tril():
        a = np.tril(rng.normal(size=(batch, dim, dim)) * 0.1)
        idx = np.arange(dim)
        a[:, idx, idx] = np.exp(rng.uniform(-0.5, 0.5, size=(batch, dim)))
        return a.astype(np.float32)

    mp, mq = (rng.normal(size=(batch, dim)).astype(np.float32) for _ in range(2))
    return tuple(jnp.asarray(a) for a in (mp, tril(), mq, tril()))


def _mixture_pair(batch, dim, seed=0):
    rng = np.random.default_rng(seed)

    def mixture():
        mean = jnp.asarray(rng.normal(size=(batch, 4, dim)), jnp.float32)
        log_var = jnp.asarray(rng.uniform(-0.5, 0.5, size=(batch, 4, dim)), jnp.float32)
        logits = jnp.asarray(rng.normal(size=(batch, 4)), jnp.float32)
        return gkl_jax.GaussianMixture(logits, gkl_jax.DiagGaussian(mean, log_var))

    return mixture(), mixture()


def eager(rows: int, dim: int, *, rounds: int, calls: int) -> str:
    args = inputs(rows, dim)
    lv = args["log_var"]
    pair = (gkl_jax.DiagGaussian(lv[0], lv[1]), gkl_jax.DiagGaussian(lv[2], lv[3]))
    full = _full_args(max(rows // 64, 2), min(dim, 32))
    full_pair = tuple(gkl_jax.FullGaussian(m, t) for m, t in (full[:2], full[2:]))
    mix = _mixture_pair(max(rows // 4, 2), min(dim, 16))
    key = jax.random.key(0)
    fns = {
        "kl_diag (log_var)": (gkl_jax.kl_diag, lv),
        "kl_diag (std)": (_gkl("std"), args["std"]),
        "kl_diag_standard": (gkl_jax.kl_diag_standard, lv[:2]),
        "kl(DiagGaussian, DiagGaussian)": (gkl_jax.kl, pair),
        f"kl_full ({full[1].shape[0]}, {full[1].shape[1]})": (gkl_jax.kl_full, full),
        "jeffreys(DiagGaussian, DiagGaussian)": (gkl_jax.jeffreys, pair),
        "cross_entropy(DiagGaussian, DiagGaussian)": (gkl_jax.cross_entropy, pair),
        f"hellinger(FullGaussian, FullGaussian) {full[1].shape[:2]}": (
            gkl_jax.hellinger,
            full_pair,
        ),
        "renyi(alpha=0.3) (DiagGaussian, DiagGaussian)": (
            functools.partial(gkl_jax.renyi, alpha=0.3),
            pair,
        ),
        f"kl_mixture_variational, 4 components {mix[0].batch_shape}": (
            gkl_jax.kl_mixture_variational,
            mix,
        ),
        "kl_mixture_upper_bound, same": (gkl_jax.kl_mixture_upper_bound, mix),
        "kl_mc(num_samples=64) (DiagGaussian, DiagGaussian)": (
            functools.partial(gkl_jax.kl_mc, num_samples=64),
            (key, *pair),
        ),
    }
    compile_s = {}
    cases = {}
    for name, (fn, a) in fns.items():
        jitted = jax.jit(fn)
        compile_s[name] = first_call(fn, a)  # eager first call: traces and compiles the kernel
        cases[f"{name}, eager"] = (fn, a)
        cases[f"{name}, jit"] = (jitted, a)
    t = interleaved(cases, rounds=rounds, calls=calls)
    lines = [
        f"### Eager calls vs jax.jit, ({rows}, {dim}) float32",
        "",
        "us per call, median [min-max]; first call = trace + compile + run of the eager call.",
        "",
        "| function | eager us | jit us | eager / jit | first call s |",
        "|---|---|---|---|---|",
    ]
    for name in fns:
        e, j = t[f"{name}, eager"], t[f"{name}, jit"]
        lines.append(
            f"| {name} | {e.fmt(1e-6, 1)} | {j.fmt(1e-6, 1)} | {e.median / j.median:.2f} | "
            f"{compile_s[name]:.2f} |"
        )
    return "\n".join(lines)

"""Speed of the diagonal-Gaussian KL on CPU (jit), side by side with the peers, in one run.

For a (4096, 512) float32 batch it times, as the median of repeated calls after compilation:
* reading the four inputs once (``sum`` of all four: the memory floor),
* the plain hand-written jnp formula, distrax, TFP on JAX, numpyro, torch (where installed),
* gkl_jax.kl_diag in each parametrization, and kl_diag_standard,
* forward + gradient with respect to all four inputs (gkl_jax and the hand-written formula).

Ratios are to the hand-written formula measured in the same run.

Run:  python benchmarks/speed_diag.py [--rows 4096] [--dim 512]
          [--out benchmarks/results/speed_diag.md]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _peers

import gkl_jax


def bench(fn, args, repeats: int) -> float:
    """Median wall time in ms of ``fn(*args)`` after a warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    shape = (args.rows, args.dim)
    mp, mq = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
    lp, lq = (rng.uniform(-3, 1, size=shape).astype(np.float32) for _ in range(2))
    sp, sq = np.exp(0.5 * lp), np.exp(0.5 * lq)
    log_var_args = tuple(jnp.asarray(a) for a in (mp, lp, mq, lq))
    std_args = tuple(jnp.asarray(a) for a in (mp, sp, mq, sq))
    var_args = tuple(jnp.asarray(a) for a in (mp, sp * sp, mq, sq * sq))

    rows = []  # (name, ms)
    read4 = jax.jit(lambda a, b, c, d: jnp.sum(a) + jnp.sum(b) + jnp.sum(c) + jnp.sum(d))
    rows.append(("read the 4 inputs once (memory floor)", bench(read4, log_var_args, args.repeats)))

    peers = _peers.available()
    for name, (param, fn) in peers.items():
        inputs = log_var_args if param == "log_var" else std_args
        if name == "torch":
            inputs = tuple(np.asarray(a) for a in inputs)
            rows.append((name, bench(fn, inputs, args.repeats)))
        else:
            rows.append((name, bench(jax.jit(fn), inputs, args.repeats)))

    for param, inputs in (("log_var", log_var_args), ("std", std_args), ("var", var_args)):
        fn = jax.jit(lambda a, b, c, d, p=param: gkl_jax.kl_diag(a, b, c, d, param=p))
        rows.append((f"gkl_jax.kl_diag (param={param})", bench(fn, inputs, args.repeats)))
    std_fn = jax.jit(gkl_jax.kl_diag_standard)
    rows.append(("gkl_jax.kl_diag_standard", bench(std_fn, log_var_args[:2], args.repeats)))
    hand_std = jax.jit(lambda m, lv: -0.5 * jnp.sum(1 + lv - m * m - jnp.exp(lv), axis=-1))
    rows.append(("hand-written VAE term", bench(hand_std, log_var_args[:2], args.repeats)))

    hand = _peers.handwritten_jnp()
    for name, fn in (("hand-written jnp", hand), ("gkl_jax.kl_diag", gkl_jax.kl_diag)):
        grad = jax.jit(jax.value_and_grad(lambda *a, fn=fn: jnp.sum(fn(*a)), argnums=(0, 1, 2, 3)))
        rows.append((f"{name}: value + grad (4 inputs)", bench(grad, log_var_args, args.repeats)))
    copy4 = jax.jit(lambda a, b, c, d: (a + 1, b + 1, c + 1, d + 1))
    floor = bench(copy4, log_var_args, args.repeats)
    rows.append(("read 4 + write 4 arrays (memory floor)", floor))

    base = dict(rows)["hand-written jnp"]
    lines = ["| implementation | ms | vs hand-written |", "|---|---|---|"]
    lines += [f"| {n} | {t:.2f} | {t / base:.2f}x |" for n, t in rows]
    device = jax.devices()[0].device_kind
    text = (
        f"KL(p || q), diagonal, batch {shape} float32, jit, median of {args.repeats} calls; "
        f"jax {jax.__version__} on {device} ({jax.local_device_count()} device).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()

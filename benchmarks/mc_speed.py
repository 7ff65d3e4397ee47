"""Cost and efficiency of kl_mc's default estimator against plain k1, and its peak memory.

For a batch of ``--batch`` DiagGaussian posteriors p (d = ``--dim``) against a ``--components``-
component GaussianMixture prior q (a VampPrior-like pair, no closed form), at 64 .. 16384 samples:

* time (ms, median of repeated jitted calls): the value, and value + gradient with respect to all
  parameters of p and q, for ``estimator="auto"`` (k1 + antithetic pairs + control variates)
  and plain k1 (``antithetic=False, control_variates=False``);
* relative spread: the sd of the value over ``--seeds`` independent runs of one pair, over the
  truth (a 2^21-sample plain-k1 estimate);
* ``spread x sqrt(ms)``: the spread per unit of time (lower is better; independent of the sample
  count for an estimator whose cost is linear and whose spread falls as 1/sqrt(n)).

Then peak memory of one jitted kl_mc call at num_samples = 10^6, d = 64 (diagonal p and q, and a
4-component mixture q), from XLA's compiled memory analysis (temporaries + outputs), next to the
size of one copy of all the draws.

Run:  python benchmarks/mc_speed.py [--out benchmarks/results/mc_speed.md]
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gkl_jax import DiagGaussian, GaussianMixture, kl_mc

PLAIN = dict(estimator="k1", antithetic=False, control_variates=False)


def bench(fn, args, repeats: int) -> float:
    """Median wall time in ms of ``fn(*args)`` after a warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def pair(batch: int, d: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    p = DiagGaussian(f32(0.5 * rng.normal(size=(batch, d))), f32(rng.uniform(-3, 0, (batch, d))))
    q = GaussianMixture(
        f32(rng.normal(size=k)),
        DiagGaussian(f32(rng.normal(size=(k, d))), f32(0.3 * rng.normal(size=(k, d)))),
    )
    return p, q


def spread(p1, q, n, seeds, truth, **kw) -> float:
    p_s = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (seeds, *a.shape)), p1)
    est = jax.jit(functools.partial(kl_mc, num_samples=n, **kw))(jax.random.key(n + 1), p_s, q)
    return float(np.std(np.asarray(est.value, np.float64)) / truth)


def speed_table(args) -> list[str]:
    p, q = pair(args.batch, args.dim, args.components)
    p1 = jax.tree_util.tree_map(lambda a: a[0], p)
    truth = float(kl_mc(jax.random.key(7), p1, q, num_samples=1 << 21, **PLAIN).value)
    rows = [
        f"p: DiagGaussian batch ({args.batch}, {args.dim}); q: {args.components}-component "
        f"GaussianMixture; truth of the spread column {truth:.4f}. Median of {args.repeats} "
        f"jitted calls; spread over {args.seeds} seeds.",
        "",
        "| samples | estimator | value ms | value+grad ms | time vs plain k1 (value / grad) "
        "| relative spread | spread x sqrt(ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in args.sizes:
        cells = {}
        for name, kw in (("plain k1", PLAIN), ("auto", {})):
            f = jax.jit(functools.partial(kl_mc, num_samples=n, **kw))

            def loss(p, q, key, kw=kw, n=n):
                return jnp.sum(kl_mc(key, p, q, num_samples=n, **kw).value)

            g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            key = jax.random.key(0)
            t_v = bench(f, (key, p, q), args.repeats)
            t_g = bench(g, (p, q, key), args.repeats)
            s = spread(p1, q, n, args.seeds, truth, **kw)
            cells[name] = (t_v, t_g, s)
        for name, (t_v, t_g, s) in cells.items():
            base_v, base_g, _ = cells["plain k1"]
            row = (
                f"| {n} | {name} | {t_v:.2f} | {t_g:.2f} | {t_v / base_v:.2f}x / "
                f"{t_g / base_g:.2f}x | {s:.4f} | {s * np.sqrt(t_v):.4f} |"
            )
            print(row, flush=True)
            rows.append(row)
    return rows


def peak_memory(fn, *args) -> int:
    """Bytes of temporaries + outputs of the compiled call (XLA's memory analysis)."""
    mem = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(mem.temp_size_in_bytes + mem.output_size_in_bytes)


def memory_table(n: int = 1_000_000, d: int = 64) -> list[str]:
    rng = np.random.default_rng(1)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    p = DiagGaussian(f32(rng.normal(size=d)), f32(0.3 * rng.normal(size=d)))
    q = DiagGaussian(f32(rng.normal(size=d)), f32(0.3 * rng.normal(size=d)))
    mix = GaussianMixture(
        f32(rng.normal(size=4)), DiagGaussian(f32(rng.normal(size=(4, d))), f32(np.zeros((4, d))))
    )
    draws = n * d * 4
    rows = [
        f"Peak memory at num_samples = {n:,}, d = {d} (one copy of all draws: "
        f"{draws / 2**20:.0f} MiB):",
        "",
        "| pair | estimator | value MiB | value+grad MiB |",
        "|---|---|---|---|",
    ]
    for qname, qq in (("DiagGaussian q", q), ("4-component mixture q", mix)):
        for name, kw in (("auto", {}), ("plain k1", PLAIN), ("k3", dict(estimator="k3"))):

            def value(key, p, q, kw=kw):
                return kl_mc(key, p, q, num_samples=n, **kw)

            def grad(key, p, q, kw=kw):
                return jax.grad(lambda p, q: value(key, p, q).value, argnums=(0, 1))(p, q)

            key = jax.random.key(0)
            mv, mg = peak_memory(value, key, p, qq), peak_memory(grad, key, p, qq)
            row = f"| {qname} | {name} | {mv / 2**20:.1f} | {mg / 2**20:.1f} |"
            print(row, flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,256,1024,4096,16384")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=pathlib.Path, default=None)
    args = ap.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    head = [
        "# kl_mc: cost, spread per unit time, memory",
        "",
        f"Machine: {platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}, "
        "float32. Produced by `python benchmarks/mc_speed.py`.",
        "",
    ]
    print("\n".join(head), flush=True)
    lines = head + speed_table(args) + [""]
    lines += memory_table()
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

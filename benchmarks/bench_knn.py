"""kNN KL from samples: gkl_jax.kl_from_samples against universal-divergence on the same samples.

Run by hand (the lead reruns it at the end; timings on a shared 2-core machine are noisy, so
read the ratios, which are taken in one run with the two libraries interleaved):

    python benchmarks/bench_knn.py                 # N = M = 10000, D = 16 (+ 20000 x 32 ours)
    python benchmarks/bench_knn.py --ud-large      # also universal-divergence at 20000 x 32 (~40 s)
    python benchmarks/bench_knn.py --out benchmarks/results/knn.md

Memory at N = M = 1e6, D = 16 is read from XLA's compiled-memory analysis of the very program
that would run (no need to spend the ~30 min of CPU it takes on 2 cores); ``--run-big`` runs it
and reports the peak resident memory as well.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import jax
import numpy as np

from gkl_jax import kl_from_samples


def samples(n, m, d, seed=0):
    rng = np.random.default_rng(seed)
    x_p = rng.normal(size=(n, d)).astype(np.float32)
    x_q = (0.3 + 1.2 * rng.normal(size=(m, d))).astype(np.float32)
    exact = d * (0.5 / 1.44 + 0.5 * 0.09 / 1.44 - 0.5 + np.log(1.2))
    return x_p, x_q, exact


def time_gkl(x_p, x_q, k, repeats=5):
    fn = jax.jit(lambda a, b: kl_from_samples(a, b, k=k))
    a, b = jax.device_put(x_p), jax.device_put(x_q)
    t0 = time.perf_counter()
    est = jax.block_until_ready(fn(a, b))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        est = jax.block_until_ready(fn(a, b))
        times.append(time.perf_counter() - t0)
    return est, min(times), compile_s


def time_ud(x_p, x_q, k):
    from universal_divergence import estimate

    a, b = x_p.astype(np.float64), x_q.astype(np.float64)
    t0 = time.perf_counter()
    value = estimate(a, b, k=k)
    return value, time.perf_counter() - t0


def big_memory(n, d, run):
    shape = jax.ShapeDtypeStruct((n, d), np.float32)
    fn = jax.jit(lambda a, b: kl_from_samples(a, b))
    compiled = fn.lower(shape, shape).compile()
    mem = compiled.memory_analysis()
    total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    out = {
        "args_gib": mem.argument_size_in_bytes / 2**30,
        "temp_gib": mem.temp_size_in_bytes / 2**30,
    }
    out["total_gib"] = total / 2**30
    if run:
        x_p, x_q, exact = samples(n, n, d, seed=1)
        t0 = time.perf_counter()
        est = jax.block_until_ready(compiled(x_p, x_q))
        out["run_s"] = time.perf_counter() - t0
        out["value"], out["stderr"], out["exact"] = float(est.value), float(est.stderr), exact
        out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--ud-large", action="store_true", help="universal-divergence at 20000x32")
    ap.add_argument("--run-big", action="store_true", help="actually run N = M = 1e6, D = 16")
    ap.add_argument("--out", default=None, help="write a markdown table here")
    args = ap.parse_args()

    lines = [
        "# kNN KL from samples: gkl_jax vs universal-divergence",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}. "
        f"k = {args.k}, same float32 samples for both (universal-divergence gets them as "
        "float64), p = N(0, I), q = N(0.3, 1.44 I). Times: best of 5 after compilation for "
        "gkl_jax, one run for universal-divergence (scipy KDTree + joblib, n_jobs=1).",
        "",
        "| N = M | D | exact KL | gkl_jax value +- stderr | universal-divergence value | "
        "abs diff | gkl_jax s | universal-divergence s | speedup |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, d, with_ud in [(10_000, 16, True), (20_000, 32, args.ud_large)]:
        x_p, x_q, exact = samples(n, n, d)
        est, t_gkl, t_compile = time_gkl(x_p, x_q, args.k)
        if with_ud:
            ud, t_ud = time_ud(x_p, x_q, args.k)
            # re-time ours right after, to see the same machine load
            _, t_gkl2, _ = time_gkl(x_p, x_q, args.k, repeats=3)
            t_gkl = min(t_gkl, t_gkl2)
            row = (
                f"| {n} | {d} | {exact:.4f} | {float(est.value):.6f} +- {float(est.stderr):.4f} "
                f"| {ud:.6f} | {abs(float(est.value) - ud):.1e} | {t_gkl:.3f} | {t_ud:.2f} | "
                f"{t_ud / t_gkl:.1f}x |"
            )
        else:
            row = (
                f"| {n} | {d} | {exact:.4f} | {float(est.value):.6f} +- {float(est.stderr):.4f} "
                f"| (not run) | | {t_gkl:.3f} | (~40 s per the issue) | |"
            )
        print(row, f"(compile {t_compile:.1f} s)", flush=True)
        lines.append(row)
    big = big_memory(1_000_000, 16, args.run_big)
    lines += [
        "",
        "## N = M = 1e6, D = 16",
        "",
        f"XLA memory analysis of the compiled program: arguments {big['args_gib']:.3f} GiB, "
        f"temporaries {big['temp_gib']:.3f} GiB, total {big['total_gib']:.3f} GiB "
        "(limit: 24 GiB). Memory is O(block_size x M) for the distance block plus "
        "O(N (k + 1 + max_ties)) for the neighbour lists; there is never an N x M matrix.",
    ]
    if "run_s" in big:
        lines.append(
            f"Run: {big['run_s']:.0f} s, value {big['value']:.5f} +- {big['stderr']:.5f} "
            f"(exact {big['exact']:.5f}), peak RSS {big['peak_rss_gib']:.2f} GiB."
        )
    print("\n".join(lines[-3:]))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

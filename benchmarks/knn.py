"""Bias, spread and error-bar coverage of gkl_jax.kl_from_samples' kNN estimators; eager vs jit
time; moment-fit time at n = 2e5, d = 256.

Gaussian pairs with a known KL (float64 closed form), ``n = m`` samples of each, ``R`` seeds per
cell; estimators: plain ``k = 1``, plain ``k = 5`` and the default bias-reduced ensemble
(``k=None``, Moon & Hero 2014). Per cell: mean bias (with its standard error over the seeds),
spread (sd of the estimates over seeds), mean reported stderr, and coverage (share of seeds with
``|estimate - truth| <= 2 stderr``; the stderr ignores the bias, so low coverage means bias).

    python benchmarks/knn.py                        # print everything
    python benchmarks/knn.py --out benchmarks/results/knn.md   # replace this script's section

``--out`` rewrites only the part of the file below this script's marker, so the table of
``benchmarks/bench_knn.py`` above it stays.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from gkl_jax import kl_from_samples

MARK = "<!-- written by benchmarks/knn.py; everything below is replaced on each run -->"
ESTIMATORS = {"k=1": {"k": 1}, "k=5": {"k": 5}, "ensemble (default)": {}}
PAIRS = {
    # name: (mean_p, var_p, mean_q, var_q), isotropic, per coordinate
    "q wider": (0.0, 1.0, 0.3, 1.44),
    "q narrower": (0.0, 1.44, 0.3, 1.0),
    "mean shift": (0.0, 1.0, None, 1.0),  # mean_q = sqrt(2 / d): KL = 1
}


def pair(name, d):
    mp, vp, mq, vq = PAIRS[name]
    mq = np.sqrt(2.0 / d) if mq is None else mq
    r = vp / vq
    exact = 0.5 * d * (r - 1.0 - np.log(r) + (mq - mp) ** 2 / vq)
    return mp, vp, mq, vq, exact


def bias_table(dims, sizes, reps):
    fns = {
        k: jax.jit(lambda a, b, kw=kw: kl_from_samples(a, b, **kw)) for k, kw in ESTIMATORS.items()
    }
    rows = []
    for d in dims:
        for n in sizes:
            for name in PAIRS:
                mp, vp, mq, vq, exact = pair(name, d)
                vals = {k: [] for k in fns}
                ses = {k: [] for k in fns}
                for s in range(reps[n]):
                    rng = np.random.default_rng([d, n, s, len(name)])
                    x_p = (mp + np.sqrt(vp) * rng.normal(size=(n, d))).astype(np.float32)
                    x_q = (mq + np.sqrt(vq) * rng.normal(size=(n, d))).astype(np.float32)
                    for k, fn in fns.items():
                        e = fn(x_p, x_q)
                        vals[k].append(float(e.value))
                        ses[k].append(float(e.stderr))
                for k in fns:
                    v, se = np.array(vals[k]), np.array(ses[k])
                    rows.append(
                        dict(d=d, n=n, pair=name, est=k, exact=exact, bias=v.mean() - exact,
                             bias_se=v.std(ddof=1) / np.sqrt(len(v)), spread=v.std(ddof=1),
                             stderr=se.mean(), cover=np.mean(np.abs(v - exact) <= 2 * se))
                    )  # fmt: skip
                print(d, n, name, "  ".join(f"{r['est']}: {r['bias']:+.3f}" for r in rows[-3:]),
                      flush=True)  # fmt: skip
    return rows


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def timing(n=10_000, d=16):
    rng = np.random.default_rng(0)
    x_p = jax.device_put(rng.normal(size=(n, d)).astype(np.float32))
    x_q = jax.device_put((0.3 + 1.2 * rng.normal(size=(n, d))).astype(np.float32))
    out = []
    for label, kw in (("k=1", {"k": 1}), ("ensemble (default)", {})):
        t0 = time.perf_counter()
        jax.block_until_ready(kl_from_samples(x_p, x_q, **kw))
        first = time.perf_counter() - t0
        jitted = jax.jit(lambda a, b, kw=kw: kl_from_samples(a, b, **kw))
        jax.block_until_ready(jitted(x_p, x_q))
        eager, jit = [], []
        for _ in range(3):  # interleaved, to see the same machine load
            eager.append(best_of(lambda kw=kw: kl_from_samples(x_p, x_q, **kw), 1))
            jit.append(best_of(lambda j=jitted: j(x_p, x_q), 1))
        out.append((label, first, min(eager), min(jit)))
        print(label, out[-1], flush=True)
    return out


def moment_fit_timing(n=200_000, d=256):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    x_p = jax.device_put(rng.normal(size=(n, d)).astype(np.float32))
    x_q = jax.device_put((0.1 + rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * a)).astype(np.float32))
    out = []
    for cov in ("full", "diag"):
        t0 = time.perf_counter()
        e = jax.block_until_ready(kl_from_samples(x_p, x_q, method="gaussian", covariance=cov))
        first = time.perf_counter() - t0
        steady = best_of(
            lambda c=cov: kl_from_samples(x_p, x_q, method="gaussian", covariance=c), 2
        )
        out.append((cov, first, steady, float(e.value), float(e.stderr)))
        print(out[-1], flush=True)
    return out


def render(rows, times, fit, reps):
    lines = [
        MARK,
        "",
        "# kNN estimators: bias, spread and coverage against the exact KL",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, float32. `python benchmarks/knn.py`. p, q isotropic Gaussians "
        "(per coordinate: *q wider* N(0, 1) vs N(0.3, 1.44); *q narrower* N(0, 1.44) vs N(0.3, 1); "
        "*mean shift* N(0, 1) vs N(sqrt(2/d), 1), KL = 1); n = m; seeds per cell: "
        + ", ".join(f"{r} at n = {n}" for n, r in reps.items())
        + ". bias = mean estimate - exact (+- its standard error over the seeds); spread = sd of "
        "the estimates; stderr = mean reported jackknife stderr; cover = share of seeds with "
        "|estimate - exact| <= 2 stderr (nominal 95%; the stderr ignores the bias).",
        "",
        "| d | n | pair | exact | estimator | bias | spread | stderr | cover |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['n']} | {r['pair']} | {r['exact']:.3f} | {r['est']} | "
            f"{r['bias']:+.3f} +- {r['bias_se']:.3f} | {r['spread']:.3f} | {r['stderr']:.3f} | "
            f"{100 * r['cover']:.0f}% |"
        )
    lines += ["", "Mean |bias| over the pairs and sizes, relative to k = 1:", "",
              "| d | k=1 | k=5 | ensemble |", "|---|---|---|---|"]  # fmt: skip
    for d in sorted({r["d"] for r in rows}):
        mean = {k: np.mean([abs(r["bias"]) for r in rows if r["d"] == d and r["est"] == k])
                for k in ESTIMATORS}  # fmt: skip
        base = mean["k=1"]
        ens = mean["ensemble (default)"]
        lines.append(
            f"| {d} | {base:.3f} | {mean['k=5']:.3f} ({mean['k=5'] / base:.2f}x) | "
            f"{ens:.3f} ({ens / base:.2f}x) |"
        )
    lines += [
        "",
        "## Eager vs jitted call (N = M = 10000, d = 16)",
        "",
        "`kl_from_samples(x_p, x_q)` called directly runs an internally jitted function (the "
        "options are static). First call: tracing + compilation + run. Best of 3, interleaved.",
        "",
        "| estimator | first call s | eager s | jitted s | eager / jitted |",
        "|---|---|---|---|---|",
    ]
    for label, first, eager, jit in times:
        lines.append(f"| {label} | {first:.2f} | {eager:.3f} | {jit:.3f} | {eager / jit:.2f} |")
    lines += [
        "",
        '## Moment fit (method="gaussian"), n = m = 200000, d = 256',
        "",
        "One centred (d, n) x (n, d) matmul per set for the covariance; the delete-one jackknife "
        "in closed form (rank-one updates of the fit), O((n + m) d^2) in all.",
        "",
        "| covariance | first call s | steady s | value | stderr |",
        "|---|---|---|---|---|",
    ]
    for cov, first, steady, value, stderr in fit:
        lines.append(f"| {cov} | {first:.2f} | {steady:.2f} | {value:.4f} | {stderr:.4f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="markdown file whose knn.py section to replace")
    ap.add_argument("--quick", action="store_true", help="fewer seeds, n <= 3000")
    args = ap.parse_args()
    sizes = [1000, 3000] if args.quick else [1000, 3000, 10000]
    reps = {1000: 30, 3000: 12, 10000: 6} if not args.quick else {1000: 6, 3000: 3}
    rows = bias_table([2, 8, 16], sizes, reps)
    times = timing()
    fit = moment_fit_timing()
    text = render(rows, times, fit, {n: reps[n] for n in sizes})
    print(text)
    if args.out:
        old = open(args.out).read() if os.path.exists(args.out) else ""
        head = old.split(MARK)[0].rstrip("\n")
        with open(args.out, "w") as fh:
            fh.write((head + "\n\n" if head else "") + text)


if __name__ == "__main__":
    main()

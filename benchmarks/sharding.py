"""gkl_jax.sharding: per-device memory from XLA's compiled-memory analysis, and 1-device times.

    python benchmarks/sharding.py [--out benchmarks/results/sharding.md]

Memory: the programs that would run at N = 1e6 (the sharded kNN with N = M = 1e6, d = 16; the
streaming comparison of 1e6 posterior pairs, d = 16, in batches of 65536; the aggregate KL of two
sets of 1e6 posteriors with S = 1e6 draws) are compiled for a 1-device and an 8-device mesh, and
``memory_analysis()`` gives the bytes each device needs. The 8 devices are simulated CPU devices
(``--xla_force_host_platform_device_count=8``, set here): the memory is what each device of a real
8-device mesh would hold, but *times* on 8 simulated devices sharing 2 cores say nothing about
scaling, so none are reported. Times: one device, best of 3 after compilation.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import gkl_jax
from gkl_jax import sharding
from gkl_jax._src import ring, streaming

GIB = 1 << 30
MIB = 1 << 20


def memory(compiled):
    m = compiled.memory_analysis()
    if m is None:
        return None
    return m.argument_size_in_bytes, m.temp_size_in_bytes, m.output_size_in_bytes


def knn_memory(n, d, mesh):
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    return memory(ring._knn_sharded.lower(x, x, mesh, (1.0,), 64, 4).compile())


def stream_memory(batch, d, mesh):
    mu = jnp.zeros((batch, d), jnp.float32)
    pair = (gkl_jax.DiagGaussian(mu, mu), gkl_jax.DiagGaussian(mu, mu))
    fn = _COMPARE
    shapes = jax.eval_shape(fn, jax.tree_util.tree_map(lambda a: a[:1], pair))
    acc = streaming._init({k: (v.shape[1:], v.dtype) for k, v in shapes.items()}, 202)
    sharded, mask = sharding.shard_batch((pair, np.ones(batch, bool)), mesh)
    bins = jnp.asarray(streaming.default_bins())
    return memory(streaming._step.lower(acc, sharded, mask, bins, fn, mesh).compile())


def aggregate_memory(n, s, d, mesh):
    q = gkl_jax.DiagGaussian(jnp.zeros((n, d)), jnp.zeros((n, d)))
    chunk = ring._chunk_for("bench", None, n, s, mesh.size)
    lowered = ring._aggregate.lower(jax.random.key(0), q, q, mesh, s, chunk, chunk)
    return memory(lowered.compile())


def _compare_stats(pair):
    return streaming._comparison_stats(None, pair)


_COMPARE = _compare_stats


def best_of(fn, repeats=3):
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def time_stream(n, d, batch, mesh):
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=(2, batch, d)).astype(np.float32)
    lv = (0.3 * rng.normal(size=(batch, d))).astype(np.float32)
    pair = (gkl_jax.DiagGaussian(mu_a, lv), gkl_jax.DiagGaussian(mu_b, lv))
    batches = n // batch
    assert batches * batch == n

    def run():
        return sharding.stream(_COMPARE, [pair] * batches, mesh=mesh, progress=False).count

    return best_of(run)


def time_knn(n, d, mesh):
    rng = np.random.default_rng(1)
    x_p = jnp.asarray(rng.normal(size=(n, d)).astype(np.float32))
    x_q = jnp.asarray((0.3 + rng.normal(size=(n, d))).astype(np.float32))
    return best_of(lambda: sharding.kl_from_samples_sharded(x_p, x_q, k=1, mesh=mesh).value, 1)


def fmt(mem):
    if mem is None:
        return "n/a", "n/a"
    arg, temp, _out = mem
    return f"{arg / MIB:.1f}", f"{temp / MIB:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--knn-max", type=int, default=100_000, help="largest kNN N timed")
    args = ap.parse_args()
    d = 16
    mesh1 = sharding.batch_mesh(jax.devices()[:1])
    mesh8 = sharding.batch_mesh()
    rows = []
    for name, fn in (
        ("kNN, N = M = 1e6", lambda m: knn_memory(1_000_000, d, m)),
        ("streaming comparison, batch 65536 (any N)", lambda m: stream_memory(65536, d, m)),
        ("aggregate KL, N_a = N_b = 1e6, S = 1e6", lambda m: aggregate_memory(10**6, 10**6, d, m)),
    ):
        m1, m8 = fn(mesh1), fn(mesh8)
        rows.append((name, *fmt(m1), *fmt(m8)))
        print(rows[-1], flush=True)

    times = []
    for n in (100_000, 1_000_000):
        t = time_stream(n, d, 62500 if n >= 10**6 else 20000, mesh1)  # 5 or 16 batches
        times.append((f"streaming comparison, N = {n:.0e}", f"{t:.2f}", "measured"))
        print(times[-1], flush=True)
    knn_t = {}
    for n in (n for n in (10_000, 30_000, 100_000) if n <= args.knn_max):
        knn_t[n] = time_knn(n, d, mesh1)
        print("knn", n, knn_t[n], flush=True)
    big = max(knn_t)
    for n, t in knn_t.items():
        times.append((f"kNN, N = M = {n}", f"{t:.2f}", "measured"))
    for n in (n for n in (100_000, 1_000_000) if n > big):
        est = knn_t[big] * (n / big) ** 2
        times.append((f"kNN, N = M = {n:.0e}", f"~{est:.0f}", f"extrapolated as N^2 from {big}"))

    lines = [
        "# gkl_jax.sharding: per-device memory and one-device times",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"jax {jax.__version__}. "
        "d = 16, float32. Memory: XLA `memory_analysis()` of the compiled program, per device "
        "(arguments = this device's shards of the inputs; temporaries = its working set), for a "
        "1-device mesh and an 8-device mesh of simulated CPU devices. Produced by "
        "`python benchmarks/sharding.py --out benchmarks/results/sharding.md`.",
        "",
        "| program | 1 device: args MiB | temp MiB | 8 devices: args MiB per device "
        "| temp MiB per device |",
        "|---|---|---|---|---|",
        *(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows),
        "",
        "Per-device formulas (module docstring of `gkl_jax.sharding`): kNN "
        "`4 d (n + 2 m) / D + ~4 * block_size * m / D + O(n (k + max_ties) / D)` bytes; aggregate "
        "`O((N_a + N_b) d / D + S d / D + (S / D) chunk_size) + O(K)` (K <= S / 2 stratum scalars, "
        "replicated); streaming: one batch's rows / D plus the accumulators, independent of N.",
        "",
        "Reading the table: the kNN's per-device temporaries are the 64 x M / D block of "
        "approximate distances, its candidates and the neighbour lists; its arguments shrink "
        "exactly D-fold. The aggregate KL shrinks less because the stratified estimate's O(S) "
        "per-draw design (the stratum of each draw, per-stratum sums) is replicated on every "
        "device: at S = 1e6 that is the floor; the posterior sets and the draws are split D ways. "
        "The streaming step shrinks D-fold and does not depend on the dataset size.",
        "",
        "## Wall time on one device (CPU)",
        "",
        "Best of 3 (kNN: one run) after compilation, on a 2-core machine shared with other jobs "
        "(noisy). Scaling from 1 to 8 *simulated* devices is not measured: 8 simulated devices "
        "share the same 2 cores, so it would not be a speed test.",
        "",
        "| run | seconds | how |",
        "|---|---|---|",
        *(f"| {r[0]} | {r[1]} | {r[2]} |" for r in times),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

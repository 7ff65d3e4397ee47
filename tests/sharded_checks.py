"""The sharded checks of tests/test_sharding.py, run in one subprocess with 8 simulated CPU devices.

Run as ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_checks.py``; prints
one ``ok <name>`` line per check and exits non-zero on the first failure.
"""

import os
import sys

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    sys.exit("run with XLA_FLAGS=--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_numpy_rank_promotion", "raise")
# the tests' persistent compilation cache (tests/conftest.py), so that a second run compiles nothing
_CACHE = os.environ.get("GKL_JAX_TEST_CACHE") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import gkl_jax  # noqa: E402
from gkl_jax import sharding  # noqa: E402
from gkl_jax._src import ring  # noqa: E402

DEVICES = 8
assert jax.device_count() == DEVICES, jax.devices()
MESH8 = sharding.batch_mesh()
MESH1 = sharding.batch_mesh(jax.devices()[:1])
COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def ok(name):
    print("ok", name, flush=True)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def closed_forms():
    b, d = 64, 5
    keys = jax.random.split(jax.random.key(0), 4)
    mu_p, mu_q = (jax.random.normal(k, (b, d)) for k in keys[:2])
    lv_p, lv_q = (0.5 * jax.random.normal(k, (b, d)) for k in keys[2:])
    p, q = gkl_jax.DiagGaussian(mu_p, lv_p), gkl_jax.DiagGaussian(mu_q, lv_q)
    tril = jnp.tril(0.1 * jax.random.normal(keys[0], (b, d, d))) + 2.0 * jnp.eye(d)[None]
    fp, fq = gkl_jax.FullGaussian(mu_p, tril), gkl_jax.FullGaussian(mu_q, jnp.flip(tril, 0))
    cases = {
        "kl_diag": (gkl_jax.kl_diag, (mu_p, lv_p, mu_q, lv_q)),
        "kl_diag_standard": (gkl_jax.kl_diag_standard, (mu_p, lv_p)),
        "kl": (gkl_jax.kl, (p, q)),
        "kl_full": (gkl_jax.kl, (fp, fq)),
        "jeffreys": (gkl_jax.jeffreys, (p, q)),
        "renyi": (lambda a, c: gkl_jax.renyi(a, c, alpha=0.5), (p, q)),
        "bhattacharyya": (gkl_jax.bhattacharyya, (p, q)),
        "hellinger": (gkl_jax.hellinger, (p, q)),
        "wasserstein2": (gkl_jax.wasserstein2, (p, q)),
        "compare_posteriors": (
            lambda a, c: (lambda r: (r.kl_ab, r.kl_ba, r.per_dim_ab, r.per_dim_ba))(
                gkl_jax.compare_posteriors(a, c)
            ),
            (p, q),
        ),
    }
    for name, (fn, args) in cases.items():
        want = jax.jit(fn)(*args)  # one device, unsharded
        sharded = sharding.shard_batch(args, MESH8)
        jitted = jax.jit(fn)
        got = jitted(*sharded)
        for w, g in zip(
            jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got), strict=True
        ):
            assert np.array_equal(np.asarray(w), np.asarray(g)), (name, rel(g, w))
            assert g.sharding.is_equivalent_to(
                sharding.shard_batch(np.zeros(g.shape, g.dtype), MESH8).sharding, g.ndim
            ), (name, g.sharding)
            assert len(g.sharding.device_set) == DEVICES
        hlo = jitted.lower(*sharded).compile().as_text()
        found = [c for c in COLLECTIVES if c in hlo]
        assert not found, (name, found)
    ok("closed forms: bitwise equal, sharded outputs, no collective in the compiled HLO")


def knn():
    x_p = jax.random.normal(jax.random.key(1), (503, 3))
    x_q = 0.4 + 1.2 * jax.random.normal(jax.random.key(2), (401, 3))
    # exact copies within and across the sets, and ties at positive distances (rounding)
    dup_p = np.round(np.array(x_p), 1)
    dup_q = np.array(x_q)
    dup_p[200:204] = dup_p[10]
    dup_q[100:103] = dup_p[11]
    for k in (2, None):  # the plain estimator at rank 2, and the default bias-reduced ensemble
        ref = gkl_jax.kl_from_samples(dup_p, dup_q, k=k)
        one = sharding.kl_from_samples_sharded(dup_p, dup_q, k=k, mesh=MESH1)
        eight = sharding.kl_from_samples_sharded(dup_p, dup_q, k=k, mesh=MESH8)
        for est in (one, eight):
            assert type(est) is type(ref), (type(est), type(ref))
            assert rel(est.value, ref.value) <= 1e-6, (k, est, ref)
            assert rel(est.stderr, ref.stderr) <= 1e-6, (k, est, ref)
    # the neighbour lists themselves: the ring's merge equals the one-device search
    xs = sharding.shard_batch(np.asarray(x_p[:496]), MESH8)
    d_ring, i_ring = jax.jit(
        lambda a: ring._ring_knn(MESH8, a, a, 4, self_search=True, block_size=64)
    )(xs)
    from gkl_jax._src.from_samples import _knn

    d_one, i_one = _knn(x_p[:496], x_p[:496], 4, self_search=True, block_size=64)
    assert np.array_equal(np.asarray(d_ring), np.asarray(d_one))
    assert np.array_equal(np.asarray(i_ring), np.asarray(i_one))
    ok("kNN: ring search = one-device search; estimate within 1e-6 (copies, ties), 1 and 8 devices")


def knn_memory():
    n = m = 8192
    d = 8
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    per = {}
    for mesh in (MESH1, MESH8):
        compiled = ring._knn_sharded.lower(x, x, mesh, (1.0,), 64, 4).compile()
        stats = compiled.memory_analysis()
        if stats is None:  # this backend exposes no memory analysis
            print("skip kNN memory: no memory_analysis()")
            return
        per[mesh.size] = stats.temp_size_in_bytes + stats.argument_size_in_bytes
    # by construction: samples (n + 2 m) d / D, a 64 x m / D block of distances, neighbour lists
    bound = 4 * ((n + 2 * m) * d / DEVICES + 64 * m / DEVICES * 4) + 64 * n * 8 + (1 << 20)
    assert per[DEVICES] <= bound, (per, bound)
    assert per[DEVICES] < per[1] / 2, per
    ok(f"kNN memory per device: {per} bytes (8-device bound {bound:.0f})")


# the one-device references, jitted: one compilation each instead of one per eager operation
kl_aggregate = jax.jit(gkl_jax.kl_aggregate, static_argnames=("num_samples", "chunk_size"))
kl_aggregate_prior = jax.jit(gkl_jax.kl_aggregate_prior, static_argnames=("num_samples",))
kl_decomposition = jax.jit(
    gkl_jax.kl_decomposition, static_argnames=("num_samples", "estimator", "dataset_size")
)


def aggregate():
    n, d, s = 61, 3, 203  # n, s: not multiples of 8 (padding rows and draws)
    mu = jax.random.normal(jax.random.key(3), (n, d))
    q_a = gkl_jax.DiagGaussian(mu, jnp.full((n, d), -2.0))
    q_b = gkl_jax.DiagGaussian(1.1 * mu[: n - 20] + 0.2, jnp.full((n - 20, d), -1.5))
    key = jax.random.key(4)
    prior = gkl_jax.DiagGaussian(jnp.full((d,), 0.3), jnp.full((d,), 0.2))
    # float32, 8 devices: KL(q_a || q_b) directly; KL to the prior is a difference (mean
    # closed-form KL - I), its rounding relative to the mean closed-form KL (the one-device
    # stderr says so too)
    ref = kl_aggregate(key, q_a, q_b, num_samples=s)
    est = sharding.kl_aggregate_sharded(key, q_a, q_b, num_samples=s, mesh=MESH8, chunk_size=3)
    assert rel(est.value, ref.value) <= 1e-6 and rel(est.stderr, ref.stderr) <= 1e-6, (est, ref)
    ref = kl_aggregate_prior(key, q_a, prior, num_samples=s)
    est = sharding.kl_aggregate_prior_sharded(key, q_a, prior, num_samples=s, mesh=MESH8)
    total = float(jnp.mean(gkl_jax.kl(q_a, prior)))
    assert abs(float(est.value - ref.value)) <= 1e-6 * total, (est, ref, total)
    assert rel(est.stderr, ref.stderr) <= 1e-5, (est, ref)
    # a GaussianMixture prior (no closed form: the direct average), 8 devices
    mix = gkl_jax.GaussianMixture(
        jnp.log(jnp.array([0.3, 0.7])),
        gkl_jax.DiagGaussian(jnp.stack([jnp.zeros(d), jnp.ones(d)]), jnp.zeros((2, d))),
    )
    ref = kl_aggregate_prior(key, q_a, mix, num_samples=s)
    est = sharding.kl_aggregate_prior_sharded(key, q_a, mix, num_samples=s, mesh=MESH8)
    assert rel(est.value, ref.value) <= 1e-6 and rel(est.stderr, ref.stderr) <= 1e-6, (est, ref)
    # float64 and the standard prior: decomposition() (its aggregate_kl is this estimator)
    ok("aggregate posteriors: the same draws and estimate within 1e-6 on 8 devices")


def decomposition():
    # float64, so that every field (the completed ones are differences) is within 1e-6 of itself
    n, d, s = 45, 3, 150
    with jax.enable_x64(True):
        mu = jax.random.normal(jax.random.key(5), (n, d), jnp.float64)
        mu = mu.at[:, 1].add(0.8 * mu[:, 0])  # correlated: a total correlation well above 0
        q = gkl_jax.DiagGaussian(mu, jnp.full((n, d), -1.0, jnp.float64))
        prior = gkl_jax.DiagGaussian(jnp.full((d,), 0.1), jnp.full((d,), 0.3))
        key = jax.random.key(6)
        mss = {"estimator": "mss", "dataset_size": 1000}  # weights by global row index
        cases = [
            (MESH1, None, {}, {}),
            (MESH8, None, {}, {"chunk_size": 4}),
            (MESH8, prior, mss, {}),
        ]
        for mesh, p, options, chunk in cases:
            ref = kl_decomposition(key, q, p, num_samples=s, **options)
            est = sharding.kl_decomposition_sharded(
                key, q, p, num_samples=s, mesh=mesh, **options, **chunk
            )
            for field, want, got in zip(ref._fields, ref, est, strict=True):
                assert got.value.dtype == jnp.float64, field  # the standard prior keeps float64
                assert rel(got.value, want.value) <= 1e-6, (mesh.size, options, field, got, want)
                assert rel(got.stderr, want.stderr) <= 1e-6, (mesh.size, options, field, got, want)
    ok("decomposition: every field within 1e-6 on 1 and 8 devices (exact, mss; float64)")


def streaming():
    rng = np.random.default_rng(5)
    n, d = 1237, 4
    mu_a, mu_b = rng.normal(size=(2, n, d)).astype(np.float32)
    lv_a, lv_b = (0.6 * rng.normal(size=(2, n, d))).astype(np.float32)
    # float64 NumPy reference of the per-example KL and its per-dimension terms
    var_a, var_b = np.exp(lv_a.astype(np.float64)), np.exp(lv_b.astype(np.float64))
    per_ab = 0.5 * (
        (mu_a - mu_b.astype(np.float64)) ** 2 / var_b
        + var_a / var_b
        - 1
        - (lv_a - lv_b.astype(np.float64))
    )
    kl_ab = per_ab.sum(-1)

    def batches(size):
        for i in range(0, n, size):
            sl = slice(i, i + size)
            yield (
                gkl_jax.DiagGaussian(mu_a[sl], lv_a[sl]),
                gkl_jax.DiagGaussian(mu_b[sl], lv_b[sl]),
            )

    results = [
        sharding.stream_comparison(batches(bs), mesh=mesh, progress=False)
        for mesh, bs in ((MESH1, n), (MESH8, 100))
    ]
    first = results[0]
    assert first.count == n
    assert rel(first.mean["kl_ab"], kl_ab.mean()) <= 1e-6
    assert rel(first.mean["per_dim_ab"], per_ab.mean(0)) <= 1e-6
    assert rel(first.std["kl_ab"], kl_ab.std(ddof=1)) <= 1e-5
    assert rel(first.max["kl_ab"], kl_ab.max()) <= 1e-5
    one_device = np.asarray(gkl_jax.compare_posteriors(*next(batches(n))).kl_ab)
    want_hist = np.bincount(
        np.searchsorted(first.bins, one_device, side="right"), minlength=len(first.bins) + 1
    )
    assert np.array_equal(first.histogram["kl_ab"], want_hist)
    for other in results[1:]:
        assert other.count == n
        for name in first.mean:
            assert rel(other.mean[name], first.mean[name]) <= 1e-6, name
            assert rel(other.std[name], first.std[name]) <= 1e-6, name
            assert rel(other.min[name], first.min[name]) <= 1e-6, name
            assert rel(other.max[name], first.max[name]) <= 1e-6, name
        assert np.array_equal(other.histogram["kl_ab"], first.histogram["kl_ab"])
    ok("streaming: 1 and 8 devices, any batching, equal within 1e-6 and to float64 NumPy")


if __name__ == "__main__":
    import time

    for check in (closed_forms, knn, knn_memory, aggregate, decomposition, streaming):
        start = time.perf_counter()
        check()
        print(f"   {check.__name__}: {time.perf_counter() - start:.1f} s", flush=True)

"""gkl_jax.sharding: the multi-device checks run in one subprocess with 8 simulated CPU devices
(tests/sharded_checks.py); the one-device behaviour, the double-word sums and the errors here."""

import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import sharding
from gkl_jax._src import streaming

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sharded_checks_on_eight_simulated_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "sharded_checks.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-6000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("ok ")]
    assert len(lines) == 6, out.stdout
    for word in ("closed forms", "kNN:", "kNN memory", "aggregate", "decomposition", "streaming"):
        assert any(word in line for line in lines), (word, out.stdout)


def test_public_module_surface():
    assert sorted(sharding.__all__) == list(sharding.__all__)
    for name in sharding.__all__:
        obj = getattr(sharding, name)
        assert obj.__module__.startswith("gkl_jax"), name
        assert (obj.__doc__ or "").strip(), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_double_word_sum_matches_fsum_in_any_order(dtype, x64):
    rng = np.random.default_rng(0)
    v = (rng.standard_normal(10_001) * 10.0 ** rng.integers(-4, 6, 10_001)).astype(dtype)
    v[:3] = [1e7, -1e7, 0.5]  # cancellation
    want = math.fsum(v.astype(np.float64).tolist())
    sums = []
    for perm in (np.arange(v.size), rng.permutation(v.size), rng.permutation(v.size)):
        hi, lo = jax.jit(streaming._dd_sum)(jnp.asarray(v[perm]))
        assert hi.dtype == dtype
        sums.append(np.float64(hi) + np.float64(lo))
    scale = np.sum(np.abs(v.astype(np.float64)))
    eps = np.finfo(dtype).eps
    for s in sums:  # double-word: error ~ n eps^2 of the absolute sum, far below eps
        assert abs(s - want) <= 64 * v.size * eps * eps * scale + 1e-300
    assert abs(sums[1] - sums[0]) <= 1e-6 * abs(want)


def _pairs(mu_a, lv_a, mu_b, lv_b, size):
    for i in range(0, mu_a.shape[0], size):
        sl = slice(i, i + size)
        yield gkl_jax.DiagGaussian(mu_a[sl], lv_a[sl]), gkl_jax.DiagGaussian(mu_b[sl], lv_b[sl])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stream_comparison_against_float64_numpy(dtype, x64):
    rng = np.random.default_rng(1)
    n, d = 517, 3
    mu_a, mu_b = rng.normal(size=(2, n, d)).astype(dtype)
    lv_a, lv_b = (0.5 * rng.normal(size=(2, n, d))).astype(dtype)
    lv_b[:5], mu_b[:5] = lv_a[:5], mu_a[:5]  # identical pairs: exactly 0
    a64, b64 = mu_a.astype(np.float64), mu_b.astype(np.float64)
    la, lb = lv_a.astype(np.float64), lv_b.astype(np.float64)
    per = 0.5 * ((a64 - b64) ** 2 / np.exp(lb) + np.exp(la - lb) - 1.0 - (la - lb))
    kl_ab = per.sum(-1)
    res = sharding.stream_comparison(
        _pairs(mu_a, lv_a, mu_b, lv_b, 100), progress=False, bins=[0.0, 0.5, 1.0, 4.0]
    )
    tol = 2e-6 if dtype == np.float32 else 1e-12
    assert res.count == n
    np.testing.assert_allclose(res.mean["kl_ab"], kl_ab.mean(), rtol=tol)
    np.testing.assert_allclose(res.mean["per_dim_ab"], per.mean(0), rtol=tol)
    np.testing.assert_allclose(res.std["kl_ab"], kl_ab.std(ddof=1), rtol=10 * tol)
    assert res.min["kl_ab"] == 0.0
    np.testing.assert_allclose(res.max["kl_ab"], kl_ab.max(), rtol=tol)
    want = np.histogram(kl_ab, bins=[-np.inf, 0.0, 0.5, 1.0, 4.0, np.inf])[0]
    np.testing.assert_array_equal(res.histogram["kl_ab"], want)  # no value sits on an edge
    assert 0.0 <= res.quantile("kl_ab", 0.5) <= res.max["kl_ab"]
    text = res.summary()
    assert f"{n} examples" in text and "kl_ab" in text and "per_dim_ab" not in text


def test_stream_generic_function_and_batching_invariance():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(300, 4)).astype(np.float32)
    lv = rng.normal(size=(300, 4)).astype(np.float32)

    def fn(batch):
        m, v = batch
        return {"kl": gkl_jax.kl_diag_standard(m, v), "mean": m}

    results = [
        sharding.stream(fn, [(mu[i : i + b], lv[i : i + b]) for i in range(0, 300, b)], progress=p)
        for b, p in ((7, False), (300, False), (64, True))
    ]
    for r in results[1:]:
        assert r.count == 300
        np.testing.assert_allclose(r.mean["kl"], results[0].mean["kl"], rtol=1e-6)
        np.testing.assert_allclose(r.mean["mean"], results[0].mean["mean"], rtol=1e-6)
    np.testing.assert_allclose(results[0].mean["mean"], mu.astype(np.float64).mean(0), rtol=1e-6)


def test_stream_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    res = sharding.stream(
        lambda b: {"x": b}, [np.ones((3,), np.float32)] * 2, progress=True, desc="x"
    )
    assert res.count == 6 and res.mean["x"] == 1.0


def test_closed_forms_on_a_one_device_mesh_keep_the_sharding():
    mesh = sharding.batch_mesh()
    mu, lv = sharding.shard_batch((jnp.ones((4, 3)), jnp.zeros((4, 3))), mesh)
    out = jax.jit(gkl_jax.kl_diag_standard)(mu, lv)
    assert out.sharding.is_equivalent_to(mu.sharding, 1)
    np.testing.assert_array_equal(np.asarray(out), np.full(4, 1.5, np.float32))


def test_knn_sharded_on_one_device_equals_kl_from_samples_also_under_jit():
    x_p = jax.random.normal(jax.random.key(0), (300, 2))
    x_q = 0.5 + jax.random.normal(jax.random.key(1), (257, 2))
    ref = gkl_jax.kl_from_samples(x_p, x_q, k=3)
    jitted = jax.jit(sharding.kl_from_samples_sharded, static_argnames="k")
    for fn in (sharding.kl_from_samples_sharded, jitted):
        est = fn(x_p, x_q, k=3)
        np.testing.assert_allclose(est.value, ref.value, rtol=1e-6)
        np.testing.assert_allclose(est.stderr, ref.stderr, rtol=1e-6)
    # exact closed form of the two Gaussians: within the estimate's error bar (+ its bias)
    exact = float(gkl_jax.kl_diag(jnp.zeros(2), jnp.zeros(2), jnp.full(2, 0.5), jnp.zeros(2)))
    assert abs(float(est.value) - exact) <= 4 * float(est.stderr) + 0.05


@pytest.mark.invalid_input
def test_errors_name_the_function_and_argument():
    x = jnp.zeros((10, 2))
    with pytest.raises(ValueError, match="kl_from_samples_sharded: 'x_p' must be a 2-D"):
        sharding.kl_from_samples_sharded(jnp.zeros(10), x)
    with pytest.raises(ValueError, match="kl_from_samples_sharded: dimensions differ"):
        sharding.kl_from_samples_sharded(x, jnp.zeros((10, 3)))
    with pytest.raises(TypeError, match=r"kl_from_samples_sharded: 'mesh' must be a jax\.sharding"):
        sharding.kl_from_samples_sharded(x, x, mesh="cpu")
    with pytest.raises(ValueError, match="too few samples"):
        sharding.kl_from_samples_sharded(x[:2], x, k=1)
    q = gkl_jax.DiagGaussian(x, x)
    with pytest.raises(ValueError, match="kl_aggregate_sharded: num_samples=1"):
        sharding.kl_aggregate_sharded(jax.random.key(0), q, q, num_samples=1)
    with pytest.raises(TypeError, match="kl_aggregate_prior_sharded: 'prior' must be None"):
        sharding.kl_aggregate_prior_sharded(jax.random.key(0), q, "N(0, I)", num_samples=4)
    mix = gkl_jax.GaussianMixture(jnp.zeros(1), gkl_jax.DiagGaussian(x[:1], x[:1]))
    with pytest.raises(
        TypeError, match=r"kl_decomposition_sharded: 'prior' must be None .* factorized prior"
    ):
        sharding.kl_decomposition_sharded(jax.random.key(0), q, mix, num_samples=4)
    with pytest.raises(ValueError, match="kl_decomposition_sharded: estimator='mss' needs"):
        sharding.kl_decomposition_sharded(jax.random.key(0), q, num_samples=4, estimator="mss")
    with pytest.raises(ValueError, match="stream: 'batches' yielded no examples"):
        sharding.stream(lambda b: {"x": b}, [], progress=False)
    with pytest.raises(ValueError, match="stream: a batch's leaves must share a leading axis"):
        sharding.stream(lambda b: {"x": b[0]}, [(np.ones(3), np.ones(4))], progress=False)
    with pytest.raises(ValueError, match="batch_mesh: 'devices' is empty"):
        sharding.batch_mesh([])


def test_quantile_interpolates_inside_a_bin():
    res = sharding.stream(
        lambda b: {"x": b},
        [np.linspace(0.0, 1.0, 101, dtype=np.float32)],
        progress=False,
        bins=[0.0, 0.5, 1.0],
    )
    assert abs(res.quantile("x", 0.5) - 0.5) <= 0.01
    assert abs(res.quantile("x", 0.25) - 0.25) <= 0.01
    assert res.quantile("x", 1.0) == 1.0


def test_sharded_comparison_example_runs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "sharded_comparison.py"),
            *("--batches", "3", "--batch-size", "100", "--aggregate", "64"),
            *("--num-samples", "128", "--knn", "256", "--quiet", "--out", str(tmp_path / "o")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Posterior comparison over 300 inputs" in out.stdout
    assert "kNN from samples" in out.stdout
    text = (tmp_path / "o" / "sharded_comparison.txt").read_text()
    assert "KL(a||b)" in text
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "sharded_comparison.json",
        "sharded_comparison.txt",
    ]

"""kl_from_samples: kNN against a brute-force float64 NumPy version, moment fit against kl."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, checked, kl, kl_from_samples


@functools.cache
def jitted(**kw):
    return jax.jit(functools.partial(kl_from_samples, **kw))


def est(x_p, x_q, **kw):
    return jitted(**kw)(x_p, x_q)


def brute_knn(x_p, x_q, k):
    """float64 NumPy WKV estimator with the adaptive ranks for duplicates, and its jackknife."""
    x_p, x_q = np.asarray(x_p, np.float64), np.asarray(x_q, np.float64)
    n, d = x_p.shape
    m = x_q.shape[0]
    dpp = np.sum((x_p[:, None] - x_p[None]) ** 2, -1)
    np.fill_diagonal(dpp, np.inf)
    dpq = np.sum((x_p[:, None] - x_q[None]) ** 2, -1)

    def stat(dpp, dpq, n, m):
        rho = np.sort(dpp, axis=1)
        nu = np.sort(dpq, axis=1)
        lr = np.maximum(k, np.sum(rho == 0, 1) + 1)
        kr = np.maximum(k, np.sum(nu == 0, 1) + 1)
        r = rho[np.arange(n), lr - 1]
        v = nu[np.arange(n), kr - 1]
        t = 0.5 * d * (np.log(v) - np.log(r)) + digamma(lr) - digamma(kr)
        return np.mean(t) + np.log(m / (n - 1))

    value = stat(dpp, dpq, n, m)
    keep_p = [np.delete(np.arange(n), i) for i in range(n)]
    th_p = np.array([stat(dpp[np.ix_(s, s)], dpq[s], n - 1, m) for s in keep_p])
    th_q = np.array([stat(dpp, np.delete(dpq, j, axis=1), n, m - 1) for j in range(m)])
    var = (n - 1) / n * np.sum((th_p - th_p.mean()) ** 2)
    var += (m - 1) / m * np.sum((th_q - th_q.mean()) ** 2)
    return value, np.sqrt(var)


@pytest.mark.parametrize(("d", "k"), [(1, 1), (3, 2), (8, 1)])
def test_knn_matches_bruteforce_value_and_jackknife(d, k):
    rng = np.random.default_rng(d + k)
    x_p = rng.normal(size=(150, d)).astype(np.float32)
    x_q = (0.5 + 1.3 * rng.normal(size=(120, d))).astype(np.float32)
    got = est(x_p, x_q, k=k, block_size=32)
    value, stderr = brute_knn(x_p, x_q, k)
    np.testing.assert_allclose(got.value, value, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got.stderr, stderr, rtol=1e-3)


def test_knn_matches_universal_divergence():
    ud = pytest.importorskip("universal_divergence")
    rng = np.random.default_rng(0)
    x_p = rng.normal(size=(700, 5)).astype(np.float32)
    x_q = (0.3 + rng.normal(size=(500, 5))).astype(np.float32)
    for k in (1, 4):
        want = ud.estimate(x_p.astype(np.float64), x_q.astype(np.float64), k=k)
        np.testing.assert_allclose(est(x_p, x_q, k=k).value, want, rtol=1e-5)


def test_knn_duplicates_and_far_offset():
    rng = np.random.default_rng(1)
    x_p = rng.normal(size=(200, 2)).astype(np.float32)
    x_q = rng.normal(size=(180, 2)).astype(np.float32)
    # repeated points (up to 4 copies) in both sets: finite, and equal to the brute force
    dup_p = np.concatenate([x_p, x_p[:20], x_p[:5], x_p[:2]])
    dup_q = np.concatenate([x_q, x_p[:3]])  # some q points coincide with p points
    got = est(dup_p, dup_q)
    assert np.isfinite(got.value) and np.isfinite(got.stderr)
    np.testing.assert_allclose(got.value, brute_knn(dup_p, dup_q, 1)[0], rtol=1e-4)
    # more copies than max_ties: NaN, reported by the checked mode
    many = np.concatenate([x_p, np.repeat(x_p[:1], 10, axis=0)])
    err, out = checked(jitted(max_ties=2))(many, x_q)
    assert np.isnan(out.value)
    assert "have more than max_ties=2 duplicates" in err.get()
    # data far from the origin: centring keeps the matmul distances accurate
    off = 1e3
    shifted = est(x_p + off, x_q + off)
    np.testing.assert_allclose(shifted.value, est(x_p, x_q).value, rtol=1e-3, atol=1e-3)


def test_knn_stderr_is_conservative_and_bias_small_in_low_d():
    d, n, reps = 2, 400, 40
    vals, ses = [], []
    for s in range(reps):
        rng = np.random.default_rng(100 + s)
        x_p = rng.normal(size=(n, d)).astype(np.float32)
        x_q = (0.5 + 1.2 * rng.normal(size=(n, d))).astype(np.float32)
        e = est(x_p, x_q)
        vals.append(float(e.value))
        ses.append(float(e.stderr))
    exact = d * (0.5 / 1.44 + 0.5 * 0.25 / 1.44 - 0.5 + np.log(1.2))
    assert 0.9 < np.mean(ses) / np.std(vals) < 2.0  # jackknife: conservative (Efron-Stein)
    assert abs(np.mean(vals) - exact) < 4 * np.std(vals) / np.sqrt(reps) + 0.02


def gaussian_pair(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov_p = a @ a.T + 0.5 * np.eye(d)
    b = rng.normal(size=(d, d)) / np.sqrt(d)
    cov_q = b @ b.T + 0.7 * np.eye(d)
    mu_p, mu_q = 0.3 * rng.normal(size=d), 0.3 * rng.normal(size=d)
    return mu_p, cov_p, mu_q, cov_q


def test_moment_fit_full_and_diag_against_closed_form():
    d, n = 8, 20_000
    mu_p, cov_p, mu_q, cov_q = gaussian_pair(d, 0)
    k1, k2 = jax.random.split(jax.random.key(0))
    p = FullGaussian(mu_p.astype(np.float32), np.linalg.cholesky(cov_p).astype(np.float32))
    q = FullGaussian(mu_q.astype(np.float32), np.linalg.cholesky(cov_q).astype(np.float32))
    x_p, x_q = p.sample(k1, (n,)), q.sample(k2, (n,))
    exact = float(kl(p, q))
    got = est(x_p, x_q, method="gaussian")
    assert abs(float(got.value) - exact) <= 4 * float(got.stderr) + 0.01 * exact
    assert abs(float(got.value) - exact) < 0.02 * exact
    # the fits themselves, against NumPy on the same samples
    xp64, xq64 = np.asarray(x_p, np.float64), np.asarray(x_q, np.float64)
    cp, cq = np.cov(xp64.T), np.cov(xq64.T)
    dm = xq64.mean(0) - xp64.mean(0)
    ref = 0.5 * (
        np.trace(np.linalg.solve(cq, cp))
        + dm @ np.linalg.solve(cq, dm)
        - d
        + np.linalg.slogdet(cq)[1]
        - np.linalg.slogdet(cp)[1]
    )
    np.testing.assert_allclose(got.value, ref, rtol=1e-4)
    # diagonal fit: the KL between the diagonal parts of the fitted covariances
    diag = est(x_p, x_q, method="gaussian", covariance="diag")
    vp, vq = np.diag(cp), np.diag(cq)
    want = 0.5 * np.sum(vp / vq - 1 - np.log(vp / vq) + dm**2 / vq)
    np.testing.assert_allclose(diag.value, want, rtol=1e-4)
    assert float(diag.stderr) > 0
    # the error bars: the delete-a-group jackknife over 16 contiguous groups, in float64 NumPy
    for got_fit, diag_only in ((got, False), (diag, True)):
        se = np.sqrt(group_jackknife(xp64, xq64, diag_only))
        np.testing.assert_allclose(got_fit.stderr, se, rtol=2e-3)


def np_gauss_kl(a, b, diag):
    """float64 KL between the Gaussians fitted to sample sets a and b (optionally diagonal)."""
    dm = b.mean(0) - a.mean(0)
    if diag:
        vp, vq = a.var(0, ddof=1), b.var(0, ddof=1)
        return 0.5 * np.sum(vp / vq - 1 - np.log(vp / vq) + dm**2 / vq)
    cp, cq = np.cov(a.T), np.cov(b.T)
    d = a.shape[1]
    return 0.5 * (
        np.trace(np.linalg.solve(cq, cp))
        + dm @ np.linalg.solve(cq, dm)
        - d
        + np.linalg.slogdet(cq)[1]
        - np.linalg.slogdet(cp)[1]
    )


def group_jackknife(x_p, x_q, diag, groups=16):
    """Variance of the delete-a-group jackknife, each set split into contiguous groups."""

    def jack(theta):
        return (groups - 1) / groups * np.sum((theta - theta.mean()) ** 2)

    def without(x, g):
        gid = (np.arange(len(x)) * groups) // len(x)
        return x[gid != g]

    th_p = np.array([np_gauss_kl(without(x_p, g), x_q, diag) for g in range(groups)])
    th_q = np.array([np_gauss_kl(x_p, without(x_q, g), diag) for g in range(groups)])
    return jack(th_p) + jack(th_q)


def test_jackknife_variance_helper():
    """The one jackknife formula: for the delete-one means it is exactly var(x) / n."""
    from gkl_jax._src.from_samples import _jackknife_var

    x = np.random.default_rng(5).normal(size=50)
    theta = (x.sum() - x) / 49
    np.testing.assert_allclose(_jackknife_var(jnp.asarray(theta)), np.var(x, ddof=1) / 50, 1e-5)
    # a common shift of the replicates (as in the kNN x_q part) changes nothing
    np.testing.assert_allclose(
        _jackknife_var(jnp.asarray(theta + 3.0)), np.var(x, ddof=1) / 50, 1e-4
    )


def test_moment_fit_memory_is_per_group():
    """The fits use per-group (d, d) matmuls (d-vectors of squares for "diag"), never an
    (n, d, d) array: the compiled temporaries stay far below n * d * d floats."""
    n, d = 4000, 24  # groups of 250 rows, so a (d, d) shape can only be a covariance
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    full = jitted(method="gaussian").lower(x, x)
    temp = full.compile().memory_analysis().temp_size_in_bytes
    assert temp < n * d * d * 4 / 4, temp  # the old (n, d, d) products: n * d * d * 4 bytes
    diag = jitted(method="gaussian", covariance="diag").lower(x, x).as_text()
    assert f"x{d}x{d}x" not in diag and f"<{d}x{d}x" not in diag


def test_moment_fit_diag_data_and_jackknife_calibration():
    d, n, reps = 4, 2000, 30
    p = DiagGaussian(jnp.zeros(d), jnp.full(d, -0.2))
    q = DiagGaussian(jnp.full(d, 0.4), jnp.full(d, 0.3))
    exact = float(kl(p, q))
    vals, ses = [], []
    for s in range(reps):
        k1, k2 = jax.random.split(jax.random.key(s))
        e = est(p.sample(k1, (n,)), q.sample(k2, (n,)), method="gaussian", covariance="diag")
        vals.append(float(e.value))
        ses.append(float(e.stderr))
    assert 0.7 < np.mean(ses) / np.std(vals) < 1.5
    assert abs(np.mean(vals) - exact) < 4 * np.std(vals) / np.sqrt(reps) + 0.01


@pytest.mark.invalid_input
def test_errors_and_vmap():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match=r"'x_p' must be a 2-D.*shape \(10,\)"):
        kl_from_samples(x[:, 0], x)
    with pytest.raises(ValueError, match=r"dimensions differ: 'x_p' has shape \(10, 3\)"):
        kl_from_samples(x, np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match=r"too few samples for k=3: 'x_p' has 4"):
        kl_from_samples(x[:4], x, k=3)
    with pytest.raises(ValueError, match=r"'x_q' has 2 \(needs >= k \+ 1 = 3\)"):
        kl_from_samples(x, x[:2], k=2)
    with pytest.raises(ValueError, match="k must be a positive int"):
        kl_from_samples(x, x, k=0)
    with pytest.raises(ValueError, match="too few samples for a full Gaussian fit in d=40"):
        kl_from_samples(np.zeros((40, 40)), np.zeros((100, 40)), method="gaussian")
    with pytest.raises(ValueError, match="method must be"):
        kl_from_samples(x, x, method="kde")
    with pytest.raises(ValueError, match="covariance must be"):
        kl_from_samples(x, x, method="gaussian", covariance="tied")
    with pytest.raises(TypeError, match="'x_q'"):
        kl_from_samples(x, np.zeros((10, 3), np.int32))
    # vmap over independent sample sets
    xs = jax.random.normal(jax.random.key(0), (3, 64, 2))
    ys = 0.5 + jax.random.normal(jax.random.key(1), (3, 64, 2))
    batched = jax.jit(jax.vmap(kl_from_samples))(xs, ys)
    loop = [est(a, b).value for a, b in zip(xs, ys, strict=True)]
    np.testing.assert_allclose(batched.value, loop, rtol=1e-5)


def test_exports():
    assert "kl_from_samples" in gkl_jax.__all__

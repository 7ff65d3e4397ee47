"""LowRankGaussian: Woodbury densities vs SciPy, sampling, rank 0, no densifying, pytree, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gkl_jax import DiagGaussian, FullGaussian, LowRankGaussian


def _rand(rng, batch=(), d=6, k=2):
    return (
        rng.standard_normal((*batch, d)),
        0.8 * rng.standard_normal((*batch, d, k)),
        0.4 * rng.standard_normal((*batch, d)),
    )


def test_log_prob_entropy_covariance_against_scipy(x64):
    rng = np.random.default_rng(0)
    mean, w, ld = _rand(rng, (2,))
    q = LowRankGaussian(mean, w, ld)
    cov = w @ np.swapaxes(w, -1, -2) + np.exp(ld)[..., None] * np.eye(6)
    np.testing.assert_allclose(q.covariance(), cov, rtol=1e-12)
    x = rng.standard_normal((4, 2, 6))
    want = np.stack([stats.multivariate_normal(mean[i], cov[i]).logpdf(x[:, i]) for i in (0, 1)], 1)
    np.testing.assert_allclose(jax.jit(q.log_prob)(x), want, rtol=1e-12)
    ent = [stats.multivariate_normal(mean[i], cov[i]).entropy() for i in (0, 1)]
    np.testing.assert_allclose(q.entropy(), ent, rtol=1e-12)
    np.testing.assert_allclose(q.log_det_cov(), np.linalg.slogdet(cov)[1], rtol=1e-12)
    full = q.to_full()
    assert isinstance(full, FullGaussian)
    np.testing.assert_allclose(full.covariance(), cov, rtol=1e-11)


def test_rank_zero_is_the_diagonal_gaussian(x64):
    rng = np.random.default_rng(1)
    mean, _, ld = _rand(rng)
    d = DiagGaussian(mean, ld)
    lr = d.to_low_rank()
    assert lr.rank == 0
    x = rng.standard_normal(6)
    np.testing.assert_allclose(lr.log_prob(x), d.log_prob(x), rtol=1e-13)
    np.testing.assert_allclose(lr.entropy(), d.entropy(), rtol=1e-13)
    assert lr.sample(jax.random.key(0), (3,)).shape == (3, 6)
    np.testing.assert_allclose(d.to_low_rank(2).log_prob(x), d.log_prob(x), rtol=1e-13)


def test_sample_moments():
    rng = np.random.default_rng(2)
    mean, w, ld = _rand(rng, d=3, k=1)
    q = LowRankGaussian(mean, w, ld)
    xs = np.asarray(jax.jit(q.sample, static_argnums=1)(jax.random.key(0), (40000,)))
    assert xs.shape == (40000, 3)
    np.testing.assert_allclose(xs.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(xs.T), np.asarray(q.covariance()), atol=0.06)


def test_large_event_size_never_densifies():
    d, k = 4096, 16
    rng = np.random.default_rng(3)
    q = LowRankGaussian(*(a.astype(np.float32) for a in _rand(rng, d=d, k=k)))
    lowered = jax.jit(lambda g, x: g.log_prob(x)).lower(q, jnp.zeros(d)).as_text()
    assert f"{d}x{d}" not in lowered  # no d x d array anywhere in the program
    assert np.isfinite(float(q.log_prob(jnp.zeros(d))))


@pytest.mark.invalid_input
def test_pytree_and_errors():
    q = LowRankGaussian(np.zeros(3), np.ones((3, 2)), np.zeros(3))
    leaves, tree = jax.tree_util.tree_flatten(q)
    assert len(leaves) == 3 and isinstance(
        jax.tree_util.tree_unflatten(tree, leaves), LowRankGaussian
    )
    assert "rank=2" in repr(q)
    with pytest.raises(AttributeError, match="immutable"):
        q.factor = 0
    with pytest.raises(
        ValueError, match=r"'mean' has shape \(3,\) and 'factor' has shape \(4, 2\)"
    ):
        LowRankGaussian(np.zeros(3), np.ones((4, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="'factor' has shape \\(3,\\); it needs two trailing"):
        LowRankGaussian(np.zeros(3), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="latent sizes"):
        LowRankGaussian(np.zeros(3), np.ones((3, 2)), np.zeros(4))
    # x's batch is checked against every parameter's, naming the one that does not fit
    lr = LowRankGaussian(np.zeros(3), np.ones((4, 3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"'x' has shape \(2, 3\) and 'factor' has shape \(4"):
        lr.log_prob(np.zeros((2, 3)))
    lr = LowRankGaussian(np.zeros(3), np.ones((3, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"'log_diag' has shape \(4, 3\), against 'x' \(2, 3\)"):
        lr.log_prob(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="'log_diag' has dtype int32"):
        LowRankGaussian(np.zeros(3), np.ones((3, 2)), np.zeros(3, np.int32))
    assert (
        LowRankGaussian(
            jnp.zeros(2, jnp.bfloat16), jnp.ones((2, 1), jnp.bfloat16), jnp.zeros(2, jnp.bfloat16)
        ).dtype
        == jnp.float32
    )


@pytest.mark.parametrize("log_diag", [0.3, np.float32(0.3), np.full((2, 1), 0.3, np.float32)])
def test_isotropic_log_diag_is_probabilistic_pca(log_diag):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 2)).astype(np.float32)
    mean = rng.normal(size=(2, 4)).astype(np.float32)
    g = LowRankGaussian(mean, w, log_diag)
    assert g.log_diag.shape[-1] == 4 and g.batch_shape == (2,)
    cov = w.astype(np.float64) @ w.T + np.exp(0.3) * np.eye(4)
    got = np.broadcast_to(g.covariance(), (2, 4, 4))
    np.testing.assert_allclose(got, np.broadcast_to(cov, (2, 4, 4)), rtol=1e-5)
    x = rng.normal(size=(3, 4))
    ref = stats.multivariate_normal(mean[1], cov).logpdf(x)
    np.testing.assert_allclose(g.log_prob(x[:, None, :])[:, 1], ref, rtol=1e-5)

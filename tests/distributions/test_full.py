"""FullGaussian: constructors, densities, sampling, pytree behaviour, errors (SciPy, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian


def _spd(rng, d, batch=()):
    a = rng.standard_normal((*batch, d, d))
    return a @ np.swapaxes(a, -1, -2) / d + 0.5 * np.eye(d)


def test_from_cov_log_prob_entropy_against_scipy(x64):
    rng = np.random.default_rng(0)
    mean, cov = rng.standard_normal((3, 4)), _spd(rng, 4, (3,))
    p = FullGaussian.from_cov(mean, cov)
    np.testing.assert_allclose(p.covariance(), cov, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p.scale_tril, np.linalg.cholesky(cov), rtol=1e-12)
    x = rng.standard_normal((5, 3, 4))  # sample axis in front of the batch axis
    want = np.stack(
        [stats.multivariate_normal(mean[i], cov[i]).logpdf(x[:, i]) for i in range(3)], 1
    )
    np.testing.assert_allclose(jax.jit(p.log_prob)(x), want, rtol=1e-12)
    np.testing.assert_allclose(p.log_prob(x[0]), want[0], rtol=1e-12)  # no sample axis
    ent = [stats.multivariate_normal(mean[i], cov[i]).entropy() for i in range(3)]
    np.testing.assert_allclose(p.entropy(), ent, rtol=1e-12)
    assert p.batch_shape == (3,) and p.event_size == 4


def test_log_prob_blocked_path_and_broadcast_batch(x64):
    rng = np.random.default_rng(1)
    d = 40  # > leaf size
    mean, cov = rng.standard_normal(d), _spd(rng, d)
    p = FullGaussian.from_cov(mean, cov)
    x = rng.standard_normal((2, 3, d))
    np.testing.assert_allclose(
        p.log_prob(x), stats.multivariate_normal(mean, cov).logpdf(x), rtol=1e-11
    )


def test_from_precision(x64):
    rng = np.random.default_rng(2)
    prec = _spd(rng, 20, (2,))
    p = FullGaussian.from_precision(np.zeros(20), prec)
    np.testing.assert_allclose(p.covariance(), np.linalg.inv(prec), rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(jnp.diagonal(p.scale_tril, 0, -2, -1)) > 0)
    np.testing.assert_array_equal(np.triu(p.scale_tril, 1), 0)


def test_sample_moments_and_reparameterization():
    rng = np.random.default_rng(3)
    mean, cov = rng.standard_normal(3), _spd(rng, 3)
    p = FullGaussian.from_cov(mean, cov)
    xs = jax.jit(p.sample, static_argnums=1)(jax.random.key(0), (40000,))
    assert xs.shape == (40000, 3)
    np.testing.assert_allclose(xs.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(np.asarray(xs).T), cov, atol=0.05)
    g = jax.grad(lambda m: jnp.sum(FullGaussian(m, p.scale_tril).sample(jax.random.key(1))))(mean)
    np.testing.assert_allclose(g, np.ones(3))
    assert FullGaussian(np.zeros((2, 3)), np.eye(3)).sample(jax.random.key(0), (4,)).shape == (
        4,
        2,
        3,
    )


def test_upper_triangle_is_ignored_and_pytree_behaviour():
    tril = np.array([[1.0, 9.0], [0.5, 2.0]])
    p = FullGaussian(np.zeros(2), tril)
    np.testing.assert_array_equal(p.scale_tril, np.tril(tril))
    leaves, tree = jax.tree_util.tree_flatten(p)
    assert len(leaves) == 2
    q = jax.tree_util.tree_unflatten(tree, leaves)
    assert isinstance(q, FullGaussian) and q.to_full() is q
    out = jax.vmap(lambda g: g.entropy())(
        FullGaussian(np.zeros((3, 2)), np.broadcast_to(tril, (3, 2, 2)))
    )
    assert out.shape == (3,)
    with pytest.raises(AttributeError, match="immutable"):
        p.mean = 1.0
    assert "FullGaussian(batch_shape=(), event_size=2" in repr(p)


@pytest.mark.invalid_input
def test_dtypes():
    p = FullGaussian(jnp.zeros(2, jnp.bfloat16), jnp.eye(2, dtype=jnp.bfloat16))
    assert p.dtype == jnp.float32
    with pytest.raises(TypeError, match="FullGaussian: argument 'scale_tril' has dtype int32"):
        FullGaussian(jnp.zeros(2), jnp.eye(2, dtype=jnp.int32))


@pytest.mark.invalid_input
def test_shape_errors():
    with pytest.raises(ValueError, match=r"'scale_tril' must be square .* got shape \(3, 2\)"):
        FullGaussian(np.zeros(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"'mean' has shape \(3,\) and 'scale_tril' has shape"):
        FullGaussian(np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="needs two trailing matrix axes"):
        FullGaussian(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        FullGaussian(np.zeros((2, 3)), np.broadcast_to(np.eye(3), (4, 3, 3)))
    with pytest.raises(ValueError, match=r"FullGaussian.from_cov: .*'cov'"):
        FullGaussian.from_cov(np.zeros(3), np.eye(4))
    p = FullGaussian(np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"FullGaussian.log_prob: latent sizes"):
        p.log_prob(np.zeros(4))
    # x's batch against scale_tril's (mean has none): a ValueError, not a jax TypeError
    p = FullGaussian(np.zeros(3), np.broadcast_to(np.eye(3), (4, 3, 3)))
    with pytest.raises(ValueError, match=r"'x' has shape \(2, 3\) and 'scale_tril' has shape \(4"):
        p.log_prob(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"log_prob: batch shapes do not broadcast: 'mean'"):
        FullGaussian(np.zeros((4, 3)), np.eye(3)).log_prob(np.zeros((2, 3)))


def test_checked_mode_reports_values():
    bad_cov = jnp.array([[1.0, 2.0], [2.0, 1.0]])  # indefinite
    err, _ = gkl_jax.checked(FullGaussian.from_cov)(jnp.zeros(2), bad_cov)
    assert "FullGaussian.from_cov: argument 'cov' is not symmetric positive definite" in err.get()
    err, _ = gkl_jax.checked(FullGaussian)(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0])))
    assert "'diagonal of scale_tril' must be positive: 1 of 2" in err.get()
    err, _ = gkl_jax.checked(FullGaussian.from_cov)(jnp.zeros(2), jnp.eye(2))
    assert err.get() is None


def test_diag_to_full_agrees():
    p = DiagGaussian.from_std(jnp.array([[0.0, 1.0]]), jnp.array([2.0, 3.0]))
    f = p.to_full()
    np.testing.assert_allclose(f.covariance(), [[[4.0, 0.0], [0.0, 9.0]]])
    np.testing.assert_allclose(f.log_prob(jnp.ones(2)), p.log_prob(jnp.ones(2)), rtol=1e-6)
    np.testing.assert_allclose(f.entropy(), p.entropy(), rtol=1e-6)

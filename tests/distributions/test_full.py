"""FullGaussian: constructors, densities, sampling, pytree behaviour, errors (SciPy, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import stats

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, kl
from tests.helpers import dense_kl, rand_tril


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


# ---------------------------------------------------------------------------------------------
# a negative diagonal (a valid square root): canonicalized by flipping columns


def _signs(rng, batch, d):
    signs = rng.choice([-1.0, 1.0], size=(*batch, 1, d))
    signs[..., 0, 0] = -1.0  # at least one flip
    return signs


def test_negative_diagonal_is_canonicalized_exactly(x64):
    rng = np.random.default_rng(10)
    tril = rand_tril(rng, (3,), 4)
    flipped = tril * _signs(rng, (3,), 4)  # L S: the same L L^T, some diagonal entries < 0
    assert np.any(np.diagonal(flipped, 0, -2, -1) < 0)
    p = FullGaussian(np.zeros(4), flipped)
    np.testing.assert_array_equal(p.scale_tril, tril)  # only signs change: exact
    np.testing.assert_array_equal(jnp.triu(p.scale_tril, 1), 0.0)


def test_negative_diagonal_kl_log_prob_entropy_against_float64_numpy(x64):
    rng = np.random.default_rng(11)
    d = 5
    mp, mq = rng.standard_normal((2, 3, d))
    lp, lq = rand_tril(rng, (3,), d), rand_tril(rng, (3,), d)
    lp_neg, lq_neg = lp * _signs(rng, (3,), d), lq * _signs(rng, (3,), d)
    cov_p, cov_q = lp @ np.swapaxes(lp, -1, -2), lq @ np.swapaxes(lq, -1, -2)
    p_neg, q_neg = FullGaussian(mp, lp_neg), FullGaussian(mq, lq_neg)
    p, q = FullGaussian(mp, lp), FullGaussian(mq, lq)
    # equal to the canonical factor's values, bit for bit
    np.testing.assert_array_equal(kl(p_neg, q_neg), kl(p, q))
    np.testing.assert_array_equal(gkl_jax.kl_full(mp, lp_neg, mq, lq_neg), kl(p, q))
    x = rng.standard_normal((2, 3, d))
    np.testing.assert_array_equal(p_neg.log_prob(x), p.log_prob(x))
    np.testing.assert_array_equal(p_neg.entropy(), p.entropy())
    # and to a float64 NumPy / SciPy reference
    np.testing.assert_allclose(kl(p_neg, q_neg), dense_kl(mp, cov_p, mq, cov_q), rtol=1e-12)
    want = np.stack([stats.multivariate_normal(mp[i], cov_p[i]).logpdf(x[:, i]) for i in range(3)])
    np.testing.assert_allclose(p_neg.log_prob(x), want.T, rtol=1e-12)
    ent = [stats.multivariate_normal(mp[i], cov_p[i]).entropy() for i in range(3)]
    np.testing.assert_allclose(p_neg.entropy(), ent, rtol=1e-12)


def test_negative_diagonal_gradient_is_the_chain_rule_through_the_flip(x64):
    rng = np.random.default_rng(12)
    lp, lq = rand_tril(rng, (), 3), rand_tril(rng, (), 3)
    signs = _signs(rng, (), 3)

    def f(tril):
        return kl(FullGaussian(np.zeros(3), tril), FullGaussian(np.ones(3), lq))

    g_neg, g = jax.grad(f)(lp * signs), jax.grad(f)(lp)
    np.testing.assert_allclose(g_neg, g * signs, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# from_scale: any square root S, covariance S S^T


def test_from_scale_square_root_against_float64_numpy(x64):
    rng = np.random.default_rng(13)
    d = 4
    s = rng.standard_normal((2, d, d))  # not triangular
    mean, mq = rng.standard_normal((2, 2, d))
    cov = s @ np.swapaxes(s, -1, -2)
    p = FullGaussian.from_scale(mean, s)
    np.testing.assert_allclose(p.covariance(), cov, rtol=1e-12, atol=1e-13)
    assert np.all(np.diagonal(p.scale_tril, 0, -2, -1) > 0)
    np.testing.assert_array_equal(np.triu(p.scale_tril, 1), 0.0)
    q = FullGaussian(mq, rand_tril(rng, (2,), d))
    np.testing.assert_allclose(kl(p, q), dense_kl(mean, cov, mq, q.covariance()), rtol=1e-11)
    x = rng.standard_normal((3, 2, d))
    want = np.stack([stats.multivariate_normal(mean[i], cov[i]).logpdf(x[:, i]) for i in range(2)])
    np.testing.assert_allclose(p.log_prob(x), want.T, rtol=1e-11)


def test_from_scale_rectangular_is_a_sum_of_squares(x64):
    rng = np.random.default_rng(14)
    tril, w = rand_tril(rng, (), 5), rng.standard_normal((5, 2))
    p = FullGaussian.from_scale(np.zeros(5), np.concatenate([tril, w], axis=-1))  # (5, 7)
    np.testing.assert_allclose(p.covariance(), tril @ tril.T + w @ w.T, rtol=1e-12, atol=1e-13)


def test_a_non_triangular_matrix_as_scale_tril_vs_from_scale():
    # The matrix given is a general square root: from_scale gives its KL; as scale_tril only its
    # lower triangle is read (another distribution), and the checked mode says so.
    s = np.array([[1.0, 2.0, -1.0], [0.5, 1.0, 3.0], [0.0, -2.0, 1.0]])
    q = FullGaussian(np.zeros(3), 0.5 * np.eye(3))
    want = dense_kl(np.zeros(3), s @ s.T, np.zeros(3), 0.25 * np.eye(3))
    np.testing.assert_allclose(kl(FullGaussian.from_scale(np.zeros(3), s), q), want, rtol=1e-5)
    tl = np.tril(s)
    dropped = dense_kl(np.zeros(3), tl @ tl.T, np.zeros(3), 0.25 * np.eye(3))
    np.testing.assert_allclose(kl(FullGaussian(np.zeros(3), s), q), dropped, rtol=1e-5)
    err, _ = gkl_jax.checked(FullGaussian)(jnp.zeros(3), jnp.asarray(s, jnp.float32))
    assert "argument 'scale_tril' is not lower triangular: 3 of 3 entries" in err.get()
    err, _ = gkl_jax.checked(FullGaussian.from_scale)(jnp.zeros(3), jnp.asarray(s, jnp.float32))
    assert err.get() is None


def test_from_scale_gradient_and_jit(x64):
    rng = np.random.default_rng(15)
    s = rng.standard_normal((3, 3))
    q = FullGaussian(np.ones(3), rand_tril(rng, (), 3))

    def f(s):
        return kl(FullGaussian.from_scale(np.zeros(3), s), q)

    np.testing.assert_allclose(jax.jit(f)(s), f(s), rtol=1e-13)
    check_grads(f, (s,), order=1, modes=("rev",), eps=1e-6, rtol=1e-6)


def test_from_scale_checked_mode():
    err, _ = gkl_jax.checked(FullGaussian.from_scale)(
        jnp.zeros(2), jnp.array([[1.0, 2.0], [0.0, 0.0]])
    )
    assert "FullGaussian.from_scale: argument 'scale' is singular (rank < 2) for 1 of 1" in (
        err.get()
    )
    err, _ = gkl_jax.checked(FullGaussian.from_scale)(
        jnp.zeros(2), jnp.eye(2).at[0, 1].set(jnp.nan)
    )
    assert "FullGaussian.from_scale: argument 'scale' must be finite: 1 of 4" in err.get()


@pytest.mark.invalid_input
def test_from_scale_errors():
    with pytest.raises(ValueError, match=r"from_scale: argument 'scale' has shape \(3, 2\): 2 col"):
        FullGaussian.from_scale(np.zeros(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"from_scale: latent sizes differ: 'mean' has shape"):
        FullGaussian.from_scale(np.zeros(3), np.ones((4, 4)))
    with pytest.raises(TypeError, match="from_scale: argument 'scale' has dtype int32"):
        FullGaussian.from_scale(np.zeros(2), jnp.eye(2, dtype=jnp.int32))


def test_from_precision_checks_the_mean():
    err, _ = gkl_jax.checked(FullGaussian.from_precision)(jnp.array([jnp.nan, 0.0]), jnp.eye(2))
    assert "FullGaussian.from_precision: argument 'mean' must be finite: 1 of 2" in err.get()

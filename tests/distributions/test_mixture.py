"""GaussianMixture: densities and sampling against SciPy, pytree behaviour, constructor errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from gkl_jax import DiagGaussian, GaussianMixture
from tests.helpers import np_params, random_mixture


def scipy_log_prob(w, mean, var, x):
    comps = [stats.multivariate_normal(mean[k], np.diag(var[k])).logpdf(x) for k in range(len(w))]
    return logsumexp(np.stack(comps, -1) + np.log(w), axis=-1)


def test_log_prob_matches_scipy_batched():
    mix = random_mixture(0, (3,), 4, 5)
    x = jax.random.normal(jax.random.key(1), (7, 3, 5)) * 2.0
    got = np.asarray(jax.jit(mix.log_prob)(x))
    assert got.shape == (7, 3)
    w, mean, var = np_params(mix)
    for b in range(3):
        want = scipy_log_prob(w[b], mean[b], var[b], np.asarray(x[:, b], np.float64))
        np.testing.assert_allclose(got[:, b], want, rtol=2e-5, atol=2e-5)


def test_log_prob_broadcasts_shared_components():
    # logits batched (2, K), components shared (K, d): batch shape (2,)
    comps = DiagGaussian(jnp.array([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]]), jnp.zeros(2))
    mix = GaussianMixture(jnp.array([[0.0, 1.0, 2.0], [2.0, 0.0, -1.0]]), comps)
    assert mix.batch_shape == (2,)
    x = jnp.array([0.5, 0.5])
    got = np.asarray(mix.log_prob(x))
    for b in range(2):
        w, mean, _var = np_params(mix)
        want = scipy_log_prob(w[b], np.broadcast_to(mean, (3, 2)), np.ones((3, 2)), np.array(x))
        np.testing.assert_allclose(got[b], want, rtol=1e-5)


def test_sample_shapes_and_moments():
    mix = random_mixture(2, (2,), 3, 4)
    n = 100_000
    x = mix.sample(jax.random.key(3), (n,))
    assert x.shape == (n, 2, 4)
    w, mean, var = np_params(mix)
    m = np.einsum("bk,bkd->bd", w, mean)
    second = np.einsum("bk,bkd->bd", w, var + mean**2)
    v = second - m**2
    got_m = np.asarray(jnp.mean(x, axis=0), np.float64)
    got_v = np.asarray(jnp.var(x, axis=0), np.float64)
    # the sample mean has stderr sqrt(v / n); the variance ~ v sqrt(2 / n) (kurtosis-inflated)
    assert np.all(np.abs(got_m - m) < 5 * np.sqrt(v / n))
    assert np.all(np.abs(got_v - v) < 5 * v * np.sqrt(4 / n) + 1e-6)


def test_sample_component_frequencies():
    comps = DiagGaussian(jnp.array([[-50.0], [0.0], [50.0]]), jnp.zeros((3, 1)))
    logits = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    x = GaussianMixture(logits, comps).sample(jax.random.key(4), (20_000,))
    freq = np.array([np.mean(x < -25), np.mean(np.abs(x) < 25), np.mean(x > 25)])
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=5 * np.sqrt(0.25 / 20_000))


def test_pytree_jit_vmap_grad_and_immutability():
    mix = random_mixture(5, (4,), 3, 2)
    leaves, tree = jax.tree_util.tree_flatten(mix)
    again = jax.tree_util.tree_unflatten(tree, leaves)
    assert isinstance(again, GaussianMixture) and again.batch_shape == (4,)
    x = jnp.ones((4, 2))
    np.testing.assert_allclose(jax.jit(lambda m: m.log_prob(x))(mix), mix.log_prob(x), rtol=1e-6)
    per = jax.vmap(lambda m, xi: m.log_prob(xi))(mix, x)
    np.testing.assert_allclose(per, mix.log_prob(x), rtol=1e-6)
    g = jax.grad(lambda m: jnp.sum(m.log_prob(x)))(mix)
    assert g.logits.shape == (4, 3) and np.all(np.isfinite(g.components.mean))
    # the logits' gradient of sum_b log p_b(x_b) sums to zero over components (softmax)
    np.testing.assert_allclose(jnp.sum(g.logits, axis=-1), 0.0, atol=1e-6)
    with pytest.raises(AttributeError, match="immutable"):
        mix.logits = jnp.zeros(3)
    assert "GaussianMixture(batch_shape=(4,), num_components=3" in repr(mix)


@pytest.mark.invalid_input
def test_constructor_errors():
    comps = DiagGaussian(jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"'logits' has shape \(4,\).*batch shape \(3,\)"):
        GaussianMixture(jnp.zeros(4), comps)
    with pytest.raises(ValueError, match="'logits' is a scalar"):
        GaussianMixture(jnp.float32(0.0), comps)
    with pytest.raises(ValueError, match="batch shape \\(\\)"):
        GaussianMixture(jnp.zeros(1), DiagGaussian(jnp.zeros(2), jnp.zeros(2)))
    with pytest.raises(TypeError, match="must be a DiagGaussian"):
        GaussianMixture(jnp.zeros(3), (jnp.zeros((3, 2)), jnp.zeros((3, 2))))
    with pytest.raises(TypeError, match="'logits'"):
        GaussianMixture(jnp.zeros(3, jnp.int32), comps)
    with pytest.raises(ValueError, match="do not broadcast"):
        GaussianMixture(jnp.zeros((2, 3)), DiagGaussian(jnp.zeros((5, 3, 2)), jnp.zeros(2)))
    mix = GaussianMixture(jnp.zeros(3), comps)
    with pytest.raises(ValueError, match=r"latent sizes.*\(2,\).*'x' has shape \(5,\)"):
        mix.log_prob(jnp.zeros(5))
    # x is checked against the mixture's batch shape at trace time, also under jit
    batched = GaussianMixture(jnp.zeros((4, 3)), comps)
    with pytest.raises(ValueError, match=r"do not broadcast: 'x' has shape \(3, 2\).*\(4, 2\)"):
        jax.jit(batched.log_prob)(jnp.zeros((3, 2)))
    assert batched.log_prob(jnp.zeros((2, 1, 2))).shape == (2, 4)

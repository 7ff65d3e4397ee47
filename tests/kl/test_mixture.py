"""Hershey-Olsen KL approximation and upper bound for mixtures, against NumPy and quadrature."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

import gkl_jax
from gkl_jax import (
    DiagGaussian,
    GaussianMixture,
    kl,
    kl_mixture_upper_bound,
    kl_mixture_variational,
)
from tests.helpers import np_params, random_mixture

# jitted once: eager op-by-op dispatch dominates the run time of these small tests
kl_var = jax.jit(kl_mixture_variational)
upper = jax.jit(kl_mixture_upper_bound, static_argnames="num_iters")


def quad_kl_1d(logpdf_p, logpdf_q, lo=-30.0, hi=30.0):
    def integrand(x):
        lp = logpdf_p(x)
        return np.exp(lp) * (lp - logpdf_q(x))

    return integrate.quad(integrand, lo, hi, limit=400, epsabs=1e-12, epsrel=1e-10)[0]


def mix_logpdf_1d(w, mean, var):
    m, s = mean[:, 0], np.sqrt(var[:, 0])
    return lambda x: logsumexp(np.log(w) + stats.norm.logpdf(x, m, s))


def np_pairwise_kl(mean_a, var_a, mean_b, var_b):
    """float64 KL(a_i || b_j) for diagonal components, shape (Ka, Kb)."""
    ma, va = mean_a[:, None], var_a[:, None]
    mb, vb = mean_b[None], var_b[None]
    return 0.5 * np.sum(va / vb - 1 - np.log(va / vb) + (ma - mb) ** 2 / vb, axis=-1)


def np_variational(wa, ma, va, wb, mb, vb):
    num = logsumexp(np.log(wa)[None] - np_pairwise_kl(ma, va, ma, va), axis=-1)
    den = logsumexp(np.log(wb)[None] - np_pairwise_kl(ma, va, mb, vb), axis=-1)
    return np.sum(wa * (num - den))


def test_kl_dispatch_still_points_to_kl_mc():
    mix = random_mixture(6, (), 2, 3)
    with pytest.raises(TypeError, match=r"gkl_jax\.kl_mc\(key, p, q, num_samples=1024\)"):
        kl(mix, DiagGaussian(jnp.zeros(3), jnp.zeros(3)))


def test_variational_matches_numpy_reference():
    p = random_mixture(7, (3,), 4, 3)
    q = random_mixture(8, (3,), 2, 3)
    got = np.asarray(kl_var(p, q))
    assert got.shape == (3,)
    (wa, ma, va), (wb, mb, vb) = np_params(p), np_params(q)
    for b in range(3):
        want = np_variational(wa[b], ma[b], va[b], wb[b], mb[b], vb[b])
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_single_components_are_exact_and_self_is_zero():
    p = DiagGaussian(jnp.array([0.3, -1.0]), jnp.array([0.2, -0.4]))
    q = DiagGaussian(jnp.array([1.0, 0.5]), jnp.array([-0.1, 0.3]))
    exact = kl(p, q)
    np.testing.assert_allclose(kl_var(p, q), exact, rtol=1e-6)
    np.testing.assert_allclose(upper(p, q), exact, rtol=1e-6)
    mix = random_mixture(9, (), 3, 2)
    assert float(kl_var(mix, mix)) == 0.0
    assert abs(float(upper(mix, mix, num_iters=200))) < 1e-5


def test_upper_bound_bounds_quadrature_and_decreases():
    for trial in range(6):
        p = random_mixture(100 + trial, (), 3, 1, spread=2.0)
        q = random_mixture(200 + trial, (), 2, 1, spread=2.0)
        wa, ma, va = np_params(p)
        wb, mb, vb = np_params(q)
        truth = quad_kl_1d(mix_logpdf_1d(wa, ma, va), mix_logpdf_1d(wb, mb, vb))
        bounds = [float(upper(p, q, num_iters=i)) for i in (0, 1, 5, 50)]
        assert all(b >= truth - 1e-5 for b in bounds), (trial, truth, bounds)
        assert all(b1 <= b0 + 1e-5 for b0, b1 in itertools.pairwise(bounds)), bounds
        # the variational approximation is not a bound, but it is in the right place here
        assert abs(float(kl_var(p, q)) - truth) < max(0.5 * truth, 0.1), trial


@pytest.mark.invalid_input
def test_hershey_olsen_jit_vmap_grad_and_errors():
    p = random_mixture(11, (5,), 3, 2)
    q = random_mixture(12, (), 2, 2)
    for f in (kl_mixture_variational, kl_mixture_upper_bound):
        want = jax.jit(f)(p, q)
        np.testing.assert_allclose(jax.jit(jax.vmap(f, in_axes=(0, None)))(p, q), want, rtol=1e-5)
        g = jax.jit(jax.grad(lambda m, f=f: jnp.sum(f(m, q))))(p)
        assert np.all(np.isfinite(g.components.mean)) and np.all(np.isfinite(g.logits))
    # the same messages as every other pair function (gkl_jax._src.checks.check_event_shapes)
    with pytest.raises(ValueError, match=r"latent sizes \(last axis\) differ: 'p' has shape"):
        kl_var(p, DiagGaussian(jnp.zeros(3), jnp.zeros(3)))
    with pytest.raises(ValueError, match=r"do not broadcast: 'q' has shape \(4, 2\).*\(5, 2\)"):
        kl_mixture_upper_bound(p, random_mixture(13, (4,), 2, 2))
    with pytest.raises(TypeError, match="'q' must be a GaussianMixture or a DiagGaussian"):
        kl_mixture_variational(p, "q")
    with pytest.raises(ValueError, match="num_iters must be a non-negative int, got -1"):
        kl_mixture_upper_bound(p, q, num_iters=-1)
    # non-ints are type errors; a bool is not an int here (it used to crash in fori_loop)
    with pytest.raises(TypeError, match="num_iters must be a Python int, got bool True"):
        kl_mixture_upper_bound(p, q, num_iters=True)
    with pytest.raises(TypeError, match=r"num_iters must be a Python int, got float 2\.0"):
        kl_mixture_upper_bound(p, q, num_iters=2.0)
    assert np.isfinite(float(kl_mixture_upper_bound(q, q, num_iters=np.int64(2))))


def test_upper_bound_zero_weight_component_value_and_gradient():
    """A component with weight 0 (logit -inf) changes neither the bound nor the gradients of the
    other parameters, on either side, and gets finite gradients itself (no -inf - -inf)."""
    comps = DiagGaussian(jnp.array([[-1.0, 0.0], [1.0, 0.0], [3.0, 1.0]]), jnp.zeros((3, 2)))
    three = GaussianMixture(jnp.array([0.0, 1.0, -jnp.inf]), comps)
    two = GaussianMixture(jnp.array([0.0, 1.0]), jax.tree_util.tree_map(lambda a: a[:2], comps))
    other = random_mixture(14, (), 2, 2)
    grad = jax.jit(jax.value_and_grad(upper, argnums=(0, 1)), static_argnames="num_iters")
    for num_iters in (0, 3):
        for side in (0, 1):
            args3 = (three, other) if side == 0 else (other, three)
            args2 = (two, other) if side == 0 else (other, two)
            v3, g3 = grad(*args3, num_iters=num_iters)
            v2, g2 = grad(*args2, num_iters=num_iters)
            np.testing.assert_allclose(v3, v2, rtol=1e-6)
            assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g3))
            np.testing.assert_allclose(g3[side].logits[:2], g2[side].logits, atol=1e-6)
            np.testing.assert_allclose(
                g3[side].components.mean[:2], g2[side].components.mean, atol=1e-6
            )
            np.testing.assert_allclose(g3[1 - side].logits, g2[1 - side].logits, atol=1e-6)


def test_variational_is_far_below_and_negative_for_overlapping_components():
    """The documented failure: p a 5 x 5 grid of unit-variance components spaced 1 apart (a
    smooth 2-D blob), q a Gaussian. The true KL (1-D quadrature: p and q are products over the two
    axes, so the KL is the sum of the two 1-D KLs) is 0.420; the approximation is negative, the
    upper bound is above the truth, and kl_mc covers it."""
    m1 = np.linspace(-2.0, 2.0, 5)
    grid = np.array(list(itertools.product(m1, m1)))
    p = GaussianMixture(
        jnp.zeros(25), DiagGaussian(jnp.asarray(grid, jnp.float32), jnp.zeros((25, 2)))
    )
    mq, sq = np.array([1.5, 0.0]), 2.5
    q = DiagGaussian(jnp.asarray(mq, jnp.float32), jnp.full(2, 2 * np.log(sq), jnp.float32))
    w1 = np.full(5, 0.2)
    truth = sum(
        quad_kl_1d(
            mix_logpdf_1d(w1, m1[:, None], np.ones((5, 1))),
            lambda x, m=m: stats.norm.logpdf(x, m, sq),
        )
        for m in mq
    )
    np.testing.assert_allclose(truth, 0.420, atol=1e-3)
    approx = float(kl_var(p, q))
    assert approx < 0.0 and truth - approx > 0.6  # negative, 0.65 below the truth
    # agrees with the independent float64 formula: the behaviour is the approximation's own
    w, var = np.full(25, 1 / 25), np.ones((25, 2))
    np.testing.assert_allclose(
        approx,
        np_variational(w, grid, var, np.ones(1), mq[None], np.full((1, 2), sq**2)),
        rtol=1e-4,
    )
    assert float(upper(p, q)) >= truth
    est = jax.jit(lambda k: gkl_jax.kl_mc(k, p, q, num_samples=8192))(jax.random.key(0))
    assert abs(float(est.value) - truth) <= 4 * float(est.stderr)


def test_exports():
    for name in ("GaussianMixture", "kl_mixture_variational", "kl_mixture_upper_bound"):
        assert name in gkl_jax.__all__

"""cross_entropy(p, q) = KL(p || q) + H(p): every Gaussian pair and a mixture p, against float64
NumPy; axis semantics; jit, vmap, grad; errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, cross_entropy, kl
from tests.helpers import max_rel_err, np_params, rand_dist, random_mixture

LOG_2PI = np.log(2 * np.pi)
KINDS = ("diag", "diag-std", "diag-var", "full", "lowrank")


def dense_ce(mp, cov_p, mq, cov_q):
    """Textbook -E_p[log q] in float64: 0.5 (tr(S_q^-1 S_p) + maha + log det S_q + d log 2 pi)."""
    mp, cov_p, mq, cov_q = (np.asarray(a, np.float64) for a in (mp, cov_p, mq, cov_q))
    d = mp.shape[-1]
    inv_q = np.linalg.inv(cov_q)
    dm = mq - mp
    maha = np.einsum("...i,...ij,...j->...", dm, inv_q, dm)
    tr = np.trace(inv_q @ cov_p, axis1=-2, axis2=-1)
    return 0.5 * (tr + maha + np.linalg.slogdet(cov_q)[1] + d * LOG_2PI)


@pytest.mark.parametrize("kind_p, kind_q", list(itertools.product(KINDS, KINDS)))
def test_every_gaussian_pair_against_float64_numpy(kind_p, kind_q):
    rng = np.random.default_rng(7)
    p, mp, cov_p = rand_dist(kind_p, rng, shape=(3, 1))
    q, mq, cov_q = rand_dist(kind_q, rng, shape=(4,))
    got = jax.jit(cross_entropy)(p, q)
    assert got.shape == (3, 4) and got.dtype == jnp.float32
    ref = dense_ce(mp, cov_p, mq, cov_q)
    assert max_rel_err(got, ref) < 2e-5
    # the definition, through the public pieces
    np.testing.assert_allclose(got, kl(p, q) + p.entropy(), rtol=1e-6)


@pytest.mark.parametrize(
    "kind_p, kind_q", [("diag", "diag"), ("full", "lowrank"), ("diag", "full")]
)
def test_float64(kind_p, kind_q, x64):
    rng = np.random.default_rng(8)
    p, mp, cov_p = rand_dist(kind_p, rng, shape=(5,))
    q, mq, cov_q = rand_dist(kind_q, rng, shape=(5,))
    got = cross_entropy(p, q)
    assert got.dtype == jnp.float64
    assert max_rel_err(got, dense_ce(mp, cov_p, mq, cov_q)) < 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_cross_entropy_with_itself_is_the_entropy_exactly(kind):
    p = rand_dist(kind, np.random.default_rng(9), shape=(6,))[0]
    np.testing.assert_array_equal(cross_entropy(p, p), p.entropy())


@pytest.mark.parametrize("kind_q", KINDS)
def test_mixture_p_is_the_weighted_sum_over_its_components(kind_q):
    mix = random_mixture(10, (2,), 3, 5)
    q, mq, cov_q = rand_dist(kind_q, np.random.default_rng(11), shape=(2,))
    w, mean, var = np_params(mix)
    cov_k = var[..., None] * np.eye(5)  # (2, 3, 5, 5)
    ref = np.sum(w * dense_ce(mean, cov_k, mq[:, None], np.asarray(cov_q)[:, None]), axis=-1)
    got = jax.jit(cross_entropy)(mix, q)
    assert got.shape == (2,)
    assert max_rel_err(got, ref) < 2e-5


def test_mixture_p_against_a_monte_carlo_estimate():
    mix = random_mixture(12, (), 4, 3)
    q = DiagGaussian.from_std(jnp.array([0.5, -0.2, 0.1]), jnp.array([1.5, 0.8, 1.1]))
    x = mix.sample(jax.random.key(0), (200_000,))
    nll = -q.log_prob(x)
    mc, stderr = float(jnp.mean(nll)), float(jnp.std(nll)) / np.sqrt(x.shape[0])
    assert abs(float(cross_entropy(mix, q)) - mc) < 4 * stderr


def test_zero_weight_component_is_ignored():
    comps = DiagGaussian(jnp.array([[0.0, 0.0], [50.0, 50.0]]), jnp.zeros(2))
    q = DiagGaussian.standard(2)
    mix = GaussianMixture(jnp.array([0.0, -jnp.inf]), comps)
    np.testing.assert_allclose(cross_entropy(mix, q), cross_entropy(comps[0], q), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# axis
# ---------------------------------------------------------------------------------------------


def _diag_pair():
    rng = np.random.default_rng(13)
    p = DiagGaussian.from_std(rng.normal(size=(2, 1, 4)), rng.uniform(0.5, 2, (2, 1, 4)))
    q = DiagGaussian.from_var(rng.normal(size=(3, 4)), rng.uniform(0.5, 2, (3, 4)))
    return p, q


def test_per_dimension_terms_against_float64_numpy():
    p, q = _diag_pair()
    vp = np.asarray(p.std, np.float64) ** 2
    vq = np.asarray(q.spread, np.float64)
    dm = np.asarray(p.mean, np.float64) - np.asarray(q.mean, np.float64)
    ref = 0.5 * (vp / vq + dm**2 / vq + np.log(vq) + LOG_2PI)
    got = cross_entropy(p, q, axis=())
    assert got.shape == (2, 3, 4)
    assert max_rel_err(got, ref) < 2e-6
    for axis in [-1, None, (0, -1), 0, (0, 1)]:
        np.testing.assert_allclose(cross_entropy(p, q, axis=axis), ref.sum(axis), rtol=1e-5)


def test_per_dimension_terms_of_a_mixture_against_a_diagonal_q():
    mix = random_mixture(14, (), 3, 4)
    q = DiagGaussian.standard(4)
    terms = cross_entropy(mix, q, axis=())
    assert terms.shape == (4,)
    np.testing.assert_allclose(jnp.sum(terms), cross_entropy(mix, q), rtol=1e-6)


def test_batch_axis_reductions_for_a_full_pair():
    rng = np.random.default_rng(15)
    p, q = rand_dist("full", rng, (3, 2))[0], rand_dist("lowrank", rng, (2,))[0]
    per_example = cross_entropy(p, q)
    np.testing.assert_allclose(cross_entropy(p, q, axis=None), per_example.sum(), rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(p, q, axis=(0, 2)), per_example.sum(0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# jit, vmap, grad, dtypes
# ---------------------------------------------------------------------------------------------


def test_vmap_equals_broadcasting():
    rng = np.random.default_rng(16)
    p, q = rand_dist("full", rng, (5,))[0], rand_dist("diag", rng, (5,))[0]
    np.testing.assert_allclose(jax.vmap(cross_entropy)(p, q), cross_entropy(p, q), rtol=1e-6)


def test_gradient_matches_the_closed_form_derivatives():
    rng = np.random.default_rng(17)
    mp, mq = rng.normal(size=4), rng.normal(size=4)
    lp, lq = rng.normal(size=4), rng.normal(size=4)

    def f(mp, lp, mq, lq):
        return cross_entropy(DiagGaussian(mp, lp), DiagGaussian(mq, lq))

    g = jax.grad(f, argnums=(0, 1, 2, 3))(*(jnp.asarray(a, jnp.float32) for a in (mp, lp, mq, lq)))
    dm, vp, vq = mp - mq, np.exp(lp), np.exp(lq)
    ref = (dm / vq, 0.5 * vp / vq, -dm / vq, 0.5 * (1 - (vp + dm**2) / vq))
    for got, want in zip(g, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_half_precision_inputs_are_computed_in_float32():
    p = DiagGaussian(jnp.ones(3, jnp.bfloat16), jnp.zeros(3, jnp.bfloat16))
    q = FullGaussian(jnp.zeros(3, jnp.bfloat16), jnp.eye(3, dtype=jnp.bfloat16))
    got = cross_entropy(p, q)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, 1.5 + 1.5 * (1 + LOG_2PI), rtol=1e-6)


def test_checked_mode_sees_both_arguments():
    p = DiagGaussian(jnp.array([jnp.nan, 0.0]), jnp.zeros(2))
    err, _ = gkl_jax.checked(cross_entropy)(p, DiagGaussian.standard(2))
    assert "cross_entropy: argument 'p.mean' must be finite" in str(err.get())


@pytest.mark.invalid_input
def test_a_mixture_q_has_no_closed_form_and_the_message_shows_the_estimate():
    p = DiagGaussian.standard(5)
    with pytest.raises(TypeError, match=r"H\(DiagGaussian, GaussianMixture\).*kl_mc"):
        cross_entropy(p, random_mixture(0, (), 2, 5))


@pytest.mark.invalid_input
def test_per_dimension_terms_of_a_full_pair_are_an_error():
    rng = np.random.default_rng(18)
    p, q = rand_dist("full", rng, (2,))[0], rand_dist("diag", rng, (2,))[0]
    with pytest.raises(ValueError, match=r"cross_entropy: axis=\(\).*\(FullGaussian, Diag"):
        cross_entropy(p, q, axis=())


def test_peer_gaussians_are_converted_as_by_kl():
    nd = pytest.importorskip("numpyro.distributions")
    mean, std = jnp.array([0.5, -1.0, 0.2]), jnp.array([0.7, 1.3, 1.0])
    peer = nd.Normal(mean, std).to_event(1)
    q = DiagGaussian.standard(3)
    np.testing.assert_allclose(
        cross_entropy(peer, q), cross_entropy(DiagGaussian.from_std(mean, std), q), rtol=1e-6
    )

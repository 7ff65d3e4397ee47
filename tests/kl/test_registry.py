"""kl(p, q, *, axis=...): numpy-style reductions of the per-dimension terms (diagonal pairs) and
of the per-example values over batch axes (every pair); clear errors otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkl_jax import DiagGaussian, kl, kl_diag, register_kl
from gkl_jax._src.kl.registry import kl_op
from tests.helpers import kl_diag_exact, max_rel_err, rand_dist, random_mixture

AXES = [-1, (), None, 0, 1, 2, (0,), (0, -1), (1, 2), (0, 1), (-3, -2, -1), (2, 0)]


def _diag_pair():
    rng = np.random.default_rng(21)
    p = DiagGaussian.from_std(
        rng.normal(size=(2, 1, 4)).astype(np.float32),
        rng.uniform(0.5, 2, (3, 4)).astype(np.float32),
    )
    q = DiagGaussian.from_std(
        rng.normal(size=(3, 4)).astype(np.float32),
        rng.uniform(0.5, 2, (2, 1, 4)).astype(np.float32),
    )
    return p, q


@pytest.mark.parametrize("axis", AXES, ids=str)
def test_diagonal_pairs_follow_kl_diag(axis):
    p, q = _diag_pair()
    got = jax.jit(kl, static_argnames="axis")(p, q, axis=axis)
    ref = kl_diag(p.mean, p.spread, q.mean, q.spread, axis=axis, param="std")
    assert got.shape == ref.shape == np.sum(np.empty((2, 3, 4)), axis=axis).shape
    np.testing.assert_allclose(got, ref, rtol=2e-6)


def test_per_dimension_terms_are_exact():
    p, q = _diag_pair()
    terms = kl(p, q, axis=())
    ref = kl_diag_exact(p.mean, p.spread, q.mean, q.spread, param="std")
    assert terms.shape == (2, 3, 4)
    assert max_rel_err(terms, ref) < 5e-7
    np.testing.assert_allclose(jnp.sum(terms, -1), kl(p, q), rtol=1e-6)


def test_mixed_parametrizations_per_dimension():
    p, q = _diag_pair()
    q_lv = DiagGaussian(q.mean, q.log_var)
    np.testing.assert_allclose(kl(p, q_lv, axis=()), kl(p, q, axis=()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kinds", [("full", "diag"), ("lowrank", "full"), ("diag", "lowrank"), ("full", "full")]
)
@pytest.mark.parametrize("axis", [None, (0, -1), (-1,), (0, 1, 2), (1, 2)], ids=str)
def test_every_pair_reduces_over_batch_axes(kinds, axis):
    rng = np.random.default_rng(22)
    p = rand_dist(kinds[0], rng, shape=(2, 1))[0]
    q = rand_dist(kinds[1], rng, shape=(3,))[0]
    per_example = np.asarray(kl(p, q), np.float64)  # (2, 3)
    ref = np.sum(per_example[..., None], axis=axis)  # on the (*batch, latent) layout
    got = jax.jit(kl, static_argnames="axis")(p, q, axis=axis)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_gradient_of_per_dimension_terms():
    p, q = _diag_pair()

    def f(mean_p):
        return kl(DiagGaussian.from_std(mean_p, p.spread), q, axis=())[0, 1, 2]

    g = jax.grad(f)(p.mean)
    want = np.zeros(p.mean.shape)
    want[0, 0, 2] = (p.mean[0, 0, 2] - q.mean[1, 2]) / q.spread[0, 0, 2] ** 2
    np.testing.assert_allclose(g, want, rtol=1e-5)


def test_vmap_over_the_pair():
    rng = np.random.default_rng(24)
    p = DiagGaussian(rng.normal(size=(5, 4)), rng.normal(size=(5, 4)))  # every leaf batched
    q = DiagGaussian.from_var(rng.normal(size=(5, 4)), rng.uniform(0.5, 2, (5, 4)))
    got = jax.vmap(lambda a, b: kl(a, b, axis=()))(p, q)
    np.testing.assert_allclose(got, kl(p, q, axis=()), rtol=1e-6)


class Tagged(DiagGaussian):
    """Inherits the diagonal kernel, and with it the per-dimension terms."""


class Own(DiagGaussian):
    """Registers its own KL: the diagonal terms need not be its terms."""


@register_kl(Own, Own)
def _kl_own(p, q):
    return kl(DiagGaussian(p.mean, p.spread), DiagGaussian(q.mean, q.spread))


def test_a_subclass_inherits_the_terms_of_the_kernel_it_inherits():
    p, q = _diag_pair()
    tp = Tagged.from_std(p.mean, p.spread)
    np.testing.assert_array_equal(kl(tp, q, axis=()), kl(p, q, axis=()))


@pytest.mark.invalid_input
def test_a_pair_registered_anew_has_no_per_dimension_terms():
    own = Own(jnp.zeros((2, 3)), jnp.zeros(3))
    np.testing.assert_allclose(kl(own, own, axis=None), 0.0)
    with pytest.raises(ValueError, match=r"kl: axis=\(\) keeps the latent axis.*\(Own, Own\)"):
        kl(own, own, axis=())


@pytest.mark.invalid_input
@pytest.mark.parametrize("axis", [(), 0, (0, 1)], ids=str)
def test_per_dimension_terms_of_a_correlated_pair_are_an_error(axis):
    rng = np.random.default_rng(23)
    p, q = rand_dist("full", rng, (2, 3))[0], rand_dist("diag", rng, (3,))[0]
    with pytest.raises(ValueError, match=r"\(FullGaussian, DiagGaussian\) has no per-dimension"):
        kl(p, q, axis=axis)


@pytest.mark.invalid_input
@pytest.mark.parametrize(
    "axis, error, match",
    [(3, ValueError, "axis 3 is out of range"), ((0, 0), ValueError, "repeated axis"),
     ("x", TypeError, "axis must be")],
)  # fmt: skip
def test_bad_axis(axis, error, match):
    p, q = _diag_pair()
    with pytest.raises(error, match=match):
        kl(p, q, axis=axis)


@pytest.mark.invalid_input
def test_no_closed_form_is_reported_whatever_the_axis():
    mix = random_mixture(0, (), 2, 3)
    for axis in (-1, (), None):
        with pytest.raises(TypeError, match=r"no closed form.*kl_mc"):
            kl(DiagGaussian.standard(3), mix, axis=axis)


def teardown_module():
    kl_op.unregister(Own, Own)

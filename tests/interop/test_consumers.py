"""kl, the divergences and kl_mc take distrax / TFP / numpyro objects directly: mixed with
gkl_jax types and with each other, under jit and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian
from gkl_jax.interop import as_gaussian
from tests.interop.cases import D, params, peer

# (name, build(arrays) -> the object, build(arrays) -> the gkl_jax Gaussian it is); arrays are
# (mean, std, tril, factor, cov_diag) so that grad can reach every parameter
SIDES = {
    "distrax.MultivariateNormalDiag": (
        "distrax",
        lambda x, a: x.MultivariateNormalDiag(a[0], a[1]),
        lambda a: DiagGaussian(a[0], std=a[1]),
    ),
    "tfp.Independent(Normal)": (
        "tfp",
        lambda x, a: x.Independent(x.Normal(a[0], a[1]), 1),
        lambda a: DiagGaussian(a[0], std=a[1]),
    ),
    "numpyro.Normal.to_event(1)": (
        "numpyro",
        lambda x, a: x.Normal(a[0], a[1]).to_event(1),
        lambda a: DiagGaussian(a[0], std=a[1]),
    ),
    "distrax.MultivariateNormalTri": (
        "distrax",
        lambda x, a: x.MultivariateNormalTri(a[0], a[2]),
        lambda a: FullGaussian(a[0], a[2]),
    ),
    "tfp.MultivariateNormalTriL": (
        "tfp",
        lambda x, a: x.MultivariateNormalTriL(a[0], a[2]),
        lambda a: FullGaussian(a[0], a[2]),
    ),
    "numpyro.LowRankMultivariateNormal": (
        "numpyro",
        lambda x, a: x.LowRankMultivariateNormal(a[0], a[3], a[4]),
        lambda a: LowRankGaussian(a[0], a[3], jnp.log(a[4])),
    ),
    "gkl_jax.DiagGaussian(log_var)": (
        None,
        lambda x, a: DiagGaussian(a[0], 2.0 * jnp.log(a[1])),
        lambda a: DiagGaussian(a[0], 2.0 * jnp.log(a[1])),
    ),
}
PAIRS = [
    ("distrax.MultivariateNormalDiag", "gkl_jax.DiagGaussian(log_var)"),
    ("gkl_jax.DiagGaussian(log_var)", "numpyro.Normal.to_event(1)"),
    ("tfp.Independent(Normal)", "numpyro.Normal.to_event(1)"),
    ("numpyro.Normal.to_event(1)", "distrax.MultivariateNormalDiag"),
    ("distrax.MultivariateNormalTri", "tfp.MultivariateNormalTriL"),
    ("tfp.MultivariateNormalTriL", "numpyro.LowRankMultivariateNormal"),
    ("numpyro.LowRankMultivariateNormal", "distrax.MultivariateNormalDiag"),
]


def arrays(seed):
    p = params(seed)
    return tuple(jnp.asarray(p[k]) for k in ("m", "s", "tril", "w", "c"))


def side(name):
    library, build, ref = SIDES[name]
    mod = None if library is None else peer(library)
    return (lambda a: build(mod, a)), ref


@pytest.mark.parametrize(("name_p", "name_q"), PAIRS, ids=lambda n: n)
def test_mixed_pairs_under_jit_and_grad(name_p, name_q):
    make_p, ref_p = side(name_p)
    make_q, ref_q = side(name_q)
    a, b = arrays(0), arrays(1)

    def f(a, b):
        return gkl_jax.kl(make_p(a), make_q(b)).sum()

    def ref(a, b):
        return gkl_jax.kl(ref_p(a), ref_q(b)).sum()

    want = ref(a, b)
    np.testing.assert_array_equal(f(a, b), want)
    np.testing.assert_allclose(jax.jit(f)(a, b), want, rtol=1e-6)
    got_g, want_g = jax.jit(jax.grad(f, (0, 1)))(a, b), jax.grad(ref, (0, 1))(a, b)
    for got, exp in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n, s in SIDES.items() if s[0] is not None])
def test_peer_objects_cross_jit_as_arguments(name):
    make, ref = side(name)
    a, b = arrays(0), arrays(1)
    p, q = make(a), make(b)
    want = gkl_jax.kl(ref(a), ref(b))
    np.testing.assert_allclose(jax.jit(gkl_jax.kl)(p, q), want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(gkl_jax.kl)(p, ref(b)), want, rtol=1e-6)


DIVERGENCES = {
    "jeffreys": gkl_jax.jeffreys,
    "bhattacharyya": gkl_jax.bhattacharyya,
    "hellinger": gkl_jax.hellinger,
    "renyi(0.3)": lambda p, q: gkl_jax.renyi(p, q, alpha=0.3),
    "renyi(1)": lambda p, q: gkl_jax.renyi(p, q, alpha=1.0),
    "wasserstein2": gkl_jax.wasserstein2,
}


@pytest.mark.parametrize("div", DIVERGENCES)
@pytest.mark.parametrize(("name_p", "name_q"), PAIRS[2:5], ids=lambda n: n)
def test_divergences_take_peer_objects(div, name_p, name_q):
    make_p, ref_p = side(name_p)
    make_q, ref_q = side(name_q)
    a, b = arrays(0), arrays(1)
    fn = DIVERGENCES[div]
    np.testing.assert_array_equal(fn(make_p(a), make_q(b)), fn(ref_p(a), ref_q(b)))


def test_kl_mc_with_peer_p_and_q():
    """A foreign p is converted, so it gets antithetic pairs and control variates: exact for
    Gaussian pairs up to rounding, with the same numbers as the gkl_jax types."""
    make_p, ref_p = side("distrax.MultivariateNormalDiag")
    make_q, ref_q = side("numpyro.Normal.to_event(1)")
    a, b = arrays(0), arrays(1)
    key = jax.random.key(0)
    est = gkl_jax.kl_mc(key, make_p(a), make_q(b), num_samples=64)
    want = gkl_jax.kl_mc(key, ref_p(a), ref_q(b), num_samples=64)
    np.testing.assert_array_equal(est.value, want.value)
    np.testing.assert_allclose(est.value, gkl_jax.kl(ref_p(a), ref_q(b)), rtol=1e-4)


def test_kl_mc_with_peer_p_against_a_mixture_under_jit_and_grad():
    make_p, ref_p = side("tfp.Independent(Normal)")
    comps = DiagGaussian(jnp.array([[-1.0] * D, [1.0] * D]), jnp.zeros((2, D)))
    q = GaussianMixture(jnp.zeros(2), comps)
    key = jax.random.key(1)

    def f(a, make):
        return gkl_jax.kl_mc(key, make(a), q, num_samples=256).value.sum()

    a = arrays(0)
    np.testing.assert_allclose(jax.jit(f, static_argnums=1)(a, make_p), f(a, ref_p), rtol=1e-6)
    got, want = jax.grad(f)(a, make_p), jax.grad(f)(a, ref_p)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_kl_mc_keeps_a_callable_q_and_an_unsupported_peer_q():
    """The hook leaves what it cannot convert alone: a log-density, a distrax Laplace (whose
    log_prob kl_mc uses as it did before)."""
    dx = peer("distrax")
    p = DiagGaussian(jnp.zeros(D), jnp.zeros(D))
    key = jax.random.key(2)
    est = gkl_jax.kl_mc(key, dx.MultivariateNormalDiag(jnp.zeros(D)), p.log_prob, num_samples=64)
    np.testing.assert_allclose(est.value, 0.0, atol=1e-6)
    laplace = dx.Independent(dx.Laplace(jnp.zeros(D), jnp.ones(D)), 1)
    with jax.numpy_rank_promotion("allow"):  # distrax's log_prob broadcasts by rank
        est = gkl_jax.kl_mc(key, p, laplace, num_samples=4096)
    exact = D * (np.log(2.0) - 0.5 * np.log(2 * np.pi) - 0.5 + np.sqrt(2 / np.pi))
    assert abs(float(est.value) - exact) < 5 * float(est.stderr)


def test_registered_converter_reaches_every_consumer():
    from gkl_jax._src.interop_hook import converters
    from gkl_jax.interop import register_converter

    class MyNormal:
        def __init__(self, mu, sigma):
            self.mu, self.sigma = mu, sigma

    register_converter(MyNormal)(lambda o: DiagGaussian(o.mu, std=o.sigma))
    try:
        a, b = arrays(0), arrays(1)
        p, q = MyNormal(a[0], a[1]), MyNormal(b[0], b[1])
        gp, gq = as_gaussian(p), as_gaussian(q)
        np.testing.assert_array_equal(gkl_jax.kl(p, q), gkl_jax.kl(gp, gq))
        np.testing.assert_array_equal(gkl_jax.jeffreys(p, q), gkl_jax.jeffreys(gp, gq))
        key = jax.random.key(0)
        # the converted pair is a pytree of arrays: its eager call runs compiled (one fusion),
        # the unconverted one op by op -- the same draws, rounded differently
        np.testing.assert_allclose(
            gkl_jax.kl_mc(key, p, q, num_samples=64).value,
            gkl_jax.kl_mc(key, gp, gq, num_samples=64).value,
            rtol=1e-5,
        )
    finally:
        converters.unregister(MyNormal)


@pytest.mark.invalid_input
def test_unsupported_peer_class_keeps_the_no_closed_form_message():
    dx = peer("distrax")
    q = DiagGaussian(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(TypeError, match=r"no closed form for KL\(Laplace \|\| DiagGaussian\)"):
        gkl_jax.kl(dx.Laplace(jnp.zeros(2), jnp.ones(2)), q)
    with pytest.raises(TypeError, match="'p' must be a DiagGaussian, FullGaussian or LowRank"):
        gkl_jax.jeffreys(dx.Laplace(jnp.zeros(2), jnp.ones(2)), q)


@pytest.mark.invalid_input
def test_bare_normal_is_a_scalar_event_so_sizes_differ():
    """A bare Normal (no Independent / to_event) has event size 1, as in the library itself."""
    nd = peer("numpyro")
    q = DiagGaussian(jnp.zeros((3, D)), jnp.zeros((3, D)))
    with pytest.raises(ValueError, match=r"latent sizes .* differ.*\(1 vs 4\)"):
        gkl_jax.kl(nd.Normal(jnp.zeros((3, D)), 1.0), q)

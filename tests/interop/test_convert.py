"""as_gaussian on every supported distrax / TFP / numpyro class, the KL against float64 and the
peers' own, and the way back (convert): exact round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian
from gkl_jax.interop import as_gaussian, convert, to_distrax, to_numpyro, to_tfp
from tests.helpers import dense_kl, max_rel_err
from tests.interop.cases import CASES, D, build, f64, params, peer, peer_kl

EPS32 = float(np.finfo(np.float32).eps)
LIBRARIES = ("distrax", "tfp", "numpyro")


def assert_same_params(got, want):
    """Same type and parametrization, and every parameter equal bit for bit (after
    broadcasting: a library may have added leading unit axes)."""
    assert type(got) is type(want)
    got_leaves, got_def = jax.tree_util.tree_flatten(got)
    want_leaves, want_def = jax.tree_util.tree_flatten(want)
    assert got_def == want_def  # includes DiagGaussian.param
    for a, b in zip(got_leaves, want_leaves, strict=True):
        a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def dense_cov(g):
    return np.asarray(g.to_full().covariance(), np.float64)


def scale_cond(cov):
    """Condition number of a square root of ``cov`` (the conversion's error grows with it)."""
    return float(np.max(np.sqrt(np.linalg.cond(cov))))


def kl_tol(case, pa, pb):
    """Parameters kept as they are: gkl_jax's float32 bound. Parameters computed by a
    factorization (QR of a general square root, Cholesky of a covariance): its backward error,
    ~ cond(S) eps relative (measured up to 3 cond(S) eps, distrax's D + U V^T at cond 240)."""
    if case.expect is not None:
        return 2e-6
    cond = max(scale_cond(case.dense(pa)[1]), scale_cond(case.dense(pb)[1]))
    return max(2e-6, 20 * cond * EPS32)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_converts_to_the_gkl_type_keeping_the_parameters(case):
    obj, p = build(case, 0)
    g = as_gaussian(obj)
    assert type(g) is case.kind
    mean, cov = case.dense(p)
    assert g.batch_shape == mean.shape[:-1] and g.event_size == mean.shape[-1]
    assert g.batch_shape == tuple(obj.batch_shape)
    if case.expect is not None:
        assert_same_params(g, case.expect(p))
    np.testing.assert_allclose(np.broadcast_to(f64(g.mean), mean.shape), mean, rtol=0, atol=0)
    scale = np.max(np.abs(cov))
    np.testing.assert_allclose(dense_cov(g), cov, rtol=2e-5, atol=2e-5 * scale)
    assert as_gaussian(g) is g


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kl_agrees_with_float64_the_peer_and_gkl_jax_on_the_same_inputs(case):
    for seed in range(3):
        a, pa = build(case, seed)
        b, pb = build(case, seed + 1000)
        ours = gkl_jax.kl(a, b)  # kl converts them itself
        np.testing.assert_array_equal(ours, gkl_jax.kl(as_gaussian(a), as_gaussian(b)))
        if case.expect is not None:  # the same numbers as gkl_jax's own types on those arrays
            np.testing.assert_array_equal(ours, gkl_jax.kl(case.expect(pa), case.expect(pb)))
        ref = dense_kl(*case.dense(pa), *case.dense(pb))
        assert ours.shape == ref.shape
        tol = kl_tol(case, pa, pb)
        assert max_rel_err(ours, ref) <= tol
        theirs = peer_kl(case.library, a, b)
        if theirs is not None:  # the peers' float32 formulas: measured <= 8e-6 from float64
            assert max_rel_err(ours, theirs) <= tol + 2e-5


@pytest.mark.parametrize("library", LIBRARIES)
def test_kl_of_a_pair_from_two_libraries(library):
    """The same parameters through two libraries give exactly the same KL."""
    other = {"distrax": "tfp", "tfp": "numpyro", "numpyro": "distrax"}[library]
    pa, pb = params(1), params(2)
    mods = peer(library), peer(other)
    diag = {
        "distrax": lambda x, p: x.MultivariateNormalDiag(p["m"], p["s"]),
        "tfp": lambda x, p: x.Independent(x.Normal(p["m"], p["s"]), 1),
        "numpyro": lambda x, p: x.Normal(p["m"], p["s"]).to_event(1),
    }
    a = diag[library](mods[0], pa)
    b = diag[other](mods[1], pb)
    want = gkl_jax.kl(DiagGaussian(pa["m"], std=pa["s"]), DiagGaussian(pb["m"], std=pb["s"]))
    np.testing.assert_array_equal(gkl_jax.kl(a, b), want)


# ---------------------------------------------------------------------------------------------
# the way back
# ---------------------------------------------------------------------------------------------

GKL = {
    "diag-std": lambda p: DiagGaussian(p["m"], std=p["s"]),
    "diag-log_var": lambda p: DiagGaussian(p["m"], p["lv"]),
    "diag-var": lambda p: DiagGaussian(p["m"], var=p["s"] ** 2),
    "full": lambda p: FullGaussian(p["m"], p["tril"]),
    "low_rank": lambda p: LowRankGaussian(p["m"], p["w"], jnp.log(p["c"])),
}
TO = {"distrax": to_distrax, "tfp": to_tfp, "numpyro": to_numpyro}


def expected_back(kind, library, g):
    """What ``as_gaussian(convert(g, library))`` must be, parameter for parameter."""
    if kind == "diag-log_var" and library == "distrax":
        return g  # distrax keeps the log-scale
    if kind in ("diag-log_var", "diag-var"):
        return DiagGaussian(g.mean, std=g.std)  # TFP / numpyro hold a scale: one rounding
    return g


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("kind", GKL)
def test_round_trip_is_exact(kind, library):
    peer(library)
    g = GKL[kind](params(0))
    obj = convert(g, library)
    assert tuple(obj.batch_shape) == g.batch_shape and tuple(obj.event_shape) == (D,)
    assert type(TO[library](g)) is type(obj)
    back = as_gaussian(obj)
    if kind == "low_rank" and library == "distrax":
        # distrax has no covariance form: an exact square root, back as the FullGaussian of it
        assert isinstance(back, FullGaussian)
        np.testing.assert_allclose(dense_cov(back), dense_cov(g), rtol=2e-6, atol=2e-6)
    elif kind == "low_rank":
        # the library stores exp(log_diag): log(exp(x)) is within ~eps of x (absolutely)
        assert isinstance(back, LowRankGaussian)
        assert_same_params(LowRankGaussian(back.mean, back.factor, g.log_diag), g)
        np.testing.assert_allclose(back.log_diag, g.log_diag, rtol=0, atol=2 * EPS32)
    else:
        assert_same_params(back, expected_back(kind, library, g))
        assert_same_params(as_gaussian(convert(back, library)), back)  # a fixed point
        np.testing.assert_array_equal(gkl_jax.kl(back, obj), np.zeros(g.batch_shape))


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("kind", GKL)
def test_converted_object_is_the_same_distribution(kind, library):
    """The library's own log-density (and KL, where it has one) of the converted object."""
    peer(library)
    ga, gb = GKL[kind](params(0)), GKL[kind](params(1))
    a, b = convert(ga, library), convert(gb, library)
    x = jnp.asarray(np.random.default_rng(5).standard_normal((7, *ga.batch_shape, D)))
    with jax.numpy_rank_promotion("allow"):  # the libraries' internals
        theirs = a.log_prob(x)
    np.testing.assert_allclose(theirs, ga.log_prob(x), rtol=1e-5, atol=1e-5)
    theirs = peer_kl(library, a, b)
    if theirs is not None:
        assert max_rel_err(theirs, gkl_jax.kl(ga, gb)) <= 2e-5


def test_convert_accepts_peer_objects_too():
    tfd = peer("tfp")
    nd = peer("numpyro")
    p = params(0)
    obj = convert(tfd.MultivariateNormalTriL(p["m"], p["tril"]), "numpyro")
    assert isinstance(obj, nd.MultivariateNormal)
    assert_same_params(as_gaussian(obj), FullGaussian(p["m"], p["tril"]))


def test_round_trip_under_jit_and_grad():
    peer("distrax")

    def f(m, s):
        back = as_gaussian(to_distrax(DiagGaussian(m, std=s)))
        return gkl_jax.kl(back, DiagGaussian(jnp.zeros(D), jnp.zeros(D))).sum()

    def ref(m, s):
        return gkl_jax.kl(DiagGaussian(m, std=s), DiagGaussian(jnp.zeros(D), jnp.zeros(D))).sum()

    p = params(0)
    np.testing.assert_array_equal(jax.jit(f)(p["m"], p["s"]), ref(p["m"], p["s"]))
    for got, want in zip(
        jax.grad(f, (0, 1))(p["m"], p["s"]), jax.grad(ref, (0, 1))(p["m"], p["s"]), strict=True
    ):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# special shapes and values
# ---------------------------------------------------------------------------------------------


def test_independent_over_two_axes_merges_them_into_the_event():
    tfd = peer("tfp")
    rng = np.random.default_rng(0)
    m = rng.standard_normal((2, 3, 4)).astype(np.float32)
    s = np.exp(0.3 * rng.standard_normal((2, 3, 4))).astype(np.float32)
    g = as_gaussian(tfd.Independent(tfd.Normal(m, s), 2))
    assert g.batch_shape == (2,) and g.event_size == 12
    assert_same_params(g, DiagGaussian(m.reshape(2, 12), std=s.reshape(2, 12)))
    # and a multivariate base: Independent(MVNDiag (2, 3) x 4, 1) -> event 3 * 4
    g2 = as_gaussian(tfd.Independent(tfd.MultivariateNormalDiag(m, s), 1))
    assert_same_params(g2, g)


def test_broadcast_parameters_are_kept_unbroadcast():
    nd = peer("numpyro")
    m = np.zeros(D, np.float32)
    s = np.exp(np.random.default_rng(0).standard_normal((3, D))).astype(np.float32)
    g = as_gaussian(nd.Normal(m, s).to_event(1))
    assert g.batch_shape == (3,)
    assert g.mean.size == D  # the shared mean is not copied per batch element


def test_scalar_parameters_and_missing_loc():
    tfd, dx = peer("tfp"), peer("distrax")
    g = as_gaussian(tfd.Normal(0.0, 2.0))
    assert g.batch_shape == () and g.event_size == 1
    assert_same_params(g, DiagGaussian(jnp.zeros(1), std=jnp.full(1, 2.0)))
    s = jnp.array([1.0, 2.0, 3.0])
    assert_same_params(
        as_gaussian(tfd.MultivariateNormalDiag(scale_diag=s)), DiagGaussian(jnp.zeros(3), std=s)
    )
    assert_same_params(
        as_gaussian(tfd.MultivariateNormalDiag(jnp.ones(3))),
        DiagGaussian(jnp.ones(3), std=jnp.ones(3)),
    )
    # distrax Independent(Normal(0, s)) with a scalar loc
    assert_same_params(
        as_gaussian(dx.Independent(dx.Normal(0.0, s), 1)), DiagGaussian(jnp.zeros(3), std=s)
    )


def test_negative_diagonal_scales_are_valid_square_roots():
    """A scale's sign does not change S S^T: |d| for a diagonal, column flips for a factor."""
    tfd, dx = peer("tfp"), peer("distrax")
    p = params(0)
    signs = np.where(np.arange(D) % 2 == 0, 1.0, -1.0).astype(np.float32)
    want = DiagGaussian(p["m"], std=p["s"])
    assert_same_params(as_gaussian(tfd.MultivariateNormalDiag(p["m"], p["s"] * signs)), want)
    assert_same_params(as_gaussian(dx.MultivariateNormalDiag(p["m"], p["s"] * signs)), want)
    g = as_gaussian(tfd.MultivariateNormalTriL(p["m"], p["tril"] * signs))
    assert_same_params(g, FullGaussian(p["m"], p["tril"]))


def test_distrax_diag_plus_low_rank_without_update_stays_diagonal():
    dx = peer("distrax")
    p = params(0)
    g = as_gaussian(dx.MultivariateNormalDiagPlusLowRank(p["m"], p["s"]))
    assert_same_params(g, DiagGaussian(p["m"], std=p["s"]))


def test_low_rank_to_distrax_is_an_exact_square_root_for_every_rank():
    dx = peer("distrax")
    rng = np.random.default_rng(3)
    for k in (1, 3, 6):  # rank above d too
        w = (2.0 * rng.standard_normal((2, D, k))).astype(np.float32)
        g = LowRankGaussian(rng.standard_normal((2, D)).astype(np.float32), w, jnp.zeros(D))
        obj = to_distrax(g)
        assert isinstance(obj, dx.MultivariateNormalDiagPlusLowRank)
        s = np.asarray(obj.scale.matrix, np.float64)
        np.testing.assert_allclose(s @ np.swapaxes(s, -1, -2), dense_cov(g), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("library", LIBRARIES)
def test_float64_conversions_keep_the_dtype(library, x64):
    peer(library)
    p = {k: v.astype(np.float64) for k, v in params(0).items()}
    g = FullGaussian(p["m"], p["tril"])
    back = as_gaussian(convert(g, library))
    assert back.dtype == jnp.float64
    assert_same_params(back, g)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.invalid_input
def test_unsupported_peer_class_is_named_with_the_supported_ones():
    dx = peer("distrax")
    with pytest.raises(TypeError, match=r"no converter for distrax\..*Laplace.*Supported: "):
        as_gaussian(dx.Laplace(jnp.zeros(2), jnp.ones(2)))


@pytest.mark.invalid_input
def test_independent_over_a_full_covariance_base_says_what_to_do():
    tfd = peer("tfp")
    p = params(0)
    obj = tfd.Independent(tfd.MultivariateNormalTriL(p["m"], p["tril"]), 1)
    with pytest.raises(TypeError, match=r"block-diagonal.*sum of the blocks' KLs"):
        as_gaussian(obj)


@pytest.mark.invalid_input
def test_non_gaussians_are_rejected():
    comps = DiagGaussian(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    mix = GaussianMixture(jnp.zeros(2), comps)
    with pytest.raises(TypeError, match="GaussianMixture is a gkl_jax distribution but not"):
        as_gaussian(mix)
    with pytest.raises(TypeError, match=r"as_gaussian: no converter for builtins\.object"):
        convert(object(), "numpyro")
    with pytest.raises(ValueError, match="library must be one of"):
        convert(comps, "torch")

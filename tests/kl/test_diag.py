"""kl_diag, kl_diag_standard, kl of diagonal pairs and register_kl: accuracy, API, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gkl_jax
from gkl_jax import DiagGaussian, kl, kl_diag, kl_diag_standard
from tests.helpers import kl_diag_exact, kl_diag_grad_f64, max_rel_err

PARAMS = ("log_var", "var", "std")
TARGET = 2e-6  # float32 max relative error, every regime, every parametrization


def _convert(log_var, param):
    log_var = np.asarray(log_var, np.float64)
    if param == "log_var":
        return log_var.astype(np.float32)
    if param == "var":
        return np.exp(log_var).astype(np.float32)
    return np.exp(0.5 * log_var).astype(np.float32)


def _regime(name, rng, shape=(16, 32)):
    mp, lp = rng.normal(size=shape), rng.uniform(-3, 1, shape)
    if name == "typical":
        return mp, lp, rng.normal(size=shape), rng.uniform(-3, 1, shape)
    if name.startswith("near"):
        delta = float(name.split("-", 1)[1])
        return (
            mp,
            lp,
            mp * (1 + delta * rng.normal(size=shape)),
            lp * (1 + delta * rng.normal(size=shape)),
        )
    if name == "mean-only":
        return mp, lp, mp + 1e-3 * rng.normal(size=shape), lp
    if name == "var-only":
        return mp, lp, mp, lp * (1 + 1e-5 * rng.normal(size=shape))
    if name == "extreme":
        return (
            1e3 * rng.normal(size=shape),
            rng.uniform(-30, 30, shape),
            1e3 * rng.normal(size=shape),
            rng.uniform(-30, 30, shape),
        )
    raise ValueError(name)


REGIMES = [
    "typical",
    "near-1e-2",
    "near-1e-3",
    "near-1e-4",
    "near-1e-5",
    "near-1e-6",
    "mean-only",
    "var-only",
    "extreme",
]


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("regime", REGIMES)
def test_float32_accuracy_against_mpmath(regime, param):
    rng = np.random.default_rng(abs(hash((regime, param))) % 2**32)
    mp, lp, mq, lq = _regime(regime, rng)
    mp32, mq32 = mp.astype(np.float32), mq.astype(np.float32)
    sp, sq = _convert(lp, param), _convert(lq, param)
    ref_terms = kl_diag_exact(mp32, sp, mq32, sq, param)
    got = jax.jit(lambda *a: kl_diag(*a, param=param))(mp32, sp, mq32, sq)
    assert got.dtype == jnp.float32
    assert max_rel_err(got, ref_terms.sum(-1)) <= TARGET
    # per-dimension terms are just as exact
    terms = kl_diag(mp32, sp, mq32, sq, param=param, axis=())
    nonzero = ref_terms > 0
    assert max_rel_err(np.asarray(terms)[nonzero], ref_terms[nonzero]) <= TARGET
    assert np.all(np.asarray(terms)[~nonzero] == 0)


def test_textbook_formula_fails_in_the_same_regime():
    """Guards the claim the accuracy tests rest on: the naive float32 formula is far off here."""
    rng = np.random.default_rng(5)
    mp, lp, mq, lq = (a.astype(np.float32) for a in _regime("near-1e-4", rng))
    naive = 0.5 * np.sum(lq - lp + (np.exp(lp) + (mp - mq) ** 2) / np.exp(lq) - 1, axis=-1)
    ref = kl_diag_exact(mp, lp, mq, lq).sum(-1)
    assert max_rel_err(naive, ref) > 0.05
    assert max_rel_err(kl_diag(mp, lp, mq, lq), ref) <= TARGET


@pytest.mark.parametrize("param", PARAMS)
def test_kl_of_identical_distributions_is_exactly_zero(param):
    rng = np.random.default_rng(6)
    mu, lv = rng.normal(size=(8, 16)).astype(np.float32), rng.uniform(-5, 5, (8, 16))
    s = _convert(lv, param)
    np.testing.assert_array_equal(kl_diag(mu, s, mu, s, param=param), np.zeros(8))
    p = DiagGaussian.from_param(mu, s, param=param)
    np.testing.assert_array_equal(kl(p, p), np.zeros(8))


def test_never_negative_on_adversarial_near_pairs():
    rng = np.random.default_rng(7)
    mu = rng.normal(size=(64, 64)).astype(np.float32)
    lv = rng.uniform(-3, 3, (64, 64)).astype(np.float32)
    lv_q = np.nextafter(lv, np.float32(np.inf))  # one ulp apart
    for param in PARAMS:
        got = kl_diag(
            mu,
            _convert(lv, param),
            np.nextafter(mu, np.float32(0)),
            _convert(lv_q, param),
            param=param,
            axis=(),
        )
        assert bool(jnp.all(got >= 0))


@pytest.mark.parametrize("param", PARAMS)
def test_pytree_api_equals_array_api(param):
    rng = np.random.default_rng(8)
    mp, lp, mq, lq = _regime("near-1e-5", rng, (4, 8))
    sp, sq = _convert(lp, param), _convert(lq, param)
    mp32, mq32 = mp.astype(np.float32), mq.astype(np.float32)
    p = DiagGaussian.from_param(mp32, sp, param=param)
    q = DiagGaussian.from_param(mq32, sq, param=param)
    np.testing.assert_array_equal(kl(p, q), kl_diag(mp32, sp, mq32, sq, param=param))


def test_from_std_keeps_the_digits_that_a_log_var_conversion_loses():
    """The motivating case of the std path: 1e-5 relative perturbation of std."""
    rng = np.random.default_rng(9)
    mu = rng.normal(size=(32, 16)).astype(np.float32)
    std_p = np.exp(rng.uniform(-2, 1, (32, 16))).astype(np.float32)
    std_q = (std_p * (1 + 1e-5 * rng.normal(size=std_p.shape))).astype(np.float32)
    ref = kl_diag_exact(mu, std_p, mu, std_q, "std").sum(-1)
    exact = kl(DiagGaussian.from_std(mu, std_p), DiagGaussian.from_std(mu, std_q))
    assert max_rel_err(exact, ref) <= TARGET
    via_log_var = kl_diag(mu, 2 * np.log(std_p), mu, 2 * np.log(std_q))
    assert max_rel_err(via_log_var, ref) > 1e-4  # the loss the design avoids


def test_mixed_parametrizations_go_through_log_variance():
    rng = np.random.default_rng(10)
    mp, lp, mq, lq = (a.astype(np.float32) for a in _regime("typical", rng, (4, 8)))
    p = DiagGaussian.from_std(mp, np.exp(0.5 * lp))
    q = DiagGaussian(mq, lq)
    ref = kl_diag_exact(
        mp, np.exp(0.5 * lp).astype(np.float32), mq, np.exp(0.5 * lq.astype(np.float64)), "std"
    ).sum(-1)
    assert max_rel_err(kl(p, q), ref) < 1e-5


def test_kl_diag_standard_matches_exact_and_the_general_kernel():
    rng = np.random.default_rng(11)
    mu = (1e-4 * rng.normal(size=(8, 32))).astype(np.float32)
    lv = (1e-4 * rng.normal(size=(8, 32))).astype(np.float32)  # near posterior collapse
    ref = kl_diag_exact(mu, lv, 0.0, 0.0).sum(-1)
    assert max_rel_err(kl_diag_standard(mu, lv), ref) <= TARGET
    for param in PARAMS:
        s = _convert(lv, param)
        ref_p = kl_diag_exact(mu, s, 0.0, _convert(np.zeros(1), param), param).sum(-1)
        assert max_rel_err(kl_diag_standard(mu, s, param=param), ref_p) <= TARGET
    naive = -0.5 * np.sum(1 + lv - mu**2 - np.exp(lv), axis=-1)
    assert max_rel_err(naive, ref) > 1e-2


def test_kl_diag_standard_doc_value():
    assert float(kl_diag_standard(jnp.array([1.0, 0.0]), jnp.zeros(2))) == 0.5
    p = DiagGaussian(jnp.array([1.0, 0.0]), jnp.zeros(2))
    assert float(kl(p, DiagGaussian.standard(2))) == 0.5


# ------------------------------------------------------------------------------------------
# axis semantics and broadcasting
# ------------------------------------------------------------------------------------------


def test_axis_semantics_follow_numpy_sum():
    rng = np.random.default_rng(12)
    args = [rng.normal(size=(3, 4, 5)).astype(np.float32) for _ in range(4)]
    terms = np.asarray(kl_diag(*args, axis=()))
    assert terms.shape == (3, 4, 5)
    np.testing.assert_allclose(kl_diag(*args), terms.sum(-1), rtol=1e-6)
    np.testing.assert_allclose(kl_diag(*args, axis=None), terms.sum(), rtol=1e-6)
    np.testing.assert_allclose(kl_diag(*args, axis=0), terms.sum(0), rtol=1e-6)
    np.testing.assert_allclose(kl_diag(*args, axis=(0, 2)), terms.sum((0, 2)), rtol=1e-6)
    np.testing.assert_allclose(kl_diag(*args, axis=-2), terms.sum(-2), rtol=1e-6)


BROADCAST_SHAPES = [
    ((5,), (5,), (5,), (5,)),
    ((2, 5), (5,), (5,), (5,)),
    ((2, 5), (2, 5), (1, 5), (5,)),
    ((3, 1, 5), (1, 4, 5), (4, 5), (3, 4, 5)),
    ((6, 5), (6, 5), (6, 5), (1, 1, 5)),
]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
def test_broadcasting_grid(shapes):
    rng = np.random.default_rng(13)
    args = [rng.normal(size=s).astype(np.float32) for s in shapes]
    got = kl_diag(*args)
    full = np.broadcast_shapes(*shapes)
    assert got.shape == full[:-1]
    assert max_rel_err(got, kl_diag_exact(*args).sum(-1)) <= TARGET
    p = DiagGaussian(args[0], args[1])
    q = DiagGaussian(args[2], args[3])
    np.testing.assert_array_equal(kl(p, q), got)


# ------------------------------------------------------------------------------------------
# jit / vmap / grad; the variants are those of chex.variants (jit, no jit, arguments on device)
# ------------------------------------------------------------------------------------------


def _without_jit(fn):
    return fn


def _with_device(fn):
    """Calls ``fn`` without jit, on its arguments put on the default device first."""

    def put(x):
        try:
            return jax.device_put(x)
        except TypeError:  # not a valid JAX type
            return x

    def wrapper(*args, **kwargs):
        return fn(*jax.tree_util.tree_map(put, args), **jax.tree_util.tree_map(put, kwargs))

    return wrapper


@pytest.mark.parametrize(
    "variant", [jax.jit, _without_jit, _with_device], ids=["with_jit", "without_jit", "with_device"]
)
def test_value_and_shape(variant):
    rng = np.random.default_rng(14)
    args = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(4)]
    fn = variant(kl_diag)
    got = fn(*args)
    chex.assert_shape(got, (4,))
    chex.assert_tree_all_finite(got)
    np.testing.assert_allclose(got, kl_diag_exact(*args).sum(-1), rtol=TARGET)


@pytest.mark.parametrize("variant", [jax.jit, _without_jit], ids=["with_jit", "without_jit"])
def test_pytree_kl(variant):
    p = DiagGaussian(jnp.zeros((2, 3)), jnp.zeros(3))
    q = DiagGaussian(jnp.ones(3), jnp.full(3, 0.5))
    got = variant(kl)(p, q)
    expected = kl_diag_exact(np.zeros((2, 3)), np.zeros(3), np.ones(3), np.full(3, 0.5)).sum(-1)
    chex.assert_trees_all_close(got, expected.astype(np.float32), rtol=1e-6)


def test_vmap_over_batch_and_over_latent_dims():
    rng = np.random.default_rng(15)
    args = [rng.normal(size=(4, 6)).astype(np.float32) for _ in range(4)]
    per_row = jax.vmap(kl_diag)(*args)
    np.testing.assert_allclose(per_row, kl_diag(*args), rtol=1e-6)
    # vmapping over the latent axis (in_axes=-1) with axis=() gives per-dimension terms
    per_dim = jax.vmap(lambda *a: kl_diag(*a, axis=()), in_axes=-1, out_axes=-1)(
        *[a[..., None] for a in args]
    )
    np.testing.assert_allclose(per_dim[..., 0], kl_diag(*args, axis=()), rtol=1e-6)
    p, q = DiagGaussian(args[0], args[1]), DiagGaussian(args[2], args[3])
    np.testing.assert_allclose(jax.vmap(kl)(p, q), kl(p, q), rtol=1e-6)


def test_gradients_match_exact_derivatives_near_p_equals_q():
    """Near p == q the gradient is tiny; it must still be exact relative to itself."""
    rng = np.random.default_rng(16)
    for delta in (1e-1, 1e-3, 1e-5):
        mp, lp, mq, lq = (a.astype(np.float32) for a in _regime(f"near-{delta}", rng, (4, 8)))
        grads = jax.grad(lambda *a: jnp.sum(kl_diag(*a)), argnums=(0, 1, 2, 3))(mp, lp, mq, lq)
        ref = kl_diag_grad_f64(mp, lp, mq, lq)
        for g, r in zip(grads, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=2e-5, atol=1e-12)


def test_gradients_are_finite_and_zero_at_p_equals_q():
    mu, lv = jnp.ones((2, 3)), jnp.full((2, 3), 0.3)
    for param, s in (("log_var", lv), ("var", jnp.exp(lv)), ("std", jnp.exp(lv / 2))):
        grads = jax.grad(
            lambda *a, param=param: jnp.sum(kl_diag(*a, param=param)), argnums=(0, 1, 2, 3)
        )(mu, s, mu, s)
        chex.assert_tree_all_finite(grads)
        for g in grads:
            np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("param", PARAMS)
def test_check_grads_float64(param, x64):
    rng = np.random.default_rng(17)
    mp, mq = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    lp, lq = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (2, 3))
    sp, sq = (
        (np.exp(lp), np.exp(lq))
        if param == "var"
        else (np.exp(lp / 2), np.exp(lq / 2))
        if param == "std"
        else (lp, lq)
    )
    fn = lambda *a: kl_diag(*a, param=param)  # noqa: E731
    check_grads(fn, (mp, sp, mq, sq), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    check_grads(kl_diag_standard, (mp, lp), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("param", PARAMS)
def test_grad_in_each_parametrization_matches_float64_reference(param):
    rng = np.random.default_rng(18)
    mp, lp, mq, lq = (a.astype(np.float32) for a in _regime("near-1e-3", rng, (3, 5)))
    sp, sq = _convert(lp, param), _convert(lq, param)
    g32 = jax.grad(lambda sp: jnp.sum(kl_diag(mp, sp, mq, sq, param=param)))(sp)
    with jax.enable_x64(True):
        g64 = jax.grad(
            lambda sp: jnp.sum(
                kl_diag(
                    mp.astype(np.float64),
                    sp,
                    mq.astype(np.float64),
                    sq.astype(np.float64),
                    param=param,
                )
            )
        )(sp.astype(np.float64))
        # and the float64 gradient against central differences of the mpmath value
        h = 1e-6 * np.abs(sp.astype(np.float64))
        e = np.zeros_like(h)
        e[0, 0] = h[0, 0]
        fd = (
            kl_diag_exact(mp, sp + e, mq, sq, param).sum()
            - kl_diag_exact(mp, sp - e, mq, sq, param).sum()
        ) / (2 * h[0, 0])
        assert float(g64[0, 0]) == pytest.approx(fd, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(g32, g64, rtol=2e-5, atol=1e-10)


# ------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_are_exact_on_the_rounded_inputs(dtype):
    rng = np.random.default_rng(19)
    mp, lp, mq, lq = _regime("near-1e-2", rng, (8, 16))
    args = [jnp.asarray(a, dtype) for a in (mp, lp, mq, lq)]
    got = kl_diag(*args)
    assert got.dtype == jnp.float32
    rounded = [np.asarray(a.astype(jnp.float32)) for a in args]
    ref = kl_diag_exact(*rounded).sum(-1)
    nonzero = ref > 0
    assert max_rel_err(np.asarray(got)[nonzero], ref[nonzero]) <= TARGET


def test_mixed_float_dtypes_promote():
    got = kl_diag(jnp.zeros(3, jnp.bfloat16), jnp.zeros(3), jnp.ones(3, jnp.float16), jnp.zeros(3))
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------
# peers (optional, typical regime only: they are not exact near p == q)
# ------------------------------------------------------------------------------------------


def test_agrees_with_distrax_in_the_typical_regime():
    distrax = pytest.importorskip("distrax")
    rng = np.random.default_rng(20)
    mp, lp, mq, lq = (a.astype(np.float32) for a in _regime("typical", rng))
    p = distrax.MultivariateNormalDiag(mp, np.exp(0.5 * lp))
    q = distrax.MultivariateNormalDiag(mq, np.exp(0.5 * lq))
    np.testing.assert_allclose(kl_diag(mp, lp, mq, lq), p.kl_divergence(q), rtol=1e-5)


def test_agrees_with_tfp_in_the_typical_regime():
    tfp = pytest.importorskip("tensorflow_probability.substrates.jax")
    tfd = tfp.distributions
    rng = np.random.default_rng(21)
    mp, lp, mq, lq = (a.astype(np.float32) for a in _regime("typical", rng))
    p = tfd.MultivariateNormalDiag(mp, np.exp(0.5 * lp))
    q = tfd.MultivariateNormalDiag(mq, np.exp(0.5 * lq))
    np.testing.assert_allclose(kl_diag(mp, lp, mq, lq), tfd.kl_divergence(p, q), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


@pytest.mark.invalid_input
@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (
            ((3, 4), (3, 5), (3, 4), (3, 4)),
            r"kl_diag: latent sizes \(last axis\) differ: 'mean_p' has shape \(3, 4\) and 'log_var_p' has shape \(3, 5\) \(4 vs 5\)",
        ),
        (
            ((3, 4), (3, 4), (2, 4), (4,)),
            r"kl_diag: batch shapes do not broadcast: 'mean_q' has shape \(2, 4\), against 'mean_p' \(3, 4\), 'log_var_p' \(3, 4\)",
        ),
        (((), (4,), (4,), (4,)), r"kl_diag: argument 'mean_p' is a scalar \(shape \(\)\)"),
    ],
)
def test_shape_errors_name_arguments_and_shapes(shapes, message):
    args = [jnp.zeros(s) for s in shapes]
    with pytest.raises(ValueError, match=message):
        kl_diag(*args)
    with pytest.raises(ValueError, match=message):
        jax.jit(kl_diag)(*args)  # raised at trace time, inside jit too


@pytest.mark.invalid_input
def test_param_names_appear_in_messages():
    with pytest.raises(ValueError, match=r"'log_var_q \(a std\)' has shape \(5,\)"):
        kl_diag(jnp.zeros(4), jnp.ones(4), jnp.zeros(4), jnp.ones(5), param="std")


@pytest.mark.invalid_input
def test_bad_param_and_axis():
    z = jnp.zeros((2, 3))
    with pytest.raises(
        ValueError, match=r"kl_diag: param must be one of \('log_var', 'var', 'std'\), got 'sigma'"
    ):
        kl_diag(z, z, z, z, param="sigma")
    with pytest.raises(
        ValueError, match="kl_diag: axis 2 is out of range for a result with 2 axes"
    ):
        kl_diag(z, z, z, z, axis=2)
    with pytest.raises(ValueError, match=r"kl_diag: repeated axis in \(1, -1\)"):
        kl_diag(z, z, z, z, axis=(1, -1))
    with pytest.raises(TypeError, match="kl_diag: axis must be an int, a tuple of ints"):
        kl_diag(z, z, z, z, axis="last")


@pytest.mark.invalid_input
def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match=r"kl_diag: argument 'log_var_q' has dtype int32"):
        kl_diag(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match=r"kl_diag_standard: argument 'mean' has dtype bool"):
        kl_diag_standard(jnp.zeros(3, bool), jnp.zeros(3))


def test_kl_pair_without_closed_form_points_to_monte_carlo():
    class Other:
        pass

    with pytest.raises(
        TypeError,
        match=r"kl: no closed form for KL\(DiagGaussian \|\| Other\).*gkl_jax.kl_mc\(key, p, q, num_samples=1024\)",
    ):
        kl(DiagGaussian(jnp.zeros(2), jnp.zeros(2)), Other())


def test_kl_latent_size_mismatch():
    with pytest.raises(
        ValueError,
        match=r"kl: latent sizes \(last axis\) differ: 'p.mean' has shape \(3,\) and 'q.mean' has shape \(4,\)",
    ):
        kl(DiagGaussian(jnp.zeros(3), jnp.zeros(3)), DiagGaussian(jnp.zeros(4), jnp.zeros(4)))


def test_register_kl_dispatch_follows_subclasses():
    class Tagged(DiagGaussian):
        pass

    p = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(DiagGaussian(jnp.zeros(2), jnp.zeros(2))),
        [jnp.zeros(2), jnp.zeros(2)],
    )
    assert float(kl(p, DiagGaussian(jnp.ones(2), jnp.zeros(2)))) == pytest.approx(1.0)
    calls = []

    @gkl_jax.register_kl(Tagged, DiagGaussian)
    def _tagged(p, q):
        calls.append(1)
        return jnp.zeros(())

    try:
        t = Tagged(jnp.zeros(2), jnp.zeros(2))
        kl(t, DiagGaussian(jnp.ones(2), jnp.zeros(2)))
        assert calls == [1]
        # the reverse pair is not registered for Tagged, so it falls back to the parents' form
        assert float(kl(DiagGaussian(jnp.ones(2), jnp.zeros(2)), t)) == pytest.approx(1.0)
    finally:
        from gkl_jax._src.kl.registry import kl_op

        kl_op.unregister(Tagged, DiagGaussian)


def test_log_variances_far_apart_overflow_to_inf_not_nan():
    assert float(kl_diag(jnp.zeros(1), jnp.array([89.0]), jnp.zeros(1), jnp.zeros(1))) == np.inf
    assert float(kl_diag_standard(jnp.zeros(1), jnp.array([100.0]))) == np.inf
    # and just below the overflow the value is still exact
    lv = np.array([80.0], np.float32)
    ref = kl_diag_exact(np.zeros(1), lv, np.zeros(1), np.zeros(1)).sum()
    assert (
        max_rel_err(
            kl_diag(np.zeros(1, np.float32), lv, np.zeros(1, np.float32), np.zeros(1, np.float32)),
            ref,
        )
        <= TARGET
    )


def test_pytree_kl_applies_the_dtype_policy():
    p = DiagGaussian(jnp.zeros((2, 3)), jnp.zeros(3))
    q = DiagGaussian(jnp.ones((2, 3)), jnp.full(3, 0.5))
    to_bf16 = lambda d: jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), d)  # noqa: E731
    got = kl(to_bf16(p), to_bf16(q))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, kl(p, q), rtol=1e-6)
    to_int = lambda d: jax.tree_util.tree_map(lambda a: a.astype(jnp.int32), d)  # noqa: E731
    with pytest.raises(TypeError, match=r"kl: argument 'p.mean' has dtype int32"):
        kl(to_int(p), q)

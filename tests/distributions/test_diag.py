"""DiagGaussian: constructors, parametrizations, log_prob / sample / entropy, pytree behaviour."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gkl_jax import DiagGaussian, kl
from tests.helpers import diag_log_prob_f64

RNG = np.random.default_rng(0)
MEAN = RNG.normal(size=(3, 4)).astype(np.float32)
LOG_VAR = RNG.uniform(-2, 1, size=(3, 4)).astype(np.float32)


def _three_ways():
    """The same distribution built from log-variance, variance and standard deviation."""
    var = np.exp(LOG_VAR.astype(np.float64))
    return [
        DiagGaussian(MEAN, LOG_VAR),
        DiagGaussian.from_var(MEAN, var.astype(np.float32)),
        DiagGaussian.from_std(MEAN, np.sqrt(var).astype(np.float32)),
    ]


@pytest.mark.parametrize("dist", _three_ways(), ids=["log_var", "var", "std"])
def test_parametrizations_agree(dist):
    var = np.exp(LOG_VAR.astype(np.float64))
    np.testing.assert_allclose(dist.var, var, rtol=2e-6)
    np.testing.assert_allclose(dist.std, np.sqrt(var), rtol=2e-6)
    np.testing.assert_allclose(dist.log_var, LOG_VAR, rtol=2e-6, atol=1e-6)
    assert dist.batch_shape == (3,)
    assert dist.event_size == 4
    assert dist.dtype == jnp.float32


def test_stored_parametrization_is_kept_as_given():
    std = jnp.full(4, 1.00001, jnp.float32)
    d = DiagGaussian.from_std(jnp.zeros(4), std)
    assert d.param == "std"
    assert d.spread is not None and bool(jnp.all(d.spread == std))
    assert DiagGaussian.from_param(jnp.zeros(4), std, param="var").param == "var"


@pytest.mark.parametrize("dist", _three_ways(), ids=["log_var", "var", "std"])
def test_log_prob_matches_scipy(dist):
    x = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    got = jax.jit(lambda d, x: d.log_prob(x))(dist, x)
    assert got.shape == (5, 3)
    ref = diag_log_prob_f64(x, MEAN, np.exp(LOG_VAR.astype(np.float64)))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # and one row against scipy's multivariate normal
    mvn = stats.multivariate_normal(MEAN[1], np.diag(np.exp(LOG_VAR[1].astype(np.float64))))
    np.testing.assert_allclose(got[:, 1], mvn.logpdf(x[:, 1]), rtol=1e-5)


def test_log_prob_broadcasts_a_single_point_over_the_batch():
    d = DiagGaussian(MEAN, LOG_VAR)
    x = np.zeros(4, np.float32)
    np.testing.assert_allclose(
        d.log_prob(x), diag_log_prob_f64(x, MEAN, np.exp(LOG_VAR)), rtol=1e-5
    )


@pytest.mark.parametrize("dist", _three_ways(), ids=["log_var", "var", "std"])
def test_entropy_matches_scipy(dist):
    ref = [
        stats.multivariate_normal(MEAN[i], np.diag(np.exp(LOG_VAR[i].astype(np.float64)))).entropy()
        for i in range(3)
    ]
    np.testing.assert_allclose(dist.entropy(), ref, rtol=1e-5)


def test_sample_shape_and_moments():
    d = DiagGaussian(MEAN, LOG_VAR)
    x = jax.jit(lambda d, k: d.sample(k, (20000,)))(d, jax.random.key(1))
    assert x.shape == (20000, 3, 4)
    se_mean = np.sqrt(np.exp(LOG_VAR) / 20000)
    assert np.all(np.abs(x.mean(0) - MEAN) < 5 * se_mean)
    np.testing.assert_allclose(x.var(0), np.exp(LOG_VAR), rtol=0.05)


def test_sample_is_reparameterized():
    """d/d(mean) of E[x] is 1 and d/d(log_var) of E[x^2] is var (pathwise gradients flow)."""

    def second_moment(log_var):
        d = DiagGaussian(jnp.zeros(2), log_var)
        return jnp.mean(d.sample(jax.random.key(2), (50000,)) ** 2, axis=0)

    jac = jax.jacobian(second_moment)(jnp.array([0.0, 0.5]))
    np.testing.assert_allclose(np.diag(jac), np.exp([0.0, 0.5]), rtol=0.05)


def test_standard_normal():
    d = DiagGaussian.standard(3, batch_shape=(2,))
    assert d.batch_shape == (2,) and d.event_size == 3
    np.testing.assert_allclose(
        d.log_prob(jnp.zeros(3)), -1.5 * np.log(2 * np.pi) * np.ones(2), rtol=1e-6
    )


def test_standard_normal_accepts_an_int_batch_shape_and_size_zero():
    assert DiagGaussian.standard(2, batch_shape=4).batch_shape == (4,)
    assert DiagGaussian.standard(0).event_size == 0


@pytest.mark.invalid_input
def test_standard_normal_rejects_bad_sizes_naming_them():
    with pytest.raises(ValueError, match=r"DiagGaussian.standard: event_size must be >= 0, got -1"):
        DiagGaussian.standard(-1)
    with pytest.raises(TypeError, match=r"DiagGaussian.standard: event_size must be a Python int"):
        DiagGaussian.standard(2.0)
    with pytest.raises(TypeError, match=r"DiagGaussian.standard: event_size must be a Python int"):
        DiagGaussian.standard(jnp.array(3))
    with pytest.raises(
        ValueError, match=r"standard: batch_shape must not have negative .*\(2, -3\)"
    ):
        DiagGaussian.standard(2, batch_shape=(2, -3))
    with pytest.raises(TypeError, match=r"standard: batch_shape must be an int or a tuple of ints"):
        DiagGaussian.standard(2, batch_shape=(2.0,))
    with pytest.raises(TypeError, match=r"DiagGaussian.standard: dtype must be a floating-point"):
        DiagGaussian.standard(2, dtype=jnp.int32)


def test_broadcasting_batch_between_mean_and_spread():
    d = DiagGaussian(jnp.zeros((5, 1, 3)), jnp.zeros((2, 3)))
    assert d.batch_shape == (5, 2)
    assert d.sample(jax.random.key(0)).shape == (5, 2, 3)
    assert d.entropy().shape == (5, 2)


def test_pytree_through_jit_vmap_grad_and_tree_map():
    d = DiagGaussian(MEAN, LOG_VAR)
    leaves, treedef = jax.tree_util.tree_flatten(d)
    assert len(leaves) == 2
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    chex.assert_trees_all_equal(rebuilt, d)
    doubled = jax.tree_util.tree_map(lambda a: 2 * a, d)
    assert isinstance(doubled, DiagGaussian) and doubled.param == "log_var"
    per_row = jax.vmap(lambda d: d.entropy())(d)
    np.testing.assert_allclose(per_row, d.entropy(), rtol=1e-6)
    grads = jax.grad(lambda d: jnp.sum(d.log_prob(jnp.zeros(4))))(d)
    assert isinstance(grads, DiagGaussian)
    np.testing.assert_allclose(grads.mean, -MEAN / np.exp(LOG_VAR), rtol=1e-5)


def test_immutable():
    d = DiagGaussian(MEAN, LOG_VAR)
    with pytest.raises(AttributeError, match="immutable"):
        d.mean = jnp.zeros(4)


def test_bf16_inputs_are_computed_in_float32():
    d = DiagGaussian(jnp.asarray(MEAN, jnp.bfloat16), jnp.asarray(LOG_VAR, jnp.bfloat16))
    assert d.dtype == jnp.float32
    assert d.log_prob(jnp.zeros(4, jnp.bfloat16)).dtype == jnp.float32


def test_repr():
    assert repr(DiagGaussian(MEAN, LOG_VAR)) == (
        "DiagGaussian(batch_shape=(3,), event_size=4, param='log_var', dtype=float32)"
    )


@pytest.mark.invalid_input
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: DiagGaussian(jnp.zeros(()), jnp.zeros(())),
            r"DiagGaussian: argument 'mean' is a scalar",
        ),
        (
            lambda: DiagGaussian(jnp.zeros((2, 3)), jnp.zeros((2, 4))),
            r"DiagGaussian: latent sizes \(last axis\) differ: 'mean' has shape \(2, 3\) and 'log_var' has shape \(2, 4\)",
        ),
        (
            lambda: DiagGaussian.from_std(jnp.zeros((2, 3)), jnp.ones((4, 3))),
            r"DiagGaussian.from_std: batch shapes do not broadcast: 'std' has shape \(4, 3\), against 'mean' \(2, 3\)",
        ),
        (
            lambda: DiagGaussian.from_param(jnp.zeros(3), jnp.ones(3), param="sigma"),
            r"param must be one of",
        ),
    ],
)
def test_shape_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_log_prob_shape_error():
    with pytest.raises(
        ValueError, match=r"DiagGaussian.log_prob: latent sizes .* 'x' has shape \(5,\)"
    ):
        DiagGaussian(MEAN, LOG_VAR).log_prob(jnp.zeros(5))


def test_log_prob_checks_x_against_the_spread_and_batch():
    d = DiagGaussian(jnp.zeros(4), jnp.zeros((3, 4)))
    with pytest.raises(
        ValueError,
        match=r"DiagGaussian.log_prob: batch shapes do not broadcast: 'log_var' has shape \(3, 4\), against 'x' \(2, 4\)",
    ):
        d.log_prob(jnp.zeros((2, 4)))


@pytest.mark.invalid_input
def test_integer_inputs_raise_type_error():
    with pytest.raises(TypeError, match=r"DiagGaussian.from_var: argument 'var' has dtype int32"):
        DiagGaussian.from_var(jnp.zeros(3), jnp.ones(3, jnp.int32))


# ---------------------------------------------------------------------------------------------
# isotropic spreads: a scalar, or a size-1 latent axis, broadcast along the latent axis
# ---------------------------------------------------------------------------------------------

ISOTROPIC = {
    "python float": (1.3, (4,)),
    "0-d array": (np.float32(1.3), (4,)),
    "size-1 latent": (np.full((1,), 1.3, np.float32), (4,)),
    "one per example": (np.linspace(0.5, 2.0, 3, dtype=np.float32)[:, None], (3, 4)),
}


@pytest.mark.parametrize("param", ["log_var", "var", "std"])
@pytest.mark.parametrize("spread, stored", ISOTROPIC.values(), ids=ISOTROPIC.keys())
def test_isotropic_spread_is_broadcast_along_the_latent_axis(spread, stored, param):
    d = DiagGaussian.from_param(MEAN, spread, param=param)
    assert d.spread.shape == stored and d.param == param
    assert d.batch_shape == (3,) and d.event_size == 4 and d.event_shape == (4,)
    explicit = DiagGaussian.from_param(
        MEAN, np.broadcast_to(np.asarray(spread, np.float32), (3, 4)), param=param
    )
    q = DiagGaussian(MEAN[::-1], LOG_VAR)
    np.testing.assert_array_equal(kl(d, q), kl(explicit, q))
    np.testing.assert_array_equal(kl(q, d), kl(q, explicit))
    x = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(d.log_prob(x), explicit.log_prob(x))


def test_isotropic_keywords_and_constructors():
    assert DiagGaussian(MEAN, std=0.5).spread.shape == (4,)
    assert DiagGaussian(MEAN, var=2.0).param == "var"
    assert DiagGaussian.from_std(MEAN, 0.5).std.shape == (4,)
    assert DiagGaussian.from_var(MEAN, jnp.float32(2.0)).var.shape == (4,)
    assert DiagGaussian(MEAN, 0.0).log_var.shape == (4,)
    built = jax.jit(lambda m, s: DiagGaussian(m, std=s))(MEAN, jnp.float32(0.5))
    assert built.spread.shape == (4,) and built.batch_shape == (3,)


def test_isotropic_log_prob_against_scipy():
    d = DiagGaussian(MEAN, std=0.7)
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    ref = stats.multivariate_normal(MEAN[2], 0.49 * np.eye(4)).logpdf(x)
    np.testing.assert_allclose(d.log_prob(x[:, None, :])[:, 2], ref, rtol=1e-5)


def test_isotropic_kl_stays_exact_for_nearly_identical_pairs():
    p = DiagGaussian(jnp.zeros((2, 4)), std=1.00001)
    q = DiagGaussian(jnp.zeros((2, 4)), std=1.0)
    t = np.float64(np.float32(1.00001)) ** 2  # the stored float32 value, squared exactly
    exact = 0.5 * 4 * (t - 1 - np.log(t))
    np.testing.assert_allclose(kl(p, q), [exact, exact], rtol=1e-6)


def test_gradient_flows_to_a_scalar_spread():
    q = DiagGaussian(MEAN[0], LOG_VAR[0])

    def f(s):
        return kl(DiagGaussian(MEAN[0], std=s), q)

    g = jax.grad(f)(jnp.float32(1.3))
    per_dim = jax.grad(lambda s: kl(DiagGaussian(MEAN[0], std=s), q))(jnp.full(4, 1.3))
    np.testing.assert_allclose(g, jnp.sum(per_dim), rtol=1e-6)


@pytest.mark.invalid_input
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DiagGaussian(0.0, std=1.0), r"DiagGaussian: argument 'mean' is a scalar"),
        (
            lambda: DiagGaussian(jnp.zeros((3, 4)), std=jnp.ones((3, 2))),
            r"latent sizes \(last axis\) differ: 'mean' has shape \(3, 4\) and 'std' has shape "
            r"\(3, 2\)",
        ),
        (
            lambda: DiagGaussian(jnp.zeros((3, 4)), jnp.ones((2, 1))),
            r"batch shapes do not broadcast: 'log_var' has shape \(2, 4\)",
        ),
    ],
)
def test_isotropic_shape_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()

"""The value-checked mode (checkify / chex.chexify) and trace-time shape checks."""

import re

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import gkl_jax
from gkl_jax import (
    DiagGaussian,
    FullGaussian,
    GaussianMixture,
    LowRankGaussian,
    kl,
    kl_diag,
    kl_diag_standard,
)
from gkl_jax._src.checks import check_axis, check_event_shapes
from gkl_jax._src.kl.registry import kl_op

GOOD = jnp.ones((2, 3))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (
            (GOOD.at[0, 1].set(jnp.nan), GOOD, GOOD, GOOD),
            {},
            "kl_diag: argument 'mean_p' must be finite: 1 of 6 entries are NaN or inf",
        ),
        (
            (GOOD, GOOD, GOOD, GOOD.at[1].set(jnp.inf)),
            {},
            "kl_diag: argument 'log_var_q' must be finite: 3 of 6 entries are NaN or inf",
        ),
        (
            (GOOD, GOOD.at[0, 0].set(-1.0), GOOD, GOOD),
            {"param": "var"},
            "kl_diag: argument 'log_var_p (a var)' must be positive: 1 of 6 entries are <= 0 or NaN",
        ),
        (
            (GOOD, GOOD, GOOD, GOOD.at[:, 0].set(0.0)),
            {"param": "std"},
            "kl_diag: argument 'log_var_q (a std)' must be positive: 2 of 6 entries are <= 0 or NaN",
        ),
    ],
)
def test_checked_mode_reports_the_offending_argument(args, kwargs, message):
    err, _ = gkl_jax.checked(lambda *a: kl_diag(*a, **kwargs))(*args)
    assert err.get() is not None and message in err.get()
    # also when the checked function is jitted, and through chex.chexify (which raises)
    err, _ = jax.jit(gkl_jax.checked(lambda *a: kl_diag(*a, **kwargs)))(*args)
    assert message in err.get()
    with pytest.raises(Exception, match=re.escape(message)), gkl_jax.checking():
        chex.chexify(lambda *a: kl_diag(*a, **kwargs), async_check=False)(*args)


def test_checked_mode_passes_good_inputs_and_returns_the_same_value():
    err, value = jax.jit(gkl_jax.checked(kl_diag))(GOOD, GOOD, 2 * GOOD, GOOD)
    assert err.get() is None
    np.testing.assert_array_equal(value, kl_diag(GOOD, GOOD, 2 * GOOD, GOOD))


def test_negative_log_variance_is_fine_but_negative_variance_is_not():
    err, _ = gkl_jax.checked(kl_diag)(GOOD, -GOOD, GOOD, GOOD)
    assert err.get() is None
    err, _ = gkl_jax.checked(kl_diag_standard)(GOOD, -GOOD, param="std")
    assert "kl_diag_standard: argument 'log_var (a std)' must be positive" in err.get()


def test_constructors_are_checked():
    err, _ = gkl_jax.checked(DiagGaussian.from_std)(GOOD, -GOOD)
    assert "DiagGaussian.from_std: argument 'std' must be positive: 6 of 6" in err.get()

    def f(mean):
        return kl(DiagGaussian(mean, GOOD), DiagGaussian(GOOD, GOOD))

    err, _ = gkl_jax.checked(f)(GOOD.at[0, 0].set(jnp.nan))
    assert "DiagGaussian: argument 'mean' must be finite" in err.get()


def test_checked_mode_under_vmap_and_grad():
    bad = GOOD.at[1, 2].set(-1.0)
    err, _ = gkl_jax.checked(
        jax.vmap(lambda s: kl_diag(GOOD[0], s, GOOD[0], GOOD[0], param="var"))
    )(bad)
    assert "argument 'log_var_p (a var)' must be positive" in err.get()
    err, _ = gkl_jax.checked(jax.grad(lambda s: kl_diag(GOOD, s, GOOD, GOOD, param="var").sum()))(
        bad
    )
    assert "argument 'log_var_p (a var)' must be positive" in err.get()


def test_nothing_is_clamped_outside_checked_mode():
    """Without the checked mode, bad values propagate as NaN instead of being hidden."""
    out = kl_diag(GOOD, GOOD.at[0, 0].set(-1.0), GOOD, GOOD, param="var")
    assert bool(jnp.isnan(out[0])) and bool(jnp.isfinite(out[1]))


def test_checks_compile_away_in_normal_use():
    compiled = jax.jit(lambda *a: kl_diag(*a, param="var")).lower(GOOD, GOOD, GOOD, GOOD).compile()
    hlo = compiled.as_text()
    assert "is-finite" not in hlo and "is_finite" not in hlo


def test_extra_checkify_error_sets_are_accepted():
    err, _ = gkl_jax.checked(lambda x: jnp.log(x) / x, errors=checkify.float_checks)(jnp.zeros(2))
    assert err.get() is not None


def test_check_event_shapes_returns_batch_and_event():
    assert check_event_shapes("f", ["a", "b"], [(2, 1, 3), (4, 3)]) == ((2, 4), 3)


def test_check_axis_rejects_bools():
    with pytest.raises(
        TypeError, match="f: axis must be an int, a tuple of ints, \\(\\) or None; got True"
    ):
        check_axis("f", True, 3)


def test_check_axis_normalizes():
    assert check_axis("f", -1, 3) == (2,)
    assert check_axis("f", (0, -1), 3) == (0, 2)
    assert check_axis("f", None, 3) is None
    assert check_axis("f", (), 3) == ()


# --------------------------------------------------------------------------------------------
# the checked mode sees every distribution, wherever it was built
#
# Distributions built OUTSIDE the checked function (so their constructors' checks did not run)
# and passed in: every consumer reports their bad values, naming itself and the argument.

D = 3
_RNG = np.random.default_rng(7)
MEAN = jnp.asarray(_RNG.normal(size=(2, D)), jnp.float32)
LOG_VAR = jnp.asarray(_RNG.uniform(-1, 1, (2, D)), jnp.float32)
_T = np.tril(_RNG.normal(size=(2, D, D)))
_T[..., np.arange(D), np.arange(D)] = _RNG.uniform(0.5, 1.5, (2, D))
TRIL = jnp.asarray(_T, jnp.float32)
FACTOR = jnp.asarray(_RNG.normal(size=(2, D, 2)), jnp.float32)
LOGITS = jnp.asarray(_RNG.normal(size=(2, 4)), jnp.float32)
COMP_MEAN = jnp.asarray(_RNG.normal(size=(2, 4, D)), jnp.float32)
KEY = jax.random.key(0)
NAN_MEAN = MEAN.at[0, 1].set(jnp.nan)


def _unflattened(dist, **fields):
    """``dist`` with ``fields`` replaced by raw arrays, as JAX rebuilds it (no ``__init__``)."""
    for name, value in fields.items():
        dist = eqx.tree_at(lambda d, n=name: getattr(d, n), dist, value)
    return dist


def _mixture(logits=LOGITS, comp_mean=COMP_MEAN):
    return GaussianMixture(logits, DiagGaussian(comp_mean, jnp.zeros(D)))


# kind -> (a good distribution, [(what, bad distribution, message after "fn: argument ")])
KINDS = {
    "diag": (
        DiagGaussian(MEAN, LOG_VAR),
        [
            ("nan mean", DiagGaussian(NAN_MEAN, LOG_VAR), "'p.mean' must be finite: 1 of 6"),
            (
                "inf log_var",
                DiagGaussian(MEAN, LOG_VAR.at[1, 2].set(jnp.inf)),
                "'p.log_var' must be finite: 1 of 6",
            ),
        ],
    ),
    "diag-var": (
        DiagGaussian.from_var(MEAN, jnp.exp(LOG_VAR)),
        [
            (
                "negative var",
                DiagGaussian.from_var(MEAN, jnp.exp(LOG_VAR).at[0, 0].set(-1.0)),
                "'p.var' must be positive: 1 of 6",
            ),
            (
                "nan mean",
                DiagGaussian.from_var(NAN_MEAN, jnp.exp(LOG_VAR)),
                "'p.mean' must be finite: 1 of 6",
            ),
        ],
    ),
    "diag-std": (
        DiagGaussian.from_std(MEAN, jnp.exp(LOG_VAR)),
        [
            (
                "zero std",
                DiagGaussian.from_std(MEAN, jnp.exp(LOG_VAR).at[1, 1].set(0.0)),
                "'p.std' must be positive: 1 of 6",
            ),
        ],
    ),
    "full": (
        FullGaussian(MEAN, TRIL),
        [
            ("nan mean", FullGaussian(NAN_MEAN, TRIL), "'p.mean' must be finite: 1 of 6"),
            (
                "nan below the diagonal",
                FullGaussian(MEAN, TRIL.at[0, 2, 1].set(jnp.nan)),
                "'lower triangle of p.scale_tril' must be finite: 1 of 12",
            ),
            (
                "zero diagonal",
                FullGaussian(MEAN, TRIL.at[1, 0, 0].set(0.0)),
                "'diagonal of p.scale_tril' must be positive: 1 of 6",
            ),
            (
                "negative diagonal, unflattened",
                _unflattened(FullGaussian(MEAN, TRIL), scale_tril=TRIL.at[1, 0, 0].set(-1.0)),
                "'diagonal of p.scale_tril' must be positive: 1 of 6",
            ),
            (
                "non-zero upper triangle, unflattened",
                _unflattened(FullGaussian(MEAN, TRIL), scale_tril=TRIL.at[0, 0, 2].set(1.0)),
                "'p.scale_tril' is not lower triangular: 1 of 6",
            ),
        ],
    ),
    "low_rank": (
        LowRankGaussian(MEAN, FACTOR, LOG_VAR),
        [
            (
                "nan mean",
                LowRankGaussian(NAN_MEAN, FACTOR, LOG_VAR),
                "'p.mean' must be finite: 1 of 6",
            ),
            (
                "nan factor",
                LowRankGaussian(MEAN, FACTOR.at[0, 0, 1].set(jnp.nan), LOG_VAR),
                "'p.factor' must be finite: 1 of 12",
            ),
            (
                "inf log_diag",
                LowRankGaussian(MEAN, FACTOR, LOG_VAR.at[1, 0].set(-jnp.inf)),
                "'p.log_diag' must be finite: 1 of 6",
            ),
        ],
    ),
    "mixture": (
        _mixture(),
        [
            (
                "nan logit",
                _mixture(LOGITS.at[1, 3].set(jnp.nan)),
                "'p.logits' must be finite or -inf (a zero-weight component): 1 of 8",
            ),
            (
                "+inf logit",
                _mixture(LOGITS.at[0, 0].set(jnp.inf)),
                "'p.logits' must be finite or -inf (a zero-weight component): 1 of 8",
            ),
            (
                "every logit -inf",
                _mixture(LOGITS.at[1].set(-jnp.inf)),
                "'p.logits' gives no component a positive weight: 1 of 2 mixtures",
            ),
            (
                "nan component mean",
                _mixture(comp_mean=COMP_MEAN.at[0, 2, 1].set(jnp.nan)),
                "'p.components.mean' must be finite: 1 of 24",
            ),
        ],
    ),
}
GAUSSIANS = ["diag", "diag-var", "diag-std", "full", "low_rank"]

CONSUMERS = {
    "kl": (gkl_jax.kl, GAUSSIANS),
    "jeffreys": (gkl_jax.jeffreys, GAUSSIANS),
    "renyi": (lambda p, q: gkl_jax.renyi(p, q, alpha=0.5), GAUSSIANS),
    "bhattacharyya": (gkl_jax.bhattacharyya, GAUSSIANS),
    "hellinger": (gkl_jax.hellinger, GAUSSIANS),
    "wasserstein2": (gkl_jax.wasserstein2, GAUSSIANS),
    "kl_mc": (lambda p, q: gkl_jax.kl_mc(KEY, p, q, num_samples=8), [*GAUSSIANS, "mixture"]),
    "kl_mixture_variational": (gkl_jax.kl_mixture_variational, ["diag", "mixture"]),
    "kl_mixture_upper_bound": (gkl_jax.kl_mixture_upper_bound, ["diag-std", "mixture"]),
}


@pytest.mark.parametrize(
    ("consumer", "kind"), [(c, k) for c, (_, kinds) in CONSUMERS.items() for k in kinds]
)
def test_checked_mode_sees_distributions_built_outside_it(consumer, kind):
    fn, _ = CONSUMERS[consumer]
    good, bads = KINDS[kind]
    run = jax.jit(gkl_jax.checked(fn))  # one compilation for every case of this kind
    err, _ = run(good, good)
    assert err.get() is None, err.get()
    for what, bad, message in bads:
        err, _ = run(bad, good)
        assert err.get() is not None, what
        assert f"{consumer}: argument {message}" in err.get(), (what, err.get())
        # and as the second argument
        err, _ = run(good, bad)
        assert f"{consumer}: argument {message.replace('p.', 'q.')}" in err.get(), what


@pytest.mark.parametrize("consumer", ["kl", "wasserstein2", "kl_mc"])
def test_prebuilt_checks_are_zero_cost_and_reported_in_the_mode(consumer):
    fn, _ = CONSUMERS[consumer]
    good, ((_, bad, message), *_) = KINDS["full"]
    out = fn(bad, good)  # outside the mode: the NaN passes through, no error
    assert not np.all(np.isfinite(np.asarray(jax.tree_util.tree_leaves(out)[0])))
    err, _ = gkl_jax.checked(fn)(bad, good)  # eager, not jitted
    assert f"{consumer}: argument {message}" in err.get()


def test_kl_checks_a_user_registered_pair_and_a_user_distribution_type():
    class Point(gkl_jax.Distribution):
        """A user type with no checks of its own: the default checks every float leaf."""

        loc: jax.Array

        @property
        def batch_shape(self):
            return self.loc.shape[:-1]

        @property
        def event_size(self):
            return self.loc.shape[-1]

    class Tagged(DiagGaussian):
        pass

    @gkl_jax.register_kl(Point, Point)
    def _kl_point(p, q):
        return jnp.sum(jnp.square(p.loc - q.loc), axis=-1)

    @gkl_jax.register_kl(Tagged, Tagged)
    def _kl_tagged(p, q):
        return jnp.zeros(p.batch_shape)  # never looks at the values

    try:
        err, _ = gkl_jax.checked(kl)(Point(NAN_MEAN), Point(MEAN))
        assert "kl: argument 'p.loc' must be finite: 1 of 6" in err.get()
        err, _ = gkl_jax.checked(kl)(Tagged(MEAN, LOG_VAR), Tagged(NAN_MEAN, LOG_VAR))
        assert "kl: argument 'q.mean' must be finite: 1 of 6" in err.get()
        err, _ = gkl_jax.checked(kl)(Tagged(MEAN, LOG_VAR), Tagged(MEAN, LOG_VAR))
        assert err.get() is None
    finally:
        kl_op.unregister(Point, Point)
        kl_op.unregister(Tagged, Tagged)


# no false alarms on documented valid inputs


def test_a_minus_inf_logit_is_a_zero_weight_component_not_an_error():
    logits = LOGITS.at[0, 1].set(-jnp.inf).at[1, 3].set(-jnp.inf)
    err, _ = gkl_jax.checked(lambda lg: _mixture(lg))(logits)  # built inside the mode
    assert err.get() is None
    mix = _mixture(logits)  # and built outside
    for fn in (
        gkl_jax.kl_mixture_variational,
        gkl_jax.kl_mixture_upper_bound,
        lambda p, q: gkl_jax.kl_mc(KEY, p, q, num_samples=8),
    ):
        err, value = gkl_jax.checked(fn)(mix, _mixture())
        assert err.get() is None
        assert np.all(np.isfinite(np.asarray(jax.tree_util.tree_leaves(value)[0])))


def test_nan_in_the_ignored_upper_triangle_is_not_an_error():
    tril = TRIL.at[:, 0, 2].set(jnp.nan).at[1, 1, 2].set(jnp.inf)
    err, p = gkl_jax.checked(FullGaussian)(MEAN, tril)
    assert err.get() is None
    np.testing.assert_array_equal(p.scale_tril, TRIL)
    err, value = gkl_jax.checked(lambda t: kl(FullGaussian(MEAN, t), FullGaussian(MEAN, TRIL)))(
        tril
    )
    assert err.get() is None
    np.testing.assert_array_equal(value, np.zeros(2))


def test_a_negative_diagonal_is_not_an_error():
    tril = TRIL.at[0, :, 1].multiply(-1.0)  # a column flipped: the same covariance
    err, p = gkl_jax.checked(FullGaussian)(MEAN, tril)
    assert err.get() is None
    err, value = gkl_jax.checked(kl)(p, FullGaussian(MEAN, TRIL))
    assert err.get() is None
    np.testing.assert_allclose(value, 0.0, atol=1e-6)


def test_a_non_triangular_scale_tril_is_reported_by_the_constructor():
    square_root = TRIL.at[1, 0, 2].set(0.5)  # finite, non-zero above the diagonal
    err, _ = gkl_jax.checked(FullGaussian)(MEAN, square_root)
    assert "FullGaussian: argument 'scale_tril' is not lower triangular: 1 of 6" in err.get()
    assert "FullGaussian.from_scale(mean, S)" in err.get()


# --------------------------------------------------------------------------------------------
# sampling arguments


SAMPLERS = {
    "DiagGaussian": KINDS["diag"][0],
    "FullGaussian": KINDS["full"][0],
    "LowRankGaussian": KINDS["low_rank"][0],
    "GaussianMixture": KINDS["mixture"][0],
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_an_int_sample_shape_means_one_axis(name):
    dist = SAMPLERS[name]
    assert dist.sample(KEY, 5).shape == (5, 2, D)
    np.testing.assert_array_equal(dist.sample(KEY, 5), dist.sample(KEY, (5,)))
    assert dist.sample(jax.random.PRNGKey(0), [2, 1]).shape == (2, 1, 2, D)  # a raw key


@pytest.mark.invalid_input
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_bad_sampling_arguments_raise_naming_them(name):
    dist = SAMPLERS[name]
    with pytest.raises(ValueError, match=rf"{name}.sample: sample_shape must not have negative"):
        dist.sample(KEY, (3, -1))
    with pytest.raises(TypeError, match=rf"{name}.sample: sample_shape must be an int or a tuple"):
        dist.sample(KEY, 2.0)
    with pytest.raises(
        TypeError, match=rf"{name}.sample: argument 'key' must be a PRNG key .* int"
    ):
        dist.sample(0, (2,))
    with pytest.raises(TypeError, match=rf"{name}.sample: argument 'key' must be a PRNG key"):
        dist.sample(jnp.zeros(2), (2,))


@pytest.mark.invalid_input
def test_register_kl_rejects_non_classes():
    with pytest.raises(TypeError, match=r"kl: register takes 2 class\(es\), got \('a', 'b'\)"):
        gkl_jax.register_kl("a", "b")
    with pytest.raises(TypeError, match="kl: register takes 2 class"):
        gkl_jax.register_kl(DiagGaussian, DiagGaussian(MEAN, LOG_VAR))

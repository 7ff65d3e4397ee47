"""The value-checked mode (checkify / chex.chexify) and trace-time shape checks."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import gkl_jax
from gkl_jax import DiagGaussian, kl, kl_diag, kl_diag_standard
from gkl_jax._src.checks import check_axis, check_event_shapes

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

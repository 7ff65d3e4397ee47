"""phi, log-ratios and the dtype policy against mpmath and float64 NumPy."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from gkl_jax._src.numerics import (
    as_float_arrays,
    compute_dtype,
    log1p,
    log_ratio,
    phi,
    phi_diff,
    phi_log_ratio,
    ratio_minus_one,
    sum_last,
)
from tests.helpers import max_rel_err, phi_exact


def _phi_grid(dtype):
    xs = np.concatenate(
        [
            np.linspace(-3, 3, 2001),
            np.geomspace(1e-18, 1, 400),
            -np.geomspace(1e-18, 1, 400),
            np.linspace(-80, 80, 401),
            [0.999999, 1.0, 1.000001, -0.999999, -1.0, -1.000001],
        ]
    )
    return xs.astype(dtype)


def _ulp_error(got, ref, dtype):
    spacing = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - ref) / spacing


def test_phi_float32_within_4_ulp():
    xs = _phi_grid(np.float32)
    ulp = _ulp_error(phi(jnp.asarray(xs)), phi_exact(xs), np.float32)
    assert ulp.max() <= 4.0, (ulp.max(), xs[ulp.argmax()])


def test_phi_float64_within_6_ulp(x64):
    xs = _phi_grid(np.float64)
    ulp = _ulp_error(phi(jnp.asarray(xs)), phi_exact(xs), np.float64)
    assert ulp.max() <= 6.0, (ulp.max(), xs[ulp.argmax()])


def test_phi_zero_is_exact_and_never_negative():
    xs = jnp.asarray(_phi_grid(np.float32))
    assert float(phi(jnp.float32(0.0))) == 0.0
    assert bool(jnp.all(phi(xs) >= 0))


def test_phi_naive_formula_fails_where_phi_does_not():
    """The regime the library exists for: at x = 1e-4 the naive form is off by ~100%."""
    x = np.float32(1e-4)
    naive = np.exp(x) - np.float32(1) - x
    ref = phi_exact(x)
    assert abs(naive - ref) / ref > 0.1
    assert max_rel_err(phi(jnp.float32(x)), ref) < 2e-7


def test_phi_derivative_is_expm1():
    xs = jnp.asarray(np.linspace(-5, 5, 101), jnp.float32)
    grads = jax.vmap(jax.grad(phi))(xs)
    np.testing.assert_allclose(grads, np.expm1(np.asarray(xs, np.float64)), rtol=2e-6, atol=0)
    # second derivative e^x through the custom JVP
    second = jax.vmap(jax.grad(jax.grad(phi)))(xs)
    np.testing.assert_allclose(second, np.exp(np.asarray(xs, np.float64)), rtol=2e-6)
    assert float(jax.grad(phi)(0.0)) == 0.0


def test_phi_overflow_is_inf_not_nan():
    assert float(phi(jnp.float32(100.0))) == np.inf
    assert float(phi(jnp.float32(-1e30))) == pytest.approx(1e30, rel=1e-6)


@pytest.mark.parametrize("x", [np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phi_at_infinity_is_inf(x, dtype, x64):
    assert float(phi(jnp.asarray(x, dtype))) == np.inf  # e^x - 1 - x -> +inf at both ends
    assert float(jax.grad(phi)(jnp.asarray(-np.inf, dtype))) == -1.0  # expm1(-inf)
    out = phi(jnp.array([np.inf, -np.inf, 0.5, np.nan], dtype))
    assert np.isposinf(out[:2]).all() and np.isfinite(out[2]) and np.isnan(out[3])


def _log1p_grid():
    rng = np.random.default_rng(5)
    return np.concatenate(
        [
            np.linspace(-0.5, 1.0, 1501),
            rng.uniform(-0.5, 1.0, 1500),
            rng.uniform(-0.42, -0.34, 1500),  # where XLA's float64 log1p is ~100 ulp off on CPU
            [-0.45, -0.3, np.nextafter(-0.45, 0), np.nextafter(-0.3, -1), 1e-300, -1e-20],
        ]
    )


def test_log1p_float64_within_2_ulp_on_the_log_ratio_range(x64):
    xs = _log1p_grid()
    ref = np.array([float(mpmath.log1p(mpmath.mpf(float(x)))) for x in xs])
    ulp = _ulp_error(jax.jit(log1p)(jnp.asarray(xs)), ref, np.float64)
    assert ulp.max() <= 2.0, (ulp.max(), xs[ulp.argmax()])
    # gradients stay finite through the unused branch
    assert np.isfinite(np.asarray(jax.vmap(jax.grad(log1p))(jnp.asarray(xs)))).all()


def test_log1p_float32_is_jnp_log1p_within_3_ulp():
    xs = _log1p_grid().astype(np.float32)
    ref = np.array([float(mpmath.log1p(mpmath.mpf(float(x)))) for x in xs])
    got = jax.jit(log1p)(jnp.asarray(xs))
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, jnp.log1p(jnp.asarray(xs)))
    assert _ulp_error(got, ref, np.float32).max() <= 3.0


def test_log_ratio_float64_where_xla_log1p_is_inaccurate(x64):
    rng = np.random.default_rng(6)
    b = np.exp(rng.uniform(-5, 5, 2000))
    a = b * rng.uniform(0.58, 0.66, b.size)  # log1p argument in [-0.42, -0.34]
    got = np.asarray(log_ratio(jnp.asarray(a), jnp.asarray(b)))
    ref = np.array(
        [float(mpmath.log(mpmath.mpf(x) / mpmath.mpf(y))) for x, y in zip(a, b, strict=True)]
    )
    assert max_rel_err(got, ref) < 1e-15


def test_log_ratio_matches_mpmath_in_every_regime():
    rng = np.random.default_rng(0)
    a = np.exp(rng.uniform(-60, 60, 3000)).astype(np.float32)
    rel = rng.choice([1e-7, 1e-5, 1e-3, 0.3, 0.49, 0.51, 0.9, 3.0, 1e10], a.size)
    b = (a * (1 + rel * rng.choice([-1, 1], a.size))).astype(np.float32)
    b = np.where(b > 0, b, a / 7).astype(np.float32)
    got = np.asarray(log_ratio(jnp.asarray(a), jnp.asarray(b)), np.float64)
    ref = np.array(
        [
            float(mpmath.log(mpmath.mpf(float(x)) / mpmath.mpf(float(y))))
            for x, y in zip(a, b, strict=True)
        ]
    )
    nonzero = ref != 0
    assert np.all(got[~nonzero] == 0)
    assert max_rel_err(got[nonzero], ref[nonzero]) < 3e-7


def _mp_ratio(a, b, power):
    return (mpmath.mpf(float(a)) / mpmath.mpf(float(b))) ** power


def _tiny_and_huge_pairs(rng, n=3000):
    """float32 pairs at every scale, many of them nearly equal, many at 1e-30..1e-37 where the
    plain difference a - b underflows (XLA flushes subnormals to zero)."""
    a = np.exp(rng.uniform(-88, 88, n)).astype(np.float32)
    a[: n // 3] = np.exp(rng.uniform(-85, -69, n // 3)).astype(np.float32)  # a ~ 1e-37..1e-30
    rel = rng.choice([1e-7, 1e-6, 1e-4, 1e-2, 0.3, 0.45, 0.55, 1.5, 3.0, 1e6], n)
    with np.errstate(over="ignore"):
        b = (a * (1 + rel * rng.choice([-1, 1], n))).astype(np.float32)
    b = np.where(b > 0, b, a / 7).astype(np.float32)
    tiny = np.finfo(np.float32).tiny  # XLA flushes subnormals to zero
    keep = np.isfinite(b) & (b >= tiny) & (a >= tiny) & (a != b)
    return a[keep], b[keep]


def test_log_ratio_of_tiny_nearly_equal_numbers_keeps_its_digits():
    """a, b ~ 1e-32 differing by one part in 10^4..10^7: a - b is subnormal and flushed to zero on
    CPU, so a log-ratio through a - b returned 0 (100% error); the mantissa split does not."""
    rng = np.random.default_rng(11)
    a, b = _tiny_and_huge_pairs(rng)
    got = np.asarray(jax.jit(log_ratio)(jnp.asarray(a), jnp.asarray(b)), np.float64)
    ref = np.array([float(mpmath.log(_mp_ratio(x, y, 1))) for x, y in zip(a, b, strict=True)])
    assert max_rel_err(got, ref) < 2.5e-7
    tiny = a < 1e-29
    assert tiny.sum() > 500 and max_rel_err(got[tiny], ref[tiny]) < 2.5e-7


@pytest.mark.parametrize("power", [1, 2])
def test_ratio_minus_one_matches_mpmath_at_every_scale(power):
    rng = np.random.default_rng(12 + power)
    a, b = _tiny_and_huge_pairs(rng)
    with np.errstate(over="ignore"):
        ref = np.array([float(_mp_ratio(x, y, power) - 1) for x, y in zip(a, b, strict=True)])
    # inv_b = 1 / b is flushed to zero for b > 2^126 (see the docstring)
    ok = np.isfinite(ref) & (np.abs(ref) < 1e30) & (b < 2.0**126)
    a_j, b_j = jnp.asarray(a[ok]), jnp.asarray(b[ok])
    got = jax.jit(ratio_minus_one, static_argnums=3)(a_j, b_j, 1.0 / b_j, power)
    assert max_rel_err(got, ref[ok]) < 6e-7
    # its derivative: power * t^power * (da / a - db / b)
    ga, gb = jax.vmap(jax.grad(ratio_minus_one, argnums=(0, 1)), in_axes=(0, 0, 0, None))(
        a_j[:20], b_j[:20], 1.0 / b_j[:20], power
    )
    t = (a[ok][:20].astype(np.float64) / b[ok][:20]) ** power
    np.testing.assert_allclose(ga, power * t / a[ok][:20], rtol=1e-5)
    np.testing.assert_allclose(gb, -power * t / b[ok][:20], rtol=1e-5)


def test_log_ratio_extreme_ratios_do_not_overflow():
    a = jnp.float32(1e-30)
    b = jnp.float32(1e30)
    assert float(log_ratio(a, b)) == pytest.approx(-60 * np.log(10), rel=1e-6)
    assert float(log_ratio(b, a)) == pytest.approx(60 * np.log(10), rel=1e-6)


def test_log_ratio_gradient():
    ga, gb = jax.grad(log_ratio, argnums=(0, 1))(2.0, 3.0)
    assert float(ga) == pytest.approx(0.5)
    assert float(gb) == pytest.approx(-1 / 3)


def test_phi_diff_recovers_the_rounding_of_the_difference():
    """log-variances 60 apart: fl(a - b) is off by ~eps * 60, phi_diff is not."""
    rng = np.random.default_rng(1)
    a = rng.uniform(-30, 30, 2000).astype(np.float32)
    b = rng.uniform(-30, 30, 2000).astype(np.float32)
    ref = np.array(
        [
            float(
                mpmath.expm1(mpmath.mpf(float(x)) - mpmath.mpf(float(y)))
                - (mpmath.mpf(float(x)) - mpmath.mpf(float(y)))
            )
            for x, y in zip(a, b, strict=True)
        ]
    )
    got = phi_diff(jnp.asarray(a), jnp.asarray(b))
    assert max_rel_err(got, ref) < 5e-7
    # and the derivative is expm1(a - b)
    g = jax.vmap(jax.grad(phi_diff, argnums=(0, 1)))(jnp.asarray(a[:50]), jnp.asarray(b[:50]))
    expected = np.expm1(a[:50].astype(np.float64) - b[:50].astype(np.float64))
    np.testing.assert_allclose(g[0], expected, rtol=1e-5)
    np.testing.assert_allclose(g[1], -expected, rtol=1e-5)


@pytest.mark.parametrize("power", [1, 2])
def test_phi_log_ratio_matches_mpmath(power):
    rng = np.random.default_rng(2)
    a = np.exp(rng.uniform(-15, 15, 2000)).astype(np.float32)
    rel = rng.choice([1e-6, 1e-4, 1e-2, 0.3, 0.6, 2.0, 1e3], a.size)
    b = (a * (1 + rel * rng.choice([-1, 1], a.size))).astype(np.float32)
    b = np.where(b > 0, b, a / 5).astype(np.float32)
    got = phi_log_ratio(jnp.asarray(a), jnp.asarray(b), power)
    ref = []
    for x, y in zip(a, b, strict=True):
        t = (mpmath.mpf(float(x)) / mpmath.mpf(float(y))) ** power
        ref.append(float(t - 1 - mpmath.log(t)))
    ref = np.array(ref)
    nonzero = ref != 0
    assert np.all(np.asarray(got)[~nonzero] == 0)
    assert max_rel_err(np.asarray(got)[nonzero], ref[nonzero]) < 6e-7


def test_phi_log_ratio_tiny_ratio_is_finite():
    # a / b underflows float32; the true value is -1 - log(a / b) ~ 102.6
    got = phi_log_ratio(jnp.float32(1e-30), jnp.float32(1e15))
    assert float(got) == pytest.approx(-1 + 45 * np.log(10), rel=1e-6)


def test_sum_last_matches_float64_sum():
    x = np.random.default_rng(3).uniform(0, 1, (7, 5, 300)).astype(np.float32)
    got = jax.jit(sum_last)(jnp.asarray(x))
    assert got.shape == (7, 5)
    assert max_rel_err(got, x.astype(np.float64).sum(-1)) < 1e-6
    grad = jax.grad(lambda v: sum_last(v).sum())(jnp.asarray(x))
    np.testing.assert_array_equal(grad, np.ones_like(x))


@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((jnp.bfloat16,), jnp.float32),
        ((jnp.float16, jnp.bfloat16), jnp.float32),
        ((jnp.float32, jnp.bfloat16), jnp.float32),
        ((jnp.float32,), jnp.float32),
    ],
)
def test_compute_dtype_promotes_to_float32(dtypes, expected):
    args = [jnp.zeros(2, dt) for dt in dtypes]
    assert compute_dtype("f", [f"a{i}" for i in range(len(args))], args) == expected


def test_compute_dtype_keeps_float64_with_x64(x64):
    args = [jnp.zeros(2, jnp.float64), jnp.zeros(2, jnp.float32)]
    assert compute_dtype("f", ["a", "b"], args) == jnp.float64


def test_python_floats_are_accepted():
    (a,) = as_float_arrays("f", ["a"], [0.5])
    assert a.dtype == jnp.float32


@pytest.mark.parametrize(
    ("value", "dtype_name"),
    [
        (np.zeros(3, np.int32), "int32"),
        (np.zeros(3, bool), "bool"),
        (np.zeros(3, np.complex64), "complex64"),
        (3, "int"),
    ],
)
def test_non_float_inputs_raise_type_error_naming_the_argument(value, dtype_name):
    with pytest.raises(TypeError, match=rf"myfn: argument 'log_var_q' has dtype {dtype_name}"):
        as_float_arrays("myfn", ["mean_p", "log_var_q"], [np.zeros(3, np.float32), value])


@pytest.mark.invalid_input
def test_non_array_input_raises_type_error():
    with pytest.raises(TypeError, match="argument 'x' must be a floating-point array, got str"):
        as_float_arrays("myfn", ["x"], ["hello"])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_phi_computes_narrow_floats_in_float32(dtype):
    x = jnp.asarray([1e-2, -0.5, 2.0], dtype)
    got = phi(x)
    assert got.dtype == jnp.float32
    assert max_rel_err(got, phi_exact(np.asarray(x.astype(jnp.float32)))) < 5e-7


def test_phi_rejects_integers():
    with pytest.raises(TypeError, match="phi: argument 'x' has dtype int32"):
        phi(jnp.array(2))

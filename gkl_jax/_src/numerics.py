"""Numerical kernels shared by every module: ``phi``, accurate log-ratios and the dtype policy.

Everything here is elementwise, jit/vmap/grad safe, and free of host callbacks.

The two building blocks of every closed form in gkl_jax are

* ``phi(x) = e^x - 1 - x`` (>= 0 for every real ``x``), evaluated without the cancellation that
  ruins ``exp(x) - 1 - x`` near ``x = 0``, and
* ``log_ratio(a, b) = log(a / b)`` for positive ``a, b``, evaluated as ``log1p((a - b) / b)`` when
  ``a`` and ``b`` are close, so that the log of the ratio of two nearly equal numbers keeps its
  digits (a difference of two rounded logs does not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
    "LOG_2PI",
    "align_ranks",
    "as_float_arrays",
    "compute_dtype",
    "log1p",
    "log_ratio",
    "phi",
    "phi_diff",
    "phi_expm1",
    "phi_log_ratio",
    "ratio_parts",
    "sum_last",
    "two_diff",
]

LOG_2PI = math.log(2.0 * math.pi)

# Taylor coefficients 1/n! of phi(x) / x^2 = sum_{n>=2} x^(n-2) / n!, used for |x| < 1.
# The series is cut where the first dropped term, relative to phi(x) >= 0.36 x^2 on [-1, 1],
# is below half an ulp of the dtype: n = 11 for float32 (2 / 12! = 4e-9 < 2^-24) and
# n = 19 for float64 (2 / 20! = 8e-19 < 2^-53). Narrower floats never reach the kernels (they
# are computed in float32), but the float32 series serves them too.
_SERIES_SWITCH = 1.0  # |x| below: series; above: (exp(x) - 1) - x, whose cancellation is < 2 bits.


def _phi_series(x: jax.Array) -> jax.Array:
    n_max = 19 if jnp.dtype(x.dtype).itemsize >= 8 else 11
    coeffs = [1.0 / math.factorial(n) for n in range(2, n_max + 1)]
    acc = jnp.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * x + c
    return x * x * acc


def phi(x: ArrayLike) -> jax.Array:
    r"""``phi(x) = e^x - 1 - x``, accurate to a few ulp for every float32/float64 ``x``.

    ``phi`` is the convex function behind every Gaussian KL: for variances ``v_p, v_q``,
    ``v_p / v_q - 1 - log(v_p / v_q) = phi(log v_p - log v_q)``. It is ``>= 0``, with equality
    only at ``x = 0``, and near 0 it equals ``x^2 / 2 + x^3 / 6 + ...``: the naive
    ``exp(x) - 1 - x`` loses every digit there (at ``x = 1e-4`` in float32 it is off by 100%).
    For ``|x| < 1`` a Taylor polynomial (degree 11 in float32, 19 in float64) is used;
    elsewhere ``(exp(x) - 1) - x``, which cancels at most two bits. Measured: <= 3.4 ulp in float32
    and <= 5 ulp in float64 against mpmath. The derivative (a custom JVP) is ``expm1(x)``.

    Args:
      x: floating-point array of any shape; bfloat16/float16 are computed in float32.

    Returns:
      ``e^x - 1 - x`` elementwise, same shape as ``x`` (float32 at least); ``+inf`` where it
      overflows and at ``x = +-inf``.

    Raises:
      TypeError: ``x`` is not a floating-point array.

    References:
      The Taylor and cancellation analysis follows Higham, *Accuracy and Stability of Numerical
      Algorithms* (2002), ch. 1 and 3.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import phi
      >>> float(phi(jnp.float32(1e-4)))  # exact: 5.0001666...e-09
      5.0001666e-09
    """
    (x,) = as_float_arrays("phi", ("x",), (x,))
    return _phi(x)


@jax.custom_jvp
def _phi(x: jax.Array) -> jax.Array:
    small = jnp.abs(x) < _SERIES_SWITCH
    series = _phi_series(jnp.where(small, x, jnp.zeros_like(x)))
    # e^x - 1 - x -> +inf at both ends; at x = +inf the subtraction would give inf - inf = NaN
    large = jnp.where(x < jnp.inf, (jnp.exp(x) - 1) - x, x)
    return jnp.where(small, series, large)


@jax.custom_jvp
def expm1(x: ArrayLike) -> jax.Array:
    """``e^x - 1``, whose derivative is ``e^x`` itself (not ``expm1(x) + 1``, which cancels for
    negative ``x``): the derivative of :func:`phi`, exact to all orders."""
    return jnp.expm1(x)


@expm1.defjvp
def _expm1_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return expm1(x), jnp.exp(x) * dx


@_phi.defjvp
def _phi_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _phi(x), expm1(x) * dx


# Where XLA's float64 log1p on CPU is inaccurate: measured up to 128 ulp on [-0.4143, -0.3505]
# (against mpmath; <= 2 ulp elsewhere on [-0.5, 1]). Taken with a margin on both sides.
_LOG1P_F64_BAD = (-0.45, -0.3)


def log1p(x: ArrayLike) -> jax.Array:
    """``log(1 + x)`` to <= 2 ulp on ``[-0.5, 1]`` (the arguments of :func:`log_ratio`).

    float32 and narrower: ``jnp.log1p`` (measured <= 2.4 ulp there on CPU). float64: XLA's CPU
    ``log1p`` is up to 128 ulp off for ``x`` in about ``[-0.414, -0.351]`` (it reaches the
    float64 KLs as a 3e-14 relative error); there the identity
    ``log1p(x) = 2 atanh(x / (2 + x))`` is used, whose argument lies in ``[-0.29, -0.18]`` and
    is rounded twice (<= 2 ulp measured). Elsewhere ``jnp.log1p``.
    """
    x = jnp.asarray(x)
    if jnp.dtype(x.dtype).itemsize < 8:
        return jnp.log1p(x)
    lo, hi = _LOG1P_F64_BAD
    bad = (x > lo) & (x < hi)
    x_bad = jnp.where(bad, x, -0.375)  # keeps the unused branch finite (and its gradient)
    return jnp.where(bad, 2.0 * jnp.arctanh(x_bad / (2.0 + x_bad)), jnp.log1p(x))


# log(a / b) = 2 atanh(s) = 2 s sum_{k>=0} s^(2k) / (2k + 1) with s = (a - b) / (a + b).
# Near pairs (b / 2 <= a <= 3 b / 2, -1/3 <= s <= 1/5) use s itself; others the mantissas,
# m_a / m_b in (1/2, 2), |s| < 1/3, plus (e_a - e_b) log 2. The series is cut where the first
# dropped term, relative to the sum, is below 2^-25 (float32: 9^-k / (2k + 1), k = 8) or 2^-54
# (float64, k = 17).
def _two_atanh(num: jax.Array, den: jax.Array) -> jax.Array:
    """``2 atanh(num / den)`` for ``|num / den| < 1/3``: one division and a polynomial."""
    s = num * (1.0 / den)  # a division with one user: XLA fuses it into the caller's loop
    y = s * s
    k_max = 17 if jnp.dtype(s.dtype).itemsize >= 8 else 8
    coeffs = [1.0 / (2 * k + 1) for k in range(k_max + 1)]
    acc = jnp.full_like(s, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * y + c
    return 2.0 * s * acc


@jax.custom_jvp
def log_ratio(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """``log(a / b)`` for positive ``a, b``, keeping full relative precision when ``a ~ b``.

    When ``b / 2 <= a <= 3 b / 2`` the difference ``a - b`` is exact (Sterbenz) and the result is
    ``2 atanh((a - b) / (a + b))``; otherwise the ratio is split into mantissas and exponents
    (``a = m_a 2^e_a``) so that it neither overflows nor underflows, and the result is
    ``2 atanh((m_a - m_b) / (m_a + m_b)) + (e_a - e_b) log 2`` (``m_a - m_b`` is exact too).
    ``2 atanh`` is an odd polynomial for arguments below 1/3: one division, no transcendental
    call (XLA's float32 ``log1p`` costs as much as the rest of the diagonal KL together), a few
    ulp in float32 and float64. The derivative is ``(da / a) - (db / b)``.

    Non-positive inputs give NaN or -inf, as ``log`` would; the checked mode reports them.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    diff = a - b
    near = jnp.abs(diff) <= 0.5 * b
    m_a, e_a = jnp.frexp(a)
    m_b, e_b = jnp.frexp(b)
    num = jnp.where(near, diff, m_a - m_b)
    den = jnp.where(near, a + b, m_a + m_b)
    shift = jnp.where(near, 0, e_a - e_b).astype(diff.dtype)
    out = _two_atanh(num, den) + shift * math.log(2.0)
    # zero, infinite, negative or NaN inputs: what log(a) - log(b) gives (+-inf or NaN)
    ok = (a > 0) & (b > 0) & (a < jnp.inf) & (b < jnp.inf)
    return jnp.where(ok, out, _log_class(a) - _log_class(b))


def _log_class(x: jax.Array) -> jax.Array:
    """``log(x)`` where it is not finite (-inf at 0, +inf at +inf, NaN below 0), else 0."""
    return jnp.where(
        x > 0, jnp.where(x < jnp.inf, 0.0, jnp.inf), jnp.where(x == 0, -jnp.inf, jnp.nan)
    )


@log_ratio.defjvp
def _log_ratio_jvp(primals, tangents):
    (a, b), (da, db) = primals, tangents
    return log_ratio(a, b), da / a - db / b


@jax.custom_jvp
def phi_diff(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """``phi(a - b)``, exact even where the subtraction ``a - b`` itself rounds.

    For large ``|a - b|`` (log-variances 60 apart, say) ``phi`` grows like ``e^(a - b)``, whose
    relative error is the *absolute* error of ``a - b``: up to ``eps * |a - b|``, i.e. ~2e-6 in
    float32. The rounding error ``err`` of ``d = fl(a - b)`` is recovered exactly (TwoSum) and
    carried to first order: ``phi(d + err) = phi(d) + err * expm1(d)``. The derivative is
    ``expm1(a - b) * (da - db)``.
    """
    d, err = two_diff(jnp.asarray(a), jnp.asarray(b))
    return phi_expm1(d, err)[0]


def phi_expm1(
    d: jax.Array, err: jax.Array | None = None, t: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """``(phi(d + err), expm1(d))`` from one exponential: a value and its derivative in one pass.

    The building block of the fused KL kernels, whose custom JVPs reuse the forward's
    ``expm1`` as the derivative of ``phi``. For ``|d| < 1`` both come from the Taylor series of
    :func:`phi` (``expm1(d) = phi(d) + d`` loses at most one bit there); elsewhere from
    ``e = exp(d)``, or from ``t`` when the caller already holds ``e^d`` formed directly (a ratio
    of variances, whose exponential of a rounded log would be less accurate). ``err`` is the
    rounding error of ``d`` as a difference (TwoSum, see :func:`two_diff`), carried to first
    order; it is not used with ``t``.
    """
    small = jnp.abs(d) < _SERIES_SWITCH
    d_small = jnp.where(small, d, jnp.zeros_like(d))
    series = _phi_series(d_small)
    if t is None:
        e = jnp.exp(d)
        if err is None:
            large = jnp.where(d < jnp.inf, (e - 1) - d, d)
        else:
            series = series + d_small * err
            # e^(d + err) = e * (1 + err) to first order; an overflowing e gives +inf
            large = e * (1 + err) - ((1 + d) + err)
    else:
        e = t
        large = (t - 1) - d
    # One select per output, so that everything fuses into a single loop on every backend.
    return jnp.where(small, series, large), jnp.where(small, series + d_small, e - 1)


def two_diff(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``d = fl(a - b)`` and its rounding error ``err`` (Knuth's TwoSum): ``a - b = d + err``."""
    d = a - b
    b_virtual = d - a
    return d, (a - (d - b_virtual)) - (b + b_virtual)


@phi_diff.defjvp
def _phi_diff_jvp(primals, tangents):
    (a, b), (da, db) = primals, tangents
    return phi_diff(a, b), expm1(a - b) * (da - db)


def phi_log_ratio(a: ArrayLike, b: ArrayLike, power: int = 1) -> jax.Array:
    """``phi(power * log(a / b)) = t - 1 - log t`` with ``t = (a / b)^power``, for positive a, b.

    Near ``t = 1`` the series of :func:`phi` is applied to :func:`log_ratio`, which keeps every
    digit of a tiny log-ratio. Elsewhere ``t - 1 - log t`` is evaluated with ``t`` formed directly
    from the ratio (two or three roundings), not as ``exp`` of a rounded log, whose error would
    grow with ``|log t|``. This is the variance (``power=1``) and standard-deviation
    (``power=2``) form of the diagonal KL's log-determinant term.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    return ratio_parts(a, b, power)[0]


def ratio_parts(a: jax.Array, b: jax.Array, power: int) -> tuple[jax.Array, jax.Array]:
    """``(phi(d), expm1(d))`` for ``d = power * log(a / b)``: :func:`phi_log_ratio` and its
    derivative with respect to ``d`` from the same intermediates (no exponential at all)."""
    ratio = a / b
    return phi_expm1(power * log_ratio(a, b), t=ratio if power == 1 else ratio * ratio)


def sum_last(x: jax.Array) -> jax.Array:
    """Sum over the last axis in float precision, lowered per platform for speed.

    On CPU a matrix-vector product with ones (at ``HIGHEST`` precision, so no reduced-precision
    passes) lets XLA run the elementwise producer as one multi-threaded loop; elsewhere a plain
    ``sum`` fuses with its producer. Both are ordinary float sums of the same terms.
    """

    def by_matvec(x):
        ones = jnp.ones(x.shape[-1], x.dtype)
        return jnp.matmul(x, ones, precision=jax.lax.Precision.HIGHEST)

    def by_reduce(x):
        return jnp.sum(x, axis=-1)

    return jax.lax.platform_dependent(x, cpu=by_matvec, default=by_reduce)


def compute_dtype(fn: str, names: Sequence[str], args: Sequence[ArrayLike]) -> jnp.dtype:
    """The dtype gkl_jax computes in for ``args``: their common float type, at least float32.

    bfloat16 and float16 inputs are computed (and returned) in float32; float64 is kept when
    ``jax_enable_x64`` is on and silently becomes float32 otherwise, as everywhere in JAX.

    Raises:
      TypeError: an argument is not a floating-point array (integers, bools, complex), naming it.
    """
    fast = _fast_dtype(args)
    if fast is not None:
        return fast
    dtypes = []
    for name, arg in zip(names, args, strict=True):
        try:
            dt = jnp.result_type(arg)
        except TypeError as exc:
            raise TypeError(
                f"{fn}: argument '{name}' must be a floating-point array, got {type(arg).__name__}"
            ) from exc
        if not jnp.issubdtype(dt, jnp.floating):
            raise TypeError(
                f"{fn}: argument '{name}' has dtype {dt}; expected a real floating-point array "
                "(bfloat16, float16, float32 or float64)"
            )
        dtypes.append(dt)
    common = jnp.promote_types(jnp.result_type(*dtypes), jnp.float32)
    return jax.dtypes.canonicalize_dtype(common)


def as_float_arrays(
    fn: str, names: Sequence[str], args: Sequence[ArrayLike]
) -> tuple[jax.Array, ...]:
    """Converts ``args`` to arrays of their :func:`compute_dtype` (TypeError names a bad one)."""
    dtype = compute_dtype(fn, names, args)
    return tuple(a if _is_array_of(a, dtype) else jnp.asarray(a, dtype=dtype) for a in args)


_FAST_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64))


def _is_array_of(a: ArrayLike, dtype: jnp.dtype) -> bool:
    return isinstance(a, jax.Array) and a.dtype == dtype and not getattr(a, "weak_type", False)


def _fast_dtype(args: Sequence[ArrayLike]) -> jnp.dtype | None:
    """The common path of eager calls: JAX arrays (or tracers) of one float32/float64 dtype,
    which is their compute dtype; ``None`` sends everything else through the full promotion."""
    first = getattr(args[0], "dtype", None) if args else None
    if first not in _FAST_DTYPES or jax.dtypes.canonicalize_dtype(first) != first:
        return None
    return first if all(_is_array_of(a, first) for a in args) else None


def align_ranks(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """Prepends unit axes so that all arrays have the same rank (a free reshape).

    gkl_jax broadcasts batch axes explicitly, so it works under
    ``jax_numpy_rank_promotion="raise"``.
    """
    ndim = max(a.ndim for a in arrays)
    return tuple(a.reshape((1,) * (ndim - a.ndim) + a.shape) for a in arrays)

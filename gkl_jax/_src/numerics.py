"""Numerical kernels shared by every module: ``phi``, accurate log-ratios and the dtype policy.

Everything here is elementwise, jit/vmap/grad safe, and free of host callbacks.

The two building blocks of every closed form in gkl_jax are

* ``phi(x) = e^x - 1 - x`` (>= 0 for every real ``x``), evaluated without the cancellation that
  ruins ``exp(x) - 1 - x`` near ``x = 0``, and
* ``log_ratio(a, b) = log(a / b)`` for positive ``a, b``, evaluated from the exact difference of
  the two mantissas (``2 atanh``), so that the log of the ratio of two nearly equal numbers keeps
  its digits (a difference of two rounded logs does not).
"""

from __future__ import annotations

import functools
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
    "ratio_minus_one",
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
    """``log(1 + x)`` to <= 2 ulp on ``[-0.5, 1]``.

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


# log(a / b) = r log 2 + 2 atanh(s), s = (m_a - m_b) / (m_a + m_b), from the binary split
# a = m_a 2^e_a, b = m_b 2^e_b with mantissas in [1, 2): r = e_a - e_b, adjusted by one (and m_b
# doubled or halved) so that m_a / m_b lies in [1 / sqrt(2), sqrt(2)]. Then m_a - m_b is exact
# (Sterbenz), |s| <= (sqrt(2) - 1) / (sqrt(2) + 1) < 0.1716, and nothing over- or underflows
# whatever the exponents. The series 2 s sum_k s^(2k) / (2k + 1) is cut where the first dropped
# term, relative to the sum, is below 2^-25 (float32: 0.02944^5 / 11, k <= 4) or 2^-54
# (float64: 0.02944^10 / 21, k <= 9). r log 2 is split Cody-Waite style (log 2 = hi + lo, hi
# with 16 (float32) or 32 (float64) significant bits), so that r * hi is exact.
_SQRT2 = math.sqrt(2.0)


def _ln2_split(dtype: jnp.dtype) -> tuple[float, float]:
    bits = 16 if jnp.dtype(dtype).itemsize < 8 else 32
    hi = math.ldexp(round(math.ldexp(math.log(2.0), bits)), -bits)
    return hi, math.log(2.0) - hi


def _binary_split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(m, e)`` with ``x = m 2^(e - bias)``, ``m`` in ``[1, 2)``, for positive finite ``x``
    (subnormals scaled up first); other inputs give finite garbage that callers mask. Bit
    operations only: cheaper than ``jnp.frexp``, which also classifies zeros and infinities."""
    info = jnp.finfo(x.dtype)
    n_mant = int(info.nmant)
    itype = jnp.int32 if info.bits == 32 else jnp.int64
    sub = x < info.smallest_normal
    x = jnp.where(sub, x * 2.0 ** (n_mant + 1), x)
    bits = jax.lax.bitcast_convert_type(x, itype)
    e = (bits >> n_mant) - jnp.where(sub, n_mant + 1, 0).astype(itype)
    one = jax.lax.bitcast_convert_type(jnp.ones((), x.dtype), itype)
    m = jax.lax.bitcast_convert_type((bits & ((1 << n_mant) - 1)) | one, x.dtype)
    return m, e


def _ratio_split(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(m_a, m_b, r)`` with ``a / b = (m_a / m_b) 2^r`` exactly, ``m_a / m_b`` in
    ``[1 / sqrt(2), sqrt(2)]``, ``m_a`` in ``[1, 2)`` and ``m_b`` in ``[1/2, 4)`` (so that
    ``m_a - m_b`` is exact); ``r`` is an integer, stored in the float dtype."""
    m_a, e_a = _binary_split(a)
    m_b, e_b = _binary_split(b)
    hi = m_a > _SQRT2 * m_b
    lo = _SQRT2 * m_a < m_b
    m_b = jnp.where(hi, 2.0 * m_b, jnp.where(lo, 0.5 * m_b, m_b))
    r = (e_a - e_b) + (hi.astype(e_a.dtype) - lo.astype(e_a.dtype))
    return m_a, m_b, r.astype(a.dtype)


def _two_atanh(num: jax.Array, den: jax.Array) -> jax.Array:
    """``2 atanh(num / den)`` for ``|num / den| < 0.1716``: one division and a polynomial."""
    s = num * (1.0 / den)  # a division with one user: XLA fuses it into the caller's loop
    y = s * s
    k_max = 9 if jnp.dtype(s.dtype).itemsize >= 8 else 4
    coeffs = [1.0 / (2 * k + 1) for k in range(k_max + 1)]
    acc = jnp.full_like(s, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * y + c
    return 2.0 * s * acc


def _positive_finite(a: jax.Array, b: jax.Array) -> jax.Array:
    return (a > 0) & (b > 0) & (a < jnp.inf) & (b < jnp.inf)


@jax.custom_jvp
def log_ratio(a: ArrayLike, b: ArrayLike) -> jax.Array:
    """``log(a / b)`` for positive ``a, b``, keeping full relative precision when ``a ~ b``.

    With ``a = m_a 2^e_a`` and ``b = m_b 2^e_b`` split into mantissas and exponents (bit
    operations), the result is ``r log 2 + 2 atanh((m_a - m_b) / (m_a + m_b))`` where the integer
    ``r`` (``e_a - e_b``, give or take one) brings ``m_a / m_b`` within ``[1 / sqrt(2),
    sqrt(2)]``: ``m_a - m_b`` is exact (Sterbenz), so a tiny log-ratio keeps every digit even
    where ``a - b`` itself would underflow (``a, b ~ 1e-32`` in float32), and nothing overflows
    for any ratio. ``2 atanh`` is an odd polynomial for arguments below 0.1716 (degree 9 in
    float32, 19 in float64): one division, no transcendental call. Measured against mpmath on
    20000 pairs over all scales: relative error <= 1.7e-7 in float32, <= 4.4e-16 in float64.
    The derivative is ``(da / a) - (db / b)``.

    Non-positive inputs give NaN or -inf, as ``log`` would; the checked mode reports them.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    m_a, m_b, r = _ratio_split(a, b)
    hi, lo = _ln2_split(a.dtype)
    out = (r * hi + _two_atanh(m_a - m_b, m_a + m_b)) + r * lo
    # zero, infinite, negative or NaN inputs: what log(a) - log(b) gives (+-inf or NaN)
    return jnp.where(_positive_finite(a, b), out, _log_class(a) - _log_class(b))


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def ratio_minus_one(a: jax.Array, b: jax.Array, inv_b: jax.Array, power: int = 1) -> jax.Array:
    """``(a / b)^power - 1`` for positive ``a, b`` (``power`` 1 or 2) given ``inv_b = 1 / b``,
    to a few ulp, with multiplications only.

    Where ``b / 2 <= a <= 2 b`` the difference ``a - b`` is exact (Sterbenz) and
    ``u = (a - b) / b`` keeps every digit (for ``b < 2^-k``, ``k = 0.4 * max_exponent``, the
    difference is taken of ``a 2^k`` and ``b 2^k``: it would be subnormal, which XLA flushes to
    zero); elsewhere ``t - 1`` with ``t = a / b`` (``|t - 1| >= 1/2``: no cancellation). This is
    ``expm1(power * log(a / b))``, the derivative of ``phi`` in the variance /
    standard-deviation KL, without a logarithm, a series or a division of its own, so that
    gradient loops can recompute it instead of reading it from memory. Where ``inv_b`` itself is
    subnormal (``b > 2^126`` in float32) it is flushed and so is this; every gradient that uses
    it is subnormal there too. The derivative is ``power t^power (da / a - db / b)``.
    """
    k = int(0.4 * jnp.finfo(b.dtype).maxexp)
    up, down = 2.0**k, 2.0**-k
    scaled = b < down
    t = a * inv_b
    u = jnp.where(scaled, (a * up - b * up) * inv_b * down, (a - b) * inv_b)
    near = (t >= 0.5) & (t <= 2.0)
    if power == 2:
        u, t = u * (u + 2.0), t * t  # t^2 - 1 = u (u + 2) with u = t - 1
    return jnp.where(near, u, t - 1.0)


@ratio_minus_one.defjvp
def _ratio_minus_one_jvp(power, primals, tangents):
    (a, b, inv_b), (da, db, _) = primals, tangents
    out = ratio_minus_one(a, b, inv_b, power)
    return out, power * (out + 1.0) * (da / a - db / b)


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


def phi_expm1(d: jax.Array, err: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(phi(d + err), expm1(d))`` from one exponential: a value and its derivative in one pass.

    The building block of the fused KL kernels, whose custom JVPs reuse the forward's
    ``expm1`` as the derivative of ``phi``. For ``|d| < 1`` both come from the Taylor series of
    :func:`phi` (``expm1(d) = phi(d) + d`` loses at most one bit there); elsewhere from
    ``e = exp(d)``. ``err`` is the rounding error of ``d`` as a difference (TwoSum, see
    :func:`two_diff`), carried to first order. (Variances and standard deviations given directly
    use :func:`ratio_parts` instead.)
    """
    small = jnp.abs(d) < _SERIES_SWITCH
    d_small = jnp.where(small, d, jnp.zeros_like(d))
    series = _phi_series(d_small)
    e = jnp.exp(d)
    if err is None:
        large = jnp.where(d < jnp.inf, (e - 1) - d, d)
    else:
        series = series + d_small * err
        # e^(d + err) = e * (1 + err) to first order; an overflowing e gives +inf
        large = e * (1 + err) - ((1 + d) + err)
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


def ratio_parts(a: jax.Array, b: jax.Array, power: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(phi(d), expm1(d), 1 / b)`` for ``d = power * log(a / b)``: :func:`phi_log_ratio`, its
    derivative with respect to ``d``, and the one division they share (which the caller reuses).

    The value is the series of ``phi`` for ``|d| < 1`` and ``(t - 1) - d`` with ``t = (a /
    b)^power`` elsewhere (``|t - 1| > 0.6``: no cancellation). ``expm1(d)`` comes from
    :func:`ratio_minus_one`: a forward pass does not compute it, and a gradient loop that needs
    only the derivative does not recompute the log-ratio and its series."""
    inv_b = 1.0 / b
    d = power * log_ratio(a, b)
    t = a / b  # not a * inv_b, which flushes for b > 2^126 (float32)
    t = t if power == 1 else t * t
    small = jnp.abs(d) < _SERIES_SWITCH
    series = _phi_series(jnp.where(small, d, jnp.zeros_like(d)))
    value = jnp.where(small, series, (t - 1.0) - d)
    return value, ratio_minus_one(a, b, inv_b, power), inv_b


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

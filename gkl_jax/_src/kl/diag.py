r"""Closed-form KL divergences between Gaussians: array API and pytree dispatch.

For diagonal Gaussians ``p = N(mu_p, diag(v_p))`` and ``q = N(mu_q, diag(v_q))``

.. math::

    KL(p \| q) = \tfrac12 \sum_i \Big[\frac{(\mu_{p,i} - \mu_{q,i})^2}{v_{q,i}}
                 + \varphi\big(\log v_{p,i} - \log v_{q,i}\big)\Big],
    \qquad \varphi(x) = e^x - 1 - x .

Every term is a sum of two non-negative numbers, each computed to a few ulp: ``phi`` has no
cancellation near 0 (:func:`gkl_jax.phi`) and the log-ratio of two variances or standard
deviations given directly comes from the exact difference of their mantissas
(:func:`gkl_jax._src.numerics.log_ratio`). Hence ``KL >= 0`` always, ``KL(p, p) == 0`` exactly,
and a pair that differs by one part in a million keeps float32 precision -- where the textbook
formula ``0.5 * (log(v_q / v_p) + v_p / v_q + (mu_p - mu_q)^2 / v_q - 1)`` loses every digit.

The array API (:func:`kl_diag`, :func:`kl_diag_standard`) and the pytree API (:func:`kl`) call the
same kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.distributions.diag import DiagGaussian, Param, check_spread_values, diag_pair
from gkl_jax._src.kl.registry import register_kl, register_kl_terms
from gkl_jax._src.numerics import (
    align_ranks,
    as_float_arrays,
    compute_dtype,
    phi_expm1,
    ratio_parts,
    sum_last,
    two_diff,
)

__all__ = ["diag_kl_terms", "kl_diag", "kl_diag_standard"]

Axis = int | tuple[int, ...] | None


def diag_kl_terms(
    mean_p: jax.Array, spread_p: jax.Array, mean_q: jax.Array, spread_q: jax.Array, param: str
) -> jax.Array:
    """Per-dimension KL(p || q) terms of two diagonal Gaussians (elementwise, broadcasting).

    ``spread_*`` are log-variances, variances or standard deviations according to ``param``.
    This is the one kernel behind :func:`kl_diag`, :func:`kl_diag_standard` and :func:`kl`.
    Its derivative is a custom JVP that reuses the forward's exponentials: value and gradient
    with respect to all four inputs come out of one elementwise pass (see :func:`_terms`).
    """
    return _terms(*align_ranks(mean_p, spread_p, mean_q, spread_q), param)


def _parts(mp, sp, mq, sq, param):
    """The terms and their partial derivatives ``(d/d mean_p, d/d spread_p, d/d spread_q)``
    (``d/d mean_q = -d/d mean_p``), sharing every exponential, log and ratio.

    log_var: ``0.5 * (z^2 + phi(lp - lq))`` with ``z = (mp - mq) e^(-lq / 2)`` (scaled before
    squaring: no overflow of ``e^(-lq)``); ``phi`` of the exactly carried difference (TwoSum).
    var / std: ``0.5 * (z^2 + phi(d))`` with ``d = log(t)``, ``t = (sp / sq)^k`` (``k`` = 1, 2)
    and ``log(sp / sq)`` without cancellation (:func:`gkl_jax._src.numerics.log_ratio`).
    ``phi'(d) = expm1(d)`` comes from the same series or exponential as ``phi(d)``.
    """
    diff = mp - mq
    if param == "log_var":
        s = jnp.exp(-0.5 * sq)
        z = diff * s
        d, err = two_diff(sp, sq)
        ph, em1 = phi_expm1(d, err)
        zz = z * z
        return 0.5 * (zz + ph), (z * s, 0.5 * em1, -0.5 * (zz + em1))
    ph, em1, inv_q = ratio_parts(sp, sq, 1 if param == "var" else 2)
    inv_p = 1.0 / sp  # used by one gradient only: XLA computes it in that gradient's loop
    if param == "var":
        # g_m is an output of its own: its own division keeps XLA from writing diff and
        # diff / sq to memory for the value and the other gradients (measured: 9 -> 6 loops)
        g_m = diff / sq
        zz = (diff * inv_q) * diff
        return 0.5 * (zz + ph), (g_m, 0.5 * em1 * inv_p, -0.5 * (zz + em1) * inv_q)
    z = diff * inv_q
    zz = z * z
    return 0.5 * (zz + ph), (z * inv_q, em1 * inv_p, -(zz + em1) * inv_q)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _terms(mp, sp, mq, sq, param):
    return _parts(mp, sp, mq, sq, param)[0]


def _terms_jvp(param, primals, tangents):
    """One pass: the terms and ``sum_i (d terms / d x_i) dx_i`` from the same intermediates.

    Symbolic-zero tangents (arguments not differentiated) cost nothing. The rule itself is
    ordinary JAX code, so forward mode, ``jacfwd`` and Hessians (a JVP of this rule) work.
    """
    out, (g_m, g_sp, g_sq) = _parts(*primals, param)
    dmp, dsp, dmq, dsq = tangents
    tangent = None
    for g, dx, sign in ((g_m, dmp, 1), (g_m, dmq, -1), (g_sp, dsp, 1), (g_sq, dsq, 1)):
        if isinstance(dx, SymbolicZero):
            continue
        term = g * dx if sign > 0 else -(g * dx)
        tangent = term if tangent is None else tangent + term
    if tangent is None:
        tangent = jnp.zeros_like(out)
    return out, jnp.broadcast_to(tangent, out.shape)


_terms.defjvp(_terms_jvp, symbolic_zeros=True)


def _reduce(terms: jax.Array, axes: tuple[int, ...] | None) -> jax.Array:
    if axes == ():
        return terms
    if axes == (terms.ndim - 1,):
        return sum_last(terms)
    return jnp.sum(terms, axis=axes)


@functools.partial(jax.jit, static_argnames=("param", "axes"))
def _kl_kernel(mp, sp, mq, sq, *, param: str, axes: tuple[int, ...] | None) -> jax.Array:
    """The compiled kernel of the array API: eager calls run one executable (cached per shape,
    dtype, ``param`` and ``axes``) instead of dispatching every primitive; under an outer
    ``jit`` it is inlined."""
    if mq is None:  # KL to N(0, I): the constants are made inside the compiled kernel
        mq = jnp.zeros((), mp.dtype)
        sq = jnp.zeros((), sp.dtype) if param == "log_var" else jnp.ones((), sp.dtype)
    return _reduce(diag_kl_terms(mp, sp, mq, sq, param), axes)


def _kl_reduced(fn: str, args: tuple[jax.Array | None, ...], param: str, axis: Axis) -> jax.Array:
    ndim = max(a.ndim for a in args if a is not None)
    axes = checks.check_axis(fn, axis, ndim)
    return _kl_kernel(*args, param=param, axes=None if axes is None else tuple(axes))


def _names(param: str) -> tuple[str, str, str, str]:
    """Argument names for messages: the keyword, and what it holds when it is not a log-var."""
    if param == "log_var":
        return ("mean_p", "log_var_p", "mean_q", "log_var_q")
    return ("mean_p", f"log_var_p (a {param})", "mean_q", f"log_var_q (a {param})")


def kl_diag(
    mean_p: Float[ArrayLike, "*#b d"],
    log_var_p: Float[ArrayLike, "*#b d"],
    mean_q: Float[ArrayLike, "*#b d"],
    log_var_q: Float[ArrayLike, "*#b d"],
    *,
    axis: Axis = -1,
    param: Param = "log_var",
) -> Float[Array, "..."]:
    r"""KL(p || q) between diagonal Gaussians given as arrays, e.g. two VAE encoders' outputs.

    ``KL = 0.5 * sum_i [(mean_p - mean_q)^2 / var_q + phi(log var_p - log var_q)]`` with
    ``phi(x) = e^x - 1 - x``, computed without cancellation (see the module docstring): exact in
    float32 even for nearly identical pairs, never negative, and exactly 0 when ``p == q``.

    Args:
      mean_p: ``(*batch, d)`` means of p.
      log_var_p: ``(*batch, d)`` spread of p: log-variances, or variances / standard deviations
        when ``param`` says so.
      mean_q: ``(*batch, d)`` means of q.
      log_var_q: ``(*batch, d)`` spread of q, in the same parametrization as ``log_var_p``.
      axis: axes of the broadcast ``(*batch, d)`` result to sum, with ``numpy.sum`` semantics:
        the default ``-1`` sums over the latent axis (one value per example), ``()`` keeps the
        per-dimension terms, ``None`` sums everything.
      param: ``"log_var"`` (default), ``"var"`` or ``"std"``: how the 2nd and 4th arguments are
        given. Each is equally accurate; the log of a ratio of two variances or standard deviations
        comes from the exact difference of their mantissas, not from two rounded logs.

    Returns:
      The KL divergence, float32 for bfloat16/float16/float32 inputs and float64 for float64
      inputs (with x64 enabled), summed over ``axis``.

    Raises:
      TypeError: an argument is not a floating-point array.
      ValueError: an argument is a scalar, latent sizes differ, batch shapes do not broadcast,
        ``axis`` is out of range, or ``param`` is unknown.

    References:
      Kullback & Leibler (1951); the closed form is e.g. in Kingma & Welling (2014), App. B.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import kl_diag
      >>> mu_a, log_var_a = jnp.array([[0.0, 1.0]]), jnp.array([[0.0, 0.5]])
      >>> mu_b, log_var_b = jnp.array([[0.5, 1.0]]), jnp.array([[0.2, 0.5]])
      >>> kl_diag(mu_a, log_var_a, mu_b, log_var_b)  # one value per example
      Array([0.12...], dtype=float32)
      >>> kl_diag(mu_a, log_var_a, mu_b, log_var_b, axis=()).shape  # per-dimension terms
      (1, 2)
    """
    fn = "kl_diag"
    checks.check_param(fn, param)
    names = _names(param)
    args = as_float_arrays(fn, names, (mean_p, log_var_p, mean_q, log_var_q))
    checks.check_event_shapes(fn, names, [a.shape for a in args])
    for name, a in zip(names, args, strict=True):
        check_spread_values(fn, name, a, "log_var" if name.startswith("mean") else param)
    return _kl_reduced(fn, args, param, axis)


def kl_diag_standard(
    mean: Float[ArrayLike, "*#b d"],
    log_var: Float[ArrayLike, "*#b d"],
    *,
    axis: Axis = -1,
    param: Param = "log_var",
) -> Float[Array, "..."]:
    r"""KL(q || N(0, I)) for a diagonal Gaussian q: the VAE regularizer.

    ``KL = 0.5 * sum_i [mean^2 + phi(log_var)]`` with ``phi(x) = e^x - 1 - x`` computed without
    cancellation, i.e. the familiar ``-0.5 * sum(1 + log_var - mean^2 - exp(log_var))``, but exact
    when ``q`` is close to the prior (posterior collapse is where the naive sum loses its digits).

    Args:
      mean: ``(*batch, d)`` means.
      log_var: ``(*batch, d)`` log-variances (or variances / standard deviations, see ``param``).
      axis: axes to sum, as in :func:`kl_diag`.
      param: ``"log_var"`` (default), ``"var"`` or ``"std"``.

    Returns:
      The KL divergence summed over ``axis`` (float32 at least).

    Raises:
      TypeError, ValueError: as :func:`kl_diag`.

    References:
      Kingma & Welling, "Auto-Encoding Variational Bayes" (2014), Appendix B.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import kl_diag_standard
      >>> float(kl_diag_standard(jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0])))
      0.5
    """
    fn = "kl_diag_standard"
    checks.check_param(fn, param)
    names = ("mean", "log_var" if param == "log_var" else f"log_var (a {param})")
    mean, spread = as_float_arrays(fn, names, (mean, log_var))
    checks.check_event_shapes(fn, names, (mean.shape, spread.shape))
    checks.check_finite(fn, "mean", mean)
    check_spread_values(fn, names[1], spread, param)
    return _kl_reduced(fn, (mean, spread, None, None), param, axis)


def _diag_pair_arrays(p: DiagGaussian, q: DiagGaussian) -> tuple[str, tuple[jax.Array, ...]]:
    """The arrays of a diagonal pair in the parametrization chosen by ``diag_pair``."""
    names = ("p.mean", "p.spread", "q.mean", "q.spread")
    leaves = (p.mean, p.spread, q.mean, q.spread)
    checks.check_event_shapes("kl", names, [a.shape for a in leaves])
    dtype = compute_dtype("kl", names, leaves)  # cast before any log of a mixed parametrization
    p, q = (jax.tree_util.tree_map(lambda a: a.astype(dtype), d) for d in (p, q))
    return diag_pair(p, q)


@jax.jit
def _diag_diag_terms(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """Per-dimension terms of a diagonal pair, ``(*batch, d)``: the exact kernel on the
    parametrization chosen by ``diag_pair`` (jitted as :func:`_kl_diag_diag`)."""
    param, arrays = _diag_pair_arrays(p, q)
    return _kl_kernel(*arrays, param=param, axes=())


@register_kl(DiagGaussian, DiagGaussian)
@jax.jit
def _kl_diag_diag(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """Diagonal pair: the sum of its per-dimension terms over the latent axis (the same compiled
    kernel as :func:`kl_diag`). Jitted as a whole, so that an eager ``kl(p, q)`` runs one
    executable instead of dispatching the casts and the kernel one by one (the checked mode is
    in the jit cache key)."""
    param, arrays = _diag_pair_arrays(p, q)
    return _kl_kernel(*arrays, param=param, axes=(max(a.ndim for a in arrays) - 1,))


register_kl_terms(_kl_diag_diag)(_diag_diag_terms)

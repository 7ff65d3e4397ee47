r"""Closed-form KL for every pair involving full-covariance or low-rank Gaussians, exact in float32.

Every kernel here evaluates ``2 KL(p || q) = F(Sigma_q^{-1} Sigma_p) + delta^T Sigma_q^{-1} delta``
(``delta = mu_p - mu_q``) with

.. math::

    F(A) = \operatorname{tr}(A - I) - \log\det A = \sum_i f(\mu_i), \qquad
    f(\mu) = \mu - \operatorname{log1p}(\mu) = \varphi(\operatorname{log1p}\mu) \ge 0,

over the eigenvalues ``1 + mu_i`` of ``A`` (``phi(x) = e^x - 1 - x``). The textbook evaluation
subtracts ``O(d)`` terms to get an ``O(eps^2)`` result for a pair that differs by ``eps``; every
route below computes ``F`` from the *differences* of the parameters instead, so that no ``O(1)``
term is subtracted from another: ``KL(p, p) == 0`` exactly, nearly identical pairs keep their
relative precision, and the result is never negative.

**Full and diagonal bases** (no low-rank factor). With ``M = B_q^{-1} B_p`` for the Cholesky
factors (``diag(std)`` for a diagonal member), lower triangular with ``M_ii = B_p,ii / B_q,ii``,
``2 KL = sum_{i>j} M_ij^2 + sum_i phi(2 log M_ii) + ||B_q^{-1} delta||^2``. For a full ``q`` the
strictly lower part of ``M`` comes from ``L_q^{-1}(B_p - L_q)`` (blocked solves,
:mod:`gkl_jax._src.linalg`, ``O(d^3 / 6)``) and ``log M_ii`` is ``log1p`` of the relative
difference of the diagonals (:func:`gkl_jax._src.numerics.phi_log_ratio`).

**Diagonal plus low rank on both sides** (LowRank-LowRank, LowRank-Diag, Diag-LowRank; a
diagonal member has ``k = 0``): ``O(d k^2 + k^3)`` time, ``O(d k)`` memory, no ``d x d`` array.
Everything is whitened by q's diagonal: ``C_q = I + V_q V_q^T``, ``C_p = Lambda + V_p V_p^T`` with
``V = Psi_q^{-1/2} W``, ``Lambda = diag(e^x)`` and ``x = log psi_p - log psi_q`` taken exactly in
the stored parametrization (so ``exp(+-80)`` never enters a product). The path goes through
``C_m = I + V_p V_p^T`` (q's diagonal, p's factor) and uses
``F(BA) = F(A) + F(B) + tr((A - I)(B - I))`` with ``B = C_q^{-1} C_m``, ``A = C_m^{-1} C_p``:

* *factor step* ``F(B)``: with ``D = Psi_q^{-1/2}(W_p - W_q)`` (an exact difference) and the QR
  factorization ``[V_q, D] = Q [R_1, R_2]``, ``B - I`` has the non-zero eigenvalues of the
  ``2k x 2k`` matrix ``E = X_2 X_1^T + X_1 X_2^T + X_2 X_2^T``, ``X_i = L^{-1} R_i``,
  ``L L^T = I + R_1 R_1^T``: small with ``D`` and accurate. ``F(B) = tr E - log det(I + E)`` is
  a Cholesky factorization of ``I + E`` in difference form
  (:func:`gkl_jax._src.linalg.trace_minus_logdet`), a sum of non-negative terms.
* *diagonal step* ``F(A)``: with the leverages ``h_i = [V_p K_p^{-1} V_p^T]_ii`` (``K = I + V^T V``,
  ``L_p L_p^T = K_p``) and ``N = L_p^{-1} V_p^T diag(e^{-x} - 1) V_p L_p^{-T}`` (``k x k``),
  ``tr(A - I) = sum_i (e^{x_i} - 1)(1 - h_i)`` and ``log det A = sum_i x_i + log det(I + N)``;
  as ``(e^x - 1) + (e^{-x} - 1) = phi(x) + phi(-x)`` and ``tr N = sum_i (e^{-x_i} - 1) h_i``,

  .. math::

      F(A) = \sum_i \big[\varphi(x_i)(1 - h_i) - \varphi(-x_i)\, h_i\big]
             + \big[\operatorname{tr} N - \log\det(I + N)\big],

  every piece of second order in ``x``. Its pieces cancel by up to ``(1 + h^2) / (1 - h)^2``, so
  the coordinates of largest leverage (at most ``2k`` can have ``h > 1/2``, as ``sum h <= k``)
  can instead be changed in a second step, where only the ``2k x 2k`` block ``G`` of the
  intermediate inverse acts; ``G^{-1}`` is a Schur complement formed from positive terms only,
  ``F = tr f(L_G^{-1} Xi L_G^{-T})``; of the two evaluations the one with the smaller error
  scale is taken (:func:`_diag_step`). Large drops of the diagonal (``x < -1``) and pairs far
  apart use direct forms whose terms are of the size of the result.
* *cross term* ``tr((A - I)(B - I)) = tr((C_q^{-1} - C_m^{-1}) Xi) = sum_i (e^{x_i} - 1)
  (h_{p,i} - h_{q,i})``, the change of the leverages taken from the differences,
  ``diag(C_q^{-1} (D V_p^T + V_q D^T) C_m^{-1})`` (:func:`_leverage_change`).
* *Mahalanobis term* ``z^T C_q^{-1} z = min_c ||z - V_q c||^2 + ||c||^2`` (``z = Psi_q^{-1/2}
  delta``), a sum of squares at the ridge minimum, read off the QR factorization of
  ``[V_q, z; I, 0]``.

Whitened factor rows can lie at any scale (``W_i / psi_i^{1/2}`` from ``1e-17`` to ``1e16`` when
the log-diagonals spread over ``[-80, 80]``), so no Gram matrix ``I + V^T V`` is formed: every
capacitance Cholesky factor (and the ``R`` of the factor step) comes from a Householder QR
factorization of the stacked ``[V; I]`` with its rows sorted by decreasing size, which is
row-wise stable (Cox & Higham 1998): each row keeps its own relative precision.

The factor step goes through a QR factorization, whose derivative is singular where
``[V_q, D]`` loses rank (at ``p == q``); it carries its closed-form derivative
(``dF/dV_p = 2 C_q^{-1} Delta V_p K_p^{-1}``, ``dF/dV_q = -2 C_q^{-1} Delta V_q K_q^{-1}``,
``Delta = D V_p^T + V_q D^T``) instead. Everything else is smooth, so gradients (and Hessians:
the Fisher information at ``p == q``) are exact, and exactly 0 at ``p == q``.

**A full member against a low-rank one** (LowRank-Full, Full-LowRank): ``O(d^3)``, as the full
member is. ``A = L^{-1}(Sigma_lr - L L^T) L^{-T}`` (``L`` the full member's factor) is linear in
the covariance difference, which is formed in double-word arithmetic
(:func:`gkl_jax._src.linalg.exact_gram`, :func:`gkl_jax._src.linalg.exp_dw`; ~``eps^2``) after an
exact power-of-two congruence, and rounded once. ``Sigma_q^{-1} Sigma_p - I`` is similar to
``E = A`` (low-rank ``p``) or ``E = -(I + A)^{-1} A`` (full ``p``), ``F = tr E - log det(I + E)`` as
above. (There is no other way: the two parametrizations share no structure, so the difference of
the covariances must come from products formed to about twice the working precision.) The
``d x d`` difference is formed, like the full member itself.

Measured (``tests/kl/test_low_rank_exact.py``, against 120-digit mpmath evaluations of the
float32 inputs; table in ``benchmarks/results/accuracy_structured.md``): relative error below
``1e-6`` in float32 (``1e-14`` in float64) for every pair type, typical pairs, perturbations
``1e-2 .. 1e-6`` of the factor, the diagonal, the mean or all, log-diagonals of ``-80`` or
``+80``, factors that dominate some coordinates (by ``1e3`` in standard deviation), ``k = d``,
and pairs whose diagonals differ by ``e^+-40``; ``D = 64, k = 4`` nearly identical pairs to
``~4e-7``. The limits are those of the problem: a KL that is itself ill-conditioned in its
inputs (e.g. a diagonal change hidden under a factor ``10^6`` times larger in every coordinate)
loses what its condition number says; a diagonal Gaussian given as ``std`` or ``var`` against a
low-rank one (log-variances) meets ``log`` of a rounded number, ``~eps (|x| + 1)`` absolute in
``x``, like every mixed parametrization. Log-diagonals spread over ``[-80, 80]`` within one
covariance under an ``O(1)`` factor (whitened factor entries from ``1e-17`` to ``1e16``) are
exact for every low-rank pair (LowRank-LowRank ``< 5e-6`` over 30 seeds in float32, ``1e-14``
in float64): every ``C^{-1} u`` comes from the reflectors of a row-sorted QR factorization
(:func:`gkl_jax._src.linalg.cap_solve`), never as ``u - V K^{-1} V^T u``, which cancels in the
rows where ``V`` is huge. **Not yet exact:** nearly identical LowRank-Full / Full-LowRank pairs in
that regime (up to ``2e-2`` in float32, ``4e-11`` in float64; the ``d x d`` triangular solves
with a Cholesky factor whose diagonal spans ``e^+-40``), and diagonal ratios beyond ``e^88``
(``exp`` overflows in float32). All are recorded as strict xfails in the test module.

Reference: the Gaussian KL, e.g. Kullback (1959); Cholesky form as in Rasmussen & Williams,
*Gaussian Processes for ML* (2006), App. A.5; Woodbury (1950); Ozaki et al., *Error-free
transformations of matrix multiplication*, Numer. Algorithms 59 (2012); Demmel, *On floating point
errors in Cholesky* (LAPACK Working Note 14, 1989).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks, lapack
from gkl_jax._src.base import Gaussian
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian, diag_pair
from gkl_jax._src.distributions.full import FullGaussian, check_strict_upper
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.kl.diag import diag_kl_terms
from gkl_jax._src.kl.registry import register_kl
from gkl_jax._src.linalg import (
    HI,
    cap_solve,
    diag_embed,
    dw_add,
    exact_gram,
    exp_dw,
    mm,
    qr_r_sorted,
    ridge_qr,
    solve_tril,
    solve_tril_tril,
    trace_minus_logdet,
    tril_solve_sumsq,
)
from gkl_jax._src.numerics import (
    align_ranks,
    as_float_arrays,
    log_ratio,
    phi,
    phi_diff,
    phi_log_ratio,
)

__all__ = ["diag_part", "kl_full", "structure"]


class _View(NamedTuple):
    """A Gaussian as base (``tril`` or diagonal ``spread`` in ``param``) plus optional factor."""

    mean: jax.Array
    tril: jax.Array | None
    spread: jax.Array | None
    param: str
    factor: jax.Array | None


# How the structured kernel sees each Gaussian type: register a new family here.
structure = Operation("structure", arity=1)


@structure.register(FullGaussian)
def _full_structure(g: FullGaussian) -> _View:
    return _View(g.mean, g.scale_tril, None, "", None)


@structure.register(LowRankGaussian)
def _low_rank_structure(g: LowRankGaussian) -> _View:
    return _View(g.mean, None, g.log_diag, "log_var", g.factor if g.rank else None)


@structure.register(DiagGaussian)
def _diag_structure(g: DiagGaussian) -> _View:
    return _View(g.mean, None, g.spread, g.param, None)


def diag_part(v: _View) -> DiagGaussian:
    """The diagonal base of a view (or, for a low-rank view, its diagonal part) as a Gaussian."""
    return DiagGaussian.from_param(v.mean, v.spread, param=v.param)


def _sumsq(x: jax.Array, axes=(-2, -1)) -> jax.Array:
    return jnp.sum(jnp.square(x), axis=axes)


def _diag_base_terms(vp: _View, vq: _View) -> jax.Array:
    """2 KL of the bases when q's base is diagonal (p's base diagonal or triangular)."""
    if vp.tril is None:
        param, args = diag_pair(diag_part(vp), diag_part(vq))
        return 2.0 * jnp.sum(diag_kl_terms(*args, param), axis=-1)
    std_q = diag_part(vq).std
    tril_p, std_col = align_ranks(vp.tril, std_q[..., :, None])
    off = _sumsq(jnp.tril(tril_p, -1) / std_col)
    diag_p = jnp.diagonal(vp.tril, axis1=-2, axis2=-1)  # a diagonal p with stds diag(L_p)
    rest = 2.0 * jnp.sum(diag_kl_terms(vp.mean, diag_p, vq.mean, std_q, "std"), axis=-1)
    off, rest = align_ranks(off, rest)
    return off + rest


# ---------------------------------------------------------------------------------------------
# pairs without a full-covariance member: diagonal + low rank on both sides, O(d k^2 + k^3)
# ---------------------------------------------------------------------------------------------

_BIG = 1.0  # a coordinate whose log-variance drops by more than this takes the direct form
_GROW = 1.0  # the path through p's diagonal is taken only where some log-variance grows more


def _plus_eye(a: jax.Array) -> jax.Array:
    """``a + I`` for ``(*b, n, n)`` ``a`` (no rank promotion)."""
    n = a.shape[-1]
    return a + jnp.eye(n, dtype=a.dtype).reshape((1,) * (a.ndim - 2) + (n, n))


def _solve_l(chol: jax.Array, rhs: jax.Array) -> jax.Array:
    """``L^{-1} R`` for a small lower-triangular ``L`` (same batch shape as ``R``)."""
    return lapack.triangular_solve(chol, rhs, left_side=True, lower=True)


def _solve_lt(chol: jax.Array, rhs: jax.Array) -> jax.Array:
    """``L^{-T} R``."""
    return lapack.triangular_solve(chol, rhs, left_side=True, lower=True, transpose_a=True)


def _log_det_chol(chol: jax.Array) -> jax.Array:
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^T b`` over the latent axis: ``(*b, d, m), (*b, d, n) -> (*b, m, n)``."""
    return jnp.einsum("...dm,...dn->...mn", a, b, precision=HI)


class _Whitened(NamedTuple):
    """One factor ``V`` (``(*b, d, k)``, whitened by q's diagonal) and its capacitance pieces.

    ``chol`` is the Cholesky factor of ``K = I + V^T V``; ``pt = L^{-1} V^T`` (``(*b, k, d)``);
    ``a = V K^{-1}`` (``(*b, d, k)``, so that ``(I + V V^T)^{-1} = I - a V^T``).
    """

    v: jax.Array
    chol: jax.Array
    pt: jax.Array
    a: jax.Array


def _chol_cap(v: jax.Array) -> jax.Array:
    """The Cholesky factor of ``I + V^T V``, from a row-sorted QR (no Gram matrix)."""
    return ridge_qr(v)[0]


def _whitened(v: jax.Array) -> _Whitened:
    chol = _chol_cap(v)
    pt = _solve_l(chol, jnp.swapaxes(v, -1, -2))
    return _Whitened(v, chol, pt, jnp.swapaxes(_solve_lt(chol, pt), -1, -2))


def _cap_inv(f: _Whitened | None, u: jax.Array) -> jax.Array:
    """``(I + V V^T)^{-1} u`` for ``(*b, d, m)`` ``u`` (``u`` itself when there is no factor)."""
    if f is None:
        return u
    return cap_solve(f.v, u)


def _ridge(f: _Whitened, z: jax.Array) -> jax.Array:
    """``tr(z^T (I + V V^T)^{-1} z)`` for ``(*b, d, m)`` ``z``: ``min_c ||z - V c||^2 + ||c||^2``,
    the squared ``R_22`` block of the row-sorted QR factorization of ``[V, z; I, 0]``
    (:func:`gkl_jax._src.linalg.ridge_qr`). Neither the residual ``z - V c`` (which cancels in
    the rows where ``V`` is huge) nor a Gram matrix is formed."""
    return _ridge_core(f.v, z)


@jax.custom_jvp
def _ridge_core(v: jax.Array, z: jax.Array) -> jax.Array:
    """:func:`_ridge` on arrays. The QR factorization has no derivative where ``[V, z; I, 0]``
    loses rank (``z = 0``, equal means); the derivative is that of the ridge objective at its
    minimum, ``d/dz = 2 C^{-1} z``, ``d/dV = -2 C^{-1} z c^T`` (``c = K^{-1} V^T z``)."""
    return _sumsq(ridge_qr(v, z)[1])


@_ridge_core.defjvp
def _ridge_jvp(primals, tangents):
    v, z = primals
    dv, dz = tangents
    f = _whitened(v)
    c = _solve_lt(f.chol, mm(f.pt, z))  # K^{-1} V^T z
    res = z - mm(f.v, c)  # C^{-1} z
    tangent = 2.0 * jnp.sum(res * (dz - mm(dv, c)), axis=(-2, -1))
    return _ridge_core(v, z), tangent


class _Spread(NamedTuple):
    """Per-dimension pieces of the diagonal parts ``psi_p``, ``psi_q``, all ``(*b, d)``.

    ``x = log(psi_p / psi_q)``; ``phi_pos = phi(x)``; ``phi_neg = phi(-x)`` where ``x >= -_BIG``
    (0 elsewhere, where it is not used and could overflow); ``scale = psi_q^{-1/2}``.
    """

    x: jax.Array
    phi_pos: jax.Array
    phi_neg: jax.Array
    scale: jax.Array


# Cody-Waite split of log(2): LN2_HI has 9 significant bits, so n * LN2_HI is exact for the
# integers |n| < 2^15 that exponents give; LN2_HI + LN2_LO = log(2) to ~1e-12.
_LN2_HI = 0.693359375
_LN2_LO = -2.1219444005469057e-4


def _log_parts(param: str, v: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(big, n, r)`` with ``log(variance) = big + n log(2) + r`` exactly: ``big`` the stored
    log-variance (or 0), ``n`` an integral exponent and ``|r| <= 1.4`` (or 0)."""
    zeros = jnp.zeros_like(v)
    if param == "log_var":
        return v, zeros, zeros
    m, e = jnp.frexp(v)  # v = m 2^e, m in [1/2, 1)
    power = 1 if param == "var" else 2
    return zeros, (power * e).astype(v.dtype), power * jnp.log(m)


def _mixed_log_ratio(param_p: str, a: jax.Array, param_q: str, b: jax.Array) -> jax.Array:
    """``log(var_p / var_q)`` from two different parametrizations, to ``~eps (|x| + 1)``.

    The exponents are taken out first (``frexp``) and cancelled against the other side's
    log-variance before anything small is added, so a log-variance of -80 against a standard
    deviation of ``e^-40`` does not lose ``eps * 80`` to the rounding of ``log(std)``.
    """
    big_p, n_p, r_p = _log_parts(param_p, a)
    big_q, n_q, r_q = _log_parts(param_q, b)
    n = n_p - n_q
    return (((big_p - big_q) + n * _LN2_HI) + (r_p - r_q)) + n * _LN2_LO


def _spread(vp: _View, vq: _View, shape: tuple[int, ...]) -> _Spread:
    """The exact log-ratio and ``phi`` terms of the two diagonals, in their own parametrization."""
    a, b = (jnp.broadcast_to(t, shape) for t in align_ranks(vp.spread, vq.spread))
    if vq.param == "log_var":
        scale = jnp.exp(-0.5 * b)
    else:
        scale = lax.rsqrt(b) if vq.param == "var" else 1.0 / b
    if vp.param != vq.param:
        x = _mixed_log_ratio(vp.param, a, vq.param, b)
        small = x >= -_BIG
        phi_neg = phi(jnp.where(small, -x, jnp.zeros_like(x)))
        return _Spread(x, phi(x), phi_neg, scale)
    if vp.param == "log_var":
        x = a - b
        phi_of = phi_diff
    else:
        power = 1 if vp.param == "var" else 2
        x = power * log_ratio(a, b)
        phi_of = functools.partial(phi_log_ratio, power=power)
    small = x >= -_BIG
    phi_neg = phi_of(jnp.where(small, b, a), a)  # phi(-x); 0 where x < -_BIG
    return _Spread(x, phi_of(a, b), phi_neg, scale)


def _diag_step_spread(
    sp: _Spread, fp: _Whitened, h: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The diagonal step over the coordinates in ``mask``: ``sum phi(x)(1 - h) - phi(-x) h +
    tr f(N)`` (see the module doc), or its plain form where ``I + N`` is not well conditioned.
    Also returns the sum of the magnitudes of the terms (the scale of the rounding error)."""
    zeros = jnp.zeros_like(sp.x)
    x = jnp.where(mask, sp.x, zeros)
    phi_pos = jnp.where(mask, sp.phi_pos, zeros)
    phi_neg = jnp.where(mask, sp.phi_neg, zeros)
    small = x >= -_BIG
    x_s = jnp.where(small, x, zeros)
    x_b = jnp.where(small, zeros, x)
    xi = jnp.expm1(x)
    # N_s = L^{-1} V^T diag(e^-x - 1) V L^{-T} over the coordinates x >= -_BIG
    m_s = jnp.where(small, jnp.expm1(-x_s), zeros)
    n_s = jnp.einsum("...kd,...d,...ld->...kl", fp.pt, m_s, fp.pt, precision=HI)
    # The difference form needs I + N_s well conditioned (it is unless the diagonal grows a lot
    # where V dominates); elsewhere the plain form, whose terms are of the result's size.
    _, min_pivot = trace_minus_logdet(lax.stop_gradient(n_s), with_min_pivot=True)
    near = min_pivot >= 0.5
    n_s = jnp.where(near[..., None, None], n_s, jnp.zeros_like(n_s))  # no NaN in either branch
    terms = jnp.where(small, phi_pos * (1 - h) - phi_neg * h, phi_pos - xi * h)
    tml_s = trace_minus_logdet(n_s)
    diff = jnp.sum(terms, axis=-1) + tml_s
    mag_terms = jnp.where(small, phi_pos * (1 - h) + phi_neg * h, phi_pos + jnp.abs(xi) * h)
    # large drops: -log det(I + L_s^{-1} N_b L_s^{-T}), N_b from e^{-x/2} V (no overflow)
    m_b = jnp.where(small, zeros, -jnp.expm1(x_b))
    pt_b = fp.pt * jnp.exp(-0.5 * x_b)[..., None, :]
    n_b = jnp.einsum("...kd,...d,...ld->...kl", pt_b, m_b, pt_b, precision=HI)
    chol_s = lapack.cholesky(_plus_eye(n_s))
    m = _solve_l(chol_s, jnp.swapaxes(_solve_l(chol_s, n_b), -1, -2))
    log_det_b = _log_det_chol(lapack.cholesky(_plus_eye(0.5 * (m + jnp.swapaxes(m, -1, -2)))))
    diff = diff - log_det_b
    mag_diff = jnp.sum(mag_terms, axis=-1) + tml_s + log_det_b
    # plain: sum(xi (1 - h) - x) - log det(I + V'^T V') + log det(K), V' = e^{-x/2} V
    v_own = fp.v * jnp.exp(-0.5 * x)[..., None]
    log_det_own = _log_det_chol(_chol_cap(v_own))
    log_det_k = _log_det_chol(fp.chol)
    plain = jnp.sum(phi_pos - xi * h, axis=-1) - log_det_own + log_det_k
    mag_plain = jnp.sum(phi_pos + jnp.abs(xi) * h, axis=-1) + log_det_own + log_det_k
    return jnp.where(near, diff, plain), jnp.where(near, mag_diff, mag_plain)


def _take_rows(a: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take_along_axis(a, idx[..., None], axis=-2)


def _diag_step(sp: _Spread, fp: _Whitened) -> jax.Array:
    """``F(C_m^{-1} C_p)``: the diagonal changes from ``I`` to ``Lambda = diag(e^x)`` under the
    factor ``V = V_p`` (``C_m = I + V V^T``, ``C_p = Lambda + V V^T``); see the module doc."""
    return _diag_step_core(sp.x, sp.phi_pos, sp.phi_neg, fp.v)


@jax.custom_jvp
def _diag_step_core(x, phi_pos, phi_neg, v):
    """:func:`_diag_step` on arrays, by the better of two evaluations.

    *One step*: :func:`_diag_step_spread` over all coordinates. *Two steps*: first the
    coordinates ``S`` outside the ``m = min(d, 2k)`` of largest leverage (so ``h <= 1/2`` on
    ``S``, as ``sum h <= k``) by :func:`_diag_step_spread`; then the ``m`` coordinates ``T``,
    where only the ``T x T`` block ``G`` of the intermediate inverse ``C_1^{-1}``
    (``C_1 = Lambda_S + V V^T``) acts: ``G^{-1} = I + Y Y^T``, ``Y = V_T L_S^{-T}``
    (a Schur complement; ``L_S L_S^T = K_S = I + V_S^T Lambda_S^{-1} V_S``, sums of positive
    terms), and with the SVD ``Y = U S W^T``, ``G^{1/2} Xi_T G^{1/2}`` is similar to
    ``E = c U^T Xi_T U c``, ``c = (1 + S^2)^{-1/2}``: exact whatever the size of ``Y``; plus the
    cross term ``tr(C^{-1} Xi_S C_1^{-1} Xi_T)`` of the off-diagonal blocks. Of the two, the one
    whose terms are smaller in sum (the scale of its rounding errors) is returned.

    The SVD has no usable derivative where singular values coincide (``V = 0`` for one); the
    derivative is the closed form of :func:`_diag_step_jvp`.
    """
    d, k = v.shape[-2:]
    m = min(d, 2 * k)
    fp = _whitened(v)
    sp = _Spread(x, phi_pos, phi_neg, jnp.ones_like(x))
    h = jnp.sum(jnp.square(fp.pt), axis=-2)  # leverages h_i = [V K^{-1} V^T]_ii in [0, 1)
    one_step, one_step_mag = _diag_step_spread(sp, fp, h, jnp.ones(x.shape, bool))
    idx = lax.top_k(h, m)[1]
    in_t = jnp.any(jnp.arange(d).reshape((1,) * idx.ndim + (d,)) == idx[..., :, None], axis=-2)
    total, mag = 0.0, 0.0
    if m < d:
        total, mag = _diag_step_spread(sp, fp, h, ~in_t)
    # T step
    zeros = jnp.zeros_like(x)
    x_t = jnp.take_along_axis(x, idx, axis=-1)
    v_s = v * jnp.where(in_t, zeros, jnp.exp(-0.5 * x))[..., None]  # Lambda_S^{-1/2} V_S
    chol_ks = _chol_cap(v_s)
    y = jnp.swapaxes(_solve_l(chol_ks, jnp.swapaxes(_take_rows(v, idx), -1, -2)), -1, -2)
    u, sv, w_t = lapack.svd(y, full_matrices=True)  # y = u diag(sv) w_t, u (m x m)
    r = sv.shape[-1]
    c = jnp.concatenate([lax.rsqrt(1 + jnp.square(sv)), jnp.ones((*sv.shape[:-1], m - r))], -1)
    xi_t = jnp.expm1(x_t)
    e = _gram(u, xi_t[..., :, None] * u) * c[..., :, None] * c[..., None, :]
    e = 0.5 * (e + jnp.swapaxes(e, -1, -2))
    _, min_pivot = trace_minus_logdet(e, with_min_pivot=True)
    near = min_pivot >= 0.5
    value = trace_minus_logdet(jnp.where(near[..., None, None], e, jnp.zeros_like(e)))
    # plain: tr E - log det(Lambda_T + Y Y^T) + log det(I + Y Y^T)
    sv_own = lapack.svd(y * jnp.exp(-0.5 * x_t)[..., :, None], compute_uv=False)
    log_det = jnp.sum(x_t, axis=-1) + jnp.sum(jnp.log1p(jnp.square(sv_own)), axis=-1)
    log_det = log_det - jnp.sum(jnp.log1p(jnp.square(sv)), axis=-1)
    trace = jnp.trace(e, axis1=-2, axis2=-1)
    total = total + jnp.where(near, value, trace - log_det)
    mag = mag + jnp.where(near, value, jnp.abs(trace) + jnp.abs(log_det))
    if m < d:
        # cross: sum_{i in S, j in T} xi_i xi_j (P_i . P_j) [Lambda_S^{-1} V_S K_S^{-1} V_T^T G]_ij
        g_y = mm(u[..., :r] * (sv / (1 + jnp.square(sv)))[..., None, :], w_t[..., :r, :])  # G Y
        rr = _solve_lt(
            chol_ks, jnp.swapaxes(xi_t[..., :, None] * g_y, -1, -2)
        )  # K_S^-1 V_T^T G Xi_T
        p_t = _take_rows(jnp.swapaxes(fp.pt, -1, -2), idx)  # (*b, m, k)
        z = mm(jnp.swapaxes(p_t, -1, -2), jnp.swapaxes(rr, -1, -2))  # (*b, k, k)
        # -expm1(-x) V_i = 2 sinh(x / 2) e^{-x/2} V_i, rows of S only
        coef = jnp.where(in_t, zeros, 2.0 * jnp.sinh(0.5 * x))
        pz = mm(jnp.swapaxes(fp.pt, -1, -2), z)  # rows P_i^T Z
        cross = jnp.sum(coef * jnp.sum(pz * v_s, axis=-1), axis=-1)
        total = total + cross
        mag = mag + jnp.abs(cross)
    # the evaluation whose terms are smaller (their size is the scale of the rounding errors)
    return jnp.where(mag < one_step_mag, total, one_step)


@_diag_step_core.defjvp
def _diag_step_jvp(primals, tangents):
    # F = tr(C^{-1} C_p) - d - log det C_p + log det C, C = I + V V^T, C_p = Lambda + V V^T:
    # dF/dx_i = lambda_i [C^{-1} - C_p^{-1}]_ii = xi_i (1 - h_i) + (h'_i - h_i), h' the leverages
    # of V' = Lambda^{-1/2} V (as [C_p^{-1}]_ii = (1 - h'_i) / lambda_i);
    # dF/dV = -2 C^{-1} Xi C_p^{-1} Xi C^{-1} V. Both exactly 0 at x = 0, and smooth.
    x, phi_pos, phi_neg, v = primals
    dx, _, _, dv = tangents
    f = _whitened(v)
    f_own = _whitened(v * jnp.exp(-0.5 * x)[..., None])
    h = jnp.sum(jnp.square(f.pt), axis=-2)
    h_own = jnp.sum(jnp.square(f_own.pt), axis=-2)
    xi = jnp.expm1(x)
    grad_x = xi * (1 - h) + (h_own - h)
    scale = jnp.exp(-0.5 * x)[
        ..., None
    ]  # C_p^{-1} u = Lambda^{-1/2} (I + V'V'^T)^{-1} Lambda^{-1/2} u
    u = xi[..., None] * scale * _cap_inv(f_own, scale * (xi[..., None] * f.a))
    grad_v = -2.0 * _cap_inv(f, u)
    tangent = jnp.sum(grad_x * dx, axis=-1) + jnp.sum(grad_v * dv, axis=(-2, -1))
    return _diag_step_core(x, phi_pos, phi_neg, v), tangent


def _factor_step_value(v_q: jax.Array, dlt: jax.Array, mode: str) -> jax.Array:
    """``F((I + V_q V_q^T)^{-1} (I + V_p V_p^T))``, ``V_p = V_q + dlt``, from the QR
    factorization ``[V_q, dlt] = Q [R_1, R_2]``: on the span of ``Q`` the two matrices are
    ``K_q = I + R_1 R_1^T = L L^T`` and ``K_p = I + R_p R_p^T`` (``R_p = R_1 + R_2``); elsewhere
    both are the identity. So the eigenvalues ``1 + mu`` are those of ``I + E`` with
    ``E = L^{-1}(K_p - K_q)L^{-T} = X_2 X_1^T + X_1 X_2^T + X_2 X_2^T``, ``X_i = L^{-1} R_i``,
    which is small (and accurate) when ``dlt`` is.
    """
    k = v_q.shape[-1]
    if mode == "q_zero":  # V_q = 0: L = I, R_1 = 0
        r1, r2 = None, qr_r_sorted(dlt)
    elif mode == "p_zero":  # V_p = 0: R_2 = -R_1
        r1 = qr_r_sorted(v_q)
        r2 = -r1
    else:
        r = qr_r_sorted(jnp.concatenate([v_q, dlt], axis=-1))
        r1, r2 = r[..., :k], r[..., k:]
    if r1 is None:
        x1, x2 = jnp.zeros_like(r2), r2
    else:
        chol = _chol_cap(jnp.swapaxes(r1, -1, -2))  # I + R_1 R_1^T
        x1, x2 = _solve_l(chol, r1), _solve_l(chol, r2)
    x2t = jnp.swapaxes(x2, -1, -2)
    e = mm(x2, jnp.swapaxes(x1, -1, -2)) + mm(x1, x2t) + mm(x2, x2t)
    value, min_pivot = trace_minus_logdet(e, with_min_pivot=True)
    # Far from the identity, where an ill-conditioned I + E may defeat the difference form:
    # tr(E) - log det(K_p) + log det(K_q) (k x k forms, I + R^T R), terms of the result's size.
    plain = jnp.trace(e, axis1=-2, axis2=-1)
    for r_, sign in ((r2 if r1 is None else r1 + r2, -1.0), (r1, 1.0)):
        if r_ is not None and mode != ("p_zero" if sign < 0 else "q_zero"):
            plain = plain + sign * _log_det_chol(_chol_cap(r_))
    return jnp.where(min_pivot >= 0.5, value, plain)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _factor_step(v_q: jax.Array, dlt: jax.Array, mode: str) -> jax.Array:
    """``F((I + V_q V_q^T)^{-1} (I + V_p V_p^T))`` with ``V_p = V_q + dlt``, exact for small dlt.

    ``mode`` is ``"both"``, ``"q_zero"`` (``V_q = 0``) or ``"p_zero"`` (``dlt = -V_q``). The
    value goes through a QR factorization (:func:`_factor_step_value`), whose derivative is
    singular where ``[V_q, dlt]`` loses rank (at ``dlt = 0`` for one); the derivative is the
    closed form of :func:`_factor_step_jvp` instead.
    """
    return _factor_step_value(v_q, dlt, mode)


@_factor_step.defjvp
def _factor_step_jvp(mode, primals, tangents):
    # dF/dV_p = 2 C_q^{-1} Delta V_p K_p^{-1},  dF/dV_q = -2 C_q^{-1} Delta V_q K_q^{-1}, with
    # C = I + V V^T, K = I + V^T V, Delta = V_p V_p^T - V_q V_q^T = dlt V_p^T + V_q dlt^T: exact 0
    # at dlt = 0, and smooth (so second derivatives exist too).
    v_q, dlt = primals
    dv_q, d_dlt = tangents
    v_p = v_q + dlt
    fq = None if mode == "q_zero" else _whitened(v_q)
    fp = None if mode == "p_zero" else _whitened(v_p)

    def delta(y):
        return mm(dlt, _gram(v_p, y)) + mm(v_q, _gram(dlt, y))

    g_p = 0.0 if fp is None else _cap_inv(fq, delta(fp.a))
    g_q = 0.0 if fq is None else _cap_inv(fq, delta(fq.a))
    tangent = 2.0 * jnp.sum((g_p - g_q) * dv_q + g_p * d_dlt, axis=(-2, -1))
    return _factor_step(v_q, dlt, mode), tangent


def _norm_rows(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=-1))


def _leverage_change(fp: _Whitened | None, fq: _Whitened | None, dlt: jax.Array) -> jax.Array:
    """``h_p - h_q``, the change of the leverages ``h = diag(V K^{-1} V^T) = 1 - diag(C^{-1})``
    (``C = I + V V^T``) from ``V_q`` to ``V_p = V_q + dlt``, per coordinate.

    Near ``p == q`` from the difference, ``diag(C_q^{-1} Delta C_m^{-1})`` with
    ``Delta = dlt V_p^T + V_q dlt^T`` (no cancellation between the leverages); where the
    applications of ``C^{-1}`` to ``dlt`` would cancel more than the plain difference of the two
    leverages (``dlt`` large against ``C``, far apart pairs), that plain difference instead.
    """
    zero = jnp.zeros(dlt.shape[:-1], dlt.dtype)
    lev_p = zero if fp is None else jnp.sum(jnp.square(fp.pt), axis=-2)
    lev_q = zero if fq is None else jnp.sum(jnp.square(fq.pt), axis=-2)
    change, scale = zero, zero
    if fp is not None:  # rows of C_q^{-1} dlt . V_p K_p^{-1}
        solved = _cap_inv(fq, dlt)
        change = change + jnp.sum(solved * fp.a, axis=-1)
        scale = scale + _norm_rows(solved) * _norm_rows(fp.a)
    if fq is not None:  # rows of V_q K_q^{-1} . C_m^{-1} dlt
        solved = _cap_inv(fp, dlt)
        change = change + jnp.sum(fq.a * solved, axis=-1)
        scale = scale + _norm_rows(solved) * _norm_rows(fq.a)
    # rounding errors: ~eps * scale for the difference form, ~eps * (h_p + h_q) for the plain one
    return jnp.where(scale <= lev_p + lev_q, change, lev_p - lev_q)


def _cross_p_side(
    x: jax.Array, fq: _Whitened | None, ftq: _Whitened | None, v_p, dlt, dlt_t
) -> jax.Array:
    """The cross term of the path through ``(psi_p, W_q)`` (p's diagonal, q's factor):
    ``tr(C_m^{-1} Delta C_q^{-1} (Lambda - I))``, ``C_m = Lambda + V_q V_q^T``, which is
    ``sum_i 2 sinh(x_i / 2) [(Cm~^{-1} dlt~)_i . (C_q^{-1} V_p)_i + (Cm~^{-1} V_q~)_i .
    (C_q^{-1} dlt)_i]`` with ``~`` for p's whitening (``Cm~ = I + V_q~ V_q~^T``) and rows dotted.
    Every ``C^{-1}`` acts where its factor is moderate when ``x >> 0``; small with ``dlt``."""
    zero = jnp.zeros(x.shape, x.dtype)
    term = zero
    if v_p is not None:
        term = term + jnp.sum(_cap_inv(ftq, dlt_t) * _cap_inv(fq, v_p), axis=-1)
    if fq is not None:
        term = term + jnp.sum(ftq.a * _cap_inv(fq, dlt), axis=-1)
    return jnp.sum(2.0 * jnp.sinh(0.5 * x) * term, axis=-1)


def _low_rank_pair(vp: _View, vq: _View, batch: tuple[int, ...], d: int, dtype: Any) -> jax.Array:
    """``2 KL(p || q)`` for diagonal-plus-low-rank ``p`` and ``q`` (see the module doc)."""
    sp = _spread(vp, vq, (*batch, d))
    mean_p, mean_q = align_ranks(vp.mean, vq.mean)
    z = jnp.broadcast_to(mean_p - mean_q, (*batch, d)) * sp.scale
    k_p = 0 if vp.factor is None else vp.factor.shape[-1]
    k_q = 0 if vq.factor is None else vq.factor.shape[-1]
    k = max(k_p, k_q)
    if k == 0:
        return jnp.sum(sp.phi_pos + jnp.square(z), axis=-1)

    def padded(w, pad):
        w = jnp.broadcast_to(w, (*batch, d, w.shape[-1]))
        return jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, pad)]) if pad else w

    x = sp.x
    scale = sp.scale[..., None]  # psi_q^{-1/2}
    scale_p = scale * jnp.exp(-0.5 * x)[..., None]  # psi_p^{-1/2}
    w_p = None if vp.factor is None else padded(vp.factor, k - k_p)
    w_q = None if vq.factor is None else padded(vq.factor, k - k_q)
    if w_q is None:
        w_diff = w_p
    else:
        w_diff = -w_q if w_p is None else w_p - w_q  # exact for nearly equal factors
    fp = None if w_p is None else _whitened(scale * w_p)
    fq = None if w_q is None else _whitened(scale * w_q)
    ftq = None if w_q is None else _whitened(scale_p * w_q)
    dlt, dlt_t = scale * w_diff, scale_p * w_diff
    xi = jnp.expm1(x)
    # Two paths: through (psi_q, W_p) -- factor step at q's diagonal, then the diagonal step
    # under W_p -- or through (psi_p, W_q). The first whitens W_p by psi_q, the second W_q by
    # psi_p: the first is taken where q's diagonal is the larger one, so that neither factor
    # is inflated by a large ratio of the diagonals (for nearly equal pairs both are exact).
    # A growth by at most e^_GROW inflates W_p by at most e^(_GROW / 2) and needs no second path;
    # the second path's cross term (_cross_p_side) cancels where whitened factor rows are huge
    # (log-diagonals spread over [-80, 80]), the first is exact there for more draws.
    x_max = jnp.max(x, axis=-1)
    via_p = (x_max > -jnp.min(x, axis=-1)) & (x_max > _GROW)  # the path through (psi_p, W_q)
    # diagonal step: under W_p (first path) or W_q (second), both whitened by psi_q
    sum_phi = jnp.sum(sp.phi_pos, axis=-1)
    if fp is None:
        f_a = jnp.where(via_p, _diag_step(sp, fq), sum_phi)
    elif fq is None:
        f_a = jnp.where(via_p, sum_phi, _diag_step(sp, fp))
    else:
        v_diag = jnp.where(via_p[..., None, None], fq.v, fp.v)
        f_a = _diag_step(sp, _whitened(v_diag))
    # factor step: W_q -> W_p at q's diagonal (first path) or p's diagonal (second)
    dlt_f = jnp.where(via_p[..., None, None], dlt_t, dlt)
    if fq is None:
        v_f, mode = jnp.zeros_like(dlt), "q_zero"
    else:
        v_f = jnp.where(via_p[..., None, None], ftq.v, fq.v)
        mode = "p_zero" if fp is None else "both"
    f_b = _factor_step(v_f, dlt_f, mode)
    # cross terms of the two paths
    cross_q = jnp.sum(xi * _leverage_change(fp, fq, dlt), axis=-1)
    cross_p = _cross_p_side(x, fq, ftq, None if fp is None else fp.v, dlt, dlt_t)
    cross = jnp.where(via_p, cross_p, cross_q)
    maha = jnp.sum(jnp.square(z), axis=-1) if fq is None else _ridge(fq, z[..., None])
    total = f_a + f_b + cross + maha
    # >= 0 in exact arithmetic; a rounding below 0 (possible only where the diagonal step
    # cancels, see the module doc) is returned as 0. Written so that total = 0 (p == q) keeps
    # the full derivatives of every order (jnp.maximum would halve them at the tie).
    return jnp.where(total < 0, jnp.zeros_like(total), total)


# ---------------------------------------------------------------------------------------------
# a full-covariance member against a low-rank one: O(d^3), exact through double-word products
# ---------------------------------------------------------------------------------------------


def _cov_diff_primal(tril, factor, log_diag, shift):
    """``W W^T + Psi - L L^T`` scaled by ``2^-shift`` on both sides, to ~eps^2."""
    t = jnp.ldexp(tril, -shift[..., :, None])
    w = jnp.ldexp(factor, -shift[..., :, None])
    full = exact_gram(t)
    low = exact_gram(w)
    psi = exp_dw(log_diag, 2 * shift)
    low = dw_add(low, (diag_embed(psi[0]), diag_embed(psi[1])))
    hi, lo = dw_add(low, (-full[0], -full[1]))
    return hi + lo


@jax.custom_jvp
def _cov_diff(tril, factor, log_diag, shift):
    """``S^{-1} (Sigma_lr - L L^T) S^{-1}``, ``S = diag(2^shift)``, rounded once from a
    double-word value: a small difference of two covariances given in unrelated forms keeps its
    relative precision. Derivative: that of the plain formula (the splittings inside have none).
    """
    return _cov_diff_primal(tril, factor, log_diag, shift)


@_cov_diff.defjvp
def _cov_diff_jvp(primals, tangents):
    tril, factor, log_diag, shift = primals
    d_tril, d_factor, d_log_diag, _ = tangents
    scale = jnp.ldexp(jnp.ones_like(log_diag), -shift)[..., :, None]
    t, dt = scale * tril, scale * jnp.tril(d_tril)
    w, dw = scale * factor, scale * d_factor
    sym = lambda a, b: mm(a, jnp.swapaxes(b, -1, -2)) + mm(b, jnp.swapaxes(a, -1, -2))  # noqa: E731
    psi = jnp.exp(log_diag) * jnp.square(scale[..., 0])
    tangent = sym(w, dw) + diag_embed(psi * d_log_diag) - sym(t, dt)
    return _cov_diff(tril, factor, log_diag, shift), tangent


def _full_low_rank_pair(vp: _View, vq: _View, batch, d: int, dtype: Any) -> jax.Array:
    """``2 KL(p || q)`` when one member is full (Cholesky ``L``) and the other low rank.

    ``A = L^{-1} (Sigma_lr - L L^T) L^{-T}`` is linear in the covariance difference, which is
    formed in double-word arithmetic (:func:`_cov_diff`). ``Sigma_q^{-1} Sigma_p - I`` is similar
    to ``E = A`` (low-rank p, full q) or to ``E = (I + A)^{-1} - I = -(I + A)^{-1} A`` (full p,
    low-rank q); ``F = tr(E) - log det(I + E)`` in difference form
    (:func:`gkl_jax._src.linalg.trace_minus_logdet`).
    """
    p_full = vp.tril is not None
    full, lr = (vp, vq) if p_full else (vq, vp)
    tril = jnp.tril(jnp.broadcast_to(full.tril, (*batch, d, d)))
    factor = jnp.broadcast_to(lr.factor, (*batch, d, lr.factor.shape[-1]))
    log_diag = jnp.broadcast_to(diag_part(lr).log_var, (*batch, d))
    # a diagonal congruence by powers of two (exact) brings L's diagonal to [1/2, 1): no under-
    # or overflow in the double-word products, and O(1) log-determinants
    _, shift = jnp.frexp(jnp.abs(jnp.diagonal(tril, axis1=-2, axis2=-1)))
    shift = lax.stop_gradient(shift)
    t = jnp.ldexp(tril, -shift[..., :, None])
    two_shift = 2.0 * shift.astype(dtype)
    # the scaled low-rank member, whitened by its own diagonal: V = psi^-1/2 W (no scaling
    # needed), psi 2^(-2 shift) = e^log_psi_s
    log_psi_s = (log_diag - two_shift * _LN2_HI) - two_shift * _LN2_LO
    inv_std_s = jnp.exp(-0.5 * log_psi_s)
    f_lr = _whitened(jnp.exp(-0.5 * log_diag)[..., None] * factor)
    a = solve_tril(t, jnp.swapaxes(solve_tril(t, _cov_diff(tril, factor, log_diag, shift)), -1, -2))
    a = 0.5 * (a + jnp.swapaxes(a, -1, -2))
    if p_full:
        chol = lapack.cholesky(_plus_eye(a))
        e = -_solve_lt(chol, solve_tril(chol, a))
        e = 0.5 * (e + jnp.swapaxes(e, -1, -2))
    else:
        e = a
    _, min_pivot = trace_minus_logdet(lax.stop_gradient(e), with_min_pivot=True)
    near = min_pivot >= 0.5
    value = trace_minus_logdet(jnp.where(near[..., None, None], e, jnp.zeros_like(e)))
    # far from the identity (see trace_minus_logdet): tr E - log det(Sigma_p) + log det(Sigma_q),
    # both scaled (O(d) rather than O(d max|log psi|))
    log_det_full = 2.0 * jnp.sum(jnp.log(jnp.diagonal(t, axis1=-2, axis2=-1)), axis=-1)
    log_det_lr = jnp.sum(log_psi_s, axis=-1) + _log_det_chol(f_lr.chol)
    if p_full:
        # tr E = tr((I + A)^{-1}) - d = tr(L^T Sigma_lr^{-1} L) - d, as a sum of squares (the
        # ridge form below; the solve with I + A would lose eps * cond(I + A))
        trace = _ridge(f_lr, inv_std_s[..., None] * t) - d
        plain = trace - (log_det_full - log_det_lr)
    else:
        plain = jnp.trace(e, axis1=-2, axis2=-1) - (log_det_lr - log_det_full)
    spectral = jnp.where(near, value, plain)
    # Mahalanobis term
    mean_p, mean_q = align_ranks(vp.mean, vq.mean)
    delta = jnp.broadcast_to(mean_p - mean_q, (*batch, d))
    if p_full:
        maha = _ridge(f_lr, (delta * jnp.exp(-0.5 * log_diag))[..., None])
    else:
        maha = _sumsq(solve_tril(tril, delta[..., None])[..., 0], axes=-1)
    total = spectral + maha
    return jnp.where(total < 0, jnp.zeros_like(total), total)


@jax.jit
def _kl_structured(p: Any, q: Any) -> jax.Array:
    """KL(p || q) for any two of DiagGaussian, FullGaussian, LowRankGaussian (see module doc).

    Jitted (compiled once per shape and type) so that eager calls do not dispatch the blocked
    solver's many small operations one by one.
    """
    p, q, batch, d, dtype = checks.check_gaussian_pair("kl", p, q)
    vp, vq = structure(p), structure(q)
    if vp.tril is None and vq.tril is None:
        return 0.5 * _low_rank_pair(vp, vq, batch, d, dtype)
    if (vp.tril is None and vp.factor is not None) or (vq.tril is None and vq.factor is not None):
        return 0.5 * _full_low_rank_pair(vp, vq, batch, d, dtype)
    if vq.tril is None:  # a full p against a diagonal q
        return 0.5 * jnp.broadcast_to(_diag_base_terms(vp, vq), batch)
    # a full q against a full or diagonal p
    mean_p, mean_q = align_ranks(vp.mean, vq.mean)
    delta = jnp.broadcast_to(mean_p - mean_q, (*batch, d))
    tril_q = jnp.broadcast_to(vq.tril, (*batch, d, d))
    if vp.tril is not None:
        tril_p = jnp.broadcast_to(vp.tril, (*batch, d, d))
        diag_p = jnp.diagonal(tril_p, axis1=-2, axis2=-1)
    else:
        diag_p = jnp.broadcast_to(diag_part(vp).std, (*batch, d))
        tril_p = diag_embed(diag_p)
    return 0.5 * _full_q_twice_kl(tril_p, tril_q, delta)


def _diag_logdet_terms(tril_p: jax.Array, tril_q: jax.Array) -> jax.Array:
    """``sum_i phi(2 log M_ii)``, ``M_ii = L_p,ii / L_q,ii`` (positive diagonals)."""
    diag_p = jnp.diagonal(tril_p, axis1=-2, axis2=-1)
    diag_q = jnp.diagonal(tril_q, axis1=-2, axis2=-1)
    return jnp.sum(phi_log_ratio(diag_p, diag_q, power=2), axis=-1)


@jax.custom_jvp
def _full_q_twice_kl(tril_p: jax.Array, tril_q: jax.Array, delta: jax.Array) -> jax.Array:
    """``2 KL`` for lower-triangular ``L_p, L_q`` with positive diagonals (``(*b, d, d)``) and
    ``delta = mu_p - mu_q`` (``(*b, d)``): ``sum_{i>j} X_ij^2 + sum_i phi(2 log M_ii) + ||z||^2``
    with ``X = L_q^{-1}(L_p - L_q)`` (whose strictly lower part is ``M``'s) and
    ``z = L_q^{-1} delta``, one blocked solve that never stores ``X``."""
    off, (z,) = tril_solve_sumsq(tril_q, tril_p - tril_q, [delta[..., None]])
    return off + _diag_logdet_terms(tril_p, tril_q) + _sumsq(z)


def _reverse(a: jax.Array) -> jax.Array:
    return jnp.flip(a, axis=(-2, -1))


@_full_q_twice_kl.defjvp
def _full_q_twice_kl_jvp(primals, tangents):
    r"""Closed-form derivatives, in difference form (exactly 0 at ``p == q``), from one solve for
    ``X`` and ``z`` and one upper-triangular solve for ``G = L_q^{-T} X``, ``w = L_q^{-T} z``:

    .. math::

        \partial_{L_p} = \operatorname{tril}(2 G) + 2 \operatorname{diag}(1/L_{q,ii} - 1/L_{p,ii}),
        \quad
        \partial_{L_q} = -2 \operatorname{tril}(G + G X^T + w z^T)
                          - 2 \operatorname{diag}(X_{ii} / L_{q,ii}),
        \quad \partial_\delta = 2 w,

    from ``d ||M||^2 = 2 tr(M^T L_q^{-1} dL_p) - 2 tr(L_q^{-T} M M^T dL_q^T)`` with
    ``M M^T = I + X + X^T + X X^T`` (``L_q^{-T}`` is upper triangular, so the identity and
    ``X^T`` terms reach the lower triangle only through the diagonal). The rule is ordinary JAX
    code (the blocked solver), so Hessians differentiate it again.
    """
    tril_p, tril_q, delta = primals
    d_lp, d_lq, d_delta = tangents
    x, (z,) = solve_tril_tril(tril_q, tril_p - tril_q, [delta[..., None]])
    diag_p = jnp.diagonal(tril_p, axis1=-2, axis2=-1)
    diag_q = jnp.diagonal(tril_q, axis1=-2, axis2=-1)
    out = _sumsq(jnp.tril(x, -1)) + _diag_logdet_terms(tril_p, tril_q) + _sumsq(z)
    # L_q^{-T} [X, z] as a lower-triangular solve of the index-reversed system
    upper = _reverse(jnp.swapaxes(tril_q, -1, -2))
    sol = solve_tril(upper, jnp.flip(jnp.concatenate([x, z], axis=-1), axis=-2))
    sol = jnp.flip(sol, axis=-2)
    g, w = sol[..., :-1], sol[..., -1:]
    inv_diff = (diag_p - diag_q) / (diag_p * diag_q)  # 1 / L_q,ii - 1 / L_p,ii
    g_lp = jnp.tril(2.0 * g) + diag_embed(2.0 * inv_diff)
    g_lq = -2.0 * (
        jnp.tril(g + mm(g, jnp.swapaxes(x, -1, -2)) + w * jnp.swapaxes(z, -1, -2))
        + diag_embed(jnp.diagonal(x, axis1=-2, axis2=-1) / diag_q)
    )
    tangent = (
        jnp.sum(g_lp * d_lp, axis=(-2, -1))
        + jnp.sum(g_lq * d_lq, axis=(-2, -1))
        + 2.0 * jnp.sum(w[..., 0] * d_delta, axis=-1)
    )
    return out, tangent


# Every pair of Gaussians; the diagonal pair (closer in the MRO) has its own kernel in diag.py.
register_kl(Gaussian, Gaussian)(_kl_structured)


def kl_full(
    mean_p: Float[ArrayLike, "*#b d"],
    scale_tril_p: Float[ArrayLike, "*#b d d"],
    mean_q: Float[ArrayLike, "*#b d"],
    scale_tril_q: Float[ArrayLike, "*#b d d"],
) -> Float[Array, "*#b"]:
    r"""KL(p || q) between full-covariance Gaussians given by means and Cholesky factors.

    With ``M = L_q^{-1} L_p`` (lower triangular, ``M_ii = L_p,ii / L_q,ii``)::

        KL = 0.5 * [sum_{i>j} M_ij^2 + sum_i phi(2 log M_ii) + ||L_q^{-1}(mu_p - mu_q)||^2]

    with ``phi(x) = e^x - 1 - x``: no inverse, no ``-d`` cancellation. ``M``'s strictly lower
    part comes from ``L_q^{-1}(L_p - L_q)``, so nearly identical pairs keep float32 precision
    (relative error ~1e-7 at a 1e-5 perturbation, where peers are off by 100% or more). The same
    kernel serves :func:`gkl_jax.kl` for :class:`~gkl_jax.FullGaussian` pairs. Measured (float32,
    D = 16 and 128, perturbations 1e-1 .. 1e-5): max relative error <= 2e-7 against the float64
    value; distrax and TFP reach 3.4e2 at 1e-5 (``benchmarks/results/full.md``).

    Args:
      mean_p: ``(*batch, d)`` mean of p.
      scale_tril_p: ``(*batch, d, d)`` lower-triangular square root of p's covariance: a
        non-zero diagonal of either sign (``L L^T`` is the covariance; a negative entry is valid,
        as in :class:`~gkl_jax.FullGaussian`). Only the lower triangle is read; the checked mode
        reports finite non-zero entries above it (for a general square root ``S`` use
        ``kl(FullGaussian.from_scale(mean, S), ...)``).
      mean_q: ``(*batch, d)`` mean of q.
      scale_tril_q: ``(*batch, d, d)`` the same for q.

    Returns:
      ``KL(p || q)`` with the broadcast batch shape (float32 at least).

    Raises:
      TypeError: an argument is not a floating-point array.
      ValueError: a factor is not square, latent sizes differ, or batch shapes do not broadcast.

    References:
      Kullback (1959); Rasmussen & Williams (2006), App. A.5.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import kl_full
      >>> l_p = jnp.array([[1.0, 0.0], [0.5, 1.0]])
      >>> float(kl_full(jnp.zeros(2), l_p, jnp.zeros(2), jnp.eye(2)))  # 0.5 * 0.5**2
      0.125
    """
    fn = "kl_full"
    names = ("mean_p", "scale_tril_p", "mean_q", "scale_tril_q")
    m_p, l_p, m_q, l_q = as_float_arrays(fn, names, (mean_p, scale_tril_p, mean_q, scale_tril_q))
    for (vn, v), (mn, m) in itertools.product(
        (("mean_p", m_p), ("mean_q", m_q)), (("scale_tril_p", l_p), ("scale_tril_q", l_q))
    ):
        checks.check_matrix_shapes(fn, vn, v.shape, mn, m.shape)
    checks.check_event_shapes(fn, ("mean_p", "mean_q"), (m_p.shape, m_q.shape))
    # (*b, d, d) factors: the trailing d is the latent axis, the rest broadcasts like a batch
    checks.check_event_shapes(fn, ("scale_tril_p", "scale_tril_q"), (l_p.shape, l_q.shape))
    return _kl_full_kernel(m_p, l_p, m_q, l_q)


@jax.jit
def _kl_full_kernel(m_p, l_p, m_q, l_q):
    """The compiled body of :func:`kl_full` (value checks, factor normalization, KL): an eager
    call runs one executable instead of dispatching each step. The checked mode is part of the
    jit cache key, so ``checked(kl_full)`` traces it again with its checks."""
    fn = "kl_full"
    names = ("mean_p", "scale_tril_p", "mean_q", "scale_tril_q")
    # the checked mode: kl_full's own messages come first (the FullGaussian built below checks
    # the same values again; the first failure is the one reported)
    for name, value in zip(names, (m_p, l_p, m_q, l_q), strict=True):
        if not name.startswith("scale"):
            checks.check_finite(fn, name, value)
            continue
        rows, cols = np.tril_indices(value.shape[-1])
        checks.check_finite(fn, f"lower triangle of {name}", value[..., rows, cols])
        checks.check_nonzero(
            fn,
            f"diagonal of {name}",
            jnp.diagonal(value, 0, -2, -1),
            " (a negative entry is a valid square root)",
        )
        check_strict_upper(fn, name, value)
    return _kl_structured(FullGaussian(m_p, l_p), FullGaussian(m_q, l_q))

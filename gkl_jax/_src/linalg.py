r"""Batched lower-triangular solves that run at matrix-multiply speed.

XLA's batched ``triangular_solve`` is a substitution loop (about 4 GFLOP/s on a CPU core pair),
while a batched matrix product of the same size runs ~20x faster. The solvers here split the
triangular matrix recursively in two,

.. math::

    L = \begin{pmatrix} A & 0 \\ C & B \end{pmatrix}, \qquad
    L^{-1} R = \begin{pmatrix} A^{-1} R_1 \\ B^{-1}(R_2 - C A^{-1} R_1) \end{pmatrix},

down to ``leaf x leaf`` diagonal blocks, whose inverses are formed once, all at the same time.
Every other flop is then a matrix product. :func:`tril_solve_sumsq` also exploits a lower
triangular right-hand side (the KL's ``L_q^{-1} (L_p - L_q)``), which needs a third of the flops
of a general solve, and returns only what the KL needs: the sum of squares of the strictly lower
part of the solution.

Accuracy is that of blocked forward substitution with explicitly inverted diagonal blocks: the
error of each entry is bounded by ``eps * (|L^{-1}| |L| |X|)``, so a small solution (a nearly
identical pair) keeps its relative precision. All products use ``Precision.HIGHEST`` so that
accelerators do not drop to bfloat16 passes.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gkl_jax._src import lapack
from gkl_jax._src.numerics import align_ranks, phi

__all__ = [
    "HI",
    "Woodbury",
    "cholesky",
    "diag_embed",
    "dw_add",
    "dw_mul",
    "exact_gram",
    "exp_dw",
    "mm",
    "qr_r_sorted",
    "ridge_qr",
    "solve_triangular",
    "solve_tril",
    "solve_tril_tril",
    "trace_minus_logdet",
    "tril_solve_sumsq",
    "two_prod",
    "two_sum",
    "whiten",
    "woodbury",
]

HI = lax.Precision.HIGHEST  # every product in gkl_jax: no reduced-precision passes on accelerators

_LEAF = 16  # diagonal block size; 8..32 are within 10% of each other on CPU at D = 128.


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at ``Precision.HIGHEST``, batch axes broadcast without rank promotion."""
    a, b = align_ranks(a, b)
    return jnp.matmul(a, b, precision=HI)


def _forward_substitution(tril: jax.Array, rhs: jax.Array) -> jax.Array:
    """``L^{-1} R`` for small ``(*batch, n, n)`` lower-triangular ``L`` (strictly upper part
    ignored) and ``(*batch, n, m)`` ``R``: forward substitution, row by row, in ordinary array
    operations (what LAPACK's ``trsm`` computes, without LAPACK: see :func:`_tril_inverse`)."""
    n = tril.shape[-1]
    rows: list[jax.Array] = []  # row i of the solution: (*batch, m)
    for i in range(n):
        r = rhs[..., i, :]
        if i:
            prev = jnp.stack(rows, axis=-2)  # (*batch, i, m)
            r = r - jnp.einsum("...j,...jm->...m", tril[..., i, :i], prev, precision=HI)
        rows.append(r / tril[..., i, i, None])
    return jnp.stack(rows, axis=-2)


def _tril_inverse(tril: jax.Array) -> jax.Array:
    """``L^{-1}`` of small ``(*batch, n, n)`` lower-triangular matrices (strictly upper part
    ignored) by recursive 2 x 2 block inversion, in ordinary array operations.

    Not LAPACK's batched ``trsm``: with jaxlib <= 0.10 on CPU, each batched LAPACK call splits
    its batch over XLA's intra-op thread pool and blocks a pool thread until the pieces finish, so
    as many concurrent calls as the pool has threads (two on a 2-core machine: two solves in one
    jitted function) wait on each other forever. The triangular solves and Cholesky
    factorizations of the diagonal and full-covariance paths are therefore built from the
    operations here; the QR, SVD, eigendecomposition and LU calls of the low-rank kernels and
    ``wasserstein2`` go through :mod:`gkl_jax._src.lapack`, one matrix at a time on CPU.
    """
    n = tril.shape[-1]
    if n == 1:
        return 1.0 / tril
    m = 1 << (n - 1).bit_length()
    if m != n:  # pad with an identity block to a power of two (block diagonal: same inverse)
        batch = tril.shape[:-2]
        pad = jnp.broadcast_to(jnp.eye(m, dtype=tril.dtype)[n:, :], (*batch, m - n, m))
        full = jnp.concatenate(
            [jnp.pad(tril, [(0, 0)] * len(batch) + [(0, 0), (0, m - n)]), pad], -2
        )
        return _tril_inverse(full)[..., :n, :n]
    # [[A, 0], [C, B]]^{-1} = [[A^{-1}, 0], [-B^{-1} C A^{-1}, B^{-1}]]: both halves in one
    # recursive call (stacked), so log2(n) levels of batched products, not n substitution steps
    h = n // 2
    inv = _tril_inverse(jnp.stack([tril[..., :h, :h], tril[..., h:, h:]], axis=-3))
    a_inv, b_inv = inv[..., 0, :, :], inv[..., 1, :, :]
    c = -mm(b_inv, mm(tril[..., h:, :h], a_inv))
    top = jnp.concatenate([a_inv, jnp.zeros_like(a_inv)], axis=-1)
    return jnp.concatenate([top, jnp.concatenate([c, b_inv], axis=-1)], axis=-2)


def _chol_small(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of small ``(*batch, n, n)`` symmetric positive definite matrices
    (lower triangle read), column by column (left-looking); NaN where a pivot is not positive."""
    n = a.shape[-1]
    cols: list[jax.Array] = []  # column j of L: (*batch, n), zero above the diagonal
    idx = jnp.arange(n)
    for j in range(n):
        s = a[..., :, j]
        if j:
            prev = jnp.stack(cols, axis=-1)  # (*batch, n, j)
            s = s - jnp.einsum("...nk,...k->...n", prev, prev[..., j, :], precision=HI)
        d = jnp.sqrt(s[..., j])
        col = jnp.where(idx > j, s / d[..., None], 0.0)
        cols.append(jnp.where(idx == j, d[..., None], col))
    return jnp.stack(cols, axis=-1)


def cholesky(a: ArrayLike, *, leaf: int = _LEAF) -> jax.Array:
    """Lower Cholesky factor of ``(*batch, n, n)`` symmetric positive definite matrices (lower
    triangle read), without LAPACK (see :func:`_tril_inverse` for why): a recursive blocked
    factorization whose off-diagonal blocks come from the blocked solver, i.e. matrix products,
    with column-by-column leaves. A matrix that is not positive definite gives NaN (as
    ``jnp.linalg.cholesky`` does), at least from its first non-positive pivot on.
    """
    a = jnp.asarray(a)
    n = a.shape[-1]
    if n <= leaf:
        return _chol_small(a)
    h = ((n // leaf) // 2) * leaf or leaf
    l11 = cholesky(a[..., :h, :h], leaf=leaf)
    # L21 = A21 L11^{-T}  <=>  L11 L21^T = A21^T
    l21 = jnp.swapaxes(solve_tril(l11, jnp.swapaxes(a[..., h:, :h], -1, -2), leaf=leaf), -1, -2)
    s22 = a[..., h:, h:] - jnp.matmul(l21, jnp.swapaxes(l21, -1, -2), precision=HI)
    l22 = cholesky(s22, leaf=leaf)
    top = jnp.concatenate([l11, jnp.zeros((*l11.shape[:-1], n - h), l11.dtype)], axis=-1)
    return jnp.concatenate([top, jnp.concatenate([l21, l22], axis=-1)], axis=-2)


def solve_triangular(tril: ArrayLike, rhs: ArrayLike, *, transpose: bool = False) -> jax.Array:
    """``L^{-1} R`` (or ``L^{-T} R`` with ``transpose``) for ``(*batch, n, n)`` lower-triangular
    ``L`` and ``(*batch, n, m)`` ``R`` (batch axes broadcast), without LAPACK: the blocked
    solver; ``L^T`` is upper triangular, and reversing the order of its rows and columns makes it
    lower triangular, so the transposed solve is the same solver on reversed arrays."""
    tril, rhs = align_ranks(jnp.asarray(tril), jnp.asarray(rhs))
    batch = jnp.broadcast_shapes(tril.shape[:-2], rhs.shape[:-2])
    tril = jnp.broadcast_to(tril, (*batch, *tril.shape[-2:]))
    rhs = jnp.broadcast_to(rhs, (*batch, *rhs.shape[-2:]))
    if not transpose:
        return solve_tril(tril, rhs)
    rev = jnp.flip(jnp.swapaxes(tril, -1, -2), axis=(-2, -1))  # J L^T J: lower triangular
    return jnp.flip(solve_tril(rev, jnp.flip(rhs, axis=-2)), axis=-2)


def _leaf_inverses(tril: jax.Array, leaf: int) -> jax.Array:
    """Inverses of the ``n / leaf`` diagonal blocks, shape ``(*batch, n / leaf, leaf, leaf)``."""
    n = tril.shape[-1]
    blocks = jnp.stack([tril[..., i : i + leaf, i : i + leaf] for i in range(0, n, leaf)], axis=-3)
    return _tril_inverse(blocks)


def _recurse(
    tril: jax.Array,
    rhs_tril: jax.Array | None,
    rhs: list[jax.Array],
    inv: jax.Array,
    leaf: int,
    need_x: bool,
):
    """Solves ``tril @ X = rhs_tril`` (lower-triangular rhs) and ``tril @ Y_i = rhs_i``.

    Returns ``(X or None, sum of squares of X's strictly lower part or None, [Y_i])``.
    """
    n = tril.shape[-1]
    if n == leaf:
        block_inv = inv[..., 0, :, :]
        ys = [mm(block_inv, r) for r in rhs]
        if rhs_tril is None:
            return None, None, ys
        x = mm(block_inv, jnp.tril(rhs_tril))
        return x, jnp.sum(jnp.square(jnp.tril(x, -1)), axis=(-2, -1)), ys
    nb = n // leaf
    h = (nb // 2) * leaf
    top_tril = None if rhs_tril is None else rhs_tril[..., :h, :h]
    x11, s1, y1 = _recurse(
        tril[..., :h, :h],
        top_tril,
        [r[..., :h, :] for r in rhs],
        inv[..., : nb // 2, :, :],
        leaf,
        True,
    )
    c = tril[..., h:, :h]
    lower_rhs = [r[..., h:, :] - mm(c, y) for r, y in zip(rhs, y1, strict=True)]
    bottom_tril = None
    if rhs_tril is not None:
        lower_rhs.insert(0, rhs_tril[..., h:, :h] - mm(c, x11))
        bottom_tril = rhs_tril[..., h:, h:]
    x22, s2, y2 = _recurse(
        tril[..., h:, h:], bottom_tril, lower_rhs, inv[..., nb // 2 :, :, :], leaf, need_x
    )
    ys = [
        jnp.concatenate([a, b], axis=-2) for a, b in zip(y1, y2[len(y2) - len(rhs) :], strict=True)
    ]
    if rhs_tril is None:
        return None, None, ys
    x21 = y2[0]
    total = s1 + s2 + jnp.sum(jnp.square(x21), axis=(-2, -1))
    x = None
    if need_x:
        top = jnp.concatenate([x11, jnp.zeros((*x11.shape[:-1], n - h), x11.dtype)], axis=-1)
        x = jnp.concatenate([top, jnp.concatenate([x21, x22], axis=-1)], axis=-2)
    return x, total, ys


def _pad(tril, rhs_tril, rhs, leaf):
    """Pads the system to a multiple of ``leaf`` with an identity block (solution unchanged)."""
    n = tril.shape[-1]
    extra = -n % leaf
    if extra == 0:
        return tril, rhs_tril, rhs
    batch = tril.shape[:-2]
    eye = jnp.broadcast_to(jnp.eye(extra, dtype=tril.dtype), (*batch, extra, extra))
    zeros_tr = jnp.zeros((*batch, n, extra), tril.dtype)
    zeros_bl = jnp.zeros((*batch, extra, n), tril.dtype)
    tril = jnp.concatenate(
        [jnp.concatenate([tril, zeros_tr], -1), jnp.concatenate([zeros_bl, eye], -1)], -2
    )
    if rhs_tril is not None:
        rhs_tril = jnp.pad(rhs_tril, [(0, 0)] * len(batch) + [(0, extra), (0, extra)])
    rhs = [jnp.pad(r, [(0, 0)] * len(batch) + [(0, extra), (0, 0)]) for r in rhs]
    return tril, rhs_tril, rhs


@functools.partial(jax.jit, static_argnames=("leaf", "need_x"))
def _solve(tril, rhs_tril, rhs, leaf, need_x=False):
    n = tril.shape[-1]
    if n <= leaf:  # one block: substitution is cheap at this size (and keeps its accuracy)
        cols = ([] if rhs_tril is None else [jnp.tril(rhs_tril)]) + list(rhs)
        sol = _forward_substitution(tril, jnp.concatenate(cols, axis=-1))
        off = 0
        total = None
        if rhs_tril is not None:
            total = jnp.sum(jnp.square(jnp.tril(sol[..., :n], -1)), axis=(-2, -1))
            off = n
        ys = [jnp.tril(sol[..., :n])] if need_x else []
        for r in rhs:
            ys.append(sol[..., off : off + r.shape[-1]])
            off += r.shape[-1]
        return total, ys
    padded, rhs_tril_p, rhs_p = _pad(tril, rhs_tril, list(rhs), leaf)
    inv = _leaf_inverses(padded, leaf)
    x, total, ys = _recurse(padded, rhs_tril_p, rhs_p, inv, leaf, need_x)
    ys = [y[..., :n, :] for y in ys]
    return total, ([x[..., :n, :n]] if need_x else []) + ys


def tril_solve_sumsq(
    tril: ArrayLike, rhs_tril: ArrayLike, rhs: list[ArrayLike], *, leaf: int = _LEAF
) -> tuple[jax.Array, list[jax.Array]]:
    """``sum_{i>j} (L^{-1} T)_ij^2`` for lower-triangular ``L, T``, and ``L^{-1} R`` for each R.

    Args:
      tril: ``(*batch, n, n)`` lower-triangular ``L`` with a non-zero diagonal (the strictly upper
        part is ignored).
      rhs_tril: ``(*batch, n, n)`` lower-triangular ``T`` (the strictly upper part is ignored).
      rhs: general right-hand sides, each ``(*batch, n, m_i)``.
      leaf: diagonal block size.

    Returns:
      ``(sumsq, [L^{-1} R_i])`` with ``sumsq`` of shape ``batch``. All batch shapes must be equal.
    """
    return _solve(tril, rhs_tril, rhs, leaf)


def solve_tril_tril(
    tril: ArrayLike, rhs_tril: ArrayLike, rhs: list[ArrayLike], *, leaf: int = _LEAF
) -> tuple[jax.Array, list[jax.Array]]:
    """``X = L^{-1} T`` (lower triangular, strictly upper part exactly 0) and each ``L^{-1} R``."""
    _, out = _solve(tril, rhs_tril, rhs, leaf, need_x=True)
    return out[0], out[1:]


def solve_tril(tril: ArrayLike, rhs: ArrayLike, *, leaf: int = _LEAF) -> jax.Array:
    """``L^{-1} R`` for a ``(*batch, n, n)`` lower-triangular ``L`` and ``(*batch, n, m)`` ``R``."""
    return _solve(tril, None, [rhs], leaf)[1][0]


def diag_embed(x: jax.Array) -> jax.Array:
    """``(*b, d)`` -> ``(*b, d, d)`` diagonal matrices (no rank promotion)."""
    d = x.shape[-1]
    eye = jnp.eye(d, dtype=x.dtype).reshape((1,) * (x.ndim - 1) + (d, d))
    return x[..., None] * eye


def whiten(tril: jax.Array, v: jax.Array) -> jax.Array:
    """``L^{-1} v`` for ``(*b, d, d)`` factors and ``(*s, d)`` vectors broadcast against them.

    Sample axes that ``L`` does not have become right-hand-side columns of one solve, so ``L``
    is never copied per sample.
    """
    d = tril.shape[-1]
    batch = jnp.broadcast_shapes(v.shape[:-1], tril.shape[:-2])
    n_extra = len(batch) - (tril.ndim - 2)
    v = jnp.broadcast_to(v, (*batch, d))
    inner = batch[n_extra:]
    # columns: move the extra leading axes behind the latent axis and flatten them.
    cols = jnp.moveaxis(v, tuple(range(n_extra)), tuple(range(-n_extra, 0))) if n_extra else v
    cols = cols.reshape((*inner, d, -1))
    tril = jnp.broadcast_to(tril, (*inner, d, d))
    z = solve_tril(tril, cols)
    z = z.reshape((*inner, d, *batch[:n_extra]))
    if n_extra:
        z = jnp.moveaxis(z, tuple(range(-n_extra, 0)), tuple(range(n_extra)))
    return z


class Woodbury(NamedTuple):
    """Pieces of ``Sigma^{-1} = diag(inv_diag) - u^T u`` and ``log det Sigma``.

    Attributes:
      inv_diag: ``(*b, d)`` ``exp(-log_diag)``.
      u: ``(*b, k, d)`` ``L_C^{-1} W^T Psi^{-1}``.
      log_det_cap: ``(*b,)`` ``log det C``.
    """

    inv_diag: jax.Array
    u: jax.Array
    log_det_cap: jax.Array


def woodbury(factor: jax.Array, log_diag: jax.Array) -> Woodbury:
    """Capacitance factorization of ``W W^T + diag(exp(log_diag))`` (``O(d k^2 + k^3)``)."""
    factor, log_diag = align_ranks(factor, log_diag[..., None])
    log_diag = log_diag[..., 0]
    inv_diag = jnp.exp(-log_diag)
    a = factor * inv_diag[..., None]  # Psi^{-1} W, (*b, d, k)
    k = factor.shape[-1]
    gram = jnp.einsum("...dk,...dl->...kl", factor, a, precision=HI)
    cap = gram + jnp.eye(k, dtype=gram.dtype).reshape((1,) * (gram.ndim - 2) + (k, k))
    chol = lapack.cholesky(cap)
    batch = jnp.broadcast_shapes(chol.shape[:-2], a.shape[:-2])
    u = lapack.triangular_solve(
        jnp.broadcast_to(chol, (*batch, k, k)),
        jnp.broadcast_to(jnp.swapaxes(a, -1, -2), (*batch, k, a.shape[-2])),
        left_side=True,
        lower=True,
    )
    log_det_cap = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return Woodbury(inv_diag, u, log_det_cap)


def trace_minus_logdet(e: jax.Array, *, with_min_pivot: bool = False) -> Any:
    r"""``tr(E) - log det(I + E)`` for symmetric ``E`` with ``I + E`` positive definite.

    This is ``sum_i (mu_i - log1p(mu_i)) >= 0`` over the eigenvalues ``mu_i`` of ``E``: the
    ``F(I + E) = tr(A - I) - log det A`` behind every Gaussian KL, for a small matrix whose
    ``A - I = E`` is known accurately. Evaluated as a Cholesky factorization of ``I + E`` in
    difference form, ``I + E = (I + N)(I + N)^T`` with ``N`` lower triangular:

    .. math::

        \operatorname{tr} E - \log\det(I + E)
          = \sum_{i>j} N_{ij}^2 + \sum_i \varphi(\operatorname{log1p} s_i),
        \qquad (1 + N_{ii})^2 = 1 + s_i ,

    where each column ``j`` takes the pivot ``s_j`` from the running Schur complement
    ``I + S`` (``S`` starts at ``E``), ``N_{ij} = S_{ij} / sqrt(1 + s_j)`` below it, and
    ``S <- S - n_j n_j^T``. Only the small ``S`` is ever stored (never ``I + S``), so the result
    keeps its relative precision when ``E`` is tiny (a nearly identical pair), every term is
    non-negative, and ``E = 0`` gives exactly 0. Unlike an eigendecomposition it is smooth
    everywhere (repeated eigenvalues included), so autodiff gives exact derivatives of every
    order; at ``E = 0`` the gradient is exactly 0. ``O(n^3)`` for ``(*batch, n, n)`` ``E`` (a
    loop over the ``n`` columns of rank-one updates; meant for small ``n``). Only the lower
    triangle of ``E`` is read.

    The pivots ``1 + s_j`` lie in ``[lambda_min, lambda_max]`` of ``I + E`` in exact arithmetic;
    for an ``I + E`` that is far from the identity *and* ill-conditioned the Schur updates can
    cancel below a pivot's true value (NaN for a negative one). ``with_min_pivot=True`` also
    returns the smallest pivot, so that a caller can fall back to a plain log-determinant there
    (far from the identity nothing needs the difference form).
    """
    n = e.shape[-1]
    total = jnp.zeros(e.shape[:-2], e.dtype)
    min_pivot = jnp.ones(e.shape[:-2], e.dtype)
    if n == 0:
        return (total, min_pivot) if with_min_pivot else total
    rows = jnp.arange(n).reshape((1,) * (e.ndim - 2) + (n,))

    def column(j, carry):
        s, total, min_pivot = carry
        col = lax.dynamic_index_in_dim(s, j, axis=-1, keepdims=False)  # (*b, n)
        pivot = lax.dynamic_index_in_dim(col, j, axis=-1, keepdims=False)  # s_j
        below = jnp.where(rows > j, col, jnp.zeros_like(col)) / jnp.sqrt(1 + pivot)[..., None]
        total = total + phi(jnp.log1p(pivot)) + jnp.sum(jnp.square(below), axis=-1)
        min_pivot = jnp.minimum(min_pivot, 1 + pivot)
        return s - below[..., :, None] * below[..., None, :], total, min_pivot

    _, total, min_pivot = lax.fori_loop(0, n, column, (e, total, min_pivot))
    return (total, min_pivot) if with_min_pivot else total


# ---------------------------------------------------------------------------------------------
# double-word arithmetic: a value as an unevaluated sum hi + lo of two floats of the working
# dtype (about 48 bits in float32, 106 in float64). For differences of covariances that are
# given in two unrelated forms (a low-rank-plus-diagonal one and a Cholesky factor), whose
# products must be formed to about twice the working precision before they are subtracted.
# ---------------------------------------------------------------------------------------------


def _precision(dtype: Any) -> int:
    """Significant bits of ``dtype`` (24 for float32, 53 for float64)."""
    return jnp.finfo(dtype).nmant + 1


def two_sum(a: ArrayLike, b: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth's TwoSum)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a = hi + lo`` exactly with half-width parts, so that their products are exact."""
    info = jnp.finfo(a.dtype)
    hi = lax.reduce_precision(
        a, exponent_bits=info.nexp, mantissa_bits=_precision(a.dtype) // 2 - 1
    )
    return hi, a - hi


def two_prod(a: ArrayLike, b: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``(p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker's product)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    p = a * b
    a_hi, a_lo = _split(a)
    b_hi, b_lo = _split(b)
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


DoubleWord = tuple[ArrayLike, ArrayLike]  # hi, lo (Python floats allowed for constants)


def dw_add(x: DoubleWord, y: DoubleWord) -> tuple[jax.Array, jax.Array]:
    """The sum of two double-word values, as a normalized double word."""
    s, e = two_sum(x[0], y[0])
    e = e + (x[1] + y[1])
    hi = s + e
    return hi, e - (hi - s)


def dw_mul(x: DoubleWord, y: DoubleWord) -> tuple[jax.Array, jax.Array]:
    """The product of two double-word values, as a normalized double word."""
    p, e = two_prod(x[0], y[0])
    e = e + (x[0] * y[1] + x[1] * y[0])
    hi = p + e
    return hi, e - (hi - p)


def _dw_const(value: Fraction, dtype: Any) -> tuple[float, float]:
    hi = float(np.asarray(float(value), dtype))
    return hi, float(np.asarray(float(value - Fraction(hi)), dtype))


# log(2) in three parts: the first two short enough that n * part is exact for every exponent n
# of the dtype, the third rounded; from a 70-digit value.
_LN2 = Fraction("0.6931471805599453094172321214581765680755001343602552541206800094933936219696")


def _ln2_parts(dtype: Any) -> tuple[float, float, float]:
    bits = _precision(dtype) - (9 if _precision(dtype) < 53 else 11)
    parts = []
    rest = _LN2
    for _ in range(2):
        e = math.floor(math.log2(float(rest)))
        unit = Fraction(2) ** (e + 1 - bits)
        parts.append(Fraction(round(rest / unit)) * unit)
        rest -= parts[-1]
    return float(parts[0]), float(parts[1]), float(np.asarray(float(rest), dtype))


def exp_dw(x: jax.Array, shift: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``e^x * 2^-shift`` as a double word (relative error ~``eps^2``) for ``|x| <= 700``.

    ``x = n log 2 + r`` with ``|r| <= log(2) / 2`` (``r`` a double word, from a three-part
    ``log 2``), a Taylor polynomial of ``e^r`` evaluated in double-word arithmetic, and the power
    of two applied exactly (``shift``, an integer array, keeps small results out of the
    subnormal range).
    """
    dtype = x.dtype
    p = _precision(dtype)
    a, b, c = _ln2_parts(dtype)
    n = jnp.round(x * (1.0 / math.log(2.0)))
    r_hi, r_lo = two_sum(x - n * a, -(n * b))  # x - n a is exact (Sterbenz), n b is exact
    r_lo = r_lo - n * c
    degree = 13 if p < 53 else 24  # (log(2) / 2)^(degree + 1) / (degree + 1)! < eps^2
    acc = _dw_const(Fraction(1, math.factorial(degree)), dtype)
    acc = (jnp.full_like(x, acc[0]), jnp.full_like(x, acc[1]))
    for k in range(degree - 1, -1, -1):
        coef = _dw_const(Fraction(1, math.factorial(k)), dtype)
        acc = dw_add(dw_mul(acc, (r_hi, r_lo)), coef)
    exponent = n.astype(jnp.int32)
    if shift is not None:
        exponent = exponent - shift.astype(jnp.int32)
    return jnp.ldexp(acc[0], exponent), jnp.ldexp(acc[1], exponent)


def exact_gram(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a a^T`` for ``(*b, n, m)`` ``a`` as a double word ``(hi, lo)``, to ~``eps^2 |a| |a|^T``.

    Ozaki's error-free splitting: each row is cut into slices of ``beta`` bits on a grid fixed
    by the row's largest entry (``beta = (p - log2 m) / 2`` for a ``p``-bit dtype), so that every
    product of two slices is a dot product of small integers times a power of two, whose float
    sum is exact in any order. The slice products (``~(2p / beta)^2 / 4`` matrix products, all at
    ``Precision.HIGHEST``) are summed in double-word arithmetic. Exact up to the dropped products
    of the least significant slices (``< 2^-2p`` relative to ``|a_i| |a_j| m``).
    """
    p = _precision(a.dtype)
    m = a.shape[-1]
    beta = max((p - max(m - 1, 1).bit_length()) // 2, 1)
    n_slices = -(-2 * p // beta) + 1
    _, e = jnp.frexp(jnp.max(jnp.abs(a), axis=-1, keepdims=True))  # |a_ij| < 2^e_i
    slices = []
    rest = a
    for s in range(1, n_slices + 1):
        cut = jnp.ldexp(jnp.round(jnp.ldexp(rest, s * beta - e)), e - s * beta)
        slices.append(cut)
        rest = rest - cut  # exact
    acc = (jnp.zeros((*a.shape[:-1], a.shape[-2]), a.dtype),) * 2
    for level in range(n_slices + 1, 1, -1):  # smallest products first
        for s in range(1, level // 2 + 1):
            t = level - s
            if t > n_slices:
                continue
            prod = mm(slices[s - 1], jnp.swapaxes(slices[t - 1], -1, -2))  # exact
            if s != t:
                acc = dw_add(acc, (prod, jnp.zeros_like(prod)))
                prod = jnp.swapaxes(prod, -1, -2)
            acc = dw_add(acc, (prod, jnp.zeros_like(prod)))
    return acc


def qr_r_sorted(a: jax.Array) -> jax.Array:
    """``R`` of the Householder QR factorization of ``(*b, n, m)`` ``a`` (``n >= m``), rows
    taken in the order of decreasing size first: row-wise stable (Cox & Higham, *Stability of
    Householder QR factorization for weighted least squares problems*, 1998), so rows of
    very different scales (whitened factors) each keep their relative precision in ``R^T R``.
    """
    order = sorted_rows(a)[..., None]
    return lapack.qr(jnp.take_along_axis(a, order, axis=-2), mode="r")


def _column_norm(x: jax.Array) -> jax.Array:
    """``||x||`` over the last axis without overflow or underflow of the squares."""
    big = lax.stop_gradient(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
    big = jnp.where(big > 0, big, jnp.ones_like(big))
    return big[..., 0] * jnp.sqrt(jnp.sum(jnp.square(x / big), axis=-1))


def householder(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Householder QR factorization of ``(*b, n, m)`` ``a`` (``n >= m``, ``m`` small) in plain
    array operations: ``(R, Y, tau)`` with ``R`` ``(*b, m, m)`` upper triangular, ``Y``
    ``(*b, n, m)`` the unit lower trapezoidal reflectors and ``tau`` ``(*b, m)``, so that
    ``a = H_0 ... H_{m-1} [R; 0]`` with ``H_j = I - tau_j y_j y_j^T`` (LAPACK's convention).

    The same arithmetic as LAPACK's unblocked ``geqr2`` (norms scaled against overflow), with
    no library call: batched factorizations of tall matrices in XLA:CPU's LAPACK kernels share
    the intra-op thread pool with the rest of the program and can deadlock when two run at
    once (jaxlib 0.10); these ``m`` steps of ``O(n m)`` fused array operations cannot and
    run unchanged on every backend. :func:`cap_solve` calls it on stop-gradient input (its
    derivatives come from its own solves); ``a`` must have full column rank.
    """
    n, m = a.shape[-2:]
    rows = lax.broadcasted_iota(jnp.int32, (n, 1), 0)
    ys, taus = [], []
    for j in range(m):
        x = jnp.where(rows[:, 0] >= j, a[..., :, j], 0)  # (*b, n)
        alpha = a[..., j, j]
        norm = _column_norm(x)
        beta = jnp.where(alpha < 0, norm, -norm)
        safe = jnp.where(norm > 0, alpha - beta, jnp.ones_like(alpha))
        y = jnp.where(rows[:, 0] == j, 1, jnp.where(rows[:, 0] > j, x / safe[..., None], 0))
        tau = jnp.where(norm > 0, (beta - alpha) / jnp.where(norm > 0, beta, 1), 0)
        # H_j applied to the columns j.. (rows < j of y are 0, so earlier rows keep their values)
        proj = jnp.einsum("...n,...nm->...m", y, a[..., :, j:], precision=HI)
        a = a.at[..., :, j:].add(-(tau[..., None, None] * y[..., :, None]) * proj[..., None, :])
        ys.append(y)
        taus.append(tau)
    r = jnp.triu(a[..., :m, :])
    return r, jnp.stack(ys, axis=-1), jnp.stack(taus, axis=-1)


def apply_householder(y: jax.Array, tau: jax.Array, c: jax.Array, transpose: bool) -> jax.Array:
    """``Q c`` (or ``Q^T c``) for ``Q = H_0 ... H_{m-1}`` from :func:`householder`, ``c`` of
    shape ``(*b, n, p)``, in the compact WY form ``Q = I - Y T Y^T`` (Schreiber & Van Loan,
    1989; ``T`` upper triangular from the recurrence ``T_{:j, j} = -tau_j T_{:j, :j} Y_{:j}^T
    y_j``, valid for ``tau_j = 0``): two products with ``Y`` instead of ``m`` passes."""
    m = y.shape[-1]
    gram = mm(jnp.swapaxes(y, -1, -2), y)
    t = jnp.zeros(gram.shape, gram.dtype)
    for j in range(m):
        col = -tau[..., j, None] * jnp.einsum(
            "...ij,...j->...i", t[..., :, :j], gram[..., :j, j], precision=HI
        )
        t = t.at[..., :, j].set(col.at[..., j].set(tau[..., j]))
    if transpose:
        t = jnp.swapaxes(t, -1, -2)
    return c - mm(y, mm(t, mm(jnp.swapaxes(y, -1, -2), c)))


_INDEX_BITS = 20  # rows an exponent-keyed sort can order (the rest of a uint32 key: exponents)


def sorted_rows(a: jax.Array) -> jax.Array:
    """The indices of the rows of ``(*b, n, m)`` ``a`` by decreasing size (``max_j |a_ij|``),
    to a factor of 2: rows are ordered by the binary exponent of their size (the row-wise
    stability of :func:`qr_r_sorted` needs the scales in order, not the exact order of rows of
    one scale), then by index. One ``uint32`` key per row -- exponent above, index below --
    makes it a single-operand sort, ~5x faster on CPU than ``argsort`` of the sizes (a
    two-operand sort); beyond ``2^20`` rows, ``argsort``."""
    size = lax.stop_gradient(jnp.max(jnp.abs(a), axis=-1))
    n = size.shape[-1]
    if n >= 1 << _INDEX_BITS:
        return jnp.argsort(-size, axis=-1)
    _, e = jnp.frexp(size)  # size < 2^e (float32: e in [-148, 129]; float64: [-1073, 1025])
    e = jnp.where(size > 0, e, -1100)  # zero rows last
    high = (1100 - jnp.clip(e, -1100, 1100)).astype(jnp.uint32)
    index = lax.broadcasted_iota(jnp.uint32, size.shape, size.ndim - 1)
    key = jnp.sort((high << _INDEX_BITS) | index, axis=-1)
    return (key & ((1 << _INDEX_BITS) - 1)).astype(jnp.int32)


def ridge_qr(v: jax.Array, z: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """The Cholesky factor of ``K = I + V^T V`` without forming the Gram matrix, and the ridge
    residual ``z^T (I + V V^T)^{-1} z`` (``(*b, m, m)`` factor of it) when ``z`` is given.

    ``[V, z; I, 0] = Q R`` (Householder QR of the ``(d + k) x (k + m)`` stacked matrix, rows
    sorted by decreasing norm so that the factorization is row-wise stable: rows of ``V`` at
    scales ``1e-17 .. 1e16`` keep their relative precision). ``R^T R`` is
    ``[K, V^T z; z^T V, z^T z]``, so ``L = R_11^T`` (diagonal made positive) and
    ``R_22^T R_22 = z^T z - z^T V K^{-1} V^T z = z^T (I + V V^T)^{-1} z`` (Woodbury): a Schur
    complement formed without a subtraction.

    Args:
      v: ``(*b, d, k)``.
      z: ``(*b, d, m)`` or None.

    Returns:
      ``(L, R_22)``: ``(*b, k, k)`` lower triangular with positive diagonal, ``L L^T = K``; and
      ``(*b, m, m)`` upper triangular with ``R_22^T R_22 = z^T (I + V V^T)^{-1} z`` (or None).
    """
    k = v.shape[-1]
    batch = v.shape[:-2] if z is None else jnp.broadcast_shapes(v.shape[:-2], z.shape[:-2])
    v = jnp.broadcast_to(v, (*batch, *v.shape[-2:]))
    eye = jnp.broadcast_to(jnp.eye(k, dtype=v.dtype), (*batch, k, k))
    top, bottom = v, eye
    if z is not None:
        z = jnp.broadcast_to(z, (*batch, *z.shape[-2:]))
        m = z.shape[-1]
        top = jnp.concatenate([v, z], axis=-1)
        bottom = jnp.concatenate([eye, jnp.zeros((*batch, k, m), v.dtype)], axis=-1)
    r = qr_r_sorted(jnp.concatenate([top, bottom], axis=-2))
    r11 = r[..., :k, :k]
    sign = jnp.where(jnp.diagonal(r11, axis1=-2, axis2=-1) < 0, -1.0, 1.0).astype(v.dtype)
    chol = jnp.swapaxes(r11 * sign[..., :, None], -1, -2)
    return chol, (None if z is None else r[..., k:, k:])


def cap_solve(v: jax.Array, u: jax.Array) -> jax.Array:
    """``(I + V V^T)^{-1} u`` for ``(*b, d, k)`` ``V`` and ``(*b, d, m)`` ``u``, row-wise accurate.

    ``(I + V V^T)^{-1} u`` is the top block of the residual of the ridge problem
    ``min_c ||[V; I] c - [u; 0]||^2``. The textbook ``u - V K^{-1} V^T u`` cancels in the rows
    where ``V`` is huge (the result there is ``~u_i / |V_i|^2``: whitened factor rows at
    ``1e16`` lose every digit). Here the residual comes from the Householder reflectors of the
    row-sorted QR factorization of ``[V; I]`` (:func:`householder`, rows ordered as in
    :func:`qr_r_sorted`): ``Q (0, (Q^T b)_2)``, whose heavy rows are products, never
    differences. The reflectors are formed and applied (:func:`apply_householder`) in array
    operations, not by LAPACK's ``geqrf``/``ormqr``: more batched LAPACK calls that can run at
    once make XLA:CPU's deadlock of jaxlib 0.10 (see :func:`householder`) likely even at
    ``d = 300``. Differentiable to every order through
    :func:`jax.lax.custom_linear_solve` (``C`` is symmetric; its derivatives act through the
    product ``x + V V^T x``); the factorization is computed once and shared by the solves of
    the derivatives.
    """
    batch = jnp.broadcast_shapes(v.shape[:-2], u.shape[:-2])
    v = jnp.broadcast_to(v, (*batch, *v.shape[-2:]))
    u = jnp.broadcast_to(u, (*batch, *u.shape[-2:]))
    d, k = v.shape[-2:]
    eye = jnp.broadcast_to(jnp.eye(k, dtype=v.dtype), (*batch, k, k))
    stacked = lax.stop_gradient(jnp.concatenate([v, eye], axis=-2))
    order = sorted_rows(stacked)[..., None]
    iota = lax.broadcasted_iota(order.dtype, order.shape, order.ndim - 2)
    back = jnp.put_along_axis(jnp.zeros_like(order), order, iota, axis=-2, inplace=False)
    _, refl, taus = householder(jnp.take_along_axis(stacked, order, axis=-2))

    def solve(_, b):
        b = jnp.concatenate([b, jnp.zeros((*b.shape[:-2], k, b.shape[-1]), b.dtype)], axis=-2)
        c = apply_householder(refl, taus, jnp.take_along_axis(b, order, axis=-2), True)
        c = apply_householder(refl, taus, c.at[..., :k, :].set(0), False)
        return jnp.take_along_axis(c, back, axis=-2)[..., :d, :]

    def matvec(x):
        return x + mm(v, mm(jnp.swapaxes(v, -1, -2), x))

    return lax.custom_linear_solve(matvec, u, solve, symmetric=True)

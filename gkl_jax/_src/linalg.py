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
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from gkl_jax._src.numerics import align_ranks

__all__ = [
    "HI",
    "Woodbury",
    "diag_embed",
    "mm",
    "solve_tril",
    "solve_tril_tril",
    "tril_solve_sumsq",
    "whiten",
    "woodbury",
]

HI = lax.Precision.HIGHEST  # every product in gkl_jax: no reduced-precision passes on accelerators

_LEAF = 16  # diagonal block size; 8..32 are within 10% of each other on CPU at D = 128.


def mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at ``Precision.HIGHEST``, batch axes broadcast without rank promotion."""
    a, b = align_ranks(a, b)
    return jnp.matmul(a, b, precision=HI)


def _leaf_inverses(tril: jax.Array, leaf: int) -> jax.Array:
    """Inverses of the ``n / leaf`` diagonal blocks, shape ``(*batch, n / leaf, leaf, leaf)``."""
    n = tril.shape[-1]
    blocks = jnp.stack([tril[..., i : i + leaf, i : i + leaf] for i in range(0, n, leaf)], axis=-3)
    eye = jnp.broadcast_to(jnp.eye(leaf, dtype=tril.dtype), blocks.shape)
    return lax.linalg.triangular_solve(blocks, eye, left_side=True, lower=True)


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
    if n <= leaf:  # one block: the substitution loop is cheap at this size.
        cols = ([] if rhs_tril is None else [jnp.tril(rhs_tril)]) + list(rhs)
        sol = lax.linalg.triangular_solve(
            tril, jnp.concatenate(cols, axis=-1), left_side=True, lower=True
        )
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
    chol = jnp.linalg.cholesky(cap)
    batch = jnp.broadcast_shapes(chol.shape[:-2], a.shape[:-2])
    u = lax.linalg.triangular_solve(
        jnp.broadcast_to(chol, (*batch, k, k)),
        jnp.broadcast_to(jnp.swapaxes(a, -1, -2), (*batch, k, a.shape[-2])),
        left_side=True,
        lower=True,
    )
    log_det_cap = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return Woodbury(inv_diag, u, log_det_cap)

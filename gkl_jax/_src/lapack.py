"""LAPACK-backed decompositions, one matrix at a time on CPU.

jaxlib <= 0.10's CPU LAPACK kernels split a *batch* of matrices over XLA's intra-op thread pool
and block a pool thread until the pieces are done; as many such calls at once as the pool has
threads (two on a 2-core machine: two independent decompositions in one jitted function, or a
value and a gradient) then wait on each other forever. A call that sees a single matrix does not
split, so it cannot take part in that deadlock.

The functions here are drop-in replacements for the ``jnp.linalg`` / ``lax.linalg`` routines
that gkl_jax's low-rank kernels and divergences still need (QR, SVD, eigendecomposition, LU
solves; the triangular solves and Cholesky factorizations of the diagonal and full-covariance
paths use no LAPACK at all: :mod:`gkl_jax._src.linalg`). On CPU a batched call becomes a
``lax.map`` over the flattened batch (the same LAPACK routine on each matrix: bitwise the same
results; its loop costs a few microseconds per matrix); on other platforms it is the batched
call itself (``lax.platform_dependent`` picks the branch when the program is lowered).

A caller that ``jax.vmap``s a gkl_jax function batches the map's body again; the functions
broadcast over leading axes, which is the way to batch them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "cholesky",
    "eigh",
    "eigvalsh",
    "inv",
    "per_matrix",
    "qr",
    "slogdet",
    "solve",
    "svd",
    "triangular_solve",
]


def per_matrix(fn: Callable[..., Any], *args: jax.Array, core: Sequence[int] | None = None) -> Any:
    """``fn(*args)`` where ``fn`` maps core arrays (the last ``core[i]`` axes of ``args[i]``,
    2 by default) to a pytree of arrays and broadcasts over leading batch axes: on CPU one
    matrix at a time (see the module docstring), elsewhere batched."""
    args = tuple(jnp.asarray(a) for a in args)
    core = tuple(core) if core is not None else (2,) * len(args)
    batch = jnp.broadcast_shapes(*(a.shape[: a.ndim - c] for a, c in zip(args, core, strict=True)))
    count = math.prod(batch)
    if count <= 1:
        return fn(*args)
    flat = tuple(
        jnp.broadcast_to(a, (*batch, *a.shape[a.ndim - c :])).reshape(count, *a.shape[a.ndim - c :])
        for a, c in zip(args, core, strict=True)
    )

    def mapped(*xs):
        out = lax.map(lambda ys: fn(*ys), xs)
        return jax.tree_util.tree_map(lambda o: o.reshape(*batch, *o.shape[1:]), out)

    def batched(*xs):
        out = fn(*xs)
        return jax.tree_util.tree_map(lambda o: o.reshape(*batch, *o.shape[1:]), out)

    return lax.platform_dependent(*flat, cpu=mapped, default=batched)


def qr(a: jax.Array, mode: str = "reduced") -> Any:
    return per_matrix(functools.partial(jnp.linalg.qr, mode=mode), a)


def cholesky(a: jax.Array) -> jax.Array:
    return per_matrix(jnp.linalg.cholesky, a)


def svd(a: jax.Array, full_matrices: bool = True, compute_uv: bool = True) -> Any:
    fn = functools.partial(jnp.linalg.svd, full_matrices=full_matrices, compute_uv=compute_uv)
    return per_matrix(fn, a)


def eigh(a: jax.Array) -> Any:
    return per_matrix(jnp.linalg.eigh, a)


def eigvalsh(a: jax.Array) -> jax.Array:
    return per_matrix(jnp.linalg.eigvalsh, a)


def solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^{-1} b`` for a matrix right-hand side ``b`` (``(*batch, n, k)``)."""
    return per_matrix(jnp.linalg.solve, a, b)


def slogdet(a: jax.Array) -> Any:
    return per_matrix(jnp.linalg.slogdet, a)


def inv(a: jax.Array) -> jax.Array:
    return per_matrix(jnp.linalg.inv, a)


def triangular_solve(a: jax.Array, b: jax.Array, **kwargs: Any) -> jax.Array:
    """``lax.linalg.triangular_solve(a, b, **kwargs)``, one matrix at a time on CPU."""
    return per_matrix(functools.partial(lax.linalg.triangular_solve, **kwargs), a, b)

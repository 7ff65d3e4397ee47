r"""The 2-Wasserstein distance between Gaussians, exact for nearly identical pairs.

::

    W2^2 = ||mu_p - mu_q||^2 + B(Sigma_p, Sigma_q),
    B = tr Sigma_p + tr Sigma_q - 2 tr (Sigma_p^{1/2} Sigma_q Sigma_p^{1/2})^{1/2}

**Diagonal pairs**: ``B = ||std_p - std_q||^2`` with ``std_p - std_q = std_q expm1(x / 2)`` from
the exact log-variance ratio ``x``: nothing cancels.

**Otherwise** the Bures term ``B`` is a difference of traces that cancels to ``O(perturbation^2)``
for nearly identical pairs. For any square roots ``L L^T = Sigma`` (not necessarily triangular)
it equals the orthogonal Procrustes residual ``min_R ||L_p - L_q R||_F^2`` (``R`` orthogonal:
the polar factor of ``L_q^T L_p``, whose nuclear norm is the trace of the matrix square root).
The kernel therefore works on ``L_q`` and the *difference* ``Delta = L_p - L_q``, never on
``L_p`` itself: near the identity ``R = I + Z`` is found in difference form (Newton steps on the
Cayley parameter, each a Lyapunov solve in the eigenbasis of the symmetric part of
``L_q^T L_p``, accumulated as ``Z <- Z + Z_d + Z Z_d``) and ``B = ||Delta - L_q Z||^2`` is a sum
of squares of small, accurate numbers: ``W2(p, p) == 0`` exactly and the relative error does not
grow as ``p -> q``. Elsewhere ``R`` comes from an SVD. The value's derivative holds ``R`` fixed
(envelope theorem); ``R``'s own derivative is the Lyapunov solution of the linearized polar
equation, so gradients and Hessians are finite everywhere, ``p == q`` included.

**Square roots and their difference.** Full (and diagonal) members: the triangular factor, and
``Delta`` the difference of the given factors. Diagonal-plus-low-rank members
(``Sigma = D^2 + W W^T``, ``D = diag(std)``): with ``N = D^{-1} W`` and ``C`` the Cholesky
factor of ``I + N^T N`` (from a row-sorted QR of ``[N; I]``, no Gram matrix),

.. math::

    L = D + W T N^T, \qquad T = (I + C)^{-1},

is a square root: ``L = D (I + N T N^T)`` and
``(I + N T N^T)(I + N T N^T)^T = I + N (T + T^T + T N^T N T^T) N^T = I + N N^T``, because with
``X = I + C``: ``T + T^T + T (C C^T - I) T^T = T (X^T + X + C C^T - I) T^T = T X X^T T^T = I``.
For two such members (a diagonal one has ``W = 0``; factors are padded to one rank) the
difference is formed from exact differences only:

* ``D_p - D_q = D_q expm1(x/2)``, ``D_p^{-1} - D_q^{-1} = D_q^{-1} expm1(-x/2)``, ``W_p - W_q``;
* ``N_p - N_q = D_p^{-1}(W_p - W_q) + (D_p^{-1} - D_q^{-1}) W_q``;
* ``C_p = C_q (I + F)`` with ``(I + F)(I + F)^T = I + M``,
  ``M = C_q^{-1}(N_p^T N_p - N_q^T N_q) C_q^{-T} = X^T P^T + P X + X^T X``
  (``P = C_q^{-1} N_q^T``, ``X = (N_p - N_q) C_q^{-T}``, both bounded) and ``F`` the Cholesky
  factor in difference form (column ``j``: ``f_jj = t / (1 + sqrt(1 + t))`` with
  ``t = m_jj - sum_{l<j} f_jl^2``; ``f_ij = (m_ij - sum_{l<j} f_il f_jl) / (1 + f_jj)``), so
  ``C_p - C_q = C_q F``;
* ``T_p - T_q = -T_p (C_p - C_q) T_q``;
* ``Delta = (D_p - D_q) + (W_p - W_q) T_p N_p^T + W_q (T_p - T_q) N_p^T + W_q T_q (N_p - N_q)^T``.

Every term is a product of an exact difference with bounded factors, so ``Delta`` has the
relative precision of the inputs' differences. Where ``||M||_F > 1/2`` (the pair is not near,
so ``L_p - L_q`` needs no care) and where a covariance is singular to working precision
(``min(D^2) <= sqrt(eps)(max(D^2) + ||W||_F^2)``) the triangular roots of QR factorizations of
``[D, W]^T`` are used instead, the latter because the polar factor of a numerically singular
``L_q^T L_p`` comes from an SVD, arbitrary in the singular directions, which the triangular
roots tolerate (``eps / perturbation`` relative error) and these do not. A full member meets a
low-rank one through ``L_p - L_q`` of its triangular factor and the low-rank member's triangular
root (accurate to ``eps`` absolutely, not relative to ``B``: the two covariances are not given
in a common form).

Cost: ``O(d)`` for diagonal pairs, ``O(d^3)`` otherwise (the ``d x d`` Procrustes problem; the
low-rank roots are ``O(d^2 k)``). The Bures term of low-rank-plus-diagonal matrices has no
``O(d k^2)`` form (it needs the square root of a full ``d x d`` matrix unless both diagonals are
multiples of ``I``), so with no full-covariance member this is done only up to
``_DENSE_MAX = 1024`` dimensions; above, :func:`wasserstein2` raises and says so.

References:
  Dowson & Landau, *The Frechet distance between multivariate normal distributions*,
  J. Multivar. Anal. 12 (1982); Givens & Shortt, Michigan Math. J. 31 (1984); Bhatia, Jain &
  Lim, *On the Bures-Wasserstein distance*, Expo. Math. 37 (2019); Higham, *Functions of
  Matrices* (2008), ch. 8 (polar decomposition).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from gkl_jax._src import checks, lapack
from gkl_jax._src.base import Gaussian
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian, log_var_ratio
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.kl.structured import diag_part, structure
from gkl_jax._src.linalg import diag_embed, mm, ridge_qr, solve_triangular
from gkl_jax._src.numerics import align_ranks, expm1

__all__ = ["wasserstein2", "wasserstein2_squared"]

# W2 with a low-rank member and no full-covariance member densifies only up to this size.
_DENSE_MAX = 1024


def _t(a: jax.Array) -> jax.Array:
    return jnp.swapaxes(a, -1, -2)


def _plus_eye(m: jax.Array, c: float = 1.0) -> jax.Array:
    """``m + c I`` for a batch of square matrices (no rank promotion)."""
    n = m.shape[-1]
    return m + (c * jnp.eye(n, dtype=m.dtype)).reshape((1,) * (m.ndim - 2) + (n, n))


def _sumsq(a: jax.Array, axes=(-2, -1)) -> jax.Array:
    return jnp.sum(jnp.square(a), axis=axes)


# ``W2^2`` of a pair, dispatched on the types: register a new family's kernel here.
wasserstein2_squared = Operation("wasserstein2", arity=2)


@wasserstein2_squared.register(DiagGaussian, DiagGaussian)
def _w2_diag(p: DiagGaussian, q: DiagGaussian, batch, d, dtype) -> jax.Array:
    mean_p, mean_q = align_ranks(p.mean, q.mean)
    mean_term = jnp.sum(jnp.square(mean_p - mean_q), axis=-1)
    if p.param == q.param == "std":
        a, b = align_ranks(p.spread, q.spread)
        diff = a - b
    else:  # std_p - std_q = std_q * expm1(log(std_p / std_q)), no cancellation
        half_x = 0.5 * log_var_ratio(p, q)
        std_q, half_x = align_ranks(q.std, half_x)
        diff = std_q * jnp.expm1(half_x)
    spread_term = jnp.sum(jnp.square(diff), axis=-1)
    mean_term, spread_term = align_ranks(mean_term, spread_term)
    return jnp.broadcast_to(mean_term + spread_term, batch).astype(dtype)


# ---------------------------------------------------------------------------------------------
# the Bures term from L_q and Delta = L_p - L_q
# ---------------------------------------------------------------------------------------------


def _lyapunov(vecs: jax.Array, vals: jax.Array, rhs: jax.Array) -> jax.Array:
    """``X`` with ``S X + X S = rhs`` for ``S = V diag(vals) V^T`` positive definite."""
    denom = vals[..., :, None] + vals[..., None, :]
    return mm(vecs, mm(mm(_t(vecs), mm(rhs, vecs)) / denom, _t(vecs)))


_NEAR_POLAR = 0.2  # ||L_q^T Delta||_F / lambda_min(L_q^T L_q) below which: start from R = I
_POLAR_STEPS = 8


def _rotation_value(l_q: jax.Array, delta: jax.Array) -> jax.Array:
    """``Z = R - I`` for the polar factor ``R`` of ``G = L_q^T L_p`` (``G = R H``).

    ``G = C + H`` with ``C = L_q^T L_q`` and the small, accurate ``H = L_q^T Delta``. Newton
    steps ``R <- R Cayley(X)`` with ``S X + X S = G_n - G_n^T`` (``G_n = R^T G``, the
    antisymmetric part taken from ``H + Z^T G``; ``S`` the symmetric part of ``G_n`` at the
    start), accumulated in difference form ``Z <- Z + Z_d + Z Z_d``: ``Z`` gets the relative
    precision of ``Delta`` and is exactly 0 at ``p == q``. The steps start from ``R = I`` where
    ``||H||_F <= 0.2 lambda_min(sym G)`` (sure convergence) and elsewhere from the SVD's polar
    factor, whose rounding (``eps`` absolutely: all of a nearly identical pair's ``Z`` when the
    first test is too cautious) they remove -- if ``S`` is well conditioned
    (``lambda_min > sqrt(eps) lambda_max``). Otherwise the SVD's factor is kept: with ``S``
    singular to working precision the Newton equation is ill-posed, and nearly identical pairs
    there get ``eps / perturbation`` relative accuracy.
    """
    c = mm(_t(l_q), l_q)
    c = 0.5 * (c + _t(c))
    h = mm(_t(l_q), delta)
    g = c + h
    vals = lapack.eigvalsh(0.5 * (g + _t(g)))
    scale = jnp.max(jnp.abs(c), axis=(-2, -1))  # compared at unit scale: no overflow
    near = _sumsq(h / scale[..., None, None]) <= (_NEAR_POLAR * vals[..., 0] / scale) ** 2
    keep = near[..., None, None]
    u, _, vt = lapack.svd(g)
    z0 = jnp.where(keep, jnp.zeros_like(g), _plus_eye(mm(u, vt), -1.0))
    b0 = h + mm(_t(z0), g)  # R_0^T G - C
    vals_s, vecs_s = lapack.eigh(c + 0.5 * (b0 + _t(b0)))
    conditioned = vals_s[..., 0] > jnp.sqrt(jnp.finfo(g.dtype).eps) * vals_s[..., -1]
    active = (near | conditioned)[..., None, None]
    vals_s = jnp.where(active[..., 0], vals_s, jnp.ones_like(vals_s))  # no division by ~0

    def step(_, z):
        b = h + mm(_t(z), g)  # R^T G - C, whose antisymmetric part is that of R^T G
        dl = jnp.where(active, _lyapunov(vecs_s, vals_s, b - _t(b)), 0.0)
        z_d = lapack.solve(_plus_eye(-0.5 * dl), dl)  # Cayley(dl) - I
        return z + z_d + mm(z, z_d)

    return lax.fori_loop(0, _POLAR_STEPS, step, z0)


@jax.custom_jvp
def _rotation(l_q: jax.Array, delta: jax.Array) -> jax.Array:
    """``R - I`` for the optimal rotation ``R = argmin ||L_p - L_q R||_F`` (``L_p = L_q +
    Delta``; see :func:`_rotation_value`). Derivative: ``dR = R Omega`` with ``H Omega + Omega H
    = R^T dG - dG^T R`` (``H = R^T G``, positive definite), from the eigenbasis of ``H``; no
    eigenvalue differences, so it is finite at repeated eigenvalues."""
    return _rotation_value(l_q, delta)


@_rotation.defjvp
def _rotation_jvp(primals, tangents):
    l_q, delta = primals
    dl_q, d_delta = tangents
    z = _rotation(l_q, delta)
    r = _plus_eye(z)
    l_p = l_q + delta
    g = mm(_t(l_q), l_p)
    dg = mm(_t(dl_q), l_p) + mm(_t(l_q), dl_q + d_delta)
    hm = mm(_t(r), g)
    vals, vecs = lapack.eigh(0.5 * (hm + _t(hm)))
    a = mm(_t(r), dg)
    omega = _lyapunov(vecs, vals, a - _t(a))
    return z, mm(r, omega)


@jax.custom_jvp
def _bures(l_q: jax.Array, delta: jax.Array) -> jax.Array:
    """``min_R ||L_p - L_q R||_F^2 = tr S_p + tr S_q - 2 tr (S_p^1/2 S_q S_p^1/2)^1/2`` for any
    square roots ``L`` of the covariances (``L_p = L_q + Delta``), as the sum of squares of
    ``Delta - L_q Z``."""
    return _sumsq(delta - mm(l_q, _rotation(l_q, delta)))


@_bures.defjvp
def _bures_jvp(primals, tangents):
    # envelope theorem: R is optimal, so dB = 2 <L_p - L_q R, dL_p - dL_q R>
    #   = 2 <Delta - L_q Z, dDelta - dL_q Z>; R's own derivative enters only the second
    # derivative (through _rotation's rule)
    l_q, delta = primals
    dl_q, d_delta = tangents
    z = _rotation(l_q, delta)
    res = delta - mm(l_q, z)
    return _bures(l_q, delta), 2.0 * jnp.sum(res * (d_delta - mm(dl_q, z)), axis=(-2, -1))


# ---------------------------------------------------------------------------------------------
# square roots: triangular factors, and D + W T N^T for diagonal-plus-low-rank members
# ---------------------------------------------------------------------------------------------


def _chol_difference(m: jax.Array) -> jax.Array:
    """``F = chol(I + M) - I`` for symmetric ``(*b, k, k)`` ``M > -I``, column by column in
    difference form (no ``1 +`` is ever subtracted again): ``f_jj = t / (1 + sqrt(1 + t))``,
    ``t = m_jj - sum_{l<j} f_jl^2``; ``f_ij = (m_ij - sum_{l<j} f_il f_jl) / (1 + f_jj)``."""
    k = m.shape[-1]
    rows = jnp.arange(k)

    def column(j, f):
        row_j = f[..., j, :]  # f_jl for l < j (columns >= j are still 0)
        t = m[..., j, j] - jnp.sum(jnp.square(row_j), axis=-1)
        f_jj = t / (1.0 + jnp.sqrt(1.0 + t))
        col = (m[..., :, j] - jnp.einsum("...il,...l->...i", f, row_j)) / (1.0 + f_jj)[..., None]
        col = jnp.where(rows > j, col, jnp.where(rows == j, f_jj[..., None], 0.0))
        return f.at[..., :, j].set(col)

    return lax.fori_loop(0, k, column, jnp.zeros_like(m))


def _inv_one_plus(c: jax.Array) -> jax.Array:
    """``(I + C)^{-1}`` for lower-triangular ``C`` with a positive diagonal."""
    eye = jnp.broadcast_to(jnp.eye(c.shape[-1], dtype=c.dtype), c.shape)
    return solve_triangular(_plus_eye(c), eye)


class _LowRankRoot:
    """``L = D + W T N^T`` of ``D^2 + W W^T`` (module docstring) and its pieces."""

    def __init__(self, std: jax.Array, w: jax.Array):
        self.std, self.w = std, w
        self.n = w / std[..., :, None]
        self.c = ridge_qr(self.n)[0]
        self.t = _inv_one_plus(self.c)

    def root(self) -> jax.Array:
        return diag_embed(self.std) + mm(self.w, mm(self.t, _t(self.n)))


def _padded(view: Any, batch: tuple[int, ...], d: int, k: int, dtype: Any) -> jax.Array:
    """A view's low-rank factor with zero columns up to rank ``k`` (zeros for a diagonal)."""
    w = view.factor if view.factor is not None else jnp.zeros((d, 0), dtype)
    w = jnp.broadcast_to(w, (*batch, d, w.shape[-1])).astype(dtype)
    return jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, k - w.shape[-1])])


_NEAR_ROOT = 0.5  # ||M||_F below which the low-rank roots' difference is taken in difference form


def _low_rank_roots(vp: Any, vq: Any, batch, d, dtype) -> tuple[jax.Array, jax.Array]:
    """``(L_q, L_p - L_q)`` for two diagonal-plus-low-rank views (module docstring)."""
    k = max([1] + [v.factor.shape[-1] for v in (vp, vq) if v.factor is not None])
    dp, dq = diag_part(vp), diag_part(vq)
    half_x = 0.5 * log_var_ratio(dp, dq)
    std_q, half_x = align_ranks(dq.std, half_x)
    std_q, half_x = (jnp.broadcast_to(a, (*batch, d)).astype(dtype) for a in (std_q, half_x))
    std_p = jnp.broadcast_to(dp.std, (*batch, d)).astype(dtype)
    d_std = std_q * expm1(half_x)
    d_inv = expm1(-half_x) / std_q
    w_p, w_q = (_padded(v, batch, d, k, dtype) for v in (vp, vq))
    dw = w_p - w_q
    rq = _LowRankRoot(std_q, w_q)
    n_p = w_p / std_p[..., :, None]
    dn = dw / std_p[..., :, None] + w_q * d_inv[..., :, None]
    p_q = solve_triangular(rq.c, _t(rq.n))  # C_q^{-1} N_q^T
    x = _t(solve_triangular(rq.c, _t(dn)))  # (N_p - N_q) C_q^{-T}
    xp = mm(_t(x), _t(p_q))
    m = xp + _t(xp) + mm(_t(x), x)
    near = _sumsq(m) <= _NEAR_ROOT**2
    m = jnp.where(near[..., None, None], m, jnp.zeros_like(m))  # no NaN where not taken
    dc = mm(rq.c, _chol_difference(m))
    t_p = _inv_one_plus(rq.c + dc)
    dt = -mm(t_p, mm(dc, rq.t))
    l_q = rq.root()
    delta_near = (
        diag_embed(d_std)
        + mm(dw, mm(t_p, _t(n_p)))
        + mm(w_q, mm(dt, _t(n_p)))
        + mm(w_q, mm(rq.t, _t(dn)))
    )
    # Elsewhere the triangular roots (a QR factorization of [D, W]^T per side): for pairs that
    # are not near (||M||_F > 1/2), and where a covariance is singular to working precision
    # (diagonal far below the factor): the polar factor of L_q^T L_p is then found by an SVD,
    # arbitrary in the singular directions, which costs up to ~sigma_min^2 absolutely with the
    # difference roots and only eps / perturbation relatively with triangular ones.
    use = (near & _well_conditioned(std_p, w_p) & _well_conditioned(std_q, w_q))[..., None, None]
    l_q_tri = _triangular_root(std_q, w_q)
    delta_tri = _triangular_root(std_p, w_p) - l_q_tri
    return jnp.where(use, l_q, l_q_tri), jnp.where(use, delta_near, delta_tri)


def _well_conditioned(std: jax.Array, w: jax.Array) -> jax.Array:
    """``min(D^2) > sqrt(eps) (max(D^2) + ||W||_F^2)``: a lower bound of the covariance's
    reciprocal condition number above ``sqrt(eps)``."""
    var = jnp.square(std)
    big = jnp.max(var, axis=-1) + jnp.sum(jnp.square(w), axis=(-2, -1))
    return jnp.min(var, axis=-1) > jnp.sqrt(jnp.finfo(std.dtype).eps) * big


def _triangular_root(std: jax.Array, w: jax.Array) -> jax.Array:
    """``R^T`` from the QR factorization of ``[D, W]^T`` (``R^T R = D^2 + W W^T``), no squaring
    of the condition number."""
    stacked = jnp.concatenate([diag_embed(std), w], axis=-1)
    return _t(lapack.qr(_t(stacked), mode="r"))


def _square_root(view: Any, batch: tuple[int, ...], d: int, dtype: Any) -> jax.Array:
    """A square root ``L`` (``L L^T = Sigma``) of one view's covariance, ``(*batch, d, d)``."""
    if view.tril is not None:
        return jnp.broadcast_to(view.tril, (*batch, d, d)).astype(dtype)
    if view.factor is None:
        return jnp.broadcast_to(diag_embed(diag_part(view).std), (*batch, d, d)).astype(dtype)
    k = view.factor.shape[-1]
    std = jnp.broadcast_to(diag_part(view).std, (*batch, d)).astype(dtype)
    return _triangular_root(std, _padded(view, batch, d, k, dtype))


@wasserstein2_squared.register(Gaussian, Gaussian)
def _w2_generic(p: Any, q: Any, batch, d, dtype) -> jax.Array:
    if not (isinstance(p, FullGaussian) or isinstance(q, FullGaussian)) and d > _DENSE_MAX:
        raise ValueError(
            f"wasserstein2: between {type(p).__name__} and {type(q).__name__} with d = {d} "
            f"(> {_DENSE_MAX}): the Bures term tr (S_p^1/2 S_q S_p^1/2)^1/2 of "
            "low-rank-plus-diagonal covariances has no O(d k^2) form (it needs the square root "
            "of a d x d matrix unless both diagonals are multiples of the identity), and "
            "gkl_jax does not densify a low-rank member silently at this size. Convert "
            "explicitly with p.to_full() / q.to_full() (O(d^3) time, O(d^2) memory) if that "
            "is affordable."
        )
    vp, vq = structure(p), structure(q)
    mean_p, mean_q = align_ranks(vp.mean, vq.mean)
    mean_term = jnp.broadcast_to(jnp.sum(jnp.square(mean_p - mean_q), axis=-1), batch)
    if vp.tril is None and vq.tril is None:
        l_q, delta = _low_rank_roots(vp, vq, batch, d, dtype)
    else:
        l_q = _square_root(vq, batch, d, dtype)
        delta = _square_root(vp, batch, d, dtype) - l_q
    return mean_term + _bures(l_q, delta)


@functools.partial(jax.jit, static_argnames="squared")
def _wasserstein2(p: Any, q: Any, squared: bool) -> jax.Array:
    p, q, batch, d, dtype = checks.check_gaussian_pair("wasserstein2", p, q)
    w2 = wasserstein2_squared(p, q, batch, d, dtype).astype(dtype)
    return w2 if squared else _sqrt0(w2)


@jax.custom_jvp
def _sqrt0(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at 0 is 0 (a subgradient), not inf."""
    return jnp.sqrt(x)


@_sqrt0.defjvp
def _sqrt0_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _sqrt0(x)
    return y, dx * jnp.where(x == 0, 0.0, 0.5 / jnp.where(x == 0, 1.0, y))


def wasserstein2(p: Any, q: Any, *, squared: bool = False) -> Float[Array, "*#b"]:
    r"""2-Wasserstein distance between Gaussians (symmetric; a metric).

    ::

        W2^2 = ||mu_p - mu_q||^2 + tr Sigma_p + tr Sigma_q
               - 2 tr (Sigma_p^{1/2} Sigma_q Sigma_p^{1/2})^{1/2}

    Diagonal pairs: ``W2^2 = ||mu_p - mu_q||^2 + ||std_p - std_q||^2``, with ``std_p - std_q``
    formed without cancellation. Otherwise the matrix square root is replaced by the equivalent
    orthogonal Procrustes form ``min_R ||L_p - L_q R||_F^2``, a sum of squares rather than a
    difference of traces, computed from ``L_q`` and the accurate difference ``L_p - L_q`` with
    the optimal rotation found in difference form near the identity (see the module docstring
    of ``gkl_jax._src.wasserstein``): ``W2(p, p) == 0`` exactly, and nearly identical pairs keep
    their digits -- full, diagonal and low-rank pairs alike, except a full-covariance member
    against a low-rank one (accurate to float epsilon of the covariances there).

    Cost: ``O(d)`` for diagonal pairs, ``O(d^3)`` otherwise. A low-rank member enters through a
    ``d x d`` square root of its covariance: the Bures term of low-rank-plus-diagonal matrices
    has no ``O(d k^2)`` form. Without a full-covariance member this is done only for
    ``d <= 1024``; above, a ``ValueError`` says so (convert with ``.to_full()`` explicitly).

    Args:
      p: a gkl_jax Gaussian.
      q: a gkl_jax Gaussian with the same latent size.
      squared: return ``W2^2`` (smooth everywhere) instead of ``W2``. ``W2`` is not
        differentiable at ``p == q`` (a cone); its gradient there is taken as 0, a valid
        subgradient, so training through ``W2`` stays finite.

    Returns:
      ``W2(p, q)`` (or its square) with the broadcast batch shape.

    Raises:
      ValueError: as :func:`gkl_jax.renyi`; or a low-rank member, no full-covariance member and
        ``d > 1024``. TypeError: as :func:`gkl_jax.renyi`.

    References:
      Dowson & Landau, J. Multivar. Anal. 12 (1982); Givens & Shortt, Michigan Math. J. 31 (1984);
      Bhatia, Jain & Lim, *On the Bures-Wasserstein distance*, Expo. Math. 37 (2019).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, wasserstein2
      >>> p = DiagGaussian.from_std(jnp.array([3.0, 0.0]), jnp.array([1.0, 5.0]))
      >>> q = DiagGaussian.from_std(jnp.zeros(2), jnp.array([1.0, 1.0]))
      >>> float(wasserstein2(p, q))  # sqrt(3^2 + 4^2)
      5.0
    """
    return _wasserstein2(p, q, bool(squared))

r"""Closed-form divergences beyond KL: Jeffreys, Renyi, Bhattacharyya, Hellinger, Wasserstein-2.

Every function takes two gkl_jax Gaussians (:class:`~gkl_jax.DiagGaussian`,
:class:`~gkl_jax.FullGaussian`, :class:`~gkl_jax.LowRankGaussian`, in any combination), reduces
over the latent axis and broadcasts over batch axes, like :func:`gkl_jax.kl`.

Exactness. The Renyi family is written, per eigenvalue ``lambda = e^x`` of
``Sigma_q^{-1} Sigma_p``, with the function

.. math::

    g_\alpha(x) = \log\big(\alpha + (1 - \alpha) e^x\big) - (1 - \alpha) x
      = \operatorname{log1p}\big(\alpha\varphi((\alpha - 1)x) + (1 - \alpha)\varphi(\alpha x)\big),

whose right-hand form has no cancellation (``phi(x) = e^x - 1 - x``): the first-order terms
cancel analytically. Diagonal pairs use it per dimension. Full-covariance pairs use it on the
eigenvalues ``1 + mu`` of ``M M^T`` with ``M = L_q^{-1} L_p = I + X``, where the small
``E = X + X^T + X X^T`` comes from the accurate ``X = L_q^{-1}(L_p - L_q)`` of
:func:`gkl_jax.kl_full`; the eigen-decomposition's gradient is taken analytically
(``V f'(mu) V^T``, well defined at ``p == q`` where the eigenvalues coincide). So nearly identical
pairs keep their digits in float32 here too.

Low-rank pairs (no full-covariance member) with ``0 < alpha < 1`` use the matrix determinant lemma
on ``alpha Sigma_q + (1 - alpha) Sigma_p``, a low-rank-plus-diagonal matrix of rank
``k_p + k_q``: ``O(d (k_p + k_q)^2)``. Other pairs that involve a low-rank member are densified
(``O(d^3)``, said in each docstring).

References:
  Gil, Alajaji & Linder, *Renyi divergence measures for commonly used univariate continuous
  distributions*, Inf. Sci. 249 (2013); Pardo, *Statistical Inference Based on Divergence
  Measures* (2006); Bhattacharyya (1943); Dowson & Landau, *The Frechet distance between
  multivariate normal distributions*, J. Multivar. Anal. 12 (1982); Givens & Shortt (1984).
"""

from __future__ import annotations

import functools
import math
from numbers import Real
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import Gaussian
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian, log_var_ratio
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.kl.registry import kl
from gkl_jax._src.kl.structured import diag_part, structure
from gkl_jax._src.linalg import HI, mm, solve_tril_tril, woodbury
from gkl_jax._src.numerics import align_ranks, phi

__all__ = ["bhattacharyya", "hellinger", "jeffreys", "renyi", "wasserstein2"]


def _check_alpha(fn: str, alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"{fn}: alpha must be a Python real number, got {type(alpha).__name__}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{fn}: alpha must be a finite number > 0, got {alpha}")
    return alpha


def _g(x: jax.Array, alpha: float) -> jax.Array:
    """``log(alpha + (1 - alpha) e^x) - (1 - alpha) x`` without cancellation.

    Where ``alpha + (1 - alpha) e^x <= 0`` (only possible for ``alpha > 1``) the log is
    ``-inf``, which makes the divergence ``+inf`` (the factor ``1 / (2 (1 - alpha))`` is < 0).
    A NaN ``x`` stays NaN.
    """
    arg = alpha * phi((alpha - 1.0) * x) + (1.0 - alpha) * phi(alpha * x)
    if alpha < 1:
        return jnp.log1p(arg)  # arg > -1 for every real x
    outside = arg <= -1.0
    return jnp.where(outside, -jnp.inf, jnp.log1p(jnp.where(outside, 0.0, arg)))


def _not_positive_definite(alpha: float, mu: jax.Array) -> jax.Array:
    """``Sigma_alpha`` is not positive definite: ``1 + (1 - alpha) mu <= 0`` for an eigenvalue
    ``1 + mu`` of ``Sigma_q^{-1} Sigma_p`` (only possible for ``alpha > 1``; NaN gives False)."""
    return jnp.any(1.0 + (1.0 - alpha) * mu <= 0, axis=-1)


def _tri(g: Any, batch: tuple[int, ...], d: int) -> tuple[jax.Array, jax.Array]:
    """``(mean, scale_tril)`` broadcast to ``batch``; low rank is densified (``O(d^3)``)."""
    g = g.to_full()
    return jnp.broadcast_to(g.mean, (*batch, d)), jnp.broadcast_to(g.scale_tril, (*batch, d, d))


def _spectral_terms(alpha: float, mu: jax.Array) -> jax.Array:
    """``g_alpha(log1p(mu))`` per eigenvalue ``1 + mu`` of ``M M^T``, ``M = L_q^{-1} L_p``."""
    return _g(jnp.log1p(mu), alpha)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _spectral_sum(alpha: float, e: jax.Array) -> jax.Array:
    """``sum_i g_alpha(log1p(mu_i))`` over the eigenvalues ``mu_i`` of the symmetric ``e``."""
    return jnp.sum(_spectral_terms(alpha, jnp.linalg.eigvalsh(e)), axis=-1)


@_spectral_sum.defjvp
def _spectral_sum_jvp(alpha, primals, tangents):
    (e,), (de,) = primals, tangents
    mu, v = jnp.linalg.eigh(e)
    value = jnp.sum(_spectral_terms(alpha, mu), axis=-1)
    # d/dmu g_alpha(log1p(mu)) = alpha (1 - alpha) mu / ((1 + (1 - alpha) mu)(1 + mu))
    deriv = alpha * (1.0 - alpha) * mu / ((1.0 + (1.0 - alpha) * mu) * (1.0 + mu))
    de_sym = 0.5 * (de + jnp.swapaxes(de, -1, -2))
    proj = jnp.einsum("...ji,...jk,...ki->...i", v, de_sym, v, precision=HI)
    return value, jnp.sum(deriv * proj, axis=-1)


def _renyi_tri(p: Any, q: Any, alpha: float, batch, d, dtype) -> tuple[jax.Array, jax.Array]:
    """``2 (1 - alpha) D_alpha`` split as (spectral part, mean part) for triangular bases."""
    mean_p, tril_p = _tri(p, batch, d)
    mean_q, tril_q = _tri(q, batch, d)
    x, (z,) = solve_tril_tril(tril_q, tril_p - tril_q, [(mean_p - mean_q)[..., None]])
    xt = jnp.swapaxes(x, -1, -2)
    e = x + xt + mm(x, xt)  # M M^T - I
    spectral = _spectral_sum(alpha, e)
    # mean part: z^T (alpha I + (1 - alpha) M M^T)^{-1} z = z^T (I + (1 - alpha) E)^{-1} z
    eye = jnp.eye(d, dtype=dtype).reshape((1,) * len(batch) + (d, d))
    chol = jnp.linalg.cholesky(eye + (1.0 - alpha) * e)
    w = lax.linalg.triangular_solve(chol, z, left_side=True, lower=True)
    maha = jnp.sum(jnp.square(w[..., 0]), axis=-1)
    if alpha > 1:  # Sigma_alpha may be indefinite: D_alpha = inf there (a NaN input stays NaN)
        mu = jnp.linalg.eigvalsh(lax.stop_gradient(e))
        maha = jnp.where(_not_positive_definite(alpha, mu), jnp.inf, maha)
    return spectral, maha


def _as_low_rank(g: Any) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """``(mean, factor or None, log of the diagonal part)`` of a diagonal or low-rank Gaussian."""
    view = structure(g)
    return view.mean, view.factor, diag_part(view).log_var


def _renyi_low_rank(p: Any, q: Any, alpha: float):
    """Low-rank pairs, ``0 < alpha < 1``: determinant lemma on ``Sigma_alpha`` (rank k_p + k_q)."""
    mean_p, w_p, ld_p = _as_low_rank(p)
    mean_q, w_q, ld_q = _as_low_rank(q)
    mean_p, mean_q, ld_p, ld_q = align_ranks(mean_p, mean_q, ld_p, ld_q)
    x = ld_p - ld_q
    spectral = jnp.sum(_g(x, alpha), axis=-1)  # diagonal parts, exact
    ld_a = ld_q + jnp.log1p((1.0 - alpha) * jnp.expm1(x))  # log(alpha psi_q + (1-alpha) psi_p)
    factors = []
    if w_p is not None:
        factors.append(math.sqrt(1.0 - alpha) * w_p)
        spectral = spectral - (1.0 - alpha) * woodbury(w_p, ld_p).log_det_cap
    if w_q is not None:
        factors.append(math.sqrt(alpha) * w_q)
        spectral = spectral - alpha * woodbury(w_q, ld_q).log_det_cap
    delta = mean_p - mean_q
    maha = jnp.sum(delta * delta * jnp.exp(-ld_a), axis=-1)
    if factors:
        factors = align_ranks(*factors)
        shape = jnp.broadcast_shapes(*(f.shape[:-1] for f in factors))
        w_a = jnp.concatenate([jnp.broadcast_to(f, (*shape, f.shape[-1])) for f in factors], -1)
        wb = woodbury(w_a, ld_a)
        spectral = spectral + wb.log_det_cap
        maha = maha - jnp.sum(jnp.square(mm(wb.u, delta[..., None])[..., 0]), axis=-1)
    return spectral, maha


# ``(spectral, maha)`` of a pair, dispatched on the types: register a new family's kernel here.
renyi_parts = Operation("renyi", arity=2)


@renyi_parts.register(Gaussian, Gaussian)
def _renyi_generic(p: Any, q: Any, alpha: float, batch, d, dtype):
    """Any pair through triangular factors (low-rank members densified)."""
    return _renyi_tri(p, q, alpha, batch, d, dtype)


@renyi_parts.register(DiagGaussian, DiagGaussian)
def _renyi_diag(p: DiagGaussian, q: DiagGaussian, alpha: float, batch, d, dtype):
    x = log_var_ratio(p, q)
    mean_p, mean_q, var_p, var_q = align_ranks(p.mean, q.mean, p.var, q.var)
    var_a = alpha * var_q + (1.0 - alpha) * var_p
    diff = mean_p - mean_q
    maha = jnp.sum(diff * diff / var_a, axis=-1)
    if alpha > 1:  # eigenvalues 1 + mu = var_p / var_q, mu = expm1(x)
        maha = jnp.where(_not_positive_definite(alpha, jnp.expm1(x)), jnp.inf, maha)
    return jnp.sum(_g(x, alpha), axis=-1), maha


@renyi_parts.register(LowRankGaussian, LowRankGaussian)
@renyi_parts.register(LowRankGaussian, DiagGaussian)
@renyi_parts.register(DiagGaussian, LowRankGaussian)
def _renyi_diag_low_rank(p: Any, q: Any, alpha: float, batch, d, dtype):
    """No full-covariance member: the determinant lemma for ``alpha < 1``, else densified."""
    if alpha < 1:
        return _renyi_low_rank(p, q, alpha)
    return _renyi_tri(p, q, alpha, batch, d, dtype)


def _renyi_parts(fn: str, p: Any, q: Any, alpha: float):
    """``(spectral, maha)`` with ``D_alpha = spectral / (2 (1 - alpha)) + alpha / 2 * maha``."""
    p, q, batch, d, dtype = checks.check_gaussian_pair(fn, p, q)
    spectral, maha = renyi_parts(p, q, alpha, batch, d, dtype)
    spectral, maha = align_ranks(spectral.astype(dtype), maha.astype(dtype))
    return jnp.broadcast_to(spectral, batch), jnp.broadcast_to(maha, batch)


@functools.partial(jax.jit, static_argnames="alpha")
def _renyi(p: Any, q: Any, alpha: float) -> jax.Array:
    spectral, maha = _renyi_parts("renyi", p, q, alpha)
    return spectral / (2.0 * (1.0 - alpha)) + 0.5 * alpha * maha


def renyi(p: Any, q: Any, *, alpha: float) -> Float[Array, "*#b"]:
    r"""Renyi divergence ``D_alpha(p || q) = log(int p^alpha q^(1 - alpha)) / (alpha - 1)``.

    For Gaussians, with ``Sigma_alpha = alpha Sigma_q + (1 - alpha) Sigma_p`` (Gil et al. 2013)::

        D_alpha = alpha / 2 * (mu_p - mu_q)^T Sigma_alpha^{-1} (mu_p - mu_q)
                  + log(det Sigma_alpha / (det Sigma_p^(1-alpha) det Sigma_q^alpha))
                    / (2 (1 - alpha))

    computed per eigenvalue with the cancellation-free ``g_alpha`` of the module docstring.
    ``alpha -> 1`` gives ``KL(p || q)`` (``alpha == 1`` returns :func:`gkl_jax.kl` exactly);
    ``alpha = 1/2`` gives twice the Bhattacharyya distance.

    Domain: ``alpha > 0``. For ``0 < alpha < 1`` the divergence is always finite. For
    ``alpha > 1`` it is finite only where ``Sigma_alpha`` is positive definite
    (``alpha / (alpha - 1) > `` every eigenvalue of ``Sigma_q^{-1} Sigma_p``) and ``+inf``
    elsewhere, which is returned as ``inf``.

    Cost: ``O(d)`` for diagonal pairs, ``O(d^3)`` (a blocked triangular solve and a symmetric
    eigen-decomposition) when a full covariance is involved, ``O(d (k_p + k_q)^2)`` for low-rank
    and diagonal pairs with ``alpha < 1``; low-rank pairs with ``alpha > 1`` are densified.

    Args:
      p: a gkl_jax Gaussian.
      q: a gkl_jax Gaussian with the same latent size (batch shapes broadcast).
      alpha: the order, a Python float ``> 0`` (static: one compilation per value).

    Returns:
      ``D_alpha(p || q)`` with the broadcast batch shape.

    Raises:
      ValueError: ``alpha`` is not a finite number ``> 0``; latent sizes differ; batch shapes do
        not broadcast. TypeError: ``alpha`` is not a real number, or an argument is not a
        gkl_jax Gaussian.

    References:
      Renyi (1961); Gil, Alajaji & Linder, Inf. Sci. 249 (2013), Table 2.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, renyi
      >>> p = DiagGaussian(jnp.array([1.0]), jnp.zeros(1))
      >>> q = DiagGaussian(jnp.zeros(1), jnp.zeros(1))
      >>> float(renyi(p, q, alpha=0.5))  # alpha / 2 * (mu_p - mu_q)^2 for equal variances
      0.25
    """
    alpha = _check_alpha("renyi", alpha)
    p, q, *_ = checks.check_gaussian_pair("renyi", p, q)
    if alpha == 1.0:
        return kl(p, q)
    return _renyi(p, q, alpha)


def bhattacharyya(p: Any, q: Any) -> Float[Array, "*#b"]:
    r"""Bhattacharyya distance ``D_B(p, q) = -log int sqrt(p q)`` (symmetric, ``>= 0``).

    With ``Sigma = (Sigma_p + Sigma_q) / 2``::

        D_B = 1/8 (mu_p - mu_q)^T Sigma^{-1} (mu_p - mu_q)
              + 1/2 log(det Sigma / sqrt(det Sigma_p det Sigma_q))

    i.e. half the Renyi divergence of order 1/2, and computed as such (exact for nearly identical
    pairs; ``O(d (k_p + k_q)^2)`` for low-rank pairs).

    Args:
      p: a gkl_jax Gaussian.
      q: a gkl_jax Gaussian with the same latent size.

    Returns:
      ``D_B(p, q)`` with the broadcast batch shape.

    Raises:
      ValueError, TypeError: as :func:`renyi`.

    References:
      Bhattacharyya (1943); Kailath, IEEE Trans. Commun. Technol. 15 (1967).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, bhattacharyya
      >>> p = DiagGaussian(jnp.array([2.0]), jnp.zeros(1))
      >>> float(bhattacharyya(p, DiagGaussian(jnp.zeros(1), jnp.zeros(1))))  # (2)^2 / 8
      0.5
    """
    return _bhattacharyya("bhattacharyya", p, q)


def _bhattacharyya(fn: str, p: Any, q: Any) -> jax.Array:
    p, q, *_ = checks.check_gaussian_pair(fn, p, q)  # errors name the public function
    return 0.5 * _renyi(p, q, 0.5)


def hellinger(p: Any, q: Any) -> Float[Array, "*#b"]:
    r"""Squared Hellinger distance ``H^2(p, q) = 1 - int sqrt(p q) = 1 - exp(-D_B)``, in ``[0, 1]``.

    This is the convention ``H^2 = (1/2) int (sqrt p - sqrt q)^2``; it is computed as
    ``-expm1(-D_B)`` from :func:`bhattacharyya`, so nearly identical pairs keep their digits.
    Take ``jnp.sqrt`` for the Hellinger distance itself.

    Args:
      p: a gkl_jax Gaussian.
      q: a gkl_jax Gaussian with the same latent size.

    Returns:
      ``H^2(p, q)`` with the broadcast batch shape.

    Raises:
      ValueError, TypeError: as :func:`renyi`.

    References:
      Hellinger (1909); Pardo (2006), Sec. 1.2.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, hellinger
      >>> p = DiagGaussian(jnp.zeros(1), jnp.zeros(1))
      >>> float(hellinger(p, p))
      0.0
    """
    return -jnp.expm1(-_bhattacharyya("hellinger", p, q))


def jeffreys(p: Any, q: Any) -> Float[Array, "*#b"]:
    r"""Jeffreys divergence (symmetrized KL) ``J(p, q) = KL(p || q) + KL(q || p)``.

    For Gaussians the log-determinants cancel::

        J = 1/2 [tr(Sigma_q^{-1} Sigma_p) + tr(Sigma_p^{-1} Sigma_q) - 2 d
                 + (mu_p - mu_q)^T (Sigma_p^{-1} + Sigma_q^{-1}) (mu_p - mu_q)]

    computed as the sum of the two exact :func:`gkl_jax.kl` values (every pair type).

    Args:
      p: a gkl_jax Gaussian.
      q: a gkl_jax Gaussian with the same latent size.

    Returns:
      ``J(p, q)`` with the broadcast batch shape.

    Raises:
      TypeError: no closed form for the pair. ValueError: shapes do not fit.

    References:
      Jeffreys, Proc. R. Soc. A 186 (1946).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, jeffreys
      >>> p = DiagGaussian(jnp.array([1.0]), jnp.zeros(1))
      >>> float(jeffreys(p, DiagGaussian(jnp.zeros(1), jnp.zeros(1))))
      1.0
    """
    p, q, *_ = checks.check_gaussian_pair("jeffreys", p, q)
    return kl(p, q) + kl(q, p)


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


@wasserstein2_squared.register(Gaussian, Gaussian)
def _w2_generic(p: Any, q: Any, batch, d, dtype) -> jax.Array:
    mean_p, tril_p = _tri(p, batch, d)
    mean_q, tril_q = _tri(q, batch, d)
    # Bures term: min over orthogonal R of ||L_p - L_q R||_F^2, R = V U^T from the SVD of
    # L_p^T L_q = U S V^T (equals tr S_p + tr S_q - 2 tr (S_p^1/2 S_q S_p^1/2)^1/2). The
    # optimal R is held constant for the gradient (envelope theorem): no SVD derivative.
    u, _, vt = jnp.linalg.svd(mm(jnp.swapaxes(tril_p, -1, -2), tril_q))
    r = lax.stop_gradient(mm(jnp.swapaxes(vt, -1, -2), jnp.swapaxes(u, -1, -2)))
    resid = tril_p - mm(tril_q, r)
    return jnp.sum(jnp.square(mean_p - mean_q), axis=-1) + jnp.sum(jnp.square(resid), axis=(-2, -1))


@functools.partial(jax.jit, static_argnames="squared")
def _wasserstein2(p: Any, q: Any, squared: bool) -> jax.Array:
    p, q, batch, d, dtype = checks.check_gaussian_pair("wasserstein2", p, q)
    w2 = wasserstein2_squared(p, q, batch, d, dtype)
    return w2 if squared else _sqrt0(w2)


@jax.custom_jvp
def _sqrt0(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at 0 is 0 (a subgradient), not inf."""
    return jnp.sqrt(x)


@_sqrt0.defjvp
def _sqrt0_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = jnp.sqrt(x)
    return y, dx * jnp.where(x == 0, 0.0, 0.5 / jnp.where(x == 0, 1.0, y))


def wasserstein2(p: Any, q: Any, *, squared: bool = False) -> Float[Array, "*#b"]:
    r"""2-Wasserstein distance between Gaussians (symmetric; a metric).

    ::

        W2^2 = ||mu_p - mu_q||^2 + tr Sigma_p + tr Sigma_q
               - 2 tr (Sigma_p^{1/2} Sigma_q Sigma_p^{1/2})^{1/2}

    Diagonal pairs: ``W2^2 = ||mu_p - mu_q||^2 + ||std_p - std_q||^2``, with ``std_p - std_q``
    formed without cancellation. Otherwise the matrix square root is replaced by the equivalent
    orthogonal Procrustes form ``min_R ||L_p - L_q R||_F^2`` (``R`` from one SVD of
    ``L_p^T L_q``), a sum of squares rather than a difference of traces; its relative error for
    nearly identical pairs is ``~eps / perturbation`` (the trace form's is
    ``~eps / perturbation^2``). Low-rank members are densified (``O(d^3)``).

    Args:
      p: a gkl_jax Gaussian.
      q: a gkl_jax Gaussian with the same latent size.
      squared: return ``W2^2`` (smooth everywhere) instead of ``W2``. ``W2`` is not
        differentiable at ``p == q`` (a cone); its gradient there is taken as 0, a valid
        subgradient, so training through ``W2`` stays finite.

    Returns:
      ``W2(p, q)`` (or its square) with the broadcast batch shape.

    Raises:
      ValueError, TypeError: as :func:`renyi`.

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

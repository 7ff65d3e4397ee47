"""distrax <-> gkl_jax (imported only when a distrax object is converted, or one is asked for).

distrax's multivariate normals are ``loc + S eps`` for a linear bijector ``S`` (the scale):
``Sigma = S S^T``. A diagonal ``S`` is a std, a lower-triangular one a Cholesky factor (kept as
it is); other scales (upper-triangular, ``diag(d) + U V^T``, a general matrix) go through
:meth:`~gkl_jax.FullGaussian.from_scale`, which is exact for any square root.
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp

from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.interop_hook import converters
from gkl_jax._src.linalg import diag_embed, mm
from gkl_jax._src.numerics import align_ranks
from gkl_jax.interop._core import as_gaussian, independent, scalar_event

__all__ = ["from_gaussian"]


@converters.register(distrax.Normal)
def _normal(obj: Any) -> DiagGaussian:
    return scalar_event(obj.loc, obj.scale, "std")


@converters.register(distrax.LogStddevNormal)
def _log_stddev_normal(obj: Any) -> DiagGaussian:
    # log var = 2 log scale: doubling is exact, so the log parametrization is kept
    return scalar_event(obj.loc, 2.0 * obj.log_scale, "log_var")


@converters.register(distrax.Independent)
def _independent(obj: Any) -> Any:
    base = obj.distribution
    n = len(base.batch_shape) - len(obj.batch_shape)
    return independent(as_gaussian(base), n, f"distrax.Independent({type(base).__name__})")


def _from_scale(loc: Any, scale: Any) -> Any:
    """``N(loc, S S^T)`` for distrax's linear bijector ``S``, by its type."""
    if isinstance(scale, distrax.DiagLinear):
        return DiagGaussian(loc, std=jnp.abs(scale.diag))  # |d|: d d^T does not see the sign
    if isinstance(scale, distrax.TriangularLinear) and scale.is_lower:
        return FullGaussian(loc, scale.matrix)
    with jax.numpy_rank_promotion("allow"):  # a bijector's matrix may broadcast by rank
        matrix = scale.matrix
    return FullGaussian.from_scale(loc, matrix)


@converters.register(distrax.MultivariateNormalFromBijector)
def _mvn_from_bijector(obj: Any) -> Any:
    return _from_scale(obj.loc, obj.scale)


@converters.register(distrax.MultivariateNormalDiag)
def _mvn_diag(obj: Any) -> DiagGaussian:
    return DiagGaussian(obj.loc, std=jnp.abs(obj.scale_diag))


@converters.register(distrax.MultivariateNormalTri)  # and MultivariateNormalFullCovariance
def _mvn_tri(obj: Any) -> FullGaussian:
    if obj.is_lower:
        return FullGaussian(obj.loc, obj.scale_tri)
    return FullGaussian.from_scale(obj.loc, obj.scale_tri)  # upper-triangular U: Sigma = U U^T


@converters.register(distrax.MultivariateNormalDiagPlusLowRank)
def _mvn_diag_plus_low_rank(obj: Any) -> Any:
    # The scale S = diag(d) + U V^T, Sigma = S S^T: not of the form W W^T + diag in general
    # (Sigma - D^2 = [D V, U] [[0, I], [I, V^T V]] [D V, U]^T is indefinite), so the exact
    # conversion is the FullGaussian of that square root; a diagonal scale stays diagonal.
    if isinstance(obj.scale, distrax.DiagLinear):
        return DiagGaussian(obj.loc, std=jnp.abs(obj.scale_diag))
    u, v = obj.scale_u_matrix, obj.scale_v_matrix
    scale = diag_embed(obj.scale_diag) + mm(u, jnp.swapaxes(v, -1, -2))
    return FullGaussian.from_scale(obj.loc, scale)


# gkl_jax -> distrax
from_gaussian = Operation(
    "to_distrax",
    arity=1,
    missing=lambda t: f"to_distrax: no distrax counterpart for {t.__name__}",
)


@from_gaussian.register(DiagGaussian)
def _to_diag(g: DiagGaussian) -> Any:
    if g.param == "log_var":  # distrax keeps a log-scale: log_var / 2 is exact
        mean, log_scale = align_ranks(g.mean, 0.5 * g.spread)
        return distrax.Independent(distrax.LogStddevNormal(mean, log_scale), 1)
    return distrax.MultivariateNormalDiag(*align_ranks(g.mean, g.std))


@from_gaussian.register(FullGaussian)
def _to_full(g: FullGaussian) -> Any:
    mean, tril = align_ranks(g.mean[..., None], g.scale_tril)
    return distrax.MultivariateNormalTri(mean[..., 0], tril, is_lower=True)


@from_gaussian.register(LowRankGaussian)
def _to_low_rank(g: LowRankGaussian) -> Any:
    # W W^T + Psi = S S^T for S = Psi^1/2 (I + X B X^T) with X = Psi^-1/2 W and
    # B = (I + (I + X^T X)^1/2)^-1: I + X B X^T is the symmetric square root of I + X X^T (on
    # X's SVD, s^2 / (1 + sqrt(1 + s^2)) = sqrt(1 + s^2) - 1). So S = diag(s) + (W B) X^T, rank k.
    s = jnp.exp(0.5 * g.log_diag)
    factor, s_col = align_ranks(g.factor, s[..., None])
    x = factor / s_col
    lam, vec = jnp.linalg.eigh(mm(jnp.swapaxes(x, -1, -2), x))
    f = 1.0 / (1.0 + jnp.sqrt(1.0 + jnp.maximum(lam, 0.0)))  # no cancellation at small lam
    b = mm(vec * f[..., None, :], jnp.swapaxes(vec, -1, -2))
    mean, s, u, x = align_ranks(g.mean[..., None], s[..., None], mm(g.factor, b), x)
    return distrax.MultivariateNormalDiagPlusLowRank(mean[..., 0], s[..., 0], u, x)

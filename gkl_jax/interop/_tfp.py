"""TensorFlow Probability (JAX substrate) <-> gkl_jax (imported only when a TFP object is
converted, or one is asked for).

TFP's multivariate normals are ``MultivariateNormalLinearOperator(loc, scale)``, ``Sigma = S S^T``;
the conversion reads the scale operator: a diagonal is a std, a lower-triangular operator a
Cholesky factor (kept as they are), anything else (``MultivariateNormalDiagPlusLowRank``'s
``diag(d) + U diag(m) U^T``, a full matrix, a Kronecker product, ...) is densified and goes through
:meth:`~gkl_jax.FullGaussian.from_scale`, exact for any square root.
``MultivariateNormalDiagPlusLowRankCovariance`` is a covariance ``diag(c) + W W^T``: a
:class:`~gkl_jax.LowRankGaussian`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.interop_hook import converters
from gkl_jax._src.numerics import align_ranks
from gkl_jax.interop._core import as_gaussian, independent, scalar_event

__all__ = ["from_gaussian"]

tfd = tfp.distributions
_linalg = tfp.tf2jax.linalg


def _loc(obj: Any, d: int) -> Any:
    """``obj.loc``, or zeros of size ``d`` when TFP was given ``loc=None``."""
    loc = obj.loc
    return jnp.zeros((d,), obj.dtype) if loc is None else loc


@converters.register(tfd.Normal)
def _normal(obj: Any) -> DiagGaussian:
    return scalar_event(obj.loc, obj.scale, "std")


@converters.register(tfd.Independent)
def _independent(obj: Any) -> Any:
    base = obj.distribution
    n = len(base.batch_shape) - len(obj.batch_shape)
    return independent(as_gaussian(base), n, f"tfd.Independent({type(base).__name__})")


@converters.register(tfd.MultivariateNormalLinearOperator)
def _mvn_linear_operator(obj: Any) -> Any:
    # covers MultivariateNormalDiag, ...TriL, ...FullCovariance (its Cholesky factor, as TFP
    # stores it) and ...DiagPlusLowRank
    scale = obj.scale
    d = int(scale.range_dimension)
    loc = _loc(obj, d)
    if isinstance(scale, _linalg.LinearOperatorIdentity):
        return DiagGaussian(loc, std=jnp.ones((d,), obj.dtype))
    if isinstance(scale, _linalg.LinearOperatorScaledIdentity):
        mult = jnp.abs(jnp.asarray(scale.multiplier))
        return DiagGaussian(loc, std=jnp.broadcast_to(mult[..., None], (*mult.shape, d)))
    if isinstance(scale, _linalg.LinearOperatorDiag):
        return DiagGaussian(loc, std=jnp.abs(scale.diag))  # |d|: d d^T does not see the sign
    if isinstance(scale, _linalg.LinearOperatorLowerTriangular):
        return FullGaussian(loc, scale.tril)
    with jax.numpy_rank_promotion("allow"):  # TFP's to_dense broadcasts by rank promotion
        dense = scale.to_dense()
    return FullGaussian.from_scale(loc, dense)


@converters.register(tfd.MultivariateNormalDiagPlusLowRankCovariance)
def _mvn_diag_plus_low_rank_cov(obj: Any) -> LowRankGaussian:
    factor = obj.cov_perturb_factor
    loc = _loc(obj, factor.shape[-2])
    return LowRankGaussian(loc, factor, jnp.log(obj.cov_diag_factor))


# gkl_jax -> TFP
from_gaussian = Operation(
    "to_tfp", arity=1, missing=lambda t: f"to_tfp: no TFP counterpart for {t.__name__}"
)


@from_gaussian.register(DiagGaussian)
def _to_diag(g: DiagGaussian) -> Any:
    return tfd.MultivariateNormalDiag(*align_ranks(g.mean, g.std))


@from_gaussian.register(FullGaussian)
def _to_full(g: FullGaussian) -> Any:
    mean, tril = align_ranks(g.mean[..., None], g.scale_tril)
    return tfd.MultivariateNormalTriL(mean[..., 0], tril)


@from_gaussian.register(LowRankGaussian)
def _to_low_rank(g: LowRankGaussian) -> Any:
    mean, diag, factor = align_ranks(g.mean[..., None], g.log_diag[..., None], g.factor)
    return tfd.MultivariateNormalDiagPlusLowRankCovariance(
        mean[..., 0], jnp.exp(diag[..., 0]), factor
    )

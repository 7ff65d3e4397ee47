"""numpyro <-> gkl_jax (imported only when a numpyro object is converted, or one is asked for).

numpyro's ``Normal(loc, scale).to_event(1)`` is a diagonal Gaussian with a std,
``MultivariateNormal`` stores its Cholesky factor ``scale_tril`` (whatever it was given:
covariance, precision or factor), and ``LowRankMultivariateNormal(loc, cov_factor, cov_diag)``
is ``W W^T + diag(cov_diag)``, i.e. ``LowRankGaussian(loc, cov_factor, log(cov_diag))``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpyro.distributions as nd

from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.interop_hook import converters
from gkl_jax._src.numerics import align_ranks
from gkl_jax.interop._core import as_gaussian, expand, independent, scalar_event

__all__ = ["from_gaussian"]


@converters.register(nd.Normal)
def _normal(obj: Any) -> DiagGaussian:
    return scalar_event(obj.loc, obj.scale, "std")


@converters.register(nd.Independent)
def _independent(obj: Any) -> Any:
    base = obj.base_dist
    n = len(base.batch_shape) - len(obj.batch_shape)
    return independent(as_gaussian(base), n, f"numpyro Independent({type(base).__name__})")


@converters.register(nd.ExpandedDistribution)
def _expanded(obj: Any) -> Any:
    return expand(as_gaussian(obj.base_dist), tuple(obj.batch_shape))


@converters.register(nd.MultivariateNormal)
def _mvn(obj: Any) -> FullGaussian:
    return FullGaussian(obj.loc, obj.scale_tril)


@converters.register(nd.LowRankMultivariateNormal)
def _low_rank_mvn(obj: Any) -> LowRankGaussian:
    return LowRankGaussian(obj.loc, obj.cov_factor, jnp.log(obj.cov_diag))


# gkl_jax -> numpyro
from_gaussian = Operation(
    "to_numpyro",
    arity=1,
    missing=lambda t: f"to_numpyro: no numpyro counterpart for {t.__name__}",
)


@from_gaussian.register(DiagGaussian)
def _to_diag(g: DiagGaussian) -> Any:
    return nd.Normal(*align_ranks(g.mean, g.std)).to_event(1)


@from_gaussian.register(FullGaussian)
def _to_full(g: FullGaussian) -> Any:
    mean, tril = align_ranks(g.mean[..., None], g.scale_tril)
    return nd.MultivariateNormal(mean[..., 0], scale_tril=tril)


@from_gaussian.register(LowRankGaussian)
def _to_low_rank(g: LowRankGaussian) -> Any:
    mean, diag, factor = align_ranks(g.mean[..., None], g.log_diag[..., None], g.factor)
    return nd.LowRankMultivariateNormal(mean[..., 0], factor, jnp.exp(diag[..., 0]))

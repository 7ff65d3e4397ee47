"""``MixturePrior``: a learned mixture-of-Gaussians prior for a VAE's latent space."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.mixture import GaussianMixture

__all__ = ["MixturePrior"]


class MixturePrior(nnx.Module):
    r"""A learned prior ``sum_k softmax(logits)_k N(mean_k, diag(exp(log_var_k)))``.

    The mixture logits ``(K,)``, component means ``(K, d)`` and log-variances ``(K, d)`` are
    ``nnx.Param``, so an optimizer built with ``wrt=nnx.Param`` trains them with the rest of the
    model (state paths ``prior/logits``, ``prior/mean``, ``prior/log_var``). There is no closed
    form for ``KL(q || mixture)``: :class:`~gkl_jax.nnx.VAE` estimates it with
    :func:`gkl_jax.kl_mc`, which returns the estimate and its standard error.

    Args:
      latent_dim: latent size ``d``.
      num_components: number of components ``K``.
      init_scale: the component means start as ``init_scale * N(0, I)`` draws; the weights start
        equal and the variances at 1.
      rngs: the ``nnx.Rngs`` the means are drawn from (its ``params`` stream).

    Call: ``prior()`` returns the :class:`~gkl_jax.GaussianMixture` (batch shape ``()``).

    Example:
      >>> from flax import nnx
      >>> from gkl_jax.nnx import MixturePrior
      >>> prior = MixturePrior(2, 4, rngs=nnx.Rngs(0))
      >>> mix = prior()
      >>> mix.num_components, mix.event_size
      (4, 2)
    """

    def __init__(
        self,
        latent_dim: int,
        num_components: int,
        *,
        init_scale: float | int = 1.0,
        rngs: nnx.Rngs,
    ):
        if num_components < 1 or latent_dim < 1:
            raise ValueError(
                "MixturePrior: latent_dim and num_components must be >= 1, got "
                f"{latent_dim} and {num_components}"
            )
        shape = (num_components, latent_dim)
        self.logits = nnx.Param(jnp.zeros((num_components,), jnp.float32))
        self.mean = nnx.Param(init_scale * jax.random.normal(rngs.params(), shape, jnp.float32))
        self.log_var = nnx.Param(jnp.zeros(shape, jnp.float32))

    @property
    def event_size(self) -> int:
        return self.mean.shape[-1]

    def __call__(self) -> GaussianMixture:
        """The mixture, built from the current parameters."""
        return GaussianMixture(self.logits[...], DiagGaussian(self.mean[...], self.log_var[...]))

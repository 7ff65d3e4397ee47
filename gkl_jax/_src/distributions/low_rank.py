r"""Low-rank-plus-diagonal Gaussians, handled with Woodbury and the matrix determinant lemma.

``LowRankGaussian(mean, factor, log_diag)`` is ``N(mean, W W^T + Psi)`` with ``W = factor`` of
shape ``(*batch, d, k)`` and ``Psi = diag(exp(log_diag))``. With the ``k x k`` capacitance
``C = I_k + W^T Psi^{-1} W = L_C L_C^T``,

.. math::

    \Sigma^{-1} = \Psi^{-1} - U^T U, \quad U = L_C^{-1} W^T \Psi^{-1}, \qquad
    \log\det\Sigma = \textstyle\sum_i \log\psi_i + \log\det C ,

so densities and divergences cost ``O(d k^2 + k^3)`` time and ``O(d k)`` memory; no ``d x d``
matrix is ever formed (except by the explicit :meth:`LowRankGaussian.covariance` and
:meth:`LowRankGaussian.to_full`).

Reference: Woodbury (1950); Harville, *Matrix Algebra From a Statistician's Perspective* (1997),
Thm. 18.1.1 (determinant lemma).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import Gaussian, arg_name, array_field, broadcast_batch
from gkl_jax._src.distributions.diag import Spread, broadcast_latent
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.linalg import Woodbury, cholesky, diag_embed, mm, woodbury
from gkl_jax._src.numerics import align_ranks, as_float_arrays

__all__ = ["LowRankGaussian"]


class LowRankGaussian(Gaussian):
    r"""Gaussian ``N(mean, W W^T + diag(exp(log_diag)))`` with a ``(d, k)`` factor ``W``.

    Used for SWAG / Laplace posteriors and factor-analysis latents. Log-density, entropy and every
    KL and divergence against other gkl_jax Gaussians cost ``O(d k^2 + k^3)`` (through the
    ``k x k`` capacitance matrix); nothing is densified.

    Args:
      mean: ``(*batch, d)`` means.
      factor: ``(*batch, d, k)`` low-rank factor ``W`` (``k`` may be 0).
      log_diag: ``(*batch, d)`` log of the diagonal part ``Psi``; a scalar or a size-1 latent
        axis (``sigma^2 I``, probabilistic PCA) is broadcast along the latent axis, as
        :class:`~gkl_jax.DiagGaussian` broadcasts an isotropic spread.

    Raises:
      TypeError: a parameter is not a floating-point array.
      ValueError: the factor has fewer than two axes, its row count differs from ``d``, or the
        batch shapes do not broadcast.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import LowRankGaussian
      >>> q = LowRankGaussian(jnp.zeros(4096), jnp.ones((4096, 16)) * 0.01, jnp.zeros(4096))
      >>> q.rank, q.event_size
      (16, 4096)
      >>> q.log_prob(jnp.zeros(4096)).shape
      ()
    """

    mean: Float[Array, "*#b d"] = array_field(trailing_axes=1)
    factor: Float[Array, "*#b d k"] = array_field(trailing_axes=2)
    log_diag: Float[Array, "*#b d"] = array_field(trailing_axes=1)

    def __init__(
        self,
        mean: Float[ArrayLike, "*#b d"],
        factor: Float[ArrayLike, "*#b d k"],
        log_diag: Spread,
    ):
        fn = self._fn_name()
        names = ("mean", "factor", "log_diag")
        mean, factor, log_diag = as_float_arrays(fn, names, (mean, factor, log_diag))
        log_diag = broadcast_latent(log_diag, mean)
        checks.check_event_shapes(fn, ("mean", "log_diag"), (mean.shape, log_diag.shape))
        checks.check_matrix_shapes(fn, "mean", mean.shape, "factor", factor.shape, square=False)
        checks.check_matrix_shapes(
            fn, "log_diag", log_diag.shape, "factor", factor.shape, square=False
        )
        self.mean = mean
        self.factor = factor
        self.log_diag = log_diag
        self.check_values(fn)

    def _check_values(self, fn: str, name: str) -> None:
        """Every parameter finite (any real ``factor`` and ``log_diag`` is valid)."""
        for field in ("mean", "factor", "log_diag"):
            checks.check_finite(fn, arg_name(name, field), getattr(self, field))

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [*super()._repr_items(), ("rank", self.rank)]

    # shapes
    @property
    def event_size(self) -> int:
        return self.mean.shape[-1]

    @property
    def rank(self) -> int:
        return self.factor.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return broadcast_batch(
            self.mean.shape[:-1], self.factor.shape[:-2], self.log_diag.shape[:-1]
        )

    @property
    def dtype(self) -> Any:
        return self.mean.dtype

    # structure
    def woodbury(self) -> Woodbury:
        """The capacitance factorization (see :func:`woodbury`)."""
        return woodbury(self.factor, self.log_diag)

    def log_det_cov(self) -> Float[Array, "*#b"]:
        """``log det Sigma = sum(log_diag) + log det C`` by the matrix determinant lemma."""
        log_det = jnp.sum(self.log_diag, axis=-1)
        if self.rank:
            log_det, cap = align_ranks(log_det, self.woodbury().log_det_cap)
            log_det = log_det + cap
        return jnp.broadcast_to(log_det, self.batch_shape)

    def covariance(self) -> Float[Array, "*#b d d"]:
        """The dense ``d x d`` covariance (``O(d^2 k)``; for inspection and tests)."""
        w = self.factor
        dense = mm(w, jnp.swapaxes(w, -1, -2))
        dense, diag = align_ranks(dense, diag_embed(jnp.exp(self.log_diag)))
        return dense + diag

    def to_full(self) -> FullGaussian:
        """The same distribution as a :class:`FullGaussian` (dense Cholesky, ``O(d^3)``)."""
        batch, d = self.batch_shape, self.event_size
        cov = jnp.broadcast_to(self.covariance(), (*batch, d, d))
        mean = jnp.broadcast_to(self.mean, (*batch, d))
        return FullGaussian(mean, cholesky(cov))

    # distribution methods
    def log_prob(self, x: Float[ArrayLike, "*#s d"]) -> Float[Array, "*#s"]:
        """Log-density, with ``r^T Sigma^{-1} r = ||r / sqrt(psi)||^2 - ||U r||^2`` (Woodbury).

        Args:
          x: ``(*sample, d)`` points; leading axes broadcast against the batch shape.

        Returns:
          The log-density, with the broadcast leading shape.

        Raises:
          TypeError: ``x`` is not a floating-point array. ValueError: its latent size differs or
            its batch axes do not broadcast against ``mean``, ``log_diag`` and ``factor``.
        """
        fn = "LowRankGaussian.log_prob"
        (x,) = as_float_arrays(fn, ("x",), (x,))
        checks.check_event_shapes(
            fn, ("x", "mean", "log_diag"), (x.shape, self.mean.shape, self.log_diag.shape)
        )
        checks.check_matrix_shapes(fn, "x", x.shape, "factor", self.factor.shape, square=False)
        x, mean, log_diag = align_ranks(x, self.mean, self.log_diag)
        r = x - mean
        maha = jnp.sum(r * r * jnp.exp(-log_diag), axis=-1)
        if self.rank:
            u, r_ = align_ranks(self.woodbury().u, r[..., None, :])
            ur = jnp.sum(u * r_, axis=-1)
            maha = maha - jnp.sum(ur * ur, axis=-1)
        return self._log_density(maha)

    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> Float[Array, "..."]:
        """Reparameterized samples ``mean + W eps_k + sqrt(psi) eps_d``, ``O(d k)`` each.

        ``sample_shape``: a tuple of non-negative ints, or an int ``n`` meaning ``(n,)``.

        Raises:
          TypeError: ``key`` is not a PRNG key, or ``sample_shape`` is not an int or ints.
          ValueError: a negative ``sample_shape`` entry.
        """
        sample_shape = checks.sample_args("LowRankGaussian.sample", key, sample_shape)
        key_k, key_d = jax.random.split(key)
        lead = (*sample_shape, *self.batch_shape)
        eps_d = jax.random.normal(key_d, (*lead, self.event_size), self.dtype)
        eps_k = jax.random.normal(key_k, (*lead, self.rank), self.dtype)
        mean, log_diag, eps_d = align_ranks(self.mean, self.log_diag, eps_d)
        out = mean + jnp.exp(0.5 * log_diag) * eps_d
        if self.rank:
            w, e = align_ranks(self.factor, eps_k[..., None, :])
            out = out + jnp.sum(w * e, axis=-1)
        return out

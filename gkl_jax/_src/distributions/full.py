"""Full-covariance Gaussians stored by their Cholesky factor.

``FullGaussian(mean, scale_tril)`` is ``N(mean, L L^T)`` with ``L = scale_tril`` lower triangular
with a positive diagonal. Everything (KL, log-density, sampling, entropy) works on ``L``
directly; no covariance matrix is inverted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import Gaussian, broadcast_batch
from gkl_jax._src.linalg import mm, solve_tril, whiten
from gkl_jax._src.numerics import align_ranks, as_float_arrays

__all__ = ["FullGaussian"]


def _diag(mat: jax.Array) -> jax.Array:
    return jnp.diagonal(mat, axis1=-2, axis2=-1)


class FullGaussian(Gaussian):
    r"""Gaussian ``N(mean, L L^T)`` with a full covariance given by its Cholesky factor ``L``.

    The factor is kept as given: :func:`gkl_jax.kl` between two full Gaussians works on the two
    factors (``M = L_q^{-1} L_p``) and is exact even for nearly identical pairs.

    Args:
      mean: ``(*batch, d)`` means.
      scale_tril: ``(*batch, d, d)`` lower-triangular factors with a positive diagonal; the
        strictly upper triangle is ignored (set to zero). Batch axes broadcast against ``mean``'s.

    Raises:
      TypeError: a parameter is not a floating-point array.
      ValueError: ``scale_tril`` is not square, its size differs from ``mean``'s, or the batch
        shapes do not broadcast.

    The checked mode (:func:`gkl_jax.checked`) reports non-finite entries and a diagonal that is
    not positive.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import FullGaussian
      >>> p = FullGaussian(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.5, 2.0]]))
      >>> p.covariance()
      Array([[1.  , 0.5 ],
             [0.5 , 4.25]], dtype=float32)
      >>> p.sample(jax.random.key(0), (3,)).shape
      (3, 2)
    """

    mean: Float[Array, "*#b d"]
    scale_tril: Float[Array, "*#b d d"]

    def __init__(self, mean: Float[ArrayLike, "*#b d"], scale_tril: Float[ArrayLike, "*#b d d"]):
        fn = self._fn_name()
        names = ("mean", "scale_tril")
        mean, tril = as_float_arrays(fn, names, (mean, scale_tril))
        checks.check_matrix_shapes(fn, "mean", mean.shape, "scale_tril", tril.shape)
        checks.check_finite(fn, "mean", mean)
        checks.check_finite(fn, "scale_tril", tril)
        checks.check_positive(fn, "diagonal of scale_tril", _diag(tril))
        self.mean = mean
        self.scale_tril = jnp.tril(tril)

    @classmethod
    def from_cov(
        cls, mean: Float[ArrayLike, "*#b d"], cov: Float[ArrayLike, "*#b d d"]
    ) -> FullGaussian:
        """``N(mean, cov)``, factored by Cholesky (only the lower triangle of ``cov`` is read).

        A covariance that is not positive definite gives a NaN factor; the checked mode reports
        it (``FullGaussian.from_cov: argument 'cov' is not symmetric positive definite ...``).

        Example:
          >>> import jax.numpy as jnp
          >>> from gkl_jax import FullGaussian
          >>> FullGaussian.from_cov(jnp.zeros(2), jnp.array([[4.0, 2.0], [2.0, 2.0]])).scale_tril
          Array([[2., 0.],
                 [1., 1.]], dtype=float32)
        """
        fn = f"{cls.__name__}.from_cov"
        mean, cov = as_float_arrays(fn, ("mean", "cov"), (mean, cov))
        checks.check_matrix_shapes(fn, "mean", mean.shape, "cov", cov.shape)
        checks.check_finite(fn, "mean", mean)
        checks.check_finite(fn, "cov", cov)
        tril = jnp.linalg.cholesky(jnp.tril(cov) + jnp.swapaxes(jnp.tril(cov, -1), -1, -2))
        checks.check_cholesky(fn, "cov", tril)
        return cls(mean, tril)

    @classmethod
    def from_precision(
        cls, mean: Float[ArrayLike, "*#b d"], precision: Float[ArrayLike, "*#b d d"]
    ) -> FullGaussian:
        """``N(mean, precision^{-1})`` without inverting the precision matrix.

        With ``J`` the reversal permutation, ``J P J = K K^T`` (Cholesky) gives
        ``P^{-1} = L L^T`` for the lower-triangular ``L = J K^{-T} J``: one Cholesky factorization
        and one triangular inverse. Only the lower triangle of ``precision`` is read.

        Example:
          >>> import jax.numpy as jnp
          >>> from gkl_jax import FullGaussian
          >>> p = FullGaussian.from_precision(jnp.zeros(2), jnp.array([[2.0, -1.0], [-1.0, 2.0]]))
          >>> p.covariance() * 3
          Array([[2., 1.],
                 [1., 2.]], dtype=float32)
        """
        fn = f"{cls.__name__}.from_precision"
        mean, prec = as_float_arrays(fn, ("mean", "precision"), (mean, precision))
        checks.check_matrix_shapes(fn, "mean", mean.shape, "precision", prec.shape)
        checks.check_finite(fn, "precision", prec)
        prec = jnp.tril(prec) + jnp.swapaxes(jnp.tril(prec, -1), -1, -2)
        k = jnp.linalg.cholesky(jnp.flip(prec, (-2, -1)))
        checks.check_cholesky(fn, "precision", k)
        eye = jnp.broadcast_to(jnp.eye(k.shape[-1], dtype=k.dtype), k.shape)
        k_inv = solve_tril(k, eye)
        tril = jnp.flip(jnp.swapaxes(jnp.tril(k_inv), -1, -2), (-2, -1))
        return cls(mean, tril)

    # shapes
    @property
    def event_size(self) -> int:
        return self.mean.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return broadcast_batch(self.mean.shape[:-1], self.scale_tril.shape[:-2])

    @property
    def dtype(self) -> Any:
        return self.mean.dtype

    # parametrizations
    def covariance(self) -> Float[Array, "*#b d d"]:
        """The dense covariance ``L L^T``."""
        tril = self.scale_tril
        return mm(tril, jnp.swapaxes(tril, -1, -2))

    def to_full(self) -> FullGaussian:
        """Itself (every family has ``to_full``)."""
        return self

    def log_det_cov(self) -> Float[Array, "*#b"]:
        """``log det(L L^T) = 2 sum_i log L_ii``, shape ``batch_shape``."""
        value = 2.0 * jnp.sum(jnp.log(_diag(self.scale_tril)), axis=-1)
        return jnp.broadcast_to(value, self.batch_shape)

    # distribution methods
    def log_prob(self, x: Float[ArrayLike, "*#s d"]) -> Float[Array, "*#s"]:
        """Log-density ``-0.5 * (||L^{-1}(x - mean)||^2 + log det(L L^T) + d log(2 pi))``.

        Args:
          x: ``(*sample, d)`` points; leading axes broadcast against the batch shape.

        Returns:
          The log-density, with the broadcast leading shape.

        Raises:
          TypeError: ``x`` is not a floating-point array. ValueError: its latent size differs or
            its batch axes do not broadcast against ``mean`` and ``scale_tril``.
        """
        fn = "FullGaussian.log_prob"
        (x,) = as_float_arrays(fn, ("x",), (x,))
        checks.check_event_shapes(fn, ("x", "mean"), (x.shape, self.mean.shape))
        checks.check_matrix_shapes(fn, "x", x.shape, "scale_tril", self.scale_tril.shape)
        x, mean = align_ranks(x, self.mean)
        z = whiten(self.scale_tril, x - mean)
        return self._log_density(jnp.sum(z * z, axis=-1))

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> Float[Array, "..."]:
        """Reparameterized samples ``mean + L eps``, shape ``(*sample_shape, *batch, d)``."""
        shape = (*sample_shape, *self.batch_shape, self.event_size)
        eps = jax.random.normal(key, shape, self.dtype)
        mean, eps_ = align_ranks(self.mean[..., None], eps[..., None])
        out = mean + mm(self.scale_tril, eps_)
        return out[..., 0]

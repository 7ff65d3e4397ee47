"""Full-covariance Gaussians stored by their Cholesky factor.

``FullGaussian(mean, scale_tril)`` is ``N(mean, L L^T)`` with ``L = scale_tril`` lower triangular.
The stored factor always has a positive diagonal: a negative diagonal entry, which TFP, distrax
and GPflow accept as a valid square root, is made positive by flipping the sign of its column
(``L S`` with ``S = diag(+-1)`` has the same ``L L^T``). Everything (KL, log-density, sampling,
entropy) works on ``L`` directly; no covariance matrix is inverted.

**The strict upper triangle.** ``scale_tril`` is read by its lower triangle, as TFP's
``MultivariateNormalTriL`` and distrax's ``MultivariateNormalTri`` read it. Numbers above the
diagonal are ambiguous: they may be leftovers of a factorization (``scipy.linalg.cho_factor``
leaves the input there) or the upper part of a general square root ``S`` whose covariance
``S S^T`` the user means -- then dropping them silently describes another distribution. The rule:
finite non-zero entries above the diagonal are reported by the checked mode
(:func:`gkl_jax.checked`), with the two fixes (``FullGaussian.from_scale(mean, S)`` for a general
square root, ``jnp.tril`` for leftovers); NaN or inf there is ignored, since no square root holds
them: they can only be unused storage (a masked or uninitialized buffer). Outside the checked
mode the upper triangle is ignored, as documented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks, lapack
from gkl_jax._src.base import Gaussian, arg_name, array_field, broadcast_batch
from gkl_jax._src.linalg import cholesky, mm, solve_tril, whiten
from gkl_jax._src.numerics import align_ranks, as_float_arrays

__all__ = ["FullGaussian", "check_strict_upper"]


def _diag(mat: jax.Array) -> jax.Array:
    return jnp.diagonal(mat, axis1=-2, axis2=-1)


def _positive_diagonal(tril: jax.Array) -> jax.Array:
    """``L S`` with ``S = diag(-1 where L_jj < 0, else 1)``: the same ``L L^T`` (exactly: only
    signs change), with a positive diagonal. A zero or NaN diagonal entry is kept as it is."""
    sign = jnp.where(_diag(tril) < 0, -1.0, 1.0).astype(tril.dtype)
    return tril * sign[..., None, :]


def check_strict_upper(fn: str, name: str, mat: jax.Array) -> None:
    """Checked mode: finite non-zero entries above the diagonal (see the module docstring)."""
    d = mat.shape[-1]
    n = int(np.prod(mat.shape[:-2])) * d * (d - 1) // 2

    def bad() -> jax.Array:
        upper = jnp.triu(mat, 1)
        return jnp.sum(jnp.isfinite(upper) & (upper != 0))

    checks.check_value(
        bad,
        f"{fn}: argument '{name}' is not lower triangular: {{bad}} of {n} entries above the "
        "diagonal are finite and non-zero, and FullGaussian reads only the lower triangle (the "
        "covariance of this matrix S, S S^T, is another one). For a general square root S use "
        "FullGaussian.from_scale(mean, S); for a Cholesky factor with leftovers above the "
        "diagonal pass jnp.tril(S)",
    )


class FullGaussian(Gaussian):
    r"""Gaussian ``N(mean, L L^T)`` with a full covariance given by its Cholesky factor ``L``.

    The factor is kept as given: :func:`gkl_jax.kl` between two full Gaussians works on the two
    factors (``M = L_q^{-1} L_p``) and is exact even for nearly identical pairs.

    Args:
      mean: ``(*batch, d)`` means.
      scale_tril: ``(*batch, d, d)`` lower-triangular factors with a non-zero diagonal. A
        negative diagonal entry is accepted (as in TFP, distrax, GPflow): its column's sign is
        flipped, which keeps ``L L^T`` exactly, so the stored ``scale_tril`` has a positive
        diagonal. Only the lower triangle is read (see the module docstring for the strict upper
        triangle; a general square root ``S`` goes to :meth:`from_scale`). Batch axes broadcast
        against ``mean``'s.

    Raises:
      TypeError: a parameter is not a floating-point array.
      ValueError: ``scale_tril`` is not square, its size differs from ``mean``'s, or the batch
        shapes do not broadcast.

    The checked mode (:func:`gkl_jax.checked`) reports a non-finite mean or lower triangle, a
    zero diagonal entry (a singular covariance), and finite non-zero entries above the diagonal.

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

    mean: Float[Array, "*#b d"] = array_field(trailing_axes=1)
    scale_tril: Float[Array, "*#b d d"] = array_field(trailing_axes=2)

    def __init__(self, mean: Float[ArrayLike, "*#b d"], scale_tril: Float[ArrayLike, "*#b d d"]):
        fn = self._fn_name()
        names = ("mean", "scale_tril")
        mean, tril = as_float_arrays(fn, names, (mean, scale_tril))
        checks.check_matrix_shapes(fn, "mean", mean.shape, "scale_tril", tril.shape)
        check_strict_upper(fn, "scale_tril", tril)
        self.mean = mean
        self.scale_tril = _positive_diagonal(jnp.tril(tril))
        self.check_values(fn)

    def _check_values(self, fn: str, name: str) -> None:
        """A finite mean and lower triangle, a positive diagonal (the stored factor's, made
        positive by ``__init__``: only a zero entry fails there), nothing finite and non-zero
        above the diagonal. NaN above the diagonal is not reported (see the module docstring)."""
        arg = arg_name(name, "scale_tril")
        tril = self.scale_tril
        rows, cols = np.tril_indices(tril.shape[-1])
        checks.check_finite(fn, arg_name(name, "mean"), self.mean)
        checks.check_finite(fn, f"lower triangle of {arg}", tril[..., rows, cols])
        checks.check_positive(fn, f"diagonal of {arg}", _diag(tril))
        check_strict_upper(fn, arg, tril)

    @classmethod
    def from_scale(
        cls, mean: Float[ArrayLike, "*#b d"], scale: Float[ArrayLike, "*#b d k"]
    ) -> FullGaussian:
        """``N(mean, S S^T)`` for any square root ``S`` of shape ``(d, k)``, ``k >= d``.

        ``S`` need not be triangular (a symmetric square root, ``V sqrt(Lambda)`` from an
        eigendecomposition, a factor ``[L, W]`` of ``L L^T + W W^T``). The lower-triangular
        factor is ``R^T`` from a QR decomposition ``S^T = Q R`` (``S S^T = R^T Q^T Q R = R^T R``),
        its diagonal made positive. No covariance is formed (forming ``S S^T`` would square the
        condition number of ``S``). Cost ``O(k d^2)``. Differentiable.

        This is the constructor for a matrix that is a square root but not lower triangular;
        ``FullGaussian(mean, S)`` would read only its lower triangle (and the checked mode
        would report its upper one).

        Raises:
          TypeError: a parameter is not a floating-point array.
          ValueError: ``scale`` has fewer columns than rows (``S S^T`` is then singular), its
            row count differs from ``mean``'s size, or the batch shapes do not broadcast.

        The checked mode reports non-finite entries and an exactly singular ``S``.

        Example:
          >>> import jax.numpy as jnp
          >>> from gkl_jax import FullGaussian
          >>> s = jnp.array([[1.0, 2.0], [0.0, 1.0]])  # not triangular
          >>> p = FullGaussian.from_scale(jnp.zeros(2), s)
          >>> bool(jnp.allclose(p.covariance(), s @ s.T))
          True
          >>> bool(jnp.all(jnp.diagonal(p.scale_tril) > 0)), float(p.scale_tril[0, 1])
          (True, 0.0)
        """
        fn = f"{cls.__name__}.from_scale"
        mean, scale = as_float_arrays(fn, ("mean", "scale"), (mean, scale))
        checks.check_matrix_shapes(fn, "mean", mean.shape, "scale", scale.shape, square=False)
        d, k = scale.shape[-2:]
        if k < d:
            raise ValueError(
                f"{fn}: argument 'scale' has shape {scale.shape}: {k} columns for {d} rows, so "
                "S S^T is singular; a square root needs at least as many columns as rows"
            )
        checks.check_finite(fn, "mean", mean)
        checks.check_finite(fn, "scale", scale)
        tril = jnp.swapaxes(lapack.qr(jnp.swapaxes(scale, -1, -2), mode="r"), -1, -2)
        checks.check_value(
            lambda: jnp.sum(jnp.any(_diag(tril) == 0, axis=-1)),
            f"{fn}: argument 'scale' is singular (rank < {d}) for {{bad}} of "
            f"{int(np.prod(tril.shape[:-2]))} matrices",
        )
        return cls(mean, tril)

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
        tril = cholesky(jnp.tril(cov) + jnp.swapaxes(jnp.tril(cov, -1), -1, -2))
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
        checks.check_finite(fn, "mean", mean)
        checks.check_finite(fn, "precision", prec)
        prec = jnp.tril(prec) + jnp.swapaxes(jnp.tril(prec, -1), -1, -2)
        k = cholesky(jnp.flip(prec, (-2, -1)))
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

    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> Float[Array, "..."]:
        """Reparameterized samples ``mean + L eps``, shape ``(*sample_shape, *batch, d)``.

        ``sample_shape``: a tuple of non-negative ints, or an int ``n`` meaning ``(n,)``.

        Raises:
          TypeError: ``key`` is not a PRNG key, or ``sample_shape`` is not an int or ints.
          ValueError: a negative ``sample_shape`` entry.
        """
        sample_shape = checks.sample_args("FullGaussian.sample", key, sample_shape)
        shape = (*sample_shape, *self.batch_shape, self.event_size)
        eps = jax.random.normal(key, shape, self.dtype)
        mean, eps_ = align_ranks(self.mean[..., None], eps[..., None])
        out = mean + mm(self.scale_tril, eps_)
        return out[..., 0]

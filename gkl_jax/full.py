"""Full-covariance Gaussians stored by their Cholesky factor.

``FullGaussian(mean, scale_tril)`` is ``N(mean, L L^T)`` with ``L = scale_tril`` lower triangular
with a positive diagonal. Everything (KL, log-density, sampling, entropy) works on ``L``
directly; no covariance matrix is inverted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax import checks
from gkl_jax._linalg import mm, solve_tril
from gkl_jax._numerics import LOG_2PI, align_ranks, as_float_arrays

__all__ = ["FullGaussian", "check_matrix_shapes", "diag_embed"]


def check_matrix_shapes(
    fn: str,
    vec_name: str,
    vec_shape: tuple[int, ...],
    mat_name: str,
    mat_shape: tuple[int, ...],
    *,
    square: bool = True,
) -> tuple[tuple[int, ...], int]:
    """Checks a ``(*b, d)`` vector against a ``(*b, d, d)`` (or ``(*b, d, k)``) matrix argument.

    Returns:
      ``(batch_shape, d)``.

    Raises:
      ValueError: the vector is a scalar, the matrix has fewer than two axes or is not square
        (when ``square``), its row count differs from the vector's size, or the batch shapes do
        not broadcast; the message names both arguments and shapes.
    """
    checks.check_event_shapes(fn, (vec_name,), (vec_shape,))  # a scalar vector raises
    if len(mat_shape) < 2:
        raise ValueError(
            f"{fn}: argument '{mat_name}' has shape {mat_shape}; it needs two trailing matrix axes"
        )
    if square and mat_shape[-1] != mat_shape[-2]:
        raise ValueError(
            f"{fn}: argument '{mat_name}' must be square in its last two axes, got shape "
            f"{mat_shape}"
        )
    if mat_shape[-2] != vec_shape[-1]:
        raise ValueError(
            f"{fn}: latent sizes differ: '{vec_name}' has shape {vec_shape} and '{mat_name}' has "
            f"shape {mat_shape} ({vec_shape[-1]} vs {mat_shape[-2]} rows)"
        )
    try:
        batch = jnp.broadcast_shapes(vec_shape[:-1], mat_shape[:-2])
    except ValueError:
        raise ValueError(
            f"{fn}: batch shapes do not broadcast: '{vec_name}' has shape {vec_shape} and "
            f"'{mat_name}' has shape {mat_shape}"
        ) from None
    return tuple(batch), vec_shape[-1]


def diag_embed(x: jax.Array) -> jax.Array:
    """``(*b, d)`` -> ``(*b, d, d)`` diagonal matrices (no rank promotion)."""
    d = x.shape[-1]
    eye = jnp.eye(d, dtype=x.dtype).reshape((1,) * (x.ndim - 1) + (d, d))
    return x[..., None] * eye


def _diag(mat: jax.Array) -> jax.Array:
    return jnp.diagonal(mat, axis1=-2, axis2=-1)


def _check_cholesky(fn: str, name: str, chol: jax.Array) -> None:
    """Checked mode: a Cholesky factor with a NaN (the matrix was not positive definite)."""
    bad_rows = ~jnp.all(jnp.isfinite(chol), axis=(-2, -1))
    bad = jnp.sum(bad_rows)
    checkify.debug_check(
        bad == 0,
        f"{fn}: argument '{name}' is not symmetric positive definite: the Cholesky "
        f"factorization failed for {{bad}} of {bad_rows.size} matrices",
        bad=bad,
    )


@jax.tree_util.register_pytree_node_class
class FullGaussian:
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

    __slots__ = ("mean", "scale_tril")
    mean: jax.Array
    scale_tril: jax.Array

    def __init__(self, mean: Float[ArrayLike, "*b d"], scale_tril: Float[ArrayLike, "*b d d"]):
        fn = "FullGaussian"
        names = ("mean", "scale_tril")
        mean, tril = as_float_arrays(fn, names, (mean, scale_tril))
        check_matrix_shapes(fn, "mean", mean.shape, "scale_tril", tril.shape)
        checks.check_finite(fn, "mean", mean)
        checks.check_finite(fn, "scale_tril", tril)
        checks.check_positive(fn, "diagonal of scale_tril", _diag(tril))
        self._set(mean, jnp.tril(tril))

    def _set(self, mean: jax.Array, tril: jax.Array) -> None:
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale_tril", tril)

    @classmethod
    def _unchecked(cls, mean: jax.Array, tril: jax.Array) -> FullGaussian:
        self = object.__new__(cls)
        self._set(mean, tril)
        return self

    @classmethod
    def from_cov(
        cls, mean: Float[ArrayLike, "*b d"], cov: Float[ArrayLike, "*b d d"]
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
        fn = "FullGaussian.from_cov"
        mean, cov = as_float_arrays(fn, ("mean", "cov"), (mean, cov))
        check_matrix_shapes(fn, "mean", mean.shape, "cov", cov.shape)
        checks.check_finite(fn, "mean", mean)
        checks.check_finite(fn, "cov", cov)
        tril = jnp.linalg.cholesky(jnp.tril(cov) + jnp.swapaxes(jnp.tril(cov, -1), -1, -2))
        _check_cholesky(fn, "cov", tril)
        return cls._unchecked(mean, tril)

    @classmethod
    def from_precision(
        cls, mean: Float[ArrayLike, "*b d"], precision: Float[ArrayLike, "*b d d"]
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
        fn = "FullGaussian.from_precision"
        mean, prec = as_float_arrays(fn, ("mean", "precision"), (mean, precision))
        check_matrix_shapes(fn, "mean", mean.shape, "precision", prec.shape)
        checks.check_finite(fn, "precision", prec)
        prec = jnp.tril(prec) + jnp.swapaxes(jnp.tril(prec, -1), -1, -2)
        k = jnp.linalg.cholesky(jnp.flip(prec, (-2, -1)))
        _check_cholesky(fn, "precision", k)
        eye = jnp.broadcast_to(jnp.eye(k.shape[-1], dtype=k.dtype), k.shape)
        k_inv = solve_tril(k, eye)
        tril = jnp.flip(jnp.swapaxes(jnp.tril(k_inv), -1, -2), (-2, -1))
        return cls._unchecked(mean, tril)

    # pytree protocol
    def tree_flatten(self):
        return (self.mean, self.scale_tril), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls._unchecked(*children)

    def __setattr__(self, name, value):
        raise AttributeError(f"FullGaussian is immutable; cannot set '{name}'")

    def __repr__(self) -> str:
        return (
            f"FullGaussian(batch_shape={self.batch_shape}, event_size={self.event_size}, "
            f"dtype={self.dtype})"
        )

    # shapes
    @property
    def event_size(self) -> int:
        return self.mean.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jnp.broadcast_shapes(self.mean.shape[:-1], self.scale_tril.shape[:-2]))

    @property
    def dtype(self) -> Any:
        return self.mean.dtype

    # parametrizations
    def covariance(self) -> Float[Array, "*b d d"]:
        """The dense covariance ``L L^T``."""
        tril = self.scale_tril
        return mm(tril, jnp.swapaxes(tril, -1, -2))

    def to_full(self) -> FullGaussian:
        """Itself (every family has ``to_full``)."""
        return self

    def log_det_cov(self) -> Float[Array, "*b"]:
        """``log det(L L^T) = 2 sum_i log L_ii``, shape ``batch_shape``."""
        value = 2.0 * jnp.sum(jnp.log(_diag(self.scale_tril)), axis=-1)
        return jnp.broadcast_to(value, self.batch_shape)

    # distribution methods
    def log_prob(self, x: Float[ArrayLike, "*s d"]) -> Float[Array, "*s"]:
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
        check_matrix_shapes(fn, "x", x.shape, "scale_tril", self.scale_tril.shape)
        x, mean = align_ranks(x, self.mean)
        z = whiten(self.scale_tril, x - mean)
        maha, log_det = align_ranks(jnp.sum(z * z, axis=-1), self.log_det_cov())
        return -0.5 * (maha + log_det + self.event_size * LOG_2PI)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> Float[Array, "..."]:
        """Reparameterized samples ``mean + L eps``, shape ``(*sample_shape, *batch, d)``."""
        shape = (*sample_shape, *self.batch_shape, self.event_size)
        eps = jax.random.normal(key, shape, self.dtype)
        mean, eps_ = align_ranks(self.mean[..., None], eps[..., None])
        out = mean + mm(self.scale_tril, eps_)
        return out[..., 0]

    def entropy(self) -> Float[Array, "*b"]:
        """Differential entropy ``0.5 * d * (1 + log 2 pi) + sum_i log L_ii``."""
        return 0.5 * (self.log_det_cov() + self.event_size * (1.0 + LOG_2PI))


def whiten(tril: jax.Array, v: jax.Array) -> jax.Array:
    """``L^{-1} v`` for ``(*b, d, d)`` factors and ``(*s, d)`` vectors broadcast against them.

    Sample axes that ``L`` does not have become right-hand-side columns of one solve, so ``L``
    is never copied per sample.
    """
    d = tril.shape[-1]
    batch = jnp.broadcast_shapes(v.shape[:-1], tril.shape[:-2])
    n_extra = len(batch) - (tril.ndim - 2)
    v = jnp.broadcast_to(v, (*batch, d))
    inner = batch[n_extra:]
    # columns: move the extra leading axes behind the latent axis and flatten them.
    cols = jnp.moveaxis(v, tuple(range(n_extra)), tuple(range(-n_extra, 0))) if n_extra else v
    cols = cols.reshape((*inner, d, -1))
    tril = jnp.broadcast_to(tril, (*inner, d, d))
    z = solve_tril(tril, cols)
    z = z.reshape((*inner, d, *batch[:n_extra]))
    if n_extra:
        z = jnp.moveaxis(z, tuple(range(-n_extra, 0)), tuple(range(n_extra)))
    return z

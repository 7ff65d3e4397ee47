"""Diagonal Gaussians, ``N(mean, diag(var))``, kept in the parametrization they were given.

The last axis of every parameter is the latent (event) axis; leading axes are batch axes and
broadcast against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import (
    Gaussian,
    arg_name,
    array_field,
    broadcast_batch,
    constructing_as,
)
from gkl_jax._src.linalg import diag_embed
from gkl_jax._src.numerics import align_ranks, as_float_arrays, log_ratio

__all__ = [
    "DiagGaussian",
    "Param",
    "Spread",
    "broadcast_latent",
    "check_spread_values",
    "diag_pair",
    "log_var_ratio",
]

Param = Literal["log_var", "var", "std"]

# A spread as given: one per latent dimension, one per example (a size-1 latent axis), or one
# scalar for every dimension and example (isotropic).
Spread = Float[ArrayLike, "*#b #d"] | Float[ArrayLike, ""]


def broadcast_latent(spread: jax.Array, mean: jax.Array) -> jax.Array:
    """An isotropic spread broadcast along the latent axis: ``()`` -> ``(d,)`` and
    ``(*b, 1)`` -> ``(*b, d)``, with ``d = mean.shape[-1]`` (values copied, so nothing changes
    numerically). Other shapes are returned as they are, for the shape checks to judge."""
    if mean.ndim == 0 or (spread.ndim and spread.shape[-1] != 1):
        return spread
    d = mean.shape[-1]
    return jnp.broadcast_to(spread, (*spread.shape[:-1], d) if spread.ndim else (d,))


def check_spread_values(fn: str, name: str, spread: jax.Array, param: str) -> None:
    """Checked mode: the spread parameter is finite, and positive when it is a var or std."""
    checks.check_finite(fn, name, spread)
    if param != "log_var":
        checks.check_positive(fn, name, spread)


class DiagGaussian(Gaussian):
    r"""Gaussian with diagonal covariance, ``N(mean, diag(var))``, batched over leading axes.

    The distribution keeps the spread in the parametrization it was given (``log_var``, ``var``
    or ``std``), so that :func:`gkl_jax.kl` between two distributions given the same way is exact
    even when they are nearly identical: no rounded ``log`` is taken before the log-ratio.

    Args:
      mean: ``(*batch, d)`` means.
      log_var: ``(*batch, d)`` log-variances (batch axes broadcast against ``mean``'s). An
        isotropic spread, as numpyro and TFP accept it, is a Python or 0-d scalar (one value
        for every dimension and example) or has a size-1 latent axis, ``(*batch, 1)`` (one per
        example); it is broadcast along the latent axis at construction (``(d,)``, resp.
        ``(*batch, d)``), so ``spread`` always has the latent size ``d`` and the KL is the same
        exact kernel. ``var=`` and ``std=`` take the same shapes.

    Raises:
      TypeError: a parameter is not a floating-point array.
      ValueError: the mean is a scalar, or the shapes do not fit together.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian
      >>> q = DiagGaussian(jnp.zeros((2, 3)), jnp.zeros(3))  # batch of 2, latent size 3
      >>> q.batch_shape, q.event_size
      ((2,), 3)
      >>> q.sample(jax.random.key(0), (5,)).shape
      (5, 2, 3)
      >>> DiagGaussian(jnp.zeros((2, 3)), std=0.5).spread  # isotropic: broadcast to (d,)
      Array([0.5, 0.5, 0.5], dtype=float32)
    """

    mean: Float[Array, "*#b d"] = array_field(trailing_axes=1)
    spread: Float[Array, "*#b d"] = array_field(trailing_axes=1)
    param: str = eqx.field(static=True)

    def __init__(
        self,
        mean: Float[ArrayLike, "*#b d"],
        log_var: Spread | None = None,
        *,
        var: Spread | None = None,
        std: Spread | None = None,
    ):
        spreads = (("log_var", log_var), ("var", var), ("std", std))
        given = [(p, v) for p, v in spreads if v is not None]
        fn = self._fn_name()
        if len(given) != 1:
            raise TypeError(
                f"{fn}: give the spread exactly once, as log_var (positional), var= or std=; got "
                f"{[p for p, _ in given] or 'none'}"
            )
        ((param, spread),) = given
        names = ("mean", param)
        mean, spread = as_float_arrays(fn, names, (mean, spread))
        spread = broadcast_latent(spread, mean)
        checks.check_event_shapes(fn, names, (mean.shape, spread.shape))
        self.mean = mean
        self.spread = spread
        self.param = param
        self.check_values(fn)

    def _check_values(self, fn: str, name: str) -> None:
        """A finite mean; a finite spread, positive when it is a var or std."""
        checks.check_finite(fn, arg_name(name, "mean"), self.mean)
        check_spread_values(fn, arg_name(name, self.param), self.spread, self.param)

    @classmethod
    def from_std(cls, mean: Float[ArrayLike, "*#b d"], std: Spread):
        """``N(mean, diag(std**2))``; the standard deviations are kept as given (no log taken)."""
        with constructing_as(f"{cls.__name__}.from_std"):
            return cls(mean, std=std)

    @classmethod
    def from_var(cls, mean: Float[ArrayLike, "*#b d"], var: Spread):
        """``N(mean, diag(var))``; the variances are kept as given (no log taken)."""
        with constructing_as(f"{cls.__name__}.from_var"):
            return cls(mean, var=var)

    @classmethod
    def from_param(
        cls, mean: Float[ArrayLike, "*#b d"], spread: Spread, *, param: Param
    ) -> DiagGaussian:
        """Builds from ``spread`` given as ``param`` = "log_var", "var" or "std"."""
        fn = f"{cls.__name__}.from_param"
        checks.check_param(fn, param)
        with constructing_as(fn):
            return cls(mean, **{param: spread})

    @classmethod
    def standard(
        cls, event_size: int, *, batch_shape: int | Sequence[int] = (), dtype: Any = jnp.float32
    ) -> DiagGaussian:
        """The standard normal ``N(0, I)`` of size ``event_size`` (with zero log-variances).

        Raises:
          TypeError: ``event_size`` is not an int, ``batch_shape`` is not an int or a
            sequence of ints, or ``dtype`` is not a floating-point dtype. ValueError: a negative
            size.
        """
        fn = f"{cls.__name__}.standard"
        event_size = checks.static_int(fn, "event_size", event_size)
        if event_size < 0:
            raise ValueError(f"{fn}: event_size must be >= 0, got {event_size}")
        batch_shape = checks.static_shape(fn, "batch_shape", batch_shape)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{fn}: dtype must be a floating-point dtype, got {dtype!r}")
        zeros = jnp.zeros((*batch_shape, event_size), dtype)
        with constructing_as(fn):
            return cls(zeros, zeros)

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [*super()._repr_items(), ("param", self.param)]

    def named_leaves(self, prefix: str) -> list[tuple[str, jax.Array]]:
        """``[("p.mean", mean), ("p.log_var", spread)]``: the spread named by its parameter."""
        return [(f"{prefix}.mean", self.mean), (f"{prefix}.{self.param}", self.spread)]

    # shapes
    @property
    def event_size(self) -> int:
        return self.mean.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return broadcast_batch(self.mean.shape[:-1], self.spread.shape[:-1])

    @property
    def dtype(self):
        return self.mean.dtype

    # parametrizations
    @property
    def log_var(self) -> Float[Array, "*#b d"]:
        if self.param == "log_var":
            return self.spread
        if self.param == "var":
            return jnp.log(self.spread)
        return 2.0 * jnp.log(self.spread)

    @property
    def var(self) -> Float[Array, "*#b d"]:
        if self.param == "log_var":
            return jnp.exp(self.spread)
        if self.param == "var":
            return self.spread
        return jnp.square(self.spread)

    @property
    def std(self) -> Float[Array, "*#b d"]:
        if self.param == "log_var":
            return jnp.exp(0.5 * self.spread)
        if self.param == "var":
            return jnp.sqrt(self.spread)
        return self.spread

    def _standardize(self, x: jax.Array) -> jax.Array:
        """``(x - mean) / std`` using the stored parametrization directly."""
        x, mean, spread = align_ranks(x, self.mean, self.spread)
        if self.param == "log_var":
            return (x - mean) * jnp.exp(-0.5 * spread)
        return (x - mean) / (spread if self.param == "std" else jnp.sqrt(spread))

    # distribution methods
    def log_prob(self, x: Float[ArrayLike, "*#s d"]) -> Float[Array, "*#s"]:
        """Log-density at ``x``, summed over the latent axis.

        Args:
          x: ``(*sample, d)`` points; leading axes broadcast against the batch shape.

        Returns:
          ``log N(x; mean, diag(var))`` with the broadcast leading shape.
        """
        fn = "DiagGaussian.log_prob"
        (x,) = as_float_arrays(fn, ("x",), (x,))
        checks.check_event_shapes(
            fn, ("x", "mean", self.param), (x.shape, self.mean.shape, self.spread.shape)
        )
        z = self._standardize(x)
        return self._log_density(jnp.sum(z * z, axis=-1))

    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> Float[Array, "..."]:
        """Reparameterized samples ``mean + std * eps``, shape ``(*sample_shape, *batch, d)``.

        ``sample_shape`` is a tuple of non-negative ints, or an int ``n`` meaning ``(n,)`` (as in
        numpyro, TFP and distrax). Gradients flow to ``mean`` and the spread parameter.

        Raises:
          TypeError: ``key`` is not a PRNG key, or ``sample_shape`` is not an int or ints.
          ValueError: a negative ``sample_shape`` entry.
        """
        sample_shape = checks.sample_args("DiagGaussian.sample", key, sample_shape)
        shape = (*sample_shape, *self.batch_shape, self.event_size)
        eps = jax.random.normal(key, shape, self.dtype)
        mean, std = align_ranks(self.mean, self.std, eps)[:2]
        return mean + std * eps

    def to_full(self):
        """This distribution as a :class:`~gkl_jax.FullGaussian`, ``scale_tril = diag(std)``."""
        from gkl_jax._src.distributions.full import FullGaussian  # local import: no cycle

        std = jnp.broadcast_to(self.std, (*self.batch_shape, self.event_size))
        mean = jnp.broadcast_to(self.mean, std.shape)
        return FullGaussian(mean, diag_embed(std))

    def to_low_rank(self, rank: int = 0):
        """This distribution as a :class:`~gkl_jax.LowRankGaussian` with a zero ``(d, rank)`` W.

        The diagonal is stored as log-variances (a var/std parametrization is converted).

        Example:
          >>> import jax.numpy as jnp
          >>> from gkl_jax import DiagGaussian
          >>> DiagGaussian(jnp.zeros(3), jnp.zeros(3)).to_low_rank().rank
          0
        """
        from gkl_jax._src.distributions.low_rank import LowRankGaussian  # local import: no cycle

        factor = jnp.zeros((*self.batch_shape, self.event_size, rank), self.dtype)
        return LowRankGaussian(self.mean, factor, self.log_var)

    def log_det_cov(self) -> Float[Array, "*#b"]:
        """``log det Sigma = sum(log_var)`` over the latent axis, shape ``batch_shape``."""
        return jnp.broadcast_to(jnp.sum(self.log_var, axis=-1), self.batch_shape)


def diag_pair(p: DiagGaussian, q: DiagGaussian) -> tuple[str, tuple[jax.Array, ...]]:
    """``(param, (mean_p, spread_p, mean_q, spread_q))`` for the exact diagonal kernels.

    Same parametrization on both sides: the stored spreads (a log-ratio of two given numbers is
    exact). Mixed parametrizations go through log-variances (~eps * |log var| for a nearly
    identical pair, as any mixed input must).
    """
    if p.param == q.param:
        return p.param, (p.mean, p.spread, q.mean, q.spread)
    return "log_var", (p.mean, p.log_var, q.mean, q.log_var)


def log_var_ratio(p: DiagGaussian, q: DiagGaussian) -> jax.Array:
    """``log(var_p / var_q)`` per dimension, exact for equal parametrizations."""
    param, (_, a, _, b) = diag_pair(p, q)
    a, b = align_ranks(a, b)
    if param == "log_var":
        return a - b
    return (1.0 if param == "var" else 2.0) * log_ratio(a, b)

r"""Gaussian mixtures ``sum_k softmax(logits)_k N(mean_k, diag(var_k))``.

A mixture has no closed-form KL; :func:`gkl_jax.kl_mc` estimates it, and
:mod:`gkl_jax._src.kl.mixture` holds the Hershey & Olsen (2007) approximation and bound.

Components are stored stacked on a component axis, the last batch axis of ``components``:
``components.batch_shape == (*batch, K)`` and ``logits.shape == (*batch, K)`` (batch axes
broadcast).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import Distribution, arg_name, array_field, broadcast_batch
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.numerics import align_ranks, as_float_arrays

__all__ = ["GaussianMixture"]


class GaussianMixture(Distribution):
    r"""Mixture ``sum_k softmax(logits)_k N(mean_k, diag(var_k))``, batched over leading axes.

    Args:
      logits: ``(*batch, K)`` unnormalized log mixture weights; ``-inf`` gives a component
        weight zero (not every one of a mixture; NaN and ``+inf`` are not valid).
      components: a :class:`~gkl_jax.DiagGaussian` with batch shape ``(*batch, K)``: the ``K``
        components stacked on its last batch axis (batch axes broadcast against ``logits``').

    Raises:
      TypeError: ``logits`` is not a floating-point array, or ``components`` is not a
        DiagGaussian.
      ValueError: ``logits`` is a scalar, ``components`` has no component axis, the numbers of
        components differ, or the batch shapes do not broadcast.

    Sampling draws the component index ``c ~ Categorical(softmax(logits))`` and then
    ``x = mean_c + std_c * eps``: gradients of samples flow to the component means and spreads,
    not to the logits (a discrete choice is not reparameterizable; :func:`gkl_jax.kl_mc` adds the
    score-function term for them).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, GaussianMixture
      >>> comps = DiagGaussian(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.zeros((2, 2)))
      >>> mix = GaussianMixture(jnp.zeros(2), comps)  # two equal-weight components in 2-D
      >>> mix.batch_shape, mix.event_size, mix.num_components
      ((), 2, 2)
      >>> mix.log_prob(jnp.zeros(2))  # = log N(1; 0, 1) + log N(0; 0, 1)
      Array(-2.337877, dtype=float32)
      >>> mix.sample(jax.random.key(0), (5,)).shape
      (5, 2)
    """

    logits: Float[Array, "*#b k"] = array_field(trailing_axes=1)  # the component axis
    components: DiagGaussian = array_field(trailing_axes=1)  # its last batch axis: components

    def __init__(self, logits: Float[ArrayLike, "*#b k"], components: DiagGaussian):
        fn = self._fn_name()
        (logits,) = as_float_arrays(fn, ("logits",), (logits,))
        if not isinstance(components, DiagGaussian):
            raise TypeError(
                f"{fn}: components must be a DiagGaussian with the components stacked on its "
                f"last batch axis, got {type(components).__name__}"
            )
        if logits.ndim == 0:
            raise ValueError(f"{fn}: 'logits' is a scalar; it needs a component axis (K,)")
        cshape = components.batch_shape
        if len(cshape) == 0:
            raise ValueError(
                f"{fn}: 'components' has batch shape (); stack the K components on a leading "
                "axis, e.g. means of shape (K, d)"
            )
        if logits.shape[-1] != cshape[-1]:
            raise ValueError(
                f"{fn}: numbers of components differ: 'logits' has shape {logits.shape} and "
                f"'components' has batch shape {cshape} ({logits.shape[-1]} vs {cshape[-1]})"
            )
        try:
            jnp.broadcast_shapes(logits.shape[:-1], cshape[:-1])
        except ValueError:
            raise ValueError(
                f"{fn}: batch shapes do not broadcast: 'logits' has shape {logits.shape} and "
                f"'components' has batch shape {cshape}"
            ) from None
        self.logits = logits
        self.components = components
        self.check_values(fn)

    def _check_values(self, fn: str, name: str) -> None:
        """Logits finite or ``-inf`` (a zero-weight component), not every one ``-inf`` in a
        mixture; the components' own checks (``'p.components.mean'``, ...)."""
        arg = arg_name(name, "logits")
        logits = self.logits
        checks.check_value(
            lambda: jnp.sum(jnp.isnan(logits) | (logits == jnp.inf)),
            f"{fn}: argument '{arg}' must be finite or -inf (a zero-weight component): "
            f"{{bad}} of {np.size(logits)} entries are NaN or +inf",
        )
        rows = int(np.prod(logits.shape[:-1]))
        checks.check_value(
            lambda: jnp.sum(jnp.all(logits == -jnp.inf, axis=-1)),
            f"{fn}: argument '{arg}' gives no component a positive weight: {{bad}} of {rows} "
            f"mixtures have every logit -inf",
        )
        self.components._check_values(fn, arg_name(name, "components"))

    def _repr_items(self) -> list[tuple[str, Any]]:
        return [("num_components", self.num_components), *super()._repr_items()]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return broadcast_batch(self.logits.shape[:-1], self.components.batch_shape[:-1])

    @property
    def event_size(self) -> int:
        return self.components.event_size

    @property
    def num_components(self) -> int:
        return self.logits.shape[-1]

    @property
    def dtype(self):
        return jnp.promote_types(self.logits.dtype, self.components.dtype)

    @property
    def log_weights(self) -> Float[Array, "*#b k"]:
        """Normalized log mixture weights ``log_softmax(logits)``."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    def log_prob(self, x: Float[ArrayLike, "*#s d"]) -> Float[Array, "*#s"]:
        """``log sum_k w_k N(x; mean_k, var_k)``, by ``logsumexp`` over the components.

        Args:
          x: ``(*sample, d)`` points; leading axes broadcast against the batch shape.

        Returns:
          The log-density, with the broadcast leading shape.

        Raises:
          TypeError: ``x`` is not a floating-point array.
          ValueError: ``x``'s last axis is not the event size, or its leading axes do not
            broadcast against the batch shape (at trace time; the message names both shapes).
        """
        fn = "GaussianMixture.log_prob"
        (x,) = as_float_arrays(fn, ("x",), (x,))
        checks.check_event_shapes(
            fn, ("mixture", "x"), ((*self.batch_shape, self.event_size), x.shape)
        )
        comp = self.components.log_prob(x[..., None, :])  # (*s, *batch, K)
        comp, log_w = align_ranks(comp, self.log_weights)
        return jax.nn.logsumexp(comp + log_w, axis=-1)

    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> Float[Array, "..."]:
        """Samples of shape ``(*sample_shape, *batch, d)`` (reparameterized given the component).

        ``sample_shape``: a tuple of non-negative ints, or an int ``n`` meaning ``(n,)``.

        Raises:
          TypeError: ``key`` is not a PRNG key, or ``sample_shape`` is not an int or ints.
          ValueError: a negative ``sample_shape`` entry.
        """
        sample_shape = checks.sample_args("GaussianMixture.sample", key, sample_shape)
        loc, scale, eps, _ = self._sample_parts(key, sample_shape)
        return loc + scale * eps

    def _sample_parts(self, key: jax.Array, sample_shape: tuple[int, ...]):
        """``(loc, scale, eps, c)`` with ``x = loc + scale * eps`` for the chosen components ``c``.

        ``c`` has shape ``(*sample_shape, *batch)``; ``loc``, ``scale`` and ``eps`` have shape
        ``(*sample_shape, *batch, d)``. ``-eps`` gives the antithetic partner in the same component.
        """
        batch, k, d = self.batch_shape, self.num_components, self.event_size
        key_c, key_eps = jax.random.split(key)
        logits = jnp.broadcast_to(self.logits, (*batch, k))
        c = jax.random.categorical(key_c, logits, axis=-1, shape=(*sample_shape, *batch))
        eps = jax.random.normal(key_eps, (*sample_shape, *batch, d), self.components.dtype)
        full = (*batch, k, d)
        mean = jnp.broadcast_to(self.components.mean, full)
        std = jnp.broadcast_to(self.components.std, full)
        idx = c.reshape(*c.shape, 1, 1)
        mean, std, idx = align_ranks(mean, std, idx)
        loc = jnp.take_along_axis(mean, idx, axis=-2)[..., 0, :]
        scale = jnp.take_along_axis(std, idx, axis=-2)[..., 0, :]
        return loc, scale, eps, c

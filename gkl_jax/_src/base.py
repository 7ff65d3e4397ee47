"""The pytree base of every distribution type, and the ``Estimate`` result of the estimators.

Every gkl_jax distribution is an :class:`equinox.Module`: a frozen dataclass that is a JAX pytree.
That gives, without hand-written protocol code,

* named key paths (``.mean``, ``.spread``), so a model's state reads ``prior/mean``;
* ``pickle``, ``copy.copy`` and ``copy.deepcopy``;
* subclasses that are pytrees automatically (a subclass of :class:`~gkl_jax.DiagGaussian` passes
  through ``jax.jit`` like its parent);
* validation in ``__init__`` -- which runs when a user builds a distribution -- and none when JAX
  unflattens one (``tree_unflatten`` fills the fields directly), so ``jit``/``vmap`` never re-check;
* immutability, and equality by value (``p == q`` compares the leaves, as ``equinox.tree_equal``).

Static metadata (``DiagGaussian.param``) is a static field: part of the tree structure, so two
parametrizations never share a compiled function by mistake.

Shapes follow distrax, TFP and numpyro: ``batch_shape`` and ``event_shape`` are tuples
(``event_shape == (event_size,)`` for the vector-valued Gaussians here).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gkl_jax._src.numerics import LOG_2PI, align_ranks

__all__ = ["Distribution", "Estimate", "Gaussian", "on_new_distribution_type"]

_SUBCLASS_HOOKS: list[Callable[[type], None]] = []
_CONSTRUCTOR = contextvars.ContextVar("gkl_jax_constructor", default=None)


@contextlib.contextmanager
def constructing_as(name: str) -> Iterator[None]:
    """Names the alternative constructor (``DiagGaussian.from_std``) that calls ``__init__``,
    so that its error messages say what the user called."""
    token = _CONSTRUCTOR.set(name)
    try:
        yield
    finally:
        _CONSTRUCTOR.reset(token)


def on_new_distribution_type(hook: Callable[[type], None]) -> None:
    """Calls ``hook(cls)`` for every distribution class, defined so far and later.

    Used by optional subpackages (``gkl_jax.nnx`` registers each class as NNX data) without the
    core importing them.
    """
    _SUBCLASS_HOOKS.append(hook)
    pending = [Distribution]
    while pending:
        cls = pending.pop()
        hook(cls)
        pending.extend(cls.__subclasses__())


class Distribution(eqx.Module):
    """Base of every gkl_jax distribution: a frozen, pytree-registered dataclass.

    Subclasses declare their array fields (and ``eqx.field(static=True)`` metadata) as class
    annotations, validate in ``__init__``, and implement ``batch_shape``, ``event_size``,
    ``dtype``, ``log_prob`` and ``sample``.
    """

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        for hook in _SUBCLASS_HOOKS:
            hook(cls)

    def _fn_name(self) -> str:
        """The name used in construction messages: the class, or the classmethod building it."""
        return _CONSTRUCTOR.get() or type(self).__name__

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except dataclasses.FrozenInstanceError:
            raise AttributeError(
                f"{type(self).__name__} is immutable; cannot set '{name}' (build a new one, or "
                "use equinox.tree_at)"
            ) from None

    # Identity hash: instances hold arrays, which are not hashable. Equality stays by value
    # (equinox.tree_equal); equal but distinct instances only miss a cache, never share an entry.
    # This is what lets ``jax.jit(p.log_prob)`` hash the bound method.
    __hash__ = object.__hash__

    @property
    def batch_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def event_size(self) -> int:
        raise NotImplementedError

    @property
    def event_shape(self) -> tuple[int, ...]:
        """``(event_size,)``: every gkl_jax distribution is over vectors."""
        return (self.event_size,)

    @property
    def dtype(self) -> Any:
        raise NotImplementedError

    def named_leaves(self, prefix: str) -> list[tuple[str, jax.Array]]:
        """``[(name, leaf)]`` for messages, e.g. ``("p.mean", ...)``, from the field key paths."""
        leaves = jax.tree_util.tree_flatten_with_path(self)[0]
        return [(prefix + jax.tree_util.keystr(path), leaf) for path, leaf in leaves]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._repr_items())
        return f"{type(self).__name__}(batch_shape={self.batch_shape}{extra}, dtype={self.dtype})"

    def _repr_items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs shown by ``repr`` between the batch shape and the dtype."""
        return [("event_size", self.event_size)]


class Gaussian(Distribution):
    """Base of the Gaussian families (diagonal, full, low-rank), which have closed forms.

    Every Gaussian can be seen as a full-covariance one (:meth:`to_full`), which is how the
    divergences without a structured kernel treat it.
    """

    def to_full(self):
        raise NotImplementedError

    def log_det_cov(self) -> Float[Array, "*#b"]:
        """``log det Sigma``, shape ``batch_shape``."""
        raise NotImplementedError

    def entropy(self) -> Float[Array, "*#b"]:
        """Differential entropy ``0.5 * (log det Sigma + d (1 + log 2 pi))``, ``batch_shape``."""
        return 0.5 * (self.log_det_cov() + self.event_size * (1.0 + LOG_2PI))

    def _log_density(self, maha: jax.Array) -> jax.Array:
        """``log N(x)`` from the squared Mahalanobis distance ``maha`` of ``x`` (broadcasting)."""
        maha, log_det = align_ranks(maha, self.log_det_cov())
        return -0.5 * (maha + log_det + self.event_size * LOG_2PI)


class Estimate(NamedTuple):
    """A Monte Carlo or sample-based estimate and its standard error (a pytree).

    Attributes:
      value: the estimate, shape ``batch``.
      stderr: its standard error, same shape. ``value +- 2 * stderr`` is a ~95% interval when
        the estimator is unbiased.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import Estimate
      >>> value, stderr = Estimate(jnp.float32(1.5), jnp.float32(0.1))
      >>> float(value)
      1.5
    """

    value: Float[Array, "*#b"]
    stderr: Float[Array, "*#b"]


def broadcast_batch(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of batch shapes (a tuple)."""
    return tuple(jnp.broadcast_shapes(*shapes))

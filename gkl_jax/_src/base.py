"""The pytree base of every distribution type, and the ``Estimate`` result of the estimators.

Every gkl_jax distribution is an :class:`equinox.Module`: a frozen dataclass that is a JAX pytree.
That gives, without hand-written protocol code,

* named key paths (``.mean``, ``.spread``), so a model's state reads ``prior/mean``;
* ``pickle``, ``copy.copy`` and ``copy.deepcopy``;
* subclasses that are pytrees automatically (a subclass of :class:`~gkl_jax.DiagGaussian` passes
  through ``jax.jit`` like its parent);
* validation in ``__init__`` -- which runs when a user builds a distribution -- and none when JAX
  unflattens one (``tree_unflatten`` fills the fields directly), so ``jit``/``vmap`` never re-check;
  the value checks of the checked mode are one method per type, :meth:`Distribution.check_values`,
  run by ``__init__`` and again by every public function that takes a distribution (so a
  distribution built outside :func:`gkl_jax.checked` is checked where it is used);
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

from gkl_jax._src import checks
from gkl_jax._src.numerics import LOG_2PI, align_ranks

__all__ = [
    "Distribution",
    "Estimate",
    "Gaussian",
    "arg_name",
    "check_argument_values",
    "on_new_distribution_type",
]

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


def arg_name(prefix: str, field: str) -> str:
    """``"p.mean"`` for a consumer's argument ``p``; ``"mean"`` in a constructor (no prefix)."""
    return f"{prefix}.{field}" if prefix else field


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
    annotations, validate shapes in ``__init__``, implement ``batch_shape``, ``event_size``,
    ``dtype``, ``log_prob`` and ``sample``, and list their value checks in ``_check_values``
    (which ``__init__`` and every consumer run through :meth:`check_values`).
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

    def check_values(self, fn: str, name: str = "") -> None:
        """Checked mode only: reports parameter values this distribution cannot hold.

        The one list of value checks of each type, run by its constructor (``name=""``: messages
        say ``'mean'``) and by every public function that takes a distribution (``kl``, the
        divergences, ``kl_mc``, the mixture functions; ``name="p"``: ``'p.mean'``). The second
        matters because JAX rebuilds a distribution that crosses ``jit``/``vmap`` (or a model's
        state) without running ``__init__``: a NaN mean built outside :func:`gkl_jax.checked`
        is reported by the consumer. Outside the checked mode this returns at once and traces
        nothing (zero cost).

        Args:
          fn: the public function's name, e.g. ``"kl"``.
          name: the argument's name, e.g. ``"p"``; empty in a constructor.

        Example:
          >>> import jax.numpy as jnp
          >>> import gkl_jax
          >>> p = gkl_jax.DiagGaussian(jnp.array([jnp.nan, 0.0]), jnp.zeros(2))  # not checked
          >>> err, _ = gkl_jax.checked(gkl_jax.kl)(p, p)
          >>> print(err.get())  # doctest: +ELLIPSIS
          kl: argument 'p.mean' must be finite: 1 of 2 entries are NaN or inf ...
        """
        if checks.value_checks_enabled():
            self._check_values(fn, name)

    def _check_values(self, fn: str, name: str) -> None:
        """The value checks of this type (called in the checked mode only, so it may compute
        freely). Default: every floating-point leaf is finite; the gkl_jax types override it."""
        for leaf_name, leaf in self.named_leaves(name):
            if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                checks.check_finite(fn, leaf_name.lstrip("."), leaf)

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


def check_argument_values(fn: str, **args: Any) -> None:
    """Checked mode: :meth:`Distribution.check_values` of each argument that is a distribution
    (``check_argument_values("kl", p=p, q=q)``); other arguments (a callable log-density) are
    skipped. Outside the checked mode nothing is traced."""
    for name, arg in args.items():
        if isinstance(arg, Distribution):
            arg.check_values(fn, name)


def broadcast_batch(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of batch shapes (a tuple)."""
    return tuple(jnp.broadcast_shapes(*shapes))

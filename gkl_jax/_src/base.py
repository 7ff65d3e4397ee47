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

**Indexing the batch.** ``p[0]``, ``p[:10]``, ``p[..., 2]``, ``p[None]``, ``p[idx_array]`` index
the batch axes of any distribution with NumPy's rules, never its event axis (nor a mixture's
component axis): ``p[i]`` is the distribution of example ``i``. It is implemented once, here, from
each parameter field's declared number of trailing non-batch axes (:func:`array_field`: 1 for a
mean, 2 for a Cholesky factor, 1 for a mixture's logits and for its components' component axis).
A parameter stored with fewer or size-1 batch axes (a mean ``(B, d)`` beside a shared spread
``(d,)``) keeps its compact shape: it is indexed as its broadcast would be. Under ``jit`` a traced
integer index works (out of range, it is clamped, as everywhere in JAX).

**Stacks of distributions, tree_map and vmap.** A distribution is a pytree of its parameter arrays,
so JAX's tree functions apply to it directly:

* ``jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), p1, p2, p3)`` stacks distributions of one
  type (and one parametrization) into a batch of three (``batch_shape == (3, ...)``);
  ``jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), p)`` casts one.
* ``jax.vmap(fn)(ps, qs)`` maps ``fn`` over axis 0 of *every* leaf, so each call sees one
  distribution of the stack. Every leaf must have the mapped axis: a parameter shared across the
  batch (a spread of shape ``(d,)`` beside means ``(B, d)``) would be mapped over its latent axis.
  Give such a leaf ``None`` in ``in_axes``, a pytree prefix of the arguments:
  ``axes = equinox.tree_at(lambda d: d.spread, jax.tree_util.tree_map(lambda _: 0, p), None)``
  and ``jax.vmap(fn, in_axes=(axes, ...))``; or broadcast the leaf first.

Most gkl_jax functions already broadcast over batch axes, so ``vmap`` is needed only around code
written for one example.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from gkl_jax import DiagGaussian, kl
  >>> ps = [DiagGaussian(jnp.full(3, float(i)), jnp.zeros(3)) for i in range(4)]
  >>> stack = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *ps)
  >>> stack.batch_shape, stack[2].batch_shape, float(stack[2].mean[0])
  ((4,), (), 2.0)
  >>> q = DiagGaussian.standard(3)
  >>> jax.vmap(kl, in_axes=(0, None))(stack, q)  # = kl(stack, q): 1.5 * i ** 2
  Array([ 0. ,  1.5,  6. , 13.5], dtype=float32)
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
import numpy as np
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.numerics import LOG_2PI, align_ranks

__all__ = [
    "BiasedEstimate",
    "Distribution",
    "Estimate",
    "Gaussian",
    "arg_name",
    "array_field",
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


TRAILING_AXES = "trailing_axes"


def array_field(trailing_axes: int, **kwargs: Any) -> Any:
    """Declares a parameter field whose last ``trailing_axes`` axes are not batch axes.

    ``1`` for a vector (a mean, a diagonal spread, a mixture's logits with their component axis),
    ``2`` for a matrix (a Cholesky factor, a low-rank factor); for a field holding a distribution,
    the number of its batch axes that come after its parent's (a mixture's components: 1, the
    component axis). Batch indexing (:meth:`Distribution.__getitem__`) reads it; it is
    ``equinox.field(metadata={"trailing_axes": k})``, which a user's subclass may write directly.
    """
    return eqx.field(metadata={TRAILING_AXES: trailing_axes}, **kwargs)


class Distribution(eqx.Module):
    """Base of every gkl_jax distribution: a frozen, pytree-registered dataclass.

    Subclasses declare their array fields with :func:`array_field` (the number of trailing
    non-batch axes; ``eqx.field(static=True)`` for metadata) as class annotations, validate shapes
    in ``__init__``, implement ``batch_shape``, ``event_size``, ``dtype``, ``log_prob`` and
    ``sample``, and list their value checks in ``_check_values`` (which ``__init__`` and every
    consumer run through :meth:`check_values`). Batch indexing (``p[i]``) comes from this base.
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

    def __getitem__(self, index: Any) -> Distribution:
        """The distribution(s) at ``index`` of the batch axes, with NumPy's indexing rules.

        Ints, slices, ``None``, ``...`` and integer or boolean arrays index ``batch_shape`` only:
        the event axis (and a mixture's component axis) is never indexed, so
        ``p[i].event_size == p.event_size`` and ``p[idx].batch_shape ==
        np.empty(p.batch_shape)[idx].shape``. Parameters stored with fewer or size-1 batch axes
        (broadcasting) keep their compact shape under basic indexing (ints, slices, ``None``);
        array indices broadcast them first. Values are taken as they are (nothing recomputed), so
        ``kl(p[i], q[i])`` is ``kl(p, q)[i]``. Works under ``jit``, with a traced integer too.

        Raises:
          IndexError: more indices than batch axes (the event axis cannot be indexed), or a
            Python int out of range for its batch axis.
          TypeError: a ``bool`` index, or a field that declares no ``trailing_axes``.

        Example:
          >>> import jax.numpy as jnp
          >>> from gkl_jax import DiagGaussian
          >>> p = DiagGaussian(jnp.zeros((5, 4, 3)), std=jnp.ones(3))  # spread shared, (3,)
          >>> p[0].batch_shape, p[:2, 1].batch_shape, p[..., 1].batch_shape
          ((4,), (2,), (5,))
          >>> p[0].spread.shape  # still shared
          (3,)
        """
        batch = self.batch_shape
        entries, basic = _normalize_index(type(self).__name__, index, batch, self.event_size)

        def take(x: Any, trailing: int) -> Any:
            rest = (slice(None),) * trailing
            if basic:
                own = _field_index(entries, batch, _field_batch_shape(x, trailing))
                return x[(*own, *rest)]
            return _broadcast_field(x, trailing, batch)[(*entries, *rest)]

        return _map_fields(self, take)

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
      stderr: its standard error, same shape. For an ``Estimate`` (``stderr_ignores_bias`` is
        ``False``) the estimator is unbiased and ``value +- 2 * stderr`` covers the truth about
        95% of the time: gkl_jax measures it over many seeds for every estimator that returns one.
      stderr_ignores_bias: ``False`` here; ``True`` on a :class:`BiasedEstimate`. A class
        attribute, not a field: it is static (part of the pytree's type, so it survives ``jit``,
        ``vmap`` and ``tree_map``) and ``value, stderr = est`` still unpacks two arrays.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import Estimate
      >>> value, stderr = Estimate(jnp.float32(1.5), jnp.float32(0.1))
      >>> float(value)
      1.5
    """

    value: Float[Array, "*#b"]
    stderr: Float[Array, "*#b"]
    stderr_ignores_bias = False  # a class attribute (no annotation): not a field


class BiasedEstimate(Estimate):
    """An :class:`Estimate` whose ``stderr`` measures sampling variability only.

    The estimator has a bias that the standard error does not include, so ``value +- 2 * stderr``
    can miss the truth far more often than 5% of the time. Returned by the estimators that say so:
    :func:`gkl_jax.kl_from_samples` (finite-sample bias of the kNN estimators, model bias of the
    moment fit) and :func:`gkl_jax.kl_mc` with ``estimator="k2"`` (which estimates
    ``E_p[(log q/p)^2] / 2``, not the KL). Test for it with ``est.stderr_ignores_bias``; it is an
    ``Estimate`` in every other respect (same two fields, unpacking, pytree).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, kl_mc
      >>> p = DiagGaussian(jnp.zeros(2), jnp.zeros(2))
      >>> q = DiagGaussian(jnp.ones(2), jnp.zeros(2))
      >>> est = kl_mc(jax.random.key(0), p, q, num_samples=256, estimator="k2")
      >>> est.stderr_ignores_bias, type(est).__name__, isinstance(est, Estimate)
      (True, 'BiasedEstimate', True)
    """

    __slots__ = ()
    stderr_ignores_bias = True


def check_argument_values(fn: str, **args: Any) -> None:
    """Checked mode: :meth:`Distribution.check_values` of each argument that is a distribution
    (``check_argument_values("kl", p=p, q=q)``); other arguments (a callable log-density) are
    skipped. Outside the checked mode nothing is traced, and nothing is looked up (an eager call
    pays for no bound-method object)."""
    if not checks.value_checks_enabled():
        return
    for name, arg in args.items():
        if isinstance(arg, Distribution):
            arg.check_values(fn, name)


# ---------------------------------------------------------------------------------------------
# batch indexing: one implementation for every type, from the fields' trailing_axes
# ---------------------------------------------------------------------------------------------


def _map_fields(dist: Distribution, fn: Callable[[Any, int], Any]) -> Any:
    """``dist`` rebuilt (no ``__init__``) with each parameter ``x`` replaced by ``fn(x, k)``,
    ``k`` its field's ``trailing_axes``; a nested distribution is one parameter."""
    declared = {f.name: f.metadata.get(TRAILING_AXES) for f in dataclasses.fields(dist)}
    nested = lambda x: x is not dist and isinstance(x, Distribution)  # noqa: E731
    leaves, treedef = jax.tree_util.tree_flatten_with_path(dist, is_leaf=nested)
    out = []
    for path, leaf in leaves:
        key = path[0] if len(path) == 1 else None
        trailing = declared.get(key.name) if isinstance(key, jax.tree_util.GetAttrKey) else None
        if trailing is None:
            raise TypeError(
                f"{type(dist).__name__}: cannot index the batch axes of its field "
                f"'{jax.tree_util.keystr(path)}', which declares no trailing_axes; declare it with "
                "equinox.field(metadata={'trailing_axes': k}), k = its number of trailing "
                "non-batch axes"
            )
        out.append(fn(leaf, trailing))
    return jax.tree_util.tree_unflatten(treedef, out)


def _is_int(entry: Any) -> bool:
    """An integer index: a Python/NumPy int or a 0-d integer array (a traced one included)."""
    if isinstance(entry, bool | np.bool_):
        return False
    if isinstance(entry, int | np.integer):
        return True
    return (
        isinstance(entry, np.ndarray | jax.Array)
        and entry.ndim == 0
        and jnp.issubdtype(entry.dtype, jnp.integer)
    )


def _normalize_index(
    cls: str, index: Any, batch: tuple[int, ...], event_size: int
) -> tuple[list[Any], bool]:
    """``(entries, basic)``: the index with ``...`` expanded to exactly ``len(batch)`` axes (plus
    ``None`` entries); ``basic`` when it holds only ints, slices and ``None``."""
    entries = list(index) if isinstance(index, tuple) else [index]
    entries = [np.asarray(e) if isinstance(e, list) else e for e in entries]
    if any(isinstance(e, bool | np.bool_) for e in entries):
        raise TypeError(f"{cls}[...]: a bool index is not supported; index with ints or slices")
    if sum(e is Ellipsis for e in entries) > 1:
        raise IndexError(f"{cls}[...]: an index can only have a single ellipsis ('...')")

    def consumed(e: Any) -> int:
        if e is None or e is Ellipsis:
            return 0
        if isinstance(e, np.ndarray | jax.Array) and jnp.issubdtype(e.dtype, jnp.bool_):
            return e.ndim
        return 1

    used = sum(consumed(e) for e in entries)
    if used > len(batch):
        raise IndexError(
            f"{cls}[...]: too many indices: {used} for batch shape {batch}; only the batch axes "
            f"are indexed, never the event axis (size {event_size})"
        )
    fill = [slice(None)] * (len(batch) - used)
    if any(e is Ellipsis for e in entries):
        at = next(i for i, e in enumerate(entries) if e is Ellipsis)
        entries = [*entries[:at], *fill, *entries[at + 1 :]]
    else:
        entries = [*entries, *fill]
    basic = all(e is None or isinstance(e, slice) or _is_int(e) for e in entries)
    if basic:  # bounds of static ints (a size-1 broadcast parameter would not see them)
        axis = 0
        for e in entries:
            if e is None:
                continue
            if isinstance(e, int | np.integer) and not -batch[axis] <= e < batch[axis]:
                raise IndexError(
                    f"{cls}[...]: index {int(e)} is out of bounds for batch axis {axis} with size "
                    f"{batch[axis]} (batch shape {batch})"
                )
            axis += 1
    return entries, basic


def _field_batch_shape(x: Any, trailing: int) -> tuple[int, ...]:
    """The batch part of a parameter's shape (a nested distribution's leading batch axes)."""
    shape = x.batch_shape if isinstance(x, Distribution) else np.shape(x)
    return tuple(shape[: len(shape) - trailing])


def _field_index(entries: list[Any], batch: tuple[int, ...], own: tuple[int, ...]) -> tuple:
    """A basic index for a parameter whose batch shape ``own`` broadcasts to ``batch``.

    Axes it lacks (leading) are skipped, with the ``None`` entries before its first axis: their
    result axes lead the result, where broadcasting supplies them. A size-1 axis that broadcasts
    takes ``0`` for an int and stays whole for a slice (size 1 broadcasts to any length).
    """
    offset = len(batch) - len(own)
    out: list[Any] = []
    axis = 0
    for e in entries:
        if e is None:
            if axis >= offset:
                out.append(None)
            continue
        if axis >= offset:
            if own[axis - offset] == 1 and batch[axis] != 1:
                e = 0 if _is_int(e) else slice(None)
            out.append(e)
        axis += 1
    return tuple(out)


def _broadcast_field(x: Any, trailing: int, batch: tuple[int, ...]) -> Any:
    """A parameter broadcast to the full ``batch`` (for array indices)."""
    if isinstance(x, Distribution):
        shape = x.batch_shape
        target = (*batch, *shape[len(shape) - trailing :])
        return _map_fields(x, lambda y, k: _broadcast_field(y, k, target))
    x = jnp.asarray(x)
    return jnp.broadcast_to(x, (*batch, *x.shape[x.ndim - trailing :]))


def broadcast_batch(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of batch shapes (a tuple)."""
    return tuple(jnp.broadcast_shapes(*shapes))

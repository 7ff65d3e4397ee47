"""Shape checks at trace time, and the opt-in value-checked mode.

Two kinds of problems are told apart:

* **Shape problems** (latent sizes differ, batch shapes do not broadcast, a scalar where a vector is
  needed, an axis out of range) are known while tracing. They raise :class:`ValueError` at once,
  naming the function, the arguments and their shapes. Dtype problems raise :class:`TypeError`
  (see :func:`gkl_jax._numerics.compute_dtype`).
* **Value problems** (NaN or inf inputs, a variance or standard deviation that is not positive) are
  only known at run time, inside ``jit``. gkl_jax never clamps or hides them. Every public function
  carries ``checkify.debug_check`` assertions, which compile to nothing in normal use; wrapping a
  computation in :func:`checked` (or in ``chex.chexify``) turns them into reported errors that name
  the function, the argument and how many entries are bad.

Example:
  >>> import jax, jax.numpy as jnp
  >>> import gkl_jax
  >>> mu, bad_var = jnp.zeros(3), jnp.array([1.0, -2.0, 1.0])
  >>> err, value = gkl_jax.checked(gkl_jax.kl_diag)(mu, bad_var, mu, jnp.ones(3), param="var")
  >>> print(err.get())  # doctest: +ELLIPSIS
  kl_diag: argument 'log_var_p (a var)' must be positive: 1 of 3 entries are <= 0 ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

__all__ = [
    "check_axis",
    "check_event_shapes",
    "check_finite",
    "check_positive",
    "checked",
]


def check_event_shapes(
    fn: str, names: Sequence[str], shapes: Sequence[tuple[int, ...]]
) -> tuple[tuple[int, ...], int]:
    """Checks arrays that share a trailing latent axis and broadcast over leading batch axes.

    Args:
      fn: the public function's name, used in messages.
      names: the arguments' names.
      shapes: their shapes.

    Returns:
      ``(batch_shape, event_size)``: the broadcast batch shape and the common latent size.

    Raises:
      ValueError: an argument is a scalar, the latent (last-axis) sizes differ, or the batch
        shapes do not broadcast; the message names the arguments and their shapes.
    """
    for name, shape in zip(names, shapes, strict=True):
        if len(shape) == 0:
            raise ValueError(
                f"{fn}: argument '{name}' is a scalar (shape ()); it needs a trailing latent axis, "
                "e.g. shape (d,) or (batch, d)"
            )
    first_name, first = names[0], shapes[0]
    for name, shape in zip(names[1:], shapes[1:], strict=True):
        if shape[-1] != first[-1]:
            raise ValueError(
                f"{fn}: latent sizes (last axis) differ: '{first_name}' has shape {first} and "
                f"'{name}' has shape {shape} ({first[-1]} vs {shape[-1]})"
            )
    batch: tuple[int, ...] = ()
    seen: list[str] = []
    for name, shape in zip(names, shapes, strict=True):
        try:
            batch = jnp.broadcast_shapes(batch, shape[:-1])
        except ValueError:
            pairs = zip(names, shapes, strict=True)
            others = ", ".join(f"'{n}' {s}" for n, s in pairs if n in seen)
            raise ValueError(
                f"{fn}: batch shapes do not broadcast: '{name}' has shape {shape}, against {others}"
            ) from None
        seen.append(name)
    return tuple(batch), first[-1]


def check_axis(fn: str, axis: Any, ndim: int) -> tuple[int, ...] | None:
    """Normalizes a numpy-style ``axis`` (int, tuple of ints, ``()`` or ``None``) for ``ndim`` axes.

    Raises:
      ValueError: an axis is out of range or repeated. TypeError: ``axis`` is not an int/tuple/None.
    """
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else axis
    is_int = lambda a: isinstance(a, int) and not isinstance(a, bool)  # noqa: E731
    if not isinstance(axes, tuple | list) or not all(is_int(a) for a in axes):
        raise TypeError(f"{fn}: axis must be an int, a tuple of ints, () or None; got {axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{fn}: axis {a} is out of range for a result with {ndim} axes")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: repeated axis in {axis!r}")
    return tuple(out)


def check_finite(fn: str, name: str, x: jax.Array) -> None:
    """Checked mode only: reports NaN or inf entries of argument ``name``."""
    bad = jnp.sum(~jnp.isfinite(x))
    checkify.debug_check(
        bad == 0,
        f"{fn}: argument '{name}' must be finite: {{bad}} of {x.size} entries are NaN or inf",
        bad=bad,
    )


def check_positive(fn: str, name: str, x: jax.Array) -> None:
    """Checked mode only: reports entries of argument ``name`` that are not > 0 (NaN included)."""
    bad = jnp.sum(~(x > 0))
    checkify.debug_check(
        bad == 0,
        f"{fn}: argument '{name}' must be positive: {{bad}} of {x.size} entries are <= 0 or NaN",
        bad=bad,
    )


def checked(fn: Callable[..., Any], *, errors=checkify.user_checks) -> Callable[..., Any]:
    """Runs ``fn`` in gkl_jax's value-checked mode.

    ``checked(fn)(*args)`` returns ``(error, out)`` exactly like ``jax.experimental.checkify``:
    ``error.get()`` is ``None`` when all checks passed, otherwise a message naming the function and
    argument at fault; ``error.throw()`` raises it. The wrapped function can itself be jitted,
    vmapped or differentiated. ``chex.chexify(fn)`` works as well and raises directly.

    Args:
      fn: any function that calls gkl_jax.
      errors: the checkify error set; the default reports gkl_jax's own checks. Add
        ``checkify.nan_checks`` to also locate NaNs produced inside ``fn``.

    Returns:
      the checked function, returning ``(error, out)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import gkl_jax
      >>> checked_kl = jax.jit(gkl_jax.checked(gkl_jax.kl_diag_standard))
      >>> err, value = checked_kl(jnp.array([0.0, jnp.nan]), jnp.zeros(2))
      >>> print(err.get())  # doctest: +ELLIPSIS
      kl_diag_standard: argument 'mean' must be finite: 1 of 2 entries are NaN or inf ...
    """
    return checkify.checkify(fn, errors=errors)

"""``compiled``: an eager call of a public function runs one executable.

Called outside any transformation, a function made of many small ``jax.numpy`` operations
dispatches each of them from Python (a few microseconds apiece): ``kl_mc`` is ~100 of them,
the mixture functions ~50. :func:`compiled` runs such a call through a ``jax.jit`` of the same
function instead, with its configuration arguments (``alpha``, ``num_samples``, ``axis``, ...)
static. Nothing else changes:

* the argument checks that raise at trace time raise the same errors (tracing runs them);
* the checked mode is part of every jit cache key (``checks._CHECKING``), so a call inside
  :func:`gkl_jax.checked` traces again with its value checks;
* a call whose arguments cannot be jitted -- a static option that is not hashable (an array
  ``alpha``), a leaf that is not an array (a callable log-density ``q``, a peer library's
  distribution converted inside the function) -- or that already holds tracers (the caller's
  ``jit``, ``vmap`` or ``grad``) calls the function itself, as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

__all__ = ["compiled"]

F = TypeVar("F", bound=Callable[..., Any])


def _hashable(value: Any) -> bool:
    if isinstance(value, jax.Array | np.ndarray):
        return False
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _jittable(args: Sequence[Any], kwargs: dict[str, Any], static: frozenset[str]) -> bool:
    """Whether ``jax.jit(fn, static_argnames=static)(*args, **kwargs)`` computes the same thing:
    every dynamic leaf a concrete array (a Python number stays on the direct path, where the
    function's own checks see it as given), every static value hashable."""
    dynamic = list(args)
    for name, value in kwargs.items():
        if name in static:
            if not _hashable(value):
                return False
        else:
            dynamic.append(value)
    for leaf in jax.tree_util.tree_leaves(dynamic):
        if not isinstance(leaf, jax.Array | np.ndarray) or isinstance(leaf, jax.core.Tracer):
            return False
    return True


def compiled(*, static: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: eager calls of ``fn`` run ``jax.jit(fn, static_argnames=static)``.

    ``static`` names keyword-only options (they must be passed by keyword). Calls on tracers,
    or with arguments a jit cannot take, call ``fn`` directly (see the module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax._src.eager import compiled
      >>> @compiled(static=("power",))
      ... def norm(x, *, power=2):
      ...     return jnp.sum(jnp.abs(x) ** power) ** (1 / power)
      >>> float(norm(jnp.array([3.0, 4.0])))  # one compiled call
      5.0
    """
    static_names = frozenset(static)

    def decorator(fn: F) -> F:
        jitted = jax.jit(fn, static_argnames=tuple(static_names))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _jittable(args, kwargs, static_names):
                return jitted(*args, **kwargs)
            return fn(*args, **kwargs)

        wrapper.eager_jit = jitted  # type: ignore[attr-defined]  # its cache, for tests
        return wrapper  # type: ignore[return-value]

    return decorator

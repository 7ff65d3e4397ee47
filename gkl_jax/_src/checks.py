"""Shape checks at trace time, and the opt-in value-checked mode.

Two kinds of problems are told apart:

* **Shape problems** (latent sizes differ, batch shapes do not broadcast, a scalar where a vector is
  needed, an axis out of range) are known while tracing. They raise :class:`ValueError` at once,
  naming the function, the arguments and their shapes. Dtype problems raise :class:`TypeError`
  (see :func:`gkl_jax._src.numerics.compute_dtype`). These are plain Python raises, not chex
  assertions: ``chex.disable_asserts()`` turns chex's off, and a latent-size mismatch would then
  broadcast silently into a wrong number.
* **Value problems** (NaN or inf inputs, a variance or standard deviation that is not positive) are
  only known at run time, inside ``jit``. gkl_jax never clamps or hides them. Wrapping a
  computation in :func:`checked` turns on the value checks while it is traced, and reports a failed
  one as an error naming the function, the argument and how many entries are bad. Distributions
  are checked by their constructors and again by every function that takes one (``kl``, the
  divergences, ``kl_mc``, the mixture functions), through one method per type,
  :meth:`gkl_jax.Distribution.check_values`: a distribution built outside the checked mode (or
  rebuilt by JAX, which skips ``__init__``) is reported as ``kl: argument 'p.mean' ...``.

The value checks cost nothing unless asked for: outside :func:`checked` (or the :func:`checking`
context, for ``chex.chexify``) the public functions emit no check primitive and no reduction that
only feeds one, so a jitted call keeps JAX's fast dispatch path. The switch is a
``jax.make_user_context`` value, part of every ``jit`` cache key: a function jitted outside the
checked mode is traced again inside it, never served its unchecked trace (nor the reverse).

Example:
  >>> import jax, jax.numpy as jnp
  >>> import gkl_jax
  >>> mu, bad_var = jnp.zeros(3), jnp.array([1.0, -2.0, 1.0])
  >>> err, value = gkl_jax.checked(gkl_jax.kl_diag)(mu, bad_var, mu, jnp.ones(3), param="var")
  >>> print(err.get())  # doctest: +ELLIPSIS
  kl_diag: argument 'log_var_p (a var)' must be positive: 1 of 3 entries are <= 0 ...
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from gkl_jax._src.interop_hook import as_distribution
from gkl_jax._src.numerics import compute_dtype

__all__ = [
    "check_axis",
    "check_event_shapes",
    "check_finite",
    "check_matrix_shapes",
    "check_nonzero",
    "check_param",
    "check_positive",
    "check_value",
    "checked",
    "checking",
    "sample_args",
    "static_int",
    "static_shape",
]

# The trace-time switch of the checked mode; in every jit cache key (see the module docstring).
_CHECKING = jax.make_user_context(False)


def value_checks_enabled() -> bool:
    """Whether the function being traced should emit value checks (inside :func:`checked`)."""
    return bool(_CHECKING.value)


@contextlib.contextmanager
def checking() -> Iterator[None]:
    """Context in which gkl_jax functions traced emit their value checks.

    :func:`checked` enters it for you. Use it directly with another checkify front end, e.g.
    ``with gkl_jax.checking(): chex.chexify(fn, async_check=False)(x)``.
    """
    with _CHECKING(True):
        yield


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
    if all(shape == first for shape in shapes[1:]):  # the common case, without broadcasting
        return tuple(first[:-1]), first[-1]
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


def check_value(bad_fn: Callable[[], jax.Array], message: str) -> None:
    """Checked mode only: reports ``message`` (with ``{bad}`` filled in) when ``bad_fn() != 0``.

    ``bad_fn`` is called only in the checked mode, so outside it nothing is traced at all.
    """
    if not value_checks_enabled():
        return
    bad = bad_fn()
    checkify.debug_check(bad == 0, message, bad=bad)


def check_finite(fn: str, name: str, x: jax.Array) -> None:
    """Checked mode only: reports NaN or inf entries of argument ``name``."""
    check_value(
        lambda: jnp.sum(~jnp.isfinite(x)),
        f"{fn}: argument '{name}' must be finite: {{bad}} of {np.size(x)} entries are NaN or inf",
    )


def check_positive(fn: str, name: str, x: jax.Array) -> None:
    """Checked mode only: reports entries of argument ``name`` that are not > 0 (NaN included)."""
    check_value(
        lambda: jnp.sum(~(x > 0)),
        f"{fn}: argument '{name}' must be positive: {{bad}} of {np.size(x)} entries are <= 0 or "
        "NaN",
    )


def check_nonzero(fn: str, name: str, x: jax.Array, why: str = "") -> None:
    """Checked mode only: reports entries of argument ``name`` that are 0 or NaN (``why`` is
    appended to the message, e.g. that a negative entry is valid)."""
    check_value(
        lambda: jnp.sum(~(jnp.abs(x) > 0)),
        f"{fn}: argument '{name}' must be non-zero{why}: {{bad}} of {np.size(x)} entries are 0 "
        "or NaN",
    )


def check_param(fn: str, param: Any, allowed: tuple[str, ...] = ("log_var", "var", "std")) -> str:
    """Validates a ``param=`` option ("log_var", "var" or "std")."""
    if param not in allowed:
        raise ValueError(f"{fn}: param must be one of {allowed}, got {param!r}")
    return param


def static_int(fn: str, name: str, value: Any) -> int:
    """A static integer option: a Python or NumPy int (not a bool, a float or an array)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{fn}: {name} must be a Python int, got {type(value).__name__} {value!r}")
    return int(value)


def static_shape(fn: str, name: str, value: Any) -> tuple[int, ...]:
    """A static shape option: a sequence of non-negative ints, or an int ``n`` meaning ``(n,)``.

    An int is accepted as numpyro, TFP and distrax accept it (``sample(key, 5)``).

    Raises:
      TypeError: not an int or a sequence of ints (a bool, a float, an array are not).
      ValueError: a negative entry.
    """
    is_int = lambda a: isinstance(a, int | np.integer) and not isinstance(a, bool)  # noqa: E731
    shape = (value,) if is_int(value) else value
    if not isinstance(shape, tuple | list) or not all(is_int(s) for s in shape):
        raise TypeError(
            f"{fn}: {name} must be an int or a tuple of ints, got {type(value).__name__} {value!r}"
        )
    if any(s < 0 for s in shape):
        raise ValueError(f"{fn}: {name} must not have negative entries, got {tuple(shape)}")
    return tuple(int(s) for s in shape)


def check_key(fn: str, key: Any) -> None:
    """A PRNG key: a typed key array (``jax.random.key``) or a raw ``uint32`` one
    (``jax.random.PRNGKey``), concrete or traced.

    Raises:
      TypeError: anything else (an int seed, a float array), naming ``key``.
    """
    dtype = getattr(key, "dtype", None)
    if dtype is not None:
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            return
        if dtype == np.uint32 and np.ndim(key) >= 1:
            return
        got = f"an array of dtype {dtype} and shape {np.shape(key)}"
    else:
        got = f"{type(key).__name__} {key!r}"
    raise TypeError(f"{fn}: argument 'key' must be a PRNG key such as jax.random.key(0), got {got}")


def sample_args(fn: str, key: Any, sample_shape: Any) -> tuple[int, ...]:
    """Checks the ``(key, sample_shape)`` of a ``sample`` method; returns the shape tuple."""
    check_key(fn, key)
    return static_shape(fn, "sample_shape", sample_shape)


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
    check_event_shapes(fn, (vec_name,), (vec_shape,))  # a scalar vector raises
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


def check_cholesky(fn: str, name: str, chol: jax.Array) -> None:
    """Checked mode: a Cholesky factor with a NaN (the matrix was not positive definite)."""
    check_value(
        lambda: jnp.sum(~jnp.all(jnp.isfinite(chol), axis=(-2, -1))),
        f"{fn}: argument '{name}' is not symmetric positive definite: the Cholesky "
        f"factorization failed for {{bad}} of {int(np.prod(chol.shape[:-2]))} matrices",
    )


def check_gaussian_pair(fn: str, p: Any, q: Any) -> tuple[Any, Any, tuple[int, ...], int, Any]:
    """``(p, q, batch, d, dtype)`` for two Gaussians, both cast to their common compute dtype.

    The dtype policy of :func:`gkl_jax._src.numerics.compute_dtype` for Gaussian pytrees (whose
    leaves may have been cast by ``jax.tree_util.tree_map``): bfloat16/float16 become float32.

    Raises:
      TypeError: ``p`` or ``q`` is not a gkl_jax Gaussian, or a parameter is not a float array
        (named as ``p.mean``, ``q.scale_tril``, ...).
      ValueError: the latent sizes differ or the batch shapes do not broadcast.

    In the checked mode it also emits both distributions' value checks
    (:meth:`~gkl_jax.Distribution.check_values`), named ``fn: argument 'p.mean' ...``.
    """
    from gkl_jax._src.base import Gaussian  # local import: base has no dependencies on checks

    p, q = as_distribution(p), as_distribution(q)  # distrax / TFP / numpyro Gaussians
    named = []
    for arg, g in (("p", p), ("q", q)):
        if not isinstance(g, Gaussian):
            raise TypeError(
                f"{fn}: argument '{arg}' must be a DiagGaussian, FullGaussian or "
                f"LowRankGaussian, got {type(g).__name__}"
            )
        named.extend(g.named_leaves(arg))
    names, leaves = zip(*named, strict=True)
    dtype = compute_dtype(fn, names, leaves)  # a dtype error first, before any value check
    if value_checks_enabled():
        for arg, g in (("p", p), ("q", q)):
            g.check_values(fn, arg)
    p, q = (jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), g) for g in (p, q))
    batch, d = check_event_shapes(
        fn, ("p", "q"), ((*p.batch_shape, p.event_size), (*q.batch_shape, q.event_size))
    )
    return p, q, batch, d, dtype


def checked(fn: Callable[..., Any], *, errors=checkify.user_checks) -> Callable[..., Any]:
    """Runs ``fn`` in gkl_jax's value-checked mode.

    ``checked(fn)(*args)`` returns ``(error, out)`` exactly like ``jax.experimental.checkify``:
    ``error.get()`` is ``None`` when all checks passed, otherwise a message naming the function and
    argument at fault; ``error.throw()`` raises it. The wrapped function can itself be jitted,
    vmapped or differentiated. With ``chex.chexify`` (which raises directly), trace inside
    :func:`checking`. Outside the checked mode the checks are not traced at all (zero cost).

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
    checkified = checkify.checkify(fn, errors=errors)

    @functools.wraps(fn)
    def run_checked(*args: Any, **kwargs: Any) -> tuple[checkify.Error, Any]:
        with checking():
            return checkified(*args, **kwargs)

    return run_checked

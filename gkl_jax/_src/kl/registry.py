"""``kl(p, q)``: closed-form KL divergences dispatched on the distribution types.

The kernels register themselves here (:mod:`gkl_jax._src.kl.diag`,
:mod:`gkl_jax._src.kl.structured`); users add pairs with :func:`register_kl`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import broadcast_batch, check_argument_values
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.interop_hook import as_distribution

__all__ = ["Axis", "kl", "kl_op", "kl_terms", "reduce_pair", "register_kl", "register_kl_terms"]

Axis = int | tuple[int, ...] | None


def _no_closed_form(type_p: type, type_q: type) -> str:
    return (
        f"kl: no closed form for KL({type_p.__name__} || {type_q.__name__}). "
        "Estimate it by Monte Carlo instead: "
        "gkl_jax.kl_mc(key, p, q, num_samples=1024) returns the estimate and its "
        "standard error."
    )


kl_op = Operation("kl", arity=2, missing=_no_closed_form)


def register_kl(type_p: type, type_q: type, *, override: bool = False):
    """Decorator registering ``fn(p, q)`` as the closed-form KL for ``(type_p, type_q)``.

    Lookup follows TensorFlow Probability's rule: the registered pair *closest* to the
    arguments' types wins (the sum of the two classes' positions in the arguments' method
    resolution orders), so a subclass inherits its parents' closed forms unless it registers
    its own. Registering a pair twice raises ``ValueError`` unless ``override=True``.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, kl, register_kl
      >>> class Isotropic(DiagGaussian):
      ...     pass
      >>> @register_kl(Isotropic, Isotropic)
      ... def _kl_iso(p, q):
      ...     return kl(DiagGaussian(p.mean, p.spread), DiagGaussian(q.mean, q.spread))
      >>> float(kl(Isotropic(jnp.zeros(2), jnp.zeros(2)), Isotropic(jnp.ones(2), jnp.zeros(2))))
      1.0
    """
    return kl_op.register(type_p, type_q, override=override)


# Per-dimension terms, keyed by the KL implementation they sum to (so a pair whose KL a user
# registers anew never gets the terms of another implementation).
_TERMS: dict[Callable[..., Any], Callable[..., Any]] = {}


def register_kl_terms(kl_fn: Callable[..., Any]):
    """Decorator registering ``fn(p, q) -> (*batch, d)`` as the per-dimension terms of the KL
    implementation ``kl_fn`` (whose value is their sum over the last axis). Only pairs with
    independent latent dimensions (diagonal ones) have such terms."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TERMS[kl_fn] = fn
        return fn

    return decorator


def kl_terms(p: Any, q: Any) -> jax.Array | None:
    """The per-dimension KL(p || q) terms, ``(*batch, d)``, or ``None`` when the pair's KL has
    none (its dimensions are correlated). No closed form at all raises ``kl``'s TypeError."""
    impl = kl_op.lookup(type(p), type(q))
    if impl is None:
        return kl_op(p, q)  # raises the no-closed-form TypeError
    terms = _TERMS.get(impl)
    return None if terms is None else terms(p, q)


def reduce_pair(
    fn: str,
    p: Any,
    q: Any,
    axis: Axis,
    per_example: Callable[[], jax.Array],
    per_dimension: Callable[[], jax.Array | None],
) -> jax.Array:
    """The ``axis`` reduction of a per-dimension quantity of a pair, with ``numpy.sum`` semantics
    on the ``(*batch, d)`` layout (batch = the broadcast batch shape of ``p`` and ``q``).

    An ``axis`` that sums the latent axis (the default ``-1``, ``None``, or a tuple holding it)
    sums ``per_example()`` (shape ``batch``) over the other axes it names: every pair supports
    it. An ``axis`` that keeps the latent axis needs ``per_dimension()`` (``None`` means the pair
    has no per-dimension terms: a ValueError naming the types).
    """
    if axis == -1 and isinstance(axis, int) and not isinstance(axis, bool):
        return per_example()
    batch = broadcast_batch(p.batch_shape, q.batch_shape)
    ndim = len(batch) + 1
    axes = checks.check_axis(fn, axis, ndim)
    if axes is None or ndim - 1 in axes:
        out = jnp.broadcast_to(per_example(), batch)
        rest = tuple(a for a in (range(ndim) if axes is None else axes) if a != ndim - 1)
        return jnp.sum(out, axis=rest) if rest else out
    terms = per_dimension()
    if terms is None:
        raise ValueError(
            f"{fn}: axis={axis!r} keeps the latent axis, but ({type(p).__name__}, "
            f"{type(q).__name__}) has no per-dimension terms: its latent dimensions are "
            "correlated (only two DiagGaussians have them). Sum over the latent axis: axis=-1 "
            f"(one value per example), None (the total), or a tuple of axes that holds -1 "
            f"(or {ndim - 1})"
        )
    terms = jnp.broadcast_to(terms, (*batch, terms.shape[-1]))
    return jnp.sum(terms, axis=axes) if axes else terms


def kl(p: Any, q: Any, *, axis: Axis = -1) -> Float[Array, "..."]:
    """KL(p || q) in closed form, dispatched on the types of ``p`` and ``q``.

    By default reduces over the latent axis: the result has the broadcast batch shape of ``p``
    and ``q``, one value per example.

    Args:
      p: a gkl_jax distribution.
      q: a gkl_jax distribution.
      axis: axes of the ``(*batch, d)`` per-dimension terms to sum, with ``numpy.sum`` semantics
        as in :func:`gkl_jax.kl_diag`: ``-1`` (default) one value per example, ``()`` the
        per-dimension terms, ``None`` the total, ``(0, -1)`` the sum over the first batch axis
        and the latent axis, and so on. Every pair supports an ``axis`` that includes the
        latent axis (or ``None``); an ``axis`` that keeps it (per-dimension terms) exists only
        for two :class:`~gkl_jax.DiagGaussian` s, whose dimensions are independent.

    Returns:
      ``KL(p || q)``: shape ``broadcast(p.batch_shape, q.batch_shape)`` by default, otherwise
      that of ``numpy.sum`` over ``axis`` of a ``(*batch, d)`` array.

    Raises:
      TypeError: no closed form is registered for the pair; the message names both types and
        shows the Monte Carlo call that estimates it instead.
      ValueError: the latent sizes differ, the batch shapes do not broadcast, ``axis`` is out of
        range, or it keeps the latent axis of a pair without per-dimension terms (the message
        names both types).

    In the checked mode (:func:`gkl_jax.checked`) both arguments' values are checked here,
    before dispatch, whatever the pair (a pair registered with :func:`register_kl` too) and
    wherever the distributions were built: ``kl: argument 'p.mean' must be finite ...``.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, kl
      >>> p = DiagGaussian.from_std(jnp.zeros(4), jnp.full(4, 1.00001))
      >>> q = DiagGaussian.from_std(jnp.zeros(4), jnp.ones(4))
      >>> float(kl(p, q))  # float32 1.00001 is 1.0000100136; exact KL 4.01085831e-10
      4.0108583...e-10
      >>> kl(p, q, axis=()).shape  # per-dimension terms (diagonal pairs)
      (4,)
    """
    p, q = as_distribution(p), as_distribution(q)  # distrax / TFP / numpyro Gaussians
    check_argument_values("kl", p=p, q=q)
    return reduce_pair("kl", p, q, axis, lambda: kl_op(p, q), lambda: kl_terms(p, q))

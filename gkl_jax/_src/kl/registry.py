"""``kl(p, q)``: closed-form KL divergences dispatched on the distribution types.

The kernels register themselves here (:mod:`gkl_jax._src.kl.diag`,
:mod:`gkl_jax._src.kl.structured`); users add pairs with :func:`register_kl`.
"""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float

from gkl_jax._src.base import check_argument_values
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.interop_hook import as_distribution

__all__ = ["kl", "kl_op", "register_kl"]


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


def kl(p: Any, q: Any) -> Float[Array, "*#b"]:
    """KL(p || q) in closed form, dispatched on the types of ``p`` and ``q``.

    Reduces over the latent axis: the result has the broadcast batch shape of ``p`` and ``q``.

    Args:
      p: a gkl_jax distribution.
      q: a gkl_jax distribution.

    Returns:
      ``KL(p || q)``, shape ``broadcast(p.batch_shape, q.batch_shape)``.

    Raises:
      TypeError: no closed form is registered for the pair; the message names both types and
        shows the Monte Carlo call that estimates it instead.
      ValueError: the latent sizes differ or the batch shapes do not broadcast.

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
    """
    p, q = as_distribution(p), as_distribution(q)  # distrax / TFP / numpyro Gaussians
    check_argument_values("kl", p=p, q=q)
    return kl_op(p, q)

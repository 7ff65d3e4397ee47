"""The core's one hook for foreign Gaussians: distrax, TensorFlow Probability on JAX, numpyro.

:func:`as_distribution` is called at the entry of :func:`gkl_jax.kl`, of
:func:`gkl_jax._src.checks.check_gaussian_pair` (so every divergence) and for both arguments of
:func:`gkl_jax.kl_mc`. It returns a gkl_jax distribution unchanged; an object of a class with a
converter registered on :data:`converters` is converted; an object of a class defined by one of
the peer libraries loads :mod:`gkl_jax.interop`, which registers that library's converters, and is
converted if its class is supported. Anything else is returned unchanged (a callable
log-density for ``kl_mc``, a distrax ``Laplace``, ...), so the caller's own error applies.

The core never imports a peer library: a peer object can only exist when its library has been
imported already, and the converters of a library are registered only then.
"""

from __future__ import annotations

from typing import Any

from gkl_jax._src.dispatch import Operation

__all__ = ["PEERS", "NoConverter", "as_distribution", "converters"]

# Top-level module names of the libraries whose objects gkl_jax.interop converts.
PEERS = ("distrax", "tensorflow_probability", "numpyro")

# foreign class -> fn(obj) returning a gkl_jax Gaussian (gkl_jax.interop registers them)
converters = Operation("as_gaussian", arity=1)


class NoConverter(TypeError):
    """``as_gaussian``'s error for an object of a class without a converter (also raised from
    inside a converter, for an ``Independent`` over such a class): the hook returns the object
    unchanged then, so that the consumer's own message applies."""


def as_distribution(obj: Any) -> Any:
    """``obj`` as a gkl_jax distribution when it can be converted; else ``obj`` itself.

    A gkl_jax distribution (no converter is registered for one) and any other object of a class
    without a converter cost one cached dictionary lookup and a string test, at trace time only;
    nothing inside compiled code. A converter's own error (a peer Gaussian that gkl_jax cannot
    hold exactly) propagates, except :class:`NoConverter` (a wrapper over a class without a
    converter), which returns ``obj``.
    """
    cls = type(obj)
    fn = converters.lookup(cls)
    if fn is None:
        if cls.__module__.partition(".")[0] not in PEERS:
            return obj
        from gkl_jax.interop._core import converter_for  # registers the library's converters

        fn = converter_for(cls)
        if fn is None:
            return obj
    try:
        return fn(obj)
    except NoConverter:  # e.g. an Independent over a Laplace: not a Gaussian
        return obj

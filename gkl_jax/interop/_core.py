"""The peer-free part of gkl_jax.interop: loading a library's converters, the public functions,
and the shape helpers the three libraries share (scalar events, ``Independent``, expansion).

Nothing here imports distrax, TFP or numpyro; ``_distrax.py``, ``_tfp.py`` and ``_numpyro.py``
do, and each is imported only when an object of its library is converted (the library is then
imported already) or a conversion to it is asked for.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jax.typing import ArrayLike

from gkl_jax._src.base import Distribution, Gaussian
from gkl_jax._src.distributions.diag import DiagGaussian, Param
from gkl_jax._src.interop_hook import NoConverter, converters

__all__ = [
    "LIBRARIES",
    "as_gaussian",
    "convert",
    "converter_for",
    "expand",
    "independent",
    "register_converter",
    "scalar_event",
    "to_distrax",
    "to_numpyro",
    "to_tfp",
]

_INSTALL = 'pip install "gkl_jax[interop]"'

# library name -> (the peer module that must be importable, gkl_jax's module for it)
LIBRARIES = {
    "distrax": ("distrax", "gkl_jax.interop._distrax"),
    "tfp": ("tensorflow_probability.substrates.jax", "gkl_jax.interop._tfp"),
    "numpyro": ("numpyro.distributions", "gkl_jax.interop._numpyro"),
}

_SUPPORTED = (
    "distrax: Normal, LogStddevNormal, Independent, MultivariateNormalDiag, "
    "MultivariateNormalTri, MultivariateNormalFullCovariance, MultivariateNormalDiagPlusLowRank "
    "(and any MultivariateNormalFromBijector); TFP on JAX: Normal, Independent, "
    "MultivariateNormalDiag, MultivariateNormalTriL, MultivariateNormalFullCovariance, "
    "MultivariateNormalDiagPlusLowRank (and any MultivariateNormalLinearOperator), "
    "MultivariateNormalDiagPlusLowRankCovariance; numpyro: Normal, Independent (.to_event), "
    "ExpandedDistribution (.expand), MultivariateNormal, LowRankMultivariateNormal"
)


def _library_of(cls: type) -> str | None:
    """``"distrax"``, ``"tfp"`` (the JAX substrate only) or ``"numpyro"`` for a peer class."""
    module = cls.__module__
    if module.partition(".")[0] == "distrax":
        return "distrax"
    if module.startswith("tensorflow_probability.substrates.jax."):
        return "tfp"
    if module.partition(".")[0] == "numpyro":
        return "numpyro"
    return None


def _load(library: str) -> Any:
    """Imports gkl_jax's module for ``library`` (which imports the library and registers its
    converters); an ImportError says which extra to install."""
    peer, module = LIBRARIES[library]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"gkl_jax.interop: converting to or from {library} needs {peer} importable with "
            f"this JAX ({exc}); install the extra: {_INSTALL}"
        ) from exc


def converter_for(cls: type) -> Callable[[Any], Gaussian] | None:
    """The converter registered for ``cls`` (after registering its library's), or ``None``."""
    fn = converters.lookup(cls)
    if fn is None:
        library = _library_of(cls)
        if library is not None:
            _load(library)
            fn = converters.lookup(cls)
    return fn


def register_converter(cls: type, *, override: bool = False):
    """Decorator registering ``fn(obj) -> Gaussian`` as the converter for instances of ``cls``.

    Once registered, instances of ``cls`` (and of its subclasses, by the closest-class rule of
    :func:`gkl_jax.register_kl`) are accepted by :func:`as_gaussian`, :func:`gkl_jax.kl`, every
    divergence and :func:`gkl_jax.kl_mc`. Registering a class twice raises ``ValueError`` unless
    ``override=True``.

    Example:
      >>> import jax.numpy as jnp
      >>> import gkl_jax
      >>> from gkl_jax.interop import register_converter
      >>> class MyNormal:  # another library's diagonal Gaussian
      ...     def __init__(self, mu, sigma):
      ...         self.mu, self.sigma = mu, sigma
      >>> @register_converter(MyNormal)
      ... def _(obj):
      ...     return gkl_jax.DiagGaussian(obj.mu, std=obj.sigma)
      >>> p = MyNormal(jnp.zeros(2), jnp.ones(2))
      >>> float(gkl_jax.kl(p, gkl_jax.DiagGaussian(jnp.ones(2), jnp.zeros(2))))
      1.0
    """
    return converters.register(cls, override=override)


def as_gaussian(obj: Any) -> Gaussian:
    """A distrax, TFP-on-JAX or numpyro Gaussian as the gkl_jax Gaussian it is.

    Parametrizations are kept where exactness depends on them: a scale stays a standard
    deviation (``DiagGaussian(mean, std=scale)``), a triangular scale stays a
    :class:`~gkl_jax.FullGaussian` factor, numpyro's ``LowRankMultivariateNormal`` becomes a
    :class:`~gkl_jax.LowRankGaussian`. The conversions, library by library, are listed in the
    :mod:`gkl_jax.interop` docstring. A gkl_jax Gaussian is returned as it is.

    :func:`gkl_jax.kl`, the divergences and :func:`gkl_jax.kl_mc` call this themselves, so they
    accept these objects directly; call it to keep the converted distribution.

    Args:
      obj: a supported peer distribution, a gkl_jax Gaussian, or an instance of a class
        registered with :func:`register_converter`.

    Returns:
      A :class:`~gkl_jax.DiagGaussian`, :class:`~gkl_jax.FullGaussian` or
      :class:`~gkl_jax.LowRankGaussian` with the peer's batch shape and event size (a scalar-event
      ``Normal`` has event size 1; an ``Independent`` over several axes has their product).

    Raises:
      TypeError: ``obj`` is of a class with no converter (the message lists the supported ones),
        is a gkl_jax distribution that is not a Gaussian, or is a peer Gaussian that no gkl_jax
        type holds exactly (an ``Independent`` over a full-covariance Gaussian).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian
      >>> from gkl_jax.interop import as_gaussian
      >>> p = DiagGaussian(jnp.zeros(2), jnp.zeros(2))
      >>> as_gaussian(p) is p
      True
    """
    if isinstance(obj, Gaussian):
        return obj
    if isinstance(obj, Distribution):
        raise TypeError(
            f"as_gaussian: {type(obj).__name__} is a gkl_jax distribution but not a Gaussian"
        )
    cls = type(obj)
    fn = converter_for(cls)
    if fn is None:
        where = f"{cls.__module__}.{cls.__qualname__}"
        hint = ""
        if cls.__module__.startswith("tensorflow_probability") and _library_of(cls) is None:
            hint = " (TFP is supported on its JAX substrate: tensorflow_probability.substrates.jax)"
        raise NoConverter(
            f"as_gaussian: no converter for {where}{hint}. Supported: {_SUPPORTED}; other "
            "classes can be added with gkl_jax.interop.register_converter"
        )
    return fn(obj)


def convert(p: Any, library: str) -> Any:
    """``p`` (a gkl_jax Gaussian, or anything :func:`as_gaussian` accepts) as a ``library`` object.

    ``library`` is ``"distrax"``, ``"tfp"`` (TensorFlow Probability on JAX) or ``"numpyro"``.
    A :class:`~gkl_jax.DiagGaussian` becomes distrax's ``MultivariateNormalDiag`` (a ``log_var``
    one: ``Independent(LogStddevNormal(mean, log_var / 2), 1)``, exactly), TFP's
    ``MultivariateNormalDiag`` or numpyro's ``Normal(mean, std).to_event(1)``; a
    :class:`~gkl_jax.FullGaussian` becomes ``MultivariateNormalTri`` / ``MultivariateNormalTriL``
    / ``MultivariateNormal(scale_tril=...)``; a :class:`~gkl_jax.LowRankGaussian` becomes
    distrax's ``MultivariateNormalDiagPlusLowRank`` (an exact square root of ``W W^T + Psi``, see
    :mod:`gkl_jax.interop`), TFP's ``MultivariateNormalDiagPlusLowRankCovariance`` or numpyro's
    ``LowRankMultivariateNormal``.

    ``as_gaussian(convert(p, library))`` gives ``p``'s parameters back bit for bit where the
    library stores them as they are: the mean, a std, a Cholesky factor, a low-rank factor, and
    distrax's log-scale. Where the library has no such parameter (a log- or plain variance for
    TFP and numpyro; the log-diagonal of a LowRankGaussian, stored as ``exp(log_diag)``), the value
    is rounded once on the way (a std comes back; ``log(exp(log_diag))``, within ``2 eps`` of
    ``log_diag`` absolutely, i.e. the variances to ``2 eps`` relative); and a LowRankGaussian sent
    to distrax comes back as the FullGaussian of the same covariance.

    Args:
      p: the distribution.
      library: ``"distrax"``, ``"tfp"`` or ``"numpyro"``.

    Returns:
      The library's distribution object, with ``p``'s batch shape and event shape ``(d,)``.

    Raises:
      ValueError: unknown ``library``.
      ImportError: the library is not installed (install the ``interop`` extra).
      TypeError: ``p`` is not a Gaussian (a :class:`~gkl_jax.GaussianMixture` is not converted).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian
      >>> from gkl_jax.interop import convert
      >>> convert(DiagGaussian(jnp.zeros(2), jnp.zeros(2)), "pymc")
      Traceback (most recent call last):
      ...
      ValueError: convert: library must be one of ('distrax', 'tfp', 'numpyro'), got 'pymc'
    """
    if library not in LIBRARIES:
        raise ValueError(f"convert: library must be one of {tuple(LIBRARIES)}, got {library!r}")
    g = as_gaussian(p)
    return _load(library).from_gaussian(g)


def to_distrax(p: Any) -> Any:
    """``convert(p, "distrax")``."""
    return convert(p, "distrax")


def to_tfp(p: Any) -> Any:
    """``convert(p, "tfp")``: a TensorFlow Probability (JAX substrate) distribution."""
    return convert(p, "tfp")


def to_numpyro(p: Any) -> Any:
    """``convert(p, "numpyro")``."""
    return convert(p, "numpyro")


# ---------------------------------------------------------------------------------------------
# shape helpers shared by the libraries' converters
# ---------------------------------------------------------------------------------------------


def scalar_event(loc: ArrayLike, spread: ArrayLike, param: Param) -> DiagGaussian:
    """A scalar-event Normal (batch shape ``b``) as a DiagGaussian of event size 1, batch ``b``.

    The values are kept as they are (a new trailing axis of size 1), so the KL of two such
    distributions is the peer's element-wise KL, batch shape ``b``.
    """
    loc, spread = jnp.asarray(loc), jnp.asarray(spread)
    return DiagGaussian.from_param(loc[..., None], spread[..., None], param=param)


def independent(g: Gaussian, n: int, what: str) -> Gaussian:
    """``Independent(base, n)``: the last ``n`` batch axes of the converted base merged into its
    event axis (row-major), so event ``(*r, e)`` becomes size ``prod(r) * e``.

    Exact for a diagonal base (the KL of independent parts is the sum over them, which is what
    the merged DiagGaussian computes). Only the merged axes are broadcast; leading batch axes of
    the parameters are kept as they are.
    """
    if n == 0:
        return g
    if not isinstance(g, DiagGaussian):
        raise TypeError(
            f"as_gaussian: {what} reinterprets {n} batch axis(es) of a "
            f"{type(g).__name__} as event axes: a block-diagonal Gaussian, which no gkl_jax type "
            "holds. Its KL is the sum of the blocks' KLs: "
            "gkl_jax.kl(as_gaussian(p.distribution), as_gaussian(q.distribution)) summed over "
            "those axes (numpyro: .base_dist)"
        )
    batch = g.batch_shape
    merged = batch[len(batch) - n :]
    size = math.prod(merged) * g.event_size

    def merge(x: Any) -> Any:
        if x.ndim < n + 1:
            x = jnp.reshape(x, (1,) * (n + 1 - x.ndim) + x.shape)
        lead = x.shape[: x.ndim - n - 1]
        x = jnp.broadcast_to(x, (*lead, *merged, x.shape[-1]))
        return jnp.reshape(x, (*lead, size))

    return DiagGaussian.from_param(merge(g.mean), merge(g.spread), param=g.param)


def expand(g: Gaussian, batch_shape: tuple[int, ...]) -> Gaussian:
    """``g`` with its batch broadcast to ``batch_shape`` (numpyro's ``.expand``): the mean is
    broadcast, the other parameters broadcast against it as they are."""
    mean = jnp.broadcast_to(g.mean, (*batch_shape, g.event_size))
    return eqx.tree_at(lambda t: t.mean, g, mean)


def register_loaded() -> None:
    """Registers the converters of the libraries already imported (importing gkl_jax.interop
    imports none)."""
    for library, (peer, _) in LIBRARIES.items():
        if peer in sys.modules:
            _load(library)

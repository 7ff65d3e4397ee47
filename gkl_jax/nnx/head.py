"""``GaussianHead``: features to a diagonal Gaussian, in the parametrization the model learns."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from gkl_jax._src.distributions.diag import DiagGaussian, Param

__all__ = ["GaussianHead", "Number", "check_log_var_bounds"]

_PARAMS = ("log_var", "var", "std")

Number = float | int  # a Python number (beartype does not take an int for a float)


def check_log_var_bounds(fn: str, bounds: Any) -> tuple[float, float] | None:
    """``None``, or ``(lo, hi)`` as two finite floats with ``lo < hi`` (ValueError otherwise)."""
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: log_var_bounds must be None or (lo, hi), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"{fn}: log_var_bounds must be two finite numbers lo < hi, got {(lo, hi)!r}"
        )
    return lo, hi


class GaussianHead(nnx.Module):
    r"""Maps features to a :class:`~gkl_jax.DiagGaussian` ``N(mean, diag(var))``.

    Two ``nnx.Linear`` layers give the mean and a raw spread ``r`` per latent dimension; the
    distribution keeps the parametrization the head is built with, so that the KL terms computed
    from it (:func:`gkl_jax.kl`, :func:`gkl_jax.kl_diag_standard`) take no extra rounded ``log``:

    * ``param="log_var"`` (default): ``log_var = r``;
    * ``param="var"``: ``var = softplus(r)``;
    * ``param="std"``: ``std = softplus(r)``.

    ``softplus`` keeps var/std positive and grows linearly, so large raw outputs do not overflow;
    a raw output far below 0 gives a variance that underflows to 0 in float32 (about ``r < -87``),
    a value problem that :func:`gkl_jax.checked` reports. No minimum variance is imposed.

    ``log_var_bounds=(lo, hi)`` (off by default) bounds the log-variance smoothly:
    ``log_var = c + h * tanh((r - c) / h)`` with ``c = (lo + hi) / 2``, ``h = (hi - lo) / 2``, which
    is ``r`` with slope 1 at the centre and saturates at ``lo`` and ``hi``. With bounds, the
    ``"var"`` and ``"std"`` heads return ``exp(log_var)`` and ``exp(log_var / 2)`` of the bounded
    value (instead of ``softplus``).

    Args:
      in_features: size of the input features.
      latent_dim: latent size ``d``.
      param: ``"log_var"``, ``"var"`` or ``"std"``: the parametrization of the output.
      log_var_bounds: optional ``(lo, hi)`` bounds on the log-variance (see above).
      dtype: computation dtype of the linear layers (default: from inputs and parameters).
      param_dtype: dtype of the weights (float32).
      rngs: the ``nnx.Rngs`` the weights are initialized from.

    Raises:
      ValueError: unknown ``param``, or ``log_var_bounds`` not two finite numbers ``lo < hi``.

    Call: ``head(features)`` with ``features`` of shape ``(*batch, in_features)`` returns a
    DiagGaussian with batch shape ``batch`` and event size ``latent_dim`` (float32 for
    bfloat16/float16/float32 features: gkl_jax distributions compute in float32 at least).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from gkl_jax.nnx import GaussianHead
      >>> head = GaussianHead(5, 2, param="std", rngs=nnx.Rngs(0))
      >>> q = head(jnp.ones((3, 5)))
      >>> q.batch_shape, q.event_size, q.param
      ((3,), 2, 'std')
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        param: Param = "log_var",
        log_var_bounds: tuple[Number, Number] | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        fn = "GaussianHead"
        if param not in _PARAMS:
            raise ValueError(f"{fn}: param must be one of {_PARAMS}, got {param!r}")
        self.param = param
        self.log_var_bounds = check_log_var_bounds(fn, log_var_bounds)
        kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
        self.mean = nnx.Linear(in_features, latent_dim, **kw)
        self.spread = nnx.Linear(in_features, latent_dim, **kw)

    def __call__(self, features: Float[Array, "*b f"]) -> DiagGaussian:
        """The diagonal Gaussian for ``features`` (``(*batch, in_features)``)."""
        mean = self.mean(features)
        raw = self.spread(features)
        if self.log_var_bounds is not None:
            lo, hi = self.log_var_bounds
            centre, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
            log_var = centre + half * jnp.tanh((raw - centre) / half)
            spread = {
                "log_var": log_var,
                "var": jnp.exp(log_var),
                "std": jnp.exp(0.5 * log_var),
            }[self.param]
        else:
            spread = raw if self.param == "log_var" else jax.nn.softplus(raw)
        return DiagGaussian.from_param(mean, spread, param=self.param)

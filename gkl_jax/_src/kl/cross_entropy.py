r"""``cross_entropy(p, q)``: the exact cross-entropy ``H(p, q) = -E_p[log q(x)]``.

.. math::

    H(p, q) = KL(p \| q) + H(p)
            = \tfrac12 \big[\mathrm{tr}(\Sigma_q^{-1}\Sigma_p) + (\mu_q - \mu_p)^T \Sigma_q^{-1}
              (\mu_q - \mu_p) + \log\det\Sigma_q + d \log 2\pi\big],

computed as the closed-form KL (the exact kernels of :func:`gkl_jax.kl`) plus the entropy of
``p``, as TensorFlow Probability defines ``Distribution.cross_entropy``. For a
:class:`~gkl_jax.GaussianMixture` ``p`` and a Gaussian ``q`` it is exact too, because the
expectation is linear in ``p``: ``H(sum_k w_k p_k, q) = sum_k w_k H(p_k, q)``. A Gaussian ``p``
and a mixture ``q`` have no closed form (``log q`` is a log-sum-exp).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gkl_jax._src.base import Gaussian, check_argument_values
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.mixture import GaussianMixture
from gkl_jax._src.eager import compiled
from gkl_jax._src.interop_hook import as_distribution
from gkl_jax._src.kl.registry import Axis, kl_op, kl_terms, reduce_pair
from gkl_jax._src.numerics import LOG_2PI, align_ranks

__all__ = ["cross_entropy"]


def _cast(dist: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), dist)


def _gaussian_parts(p: Gaussian, q: Any):
    """``(per_example, per_dimension)`` thunks for a Gaussian ``p``."""
    if kl_op.lookup(type(p), type(q)) is None:
        raise TypeError(
            f"cross_entropy: no closed form for H({type(p).__name__}, {type(q).__name__}). "
            "Estimate it as the exact entropy plus a Monte Carlo KL: "
            "p.entropy() + gkl_jax.kl_mc(key, p, q, num_samples=1024).value (the KL's standard "
            "error is the cross-entropy's)."
        )

    def per_example() -> jax.Array:
        out = kl_op(p, q)
        return out + jnp.broadcast_to(_cast(p, out.dtype).entropy(), out.shape)

    def per_dimension() -> jax.Array | None:
        terms = kl_terms(p, q)
        if terms is None or not isinstance(p, DiagGaussian):
            return None
        entropy = 0.5 * (_cast(p, terms.dtype).log_var + (1.0 + LOG_2PI))
        terms, entropy = align_ranks(terms, entropy)
        return terms + entropy

    return per_example, per_dimension


@compiled(static=("axis",))
def cross_entropy(p: Any, q: Any, *, axis: Axis = -1) -> Float[Array, "..."]:
    r"""The cross-entropy ``H(p, q) = -E_p[log q(x)] = KL(p || q) + H(p)``, exactly.

    For every pair of :class:`~gkl_jax.DiagGaussian`, :class:`~gkl_jax.FullGaussian` and
    :class:`~gkl_jax.LowRankGaussian` (the closed-form KL of :func:`gkl_jax.kl`, whatever pairs
    are registered, plus ``p.entropy()``), and for a :class:`~gkl_jax.GaussianMixture` ``p``
    against a Gaussian ``q`` (``sum_k w_k H(p_k, q)``). It is the expected negative
    log-likelihood under ``q`` of draws from ``p``, without drawing: e.g. a VAE's prior term
    ``-E_q(z|x)[log prior(z)] = cross_entropy(q, prior)``.

    Args:
      p: a Gaussian, or a GaussianMixture (distrax, TFP and numpyro Gaussians are converted as by
        :func:`gkl_jax.kl`).
      q: a Gaussian.
      axis: as in :func:`gkl_jax.kl`: axes of the ``(*batch, d)`` per-dimension terms to sum
        (``-1``, the default: one value per example; ``()``: the per-dimension terms, which
        exist when ``q`` and ``p`` -- or the mixture's components -- are DiagGaussians;
        ``None``: the total).

    Returns:
      ``H(p, q)`` in nats, shape ``broadcast(p.batch_shape, q.batch_shape)`` by default.

    Raises:
      TypeError: no closed form for the pair (a mixture ``q``); the message shows the Monte
        Carlo estimate to use instead.
      ValueError: the latent sizes differ, the batch shapes do not broadcast, or ``axis`` keeps
        the latent axis of a pair without per-dimension terms.

    References:
      Cover & Thomas, *Elements of Information Theory* (2006), Sec. 2.3 and 8.6; TensorFlow
      Probability, ``Distribution.cross_entropy``.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, cross_entropy, kl
      >>> p = DiagGaussian(jnp.zeros(2), jnp.zeros(2))
      >>> q = DiagGaussian(jnp.ones(2), jnp.zeros(2))
      >>> float(cross_entropy(p, q))  # KL = 1, H(p) = 1 + log(2 pi)
      3.837877...
      >>> float(cross_entropy(p, p) - p.entropy())  # H(p, p) = H(p)
      0.0
    """
    p, q = as_distribution(p), as_distribution(q)  # distrax / TFP / numpyro Gaussians
    check_argument_values("cross_entropy", p=p, q=q)
    if isinstance(p, GaussianMixture) and isinstance(q, Gaussian):
        comps = p.components
        q_k = q[..., None]  # broadcast against the component axis
        per_k, per_k_dim = _gaussian_parts(comps, q_k)
        log_w = jax.nn.log_softmax(p.logits, axis=-1)

        def per_example() -> jax.Array:
            h, lw = align_ranks(per_k(), log_w)
            return jnp.sum(jnp.exp(lw) * h, axis=-1)

        def per_dimension() -> jax.Array | None:
            h = per_k_dim()
            if h is None:
                return None
            h, lw = align_ranks(h, log_w[..., None])
            return jnp.sum(jnp.exp(lw) * h, axis=-2)

        return reduce_pair("cross_entropy", p, q, axis, per_example, per_dimension)
    if not isinstance(p, Gaussian):
        raise TypeError(
            f"cross_entropy: no closed form for H({type(p).__name__}, {type(q).__name__}); p "
            "must be a Gaussian or a GaussianMixture (against a Gaussian q)"
        )
    per_example, per_dimension = _gaussian_parts(p, q)
    return reduce_pair("cross_entropy", p, q, axis, per_example, per_dimension)

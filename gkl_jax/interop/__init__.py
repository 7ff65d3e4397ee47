r"""distrax, TensorFlow Probability (JAX substrate) and numpyro Gaussians in gkl_jax, and back.

Needs the ``interop`` extra for the libraries themselves (``pip install "gkl_jax[interop]"``),
but importing ``gkl_jax`` or ``gkl_jax.interop`` imports none of them: a library's converters are
registered when one of its objects is first converted (the library is imported by then) or a
conversion to it is asked for.

:func:`gkl_jax.kl`, every divergence and :func:`gkl_jax.kl_mc` convert these objects themselves
(``gkl_jax.kl(distrax_p, numpyro_q)`` works, mixed with gkl_jax types too, under ``jit`` and
``grad``); :func:`as_gaussian` returns the converted distribution, :func:`convert` (or
:func:`to_distrax`, :func:`to_tfp`, :func:`to_numpyro`) goes the other way::

    from gkl_jax.interop import as_gaussian, convert
    q = as_gaussian(tfd.Independent(tfd.Normal(mu, sigma), 1))   # DiagGaussian(mu, std=sigma)
    kl = gkl_jax.kl(encoder_distrax_mvn_diag, q)                  # exact, float32 to ~1e-7
    p_numpyro = convert(q, "numpyro")                              # Normal(mu, sigma).to_event(1)

**What each class becomes** (exactly: the same distribution, parameters kept as the library
stores them where the KL's exactness depends on it)::

    Normal(loc, scale)                   DiagGaussian(loc[..., None], std=scale), event size 1
      (distrax, TFP, numpyro)
    distrax LogStddevNormal              DiagGaussian(loc[..., None], log_var=2 * log_scale)
    Independent(base, n) / .to_event(n)  base's DiagGaussian with its last n batch axes merged
                                         into the event axis (row-major, size prod * event)
    numpyro .expand(shape)               the base's Gaussian, mean broadcast to the batch shape
    MultivariateNormalDiag               DiagGaussian(loc, std=|scale_diag|)
      (distrax, TFP)
    MultivariateNormalTri(L, lower)      FullGaussian(loc, L)      (upper U: from_scale(loc, U))
      / TFP MultivariateNormalTriL
    MultivariateNormalFullCovariance     FullGaussian(loc, the library's own Cholesky factor)
      (distrax, TFP)
    numpyro MultivariateNormal           FullGaussian(loc, scale_tril)
    numpyro LowRankMultivariateNormal    LowRankGaussian(loc, cov_factor, log(cov_diag))
    TFP ...DiagPlusLowRankCovariance     LowRankGaussian(loc, cov_perturb_factor,
                                                         log(cov_diag_factor))
    distrax / TFP                        FullGaussian.from_scale(loc, dense S), O(d^3)
      MultivariateNormalDiagPlusLowRank
    any other distrax MultivariateNormalFromBijector / TFP MultivariateNormalLinearOperator:
                                         by its scale (diagonal, lower-triangular, or dense S)

**Scalar events.** A bare ``Normal`` is a scalar-event distribution: it becomes a DiagGaussian of
event size 1 with the same batch shape, so ``kl`` returns one value per element, as the
library's own ``kl_divergence`` does. To treat the last axis as the latent dimensions (summed),
wrap it: ``Independent(Normal(...), 1)`` or ``Normal(...).to_event(1)``.

**DiagPlusLowRank is a scale, not a covariance.** distrax's and TFP's
``MultivariateNormalDiagPlusLowRank`` give a square root ``S = diag(d) + U V^T`` (TFP:
``U diag(m) U^T``) of the covariance ``S S^T``; ``S S^T - D^2 = [D V, U] [[0, I], [I, V^T V]]
[D V, U]^T`` is indefinite whenever the update is non-zero, and the covariance is in general not
``W W^T + diag`` for any rank, so the exact gkl_jax type is a :class:`~gkl_jax.FullGaussian`
(built by QR from the dense ``S``, not from ``S S^T``: ``O(d^3)``, and accurate to about
``cond(S) eps`` relative -- measured in float32 4e-5 on a KL at ``cond(S) = 240``, where distrax's
own factored KL has 4e-6; use float64 for badly conditioned scales). The covariance forms (numpyro's
``LowRankMultivariateNormal``, TFP's ``MultivariateNormalDiagPlusLowRankCovariance``) are
:class:`~gkl_jax.LowRankGaussian` s. The other way, ``W W^T + Psi`` always has the rank-``k``
square root ``Psi^1/2 + W B X^T`` (``X = Psi^-1/2 W``, ``B = (I + (I + X^T X)^1/2)^-1``), which
is what :func:`to_distrax` gives a LowRankGaussian.

**Not converted**: mixtures (``MixtureSameFamily``; :func:`gkl_jax.kl_mc` still accepts one as
``q`` through its ``log_prob``), an ``Independent`` over a full-covariance base (a block-diagonal
Gaussian: sum the blocks' KLs), TFP on its NumPy or TensorFlow substrates; other classes can be
added with :func:`register_converter`.
"""

from __future__ import annotations

from gkl_jax.interop._core import (
    as_gaussian,
    convert,
    register_converter,
    register_loaded,
    to_distrax,
    to_numpyro,
    to_tfp,
)

register_loaded()  # the libraries imported already; the others when first used

__all__ = ["as_gaussian", "convert", "register_converter", "to_distrax", "to_numpyro", "to_tfp"]

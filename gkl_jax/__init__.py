"""gkl_jax: exact, fast KL divergences between Gaussian distributions in JAX.

The public API, re-exported flat from ``gkl_jax._src`` (see its docstring for the layout).
Optional dependencies live in public subpackages: ``gkl_jax.nnx`` (Flax NNX) and
``gkl_jax.interop`` (distrax, TFP on JAX, numpyro objects in and out).
"""

from gkl_jax._src.aggregate import (
    KLDecomposition,
    kl_aggregate,
    kl_aggregate_prior,
    kl_decomposition,
)
from gkl_jax._src.align import Alignment, align_latents
from gkl_jax._src.base import BiasedEstimate, Distribution, Estimate, Gaussian
from gkl_jax._src.checks import checked, checking
from gkl_jax._src.compare import Comparison, compare_posteriors
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.distributions.mixture import GaussianMixture
from gkl_jax._src.divergences import bhattacharyya, hellinger, jeffreys, renyi
from gkl_jax._src.from_samples import kl_from_samples
from gkl_jax._src.kl.cross_entropy import cross_entropy
from gkl_jax._src.kl.diag import kl_diag, kl_diag_standard
from gkl_jax._src.kl.mixture import kl_mixture_upper_bound, kl_mixture_variational
from gkl_jax._src.kl.registry import kl, register_kl
from gkl_jax._src.kl.structured import kl_full
from gkl_jax._src.monte_carlo import kl_mc
from gkl_jax._src.numerics import phi
from gkl_jax._src.wasserstein import wasserstein2

__version__ = "0.1.0"

__all__ = [
    "Alignment",
    "BiasedEstimate",
    "Comparison",
    "DiagGaussian",
    "Distribution",
    "Estimate",
    "FullGaussian",
    "Gaussian",
    "GaussianMixture",
    "KLDecomposition",
    "LowRankGaussian",
    "__version__",
    "align_latents",
    "bhattacharyya",
    "checked",
    "checking",
    "compare_posteriors",
    "cross_entropy",
    "hellinger",
    "jeffreys",
    "kl",
    "kl_aggregate",
    "kl_aggregate_prior",
    "kl_decomposition",
    "kl_diag",
    "kl_diag_standard",
    "kl_from_samples",
    "kl_full",
    "kl_mc",
    "kl_mixture_upper_bound",
    "kl_mixture_variational",
    "phi",
    "register_kl",
    "renyi",
    "wasserstein2",
]

"""gkl_jax: exact, fast KL divergences between Gaussian distributions in JAX.

The public API is re-exported here; see the modules for the math.
"""

from gkl_jax._numerics import phi
from gkl_jax.checks import checked
from gkl_jax.divergences import bhattacharyya, hellinger, jeffreys, renyi, wasserstein2
from gkl_jax.from_samples import kl_from_samples
from gkl_jax.full import FullGaussian
from gkl_jax.gaussians import DiagGaussian
from gkl_jax.kl import kl, kl_diag, kl_diag_standard, register_kl
from gkl_jax.kl_structured import kl_full
from gkl_jax.low_rank import LowRankGaussian
from gkl_jax.mixtures import GaussianMixture, kl_mixture_upper_bound, kl_mixture_variational
from gkl_jax.monte_carlo import Estimate, kl_mc

__version__ = "0.1.0"

__all__ = [
    "DiagGaussian",
    "Estimate",
    "FullGaussian",
    "GaussianMixture",
    "LowRankGaussian",
    "__version__",
    "bhattacharyya",
    "checked",
    "hellinger",
    "jeffreys",
    "kl",
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

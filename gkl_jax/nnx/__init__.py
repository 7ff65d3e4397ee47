"""Flax NNX integration (needs the ``nnx`` extra: ``pip install "gkl_jax[nnx]"``).

Importing this subpackage registers every gkl_jax distribution type -- those defined so far and
any subclass defined later -- as NNX data (``flax.nnx.register_data_type``), so a distribution can
be held as an ``nnx.Module`` attribute (a fixed prior, say) and its arrays appear in the module's
state under named paths (``prior/mean``, ``prior/spread``)::

    import gkl_jax.nnx  # noqa: F401  (the one line a model file needs)

    class Model(nnx.Module):
        def __init__(self, d, *, rngs):
            self.prior = gkl_jax.DiagGaussian.standard(d)

Without this import, wrap the value instead: ``self.prior = nnx.data(gkl_jax.DiagGaussian(...))``.

Modules (one per file), which call gkl_jax's pure functions and add no KL math of their own::

    head.py    GaussianHead: features -> DiagGaussian (log_var | var | std, optional bounds)
    prior.py   MixturePrior: a learned mixture-of-Gaussians prior (nnx.Param)
    vae.py     VAE (MLP encoder/decoder, exact or Monte Carlo KL to the prior), ELBOTerms
    twin.py    TwinVAE: two VAEs compared (compare_posteriors) and optionally coupled by a KL
"""

from __future__ import annotations

try:
    from flax import nnx as _nnx
except ImportError as exc:  # pragma: no cover - exercised only without flax installed
    raise ImportError(
        'gkl_jax.nnx needs Flax: install the extra with pip install "gkl_jax[nnx]"'
    ) from exc

from gkl_jax._src.base import on_new_distribution_type

on_new_distribution_type(_nnx.register_data_type)

from gkl_jax.nnx.head import GaussianHead  # noqa: E402  (after the registration above)
from gkl_jax.nnx.prior import MixturePrior  # noqa: E402
from gkl_jax.nnx.twin import TwinVAE  # noqa: E402
from gkl_jax.nnx.vae import VAE, ELBOTerms  # noqa: E402

__all__ = ["VAE", "ELBOTerms", "GaussianHead", "MixturePrior", "TwinVAE"]

"""Closed-form KL divergences: the ``kl`` registry and one file per family of kernels."""

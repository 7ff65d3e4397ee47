"""Peer implementations of the diagonal-Gaussian KL, for side-by-side benchmarks.

:func:`available` maps a display name to ``(param, fn)``: ``fn(mu_p, s_p, mu_q, s_q)`` returns the
KL per row, and ``param`` says what ``s`` is ("log_var" for the hand-written formula, "std" for the
libraries whose Normal takes a scale). A peer that is not installed is absent. The benchmarks
give each peer float32 inputs in its own parametrization and compare it with the exact KL of
exactly those inputs.
"""

from __future__ import annotations

import numpy as np


def handwritten_jnp():
    import jax.numpy as jnp

    def kl(mp, lp, mq, lq):
        return 0.5 * jnp.sum(lq - lp + (jnp.exp(lp) + (mp - mq) ** 2) / jnp.exp(lq) - 1.0, axis=-1)

    return kl


def distrax_kl():
    import distrax

    def kl(mp, sp, mq, sq):
        p = distrax.MultivariateNormalDiag(mp, sp)
        q = distrax.MultivariateNormalDiag(mq, sq)
        return p.kl_divergence(q)

    return kl


def tfp_kl():
    from tensorflow_probability.substrates import jax as tfp

    tfd = tfp.distributions

    def kl(mp, sp, mq, sq):
        p = tfd.MultivariateNormalDiag(mp, sp)
        q = tfd.MultivariateNormalDiag(mq, sq)
        return tfd.kl_divergence(p, q)

    return kl


def numpyro_kl():
    import numpyro.distributions as nd

    def kl(mp, sp, mq, sq):
        p = nd.Normal(mp, sp).to_event(1)
        q = nd.Normal(mq, sq).to_event(1)
        return nd.kl_divergence(p, q)

    return kl


def torch_kl():
    import torch
    from torch.distributions import Independent, Normal, kl_divergence

    def kl(mp, sp, mq, sq):
        t = [torch.from_numpy(np.asarray(a)) for a in (mp, sp, mq, sq)]
        p = Independent(Normal(t[0], t[1]), 1)
        q = Independent(Normal(t[2], t[3]), 1)
        return kl_divergence(p, q).numpy()

    return kl


def available() -> dict:
    """The installed peers, by display name (JAX peers first, torch last)."""
    out = {}
    for name, param, make in [
        ("hand-written jnp", "log_var", handwritten_jnp),
        ("distrax", "std", distrax_kl),
        ("TFP (JAX)", "std", tfp_kl),
        ("numpyro", "std", numpyro_kl),
        ("torch", "std", torch_kl),
    ]:
        try:
            out[name] = (param, make())
        except Exception:  # a peer that does not import is simply absent
            continue
    return out

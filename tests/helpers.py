"""Shared test helpers: independent references (mpmath, float64 NumPy) and random inputs."""

# The references use the textbook formulas, evaluated either in 50-digit arithmetic (where the float
# formula would cancel) or in float64 where the inputs are far apart. They share no code with
# gkl_jax; only the random-input builders (rand_dist, random_mixture) construct gkl_jax pytrees.

from __future__ import annotations

import re

import jax
import mpmath
import numpy as np

from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian

mpmath.mp.dps = 50


def _variances(spread, param):
    if param == "log_var":
        return mpmath.exp(spread)
    if param == "var":
        return spread
    return spread * spread


def kl_diag_exact(mean_p, spread_p, mean_q, spread_q, param="log_var"):
    """Exact per-dimension KL(p || q) terms of broadcast float inputs, rounded to float64."""
    arrays = np.broadcast_arrays(
        *(np.asarray(a, np.float64) for a in (mean_p, spread_p, mean_q, spread_q))
    )
    out = np.empty(arrays[0].shape)
    for idx in np.ndindex(out.shape):
        mp, sp, mq, sq = (mpmath.mpf(float(a[idx])) for a in arrays)
        vp, vq = _variances(sp, param), _variances(sq, param)
        out[idx] = float(((mp - mq) ** 2 / vq + vp / vq - 1 - mpmath.log(vp / vq)) / 2)
    return out


def phi_exact(x):
    """exp(x) - 1 - x in 50-digit arithmetic, rounded to float64."""
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        v = mpmath.mpf(float(x[idx]))
        out[idx] = float(mpmath.expm1(v) - v)
    return out


def kl_diag_grad_f64(mean_p, log_var_p, mean_q, log_var_q):
    """Exact partial derivatives of the per-dimension KL terms (float64, log-variance inputs)."""
    mp, lp, mq, lq = np.broadcast_arrays(
        *(np.asarray(a, np.float64) for a in (mean_p, log_var_p, mean_q, log_var_q))
    )
    diff = mp - mq
    inv_vq = np.exp(-lq)
    g_lp = 0.5 * np.expm1(lp - lq)
    return diff * inv_vq, g_lp, -diff * inv_vq, -0.5 * diff**2 * inv_vq - g_lp


def diag_log_prob_f64(x, mean, var):
    """log N(x; mean, diag(var)) in float64, summed over the last axis."""
    x, mean, var = (np.asarray(a, np.float64) for a in (x, mean, var))
    return -0.5 * np.sum((x - mean) ** 2 / var + np.log(2 * np.pi * var), axis=-1)


_TINY64 = float(np.finfo(np.float64).tiny)


def max_rel_err(got, ref, floor=_TINY64):
    """Max of |got - ref| / max(|ref|, floor): relative error, absolute below ``floor``."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    scale = np.maximum(np.abs(ref), floor)
    return float(np.max(np.abs(got - ref) / scale))


# ---------------------------------------------------------------------------------------------
# dense float64 references and random inputs for the structured families and mixtures
# ---------------------------------------------------------------------------------------------


def dense_kl(mp, cov_p, mq, cov_q):
    """Textbook KL(p || q) in float64 (for pairs that are not nearly identical)."""
    mp, cov_p, mq, cov_q = (np.asarray(a, np.float64) for a in (mp, cov_p, mq, cov_q))
    d = mp.shape[-1]
    inv_q = np.linalg.inv(cov_q)
    dm = mq - mp
    maha = np.einsum("...i,...ij,...j->...", dm, inv_q, dm)
    tr = np.trace(inv_q @ cov_p, axis1=-2, axis2=-1)
    ld = np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
    return 0.5 * (tr - d + maha + ld)


def rand_tril(rng, shape, d, off=0.5):
    """A random lower-triangular factor with a positive diagonal, batch shape ``shape``."""
    a = rng.standard_normal((*shape, d, d)) / np.sqrt(d)
    diag = np.exp(0.3 * rng.standard_normal((*shape, 1, d)))
    return np.tril(a, -1) * off + np.eye(d) * diag


def rand_dist(kind, rng, shape=(), d=5, k=2):
    """A random distribution of ``kind``, with its mean and dense covariance (float64)."""
    m = rng.standard_normal((*shape, d))
    if kind in ("diag", "diag-std", "diag-var"):
        lv = 0.5 * rng.standard_normal((*shape, d))
        if kind == "diag":
            dist = DiagGaussian(m, lv)
        elif kind == "diag-std":
            dist = DiagGaussian.from_std(m, np.exp(0.5 * lv))
        else:
            dist = DiagGaussian.from_var(m, np.exp(lv))
        return dist, m, np.exp(lv)[..., None] * np.eye(d)
    if kind == "full":
        tril = rand_tril(rng, shape, d)
        return FullGaussian(m, tril), m, tril @ np.swapaxes(tril, -1, -2)
    w = 0.7 * rng.standard_normal((*shape, d, k))
    ld = 0.3 * rng.standard_normal((*shape, d))
    cov = w @ np.swapaxes(w, -1, -2) + np.exp(ld)[..., None] * np.eye(d)
    return LowRankGaussian(m, w, ld), m, cov


def random_mixture(seed, batch, k, d, spread=1.0):
    """A random GaussianMixture of ``k`` diagonal components in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    comps = DiagGaussian(
        spread * rng.normal(size=(*batch, k, d)), 0.5 * rng.normal(size=(*batch, k, d))
    )
    return GaussianMixture(rng.normal(size=(*batch, k)), comps)


def np_params(mix):
    """A GaussianMixture's weights, means and variances as float64 NumPy arrays."""
    w = np.asarray(jax.nn.softmax(mix.logits, axis=-1), np.float64)
    mean = np.asarray(mix.components.mean, np.float64)
    var = np.asarray(mix.components.var, np.float64)
    return w, mean, var


def lapack_batch_dims(fn, *args) -> dict[str, set[int]]:
    """``{LAPACK custom call: {its num_batch_dims}}`` in the lowered program of ``fn``."""
    found: dict[str, set[int]] = {}
    for line in jax.jit(fn).lower(*args).as_text().splitlines():
        call = re.search(r"custom_call @(lapack_\w+)", line)
        if call:
            dims = re.search(r'num_batch_dims = "(\d+)"', line)
            found.setdefault(call.group(1), set()).add(int(dims.group(1)) if dims else -1)
    return found

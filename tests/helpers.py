"""Independent references for the tests: high-precision (mpmath) and float64 NumPy closed forms.

These use the textbook formulas, evaluated either in 50-digit arithmetic (where the float formula
would cancel) or in float64 where the inputs are far apart. They share no code with gkl_jax.
"""

from __future__ import annotations

import mpmath
import numpy as np

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

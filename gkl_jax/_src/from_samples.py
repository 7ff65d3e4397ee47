r"""``KL(p || q)`` from samples alone: k-nearest-neighbour and moment-fit estimators.

When only samples ``x_p ~ p`` (``n x d``) and ``x_q ~ q`` (``m x d``) exist -- no densities --
:func:`kl_from_samples` offers two estimators, each with an error bar:

* ``method="knn"``: the Wang-Kulkarni-Verdu (2009) estimator

  .. math::

      \hat D = \frac{d}{n} \sum_i \log\frac{\nu_k(i)}{\rho_k(i)} + \log\frac{m}{n - 1},

  with ``rho_k(i)`` the distance from ``x_p[i]`` to its k-th nearest neighbour among the other
  ``x_p`` and ``nu_k(i)`` to its k-th nearest neighbour in ``x_q``. Consistent for any
  continuous ``p``, ``q`` (no Gaussian assumption), but biased at finite ``n`` in high ``d``.
* ``method="gaussian"``: fit a Gaussian (mean and full or diagonal covariance) to each set and
  return the closed-form KL between the fits. Exact up to ``O(d^2 / n)`` when the data are
  Gaussian; otherwise it measures the KL between the moment-matched Gaussians, which is not the
  KL of the data.

**Neighbour search.** Exact, blocked, jit-able: for a block of ``block_size`` query rows the
squared distances to all reference points come from one matmul
(``|a|^2 - 2 a.b + |b|^2``, ``Precision.HIGHEST``); each row keeps the minimum of every chunk of
32 reference points, the chunks with the smallest minima are gathered, and their distances are
recomputed exactly as ``|a - b|^2`` before the final top-k. Memory is
``O(block_size x m)``, never ``n x m``; time ``O(n m d)``. Data are centred first, so the matmul
form loses little to cancellation; the final distances are exact.

**Ties and duplicate points.** A repeated point has a neighbour at distance 0, and
``log(0)`` would make the estimate infinite. Following WKV's adaptive estimator, such a point
uses the nearest *positive* distances instead: ``rho`` at rank ``l_i = max(k, z_p + 1)`` and
``nu`` at rank ``k_i = max(k, z_q + 1)``, where ``z_p``, ``z_q`` count the zero distances, and
the estimate adds the bias correction ``mean(psi(l_i) - psi(k_i))`` (``psi`` the digamma
function). Without duplicates this is exactly the fixed-k estimator. Up to ``max_ties``
coincident points per query are handled; a point with more makes the estimate NaN, and
:func:`gkl_jax.checked` reports how many points were affected. Ties at positive distances
need nothing: the k-th distance is the same whichever tied point is counted.

**Error bar** (``Estimate.stderr``): the two-sample delete-one jackknife, computed exactly from
the neighbour lists (one extra neighbour per point tells what deleting a neighbour changes),
at ``O(n k)`` extra cost: deleting ``x_q[j]`` moves ``nu`` of each point that had ``j`` among
its neighbours to the next neighbour, deleting ``x_p[l]`` drops its term and moves ``rho`` of
the points that had ``l`` as neighbour. The jackknife variance is conservative in expectation
(Efron & Stein, 1981). It measures sampling variability only, not the estimator's bias. For
``"gaussian"`` it is the delete-a-group jackknife over ``2 x 16`` contiguous groups.

References:
  Q. Wang, S. R. Kulkarni, S. Verdu, "Divergence estimation for multidimensional densities via
  k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5), 2009.
  B. Efron, C. Stein, "The jackknife estimate of variance", Ann. Statist. 9(3), 1981.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma
from jax.typing import ArrayLike
from jaxtyping import Float

from gkl_jax._src import checks
from gkl_jax._src.base import Estimate
from gkl_jax._src.kl.diag import kl_diag
from gkl_jax._src.kl.structured import kl_full
from gkl_jax._src.numerics import align_ranks, as_float_arrays

__all__ = ["kl_from_samples"]

_CHUNK = 32
_GROUPS = 16


def _knn(
    queries: jax.Array, refs: jax.Array, num: int, *, self_search: bool, block_size: int
) -> tuple[jax.Array, jax.Array]:
    """The ``num`` nearest ``refs`` of every query: exact squared distances (ascending) and
    indices, each ``(n, num)``. With ``self_search`` the queries are the refs and each query's
    own index is excluded (by index, so a duplicate point still counts as a neighbour).
    Missing neighbours (``num`` larger than available) get distance ``inf``."""
    n, d = queries.shape
    m = refs.shape[0]
    chunk = min(_CHUNK, m)
    m_pad = -(-m // chunk) * chunk
    n_pad = -(-n // block_size) * block_size
    groups = m_pad // chunk
    num_chunks = min(num, groups)
    refs_p = jnp.pad(refs, ((0, m_pad - m), (0, 0)))
    ref_sq = jnp.sum(refs_p * refs_p, axis=-1)
    ref_chunks = refs_p.reshape(groups, chunk, d)
    col = jnp.arange(m_pad)
    q_p = jnp.pad(queries, ((0, n_pad - n), (0, 0)))
    rows = jnp.arange(n_pad).reshape(-1, block_size)

    def block(args):
        a, row = args  # (B, d), (B,)
        a_sq = jnp.sum(a * a, axis=-1)
        dots = jnp.matmul(a, refs_p.T, precision=jax.lax.Precision.HIGHEST)
        approx = (a_sq[:, None] - 2.0 * dots) + ref_sq[None, :]
        bad = col[None, :] >= m
        if self_search:
            bad = bad | (col[None, :] == row[:, None])
        approx = jnp.where(bad, jnp.inf, approx)
        mins = jnp.min(approx.reshape(block_size, groups, chunk), axis=-1)
        _, best = jax.lax.top_k(-mins, num_chunks)  # (B, num_chunks)
        cand = ref_chunks[best].reshape(block_size, num_chunks * chunk, d)
        cand_idx = (best[..., None] * chunk + jnp.arange(chunk)[None, None, :]).reshape(
            block_size, -1
        )
        diff = a[:, None, :] - cand
        exact = jnp.sum(diff * diff, axis=-1)
        bad = cand_idx >= m
        if self_search:
            bad = bad | (cand_idx == row[:, None])
        exact = jnp.where(bad, jnp.inf, exact)
        k_eff = min(num, num_chunks * chunk)
        neg, pos = jax.lax.top_k(-exact, k_eff)
        idx = jnp.take_along_axis(cand_idx, pos, axis=-1)
        if k_eff < num:
            neg = jnp.pad(neg, ((0, 0), (0, num - k_eff)), constant_values=-jnp.inf)
            idx = jnp.pad(idx, ((0, 0), (0, num - k_eff)))
        return -neg, idx

    dist, idx = jax.lax.map(block, (q_p.reshape(-1, block_size, d), rows))
    return dist.reshape(n_pad, num)[:n], idx.reshape(n_pad, num)[:n]


def _rank_terms(dist2: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per point: the rank used (``max(k, zeros + 1)``), ``log`` of the squared distance at that
    rank and at the next one, and whether the rank is available."""
    num = dist2.shape[-1]
    zeros = jnp.sum(dist2 == 0, axis=-1)
    rank = jnp.maximum(k, zeros + 1)
    valid = rank <= num
    at = jnp.clip(rank - 1, 0, num - 1)
    log_d = jnp.log(jnp.take_along_axis(dist2, at[:, None], axis=-1)[:, 0])
    nxt = jnp.clip(rank, 0, num - 1)
    log_next = jnp.log(jnp.take_along_axis(dist2, nxt[:, None], axis=-1)[:, 0])
    # no next neighbour (or only inf): deleting one changes nothing we can measure
    log_next = jnp.where((rank < num) & jnp.isfinite(log_next), log_next, log_d)
    return rank, log_d, log_next, valid


def _jackknife_var(theta: jax.Array) -> jax.Array:
    """Jackknife variance ``(g - 1) / g * sum_j (theta_j - mean(theta))^2`` of the ``g``
    delete-one (or delete-a-group) replicates ``theta`` (leading axis); a constant shift of
    all replicates does not change it."""
    g = theta.shape[0]
    return (g - 1) / g * jnp.sum(jnp.square(theta - jnp.mean(theta, axis=0)), axis=0)


def _knn_estimate(
    x_p: jax.Array, x_q: jax.Array, k: int, block_size: int, max_ties: int, search=None
) -> Estimate:
    # ``search``: the neighbour search, ``_knn`` by default (gkl_jax.sharding passes its ring)
    search = _knn if search is None else search
    n, d = x_p.shape
    m = x_q.shape[0]
    center = jnp.mean(x_p, axis=0, keepdims=True)
    x_p, x_q = x_p - center, x_q - center
    num_p = min(k + 1 + max_ties, n - 1)
    num_q = min(k + 1 + max_ties, m)
    rho2, rho_idx = search(x_p, x_p, num_p, self_search=True, block_size=block_size)
    nu2, nu_idx = search(x_p, x_q, num_q, self_search=False, block_size=block_size)
    l_rank, log_rho, log_rho_next, ok_p = _rank_terms(rho2, k)
    k_rank, log_nu, log_nu_next, ok_q = _rank_terms(nu2, k)
    valid = ok_p & ok_q
    checks.check_value(
        lambda: jnp.sum(~valid),
        "kl_from_samples: {bad} points of x_p have more than max_ties="
        f"{max_ties} duplicates among x_p or x_q; the estimate is NaN (raise max_ties)",
    )
    half_d = 0.5 * d
    terms = half_d * (log_nu - log_rho) + digamma(l_rank.astype(x_p.dtype))
    terms = terms - digamma(k_rank.astype(x_p.dtype))
    terms = jnp.where(valid, terms, jnp.nan)
    const = math.log(m / (n - 1))
    value = jnp.mean(terms) + const

    # delete-one jackknife over x_q: deleting x_q[j] moves nu of every point that had j among
    # its first k_i neighbours to the next neighbour.
    delta_q = half_d * (log_nu_next - log_nu) / n  # (n,)
    used_q = jnp.arange(num_q)[None, :] < k_rank[:, None]
    gain_q = jax.ops.segment_sum(
        jnp.where(used_q, delta_q[:, None], 0.0).ravel(), nu_idx.ravel(), num_segments=m
    )
    var_q = _jackknife_var(gain_q)  # the replicates, up to a common shift
    # delete-one jackknife over x_p: deleting x_p[l] drops its term and moves rho of every point
    # that had l among its first l_i neighbours to the next one.
    eps_p = half_d * (log_rho_next - log_rho)
    used_p = jnp.arange(num_p)[None, :] < l_rank[:, None]
    loss_p = jax.ops.segment_sum(
        jnp.where(used_p, eps_p[:, None], 0.0).ravel(), rho_idx.ravel(), num_segments=n
    )
    theta = (jnp.sum(terms) - terms - loss_p) / (n - 1)
    var_p = _jackknife_var(theta)
    return Estimate(value, jnp.sqrt(var_p + var_q))


def _group_stats(
    x: jax.Array, groups: int, diag: bool
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Centred data's per-group counts ``(G,)``, sums ``(G, d)`` and second moments -- the
    ``(G, d)`` sums of squares if ``diag``, else the ``(G, d, d)`` sums of outer products,
    one ``(L, d)^T (L, d)`` matmul per group -- and the centre ``(d,)``. Never ``n x d x d``."""
    n = x.shape[0]
    center = jnp.mean(x, axis=0)
    xc = x - center[None, :]
    count_np = np.bincount((np.arange(n) * groups) // n, minlength=groups)  # contiguous groups
    bounds = np.concatenate([[0], np.cumsum(count_np)])
    parts = [xc[a:b] for a, b in itertools.pairwise(bounds)]  # static slices
    s1 = jnp.stack([jnp.sum(part, axis=0) for part in parts])
    if diag:
        s2 = jnp.stack([jnp.sum(part * part, axis=0) for part in parts])
    else:
        hi = jax.lax.Precision.HIGHEST
        s2 = jnp.stack([jnp.matmul(part.T, part, precision=hi) for part in parts])
    return jnp.asarray(count_np, x.dtype), s1, s2, center


def _fit(count, s1, s2, center, diag: bool):
    """Mean and (unbiased) covariance -- or variances if ``diag`` -- from summed statistics of
    centred data (batched over leading axes)."""
    count = jnp.asarray(count)[..., None]
    mean_c = s1 / count
    if diag:
        cov = (s2 - count * mean_c * mean_c) / (count - 1)
    else:
        outer = mean_c[..., :, None] * mean_c[..., None, :]
        cov = (s2 - count[..., None] * outer) / (count[..., None] - 1)
    center, mean_c = align_ranks(center, mean_c)
    return center + mean_c, cov


def _gaussian_kl(mean_p, cov_p, mean_q, cov_q, diag: bool) -> jax.Array:
    if diag:
        return kl_diag(mean_p, cov_p, mean_q, cov_q, param="var")
    return kl_full(mean_p, jnp.linalg.cholesky(cov_p), mean_q, jnp.linalg.cholesky(cov_q))


def _gaussian_estimate(x_p: jax.Array, x_q: jax.Array, diag: bool) -> Estimate:
    stats_p = _group_stats(x_p, _GROUPS, diag)
    stats_q = _group_stats(x_q, _GROUPS, diag)

    def total(stats):
        count, s1, s2, center = stats
        return jnp.sum(count), jnp.sum(s1, axis=0), jnp.sum(s2, axis=0), center

    tot_p, tot_q = total(stats_p), total(stats_q)
    mean_p, cov_p = _fit(*tot_p, diag)
    mean_q, cov_q = _fit(*tot_q, diag)
    value = _gaussian_kl(mean_p, cov_p, mean_q, cov_q, diag)

    def leave_out(tot, stats):  # the fits without each group: (G, d), (G, d[, d])
        count, s1, s2, _ = stats
        return _fit(tot[0] - count, tot[1][None] - s1, tot[2][None] - s2, tot[3], diag)

    m_p, v_p = leave_out(tot_p, stats_p)
    m_q, v_q = leave_out(tot_q, stats_q)
    theta_p = _gaussian_kl(m_p, v_p, mean_q[None], cov_q[None], diag)
    theta_q = _gaussian_kl(mean_p[None], cov_p[None], m_q, v_q, diag)
    return Estimate(value, jnp.sqrt(_jackknife_var(theta_p) + _jackknife_var(theta_q)))


def kl_from_samples(
    x_p: Float[ArrayLike, "n d"],
    x_q: Float[ArrayLike, "m d"],
    *,
    method: Literal["knn", "gaussian"] = "knn",
    k: int = 1,
    covariance: Literal["full", "diag"] = "full",
    block_size: int = 64,
    max_ties: int = 4,
) -> Estimate:
    r"""Estimates ``KL(p || q)`` from samples ``x_p ~ p`` and ``x_q ~ q`` alone.

    ``"knn"``: ``D = (d / n) sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))`` (Wang, Kulkarni &
    Verdu, 2009), with the adaptive ranks for duplicate points described in the module
    docstring. ``"gaussian"``: the closed-form KL between Gaussians fitted by their sample mean and
    covariance (full, or diagonal with ``covariance="diag"``). Both return a jackknife standard
    error. Jit-able (all options are static).

    Args:
      x_p: ``(n, d)`` samples from p.
      x_q: ``(m, d)`` samples from q.
      method: ``"knn"`` (default) or ``"gaussian"``.
      k: the neighbour rank for ``"knn"`` (default 1: least biased, noisiest).
      covariance: ``"full"`` (default) or ``"diag"``, for ``"gaussian"``.
      block_size: query rows per block of the neighbour search (memory
        ``~ 4 * block_size * m`` bytes per search).
      max_ties: how many coincident points per query the ``"knn"`` search can skip.

    Returns:
      ``Estimate(value, stderr)``, scalars (float32 at least).

    Raises:
      TypeError: a sample set is not a floating-point array.
      ValueError: a sample set is not 2-D, the dimensions differ, an option is invalid, or there
        are too few samples: ``"knn"`` needs ``n >= k + 2`` and ``m >= k + 1``; ``"gaussian"``
        needs more samples than dimensions (``n, m > d``) for a full covariance (and at least
        ``2 * 16`` for the jackknife groups).

    References:
      Wang, Kulkarni & Verdu (2009); Efron & Stein (1981).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import kl_from_samples
      >>> x_p = jax.random.normal(jax.random.key(0), (2000, 2))
      >>> x_q = 1.0 + jax.random.normal(jax.random.key(1), (2000, 2))  # exact KL = 1.0
      >>> est = jax.jit(kl_from_samples)(x_p, x_q)
      >>> est.value, est.stderr
      (Array(0.9..., dtype=float32), Array(0.0..., dtype=float32))
      >>> jax.jit(kl_from_samples, static_argnames="method")(x_p, x_q, method="gaussian").value
      Array(1.0..., dtype=float32)
    """
    fn = "kl_from_samples"
    x_p, x_q = as_float_arrays(fn, ("x_p", "x_q"), (x_p, x_q))
    for name, x in (("x_p", x_p), ("x_q", x_q)):
        if x.ndim != 2:
            raise ValueError(
                f"{fn}: '{name}' must be a 2-D (samples, dimensions) array, got shape {x.shape}"
            )
    if x_p.shape[1] != x_q.shape[1]:
        raise ValueError(
            f"{fn}: dimensions differ: 'x_p' has shape {x_p.shape} and 'x_q' has shape "
            f"{x_q.shape} ({x_p.shape[1]} vs {x_q.shape[1]})"
        )
    n, d = x_p.shape
    m = x_q.shape[0]
    checks.check_finite(fn, "x_p", x_p)
    checks.check_finite(fn, "x_q", x_q)
    if method == "knn":
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"{fn}: k must be a positive int, got {k!r}")
        if not isinstance(max_ties, int) or max_ties < 0:
            raise ValueError(f"{fn}: max_ties must be a non-negative int, got {max_ties!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"{fn}: block_size must be a positive int, got {block_size!r}")
        if n < k + 2 or m < k + 1:
            raise ValueError(
                f"{fn}: too few samples for k={k}: 'x_p' has {n} (needs >= k + 2 = {k + 2}: "
                f"k neighbours besides itself, plus one for the error bar) and 'x_q' has {m} "
                f"(needs >= k + 1 = {k + 1})"
            )
        return _knn_estimate(x_p, x_q, k, min(block_size, n), max_ties)
    if method == "gaussian":
        if covariance not in ("full", "diag"):
            raise ValueError(f"{fn}: covariance must be 'full' or 'diag', got {covariance!r}")
        need = max(2 * _GROUPS, d + 2 if covariance == "full" else 3)
        if n < need or m < need:
            raise ValueError(
                f"{fn}: too few samples for a {covariance} Gaussian fit in d={d}: 'x_p' has {n} "
                f"and 'x_q' has {m}; each needs at least {need} (more than d, and 2 per "
                f"jackknife group)"
            )
        return _gaussian_estimate(x_p, x_q, covariance == "diag")
    raise ValueError(f"{fn}: method must be 'knn' or 'gaussian', got {method!r}")

r"""Monte Carlo estimates of ``KL(p || q)`` with honest standard errors.

For pairs without a closed form (a mixture on either side, or ``q`` known only through its
log-density) :func:`kl_mc` draws ``x ~ p`` and averages a per-sample estimator of
``KL(p || q) = E_p[-log r(x)]``, ``r = q(x) / p(x)``:

* ``"k1"``: ``-log r``, unbiased;
* ``"k2"``: ``(log r)^2 / 2``, biased (it estimates a different divergence, tight only as
  ``p -> q``), low variance;
* ``"k3"``: ``phi(log r) = r - 1 - log r``, unbiased (``E_p[r] = 1``) and never negative:
  computed with :func:`gkl_jax.phi`, so unlike hand-written ``(r - 1) - log r`` it stays
  ``>= 0`` and keeps its digits in float32 when ``p ~ q``.

Variance reduction, for ``p`` a :class:`~gkl_jax.DiagGaussian` or a
:class:`~gkl_jax.GaussianMixture` (whose samples are ``loc + scale * eps`` with standard-normal
noise ``eps``):

* **antithetic pairs**: each ``eps`` is used with ``-eps`` (same mixture component); the pair
  average is one independent unit. It removes every part of the estimator that is odd in ``eps``
  (for Gaussian ``q``: the whole mean-difference term of ``k1``).
* **control variates**: functions of the noise whose expectation under ``p`` is known exactly
  are subtracted from the per-unit ``k1`` values. For two DiagGaussians ``-log r`` is the closed
  form plus a zero-mean noise term known in closed form (see ``_diag_log_ratio``), whose
  coefficient is exactly 1: subtracting it leaves the closed form, its exact gradient and a
  rounding-sized error bar, at ``O(units * d)``. For other pairs (a mixture on either side, a
  callable ``q``) the features ``eps_i^2 - 1`` (and ``eps_i`` without antithetic pairs),
  pooled into contiguous groups, are regressed out with least-squares coefficients fitted on the
  *other* units (leave-one-out cross-fitting, so the estimate stays unbiased; Glasserman 2004,
  Sec. 4.1 for the regression estimator). At most ``min(units / 2, units - 8, 8)`` features:
  the fit costs ``O(units * F^2)`` (matrix products only), which stays within 2x of plain ``k1``
  (benchmarks/results/mc_speed.md); 16 features gave at most 10% less spread than 8 in D = 16
  and a wider error bar at 64 samples.

The default ``estimator="auto"`` is ``k1`` with antithetic pairs and control variates when ``p``
exposes its noise (Gaussian or mixture ``p``), and plain ``k3`` otherwise. For Gaussian pairs,
nearly identical or not, it is exact up to rounding; for a Gaussian or mixture ``p`` against a
mixture ``q`` it is unbiased and tighter than plain ``k1`` at about the same cost (2.1-2.8x less
spread from 64 to 16384 samples for the posterior-vs-mixture-prior pair of
benchmarks/results/mc_speed.md, D = 16; for ``q`` close to ``p`` the features gain little at 64
samples) and than ``k3`` (whose values are heavy-tailed when ``q`` is wider than ``p``).

**Standard error.** Computed from the per-unit values (a pair counts once): their sample standard
deviation over ``sqrt(units)``; with control variates that of the corrected values, times
``1 + F / units`` for the fits sharing their data. It is the half-width of a Student-t interval
(degrees of freedom ``units - 1 - F``, fewer for heavy-tailed values), widened for the values'
skewness (Hall 1992, Sec. 2.6). ``k3``'s bar: ``k3 = k1 + (r - 1)`` with ``E_p[r] = 1`` known;
when ``q`` is wider than ``p``, ``r`` is heavy-tailed and a sample that misses its rare large
values gives a ``k3`` mean and sd that are both too low (measured on two VAEs: 53.5% of the
estimates 2 stderr below the truth, 88.9% at 16384 samples). Such a sample shows itself by a mean
of ``r - 1`` more than 2 of its standard errors from 0; then ``k3``'s bar is widened to contain
``k1``'s interval moved to the ``k3`` estimate, so it covers whenever ``k1``'s does. ``k2``
estimates ``E_p[(log r)^2] / 2``, not the KL: it returns a :class:`~gkl_jax.BiasedEstimate`
whose stderr is that of its own target. Measured over 10 pairs x 200 seeds per cell
(benchmarks/results/coverage.md; asserted by tests/test_monte_carlo.py at 64 samples): every
estimator covers the truth >= 94% of the time within 2 stderr, from 64 to 16384 samples, for
diagonal pairs (near, q wider, q narrower, mixed as in a VAE), a Gaussian against a mixture and a
mixture against a Gaussian; ``k3``'s bar is conservative (2-10x the actual spread) when ``q`` is
much wider than ``p``. A floating-point term,
``eps_machine`` times the size of the summed log-density terms (times the estimator's slope), is
added in quadrature: it bounds the rounding error that no amount of sampling averages away. For two
DiagGaussians the log-ratio is evaluated without cancellation (see ``_diag_log_ratio``), so the
estimate keeps its digits in float32 even for pairs that differ by 1e-4.

**Gradients.** Samples are reparameterized, so gradients flow to ``p``'s parameters through
``x`` and to ``q``'s through ``log q``. With ``stick_the_landing=True`` the score term
``grad_theta log p_theta(x)`` (zero mean) is dropped from the gradient (Roeder et al., 2017);
values are unchanged. When ``p`` is a mixture its component choice is not reparameterizable:
gradients reach the component parameters through ``x`` and the logits through ``log p(x)``,
and a score-function term ``(k - b) grad log pi_c`` with a leave-one-out baseline ``b`` is added
(its value is exactly 0) so that the logits' gradient is unbiased.

References:
  J. Schulman, "Approximating KL divergence" (2020), http://joschu.net/blog/kl-approx.html
  (k1, k2, k3); P. Glasserman, *Monte Carlo Methods in Financial Engineering* (2004), Ch. 4
  (antithetic variates, control variates); G. Roeder, Y. Wu, D. Duvenaud, "Sticking the landing",
  NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gkl_jax._src import checks
from gkl_jax._src.base import BiasedEstimate, Distribution, Estimate, check_argument_values
from gkl_jax._src.dispatch import Operation
from gkl_jax._src.distributions.diag import DiagGaussian, log_var_ratio
from gkl_jax._src.distributions.mixture import GaussianMixture
from gkl_jax._src.eager import compiled
from gkl_jax._src.interop_hook import as_distribution
from gkl_jax._src.kl.registry import kl_op
from gkl_jax._src.linalg import cholesky, solve_triangular
from gkl_jax._src.numerics import align_ranks, compute_dtype, expm1, phi

__all__ = ["draw_with_noise", "kl_mc", "log_ratio_at_noise"]

Estimator = Literal["auto", "k1", "k2", "k3"]
_ESTIMATORS = ("auto", "k1", "k2", "k3")


class _Draw(NamedTuple):
    x: jax.Array  # (n, *batch_p, d) draws
    x_anti: jax.Array | None  # their antithetic partners
    eps: jax.Array | None  # (n, *batch_p, d) the standard-normal noise (None: unknown p)
    component: jax.Array | None  # (n, *batch_p) mixture component indices
    log_weight: jax.Array | None  # (n, *batch_p) log pi_c of the chosen components


# Draws from p that expose their standard-normal noise (antithetic pairs and control variates
# need it), dispatched on p's type; a type without a registration is sampled as a black box.
draw_with_noise = Operation("draw_with_noise", arity=1)


@draw_with_noise.register(DiagGaussian)
def _draw_diag(p: DiagGaussian, key: jax.Array, n: int, antithetic: bool) -> _Draw:
    eps = jax.random.normal(key, (n, *p.batch_shape, p.event_size), p.dtype)
    mean, std, eps = align_ranks(p.mean, p.std, eps)
    scaled = std * eps
    return _Draw(mean + scaled, mean - scaled if antithetic else None, eps, None, None)


@draw_with_noise.register(GaussianMixture)
def _draw_mixture(p: GaussianMixture, key: jax.Array, n: int, antithetic: bool) -> _Draw:
    loc, scale, eps, c = p._sample_parts(key, (n,))
    scaled = scale * eps
    log_w = jnp.broadcast_to(p.log_weights, (*p.batch_shape, p.num_components))
    log_w, idx = align_ranks(log_w, c[..., None])
    log_w_c = jnp.take_along_axis(log_w, idx, axis=-1)[..., 0]
    return _Draw(loc + scaled, loc - scaled if antithetic else None, eps, c, log_w_c)


def _draw(p: Any, key: jax.Array, n: int, antithetic: bool) -> _Draw:
    impl = draw_with_noise.lookup(type(p))
    if impl is None:
        return _Draw(p.sample(key, (n,)), None, None, None, None)
    return impl(p, key, n, antithetic)


def _reparameterized(p: Any) -> bool:
    return draw_with_noise.lookup(type(p)) is not None


def _log_density(fn: str, q: Any) -> Callable[[jax.Array], jax.Array]:
    if hasattr(q, "log_prob"):
        return q.log_prob
    if callable(q):
        return q
    raise TypeError(
        f"{fn}: 'q' must be a distribution with a log_prob method or a callable log-density, "
        f"got {type(q).__name__}"
    )


# ``log q(x) - log p(x)`` at ``x = p's draw from eps``, computed without cancellation where a pair
# registers an exact form (dispatched on the types); otherwise the two log-densities are subtracted.
log_ratio_at_noise = Operation("log_ratio_at_noise", arity=2)


@log_ratio_at_noise.register(DiagGaussian, DiagGaussian)
def _diag_log_ratio(p: DiagGaussian, q: DiagGaussian, eps: jax.Array):
    """``log q(x) - log p(x)`` at ``x = mean_p + std_p * eps``, without cancellation.

    With ``u = (mean_p - mean_q) / std_q`` and ``l = log(std_p / std_q)`` (a log-ratio, exact
    for nearly identical spreads), ``-log r = KL(p || q) + sum_i [u_i e^{l_i} eps_i
    + expm1(2 l_i) (eps_i^2 - 1) / 2]``: the exact closed form plus zero-mean noise terms, each
    computed to a few ulp. Subtracting two separately rounded log-densities instead loses
    ``eps * |log p|`` absolute, which is all of a KL of 1e-7. Returns ``(log_r, magnitude)``,
    the latter the size of the summed terms (for the rounding part of the standard error), and
    the zero-mean noise part ``-log r - KL(p || q)``, a known-mean control variate whose
    coefficient is exactly 1 (see :func:`kl_mc`).
    """
    # log(std_p / std_q) by the same exact log-ratio as the closed forms; u = (mean_p - mean_q)
    # / std_q in q's stored parametrization; the constant part is kl(p, q) itself.
    ell = 0.5 * log_var_ratio(p, q)
    u, ell = align_ranks(q._standardize(p.mean), ell)
    slope = u * jnp.exp(ell)
    curve = 0.5 * expm1(2.0 * ell)
    slope, curve, eps = align_ranks(slope, curve, eps)
    lin, quad = slope * eps, curve * (eps * eps - 1)
    noise = jnp.sum(lin + quad, axis=-1)
    exact, noise = align_ranks(kl_op(p, q), noise)  # kl_mc has checked p, q
    magnitude = exact + jnp.sum(jnp.abs(lin) + jnp.abs(quad), axis=-1)
    return -(exact + noise), magnitude, noise


def _group_matrix(d: int, groups: int, dtype) -> jax.Array:
    """``(d, groups)`` 0/1 matrix pooling contiguous dimensions into ``groups`` sums."""
    member = (np.arange(d) * groups) // d
    return jnp.asarray(member[:, None] == np.arange(groups)[None, :], dtype=dtype)


def _features(eps: jax.Array, antithetic: bool, groups: int) -> jax.Array:
    """Control-variate features with known mean 0 under p: ``(units, *batch_p, F)``.

    ``eps_i^2 - 1`` per dimension, and ``eps_i`` too without antithetic pairs (pairs cancel odd
    features exactly), pooled into ``groups`` contiguous group sums when ``groups < d`` (still
    mean 0; see :func:`_num_groups`). A mixture's component indicators ``onehot(c) - pi`` would be
    valid too, but measured no gain at 64 samples and a less reliable error bar.
    """
    d = eps.shape[-1]
    parts = [eps * eps - 1] if antithetic else [eps * eps - 1, eps]
    if groups < d:
        pool = _group_matrix(d, groups, eps.dtype)
        parts = [f @ pool for f in parts]
    return jax.lax.stop_gradient(jnp.concatenate(parts, axis=-1))


# At most this many control-variate features: the fit costs O(units * F^2), the draws and log
# densities O(units * d) (times the components of a mixture); see benchmarks/results/mc_speed.md.
# Measured for a Gaussian p against a 4-component mixture q in D = 16 (200 seeds): at 64 samples
# 0 / 4 / 8 / 16 features gave relative spreads 0.181 / 0.177 / 0.195 / 0.222 (the fit's own
# noise), at 1024 samples 0.041 / 0.036 / 0.033 / 0.029, with coverage 94-98% throughout; for a
# narrow p against a wide mixture prior, 8 features cut the spread 7-10x at every size.
_MAX_FEATURES = 8


def _num_groups(units: int, d: int, antithetic: bool) -> int:
    """Feature groups per kind: at most ``min(units / 2, units - 8, _MAX_FEATURES)`` features in
    all (with few units, noisy fits cost more than they remove). Two DiagGaussians need none:
    their noise is subtracted exactly (see :func:`kl_mc`), so the default stays exact there at
    any sample count (the relative spread <= 0.1 at 64 samples that tests/test_monte_carlo.py
    asks for; pooled features alone gave 0.13-3.3 there)."""
    budget = min(units // 2, units - 8, _MAX_FEATURES)
    return max(0, min(d, budget // (1 if antithetic else 2)))


# Skewness term of the error bar: a studentized mean of skewed values covers less than its
# nominal rate, by about (7/3) * 2 * phi(2) * g^2 / n at +-2 stderr (g the values' skewness; the
# Edgeworth expansion of the studentized mean, Hall 1992, Sec. 2.6); widening the bar by
# (1 + (7/6) * g^2 / n) would give it back if g were known. The sample skewness underestimates
# g^2 by a factor of about 3 at 32-64 units for chi-square-like values (k3 for p ~ q, where
# k3 ~ (log r)^2 / 2): with Hall's 7/6 k3 covered 92.0-92.9% there, with 3 x 7/6 94.0-95.2%
# (benchmarks/results/coverage.md); light-tailed values (k1) are barely widened.
_SKEW = 3.5
# t_dof(0.9772) / 2 ~ 1 + _T1 / dof + _T2 / dof^2 (Cornish-Fisher at z = 2): the bar is the
# +-2 sd interval of a Student t with the variance estimate's degrees of freedom.
_T1, _T2 = 1.25, 1.53
# The control-variate fits share their data: the corrected values' sd is widened by
# (1 + F / units) ** _FIT_POWER.
_FIT_POWER = 1.0


def _cross_fit(values: jax.Array, feats: jax.Array) -> tuple[jax.Array, float]:
    """Cross-fitted control-variate corrections: the corrected values and the variance factor.

    ``values``: ``(n, *B)``; ``feats``: ``(n, *B, F)`` with known mean 0. Each unit is corrected
    with coefficients fitted by least squares on the *other* units,
    ``c_s = v_s - beta_(-s) . f_s``, so that ``E[c_s] = E[v_s]`` exactly (``beta_(-s)`` is
    independent of ``f_s``): an in-sample fit would be biased by ``O(F / n)``, which at
    ``F ~ n / 2`` we measured at +14% for a mixture ``q``. The ``n`` leave-one-out fits come from
    one fit by the Sherman-Morrison identity ``b_(-s) = b - A^-1 x_s r_s / (1 - h_s)``. The
    variance factor ``1 + F / n`` is the first-order effect of the fits sharing their data
    (without it the error bar is ~20% short at ``F = n / 2``). A ``1e-6 n`` ridge keeps the fit
    defined when a feature is constant (a component never drawn).
    Returns ``(corrected (n, *B), factor)``.
    """
    n, f = feats.shape[0], feats.shape[-1]
    v = jnp.moveaxis(values, 0, -1)[..., None]  # (*B, n, 1)
    x = jnp.moveaxis(feats, 0, -2)  # (*B, n, F)
    design = jnp.concatenate([jnp.ones_like(x[..., :1]), x], axis=-1)  # (*B, n, F + 1)
    gram = jnp.swapaxes(design, -1, -2) @ design  # (*B, F + 1, F + 1)
    ridge = jnp.asarray(np.diag([0.0] + [1e-6 * n] * f), gram.dtype)
    gram, ridge = align_ranks(gram, ridge)
    # Only matrix products and one small inverse: O(n F^2) per batch element, no n x n
    # intermediates and no per-unit dot products (which XLA runs as n tiny batched matmuls).
    # G^-1 = L^-T L^-1 from the Cholesky factor (array operations: no batched LAPACK call, which
    # can deadlock jaxlib 0.10 on CPU, and no per-matrix loop over the batch)
    chol = cholesky(gram + ridge)
    eye = jnp.broadcast_to(jnp.eye(f + 1, dtype=gram.dtype), gram.shape)
    chol_inv = solve_triangular(chol, eye)
    inv = jnp.swapaxes(chol_inv, -1, -2) @ chol_inv  # symmetric, (F + 1)^3
    weights = design @ inv  # (*B, n, F + 1): row s is (G^-1 d_s)^T
    coef = jnp.swapaxes(weights, -1, -2) @ v  # (*B, F + 1, 1)
    resid = v[..., 0] - (design @ coef)[..., 0]
    leverage = jnp.sum(weights * design, axis=-1)
    shift = jnp.sum(x * weights[..., 1:], axis=-1) * resid / (1 - leverage)
    corrected = v[..., 0] - (x @ coef[..., 1:, :])[..., 0] + shift
    return jnp.moveaxis(corrected, -1, 0), 1.0 + f / n


def _mean_and_stderr(values: jax.Array, feats: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The estimate (mean of the per-unit values, control-variate corrected when ``feats``) and
    its sampling standard error: ``sd / sqrt(units)``, times the fits' factor, widened for the
    values' skewness (:data:`_SKEW`)."""
    n = values.shape[0]
    factor, fitted = 1.0, 0
    if feats is not None:
        values, factor = _cross_fit(values, feats)
        fitted = feats.shape[-1]
    mean = jnp.mean(values, axis=0, keepdims=True)
    centred = values - mean
    m2 = jnp.mean(jnp.square(centred), axis=0, keepdims=True)
    sd = jnp.sqrt(m2)
    z = centred / jnp.where(sd > 0, sd, 1.0)  # standardized: the moments cannot overflow
    skew = jnp.mean(z * z * z, axis=0)
    excess = jnp.maximum(jnp.mean(jnp.square(z * z), axis=0) - 3.0, 0.0)
    # Student-t width for the variance estimate's own noise: its degrees of freedom, fewer
    # for heavy-tailed values (Var(s^2) / sigma^4 = 2 / dof + excess kurtosis / n)
    dof = 1.0 / (1.0 / max(n - 1 - fitted, 1) + excess / (2 * n))
    t_width = 1.0 + _T1 / dof + _T2 / (dof * dof)
    widen = (1.0 + _SKEW * skew * skew / n) * t_width
    stderr = jnp.sqrt(m2[0] / (n - 1)) * factor**_FIT_POWER * widen
    mean = mean[0]
    return mean, stderr


class _Units(NamedTuple):
    """What the statistics need from the draws, per independent unit (a draw, or a pair)."""

    values: dict[str, jax.Array]  # kind -> (u, *batch): the estimator's value per unit
    rounding: dict[str, jax.Array]  # kind -> (u, *batch): |terms| * slope, for the rounding error
    feats: jax.Array | None  # (u, *batch_p, F) control-variate features
    log_weight: jax.Array | None  # (u, *batch_p) log pi_c of a mixture p's chosen components


def _per_draw(kind: str, log_r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The per-draw estimator values and their slope ``|d value / d log r|``."""
    if kind == "k1":
        return -log_r, jnp.ones_like(log_r)
    if kind == "k2":
        return 0.5 * log_r * log_r, jnp.abs(log_r)
    return phi(log_r), jnp.abs(expm1(log_r))


def _units(
    p, q, log_q, key, units, *, antithetic, kinds, groups, batch, stick_the_landing, known_noise
):
    """Draws ``units`` units from ``p`` and reduces them to :class:`_Units`. With
    ``known_noise`` (k1 with control variates on a pair with an exact log-ratio form) the k1
    values have their zero-mean noise part subtracted (coefficient exactly 1)."""
    d = p.event_size
    batch_p = tuple(p.batch_shape)
    draw = _draw(p, key, units, antithetic)
    x = draw.x if draw.x_anti is None else jnp.concatenate([draw.x, draw.x_anti], axis=0)
    n_draws = x.shape[0]
    lead = (1,) * (len(batch) - len(batch_p))
    x = x.reshape(n_draws, *lead, *batch_p, d)
    exact_log_ratio = log_ratio_at_noise.lookup(type(p), type(q))
    if exact_log_ratio is not None and not stick_the_landing:
        eps = draw.eps if draw.x_anti is None else jnp.concatenate([draw.eps, -draw.eps])
        log_r, magnitude, noise = exact_log_ratio(p, q, eps.reshape(x.shape))
    else:
        p_eval = jax.tree_util.tree_map(jax.lax.stop_gradient, p) if stick_the_landing else p
        lp, lq = align_ranks(p_eval.log_prob(x), log_q(x))
        shape = jnp.broadcast_shapes(lp.shape, lq.shape)
        log_r = jnp.broadcast_to(lq, shape) - jnp.broadcast_to(lp, shape)
        magnitude = jnp.abs(lp) + jnp.abs(lq)
    magnitude = jax.lax.stop_gradient(magnitude)

    def per_unit(a):
        return a if not antithetic else 0.5 * (a[:units] + a[units:])

    values, rounding = {}, {}
    for kind in kinds:
        per_draw, slope = _per_draw(kind, log_r)
        if known_noise and kind == "k1":
            per_draw = per_draw - noise  # exact + noise - noise: the closed form, its gradient
        values[kind] = per_unit(per_draw)
        rounding[kind] = per_unit(magnitude * jax.lax.stop_gradient(slope))
    feats = None if groups == 0 else _features(draw.eps[:units], antithetic, groups)
    return _Units(values, rounding, feats, draw.log_weight)


# Draws are made and reduced in chunks of about this many numbers (units x batch x d) at a time,
# so that memory is O(units x batch) plus the control-variate features, not several copies of
# all the draws; below twice this, in one piece (the random stream of small calls is unchanged).
_CHUNK_ELEMENTS = 1 << 20


def _all_units(p, q, log_q, key, units, **kw) -> _Units:
    per_unit = max(1, int(np.prod(kw["batch"], dtype=np.int64)) * p.event_size)
    chunk = max(1, _CHUNK_ELEMENTS // per_unit)
    if units <= 2 * chunk:
        return _units(p, q, log_q, key, units, **kw)
    full, rest = divmod(units, chunk)
    keys = jax.random.split(key, full + (rest > 0))
    body = jax.checkpoint(lambda k: _units(p, q, log_q, k, chunk, **kw))
    parts = jax.lax.map(body, keys[:full])
    parts = jax.tree_util.tree_map(lambda a: a.reshape(full * chunk, *a.shape[2:]), parts)
    if rest:
        last = _units(p, q, log_q, keys[full], rest, **kw)
        parts = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), parts, last)
    return parts


def _validated_dtype(fn: str, p: Any, q: Any) -> tuple[Any, Any]:
    """Casts the gkl_jax distributions among ``p``, ``q`` to their common compute dtype (at least
    float32), raising the dtype error under ``fn``'s name (``kl_mc: argument 'q.mean' ...``)."""
    dists = [(name, d) for name, d in (("p", p), ("q", q)) if isinstance(d, Distribution)]
    named = [leaf for name, d in dists for leaf in d.named_leaves(name)]
    if not named:
        return p, q
    names, leaves = zip(*named, strict=True)
    dtype = compute_dtype(fn, names, leaves)

    def cast(d):
        if not isinstance(d, Distribution):
            return d
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), d)

    return cast(p), cast(q)


@compiled(
    static=("num_samples", "estimator", "antithetic", "control_variates", "stick_the_landing")
)
def kl_mc(
    key: jax.Array,
    p: Any,
    q: Any,
    *,
    num_samples: int,
    estimator: Estimator = "auto",
    antithetic: bool | None = None,
    control_variates: bool | None = None,
    stick_the_landing: bool = False,
) -> Estimate:
    r"""Monte Carlo estimate of ``KL(p || q) = E_{x~p}[log p(x) - log q(x)]`` and its stderr.

    With ``log r(x) = log q(x) - log p(x)`` on ``num_samples`` draws ``x ~ p``, the per-sample
    estimators are ``k1 = -log r``, ``k2 = (log r)^2 / 2`` and ``k3 = phi(log r)`` with
    ``phi(t) = e^t - 1 - t`` (see the module docstring for antithetic pairs, control variates,
    the standard error and gradients).

    Args:
      key: a PRNG key (``jax.random.key(0)`` or a raw ``jax.random.PRNGKey(0)``).
      p: the distribution samples are drawn from: a DiagGaussian, a GaussianMixture, or any
        object with ``sample(key, sample_shape)``, ``log_prob(x)``, ``batch_shape`` and
        ``event_size`` (then without antithetic pairs or control variates).
      q: a distribution with ``log_prob(x)`` (DiagGaussian, GaussianMixture, ...) or a callable
        log-density ``x (*s, d) -> (*s)``: it is called on draws of shape
        ``(num_samples, *p.batch_shape, d)`` and must return shape
        ``(num_samples, *p.batch_shape)``.
      num_samples: number of draws from ``p`` (and evaluations of ``log q``); even when
        ``antithetic``. Static.
      estimator: ``"auto"`` (default: ``k1`` with antithetic pairs and control variates when
        ``p`` is a Gaussian or mixture, else ``k3``), ``"k1"``, ``"k2"`` or ``"k3"``.
      antithetic: pair each draw with its reflection (``-eps``). Default: on when ``p`` is a
        Gaussian or mixture.
      control_variates: regress out the noise features (see above). Default: on for ``k1`` when
        ``p`` is a Gaussian or mixture, off for ``k2``/``k3`` (``k3`` then keeps its guarantee
        ``value >= 0``, which a regression estimate does not have).
      stick_the_landing: drop the zero-mean score term from ``p``'s gradient (Roeder et al.,
        2017). Values are unchanged.

    Returns:
      An :class:`~gkl_jax.Estimate` ``(value, stderr)``, each of shape
      ``broadcast(p.batch_shape, q.batch_shape)``; for ``estimator="k2"`` a
      :class:`~gkl_jax.BiasedEstimate` (``stderr_ignores_bias``: k2 estimates
      ``E_p[(log r)^2] / 2``, which is not the KL).

    Raises:
      ValueError: unknown ``estimator``; ``num_samples`` too small (< 2 units) or odd with
        antithetic pairs; latent sizes differ or batch shapes do not broadcast; a callable ``q``
        returns the wrong shape; antithetic pairs or control variates asked for a ``p`` that
        does not expose its noise.
      TypeError: ``key`` is not a PRNG key; ``num_samples`` is not an int (a bool is not
        accepted); ``q`` is neither a distribution nor callable; a parameter of ``p`` or ``q`` is
        not a floating-point array.

    References:
      Schulman (2020) for k1/k2/k3; Glasserman (2004), Ch. 4; Roeder et al. (2017);
      Hall (1992), Sec. 2.6.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, GaussianMixture, kl_mc
      >>> p = DiagGaussian(jnp.zeros(2), jnp.zeros(2))
      >>> comps = DiagGaussian(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.zeros((2, 2)))
      >>> q = GaussianMixture(jnp.zeros(2), comps)  # no closed form for KL(p || q)
      >>> est = kl_mc(jax.random.key(0), p, q, num_samples=1024)
      >>> est.value, est.stderr  # the exact value (by quadrature) is 0.1254
      (Array(0.13..., dtype=float32), Array(0.00..., dtype=float32))
    """
    fn = "kl_mc"
    p, q = as_distribution(p), as_distribution(q)  # distrax / TFP / numpyro Gaussians
    checks.check_key(fn, key)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"{fn}: estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    num_samples = checks.static_int(fn, "num_samples", num_samples)
    log_q = _log_density(fn, q)
    if not hasattr(p, "sample") or not hasattr(p, "log_prob"):
        raise TypeError(
            f"{fn}: 'p' must have sample(key, sample_shape) and log_prob(x) methods, got "
            f"{type(p).__name__}"
        )
    p, q = _validated_dtype(fn, p, q)
    log_q = _log_density(fn, q)
    check_argument_values(fn, p=p, q=q)  # checked mode; q only when it is a Distribution
    reparam = _reparameterized(p)
    kind = ("k1" if reparam else "k3") if estimator == "auto" else estimator
    antithetic = reparam if antithetic is None else bool(antithetic)
    if control_variates is None:
        control_variates = reparam and kind == "k1"
    if (antithetic or control_variates) and not reparam:
        raise ValueError(
            f"{fn}: antithetic pairs and control variates need p to be a DiagGaussian or a "
            f"GaussianMixture (whose noise is known); got {type(p).__name__}. Pass "
            "antithetic=False, control_variates=False."
        )
    if antithetic and num_samples % 2:
        raise ValueError(
            f"{fn}: num_samples={num_samples} is odd; antithetic pairs need an even number "
            "(or pass antithetic=False)"
        )
    units = num_samples // 2 if antithetic else num_samples
    if units < 2:
        raise ValueError(
            f"{fn}: num_samples={num_samples} gives {units} independent unit(s); a standard "
            f"error needs at least 2 (num_samples >= {4 if antithetic else 2})"
        )

    d = p.event_size
    batch_p = tuple(p.batch_shape)
    shapes = [(*batch_p, d)]
    if hasattr(q, "event_size"):  # a distribution; a callable log-density must broadcast itself
        shapes.append((*getattr(q, "batch_shape", ()), q.event_size))
    batch, _ = checks.check_event_shapes(fn, ("p", "q")[: len(shapes)], shapes)

    if not hasattr(q, "event_size"):  # a callable log-density: one value per draw
        n_draws = 2 * units if antithetic else units
        x = jax.ShapeDtypeStruct((n_draws, *batch_p, d), jnp.result_type(p.dtype, jnp.float32))
        out = jax.eval_shape(lambda x: log_q(x), x)  # a fresh function: no cache lookups
        if getattr(out, "shape", None) != x.shape[:-1]:
            raise ValueError(
                f"{fn}: the log-density 'q' returned shape {getattr(out, 'shape', type(out))} "
                f"for draws x of shape {x.shape}; it must return one value per draw, shape "
                f"{x.shape[:-1]} (x's shape without its last, latent axis)"
            )

    # k3's error bar is built from k1's as well (see the module docstring)
    kinds = (kind, "k1") if kind == "k3" else (kind,)
    # For a pair with an exact log-ratio form (two DiagGaussians) k1's noise is a known
    # zero-mean function of eps with coefficient exactly 1: subtracting it leaves the closed form
    # (and its exact gradient) at O(units * d); other pairs fit pooled noise features.
    exact_pair = log_ratio_at_noise.lookup(type(p), type(q)) is not None
    known_noise = control_variates and kind == "k1" and exact_pair and not stick_the_landing
    groups = _num_groups(units, d, antithetic) if control_variates and not known_noise else 0
    got = _all_units(
        p,
        q,
        log_q,
        key,
        units,
        antithetic=antithetic,
        kinds=kinds,
        groups=groups,
        batch=batch,
        stick_the_landing=stick_the_landing,
        known_noise=known_noise,
    )
    values = got.values[kind]
    lead = (1,) * (len(batch) - len(batch_p))
    feats = None
    if got.feats is not None:
        nf = got.feats.shape[-1]
        feats = got.feats.reshape(units, *lead, *batch_p, nf)
        feats = jnp.broadcast_to(feats, (*values.shape, nf))

    def estimate_of(k):
        est, se = _mean_and_stderr(got.values[k], feats)
        rounding = jnp.finfo(est.dtype).eps * jnp.mean(got.rounding[k], axis=0)
        return est, jnp.sqrt(se * se + rounding * rounding)

    estimate, stderr = estimate_of(kind)
    if kind == "k3":
        # k3 = k1 + (r - 1) with E_p[r] = 1 known. When q is wider than p, r is heavy-tailed: a
        # sample usually misses its rare large values, so the k3 mean and its sd both come out
        # low (the VAE pair: 53.5% of the estimates 2 stderr below the truth). Such a
        # sample shows itself: its mean of r - 1 is far from the known 0 by its own standard
        # error. Then report the smallest bar centred on k3 that contains k1's interval moved
        # by that mean (k1's values have light tails), so it covers whenever k1's does;
        # otherwise k3's own bar (k1's is several times wider when p ~ q).
        est1, se1 = estimate_of("k1")
        gap = jax.lax.stop_gradient(estimate - est1)
        diff = jax.lax.stop_gradient(got.values["k3"] - got.values["k1"])  # r - 1 per unit
        gap_se = jnp.std(diff, axis=0, ddof=1) / np.sqrt(units)
        heavy = jnp.abs(jnp.mean(diff, axis=0)) > 2 * gap_se
        stderr = jnp.where(heavy, jnp.maximum(stderr, se1 + 0.5 * jnp.abs(gap)), stderr)

    if got.log_weight is not None:
        # Score-function term for the mixture's component choice: value 0, gradient
        # mean[(v - baseline) * grad log pi_c] with a leave-one-out baseline.
        sg_values = jax.lax.stop_gradient(values)
        baseline = (jnp.sum(sg_values, axis=0, keepdims=True) - sg_values) / (units - 1)
        log_w = got.log_weight.reshape(units, *lead, *batch_p)
        score = log_w - jax.lax.stop_gradient(log_w)
        sg_adv, score = align_ranks(sg_values - baseline, score)
        estimate = estimate + jnp.mean(sg_adv * score, axis=0)
    result = BiasedEstimate if kind == "k2" else Estimate
    return result(estimate, stderr)

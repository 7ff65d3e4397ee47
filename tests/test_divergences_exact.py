"""Renyi, Bhattacharyya, Hellinger, W2: exactness in float32 against a 50-digit reference.

Every divergence and every pair type is checked across regimes (typical pairs, ``p == q``,
nearly identical pairs, covariance ratios of 1e8 either way, low-rank diagonals of e^+-80), with
the defect reproducers of the exactness issue as regression tests. ``python -m
tests.test_divergences_exact`` prints the measured accuracy table.

The reference evaluates the textbook formulas on the exact float32 inputs in 50-digit arithmetic
(mpmath): dense covariances, Cholesky log-determinants, a symmetric eigen-decomposition for the
matrix square roots of W2. It shares no code with gkl_jax.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gkl_jax import (
    DiagGaussian,
    FullGaussian,
    LowRankGaussian,
    bhattacharyya,
    hellinger,
    renyi,
    wasserstein2,
)

D, K = 4, 2  # latent size and rank of the accuracy cases (2k = d: the factors span R^d)
N = 32  # every batch has this size, so that one compilation per pair kind serves all tests

# ---------------------------------------------------------------------------------------------
# 50-digit reference
# ---------------------------------------------------------------------------------------------

_DPS = 50


def _mp_vec(a):
    return mpmath.matrix([mpmath.mpf(float(x)) for x in np.asarray(a, np.float64)])


def ref_moments(kind, params, dps=_DPS):
    """Mean and covariance of the exact float32 parameters, as ``dps``-digit matrices."""
    with mpmath.workdps(dps):
        mean = _mp_vec(params[0])
        d = len(mean)
        if kind == "full":
            tril = np.tril(np.asarray(params[1], np.float64))
            lm = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in tril])
            return mean, lm * lm.T
        cov = mpmath.zeros(d)
        if kind == "lowrank":
            w = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in params[1]])
            cov = w * w.T
        spread = params[1] if kind in ("diag", "diag-std") else params[2]
        for i in range(d):
            s = mpmath.mpf(float(spread[i]))
            cov[i, i] += s * s if kind == "diag-std" else mpmath.exp(s)
        return mean, cov


def _log_det(cov):
    chol = mpmath.cholesky(cov)
    return 2 * mpmath.fsum(mpmath.log(chol[i, i]) for i in range(cov.rows))


def ref_renyi(mp_, sp, mq, sq, alpha):
    with mpmath.workdps(_DPS):
        a = mpmath.mpf(alpha)
        b = 1 - a
        sa = a * sq + b * sp
        if min(mpmath.eigsy(sa, eigvals_only=True)) <= 0:
            return mpmath.inf
        dm = mp_ - mq
        maha = (dm.T * mpmath.inverse(sa) * dm)[0]
        return a / 2 * maha + (_log_det(sa) - b * _log_det(sp) - a * _log_det(sq)) / (2 * b)


def _sqrtm(cov):
    e, q = mpmath.eigsy(cov)
    return q * mpmath.diag([mpmath.sqrt(max(x, 0)) for x in e]) * q.T


def ref_w2(mp_, sp, mq, sq):
    with mpmath.workdps(_DPS):
        root = _sqrtm(sp)
        cross = _sqrtm(root * sq * root)
        dm = mp_ - mq
        tr = lambda m: mpmath.fsum(m[i, i] for i in range(m.rows))  # noqa: E731
        return mpmath.sqrt(max((dm.T * dm)[0] + tr(sp) + tr(sq) - 2 * tr(cross), 0))


def ref_all(kp, pp, kq, qq):
    mp_, sp = ref_moments(kp, pp)
    mq, sq = ref_moments(kq, qq)
    with mpmath.workdps(_DPS):
        db = ref_renyi(mp_, sp, mq, sq, 0.5) / 2
        out = {
            "renyi0.3": ref_renyi(mp_, sp, mq, sq, 0.3),
            "bhattacharyya": db,
            "hellinger": -mpmath.expm1(-db),
            "renyi2": ref_renyi(mp_, sp, mq, sq, 2.0),
            "wasserstein2": ref_w2(mp_, sp, mq, sq),
        }
        return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# cases: random parameters per kind and regime (float32)
# ---------------------------------------------------------------------------------------------


def rand_params(kind, rng, scale=1.0, ld0=0.0, d=D, k=K):
    """Parameters of a random Gaussian; ``scale`` multiplies its standard deviations."""
    m = rng.standard_normal(d)
    if kind == "diag":
        return [m, 0.5 * rng.standard_normal(d) + 2 * np.log(scale) + ld0]
    if kind == "diag-std":
        return [m, scale * np.exp(0.25 * rng.standard_normal(d) + ld0 / 2)]
    if kind == "full":
        tril = np.tril(rng.standard_normal((d, d)), -1) * 0.4
        return [m, scale * (tril + np.diag(np.exp(0.3 * rng.standard_normal(d))))]
    w = 0.7 * rng.standard_normal((d, k)) * scale * np.exp(max(ld0, 0) / 2)
    return [m, w, 0.3 * rng.standard_normal(d) + ld0 + 2 * np.log(scale)]


def perturb(kind, params, eps, rng):
    """The same kind with every parameter moved by a relative/absolute ``eps``."""
    m = params[0] + eps * rng.standard_normal(params[0].shape)
    if kind == "diag":
        return [m, params[1] + eps * rng.standard_normal(params[1].shape)]
    if kind == "diag-std":
        return [m, params[1] * (1 + eps * rng.standard_normal(params[1].shape))]
    if kind == "full":
        return [m, np.tril(params[1] * (1 + eps * rng.standard_normal(params[1].shape)))]
    w = params[1] + eps * rng.standard_normal(params[1].shape)
    return [m, w, params[2] + eps * rng.standard_normal(params[2].shape)]


def near_other(kind_to, diag_params, kind_from, eps, rng):
    """A ``kind_to`` (full or low rank) Gaussian within ``eps`` of a diagonal one."""
    m, spread = diag_params
    std = np.exp(0.5 * spread) if kind_from == "diag" else spread
    if kind_to == "full":
        return [m, np.diag(std) + eps * np.tril(rng.standard_normal((D, D)), -1)]
    return [m, eps * rng.standard_normal((D, K)), 2 * np.log(std)]


def diag_of(kind_to, params, kind_from):
    """The diagonal Gaussian (kind_to) that a full/low-rank one is near to."""
    m = params[0]
    log_var = 2 * np.log(np.diag(params[1])) if kind_from == "full" else params[2]
    return [m, log_var] if kind_to == "diag" else [m, np.exp(0.5 * log_var)]


def _f32(params):
    return [np.asarray(p, np.float32) for p in params]


# pair kinds: a DiagGaussian meets a full covariance as std (its own parametrization and the
# triangular factor's agree) and a low-rank one as log-variances (both store log-variances);
# mixed parametrizations are as exact as their log-ratio (see gkl_jax.kl_diag).
KINDS = [
    ("diag", "diag"),
    ("diag-std", "diag-std"),
    ("full", "full"),
    ("diag-std", "full"),
    ("full", "diag-std"),
    ("lowrank", "lowrank"),
    ("diag", "lowrank"),
    ("lowrank", "diag"),
    ("lowrank", "full"),
    ("full", "lowrank"),
]
NEAR = ("near 1e-2", "near 1e-4", "near 1e-6")


def regimes(kp, kq):
    out = ["typical", "ratio 1e8", "ratio 1e-8"]
    if kp == kq:
        out.append("p == q")
    if {kp, kq} != {"full", "lowrank"}:  # mixed full/low rank: accurate to eps, not relative
        out += list(NEAR)
    if "lowrank" in (kp, kq) and "full" not in (kp, kq):
        out += ["log_diag -80", "log_diag -80 near", "log_diag +80", "log_diag +80 near"]
    return out


def build(kp, kq, regime, rng):
    """``(params_p, params_q)`` for a regime; covariance ratios are of whole covariances."""
    if regime == "p == q":
        pq = _f32(rand_params(kq, rng))
        return pq, pq
    ld0 = -80.0 if "-80" in regime else (80.0 if "+80" in regime else 0.0)
    if regime in ("typical", "log_diag -80", "log_diag +80"):
        return _f32(rand_params(kp, rng, ld0=ld0)), _f32(rand_params(kq, rng, ld0=ld0))
    if regime.startswith("ratio"):
        s = 1e4 if regime == "ratio 1e8" else 1e-4
        return _f32(rand_params(kp, rng, scale=s)), _f32(rand_params(kq, rng))
    eps = 1e-4 if regime.endswith("near") and regime.startswith("log") else float(regime[5:])
    if kp == kq:
        q = rand_params(kq, rng, ld0=ld0)
        return _f32(perturb(kq, q, eps, rng)), _f32(q)
    if kp in ("diag", "diag-std"):  # q full or low rank, near the diagonal p
        base = rand_params(kp, rng, ld0=ld0)
        return _f32(perturb(kp, base, eps, rng)), _f32(near_other(kq, base, kp, eps, rng))
    base = rand_params(kq, rng, ld0=ld0)
    return _f32(near_other(kp, base, kq, eps, rng)), _f32(perturb(kq, base, eps, rng))


def make(kind, params):
    ps = [jnp.asarray(p) for p in params]
    if kind == "diag":
        return DiagGaussian(*ps)
    if kind == "diag-std":
        return DiagGaussian.from_std(*ps)
    if kind == "full":
        return FullGaussian(*ps)
    return LowRankGaussian(*ps)


def stack(kind, plist):
    """One batched Gaussian from ``N`` parameter lists (repeating the last to fill ``N``)."""
    plist = list(plist) + [plist[-1]] * (N - len(plist))
    return make(kind, [np.stack([p[i] for p in plist]) for i in range(len(plist[0]))])


FUNCS = ("renyi0.3", "bhattacharyya", "hellinger", "renyi2", "wasserstein2")


@jax.jit
def all_divergences(p, q):
    """Every divergence of the batch in one compilation (per pair of types)."""
    return {
        "renyi0.3": renyi(p, q, alpha=0.3),
        "bhattacharyya": bhattacharyya(p, q),
        "hellinger": hellinger(p, q),
        "renyi2": renyi(p, q, alpha=2.0),
        "wasserstein2": wasserstein2(p, q),
    }


def _rel_err(got, want):
    if np.isinf(want) or np.isinf(got):
        return 0.0 if got == want else np.inf
    if want == 0:
        return 0.0 if got == 0 else np.inf
    return abs(got - want) / abs(want)


@functools.cache
def measured_errors(kp, kq, per_regime=2, seed=0):
    """``{(divergence, regime): max relative error}`` for one pair kind."""
    rng = np.random.default_rng(seed)
    cases = []
    for regime in regimes(kp, kq):
        for _ in range(1 if regime == "p == q" else per_regime):
            cases.append((regime, build(kp, kq, regime, rng)))
    assert len(cases) <= N
    got = all_divergences(stack(kp, [c[1][0] for c in cases]), stack(kq, [c[1][1] for c in cases]))
    got = {name: np.asarray(v, np.float64) for name, v in got.items()}
    errors = {}
    for i, (regime, (pp, qq)) in enumerate(cases):
        ref = ref_all(kp, pp, kq, qq)
        for name in FUNCS:
            if regime == "p == q":  # exactly zero
                err = 0.0 if got[name][i] == 0.0 else np.inf
            else:
                err = _rel_err(got[name][i], ref[name])
            errors[name, regime] = max(errors.get((name, regime), 0.0), err)
    return errors


def tolerance(kp, kq, name, regime):
    """The documented accuracy (max relative error)."""
    if name == "wasserstein2" and regime == "log_diag -80 near" and kp == kq == "lowrank":
        # nearly identical covariances of condition ~1e35 (rank k + e^-80 I): the polar factor of
        # the numerically singular L_q^T L_p comes from an SVD, accurate to eps absolutely, so
        # to eps / perturbation relative
        return 1e-3
    if regime.startswith("log_diag -80"):
        return 5e-5  # covariances of condition ~1e35: the float32 inputs' own conditioning
    return 1e-5


@pytest.mark.parametrize(("kind_p", "kind_q"), KINDS)
def test_accuracy_against_50_digit_reference(kind_p, kind_q):
    errors = measured_errors(kind_p, kind_q)
    bad = {}
    for (name, regime), err in errors.items():
        if not err <= tolerance(kind_p, kind_q, name, regime):
            bad[name, regime] = err
    assert not bad, bad


def accuracy_table() -> str:
    """Markdown table of the measured max relative errors (``python -m`` this module)."""
    rows = ["| pair (p, q) | regime | " + " | ".join(FUNCS) + " |"]
    rows.append("|" + "---|" * (len(FUNCS) + 2))
    for kp, kq in KINDS:
        errors = measured_errors(kp, kq)
        for regime in regimes(kp, kq):
            cells = []
            for name in FUNCS:
                err = errors[name, regime]
                cells.append("0 (exact)" if regime == "p == q" and err == 0 else f"{err:.1e}")
            rows.append(f"| {kp}, {kq} | {regime} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# properties: D(p, p) == 0 exactly, D >= 0, for every pair of types
# ---------------------------------------------------------------------------------------------

_PROP_KINDS = [k for k in KINDS if k[0] != "diag-std" or k[1] == "full"]


@settings(max_examples=6, deadline=None)
@given(kinds=st.sampled_from(_PROP_KINDS), seed=st.integers(0, 2**31 - 1))
def test_zero_at_p_equals_q_and_non_negative(kinds, seed):
    kp, kq = kinds
    rng = np.random.default_rng(seed)
    regimes_ = ["typical", "ratio 1e8", "ratio 1e-8", "near 1e-3"]
    if {kp, kq} == {"full", "lowrank"}:
        regimes_ = regimes_[:3]
    pairs = [build(kp, kq, regimes_[i % len(regimes_)], rng) for i in range(N)]
    out = all_divergences(stack(kp, [a for a, _ in pairs]), stack(kq, [b for _, b in pairs]))
    for name, v in out.items():
        v = np.asarray(v)
        assert np.all(v >= 0), (name, v)
        assert not np.any(np.isnan(v)), (name, v)
    assert np.all(np.asarray(out["hellinger"]) <= 1.0)
    if kp == kq:
        p = stack(kp, [a for a, _ in pairs])
        for name, v in all_divergences(p, p).items():
            np.testing.assert_array_equal(np.asarray(v), 0.0, err_msg=name)


# ---------------------------------------------------------------------------------------------
# derivatives at p == q
# ---------------------------------------------------------------------------------------------


def _derivative_target(p, q):
    """Bhattacharyya (= Renyi 1/2), Renyi 2 and W2^2 (Hellinger and Renyi 0.3 share their
    kernels; low-rank Hessians of every order compile slowly, so one sum is differentiated)."""
    return bhattacharyya(p, q) + renyi(p, q, alpha=2.0) + wasserstein2(p, q, squared=True)


@pytest.mark.parametrize("kind", ["diag", "diag-std", "full", "lowrank"])
def test_grad_and_hessian_at_p_equals_q(kind):
    """Was NaN for full pairs (an eigen-decomposition at coincident eigenvalues) and for
    low-rank ones; the gradient at the minimum is exactly 0 and the Hessian finite."""
    rng = np.random.default_rng(11)
    params = [jnp.asarray(p) for p in _f32(rand_params(kind, rng, d=3, k=1))]
    q = make(kind, params)

    def f(leaves):
        return _derivative_target(make(kind, leaves), jax.lax.stop_gradient(q))

    for g in jax.tree_util.tree_leaves(jax.grad(f)(params)):
        np.testing.assert_array_equal(np.asarray(g), 0.0)
    for h in jax.tree_util.tree_leaves(jax.hessian(f)(params)):
        assert np.all(np.isfinite(np.asarray(h)))


@pytest.mark.parametrize("log_var", [-45.0, -80.0])
def test_diagonal_derivatives_at_tiny_variances(log_var):
    """Regression: var_a = alpha var_q + (1 - alpha) var_p underflowed in the gradient (NaN at
    log_var <= -45); now Sigma_alpha / var_q = 1 + beta expm1(x) is used."""
    mean = jnp.asarray([0.3, -1.0, 2.0])
    lv = jnp.full(3, log_var)
    q = DiagGaussian(mean, lv)

    def f(mean_lv):
        p = DiagGaussian(*mean_lv)
        return bhattacharyya(p, q) + renyi(p, q, alpha=0.3) + renyi(p, q, alpha=2.0)

    for g in jax.grad(f)((mean, lv)):
        np.testing.assert_array_equal(np.asarray(g), 0.0)
    for h in jax.tree_util.tree_leaves(jax.hessian(f)((mean, lv))):
        assert np.all(np.isfinite(np.asarray(h)))


def test_hessian_at_p_equals_q_is_the_fisher_metric_float64(x64):
    """At p == q the Hessian of D_alpha is alpha times the Fisher information, that of W2^2 is
    checked against central differences of its (envelope) gradient: the values, not only their
    finiteness, for a full pair (where an eigen-decomposition gave NaN before)."""
    rng = np.random.default_rng(12)
    mean, tril = (jnp.asarray(p) for p in rand_params("full", rng, d=3))
    q = FullGaussian(mean, tril)

    def fn(op):
        return lambda t: op(FullGaussian(mean, t), q)

    h_kl = jax.hessian(lambda t: kl_diag_full(t, tril))(tril)
    for alpha in (0.5, 2.0):
        h = jax.hessian(fn(functools.partial(renyi, alpha=alpha)))(tril)
        np.testing.assert_allclose(h, alpha * h_kl, rtol=1e-9, atol=1e-12)
    w2 = fn(lambda a, b: wasserstein2(a, b, squared=True))
    h = np.asarray(jax.hessian(w2)(tril)).reshape(9, 9)
    g = jax.grad(w2)
    step = 1e-6
    basis = np.eye(9).reshape(9, 3, 3)
    fd = np.stack([np.ravel(g(tril + step * e) - g(tril - step * e)) / (2 * step) for e in basis])
    np.testing.assert_allclose(h, fd, rtol=1e-6, atol=1e-8)


def kl_diag_full(l_p, l_q):
    """KL(N(0, L_p L_p^T) || N(0, L_q L_q^T)), the textbook form (fine away from 0)."""
    s_p = jnp.tril(l_p) @ jnp.tril(l_p).T
    inv_q = jnp.linalg.inv(l_q @ l_q.T)
    d = l_p.shape[-1]
    return 0.5 * (jnp.trace(inv_q @ s_p) - d - jnp.linalg.slogdet(inv_q @ s_p)[1])


# ---------------------------------------------------------------------------------------------
# regressions: the defect reproducers
# ---------------------------------------------------------------------------------------------


def test_full_pairs_with_a_scale_ratio_of_1e8_are_finite_and_exact():
    """Was NaN/inf: the Cholesky of I + (1 - alpha) E with E = M M^T - I ~ -I lost everything."""
    p = FullGaussian(jnp.zeros(3), 1e-4 * jnp.eye(3))
    q = FullGaussian(jnp.zeros(3), jnp.eye(3))
    dp = DiagGaussian.from_std(jnp.zeros(3), jnp.full(3, 1e-4))
    dq = DiagGaussian(jnp.zeros(3), jnp.zeros(3))
    # per dimension, with var ratio r = 1e-8: log(a + b r) - b log r, over 2 b
    got = all_divergences(p, q)
    want = all_divergences(dp, dq)  # the diagonal kernel
    for name in FUNCS:
        np.testing.assert_allclose(float(got[name]), float(want[name]), rtol=2e-6)
    with mpmath.workdps(40):
        r = mpmath.mpf(float(np.float32(1e-4))) ** 2  # the variance ratio

        def ref(alpha):
            g = mpmath.log(alpha + (1 - alpha) * r) - (1 - alpha) * mpmath.log(r)
            return float(3 * g / (2 * (1 - alpha)))

        np.testing.assert_allclose(float(got["renyi0.3"]), ref(0.3), rtol=1e-6)
        np.testing.assert_allclose(float(got["bhattacharyya"]), ref(0.5) / 2, rtol=1e-6)
        np.testing.assert_allclose(float(got["renyi2"]), ref(2.0), rtol=1e-6)
    assert abs(float(got["bhattacharyya"]) - 12.775789) < 1e-4  # the diagonal equivalent


def test_wasserstein2_of_p_and_p_is_exactly_zero_for_every_type():
    rng = np.random.default_rng(13)
    for kind in ("diag", "diag-std", "full", "lowrank"):
        p = make(kind, _f32(rand_params(kind, rng, d=5)))
        assert float(wasserstein2(p, p)) == 0.0, kind
        assert float(wasserstein2(p, p, squared=True)) == 0.0, kind


def test_low_rank_reproducer_p_equals_p():
    """Was NaN: hellinger, wasserstein2 and renyi(alpha=2) of a low-rank p with log_diag -20."""
    w = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    p = LowRankGaussian(jnp.zeros(4), w, jnp.full(4, -20.0))
    out = jax.jit(
        lambda p: (hellinger(p, p), wasserstein2(p, p), renyi(p, p, alpha=2.0), bhattacharyya(p, p))
    )(p)
    for v in out:
        assert float(v) == 0.0


@pytest.mark.parametrize(
    "fn", [lambda p, q: renyi(p, q, alpha=2.0), lambda p, q: renyi(p, q, alpha=0.3), bhattacharyya]
)
@pytest.mark.parametrize("d", [4096, 20000])
def test_low_rank_renyi_forms_no_d_by_d_intermediate(fn, d):
    """Renyi of every order between low-rank Gaussians is O(d k^2): no array in the jaxpr (nested
    ones included) has two axes of size >= d. renyi(alpha=2) at d = 20000 used to densify."""
    k = 8
    g = LowRankGaussian(jnp.zeros(d), jnp.zeros((d, k)), jnp.zeros(d))
    h = DiagGaussian(jnp.zeros(d), jnp.zeros(d))
    for p, q in ((g, g), (h, g), (g, h)):
        jaxpr = jax.make_jaxpr(fn)(p, q)
        shapes = _all_shapes(jaxpr.jaxpr)
        assert max(int(np.prod(s)) for s in shapes) <= 4 * d * k
        assert not [s for s in shapes if sum(n >= d for n in s) >= 2]


def _all_shapes(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        out.extend(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out.extend(_all_shapes(inner))
    return out


def test_renyi_above_one_with_a_compensated_negative_diagonal():
    """alpha > 1, Sigma_alpha positive definite although its diagonal part alpha psi_q -
    (alpha - 1) psi_p is <= 0 on two coordinates (the factor of q covers them)."""
    rng = np.random.default_rng(3)
    d = 6
    w_q = np.zeros((d, 2))
    w_q[0, 0], w_q[1, 1] = 3.0, 2.5
    w_q += 0.1 * rng.standard_normal((d, 2))
    ld_p = np.zeros(d)
    ld_p[:2] = np.log(4.0), np.log(3.0)
    pp = _f32([0.3 * rng.standard_normal(d), 0.3 * rng.standard_normal((d, 2)), ld_p])
    qq = _f32([np.zeros(d), w_q, np.zeros(d)])
    mp_, sp = ref_moments("lowrank", pp)
    mq, sq = ref_moments("lowrank", qq)
    want = float(ref_renyi(mp_, sp, mq, sq, 1.5))
    got = float(renyi(make("lowrank", pp), make("lowrank", qq), alpha=1.5))
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_float64_uses_the_accurate_log1p(x64):
    """float64 to ~1e-15 where XLA's log1p is ~128 ulp off: Renyi's log1p argument
    (1 - alpha) expm1(x) near -0.38 (diagonal, full and low-rank kernels)."""
    x = np.log1p(np.array([0.36, 0.37, 0.38]))  # alpha = 2: beta expm1(x) = -0.36 .. -0.38
    p = DiagGaussian(np.zeros(3), x)
    q = DiagGaussian(np.zeros(3), np.zeros(3))
    with mpmath.workdps(40):
        ref = mpmath.fsum(
            mpmath.log(2 - mpmath.exp(mpmath.mpf(float(v)))) + mpmath.mpf(float(v)) for v in x
        )
        ref = float(ref / (2 * (1 - 2)))
    for a, b in ((p, q), (p.to_full(), q.to_full()), (p.to_low_rank(1), q.to_low_rank(1))):
        np.testing.assert_allclose(float(renyi(a, b, alpha=2.0)), ref, rtol=3e-15)


@pytest.mark.invalid_input
def test_errors_name_the_public_function():
    p = DiagGaussian(jnp.zeros(3), jnp.zeros(3))
    q = FullGaussian(jnp.zeros(4), jnp.eye(4))
    with pytest.raises(ValueError, match=r"^bhattacharyya: latent sizes"):
        bhattacharyya(p, q)
    with pytest.raises(ValueError, match=r"^hellinger: latent sizes"):
        hellinger(p, q)
    with pytest.raises(TypeError, match=r"^hellinger: argument 'q' must be a DiagGaussian"):
        hellinger(p, jnp.zeros(3))
    with pytest.raises(TypeError, match=r"^bhattacharyya: argument 'p' must be a DiagGaussian"):
        bhattacharyya(jnp.zeros(3), p)


@pytest.mark.invalid_input
def test_wasserstein2_refuses_to_densify_a_large_low_rank_pair():
    d = 2048
    g = LowRankGaussian(jnp.zeros(d), jnp.zeros((d, 2)), jnp.zeros(d))
    h = DiagGaussian(jnp.zeros(d), jnp.zeros(d))
    for p, q in ((g, g), (g, h), (h, g)):
        with pytest.raises(ValueError, match=r"no O\(d k\^2\) form .*to_full\(\)"):
            wasserstein2(p, q)


if __name__ == "__main__":
    print(accuracy_table())

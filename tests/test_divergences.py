"""Jeffreys, Renyi, Bhattacharyya, Hellinger, W2: dense float64, integrals, properties, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
import scipy.linalg as sl
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import stats

from gkl_jax import (
    DiagGaussian,
    FullGaussian,
    LowRankGaussian,
    bhattacharyya,
    hellinger,
    jeffreys,
    kl,
    renyi,
    wasserstein2,
)
from tests.helpers import dense_kl, rand_dist, rand_tril

# ---------------------------------------------------------------------------------------------
# references (float64 dense, SciPy)
# ---------------------------------------------------------------------------------------------


def dense_renyi(mp, cp, mq, cq, alpha):
    ca = alpha * cq + (1 - alpha) * cp
    if np.any(np.linalg.eigvalsh(ca) <= 0):
        return np.inf
    dm = mp - mq
    ld = lambda c: np.linalg.slogdet(c)[1]  # noqa: E731
    logdet = ld(ca) - (1 - alpha) * ld(cp) - alpha * ld(cq)
    return alpha / 2 * dm @ np.linalg.solve(ca, dm) + logdet / (2 * (1 - alpha))


def dense_w2(mp, cp, mq, cq):
    root = sl.sqrtm(cp).real
    cross = np.trace(sl.sqrtm(root @ cq @ root).real)
    return np.sqrt(max(np.sum((mp - mq) ** 2) + np.trace(cp) + np.trace(cq) - 2 * cross, 0.0))


def dense_all(mp, cp, mq, cq):
    db = dense_renyi(mp, cp, mq, cq, 0.5) / 2
    return {
        "jeffreys": dense_kl(mp, cp, mq, cq) + dense_kl(mq, cq, mp, cp),
        "bhattacharyya": db,
        "hellinger": -np.expm1(-db),
        "wasserstein2": dense_w2(mp, cp, mq, cq),
    }


FUNCS = {
    "jeffreys": jeffreys,
    "bhattacharyya": bhattacharyya,
    "hellinger": hellinger,
    "wasserstein2": wasserstein2,
}


# one pair per code path: diagonal (same / mixed parametrization), triangular, low rank
PAIRS = [("diag", "diag-std"), ("diag-std", "diag-std"), ("full", "full"), ("diag", "full")]
PAIRS += [("lowrank", "lowrank"), ("diag", "lowrank"), ("lowrank", "full")]


@pytest.mark.parametrize(("kind_p", "kind_q"), PAIRS)
def test_every_pair_matches_dense_float64(kind_p, kind_q, x64):
    rng = np.random.default_rng(0)
    p, mp, cp = rand_dist(kind_p, rng, (), d=4, k=2)
    q, mq, cq = rand_dist(kind_q, rng, (), d=4, k=1)
    ref = dense_all(mp, cp, mq, cq)
    for name, fn in FUNCS.items():
        np.testing.assert_allclose(float(fn(p, q)), ref[name], rtol=1e-9, err_msg=name)
    for alpha in (0.3, 1.7):
        want = dense_renyi(mp, cp, mq, cq, alpha)
        np.testing.assert_allclose(float(renyi(p, q, alpha=alpha)), want, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# numerical integration, 1-D and 2-D
# ---------------------------------------------------------------------------------------------


def _integrals_1d(mp, sp, mq, sq, alpha):
    p, q = stats.norm(mp, sp), stats.norm(mq, sq)
    lo, hi = min(mp - 12 * sp, mq - 12 * sq), max(mp + 12 * sp, mq + 12 * sq)
    quad = lambda f: si.quad(f, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]  # noqa: E731
    bc = quad(lambda x: np.sqrt(p.pdf(x) * q.pdf(x)))
    ren = np.log(quad(lambda x: p.pdf(x) ** alpha * q.pdf(x) ** (1 - alpha))) / (alpha - 1)
    jef = quad(lambda x: (p.pdf(x) - q.pdf(x)) * (p.logpdf(x) - q.logpdf(x)))
    w2 = np.sqrt(si.quad(lambda u: (p.ppf(u) - q.ppf(u)) ** 2, 0, 1, limit=200)[0])
    return {
        "bhattacharyya": -np.log(bc),
        "hellinger": 1 - bc,
        "jeffreys": jef,
        "wasserstein2": w2,
    }, ren


def test_one_dimensional_integrals(x64):
    mp, sp, mq, sq, alpha = 0.3, 0.8, -0.4, 1.3, 0.7
    p = DiagGaussian.from_std(jnp.array([mp]), jnp.array([sp]))
    q = DiagGaussian.from_std(jnp.array([mq]), jnp.array([sq]))
    ref, ren = _integrals_1d(mp, sp, mq, sq, alpha)
    for name, fn in FUNCS.items():
        np.testing.assert_allclose(float(fn(p, q)), ref[name], rtol=1e-7, err_msg=name)
    np.testing.assert_allclose(float(renyi(p, q, alpha=alpha)), ren, rtol=1e-7)


def test_two_dimensional_integrals(x64):
    """Full-covariance pair in 2-D against 2-D quadrature (W2 has no 2-D integral form; it is
    checked against the matrix-square-root formula above)."""
    mp, mq = np.array([0.2, -0.1]), np.array([-0.3, 0.4])
    cp, cq = np.array([[1.0, 0.4], [0.4, 0.8]]), np.array([[0.7, -0.2], [-0.2, 1.2]])
    p, q = FullGaussian.from_cov(mp, cp), FullGaussian.from_cov(mq, cq)
    dp, dq = stats.multivariate_normal(mp, cp), stats.multivariate_normal(mq, cq)

    grid = np.linspace(-10, 10, 1601)
    pts = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1)

    def integral(f):  # trapezoid rule: spectrally accurate for these smooth, decaying integrands
        return si.trapezoid(si.trapezoid(f(pts), grid, axis=1), grid)

    alpha = 0.6
    bc = integral(lambda x: np.sqrt(dp.pdf(x) * dq.pdf(x)))
    ren = np.log(integral(lambda x: dp.pdf(x) ** alpha * dq.pdf(x) ** (1 - alpha))) / (alpha - 1)
    jef = integral(lambda x: (dp.pdf(x) - dq.pdf(x)) * (dp.logpdf(x) - dq.logpdf(x)))
    np.testing.assert_allclose(float(bhattacharyya(p, q)), -np.log(bc), rtol=1e-6)
    np.testing.assert_allclose(float(hellinger(p, q)), 1 - bc, rtol=1e-6)
    np.testing.assert_allclose(float(renyi(p, q, alpha=alpha)), ren, rtol=1e-6)
    np.testing.assert_allclose(float(jeffreys(p, q)), jef, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# exactness for nearly identical pairs (float32)
# ---------------------------------------------------------------------------------------------


def test_nearly_identical_full_pairs_renyi_float32():
    rng = np.random.default_rng(3)
    d = 24
    lq = rand_tril(rng, (), d)
    mq = rng.standard_normal(d)
    for delta in (1e-2, 1e-4):
        lp = (lq * (1 + delta * rng.standard_normal(lq.shape))).astype(np.float32)
        mp = (mq + delta * rng.standard_normal(d)).astype(np.float32)
        f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
        cp, cq = f64(lp) @ f64(lp).T, f64(lq.astype(np.float32)) @ f64(lq.astype(np.float32)).T
        p = FullGaussian(mp, lp)
        q = FullGaussian(mq.astype(np.float32), lq.astype(np.float32))
        for alpha in (0.5, 2.0):
            want = dense_renyi(f64(mp), cp, f64(mq.astype(np.float32)), cq, alpha)
            got = float(renyi(p, q, alpha=alpha))
            assert abs(got - want) <= 2e-4 * want, (delta, alpha, got, want)
        # diagonal pairs: exact per dimension
        sp = np.exp(0.2 * rng.standard_normal(d))
        dp = DiagGaussian.from_std(np.float32(mq), np.float32(sp * (1 + delta)))
        dq = DiagGaussian.from_std(np.float32(mq), np.float32(sp))
        want = dense_renyi(
            np.zeros(d),
            np.diag(f64(dp.spread) ** 2),
            np.zeros(d),
            np.diag(f64(dq.spread) ** 2),
            0.5,
        )
        assert abs(float(renyi(dp, dq, alpha=0.5)) - want) <= 1e-5 * want


def test_renyi_alpha_one_is_kl_and_the_limit_is_continuous():
    rng = np.random.default_rng(4)
    p, _, _ = rand_dist("full", rng, (2,), d=5)
    q, _, _ = rand_dist("lowrank", rng, (2,), d=5)
    np.testing.assert_array_equal(renyi(p, q, alpha=1.0), kl(p, q))
    for alpha in (1 - 1e-3, 1 + 1e-3):
        np.testing.assert_allclose(renyi(p, q, alpha=alpha), kl(p, q), rtol=1e-2)


def test_renyi_beyond_the_domain_is_inf():
    p = DiagGaussian.from_std(jnp.zeros(2), jnp.array([3.0, 1.0]))
    q = DiagGaussian.from_std(jnp.zeros(2), jnp.ones(2))
    # alpha var_q + (1 - alpha) var_p = 2 - 9 < 0 in the first dimension
    assert float(renyi(p, q, alpha=2.0)) == np.inf
    assert float(renyi(p.to_full(), q.to_full(), alpha=2.0)) == np.inf
    assert np.isfinite(float(renyi(q, p, alpha=2.0)))


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

# every family on each side, in few combinations (each new combination compiles)
_kind_pairs = st.sampled_from([("diag", "full"), ("full", "lowrank"), ("lowrank", "diag")])


@settings(max_examples=10, deadline=None)
@given(kinds=_kind_pairs, seed=st.integers(0, 2**31 - 1))
def test_properties(kinds, seed):
    kind_p, kind_q = kinds
    rng = np.random.default_rng(seed)
    p, mp, cp = rand_dist(kind_p, rng, (), d=3, k=1)
    q, mq, cq = rand_dist(kind_q, rng, (), d=3, k=1)
    for name in ("jeffreys", "bhattacharyya", "hellinger", "wasserstein2"):
        fn = FUNCS[name]
        a, b = float(fn(p, q)), float(fn(q, p))
        assert a >= 0 and abs(a - b) <= 1e-4 * max(a, 1e-3), name  # symmetric
        assert float(fn(p, p)) <= 1e-5, name  # zero at p == q
    assert float(hellinger(p, q)) <= 1.0
    r = float(renyi(p, q, alpha=0.5))
    assert r >= 0
    # Renyi is non-decreasing in alpha and tends to KL
    assert float(renyi(p, q, alpha=0.3)) <= r * (1 + 1e-5) <= float(kl(p, q)) * (1 + 1e-5) + 1e-6
    # shared invertible affine map: jeffreys, renyi, bhattacharyya unchanged
    a_mat = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    shift = rng.standard_normal(3)
    tp = FullGaussian.from_cov(a_mat @ mp + shift, a_mat @ cp @ a_mat.T)
    tq = FullGaussian.from_cov(a_mat @ mq + shift, a_mat @ cq @ a_mat.T)
    for fn in (jeffreys, bhattacharyya):
        np.testing.assert_allclose(float(fn(tp, tq)), float(fn(p, q)), rtol=2e-3, atol=1e-4)
    # W2 is invariant under a shared rotation and shift
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rp = FullGaussian.from_cov(rot @ mp + shift, rot @ cp @ rot.T)
    rq = FullGaussian.from_cov(rot @ mq + shift, rot @ cq @ rot.T)
    np.testing.assert_allclose(
        float(wasserstein2(rp, rq)), float(wasserstein2(p, q)), rtol=1e-3, atol=1e-4
    )


# ---------------------------------------------------------------------------------------------
# transformations, gradients, dtypes, errors
# ---------------------------------------------------------------------------------------------


def test_grads_float64(x64):
    rng = np.random.default_rng(5)
    m, tril = rng.standard_normal(4), rand_tril(rng, (), 4)
    lr = rand_dist("lowrank", rng, (), d=4, k=2)[0]
    ref = FullGaussian(rng.standard_normal(4), rand_tril(rng, (), 4))

    def full_fn(m, tril):
        p = FullGaussian(m, tril)
        return renyi(ref, p, alpha=1.2) + wasserstein2(p, ref, squared=True)

    assert np.isfinite(float(full_fn(m, tril)))
    check_grads(full_fn, (m, tril), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)

    def lr_fn(w, ld):
        return bhattacharyya(LowRankGaussian(lr.mean, w, ld), DiagGaussian(m, 0.1 * m))

    check_grads(lr_fn, (lr.factor, lr.log_diag), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_grads_finite_at_p_equals_q():
    rng = np.random.default_rng(6)
    m, tril = jnp.asarray(rng.standard_normal(20)), jnp.asarray(rand_tril(rng, (), 20))

    def f(tril):
        p, q = FullGaussian(m, tril), FullGaussian(m, jax.lax.stop_gradient(tril))
        return renyi(p, q, alpha=0.5) + wasserstein2(p, q, squared=True)

    g = jax.grad(f)(tril)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) < 1e-5


def test_jit_vmap_broadcast_and_bfloat16():
    rng = np.random.default_rng(7)
    p, _, _ = rand_dist("full", rng, (3, 1), d=4)
    q, _, _ = rand_dist("diag", rng, (2,), d=4)
    for fn in (wasserstein2, lambda a, b: renyi(a, b, alpha=0.4)):
        out = jax.jit(fn)(p, q)
        assert out.shape == (3, 2)
        p0 = jax.tree_util.tree_map(lambda a: a[:, 0], p)
        vm = jax.vmap(jax.vmap(fn, (None, 0)), (0, None))(p0, q)
        np.testing.assert_allclose(vm, out, rtol=1e-5)
    pb = DiagGaussian(jnp.zeros(3, jnp.bfloat16), jnp.ones(3, jnp.bfloat16))
    qb = DiagGaussian(jnp.ones(3, jnp.bfloat16), jnp.zeros(3, jnp.bfloat16))
    for fn in FUNCS.values():
        assert fn(pb, qb).dtype == jnp.float32


def test_pytrees_cast_after_construction_follow_the_dtype_policy():
    """bf16 leaves (from tree_map) compute in float32, equal to the float32 result; int leaves
    raise a TypeError naming the leaf. Full and low-rank members, every divergence."""
    rng = np.random.default_rng(8)
    p, _, _ = rand_dist("full", rng, (), d=3)
    q, _, _ = rand_dist("lowrank", rng, (), d=3, k=1)
    cast = lambda t, dt: jax.tree_util.tree_map(lambda a: a.astype(dt), t)  # noqa: E731
    pb, qb = cast(p, jnp.bfloat16), cast(q, jnp.bfloat16)
    p32, q32 = cast(pb, jnp.float32), cast(qb, jnp.float32)
    fns = {**FUNCS, "renyi": lambda a, b: renyi(a, b, alpha=0.5)}
    fns["renyi "] = lambda a, b: renyi(a, b, alpha=2.0)
    for name, fn in fns.items():
        out = fn(pb, qb)
        assert out.dtype == jnp.float32, name
        np.testing.assert_allclose(out, fn(p32, q32), rtol=1e-6, err_msg=name)
        fn_name = name.strip()
        with pytest.raises(TypeError, match=rf"{fn_name}: argument 'q.mean' has dtype int32"):
            fn(p, cast(q, jnp.int32))
        with pytest.raises(TypeError, match=rf"{fn_name}: argument 'p.mean' has dtype int32"):
            fn(cast(p, jnp.int32), q)


def test_nan_propagates_and_only_alpha_above_one_gives_inf():
    nan = jnp.array([jnp.nan, 0.0])
    d0 = DiagGaussian(jnp.zeros(2), jnp.zeros(2))
    bad = (DiagGaussian(nan, jnp.zeros(2)), DiagGaussian(jnp.zeros(2), nan))
    bad += (FullGaussian(nan, jnp.eye(2)), FullGaussian(jnp.zeros(2), jnp.diag(nan)))
    for p in bad:
        q = d0 if isinstance(p, DiagGaussian) else d0.to_full()
        for fn in (
            hellinger,
            lambda a, b: renyi(a, b, alpha=0.5),
            lambda a, b: renyi(a, b, alpha=2.0),
        ):
            assert np.isnan(float(fn(p, q))), p
    # alpha > 1 outside the domain (1 + (1 - alpha) mu <= 0) with a finite mean part: inf
    p = FullGaussian(jnp.ones(2), jnp.diag(jnp.array([3.0, 1.0])))
    assert float(renyi(p, d0.to_full(), alpha=2.0)) == np.inf


def test_wasserstein2_gradient_at_p_equals_q_is_zero():
    """W2 is not differentiable at p == q; the gradient there is the subgradient 0, not NaN."""
    rng = np.random.default_rng(9)
    full = FullGaussian(rng.standard_normal(4), rand_tril(rng, (), 4))
    diag = DiagGaussian(rng.standard_normal(4), rng.standard_normal(4))
    g = jax.grad(wasserstein2)(diag, diag)  # W2 == 0 exactly
    for leaf in jax.tree_util.tree_leaves(g):
        np.testing.assert_array_equal(leaf, 0.0)
    # full pair: the SVD leaves W2 ~ 1e-7, not 0; the gradient of this norm is finite, norm <= 1
    g = np.concatenate(
        [np.ravel(a) for a in jax.tree_util.tree_leaves(jax.grad(wasserstein2)(full, full))]
    )
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) <= 1.0 + 1e-4
    # away from p == q it is the ordinary gradient: d W2 / d mean_p = (mean_p - mean_q) / W2
    p = DiagGaussian(diag.mean + 1.0, diag.spread)
    g = jax.grad(lambda m: wasserstein2(DiagGaussian(m, diag.spread), diag))(p.mean)
    np.testing.assert_allclose(g, np.ones(4) / 2.0, rtol=1e-6)


@pytest.mark.invalid_input
def test_errors():
    p = DiagGaussian(jnp.zeros(3), jnp.zeros(3))
    q = FullGaussian(jnp.zeros(4), jnp.eye(4))
    with pytest.raises(ValueError, match=r"renyi: alpha must be a finite number > 0, got -1\.0"):
        renyi(p, p, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0, got nan"):
        renyi(p, p, alpha=float("nan"))
    with pytest.raises(TypeError, match="renyi: alpha must be a Python real number"):
        renyi(p, p, alpha=jnp.array(0.5))
    with pytest.raises(ValueError, match=r"latent sizes .* 'p' has shape \(3,\)"):
        bhattacharyya(p, q)
    with pytest.raises(TypeError, match="wasserstein2: argument 'q' must be a DiagGaussian"):
        wasserstein2(p, jnp.zeros(3))

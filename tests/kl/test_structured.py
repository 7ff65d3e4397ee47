"""kl for every pair with a FullGaussian or LowRankGaussian member: accuracy, API, errors."""

# References are independent of gkl_jax: dense float64 NumPy formulas, SciPy triangular solves on
# float64 copies of the float32 inputs (exact enough for the nearly identical pairs: relative error
# ~1e-15), 50-digit mpmath, and distrax/TFP when installed.

import itertools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, LowRankGaussian, kl, kl_full
from tests.helpers import dense_kl, rand_dist, rand_tril

# ---------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------


def chol_kl_f64(mp, lp, mq, lq):
    """KL of Cholesky-factored pairs in float64 via SciPy, in difference form (near pairs)."""
    mp, lp, mq, lq = (np.asarray(a, np.float64) for a in (mp, lp, mq, lq))
    out = np.empty(mp.shape[:-1])
    for idx in np.ndindex(out.shape):
        a, b = np.tril(lp[idx]), np.tril(lq[idx])
        x = sl.solve_triangular(b, a - b, lower=True)
        z = sl.solve_triangular(b, mp[idx] - mq[idx], lower=True)
        r = np.log1p((np.diag(a) - np.diag(b)) / np.diag(b))
        out[idx] = 0.5 * (np.sum(np.tril(x, -1) ** 2) + np.sum(np.expm1(2 * r) - 2 * r) + z @ z)
    return out


def mp_kl(mp, lp, mq, lq):
    """50-digit textbook KL of one Cholesky-factored pair."""
    with mpmath.workdps(50):
        a = mpmath.matrix(np.tril(np.asarray(lp, np.float64)).tolist())
        b = mpmath.matrix(np.tril(np.asarray(lq, np.float64)).tolist())
        dm = mpmath.matrix((np.asarray(mp, np.float64) - np.asarray(mq, np.float64)).tolist())
        binv = b**-1
        m = binv * a
        z = binv * dm
        d = m.rows
        tr = sum(m[i, j] ** 2 for i in range(d) for j in range(d))
        logdet = sum(2 * mpmath.log(m[i, i]) for i in range(d))
        return float((tr - d - logdet + sum(z[i] ** 2 for i in range(d))) / 2)


KINDS = ("diag", "diag-std", "full", "lowrank")
PAIRS = [
    (a, b) for a, b in itertools.product(KINDS, KINDS) if "full" in (a, b) or "lowrank" in (a, b)
]


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind_p", "kind_q"), PAIRS)
def test_every_pair_matches_dense_float64(kind_p, kind_q, x64):
    rng = np.random.default_rng(0)
    p, mp, cp = rand_dist(kind_p, rng, (3,), d=6, k=2)
    q, mq, cq = rand_dist(kind_q, rng, (3,), d=6, k=3)
    got = jax.jit(kl)(p, q)
    assert got.dtype == jnp.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, dense_kl(mp, cp, mq, cq), rtol=1e-12)


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_against_standard_normal(kind, x64):
    rng = np.random.default_rng(1)
    p, mp, cp = rand_dist(kind, rng, (2,), d=4)
    std = DiagGaussian.standard(4, dtype=jnp.float64)
    eye = np.eye(4)
    np.testing.assert_allclose(kl(p, std), dense_kl(mp, cp, np.zeros(4), eye), rtol=1e-12)
    np.testing.assert_allclose(kl(std, p), dense_kl(np.zeros(4), eye, mp, cp), rtol=1e-12)


@pytest.mark.parametrize("d", [16, 128])
def test_nearly_identical_full_pairs_float32(d):
    """Target: float32 relative error <= 1e-5 at perturbations 1e-1 .. 1e-5 (measured ~2e-7)."""
    rng = np.random.default_rng(d)
    batch = 4
    lq = rand_tril(rng, (batch,), d)
    mq = rng.standard_normal((batch, d))
    fn = jax.jit(kl_full)
    for delta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        lp = (lq * (1 + delta * rng.standard_normal(lq.shape))).astype(np.float32)
        mp = (mq + delta * rng.standard_normal(mq.shape)).astype(np.float32)
        args = (mp, lp, mq.astype(np.float32), lq.astype(np.float32))
        ref = chol_kl_f64(*args)
        got = np.asarray(fn(*args), np.float64)
        assert np.max(np.abs(got - ref) / ref) <= 1e-5, delta


def test_nearly_identical_against_mpmath():
    rng = np.random.default_rng(7)
    lq = rand_tril(rng, (), 16)
    mq = rng.standard_normal(16)
    for delta in (1e-3, 1e-5):
        lp = (lq * (1 + delta * rng.standard_normal(lq.shape))).astype(np.float32)
        mp = (mq + delta * rng.standard_normal(16)).astype(np.float32)
        args = (mp, lp, mq.astype(np.float32), lq.astype(np.float32))
        ref = mp_kl(*args)
        assert abs(float(kl_full(*args)) - ref) <= 1e-5 * ref
        assert abs(chol_kl_f64(*args) - ref) <= 1e-12 * ref  # the float64 reference itself


def test_identical_pairs_are_exactly_zero():
    rng = np.random.default_rng(2)
    full = rand_dist("full", rng, (2,), d=20)[0]
    assert np.all(np.asarray(kl(full, full)) == 0.0)  # every term is exactly 0
    # low rank: the Woodbury corrections are differences of O(k) terms (see kl_structured)
    low_rank = rand_dist("lowrank", rng, (2,), d=20)[0]
    assert np.all(np.abs(np.asarray(kl(low_rank, low_rank))) < 1e-5)
    q = rand_dist("diag-std", rng, (2,), d=20)[0]
    assert np.all(np.asarray(kl(q, q.to_full())) == 0.0)
    assert np.all(np.asarray(kl(q.to_full(), q)) == 0.0)


def test_families_agree_on_the_same_distribution(x64):
    rng = np.random.default_rng(3)
    diag, _, _ = rand_dist("diag", rng, (2,), d=7)
    full, _, _ = rand_dist("full", rng, (2,), d=7)
    lr, _, _ = rand_dist("lowrank", rng, (2,), d=7)
    ref = kl(diag, lr)
    for p in (diag.to_full(), diag.to_low_rank(3)):
        np.testing.assert_allclose(kl(p, lr), ref, rtol=1e-12)
        np.testing.assert_allclose(kl(p, full), kl(diag, full), rtol=1e-12)
        np.testing.assert_allclose(kl(full, p), kl(full, diag), rtol=1e-12)
    np.testing.assert_allclose(kl(lr, full), kl(lr.to_full(), full), rtol=1e-12)
    np.testing.assert_allclose(kl(full, lr), kl(full, lr.to_full()), rtol=1e-12)
    np.testing.assert_allclose(kl(lr, diag), kl(lr.to_full(), diag.to_full()), rtol=1e-12)


def test_low_rank_large_matches_dense_float64():
    """D = 1024, k = 16 in float32 against the dense float64 formula (target 1e-4).

    benchmarks/bench_full.py measures D = 4096 (the dense reference takes seconds there).
    """
    rng = np.random.default_rng(4)
    d, k = 1024, 16
    mk = lambda: (  # noqa: E731
        rng.standard_normal(d),
        0.3 * rng.standard_normal((d, k)),
        0.3 * rng.standard_normal(d),
    )
    (mp, wp, lp), (mq, wq, lq) = mk(), mk()
    p = LowRankGaussian(*(a.astype(np.float32) for a in (mp, wp, lp)))
    q = LowRankGaussian(*(a.astype(np.float32) for a in (mq, wq, lq)))
    got = float(jax.jit(kl)(p, q))
    # dense float64 reference, with the float32-rounded inputs
    f = lambda a: np.asarray(a, np.float32).astype(np.float64)  # noqa: E731
    cov = lambda w, ld: f(w) @ f(w).T + np.diag(np.exp(f(ld)))  # noqa: E731
    cp, cq = cov(wp, lp), cov(wq, lq)
    lq_chol = np.linalg.cholesky(cq)
    dm = sl.solve_triangular(lq_chol, f(mq) - f(mp), lower=True)
    tr = np.sum(sl.cho_solve((lq_chol, True), cp).diagonal())
    ref = 0.5 * (tr - d + dm @ dm + np.linalg.slogdet(cq)[1] - np.linalg.slogdet(cp)[1])
    assert abs(got - ref) <= 1e-4 * ref


# ---------------------------------------------------------------------------------------------
# transformations: jit, vmap, grad, broadcasting, dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind_p", "kind_q"),
    [
        ("lowrank", "full"),  # full-full: test_grad_matches_dense_and_is_finite_at_p_equals_q
        ("full", "lowrank"),
    ],
)
def test_grads_float64(kind_p, kind_q, x64):
    rng = np.random.default_rng(5)
    p, _, _ = rand_dist(kind_p, rng, (2,), d=5)
    q, _, _ = rand_dist(kind_q, rng, (2,), d=5)
    leaves_p, tree_p = jax.tree_util.tree_flatten(p)
    leaves_q, tree_q = jax.tree_util.tree_flatten(q)

    def f(*leaves):
        pp = jax.tree_util.tree_unflatten(tree_p, leaves[: len(leaves_p)])
        qq = jax.tree_util.tree_unflatten(tree_q, leaves[len(leaves_p) :])
        return jnp.sum(kl(pp, qq))

    check_grads(f, (*leaves_p, *leaves_q), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_grad_matches_dense_and_is_finite_at_p_equals_q(x64):
    rng = np.random.default_rng(6)
    d = 20  # > leaf size: exercises the blocked solver
    mq = rng.standard_normal(d)
    lq = rand_tril(rng, (), d)

    def ours(lp, mp):
        return kl_full(mp, lp, mq, lq)

    def dense(lp, mp):
        lp = jnp.tril(lp)
        cov_p, cov_q = lp @ lp.T, lq @ lq.T
        sol = jnp.linalg.solve(cov_q, cov_p)
        dm = mq - mp
        ld = jnp.linalg.slogdet(cov_q)[1] - jnp.linalg.slogdet(cov_p)[1]
        return 0.5 * (jnp.trace(sol) - d + dm @ jnp.linalg.solve(cov_q, dm) + ld)

    lp, mp = rand_tril(rng, (), d), rng.standard_normal(d)
    grad_ours = jax.jit(jax.grad(ours, (0, 1)))
    g1, g2 = grad_ours(lp, mp), jax.jit(jax.grad(dense, (0, 1)))(lp, mp)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(np.tril(a) if a.ndim == 2 else a, b, rtol=1e-9, atol=1e-12)
    g_eq = grad_ours(lq, mq)
    assert all(np.all(np.asarray(g) == 0) for g in g_eq)


def _grads_f64(mp, lp, mq, lq):
    """float64 NumPy gradients of KL(p || q) w.r.t. (mean_p, L_p, mean_q, L_q) (lower triangles):
    dKL/dL_p = tril(Sigma_q^{-1} L_p) - diag(1 / L_p), dKL/dL_q = diag(1 / L_q) -
    tril(Sigma_q^{-1} (L_p L_p^T + delta delta^T) L_q^{-T}), dKL/dmu_p = Sigma_q^{-1} delta."""
    mp, lp, mq, lq = (np.asarray(a, np.float64) for a in (mp, lp, mq, lq))
    lp, lq = np.tril(lp), np.tril(lq)
    prec = np.linalg.inv(lq @ lq.T)
    dm = mp - mq
    g_lp = np.tril(prec @ lp) - np.diag(1 / np.diag(lp))
    g_lq = np.diag(1 / np.diag(lq)) - np.tril(prec @ (lp @ lp.T + np.outer(dm, dm)) @ prec @ lq)
    return prec @ dm, g_lp, -(prec @ dm), g_lq


@pytest.mark.parametrize("delta", [1e-1, 1e-4])
def test_grad_float32_nearly_identical_matches_float64(delta):
    """The closed-form derivative (custom JVP) keeps float32 precision near p == q, in every
    argument, across several leaf blocks of the solver (d = 40)."""
    rng = np.random.default_rng(21)
    d = 40
    lq = rand_tril(rng, (), d)
    mq = rng.standard_normal(d)
    lp = lq * (1 + delta * rng.standard_normal((d, d)))
    mp = mq + delta * rng.standard_normal(d)
    args = tuple(np.asarray(a, np.float32) for a in (mp, lp, mq, lq))
    got = jax.jit(jax.grad(kl_full, argnums=(0, 1, 2, 3)))(*args)
    want = _grads_f64(*args)
    for g, w in zip(got, want, strict=True):
        g = np.tril(np.asarray(g, np.float64)) if w.ndim == 2 else np.asarray(g, np.float64)
        assert np.max(np.abs(g - w)) <= 2e-5 * np.max(np.abs(w))


def test_hessian_of_kl_full_and_diag_full(x64):
    """Second derivatives through the custom JVP (the Fisher information at p == q among them),
    for a full pair and a diagonal p against a full q, d = 20 (> one leaf block)."""
    rng = np.random.default_rng(22)
    d = 20
    mq, lq = rng.standard_normal(d), rand_tril(rng, (), d)
    mp, lp = rng.standard_normal(d), rand_tril(rng, (), d)

    def full(mp, lp):
        return kl_full(mp, lp, mq, lq)

    def diag_full(mp, std):
        return kl(DiagGaussian.from_std(mp, std), FullGaussian(mq, lq))

    def dense(mp, lp):
        lp = jnp.tril(lp)
        cov_p, cov_q = lp @ lp.T, lq @ lq.T
        dm = mq - mp
        ld = jnp.linalg.slogdet(cov_q)[1] - jnp.linalg.slogdet(cov_p)[1]
        return 0.5 * (
            jnp.trace(jnp.linalg.solve(cov_q, cov_p)) - d + dm @ jnp.linalg.solve(cov_q, dm) + ld
        )

    check_grads(full, (mp, lp), order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)
    std = np.exp(0.2 * rng.standard_normal(d))
    check_grads(diag_full, (mp, std), order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)
    # at p == q (the Fisher information; the mean block is Sigma_q^{-1}), forward-over-reverse
    # and reverse-over-reverse, against the dense formula's Hessian
    want = jax.hessian(dense, (0, 1))(mq, lq)
    for outer in (jax.jacfwd, jax.jacrev):
        got = outer(jax.grad(full, (0, 1)), (0, 1))(mq, lq)
        for g, w in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(want[0][0], np.linalg.inv(lq @ lq.T), rtol=1e-9, atol=1e-12)


@pytest.mark.invalid_input
def test_checked_mode_after_unchecked_eager_and_jit_calls():
    """kl_full's compiled kernel is traced again in the checked mode (its switch is part of the
    jit cache key): a bad value passed before unchecked is still reported afterwards."""
    bad = jnp.array([[1.0, 0.0], [jnp.nan, 1.0]])
    args = (jnp.zeros(2), bad, jnp.zeros(2), jnp.eye(2))
    assert np.isnan(kl_full(*args))
    assert np.isnan(jax.jit(kl_full)(*args))
    for fn in (gkl_jax.checked(kl_full), jax.jit(gkl_jax.checked(kl_full))):
        err, _ = fn(*args)
        assert "kl_full: argument 'lower triangle of scale_tril_p' must be finite" in err.get()
    err, value = gkl_jax.checked(kl_full)(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.eye(2))
    assert err.get() is None and float(value) == 0.0


def test_vmap_and_broadcasting():
    rng = np.random.default_rng(8)
    p, _, _ = rand_dist("full", rng, (3, 1), d=4)
    q, _, _ = rand_dist("lowrank", rng, (5,), d=4)
    out = kl(p, q)
    assert out.shape == (3, 5)
    vm = jax.vmap(jax.vmap(kl, in_axes=(None, 0)), in_axes=(0, None))
    p2 = jax.tree_util.tree_map(lambda a: a[:, 0], p)
    np.testing.assert_allclose(vm(p2, q), out, rtol=1e-6)
    # kl_full broadcasts its array arguments
    r = kl_full(p.mean, p.scale_tril, jnp.zeros(4), jnp.eye(4))
    np.testing.assert_allclose(r, kl(p, DiagGaussian.standard(4)), rtol=1e-6)
    assert r.shape == (3, 1)


def test_bfloat16_inputs_compute_in_float32():
    rng = np.random.default_rng(9)
    tril = jnp.asarray(rand_tril(rng, (), 6), jnp.bfloat16)
    mean = jnp.asarray(rng.standard_normal(6), jnp.bfloat16)
    out = kl_full(mean, tril, jnp.zeros(6, jnp.bfloat16), jnp.eye(6, dtype=jnp.bfloat16))
    assert out.dtype == jnp.float32
    ref = chol_kl_f64(np.float32(mean), np.float32(tril), np.zeros(6), np.eye(6))
    np.testing.assert_allclose(out, ref, rtol=1e-5)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a).astype(dtype), tree)


def _int_leaf(g, i):
    leaves, tree = jax.tree_util.tree_flatten(g)
    leaves[i] = leaves[i].astype(jnp.int32)
    return jax.tree_util.tree_unflatten(tree, leaves)


def test_pytrees_cast_after_construction_follow_the_dtype_policy():
    """bf16 leaves (e.g. from tree_map) compute in float32; int leaves raise, naming the leaf."""
    rng = np.random.default_rng(12)
    full, _, _ = rand_dist("full", rng, (), d=4)
    low_rank, _, _ = rand_dist("lowrank", rng, (), d=4)
    diag, _, _ = rand_dist("diag-std", rng, (), d=4)
    for p, q in ((full, low_rank), (low_rank, diag)):
        pb, qb = _cast(p, jnp.bfloat16), _cast(q, jnp.bfloat16)
        out = kl(pb, qb)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(
            out, kl(_cast(pb, jnp.float32), _cast(qb, jnp.float32)), rtol=1e-6
        )
    with pytest.raises(TypeError, match=r"kl: argument 'p.scale_tril' has dtype int32"):
        kl(_int_leaf(full, 1), low_rank)
    with pytest.raises(TypeError, match=r"kl: argument 'q.factor' has dtype int32"):
        kl(full, _int_leaf(low_rank, 1))
    with pytest.raises(TypeError, match=r"kl: argument 'q.mean' has dtype int32"):
        kl(diag, _cast(full, jnp.int32))


def test_mixed_precision_pair_promotes(x64):
    rng = np.random.default_rng(10)
    p = FullGaussian(rng.standard_normal(3).astype(np.float32), np.eye(3, dtype=np.float32))
    q = DiagGaussian(np.zeros(3), np.zeros(3))
    assert kl(p, q).dtype == jnp.float64


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.invalid_input
def test_shape_errors():
    with pytest.raises(ValueError, match=r"kl_full: argument 'scale_tril_p' must be square"):
        kl_full(jnp.zeros(3), jnp.ones((3, 2)), jnp.zeros(3), jnp.eye(3))
    with pytest.raises(ValueError, match=r"'mean_p' has shape \(3,\) and 'scale_tril_q'"):
        kl_full(jnp.zeros(3), jnp.eye(3), jnp.zeros(4), jnp.eye(4))
    with pytest.raises(ValueError, match=r"batch shapes do not broadcast"):
        kl_full(jnp.zeros((2, 3)), jnp.eye(3), jnp.zeros((4, 3)), jnp.eye(3))
    with pytest.raises(ValueError, match=r"'scale_tril_q' has shape \(4, 3, 3\), against 'scale_"):
        kl_full(jnp.zeros(3), jnp.ones((2, 3, 3)), jnp.zeros(3), jnp.ones((4, 3, 3)))
    with pytest.raises(TypeError, match="'scale_tril_q' has dtype int32"):
        kl_full(jnp.zeros(3), jnp.eye(3), jnp.zeros(3), jnp.eye(3, dtype=jnp.int32))
    p = FullGaussian(jnp.zeros(3), jnp.eye(3))
    q = LowRankGaussian(jnp.zeros(4), jnp.ones((4, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"kl: latent sizes .* 'p' has shape \(3,\)"):
        kl(p, q)


@pytest.mark.invalid_input
def test_checked_mode_reports_bad_scale():
    err, _ = gkl_jax.checked(kl_full)(
        jnp.zeros(2), jnp.array([[1.0, 0.0], [0.0, 0.0]]), jnp.zeros(2), jnp.eye(2)
    )
    assert "kl_full: argument 'diagonal of scale_tril_p' must be non-zero" in err.get()
    assert "1 of 2 entries are 0 or NaN" in err.get()
    err, _ = gkl_jax.checked(kl_full)(
        jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.array([[1.0, 0.5], [0.0, 1.0]])
    )
    assert "kl_full: argument 'scale_tril_q' is not lower triangular: 1 of 1" in err.get()
    assert "FullGaussian.from_scale" in err.get()
    err, _ = gkl_jax.checked(kl_full)(
        jnp.zeros(2), jnp.array([[1.0, 0.0], [jnp.inf, 1.0]]), jnp.zeros(2), jnp.eye(2)
    )
    assert "kl_full: argument 'lower triangle of scale_tril_p' must be finite" in err.get()


def test_checked_kl_full_accepts_a_negative_diagonal(x64):
    """A square root with negative diagonal entries is valid (``L L^T`` is the covariance): the
    checked mode reports nothing and the value is that of the dense float64 formula."""
    rng = np.random.default_rng(5)
    l_p = np.tril(rng.standard_normal((3, 3))) + np.diag([-2.0, 1.5, -1.0])
    l_q = np.tril(rng.standard_normal((3, 3))) + np.diag([1.0, -2.5, 2.0])
    m_p, m_q = rng.standard_normal(3), rng.standard_normal(3)
    err, got = gkl_jax.checked(kl_full)(m_p, l_p, m_q, l_q)
    assert err.get() is None
    s_p, s_q = l_p @ l_p.T, l_q @ l_q.T
    inv_q = np.linalg.inv(s_q)
    dm = m_p - m_q
    want = 0.5 * (np.trace(inv_q @ s_p) - 3 + dm @ inv_q @ dm - np.linalg.slogdet(inv_q @ s_p)[1])
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    for g in jax.grad(kl_full, argnums=(1, 3))(m_p, l_p, m_q, l_q):
        assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

_kind_pairs = st.sampled_from([("diag", "full"), ("full", "lowrank"), ("lowrank", "diag")])


@settings(max_examples=12, deadline=None)
@given(kinds=_kind_pairs, seed=st.integers(0, 2**31 - 1))
def test_properties_nonnegative_and_affine_invariant(kinds, seed):
    kind_p, kind_q = kinds
    rng = np.random.default_rng(seed)
    p, mp, cp = rand_dist(kind_p, rng, (), d=4, k=2)
    q, mq, cq = rand_dist(kind_q, rng, (), d=4, k=1)
    value = float(kl(p, q))
    assert value >= 0
    # a shared invertible affine map leaves KL unchanged
    a = rng.standard_normal((4, 4)) + 3 * np.eye(4)
    b = rng.standard_normal(4)
    tp = FullGaussian.from_cov(a @ mp + b, a @ cp @ a.T)
    tq = FullGaussian.from_cov(a @ mq + b, a @ cq @ a.T)
    np.testing.assert_allclose(float(kl(tp, tq)), value, rtol=2e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# peers (test-only, skipped when not installed)
# ---------------------------------------------------------------------------------------------


def test_matches_distrax_and_tfp():
    distrax = pytest.importorskip("distrax")
    tfp = pytest.importorskip("tensorflow_probability.substrates.jax")
    rng = np.random.default_rng(11)
    p, _, _ = rand_dist("full", rng, (3,), d=5)
    q, _, _ = rand_dist("full", rng, (3,), d=5)
    ref = distrax.MultivariateNormalTri(p.mean, p.scale_tril).kl_divergence(
        distrax.MultivariateNormalTri(q.mean, q.scale_tril)
    )
    np.testing.assert_allclose(kl(p, q), ref, rtol=1e-4)
    lp, _, _ = rand_dist("lowrank", rng, (3,), d=5)
    lq, _, _ = rand_dist("lowrank", rng, (3,), d=5)

    def tfp_lr(g):
        return tfp.distributions.MultivariateNormalFullCovariance(g.mean, g.covariance())

    ref = tfp.distributions.kl_divergence(tfp_lr(lp), tfp_lr(lq))
    np.testing.assert_allclose(kl(lp, lq), ref, rtol=1e-4)

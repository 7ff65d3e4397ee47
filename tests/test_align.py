"""align_latents / Alignment: recovery of known maps, exact push-forwards, the solver, errors."""

# References are independent of gkl_jax: the true maps of synthetic data, float64 NumPy covariances
# M S M^T and the textbook KL (tests.helpers.dense_kl), np.corrcoef, and SciPy's
# linear_sum_assignment for the assignment solver.

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.optimize import linear_sum_assignment

import gkl_jax
from gkl_jax import (
    Alignment,
    DiagGaussian,
    FullGaussian,
    GaussianMixture,
    LowRankGaussian,
    align_latents,
    kl,
)
from gkl_jax._src.align import linear_assignment
from tests.helpers import dense_kl, rand_dist, rand_tril

D = 6
PARAMS = ("log_var", "var", "std")

# ---------------------------------------------------------------------------------------------
# synthetic paired means with a known map z_b = M z_a + t (+ noise)
# ---------------------------------------------------------------------------------------------


def _signed_permutation(rng, d):
    index = rng.permutation(d)
    sign = rng.choice([-1.0, 1.0], d)
    matrix = np.zeros((d, d))
    matrix[np.arange(d), index] = sign
    return matrix, index, sign


def _rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _paired_means(rng, matrix, shift, n=500, noise=1e-3):
    """Means of model a (anisotropic, so the Procrustes problem is well posed) and model b."""
    d = matrix.shape[0]
    a = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d) + 0.2
    b = a @ matrix.T + shift + noise * rng.standard_normal((n, d))
    return a, b


def _spread(param, log_var):
    return {"log_var": log_var, "var": np.exp(log_var), "std": np.exp(0.5 * log_var)}[param]


def _cov(p):
    """Dense float64 covariance of a gkl_jax Gaussian."""
    if isinstance(p, DiagGaussian):
        return np.asarray(p.var, np.float64)[..., None] * np.eye(p.event_size)
    return np.asarray(p.covariance(), np.float64)


# ---------------------------------------------------------------------------------------------
# recovery
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("param", PARAMS)
def test_recovers_signed_permutation(param, center):
    rng = np.random.default_rng(0)
    matrix, index, sign = _signed_permutation(rng, D)
    shift = 0.5 * rng.standard_normal(D) if center else np.zeros(D)
    a, b = _paired_means(rng, matrix, shift)
    alignment = align_latents(
        jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), center=center
    )
    np.testing.assert_array_equal(alignment.index, index)
    np.testing.assert_array_equal(alignment.sign, sign)
    np.testing.assert_array_equal(alignment.matrix, matrix)
    assert (alignment.shift is None) == (not center)
    if center:
        np.testing.assert_allclose(alignment.shift, shift, atol=1e-3)
    assert np.all(np.asarray(alignment.correlation) > 0.999)

    # posteriors of 8 inputs under model a, and their exact image under the true map
    log_var = 0.5 * rng.standard_normal((8, D))
    mean_p = a[:8]
    p_a = DiagGaussian.from_param(mean_p, _spread(param, log_var), param=param)
    p_b = DiagGaussian.from_param(
        mean_p @ matrix.T + shift, _spread(param, log_var)[:, index], param=param
    )
    aligned = alignment(p_a)
    assert isinstance(aligned, DiagGaussian) and aligned.param == param
    raw, after = np.asarray(kl(p_a, p_b)), np.asarray(kl(aligned, p_b))
    assert np.all(raw > 1.0)
    assert np.all(after <= 1e-4 * raw), np.max(after / raw)
    if not center:  # the recovered map is the true one, applied without arithmetic
        np.testing.assert_array_equal(after, 0.0)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("kind", ["diag", "full"])
def test_recovers_rotation(kind, center):
    rng = np.random.default_rng(1)
    rot = _rotation(rng, D)
    shift = 0.5 * rng.standard_normal(D) if center else np.zeros(D)
    a, b = _paired_means(rng, rot, shift)
    alignment = align_latents(
        jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), method="orthogonal", center=center
    )
    assert alignment.index is None and alignment.sign is None
    np.testing.assert_allclose(alignment.matrix, rot, atol=1e-3)
    m = np.asarray(alignment.matrix, np.float64)
    np.testing.assert_allclose(m @ m.T, np.eye(D), atol=1e-6)
    if center:
        np.testing.assert_allclose(alignment.shift, shift, atol=1e-3)
    assert np.all(np.asarray(alignment.correlation) > 0.999)

    p_a, mean_p, cov_p = rand_dist(kind, rng, (8,), D)
    mean_p = mean_p + a[:8]  # posterior means where model a puts its inputs
    p_a = (
        DiagGaussian(mean_p, p_a.log_var)
        if kind == "diag"
        else FullGaussian(mean_p, p_a.scale_tril)
    )
    p_b = FullGaussian.from_cov(mean_p @ rot.T + shift, rot @ cov_p @ rot.T)
    aligned = alignment(p_a)
    assert isinstance(aligned, FullGaussian)
    raw, after = np.asarray(kl(p_a, p_b)), np.asarray(kl(aligned, p_b))
    assert np.all(raw > 1.0)
    assert np.all(after <= 1e-4 * raw), np.max(after / raw)


def test_correlation_against_numpy_and_solver_optimum():
    rng = np.random.default_rng(2)
    matrix, _, _ = _signed_permutation(rng, D)
    a, b = _paired_means(rng, matrix, np.zeros(D), n=60, noise=0.8)  # noisy: correlations < 1
    for method in ("permutation", "orthogonal"):
        al = align_latents(a, b, method=method)
        m = np.asarray(al.matrix, np.float64)
        t = np.asarray(al.shift, np.float64)
        aligned = a @ m.T + t
        want = [np.corrcoef(aligned[:, j], b[:, j])[0, 1] for j in range(D)]
        np.testing.assert_allclose(al.correlation, want, rtol=1e-5)
        back = (b - t) @ m
        want_inv = [np.corrcoef(back[:, i], a[:, i])[0, 1] for i in range(D)]
        np.testing.assert_allclose(al.inverse_correlation, want_inv, rtol=1e-5)
        np.testing.assert_allclose(al.inverse().correlation, al.inverse_correlation)
        text = al.summary()
        assert "n=60" in text and f"min {np.min(want):.4f}" in text
        assert f"mean {np.mean(want):.4f}" in repr(al) and method in repr(al)
    # the fitted permutation attains scipy's optimum of sum |C[i, perm(i)]|
    cross = np.abs(np.corrcoef(a.T, b.T)[:D, D:])
    rows, cols = linear_sum_assignment(cross, maximize=True)
    al = align_latents(a, b)
    perm = np.argsort(np.asarray(al.index))  # a's latent i -> b's latent perm[i]
    np.testing.assert_allclose(cross[np.arange(D), perm].sum(), cross[rows, cols].sum(), rtol=1e-6)


def test_constant_column_has_undefined_correlation():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((50, 3))
    a[:, 1] = 0.25  # a collapsed latent
    al = align_latents(a, a[:, ::-1])
    np.testing.assert_array_equal(al.index, [2, 1, 0])
    corr = np.asarray(al.correlation)
    assert np.isnan(corr[1]) and np.allclose(corr[[0, 2]], 1.0)
    assert "undefined (a constant column) for 1" in al.summary()


# ---------------------------------------------------------------------------------------------
# exact push-forwards against float64 NumPy
# ---------------------------------------------------------------------------------------------


def _fitted(method, rng, dtype=np.float32):
    rot = _rotation(rng, D) if method == "orthogonal" else _signed_permutation(rng, D)[0]
    a, b = _paired_means(rng, rot, 0.3 * rng.standard_normal(D), n=200, noise=0.05)
    return align_latents(a.astype(dtype), b.astype(dtype), method=method)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["diag", "diag-std", "full", "lowrank"])
@pytest.mark.parametrize("method", ["permutation", "orthogonal"])
def test_push_forward_and_kl_against_numpy(method, kind, precision, request):
    if precision == "float64":
        request.getfixturevalue("x64")
    rtol = 1e-12 if precision == "float64" else 2e-5
    rng = np.random.default_rng(4)
    al = _fitted(method, rng, np.dtype(precision))
    assert al.dtype == np.dtype(precision)
    m = np.asarray(al.matrix, np.float64)
    t = np.asarray(al.shift, np.float64)
    p, _, _ = rand_dist(kind, rng, (3,), D)
    cov_p = _cov(p)  # of the float-rounded parameters
    mean_p = np.asarray(p.mean, np.float64)
    out = al(p)
    assert out.dtype == np.dtype(precision) and out.batch_shape == (3,)
    if method == "orthogonal":
        assert isinstance(out, FullGaussian)
        tril = np.asarray(out.scale_tril)
        np.testing.assert_array_equal(np.triu(tril, 1), 0)
        assert np.all(np.diagonal(tril, 0, -2, -1) > 0)
    else:
        assert type(out) is type(p)
    cov_want = m @ cov_p @ m.T
    mean_want = mean_p @ m.T + t
    scale = np.max(np.abs(cov_want))
    np.testing.assert_allclose(_cov(out), cov_want, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(out.mean, mean_want, rtol=rtol, atol=rtol)

    q, _, _ = rand_dist("full", rng, (3,), D)
    want = dense_kl(mean_want, cov_want, np.asarray(q.mean, np.float64), _cov(q))
    np.testing.assert_allclose(kl(out, q), want, rtol=10 * rtol)


def test_mixture_permutation_maps_components():
    rng = np.random.default_rng(5)
    al = _fitted("permutation", rng)
    comps = DiagGaussian.from_std(rng.standard_normal((2, 4, D)), np.exp(rng.standard_normal(D)))
    mix = GaussianMixture(rng.standard_normal((2, 4)), comps)
    out = al(mix)
    assert isinstance(out, GaussianMixture) and out.components.param == "std"
    m, t = np.asarray(al.matrix), np.asarray(al.shift)
    np.testing.assert_allclose(out.components.mean, np.asarray(comps.mean) @ m.T + t, rtol=1e-6)
    np.testing.assert_array_equal(out.components.std, np.abs(np.asarray(comps.std) @ m.T))
    np.testing.assert_array_equal(out.logits, mix.logits)
    with pytest.raises(TypeError, match="rotated mixture"):
        _fitted("orthogonal", rng)(mix)


# ---------------------------------------------------------------------------------------------
# parametrization, inverse, points
# ---------------------------------------------------------------------------------------------


def _bits(x):
    x = np.asarray(x)
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("param", PARAMS)
def test_permutation_keeps_param_and_inverts_bitwise(param):
    rng = np.random.default_rng(6)
    matrix, index, _ = _signed_permutation(rng, D)
    a, b = _paired_means(rng, matrix, np.zeros(D), noise=1e-2)
    al = align_latents(a, b, center=False)
    spread = _spread(param, rng.standard_normal((1, D)))  # batch axes broadcast
    p = DiagGaussian.from_param(rng.standard_normal((4, D)), spread, param=param)
    out = al(p)
    assert out.param == param and out.spread.shape == (1, D)
    np.testing.assert_array_equal(_bits(out.spread), _bits(p.spread[..., index]))
    back = al.inverse()(out)
    assert back.param == param
    np.testing.assert_array_equal(_bits(back.mean), _bits(p.mean))
    np.testing.assert_array_equal(_bits(back.spread), _bits(p.spread))
    # with a shift: inverse to rounding
    al_t = align_latents(a, b)
    back = al_t.inverse()(al_t(p))
    np.testing.assert_allclose(back.mean, p.mean, atol=1e-6)
    np.testing.assert_array_equal(_bits(back.spread), _bits(p.spread))
    # low rank stays low rank, exactly permuted
    lr = LowRankGaussian(p.mean, rng.standard_normal((4, D, 2)), rng.standard_normal(D))
    lr_out = al(lr)
    assert isinstance(lr_out, LowRankGaussian)
    np.testing.assert_array_equal(al.inverse()(lr_out).factor, lr.factor)
    np.testing.assert_allclose(lr_out.covariance(), matrix @ lr.covariance() @ matrix.T, rtol=1e-6)


@pytest.mark.parametrize("method", ["permutation", "orthogonal"])
def test_map_points_and_inverse(method):
    rng = np.random.default_rng(7)
    al = _fitted(method, rng)
    m, t = np.asarray(al.matrix, np.float64), np.asarray(al.shift, np.float64)
    z = rng.standard_normal((2, 3, D)).astype(np.float32)
    np.testing.assert_allclose(al.map_points(z), z @ m.T + t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(al.map_points(z[0, 0]), z[0, 0] @ m.T + t, rtol=1e-5, atol=1e-6)
    inv = al.inverse()
    np.testing.assert_array_equal(inv.matrix, m.T.astype(np.float32))
    np.testing.assert_allclose(inv.map_points(al.map_points(z)), z, atol=2e-6)
    np.testing.assert_allclose(inv.inverse().matrix, al.matrix)
    assert inv.method == method and inv.num_fitted == al.num_fitted


# ---------------------------------------------------------------------------------------------
# transformations and dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["permutation", "orthogonal"])
def test_jit_vmap(method):
    rng = np.random.default_rng(8)
    al = _fitted(method, rng)
    p, _, _ = rand_dist("diag-std", rng, (5,), D)
    q, _, _ = rand_dist("full", rng, (5,), D)
    eager = kl(al(p), q)
    jitted = jax.jit(lambda a, p, q: kl(a(p), q))(al, p, q)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5)
    mapped = jax.vmap(lambda p, q: kl(al(p), q))(p, q)
    np.testing.assert_allclose(mapped, eager, rtol=1e-5)
    z = rng.standard_normal((5, D))
    np.testing.assert_allclose(jax.vmap(al.map_points)(z), al.map_points(z), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(al.map_points)(z), al.map_points(z), rtol=1e-6)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), al)  # a batch of alignments
    out = jax.vmap(lambda a: a.map_points(z[0]))(stacked)
    np.testing.assert_allclose(out, np.stack([al.map_points(z[0])] * 2), rtol=1e-6)


@pytest.mark.parametrize("method", ["permutation", "orthogonal"])
def test_grad(method, x64):
    rng = np.random.default_rng(9)
    al = _fitted(method, rng, np.float64)
    p, _, _ = rand_dist("diag-std", rng, (), D)
    q, mean_q, cov_q = rand_dist("full", rng, (), D)

    def loss(mean, std):
        return kl(al(DiagGaussian.from_std(mean, std)), q)

    g_mean, g_std = jax.grad(loss, argnums=(0, 1))(p.mean, p.std)
    assert np.all(np.isfinite(g_mean)) and np.all(np.isfinite(g_std))
    m, t = np.asarray(al.matrix), np.asarray(al.shift)
    mean_p = np.asarray(p.mean)
    # d/dmu KL(N(M mu + t, .) || N(m_q, S_q)) = M^T S_q^{-1} (M mu + t - m_q)
    want = m.T @ np.linalg.solve(cov_q, m @ mean_p + t - mean_q)
    np.testing.assert_allclose(g_mean, want, rtol=1e-10)
    check_grads(loss, (p.mean, p.std), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    full = FullGaussian(p.mean, rand_tril(rng, (), D))
    check_grads(lambda tril: kl(al(FullGaussian(full.mean, tril)), q), (full.scale_tril,), 1)


def test_bf16_means_fit_in_float32():
    rng = np.random.default_rng(10)
    matrix, index, sign = _signed_permutation(rng, D)
    a, b = _paired_means(rng, matrix, np.zeros(D), n=100, noise=1e-2)
    al = align_latents(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))
    assert al.dtype == jnp.float32 and al.correlation.dtype == jnp.float32
    np.testing.assert_array_equal(al.index, index)
    np.testing.assert_array_equal(al.sign, sign)
    p = DiagGaussian(jnp.zeros((2, D), jnp.bfloat16), jnp.zeros(D, jnp.bfloat16))
    assert al(p).dtype == jnp.float32
    assert al.map_points(jnp.zeros(D, jnp.bfloat16)).dtype == jnp.float32


# ---------------------------------------------------------------------------------------------
# the assignment solver against SciPy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "ties", "constant"])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 12])
def test_linear_assignment_matches_scipy(d, kind):
    rng = np.random.default_rng(100 * d + len(kind))
    for _ in range(10):
        if kind == "normal":
            cost = rng.standard_normal((d, d))
        elif kind == "ties":
            cost = rng.integers(0, 3, (d, d)).astype(float)
        else:
            cost = np.full((d, d), 2.5)
        col = linear_assignment(cost)
        assert sorted(col.tolist()) == list(range(d))
        rows, cols = linear_sum_assignment(cost)
        np.testing.assert_allclose(
            cost[np.arange(d), col].sum(), cost[rows, cols].sum(), rtol=1e-12, atol=1e-12
        )


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.invalid_input
def test_fit_shape_and_dtype_errors():
    a = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"'mean_a' must be 2-D.* got shape \(5,\)"):
        align_latents(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match=r"'mean_b' must be 2-D.* got shape \(2, 5, 3\)"):
        align_latents(a, np.zeros((2, 5, 3)))
    with pytest.raises(
        ValueError, match=r"latent sizes .* \(5, 3\) and 'mean_b' has shape \(5, 4\)"
    ):
        align_latents(a, np.zeros((5, 4)))
    with pytest.raises(
        ValueError, match=r"paired inputs .* \(5, 3\) and 'mean_b' has shape \(4, 3\)"
    ):
        align_latents(a, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"needs n >= 2 .* \(1, 3\)"):
        align_latents(np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(TypeError, match="argument 'mean_b' has dtype int32"):
        align_latents(a, np.zeros((5, 3), np.int32))
    with pytest.raises(TypeError, match="center must be a bool"):
        align_latents(a, a, center=1)


@pytest.mark.invalid_input
def test_apply_shape_and_dtype_errors():
    al = align_latents(np.random.default_rng(0).standard_normal((10, 3)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"d=3, but 'p' has latent size 4 \(shape \(2, 4\)\)"):
        al(DiagGaussian(np.zeros((2, 4)), np.zeros(4)))
    with pytest.raises(ValueError, match=r"d=3, but 'z' has latent size 2 \(shape \(5, 2\)\)"):
        al.map_points(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="'z' is a scalar"):
        al.map_points(np.float32(1.0))
    with pytest.raises(TypeError, match="'z' has dtype int32"):
        al.map_points(np.zeros(3, np.int32))
    with pytest.raises(TypeError, match="must be a gkl_jax distribution"):
        al(np.zeros(3))


def test_value_and_tracing_errors():
    a = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(ValueError, match="method must be one of"):
        align_latents(a, a, method="rotation")
    bad = a.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="'mean_b' has 1 NaN or inf entries of 30"):
        align_latents(a, bad)
    with pytest.raises(TypeError, match="'mean_a' is a JAX tracer"):
        jax.jit(align_latents)(a, a)
    eye, ones = jnp.eye(3), jnp.ones(3)
    fields = dict(matrix=eye, shift=None, correlation=ones, inverse_correlation=ones, num_fitted=2)
    with pytest.raises(ValueError, match="method must be one of"):
        Alignment(index=None, sign=None, method="rotation", **fields)
    with pytest.raises(ValueError, match="index and sign are given exactly for"):
        Alignment(index=None, sign=None, method="permutation", **fields)
    assert Alignment(index=None, sign=None, method="orthogonal", **fields).map_points(
        ones
    ).shape == (3,)


def test_exported():
    assert gkl_jax.Alignment is Alignment and gkl_jax.align_latents is align_latents
    assert {"Alignment", "align_latents"} <= set(gkl_jax.__all__)

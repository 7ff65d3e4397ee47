"""compare_posteriors / Comparison: float64 NumPy closed forms, alignments, exact zeros, jit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkl_jax import (
    Comparison,
    DiagGaussian,
    FullGaussian,
    GaussianMixture,
    checked,
    compare_posteriors,
    jeffreys,
    kl,
)
from tests.helpers import dense_kl

PARAMS = ("log_var", "var", "std")
B, D = 5, 3


def np_kl_terms(ma, va, mb, vb):
    """Per-dimension KL(a || b) of diagonal Gaussians, textbook formula in float64."""
    ma, va, mb, vb = (np.asarray(a, np.float64) for a in (ma, va, mb, vb))
    return 0.5 * ((ma - mb) ** 2 / vb + va / vb - 1.0 - np.log(va / vb))


def make_diag(mean, var, param):
    """A DiagGaussian of float64 ``mean``/``var`` in parametrization ``param`` (float32)."""
    spread = {"log_var": np.log(var), "var": var, "std": np.sqrt(var)}[param]
    return DiagGaussian.from_param(
        jnp.asarray(mean, jnp.float32), jnp.asarray(spread, jnp.float32), param=param
    )


def random_pair(seed, param_a, param_b, batch=(B,), d=D):
    rng = np.random.default_rng(seed)
    ma, mb = rng.normal(size=(*batch, d)), rng.normal(size=(*batch, d))
    va, vb = np.exp(0.6 * rng.normal(size=(*batch, d))), np.exp(0.6 * rng.normal(size=(*batch, d)))
    a, b = make_diag(ma, va, param_a), make_diag(mb, vb, param_b)
    # the reference uses the float32 values actually stored
    ref = [np.asarray(x, np.float64) for x in (a.mean, a.var, b.mean, b.var)]
    return a, b, ref


class Permute(eqx.Module):
    """Stand-in alignment: permutes and flips the latent axes of a DiagGaussian."""

    perm: jax.Array
    signs: jax.Array

    def __call__(self, p):
        mean, spread = p.mean[..., self.perm], p.spread[..., self.perm]
        signs = self.signs.reshape((1,) * (mean.ndim - 1) + self.signs.shape)
        return DiagGaussian.from_param(mean * signs, spread, param=p.param)


class Rotate(eqx.Module):
    """Stand-in rotation alignment: z -> R z, returning a FullGaussian."""

    rot: jax.Array

    def __call__(self, p):
        mean = jnp.einsum("ij,...j->...i", self.rot, p.mean)
        cov = jnp.einsum("ij,...j,kj->...ik", self.rot, p.var, self.rot)
        return FullGaussian.from_cov(mean, cov)


@pytest.mark.parametrize("param_a", PARAMS)
@pytest.mark.parametrize("param_b", PARAMS)
def test_matches_float64_closed_form_per_example_and_per_dim(param_a, param_b):
    a, b, (ma, va, mb, vb) = random_pair(0, param_a, param_b)
    c = jax.jit(compare_posteriors)(a, b)
    ref_ab, ref_ba = np_kl_terms(ma, va, mb, vb), np_kl_terms(mb, vb, ma, va)
    np.testing.assert_allclose(c.per_dim_ab, ref_ab, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(c.per_dim_ba, ref_ba, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(c.kl_ab, ref_ab.sum(-1), rtol=2e-5)
    np.testing.assert_allclose(c.kl_ba, ref_ba.sum(-1), rtol=2e-5)
    np.testing.assert_allclose(c.symmetric, ref_ab.sum(-1) + ref_ba.sum(-1), rtol=2e-5)
    # the per-dimension terms sum to the per-example values; the same numbers as kl / jeffreys
    np.testing.assert_allclose(np.sum(c.per_dim_ab, -1), c.kl_ab, rtol=1e-6)
    np.testing.assert_allclose(np.sum(c.per_dim_ba, -1), c.kl_ba, rtol=1e-6)
    np.testing.assert_allclose(c.kl_ab, kl(a, b), rtol=1e-6)
    np.testing.assert_allclose(c.kl_ba, kl(b, a), rtol=1e-6)
    np.testing.assert_allclose(c.symmetric, jeffreys(a, b), rtol=1e-6)
    assert c.kl_ab.shape == (B,) and c.per_dim_ab.shape == (B, D)
    assert c.kl_ab.dtype == jnp.float32 and c.event_size == D


@pytest.mark.parametrize("param", PARAMS)
def test_self_comparison_is_exactly_zero(param):
    a, _, _ = random_pair(1, param, param)
    for c in (compare_posteriors(a, a), jax.jit(compare_posteriors)(a, a)):
        for leaf in (c.kl_ab, c.kl_ba, c.symmetric, c.per_dim_ab, c.per_dim_ba):
            assert np.all(np.asarray(leaf) == 0.0)


def test_nearly_identical_posteriors_keep_their_digits():
    # std parametrization on both sides, a 1e-5 relative perturbation: exact log-ratio
    rng = np.random.default_rng(2)
    mean, std = rng.normal(size=(B, D)), np.exp(0.3 * rng.normal(size=(B, D)))
    a = DiagGaussian.from_std(jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))
    std_b = np.asarray(jnp.asarray(std * (1 + 1e-5), jnp.float32), np.float64)
    b = DiagGaussian.from_std(a.mean, jnp.asarray(std_b, jnp.float32))
    s_a = np.asarray(a.spread, np.float64)
    x = np.log(s_a / std_b)
    ref = 0.5 * (np.expm1(2 * x) - 2 * x)  # float64: x ~ 1e-5, phi(2x) keeps ~10 digits here
    c = compare_posteriors(a, b)
    np.testing.assert_allclose(c.per_dim_ab, ref, rtol=1e-4)


@pytest.mark.parametrize("param", PARAMS)
def test_permutation_alignment_stand_in(param):
    a, b, (ma, va, mb, vb) = random_pair(3, param, param)
    perm, signs = np.array([2, 0, 1]), np.array([1.0, -1.0, 1.0])
    align = Permute(jnp.asarray(perm), jnp.asarray(signs, jnp.float32))
    c = jax.jit(compare_posteriors)(a, b, alignment=align)
    ma_al, va_al = ma[..., perm] * signs, va[..., perm]
    ref_ab, ref_ba = np_kl_terms(ma_al, va_al, mb, vb), np_kl_terms(mb, vb, ma_al, va_al)
    np.testing.assert_allclose(c.per_dim_ab, ref_ab, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(c.per_dim_ba, ref_ba, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(c.kl_ab, ref_ab.sum(-1), rtol=2e-5)
    # a lambda works the same way, and aligning b's own permutation back gives exactly 0
    c2 = compare_posteriors(a, b, alignment=lambda p: align(p))
    np.testing.assert_allclose(c2.kl_ab, c.kl_ab, rtol=1e-6)
    assert np.all(np.asarray(compare_posteriors(a, align(a), alignment=align).kl_ab) == 0)


def test_rotation_alignment_gives_full_covariance_kls_without_per_dim():
    a, b, (ma, va, mb, vb) = random_pair(4, "log_var", "log_var")
    theta = 0.7
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    c = jax.jit(compare_posteriors)(a, b, alignment=Rotate(jnp.asarray(rot, jnp.float32)))
    assert c.per_dim_ab is None and c.per_dim_ba is None
    cov_a = rot @ (va[..., :, None] * rot.T)
    mean_a = ma @ rot.T
    cov_b = vb[..., :, None] * np.eye(D)
    ref_ab = [dense_kl(mean_a[i], cov_a[i], mb[i], cov_b[i]) for i in range(B)]
    ref_ba = [dense_kl(mb[i], cov_b[i], mean_a[i], cov_a[i]) for i in range(B)]
    np.testing.assert_allclose(c.kl_ab, ref_ab, rtol=1e-4)
    np.testing.assert_allclose(c.kl_ba, ref_ba, rtol=1e-4)
    assert "not available" in c.summary()


def test_broadcasts_batch_shapes_and_vmaps():
    a, b, (ma, va, mb, vb) = random_pair(5, "log_var", "var", batch=(4, B))
    b0 = DiagGaussian.from_var(b.mean[0, 0], b.spread[0, 0])  # batch shape (): broadcasts
    c = compare_posteriors(a, b0)
    assert c.kl_ab.shape == (4, B) and c.per_dim_ba.shape == (4, B, D)
    np.testing.assert_allclose(
        c.per_dim_ab, np_kl_terms(ma, va, mb[0, 0], vb[0, 0]), rtol=2e-5, atol=1e-6
    )
    cv = jax.vmap(compare_posteriors)(a, b)
    np.testing.assert_allclose(cv.kl_ab, compare_posteriors(a, b).kl_ab, rtol=1e-6)


def test_is_a_pytree_with_named_fields_and_grad_flows():
    a, b, _ = random_pair(6, "log_var", "log_var")
    c = compare_posteriors(a, b)
    assert isinstance(c, Comparison)
    assert len(jax.tree_util.tree_leaves(c)) == 4
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(c)[0]]
    assert paths == [".kl_ab", ".kl_ba", ".per_dim_ab", ".per_dim_ba"]
    g = jax.grad(lambda m: jnp.sum(compare_posteriors(DiagGaussian(m, a.spread), b).symmetric))(
        a.mean
    )
    assert np.all(np.isfinite(g))
    # zero gradient, finite, at p == q
    g0 = jax.grad(lambda m: jnp.sum(compare_posteriors(DiagGaussian(m, a.spread), a).kl_ab))(a.mean)
    assert np.all(np.asarray(g0) == 0)


def test_bfloat16_inputs_compute_in_float32():
    _, _, (ma, va, mb, vb) = random_pair(7, "log_var", "log_var")
    a = DiagGaussian(jnp.asarray(ma, jnp.bfloat16), jnp.asarray(np.log(va), jnp.bfloat16))
    b = DiagGaussian(jnp.asarray(mb, jnp.bfloat16), jnp.asarray(np.log(vb), jnp.bfloat16))
    c = compare_posteriors(a, b)
    assert c.kl_ab.dtype == jnp.float32 and c.per_dim_ab.dtype == jnp.float32
    ref = np_kl_terms(*(np.asarray(x, np.float64) for x in (a.mean, a.var, b.mean, b.var)))
    np.testing.assert_allclose(c.per_dim_ab, ref, rtol=1e-5, atol=1e-6)


def test_float64(x64):
    rng = np.random.default_rng(8)
    ma, mb = rng.normal(size=(B, D)), rng.normal(size=(B, D))
    lva, lvb = rng.normal(size=(B, D)), rng.normal(size=(B, D))
    c = compare_posteriors(DiagGaussian(ma, lva), DiagGaussian(mb, lvb))
    assert c.kl_ab.dtype == jnp.float64
    ref = np_kl_terms(ma, np.exp(lva), mb, np.exp(lvb))
    np.testing.assert_allclose(c.per_dim_ab, ref, rtol=1e-12)


def test_summary_and_repr():
    a, b, (ma, va, mb, vb) = random_pair(9, "log_var", "std")
    c = compare_posteriors(a, b)
    text = c.summary()
    ref_ab = np_kl_terms(ma, va, mb, vb).sum(-1)
    assert text.splitlines()[0].startswith(f"Posterior comparison: {B} examples, latent size {D}")
    row = next(line for line in text.splitlines() if line.startswith("KL(a || b)"))
    mean, median, top = (float(v) for v in row.split()[-3:])
    np.testing.assert_allclose(
        [mean, median, top], [ref_ab.mean(), np.median(ref_ab), ref_ab.max()], rtol=1e-3
    )
    assert "Per-dimension mean KL" in text and len(text.splitlines()) == 7 + D
    r = repr(c)
    assert r.startswith(f"Comparison(batch_shape=({B},), event_size={D}") and "per_dim=True" in r

    seen = []

    @jax.jit
    def traced(a, b):
        out = compare_posteriors(a, b)
        seen.append(repr(out))
        with pytest.raises(TypeError, match="outside jit"):
            out.summary()
        return out

    traced(a, b)
    assert "traced" in seen[0]


def test_checked_mode_reports_bad_values():
    bad = DiagGaussian(jnp.array([[jnp.nan, 0.0]]), jnp.zeros((1, 2)))  # built unchecked
    good = DiagGaussian(jnp.zeros((1, 2)), jnp.zeros((1, 2)))
    err, _ = jax.jit(checked(compare_posteriors))(bad, good)
    assert "compare_posteriors: argument 'p_a.mean' must be finite" in str(err.get())
    err, _ = checked(compare_posteriors)(good, good)
    assert err.get() is None


@pytest.mark.invalid_input
def test_errors_name_the_arguments():
    a = DiagGaussian(jnp.zeros((B, D)), jnp.zeros((B, D)))
    with pytest.raises(ValueError, match=r"compare_posteriors: latent sizes.*'p_a'.*'p_b'"):
        compare_posteriors(a, DiagGaussian(jnp.zeros((B, D + 1)), jnp.zeros((B, D + 1))))
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        compare_posteriors(a, DiagGaussian(jnp.zeros((B + 1, D)), jnp.zeros((B + 1, D))))
    mix = GaussianMixture(jnp.zeros(2), DiagGaussian(jnp.zeros((2, D)), jnp.zeros((2, D))))
    with pytest.raises(TypeError, match="'p_b' must be a gkl_jax Gaussian"):
        compare_posteriors(a, mix)
    with pytest.raises(TypeError, match=r"'alignment\(p_a\)' must be a gkl_jax Gaussian"):
        compare_posteriors(a, a, alignment=lambda p: p.mean)
    with pytest.raises(TypeError, match="'alignment' must be a callable"):
        compare_posteriors(a, a, alignment=3)

"""The fused diagonal-KL kernel: its custom JVP against float64 references, in every mode of
differentiation, and the structure of its compiled value + gradient (structure, not time)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkl_jax import kl_diag, kl_diag_standard
from tests.helpers import kl_diag_grad_f64

PARAMS = ("log_var", "var", "std")


def _pair(rng, shape=(3, 5), delta=None):
    mp, lp = rng.normal(size=shape), rng.uniform(-2, 1, shape)
    if delta is None:
        mq, lq = rng.normal(size=shape), rng.uniform(-2, 1, shape)
    else:
        mq, lq = mp * (1 + delta * rng.normal(size=shape)), lp + delta * rng.normal(size=shape)
    return mp, lp, mq, lq


def _spread(lv, param):
    return {"log_var": lv, "var": np.exp(lv), "std": np.exp(0.5 * lv)}[param]


def _np_kl(mp, sp, mq, sq, param):
    """float64 NumPy closed form (independent of gkl_jax)."""
    vp, vq = (_spread_to_var(s, param) for s in (sp, sq))
    return 0.5 * np.sum(np.log(vq / vp) + (vp + (mp - mq) ** 2) / vq - 1.0, axis=-1)


def _spread_to_var(s, param):
    return {"log_var": np.exp(s), "var": s, "std": s * s}[param]


@pytest.mark.parametrize("param", PARAMS)
def test_forward_mode_jacobian_matches_reverse_mode_and_finite_differences(param, x64):
    rng = np.random.default_rng(0)
    mp, lp, mq, lq = _pair(rng)
    args = (mp, _spread(lp, param), mq, _spread(lq, param))
    fn = lambda *a: jnp.sum(kl_diag(*a, param=param))  # noqa: E731
    rev = jax.grad(fn, argnums=(0, 1, 2, 3))(*args)
    fwd = jax.jacfwd(fn, argnums=(0, 1, 2, 3))(*args)
    for i, (r, f) in enumerate(zip(rev, fwd, strict=True)):
        np.testing.assert_allclose(f, r, rtol=1e-12, atol=1e-15)
        h = 1e-6 * np.maximum(np.abs(args[i]), 1.0)
        e = np.zeros_like(h)
        e[1, 2] = h[1, 2]
        plus = [np.asarray(a) for a in args]
        minus = [np.asarray(a) for a in args]
        plus[i], minus[i] = plus[i] + e, minus[i] - e
        fd = (_np_kl(*plus, param).sum() - _np_kl(*minus, param).sum()) / (2 * h[1, 2])
        assert float(r[1, 2]) == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("param", PARAMS)
def test_hessian_is_finite_at_p_equals_q_and_matches_float64_autodiff(param, x64):
    rng = np.random.default_rng(1)
    mp, lp, _, _ = _pair(rng, shape=(4,))
    s = _spread(lp, param)
    fn = lambda x: kl_diag(x[0], x[1], x[2], x[3], param=param)  # noqa: E731
    x = jnp.stack([mp, s, mp, s])
    hess = jax.hessian(fn)(x)
    assert bool(jnp.all(jnp.isfinite(hess)))

    def ref(x):  # float64 textbook formula, fine away from cancellation (second derivatives)
        vp, vq = ({"log_var": jnp.exp(v), "var": v, "std": v * v}[param] for v in (x[1], x[3]))
        return 0.5 * jnp.sum(jnp.log(vq / vp) + (vp + (x[0] - x[2]) ** 2) / vq - 1.0)

    np.testing.assert_allclose(hess, jax.hessian(ref)(x), rtol=1e-9, atol=1e-12)


def test_gradients_of_the_vae_term_match_float64_reference():
    rng = np.random.default_rng(2)
    m, lv = rng.normal(size=(4, 6)).astype(np.float32), rng.uniform(-1e-4, 1e-4, (4, 6))
    lv = lv.astype(np.float32)
    g_m, g_lv = jax.grad(lambda *a: jnp.sum(kl_diag_standard(*a)), argnums=(0, 1))(m, lv)
    ref = kl_diag_grad_f64(m, lv, np.zeros_like(m), np.zeros_like(lv))
    np.testing.assert_allclose(g_m, ref[0], rtol=1e-6)
    np.testing.assert_allclose(g_lv, ref[1], rtol=2e-5, atol=1e-12)  # expm1(lv) / 2, tiny lv


def test_grad_with_respect_to_some_arguments_only():
    """Symbolic-zero tangents: differentiating one argument costs and returns only that one."""
    rng = np.random.default_rng(3)
    mp, lp, mq, lq = (a.astype(np.float32) for a in _pair(rng))
    full = jax.grad(lambda *a: jnp.sum(kl_diag(*a)), argnums=(0, 1, 2, 3))(mp, lp, mq, lq)
    only_lq = jax.grad(lambda x: jnp.sum(kl_diag(mp, lp, mq, x)))(lq)
    np.testing.assert_array_equal(only_lq, full[3])


def test_broadcast_arguments_receive_summed_gradients():
    rng = np.random.default_rng(4)
    mp, lp = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    mq, lq = rng.normal(size=(3,)), rng.normal(size=(3,))
    g = jax.grad(lambda a, b: jnp.sum(kl_diag(mp, lp, a, b)), argnums=(0, 1))(mq, lq)
    ref = kl_diag_grad_f64(mp, lp, np.broadcast_to(mq, mp.shape), np.broadcast_to(lq, lp.shape))
    np.testing.assert_allclose(g[0], ref[2].sum(0), rtol=2e-5)
    np.testing.assert_allclose(g[1], ref[3].sum(0), rtol=2e-5)


def _count(pattern, fn, *args):
    text = jax.jit(fn).lower(*args).compile().as_text()
    return len(re.findall(pattern, text))


def test_value_and_grad_reuses_the_forward_exponentials():
    """Compiled value + gradient of the log-variance KL: the two exponentials of the forward
    pass (e^(-lv_q / 2) and e^(lv_p - lv_q)) are all there is, shared by the value and the four
    gradients; autodiff of the naive formula has more. The VAE term: one exponential."""
    x = jnp.ones((64, 8), jnp.float32)
    vg = jax.value_and_grad(lambda *a: jnp.sum(kl_diag(*a)), argnums=(0, 1, 2, 3))
    assert _count(r"\bexponential\(", vg, x, x, x, x) == 2
    vg_std = jax.value_and_grad(lambda *a: jnp.sum(kl_diag_standard(*a)), argnums=(0, 1))
    assert _count(r"\bexponential\(", vg_std, x, x) == 1
    # the std / var kernels compute no transcendental function at all, value or gradient
    for param in ("std", "var"):
        vg_p = jax.value_and_grad(
            lambda *a, param=param: jnp.sum(kl_diag(*a, param=param)), argnums=(0, 1, 2, 3)
        )
        assert _count(r"\b(exponential|log|log-plus-one)\(", vg_p, x, x, x, x) == 0


def test_forward_is_one_elementwise_fusion_per_parametrization():
    """jit(kl_diag) compiles to one elementwise loop (and the row sum), in every parametrization."""
    x = jnp.ones((64, 8), jnp.float32)
    for param in PARAMS:
        fn = lambda *a, param=param: kl_diag(*a, param=param)  # noqa: E731
        text = jax.jit(fn).lower(x, x, x, x).compile().as_text()
        entry = text[text.index("ENTRY") :]
        loops = re.findall(r"= f32\[64,8\]\{1,0\} fusion\(", entry)
        assert len(loops) == 1, (param, entry)


@pytest.mark.parametrize("param", ["var", "std"])
def test_value_and_grad_of_variances_is_six_loops_without_a_recomputed_log_ratio(param):
    """Value + gradient of the variance / standard-deviation KL: the reciprocal of q's spread,
    the value (with the log-ratio series) and one loop per gradient; the gradient loops hold no
    division but the reciprocal of p's spread, i.e. no log-ratio (it has one division) and no
    series of phi. Autodiff of the hand-written formula compiles to seven loops."""
    x = jnp.ones((64, 8), jnp.float32)
    vg = jax.value_and_grad(lambda *a: jnp.sum(kl_diag(*a, param=param)), argnums=(0, 1, 2, 3))
    text = jax.jit(vg).lower(x, x, x, x).compile().as_text()
    entry = text[text.index("ENTRY") :]
    assert len(re.findall(r"= f32\[64,8\]\{1,0\} fusion\(", entry)) <= 6, entry
    # the series of phi (degree 11, coefficient 1/11!) is evaluated in exactly one loop
    bodies = text.split("\n%")
    series = [b for b in bodies if "2.50521079e-08" in b]
    assert len(series) == 1, series


def test_gradients_of_variances_at_tiny_scales_match_float64():
    """Nearly equal variances ~1e-32 (standard deviations ~1e-16): the difference of the two
    underflows in float32, the gradients keep their digits anyway."""
    rng = np.random.default_rng(5)
    shape = (4, 16)
    lv_p = rng.uniform(-75, -70, shape)
    lv_q = lv_p + rng.choice([1e-6, 1e-4, 1e-2, 1.0], shape) * rng.choice([-1, 1], shape)
    mp = rng.normal(size=shape) * 1e-16
    mq = mp + 1e-17 * rng.normal(size=shape)
    for param in ("var", "std"):
        args = [np.float32(a) for a in (mp, _spread(lv_p, param), mq, _spread(lv_q, param))]
        grads = jax.grad(
            lambda *a, param=param: jnp.sum(kl_diag(*a, param=param)), argnums=(0, 1, 2, 3)
        )(*(jnp.asarray(a) for a in args))
        # chain rule from log-variance to the spread: d lv / d var = 1 / var, d lv / d std = 2 / std
        k = 1.0 if param == "var" else 2.0
        sp, sq = (np.float64(a) for a in (args[1], args[3]))
        lv_p32, lv_q32 = (k * np.log(s) for s in (sp, sq))  # log-variances of the float32 inputs
        ref = kl_diag_grad_f64(np.float64(args[0]), lv_p32, np.float64(args[2]), lv_q32)
        expected = (ref[0], ref[1] * k / sp, ref[2], ref[3] * k / sq)
        for g, e in zip(grads, expected, strict=True):
            np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=2e-5)

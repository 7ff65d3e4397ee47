"""GaussianHead: shapes, dtypes and values in every parametrization, bounds, state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

from gkl_jax import DiagGaussian  # noqa: E402
from gkl_jax.nnx import GaussianHead  # noqa: E402

PARAMS = ("log_var", "var", "std")
F, D = 5, 3


def np_softplus(x):
    return np.logaddexp(0.0, x)


def linear_np(layer, x):
    kernel = np.asarray(layer.kernel[...], np.float64)
    bias = np.asarray(layer.bias[...], np.float64)
    return np.asarray(x, np.float64) @ kernel + bias


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_dtypes_and_values(param, dtype):
    head = GaussianHead(F, D, param=param, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, F)), dtype)
    q = head(x)
    assert isinstance(q, DiagGaussian) and q.param == param
    assert q.batch_shape == (4,) and q.event_size == D
    assert q.mean.dtype == jnp.float32 and q.spread.dtype == jnp.float32
    # values from the layer weights, in float64
    raw = linear_np(head.spread, np.asarray(x, np.float64))
    spread_ref = raw if param == "log_var" else np_softplus(raw)
    tol = 1e-5  # bf16 inputs are promoted to the float32 weights: no bf16 rounding after them
    np.testing.assert_allclose(
        q.mean, linear_np(head.mean, np.asarray(x, np.float64)), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(q.spread, spread_ref, rtol=tol, atol=tol)
    if param != "log_var":
        assert np.all(np.asarray(q.spread) > 0)


def test_bfloat16_computation_dtype_still_gives_float32_distribution():
    head = GaussianHead(F, D, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    q = head(jnp.ones((2, F), jnp.bfloat16))
    assert q.mean.dtype == jnp.float32 and q.batch_shape == (2,)


def test_batch_axes_and_jit():
    head = GaussianHead(F, D, param="var", rngs=nnx.Rngs(1))
    x = jnp.ones((2, 3, F))
    q = nnx.jit(lambda h, x: h(x))(head, x)
    assert q.batch_shape == (2, 3) and q.param == "var"
    np.testing.assert_allclose(q.mean, head(x).mean, rtol=1e-6)


@pytest.mark.parametrize("param", PARAMS)
def test_log_var_bounds_squash_smoothly(param):
    lo, hi = -4.0, 2.0
    head = GaussianHead(F, D, param=param, log_var_bounds=(lo, hi), rngs=nnx.Rngs(2))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, F)) * 100.0, jnp.float32)
    q = head(x)
    lv = np.asarray(q.log_var, np.float64)
    assert np.all(lv >= lo - 1e-4) and np.all(lv <= hi + 1e-4)
    raw = linear_np(head.spread, np.asarray(x, np.float64))
    c, h = (lo + hi) / 2, (hi - lo) / 2
    np.testing.assert_allclose(lv, c + h * np.tanh((raw - c) / h), rtol=1e-4, atol=1e-4)
    # slope 1 at the centre
    g = jax.grad(lambda r: c + h * jnp.tanh((r - c) / h))(jnp.float32(c))
    assert abs(float(g) - 1.0) < 1e-6


def test_state_has_named_params():
    head = GaussianHead(F, D, rngs=nnx.Rngs(0))
    state = nnx.state(head, nnx.Param)
    paths = {tuple(str(k) for k in path) for path, _ in nnx.to_flat_state(state)}
    assert paths == {("mean", "kernel"), ("mean", "bias"), ("spread", "kernel"), ("spread", "bias")}


def test_integer_bounds_are_numbers_too():
    head = GaussianHead(F, D, param="var", log_var_bounds=(-3, 1), rngs=nnx.Rngs(0))
    assert head.log_var_bounds == (-3.0, 1.0)


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.0, float("inf"))])
def test_bad_bounds(bounds):
    with pytest.raises(ValueError, match="log_var_bounds"):
        GaussianHead(F, D, log_var_bounds=bounds, rngs=nnx.Rngs(0))


@pytest.mark.invalid_input
def test_bad_param_and_bounds_of_the_wrong_type():
    with pytest.raises(ValueError, match="param must be one of"):
        GaussianHead(F, D, param="scale", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"log_var_bounds must be None or \(lo, hi\)"):
        GaussianHead(F, D, log_var_bounds=(0.0,), rngs=nnx.Rngs(0))

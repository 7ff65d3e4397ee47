"""Eager calls of the public functions run one compiled executable (``gkl_jax._src.eager``).

Each decorated function, called with concrete arrays, goes through its ``jax.jit`` (its cache
grows on a new shape) and returns what the undecorated function returns; arguments a jit cannot
take (a callable log-density, a Python int key) and calls on tracers take the direct path, with
the same results and the same error messages.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian

RNG = np.random.default_rng(7)
D = 3


def _arr(*shape, scale=1.0):
    return jnp.asarray(scale * RNG.normal(size=shape), jnp.float32)


def _tril(n):
    t = np.tril(RNG.normal(size=(n, D, D)) * 0.3)
    t[:, np.arange(D), np.arange(D)] = RNG.uniform(0.5, 1.5, (n, D))
    return jnp.asarray(t, jnp.float32)


def _mixture(n):
    comps = DiagGaussian(_arr(n, 2, D), _arr(n, 2, D, scale=0.3))
    return GaussianMixture(_arr(n, 2), comps)


def _cases(n):
    diag = [DiagGaussian(_arr(n, D), _arr(n, D, scale=0.3)) for _ in range(2)]
    full = FullGaussian(_arr(n, D), _tril(n))
    low = LowRankGaussian(_arr(n, D), _arr(n, D, 2), _arr(n, D, scale=0.3))
    key = jax.random.key(3)
    return [
        ("jeffreys", {}, (diag[0], full)),
        ("bhattacharyya", {}, (low, diag[1])),
        ("hellinger", {}, (full, low)),
        ("renyi", {"alpha": 0.3}, (diag[0], diag[1])),
        ("cross_entropy", {"axis": -1}, (diag[0], low)),
        ("cross_entropy", {"axis": ()}, (diag[0], diag[1])),
        ("kl_mixture_variational", {}, (_mixture(n), _mixture(n))),
        ("kl_mixture_upper_bound", {"num_iters": 3}, (_mixture(n), diag[1])),
        ("kl_mc", {"num_samples": 16}, (key, diag[0], diag[1])),
        (
            "kl_mc",
            {"num_samples": 8, "estimator": "k3", "antithetic": False},
            (key, _mixture(n), full),
        ),
    ]


@pytest.mark.parametrize("index", range(len(_cases(1))))
def test_an_eager_call_runs_the_compiled_function_and_agrees_with_the_direct_one(index):
    name, kwargs, args = _cases(5 + index)[index]  # a shape of its own: a new cache entry
    fn = getattr(gkl_jax, name)
    before = fn.eager_jit._cache_size()
    out = fn(*args, **kwargs)
    assert fn.eager_jit._cache_size() == before + 1
    fn(*args, **kwargs)
    assert fn.eager_jit._cache_size() == before + 1  # the second call reuses the executable
    direct = fn.__wrapped__(*args, **kwargs)
    # the same float32 values up to the fusion's rounding (kl_mc's standard errors of an exact
    # control-variate pair are themselves at rounding level, ~1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(direct), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-6)


def test_calls_on_tracers_and_callables_take_the_direct_path():
    p = DiagGaussian(_arr(4, D), _arr(4, D, scale=0.3))
    q = DiagGaussian(_arr(4, D), _arr(4, D, scale=0.3))
    fn = gkl_jax.kl_mc
    before = fn.eager_jit._cache_size()
    key = jax.random.key(0)

    def log_q(x):  # the same density as q, as a callable
        return q.log_prob(x)

    by_callable = fn(key, p, log_q, num_samples=16, control_variates=False)
    by_dist = fn(key, p, q, num_samples=16, control_variates=False)
    np.testing.assert_allclose(by_callable.value, by_dist.value, rtol=1e-5)
    jitted = jax.jit(functools.partial(fn, num_samples=16))(key, p, q)  # tracers inside
    assert jitted.value.shape == (4,)
    jax.grad(lambda m: jnp.sum(fn(key, DiagGaussian(m, q.log_var), q, num_samples=16).value))(
        p.mean
    )
    assert fn.eager_jit._cache_size() == before + 1  # only the eager call by_dist compiled


@pytest.mark.invalid_input
def test_errors_are_the_same_on_the_compiled_path():
    p = DiagGaussian(_arr(2, D), _arr(2, D))
    q = DiagGaussian(_arr(2, D + 1), _arr(2, D + 1))
    with pytest.raises(ValueError, match=r"^jeffreys: latent sizes"):
        gkl_jax.jeffreys(p, q)
    with pytest.raises(ValueError, match=r"^kl_mc: num_samples=7 is odd"):
        gkl_jax.kl_mc(jax.random.key(0), p, p, num_samples=7)
    with pytest.raises(TypeError, match=r"^kl_mc: argument 'key' must be a PRNG key.*got int 0"):
        gkl_jax.kl_mc(0, p, p, num_samples=8)  # a Python int takes the direct path
    with pytest.raises(TypeError, match=r"^kl_mc: argument 'key' .*dtype float32 and shape \(2,\)"):
        gkl_jax.kl_mc(jnp.zeros(2), p, p, num_samples=8)  # an array: checked inside the jit
    with pytest.raises(ValueError, match=r"^renyi: "):
        gkl_jax.renyi(p, p, alpha=-1.0)


def test_the_checked_mode_reports_after_an_eager_unchecked_call():
    good = DiagGaussian(_arr(2, D), _arr(2, D))
    bad = DiagGaussian(good.mean.at[0, 0].set(jnp.nan), good.log_var)
    gkl_jax.jeffreys(bad, good)  # unchecked, compiled: NaN passes
    err, _ = gkl_jax.checked(gkl_jax.jeffreys)(bad, good)
    assert "jeffreys: argument 'p.mean' must be finite" in err.get()

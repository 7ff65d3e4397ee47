"""Full-covariance kernels call no batched LAPACK routine (``gkl_jax._src.linalg``).

With jaxlib <= 0.10 on CPU a batched LAPACK call (``trsm``, ``potrf``, ``getrf``, ``geqrf``, ...)
splits its batch over XLA's intra-op thread pool and blocks a pool thread until the pieces are
done; as many concurrent calls as the pool has threads then wait on each other forever (measured
on a 2-core machine: ``jeffreys(FullGaussian, FullGaussian)`` at B = 64, D = 64 hung within 300
calls, as did two ``triangular_solve`` or two ``cholesky`` calls in one jitted function). A
structural test, not a timed one: the lowered programs must hold no LAPACK custom call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, LowRankGaussian
from tests.helpers import lapack_batch_dims

RNG = np.random.default_rng(0)
B, D = 3, 20  # D > the 16-wide leaf: the blocked recursion is exercised


def _tril():
    t = np.tril(RNG.normal(size=(B, D, D)) * 0.2)
    t[:, np.arange(D), np.arange(D)] = RNG.uniform(0.5, 1.5, (B, D))
    return jnp.asarray(t, jnp.float32)


FULL_P = FullGaussian(jnp.asarray(RNG.normal(size=(B, D)), jnp.float32), _tril())
FULL_Q = FullGaussian(jnp.asarray(RNG.normal(size=(B, D)), jnp.float32), _tril())
DIAG = DiagGaussian(jnp.asarray(RNG.normal(size=(B, D)), jnp.float32), jnp.zeros((B, D)))
LOW = LowRankGaussian(
    jnp.zeros((B, D)), jnp.asarray(RNG.normal(size=(B, D, 2)), jnp.float32), jnp.zeros((B, D))
)


def _sum(fn):
    return lambda *a: jnp.sum(fn(*a))


CASES = {
    "kl(Full, Full)": (gkl_jax.kl, (FULL_P, FULL_Q)),
    "kl(Diag, Full)": (gkl_jax.kl, (DIAG, FULL_Q)),
    "kl(Full, Diag)": (gkl_jax.kl, (FULL_P, DIAG)),
    "kl_full": (gkl_jax.kl_full, (FULL_P.mean, FULL_P.scale_tril, FULL_Q.mean, FULL_Q.scale_tril)),
    "jeffreys(Full, Full)": (gkl_jax.jeffreys, (FULL_P, FULL_Q)),
    "renyi(0.3)(Full, Full)": (functools.partial(gkl_jax.renyi, alpha=0.3), (FULL_P, FULL_Q)),
    "hellinger(Full, Diag)": (gkl_jax.hellinger, (FULL_P, DIAG)),
    "cross_entropy(Full, Full)": (gkl_jax.cross_entropy, (FULL_P, FULL_Q)),
    "grad kl(Full, Full)": (jax.grad(_sum(gkl_jax.kl), argnums=(0, 1)), (FULL_P, FULL_Q)),
    "grad jeffreys(Full, Full)": (jax.grad(_sum(gkl_jax.jeffreys)), (FULL_P, FULL_Q)),
    "FullGaussian.from_cov": (
        lambda m, c: FullGaussian.from_cov(m, c).scale_tril,
        (FULL_P.mean, FULL_P.covariance()),
    ),
    "FullGaussian.from_precision": (
        lambda m, c: FullGaussian.from_precision(m, c).scale_tril,
        (FULL_P.mean, FULL_P.covariance()),
    ),
    "LowRankGaussian.to_full": (lambda g: g.to_full().scale_tril, (LOW,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_no_lapack_custom_call(name):
    fn, args = CASES[name]
    assert lapack_batch_dims(fn, *args) == {}


def test_the_lapack_free_cholesky_and_solves_match_numpy(x64):
    from gkl_jax._src.linalg import cholesky, solve_triangular

    rng = np.random.default_rng(1)
    for n in (1, 5, 16, 17, 40):
        a = rng.normal(size=(2, n, n))
        s = a @ np.swapaxes(a, -1, -2) + n * np.eye(n)
        ref = np.linalg.cholesky(s)
        np.testing.assert_allclose(cholesky(jnp.asarray(s)), ref, rtol=1e-13, atol=1e-13)
        rhs = rng.normal(size=(2, n, 3))
        x = solve_triangular(jnp.asarray(ref), jnp.asarray(rhs))
        np.testing.assert_allclose(ref @ np.asarray(x), rhs, atol=1e-12)
        xt = solve_triangular(jnp.asarray(ref), jnp.asarray(rhs), transpose=True)
        np.testing.assert_allclose(np.swapaxes(ref, -1, -2) @ np.asarray(xt), rhs, atol=1e-12)
    # not positive definite: NaN, as jnp.linalg.cholesky
    assert np.isnan(np.asarray(cholesky(jnp.array([[1.0, 2.0], [2.0, 1.0]])))).any()

"""LAPACK calls see one matrix at a time on CPU (``gkl_jax._src.lapack``).

jaxlib <= 0.10's batched CPU LAPACK kernels can deadlock XLA's thread pool when two run at once
(measured on 2 cores: ``kl(FullGaussian, LowRankGaussian)`` and ``wasserstein2(Full, Full)`` at
B = 64, D = 64 and the gradient of a LowRank KL hung within 300 calls). A call on a single
matrix does not split its batch, so it cannot take part. Structural tests (the lowered programs),
and the values against the batched routines.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, LowRankGaussian
from gkl_jax._src import lapack
from tests.helpers import lapack_batch_dims

RNG = np.random.default_rng(0)
B, D, K = 3, 6, 2


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def _tril():
    t = np.tril(RNG.normal(size=(B, D, D)) * 0.2)
    t[:, np.arange(D), np.arange(D)] = RNG.uniform(0.5, 1.5, (B, D))
    return _f32(t)


FULL = FullGaussian(_f32(RNG.normal(size=(B, D))), _tril())
FULL_Q = FullGaussian(_f32(RNG.normal(size=(B, D))), _tril())
DIAG = DiagGaussian(_f32(RNG.normal(size=(B, D))), _f32(RNG.normal(size=(B, D)) * 0.3))


def _low():
    return LowRankGaussian(
        _f32(RNG.normal(size=(B, D))),
        _f32(RNG.normal(size=(B, D, K))),
        _f32(RNG.normal(size=(B, D)) * 0.3),
    )


LOW, LOW_Q = _low(), _low()


def _sum(fn):
    return lambda *a: jnp.sum(fn(*a))


CASES = {
    "kl(Full, LowRank)": (gkl_jax.kl, (FULL, LOW)),
    "kl(LowRank, Full)": (gkl_jax.kl, (LOW, FULL)),
    "kl(LowRank, LowRank)": (gkl_jax.kl, (LOW, LOW_Q)),
    "grad kl(LowRank, LowRank)": (jax.grad(_sum(gkl_jax.kl), argnums=(0, 1)), (LOW, LOW_Q)),
    "kl(LowRank, Diag)": (gkl_jax.kl, (LOW, DIAG)),
    "wasserstein2(Full, Full)": (gkl_jax.wasserstein2, (FULL, FULL_Q)),
    "grad wasserstein2(Full, Full)": (jax.grad(_sum(gkl_jax.wasserstein2)), (FULL, FULL_Q)),
    "renyi(2)(LowRank, LowRank)": (functools.partial(gkl_jax.renyi, alpha=2.0), (LOW, LOW_Q)),
    "hellinger(LowRank, Full)": (gkl_jax.hellinger, (LOW, FULL)),
    "jeffreys(LowRank, Diag)": (gkl_jax.jeffreys, (LOW, DIAG)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_lapack_call_sees_one_matrix(name):
    fn, args = CASES[name]
    found = lapack_batch_dims(fn, *args)
    assert found, "expected LAPACK calls in this program (else move it to test_no_lapack.py)"
    assert all(dims == {0} for dims in found.values()), found


def _spd(shape):
    a = RNG.normal(size=shape)
    return a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])


@pytest.mark.parametrize(
    ("name", "ours", "ref", "args"),
    [
        ("qr", lambda a: lapack.qr(a), jnp.linalg.qr, (RNG.normal(size=(2, 3, 5, 3)),)),
        (
            "qr r",
            lambda a: lapack.qr(a, mode="r"),
            lambda a: jnp.linalg.qr(a, mode="r"),
            (RNG.normal(size=(4, 5, 3)),),
        ),
        (
            "svd",
            lambda a: lapack.svd(a, full_matrices=False),
            lambda a: jnp.linalg.svd(a, full_matrices=False),
            (RNG.normal(size=(4, 5, 3)),),
        ),
        (
            "svd values",
            lambda a: lapack.svd(a, compute_uv=False),
            lambda a: jnp.linalg.svd(a, compute_uv=False),
            (RNG.normal(size=(4, 3, 5)),),
        ),
        ("eigh", lapack.eigh, jnp.linalg.eigh, (_spd((4, 4, 4)),)),
        ("eigvalsh", lapack.eigvalsh, jnp.linalg.eigvalsh, (_spd((4, 4, 4)),)),
        ("cholesky", lapack.cholesky, jnp.linalg.cholesky, (_spd((4, 4, 4)),)),
        ("slogdet", lapack.slogdet, jnp.linalg.slogdet, (_spd((4, 4, 4)),)),
        ("inv", lapack.inv, jnp.linalg.inv, (_spd((4, 4, 4)),)),
        # broadcasting batch axes: one matrix against a batch of right-hand sides
        (
            "solve",
            lapack.solve,
            lambda a, b: jnp.linalg.solve(jnp.broadcast_to(a, (3, 4, 4)), b),
            (_spd((4, 4)), RNG.normal(size=(3, 4, 2))),
        ),
        (
            "triangular_solve",
            functools.partial(lapack.triangular_solve, left_side=True, lower=True),
            lambda a, b: jax.lax.linalg.triangular_solve(
                jnp.broadcast_to(a, (3, 4, 4)), b, left_side=True, lower=True
            ),
            (np.linalg.cholesky(_spd((4, 4))), RNG.normal(size=(3, 4, 2))),
        ),
    ],
)
def test_values_and_gradients_equal_the_batched_routine(name, ours, ref, args):
    args = tuple(_f32(a) for a in args)
    got, want = jax.jit(ours)(*args), jax.jit(ref)(*args)
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6), got, want
    )

    def loss(fn):
        def f(*a):
            leaves = jax.tree_util.tree_leaves(fn(*a))
            return sum(jnp.sum(jnp.abs(x) ** 2) for x in leaves if x.dtype != jnp.int32)

        return f

    g_ours = jax.grad(loss(ours), argnums=tuple(range(len(args))))(*args)
    g_ref = jax.grad(loss(ref), argnums=tuple(range(len(args))))(*args)
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4), g_ours, g_ref
    )


def test_a_single_matrix_is_passed_through():
    a = _f32(_spd((3, 3)))
    found = lapack_batch_dims(lapack.cholesky, a)
    assert found == {"lapack_spotrf_ffi": {0}}
    text = jax.jit(lapack.cholesky).lower(a).as_text()
    assert "stablehlo.while" not in text

"""The blocked triangular solvers (gkl_jax._src.linalg) against SciPy in float64."""

import numpy as np
import pytest
import scipy.linalg as sl

from gkl_jax._src.linalg import solve_tril, solve_tril_tril, tril_solve_sumsq
from tests.helpers import rand_tril


@pytest.mark.parametrize("n", [1, 16, 17, 45])
def test_blocked_solvers_match_scipy(n, x64):
    rng = np.random.default_rng(n)
    tril = rand_tril(rng, (2,), n)
    rhs_tril = np.tril(rng.standard_normal((2, n, n))) + 7 * np.triu(np.ones((n, n)), 1)
    rhs = rng.standard_normal((2, n, 3))
    want_x = np.stack(
        [sl.solve_triangular(tril[i], np.tril(rhs_tril[i]), lower=True) for i in (0, 1)]
    )
    want_y = np.stack([sl.solve_triangular(tril[i], rhs[i], lower=True) for i in (0, 1)])
    total, (y,) = tril_solve_sumsq(tril, rhs_tril, [rhs])
    np.testing.assert_allclose(total, np.sum(np.tril(want_x, -1) ** 2, axis=(-2, -1)), rtol=1e-12)
    np.testing.assert_allclose(y, want_y, rtol=1e-11, atol=1e-13)
    x, (y2,) = solve_tril_tril(tril, rhs_tril, [rhs])
    np.testing.assert_allclose(y2, want_y, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(x, want_x, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(solve_tril(tril, rhs), want_y, rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# (I + V V^T)^{-1} u with rows of V at every scale, and the row order it relies on
# ---------------------------------------------------------------------------------------------


def _spread_factor(rng, batch, d, k, spread):
    scales = np.exp(rng.uniform(-spread, spread, (*batch, d, 1)))
    return rng.standard_normal((*batch, d, k)) * scales


@pytest.mark.parametrize("seed", range(4))
def test_cap_solve_row_wise_exact_against_mpmath(seed):
    """Whitened factor rows from ~1e-17 to ~1e16: every row of the result to float32 precision,
    where ``u - V K^{-1} V^T u`` loses every digit in the heavy rows."""
    import jax.numpy as jnp
    import mpmath

    from gkl_jax._src.linalg import cap_solve

    rng = np.random.default_rng(seed)
    d, k = 7, 2
    v = _spread_factor(rng, (2,), d, k, 38.0).astype(np.float32)
    u = rng.standard_normal((2, d, 3)).astype(np.float32)
    got = np.asarray(cap_solve(jnp.asarray(v), jnp.asarray(u)))
    worst = 0.0
    with mpmath.workdps(90):
        for b in range(2):
            vm = mpmath.matrix(v[b].astype(np.float64))
            want = mpmath.inverse(mpmath.eye(d) + vm * vm.T) * mpmath.matrix(u[b].astype(float))
            want = np.array(want.tolist(), dtype=np.float64)
            worst = max(worst, np.max(np.abs(got[b] - want) / np.abs(want)))
    assert worst < 1e-5, worst


def test_cap_solve_derivatives_match_dense_solve(x64):
    """Value, reverse, forward and second derivatives against ``jnp.linalg.solve`` of the
    dense ``I + V V^T`` (float64, moderate scales), batched and broadcast."""
    import jax
    import jax.numpy as jnp

    from gkl_jax._src.linalg import cap_solve

    rng = np.random.default_rng(0)
    v = jnp.asarray(rng.standard_normal((3, 6, 2)) * np.exp(rng.uniform(-2, 2, (3, 6, 1))))
    u = jnp.asarray(rng.standard_normal((6, 2)))  # broadcast against v's batch

    def ours(v, u):
        return jnp.sum(jnp.sin(cap_solve(v, u)))

    def dense(v, u):
        c = jnp.eye(6)[None] + v @ jnp.swapaxes(v, -1, -2)
        return jnp.sum(jnp.sin(jnp.linalg.solve(c, jnp.broadcast_to(u, (*v.shape[:-2], 6, 2)))))

    np.testing.assert_allclose(ours(v, u), dense(v, u), rtol=1e-13)
    for derivative in (jax.grad, jax.jacfwd):
        got_all, want_all = derivative(ours, (0, 1))(v, u), derivative(dense, (0, 1))(v, u)
        for got, want in zip(got_all, want_all, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(
        jax.hessian(ours)(v, u), jax.hessian(dense)(v, u), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        jax.vmap(ours, (0, None))(v, u), [dense(v[i][None], u) for i in range(3)], rtol=1e-13
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sorted_rows_decreasing_to_a_factor_of_two(dtype, request):
    import jax.numpy as jnp

    from gkl_jax._src.linalg import sorted_rows

    if dtype == "float64":
        request.getfixturevalue("x64")
    rng = np.random.default_rng(1)
    spread = 80.0 if dtype == "float32" else 650.0
    a = _spread_factor(rng, (3,), 500, 4, spread).astype(dtype)
    a[:, 7] = 0.0  # a zero row goes last
    order = np.asarray(sorted_rows(jnp.asarray(a)))
    assert sorted(order[0]) == list(range(500))
    size = np.max(np.abs(np.take_along_axis(a, order[..., None], axis=-2)), axis=-1)
    assert np.all(size[:, 1:] < 2 * size[:, :-1] + (size[:, :-1] == 0)), "not decreasing"
    assert np.all(order[:, -1] == 7)


_BATCHED_LOW_RANK = """
import jax, jax.numpy as jnp, numpy as np
from gkl_jax import LowRankGaussian, kl
rng = np.random.default_rng(0)
def make():
    return LowRankGaussian(*(jnp.asarray(a, jnp.float32) for a in (
        rng.standard_normal((4, 300)), rng.standard_normal((4, 300, 8)),
        0.3 * rng.standard_normal((4, 300)))))
p, q = make(), make()
value, grad = jax.jit(jax.value_and_grad(lambda p, q: jnp.sum(kl(p, q))))(p, q)
mapped = jax.jit(lambda p, q: jnp.sum(jax.lax.map(lambda pq: kl(*pq), (p, q))))(p, q)
np.testing.assert_allclose(value, mapped, rtol=1e-5)
assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))
print("ok")
"""


def test_batched_low_rank_gradient_completes():
    """A batch of low-rank pairs at d = 300 with its gradient: with LAPACK's QR/ormqr in
    ``cap_solve`` this hung on 2 cores (jaxlib 0.10's batched CPU kernels wait on the thread
    pool they run on). Run in a subprocess, so that a hang fails the test instead of the run."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _BATCHED_LOW_RANK], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

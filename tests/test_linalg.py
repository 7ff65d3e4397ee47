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

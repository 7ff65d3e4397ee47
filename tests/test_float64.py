"""float64 (x64) behaviour: dtype, accuracy near p == q against mpmath, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gkl_jax import DiagGaussian, kl, kl_diag, kl_diag_standard
from tests.helpers import kl_diag_exact, max_rel_err

pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("param", ["log_var", "var", "std"])
@pytest.mark.parametrize("delta", [1e-1, 1e-4, 1e-8, 1e-12])
def test_float64_accuracy_near_p_equals_q(param, delta):
    rng = np.random.default_rng(int(-np.log10(delta)))
    mp, lp = rng.normal(size=(4, 16)), rng.uniform(-3, 1, (4, 16))
    mq, lq = (
        mp * (1 + delta * rng.normal(size=mp.shape)),
        lp * (1 + delta * rng.normal(size=lp.shape)),
    )
    conv = {"log_var": lambda v: v, "var": np.exp, "std": lambda v: np.exp(v / 2)}[param]
    sp, sq = conv(lp), conv(lq)
    got = kl_diag(mp, sp, mq, sq, param=param)
    assert got.dtype == jnp.float64
    assert max_rel_err(got, kl_diag_exact(mp, sp, mq, sq, param).sum(-1)) <= 1e-14


@pytest.mark.parametrize("param", ["var", "std"])
def test_float64_ratios_where_xla_log1p_is_inaccurate(param):
    # spread ratios in [0.58, 0.66]: the log-ratio's log1p argument lies in [-0.42, -0.34],
    # where XLA's float64 log1p on CPU is up to ~128 ulp off (3e-14 in the KL before the fix)
    rng = np.random.default_rng(8)
    mp = rng.normal(size=(64, 16))
    mq = mp + 1e-3 * rng.normal(size=mp.shape)
    sp = np.exp(rng.uniform(-2, 2, mp.shape))
    sq = sp / rng.uniform(0.58, 0.66, mp.shape)
    got = kl_diag(mp, sp, mq, sq, param=param)
    assert max_rel_err(got, kl_diag_exact(mp, sp, mq, sq, param).sum(-1)) <= 2e-15


def test_float64_extreme_regime():
    rng = np.random.default_rng(3)
    args = (
        1e3 * rng.normal(size=(4, 16)),
        rng.uniform(-300, 300, (4, 16)),
        1e3 * rng.normal(size=(4, 16)),
        rng.uniform(-300, 300, (4, 16)),
    )
    got = kl_diag(*args)
    ref = kl_diag_exact(*args).sum(-1)
    finite = np.isfinite(ref)
    assert max_rel_err(np.asarray(got)[finite], ref[finite]) <= 1e-14


def test_float32_inputs_stay_float32_and_mixed_promote_to_float64():
    x32 = jnp.zeros(3, jnp.float32)
    assert kl_diag(x32, x32, x32, x32).dtype == jnp.float32
    assert kl_diag(x32, x32, jnp.ones(3, jnp.float64), x32).dtype == jnp.float64
    assert kl_diag(jnp.zeros(3, jnp.bfloat16), x32, x32, x32).dtype == jnp.float32


def test_pytree_float64():
    p = DiagGaussian.from_std(np.zeros(3), np.full(3, 1 + 1e-10))
    q = DiagGaussian.from_std(np.zeros(3), np.ones(3))
    value = kl(p, q)
    assert value.dtype == jnp.float64
    # 3 * 0.5 * phi(2 log(1 + 1e-10)) = 3 * (2e-20 - ...) ~ 6e-20
    ref = kl_diag_exact(np.zeros(3), np.full(3, 1 + 1e-10), np.zeros(3), np.ones(3), "std").sum()
    assert float(value) == pytest.approx(ref, rel=1e-13)


def test_check_grads_near_p_equals_q():
    rng = np.random.default_rng(4)
    mp, lp = rng.normal(size=(2, 3)), rng.uniform(-1, 1, (2, 3))
    mq, lq = mp + 1e-6 * rng.normal(size=mp.shape), lp + 1e-6 * rng.normal(size=lp.shape)
    check_grads(
        kl_diag, (mp, lp, mq, lq), order=2, modes=("fwd", "rev"), eps=1e-7, atol=1e-9, rtol=1e-6
    )
    check_grads(kl_diag_standard, (mp, lp), order=1, modes=("fwd", "rev"))


def test_hessian_of_kl_in_the_mean_is_the_precision():
    lq = jnp.array([0.3, -1.2, 2.0])
    hess = jax.hessian(lambda m: kl_diag(m, jnp.zeros(3), jnp.zeros(3), lq))(jnp.zeros(3))
    np.testing.assert_allclose(hess, np.diag(np.exp(-np.asarray(lq))), rtol=1e-14)

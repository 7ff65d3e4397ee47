"""Property-based tests (hypothesis) of the diagonal KL."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gkl_jax import DiagGaussian, kl, kl_diag
from tests.helpers import kl_diag_exact, max_rel_err

SETTINGS = settings(max_examples=40, deadline=None)

means = st.floats(-50, 50, width=32)
log_vars = st.floats(-12, 12, width=32)


def arrays(elements, dim):
    return hnp.arrays(np.float32, (3, dim), elements=elements)


@st.composite
def pairs(draw, max_dim=6):
    dim = draw(st.integers(1, max_dim))
    return tuple(draw(arrays(e, dim)) for e in (means, log_vars, means, log_vars))


@SETTINGS
@given(pairs())
def test_non_negative_and_exact(args):
    got = np.asarray(kl_diag(*args))
    assert np.all(got >= 0)
    ref = kl_diag_exact(*args).sum(-1)
    assert np.all(got[ref == 0] == 0)
    # relative error, measured against the smallest normal float32 where the exact value
    # underflows float32 (e.g. 4e-67 rounds to 0)
    assert max_rel_err(got, ref, floor=np.finfo(np.float32).tiny) <= 2e-6


@SETTINGS
@given(
    st.integers(1, 8).flatmap(lambda d: st.tuples(arrays(means, d), arrays(log_vars, d))),
    st.sampled_from(["log_var", "var", "std"]),
)
def test_kl_of_p_with_itself_is_zero(mean_lv, param):
    mean, lv = mean_lv
    spread = {"log_var": lv, "var": np.exp(lv), "std": np.exp(lv / 2)}[param].astype(np.float32)
    p = DiagGaussian.from_param(mean, spread, param=param)
    np.testing.assert_array_equal(kl(p, p), 0.0)


@SETTINGS
@given(pairs(max_dim=8), st.data())
def test_additive_over_latent_dimensions(args, data):
    dim = args[0].shape[-1]
    cut = data.draw(st.integers(0, dim))
    whole = np.asarray(kl_diag(*args), np.float64)
    parts = np.asarray(kl_diag(*[a[:, :cut] for a in args]), np.float64) + np.asarray(
        kl_diag(*[a[:, cut:] for a in args]), np.float64
    )
    np.testing.assert_allclose(whole, parts, rtol=2e-6, atol=0)


@SETTINGS
@given(
    pairs(max_dim=5),
    hnp.arrays(np.float64, 5, elements=st.floats(-3, 3)),
    hnp.arrays(np.float64, 5, elements=st.floats(-2, 2)),
)
def test_invariant_under_a_shared_affine_map(args, shift, log_scale):
    """x -> a * x + b (diagonal a) maps both Gaussians and leaves the KL unchanged."""
    mp, lp, mq, lq = (np.asarray(a, np.float64) for a in args)
    dim = mp.shape[-1]
    b, la = shift[:dim], log_scale[:dim]
    scale = np.exp(la)
    moved = [(mp * scale + b), lp + 2 * la, (mq * scale + b), lq + 2 * la]
    ref = kl_diag_exact(mp, lp, mq, lq).sum(-1)
    ref_moved = kl_diag_exact(*moved).sum(-1)
    # the exact KL is invariant up to the float64 rounding of the moved inputs ...
    np.testing.assert_allclose(ref_moved, ref, rtol=1e-9, atol=1e-12)
    # ... and gkl_jax matches the exact value of whatever it is given
    got = kl_diag(*[a.astype(np.float32) for a in moved])
    ref32 = kl_diag_exact(*[a.astype(np.float32) for a in moved]).sum(-1)
    assert max_rel_err(got, ref32, floor=np.finfo(np.float32).tiny) <= 2e-6


@SETTINGS
@given(pairs(max_dim=6), st.sampled_from(["log_var", "var", "std"]))
def test_array_api_equals_pytree_api(args, param):
    mp, lp, mq, lq = args
    sp, sq = (
        {"log_var": lambda v: v, "var": np.exp, "std": lambda v: np.exp(v / 2)}[param](x).astype(
            np.float32
        )
        for x in (lp, lq)
    )
    p, q = (
        DiagGaussian.from_param(mp, sp, param=param),
        DiagGaussian.from_param(mq, sq, param=param),
    )
    np.testing.assert_array_equal(kl(p, q), kl_diag(mp, sp, mq, sq, param=param))


@SETTINGS
@given(pairs(max_dim=4))
def test_mean_term_is_symmetric_and_variance_term_is_not_needed_for_equal_variances(args):
    mp, lp, mq, _ = args
    np.testing.assert_allclose(kl_diag(mp, lp, mq, lp), kl_diag(mq, lp, mp, lp), rtol=1e-6)
    assert bool(jnp.all(kl_diag(mp, lp, mp, lp) == 0))

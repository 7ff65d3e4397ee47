"""Aggregate-posterior KLs and the ELBO-surgery decomposition against float64 grid quadrature.

The references integrate on a 2-D grid (spacing a third of the smallest standard deviation, 10
standard deviations beyond every component): for Gaussians the Riemann sum converges faster than
any power of the spacing, so they are exact to ~1e-12 here. They share no code with gkl_jax.
"""

import functools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import logsumexp

from gkl_jax import (
    DiagGaussian,
    Estimate,
    GaussianMixture,
    KLDecomposition,
    kl_aggregate,
    kl_aggregate_prior,
    kl_decomposition,
)
from gkl_jax._src.aggregate import _mss_log_weight

# ---------------------------------------------------------------------------------------------
# float64 NumPy references
# ---------------------------------------------------------------------------------------------


def random_set(seed, n, d=2, spread=1.0, log_var=(-1.5, 0.0)):
    """``n`` random diagonal posteriors: means ``(n, d)`` and variances ``(n, d)`` (float64)."""
    rng = np.random.default_rng(seed)
    return spread * rng.normal(size=(n, d)), np.exp(rng.uniform(*log_var, size=(n, d)))


def grid_2d(*sets):
    """A 2-D grid covering every component of ``sets`` ((mean, var) pairs): points and cell area."""
    means = np.concatenate([m for m, _ in sets])
    std = np.sqrt(np.concatenate([v for _, v in sets]))
    lo, hi = np.min(means - 10 * std, axis=0), np.max(means + 10 * std, axis=0)
    h = np.min(std) / 3
    axes = [np.arange(a, b + h, h) for a, b in zip(lo, hi, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    return points, h * h


def log_normal_1d(x, mean, var):
    """``log N(x_i; mean_ji, var_ji)`` per dimension: ``(P, J, d)`` for x ``(P, d)``."""
    return -0.5 * ((x[:, None, :] - mean) ** 2 / var + np.log(2 * np.pi * var))


def log_mixture(x, mean, var):
    """log of the uniform mixture, ``(P,)``."""
    return logsumexp(log_normal_1d(x, mean, var).sum(-1), axis=1) - np.log(len(mean))


def ref_aggregate_kl(set_a, set_b):
    x, area = grid_2d(set_a, set_b)
    log_a, log_b = log_mixture(x, *set_a), log_mixture(x, *set_b)
    return float(np.sum(np.exp(log_a) * (log_a - log_b)) * area)


def ref_kl_rows(mean, var, prior_mean=0.0, prior_var=1.0):
    """Closed-form KL(q_n || p) per row (float64)."""
    return 0.5 * np.sum(
        (mean - prior_mean) ** 2 / prior_var + var / prior_var - 1 - np.log(var / prior_var), -1
    )


def ref_terms(mean, var, weights=None, prior_mean=0.0, prior_var=1.0, prior_log=None):
    """Expected decomposition terms for draws from each row ``c`` with ``log q(z)`` taken as
    ``log sum_j W_cj q_j(z)`` (``W = 1/N``: the exact aggregate). Returns a dict of floats."""
    n = len(mean)
    weights = np.full((n, n), 1.0 / n) if weights is None else weights
    x, area = grid_2d((mean, var))
    per_dim = log_normal_1d(x, mean, var)  # (P, n, 2)
    joint = per_dim.sum(-1)  # (P, n)
    if np.all(weights == weights[:1]):  # the same weights for every row: compute once
        log_w = np.log(weights)[:1, None, :]
    else:
        log_w = np.log(weights)[:, None, :]  # (c, 1, j)
    log_q = logsumexp(joint[None] + log_w, axis=2)  # (c or 1, P)
    log_marg = logsumexp(per_dim[None] + log_w[..., None], axis=2).sum(-1)  # (c or 1, P)
    if prior_log is None:
        prior_log = -0.5 * np.sum(
            (x - prior_mean) ** 2 / prior_var + np.log(2 * np.pi * prior_var), -1
        )
    own = np.exp(joint.T) * area  # (c, P): q_c on the grid

    def expect(f):  # mean over c of E_{q_c}[f_c]
        return float(np.mean(np.sum(own * f, axis=1)))

    return {
        "mutual_info": expect(joint.T - log_q),
        "total_correlation": expect(log_q - log_marg),
        "dimension_wise_kl": expect(log_marg - prior_log),
        "aggregate_kl": expect(log_q - prior_log),
        "kl_to_prior": float(np.mean(ref_kl_rows(mean, var, prior_mean, prior_var))),
    }


def chen_mss_weights(batch, dataset):
    """The MSS importance weights of Chen et al. (2018), App. C, with the corrected diagonals."""
    m = batch - 1
    w = np.full((batch, batch), 1.0 / m)
    w[np.arange(batch), np.arange(batch)] = 1.0 / dataset
    w[np.arange(batch), (np.arange(batch) + 1) % batch] = (dataset - m) / (dataset * m)
    return w


def diag(mean, var, param="log_var", dtype=np.float32):
    spread = {"log_var": np.log(var), "var": var, "std": np.sqrt(var)}[param]
    return DiagGaussian.from_param(mean.astype(dtype), spread.astype(dtype), param=param)


@functools.cache
def seeds_fn(fn, items):
    """``fn`` under jit and vmapped over keys (compiled once per configuration)."""
    return jax.jit(jax.vmap(partial(fn, **dict(items)), in_axes=(0, None, None)))


def over_seeds(fn, a, b, num_seeds=200, **kw):
    keys = jax.random.split(jax.random.key(123), num_seeds)
    return seeds_fn(fn, tuple(sorted(kw.items())))(keys, a, b)


def coverage(est, truth, k=2.0):
    err = np.abs(np.asarray(est.value, np.float64) - truth)
    return float(np.mean(err <= k * np.asarray(est.stderr, np.float64)))


# ---------------------------------------------------------------------------------------------
# kl_aggregate
# ---------------------------------------------------------------------------------------------

# (N, M, num_samples): one stratum per posterior (S >= 2N, S a multiple of N or not), and
# strata of 2-3 posteriors (S < 2N).
DESIGNS = [(8, 12, 64), (8, 5, 21), (40, 20, 32)]


@pytest.mark.parametrize(("n", "m", "s"), DESIGNS)
def test_kl_aggregate_matches_quadrature_and_is_calibrated(n, m, s):
    set_a, set_b = random_set(n, n), random_set(100 + n, m, spread=0.8)
    truth = ref_aggregate_kl(set_a, set_b)
    est = kl_aggregate(jax.random.key(0), diag(*set_a), diag(*set_b), num_samples=s)
    assert abs(float(est.value) - truth) <= 4 * float(est.stderr)
    runs = over_seeds(kl_aggregate, diag(*set_a), diag(*set_b), num_samples=s)
    assert 0.88 <= coverage(runs, truth) <= 0.995
    # the error bar is the spread of the estimates (not just covering by being wide)
    ratio = np.std(np.asarray(runs.value)) / np.sqrt(np.mean(np.asarray(runs.stderr) ** 2))
    assert 0.8 <= ratio <= 1.2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_aggregate_of_a_set_with_itself_is_exactly_zero(dtype, request):
    if dtype == np.float64:
        request.getfixturevalue("x64")
    q = diag(*random_set(3, 37, d=5), dtype=dtype)
    for chunk in (None, 4) if dtype == np.float32 else (None,):
        est = jax.jit(partial(kl_aggregate, num_samples=100, chunk_size=chunk))(
            jax.random.key(1), q, q
        )
        assert est.value.dtype == dtype
        assert float(est.value) == 0.0
        assert 0.0 < float(est.stderr) < 1e3 * np.finfo(dtype).eps


def test_chunk_size_does_not_change_the_result():
    """Padding of the last block and the running log-sum-exp: every chunking agrees."""
    set_a, set_b = random_set(4, 7, d=3), random_set(5, 9, d=3)
    values = [
        kl_aggregate(jax.random.key(2), diag(*set_a), diag(*set_b), num_samples=30, chunk_size=c)
        for c in (1, 3, 7, 100)
    ]
    for v in values[1:]:
        np.testing.assert_allclose(v.value, values[0].value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v.stderr, values[0].stderr, rtol=1e-4)


def test_kl_aggregate_vmap_over_sets_matches_a_loop():
    sets = [random_set(10 + i, 6, d=3) for i in range(3)]
    mean = jnp.asarray(np.stack([s[0] for s in sets]), jnp.float32)
    log_var = jnp.asarray(np.log(np.stack([s[1] for s in sets])), jnp.float32)
    q_b = diag(*random_set(20, 4, d=3))
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.vmap(
        lambda k, mu, lv: kl_aggregate(k, DiagGaussian(mu, lv), q_b, num_samples=24)
    )(keys, mean, log_var)
    assert batched.value.shape == batched.stderr.shape == (3,)
    for i in range(3):
        one = kl_aggregate(keys[i], DiagGaussian(mean[i], log_var[i]), q_b, num_samples=24)
        np.testing.assert_allclose(batched.value[i], one.value, rtol=1e-5, atol=1e-6)


def test_float64_and_gradients(x64):
    set_a, set_b = random_set(6, 5), random_set(7, 4)
    q_a, q_b = diag(*set_a, dtype=np.float64), diag(*set_b, dtype=np.float64)
    est = kl_aggregate(jax.random.key(4), q_a, q_b, num_samples=40)
    assert est.value.dtype == est.stderr.dtype == jnp.float64
    # the estimate is a smooth function of both sets for a fixed key (reparameterized draws)
    f = jax.jit(lambda a, b: kl_aggregate(jax.random.key(4), a, b, num_samples=40).value)
    check_grads(f, (q_a, q_b), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)
    # with the control variate's fitted coefficients (which carry gradients too)
    g = jax.jit(
        lambda a: jnp.stack(
            [e.value for e in kl_decomposition(jax.random.key(4), a, num_samples=24)]
        )
    )
    check_grads(g, (q_a,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_kl_aggregate_gradient_is_unbiased(x64):
    """Mean gradient over seeds against the finite-difference derivative of the quadrature."""
    set_a, set_b = random_set(8, 4), random_set(9, 5, spread=0.7)
    shift = np.zeros_like(set_b[0])
    shift[0, 0] = 1e-4
    deriv = (
        ref_aggregate_kl(set_a, (set_b[0] + shift, set_b[1]))
        - ref_aggregate_kl(set_a, (set_b[0] - shift, set_b[1]))
    ) / 2e-4
    q_a, q_b = diag(*set_a, dtype=np.float64), diag(*set_b, dtype=np.float64)
    grad = jax.jit(
        jax.vmap(
            jax.grad(lambda b, k: kl_aggregate(k, q_a, b, num_samples=16).value), in_axes=(None, 0)
        )
    )(q_b, jax.random.split(jax.random.key(5), 2000))
    g = np.asarray(grad.mean[:, 0, 0])
    assert abs(g.mean() - deriv) <= 4 * g.std() / np.sqrt(g.size)


def test_memory_is_bounded_for_a_large_set():
    """N = 1e5, d = 16: no (S, N, d) or (S, N) array; the jitted call runs."""
    n, d, s = 100_000, 16, 1024
    rng = np.random.default_rng(0)
    q = DiagGaussian(
        rng.normal(size=(n, d)).astype(np.float32), rng.uniform(-3, 0, (n, d)).astype(np.float32)
    )
    full = s * n * d * 4
    for fn in (partial(kl_aggregate, q_b=q), kl_aggregate_prior, kl_decomposition):
        compiled = jax.jit(partial(fn, num_samples=s)).lower(jax.random.key(0), q).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        assert temp < full / 100, (fn, temp)
    est = jax.jit(partial(kl_aggregate, num_samples=64))(jax.random.key(0), q, q)
    assert float(est.value) == 0.0


# ---------------------------------------------------------------------------------------------
# kl_aggregate_prior
# ---------------------------------------------------------------------------------------------


def _vampprior():
    comps = DiagGaussian(np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([[0.0, -0.5], [-0.3, 0.2]]))
    return GaussianMixture(np.array([0.3, -0.2]), comps)


def _prior_log_density(prior, x):
    if prior is None:
        return None
    if isinstance(prior, GaussianMixture):
        w = np.asarray(jax.nn.log_softmax(prior.logits))
        mean, var = np.asarray(prior.components.mean), np.asarray(prior.components.var)
        return logsumexp(log_normal_1d(x, mean, var).sum(-1) + w, axis=1)
    mean, var = np.asarray(prior.mean, np.float64), np.asarray(prior.var, np.float64)
    return -0.5 * np.sum((x - mean) ** 2 / var + np.log(2 * np.pi * var), -1)


@pytest.mark.parametrize(
    ("prior_kind", "n", "s"),
    [("standard", 8, 64), ("standard", 40, 32), ("diag-std", 8, 21), ("mixture", 8, 64)],
)
def test_kl_aggregate_prior_matches_quadrature_and_is_calibrated(prior_kind, n, s):
    mean, var = random_set(n, n)
    prior = {
        "standard": None,
        "diag-std": DiagGaussian.from_std(np.array([0.2, -0.1]), np.array([1.3, 0.8])),
        "mixture": _vampprior(),
    }[prior_kind]
    x, area = grid_2d((mean, var))
    log_q = log_mixture(x, mean, var)
    log_p = _prior_log_density(prior, x)
    if log_p is None:
        log_p = -0.5 * np.sum(x**2 + np.log(2 * np.pi), -1)
    truth = float(np.sum(np.exp(log_q) * (log_q - log_p)) * area)
    runs = over_seeds(kl_aggregate_prior, diag(mean, var), prior, num_samples=s)
    assert abs(float(runs.value[0]) - truth) <= 4 * float(runs.stderr[0])
    assert 0.88 <= coverage(runs, truth) <= 0.995


# ---------------------------------------------------------------------------------------------
# kl_decomposition
# ---------------------------------------------------------------------------------------------

TERMS = ("mutual_info", "total_correlation", "dimension_wise_kl", "aggregate_kl")


@pytest.mark.parametrize(("n", "s", "prior"), [(8, 64, None), (40, 32, None), (8, 21, "diag")])
def test_decomposition_matches_quadrature_and_is_calibrated(n, s, prior):
    mean, var = random_set(n, n)
    if prior == "diag":
        pm, pv = np.array([0.3, -0.2]), np.array([1.5, 0.7])
        prior, ref = DiagGaussian.from_var(pm, pv), ref_terms(mean, var, None, pm, pv)
    else:
        ref = ref_terms(mean, var)
    np.testing.assert_allclose(
        ref["mutual_info"] + ref["total_correlation"] + ref["dimension_wise_kl"],
        ref["kl_to_prior"],
        rtol=1e-9,
    )
    runs = over_seeds(kl_decomposition, diag(mean, var), prior, num_samples=s)
    assert isinstance(runs, KLDecomposition)
    np.testing.assert_allclose(runs.kl_to_prior.value, ref["kl_to_prior"], rtol=2e-6)
    assert np.all(runs.kl_to_prior.stderr == 0)
    for name in TERMS:
        est = getattr(runs, name)
        assert abs(float(est.value[0]) - ref[name]) <= 4 * float(est.stderr[0]), name
        assert 0.88 <= coverage(est, ref[name]) <= 0.995, name


@pytest.mark.parametrize("estimator", ["exact", "mws", "mss"])
def test_decomposition_terms_add_up_exactly(estimator):
    q = diag(*random_set(11, 30, d=6, log_var=(-4, 0)))
    dec = kl_decomposition(
        jax.random.key(6),
        q,
        num_samples=50,
        estimator=estimator,
        dataset_size=1000 if estimator == "mss" else None,
    )
    parts = [float(getattr(dec, t).value) for t in TERMS[:3]]
    scale = sum(abs(p) for p in parts) + float(dec.kl_to_prior.value)
    eps = float(np.finfo(np.float32).eps)
    assert abs(sum(parts) - float(dec.kl_to_prior.value)) <= 4 * eps * scale
    agg = float(dec.total_correlation.value) + float(dec.dimension_wise_kl.value)
    assert float(dec.aggregate_kl.value) == pytest.approx(agg, rel=4 * eps, abs=4 * eps * scale)
    assert float(dec.mutual_info.stderr) == float(dec.aggregate_kl.stderr)


@pytest.mark.parametrize("param", ["log_var", "var", "std"])
def test_kl_to_prior_is_the_closed_form_average(param, x64):
    mean, var = random_set(12, 25, d=4)
    dec = kl_decomposition(jax.random.key(7), diag(mean, var, param, np.float64), num_samples=8)
    assert dec.kl_to_prior.value.dtype == jnp.float64
    np.testing.assert_allclose(dec.kl_to_prior.value, np.mean(ref_kl_rows(mean, var)), rtol=1e-13)
    prior = DiagGaussian.from_std(np.array([0.5, 0.0, -1.0, 0.2]), np.array([2.0, 1.0, 0.5, 1.1]))
    dec = kl_decomposition(
        jax.random.key(7), diag(mean, var, param, np.float64), prior, num_samples=8
    )
    ref = np.mean(ref_kl_rows(mean, var, np.asarray(prior.mean), np.asarray(prior.var)))
    np.testing.assert_allclose(dec.kl_to_prior.value, ref, rtol=1e-13)


def test_single_posterior_has_no_information_and_no_total_correlation():
    """N = 1: q(z) is the posterior itself, so I = 0 and TC = 0 draw by draw."""
    q = diag(*random_set(13, 1, d=5))
    dec = kl_decomposition(jax.random.key(8), q, num_samples=64)
    kl2p = float(dec.kl_to_prior.value)
    assert abs(float(dec.mutual_info.value)) <= 1e-5 * kl2p
    assert abs(float(dec.total_correlation.value)) <= 1e-5 * kl2p
    assert float(dec.dimension_wise_kl.value) == pytest.approx(kl2p, rel=1e-5)
    assert float(dec.total_correlation.stderr) <= 1e-5 * kl2p


def test_identical_posteriors_have_no_mutual_information(x64):
    mean, var = random_set(14, 1, d=3)
    q = diag(np.repeat(mean, 12, 0), np.repeat(var, 12, 0), dtype=np.float64)
    dec = kl_decomposition(jax.random.key(9), q, num_samples=48)
    assert abs(float(dec.mutual_info.value)) <= 1e-12
    assert abs(float(dec.total_correlation.value)) <= 1e-12
    assert float(dec.aggregate_kl.value) == pytest.approx(float(dec.kl_to_prior.value), rel=1e-12)


def test_product_aggregate_has_zero_total_correlation(x64):
    """Means on a grid with equal variances: q(z) = q(z_1) q(z_2) at every point."""
    a, b = np.array([-1.0, 0.0, 1.5]), np.array([-0.5, 0.7])
    mean = np.stack(np.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)
    var = np.broadcast_to(np.array([0.3, 0.6]), mean.shape)
    dec = kl_decomposition(jax.random.key(10), diag(mean, var, dtype=np.float64), num_samples=60)
    assert abs(float(dec.total_correlation.value)) <= 1e-12
    assert float(dec.total_correlation.stderr) <= 1e-12


def test_well_separated_posteriors_keep_their_digits():
    """Narrow posteriors far apart on a line, far from the prior: I(x; z) = log N and
    TC = (d - 1) log N to float32 precision although kl_to_prior is 1.6e5 (no log p in them)."""
    mean = 10.0 * np.arange(50, dtype=np.float64)[:, None] * np.ones((1, 4))
    q = diag(mean, np.full((50, 4), 0.01))
    dec = kl_decomposition(jax.random.key(11), q, num_samples=100)
    assert float(dec.kl_to_prior.value) > 1e5
    for est, truth in ((dec.mutual_info, math.log(50)), (dec.total_correlation, 3 * math.log(50))):
        assert abs(float(est.value) - truth) <= 4 * float(est.stderr) + 1e-6 * truth
        assert float(est.stderr) <= 1e-5
    # the completed terms carry eps * kl_to_prior in their error bars
    eps = float(np.finfo(np.float32).eps)
    assert float(dec.dimension_wise_kl.stderr) >= eps * float(dec.kl_to_prior.value)


def test_mws_with_the_whole_dataset_is_exact():
    """MWS weights 1/B: a 'minibatch' that is the whole dataset gives the exact estimate."""
    q = diag(*random_set(15, 10, d=3))
    exact = kl_decomposition(jax.random.key(12), q, num_samples=40)
    mws = kl_decomposition(jax.random.key(12), q, num_samples=40, estimator="mws", dataset_size=10)
    for name in TERMS:
        assert float(getattr(mws, name).value) == float(getattr(exact, name).value)


def test_mss_weights_are_chen_et_al():
    batch, dataset = 5, 1000
    comp = jnp.arange(batch)
    log_w = _mss_log_weight(comp, batch, dataset, jnp.float32)(jnp.arange(batch))
    np.testing.assert_allclose(np.exp(log_w), chen_mss_weights(batch, dataset), rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_w).sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("estimator", "b", "dataset"), [("mss", 6, 1000), ("mws", 6, None)])
def test_minibatch_estimators_match_their_expectation_for_the_batch(estimator, b, dataset):
    """The stderr is the draws' sampling error for this batch: calibrated against the
    expectation of the minibatch estimator given the batch (not the dataset value: biased)."""
    mean, var = random_set(16, b)
    weights = chen_mss_weights(b, dataset) if estimator == "mss" else None
    ref = ref_terms(mean, var, weights)
    runs = over_seeds(
        kl_decomposition,
        diag(mean, var),
        None,
        num_samples=48,
        estimator=estimator,
        dataset_size=dataset,
    )
    for name in TERMS:
        assert 0.88 <= coverage(getattr(runs, name), ref[name]) <= 0.995, name


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.invalid_input
def test_shape_and_type_errors_name_the_arguments():
    key = jax.random.key(0)
    q = DiagGaussian(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
    with pytest.raises(TypeError, match="kl_aggregate: 'q_b' must be a DiagGaussian"):
        kl_aggregate(key, q, jnp.zeros((4, 3)), num_samples=8)
    with pytest.raises(
        ValueError, match=r"'q_a' must be a set of posteriors with batch shape \(N,\)"
    ):
        kl_aggregate(key, DiagGaussian(jnp.zeros(3), jnp.zeros(3)), q, num_samples=8)
    with pytest.raises(ValueError, match=r"'q_b' holds no posteriors"):
        kl_aggregate(key, q, DiagGaussian(jnp.zeros((0, 3)), jnp.zeros(3)), num_samples=8)
    with pytest.raises(ValueError, match=r"batch shape \(2, 4\)"):
        kl_aggregate(key, q, DiagGaussian(jnp.zeros((2, 4, 3)), jnp.zeros(3)), num_samples=8)
    with pytest.raises(ValueError, match=r"latent sizes .* 'q_a' .* 'q_b'"):
        kl_aggregate(key, q, DiagGaussian(jnp.zeros((4, 2)), jnp.zeros(2)), num_samples=8)
    bad = jax.tree_util.tree_map(lambda a: a.astype(jnp.int32), q)
    with pytest.raises(TypeError, match=r"'q_a\.mean' has dtype int32"):
        kl_aggregate(key, bad, q, num_samples=8)
    with pytest.raises(ValueError, match="num_samples=1"):
        kl_aggregate(key, q, q, num_samples=1)
    with pytest.raises(TypeError, match="num_samples must be a Python int"):
        kl_aggregate(key, q, q, num_samples=8.0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        kl_aggregate(key, q, q, num_samples=8, chunk_size=0)
    with pytest.raises(ValueError, match=r"'prior' must be a single distribution .* \(2,\)"):
        kl_aggregate_prior(key, q, DiagGaussian(jnp.zeros((2, 3)), jnp.zeros(3)), num_samples=8)
    with pytest.raises(ValueError, match="'prior' has event size 2"):
        kl_aggregate_prior(key, q, DiagGaussian(jnp.zeros(2), jnp.zeros(2)), num_samples=8)
    with pytest.raises(TypeError, match="factorized prior"):
        kl_decomposition(key, q, _vampprior(), num_samples=8)


@pytest.mark.invalid_input
def test_decomposition_option_errors():
    key = jax.random.key(0)
    q = DiagGaussian(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="estimator must be one of"):
        kl_decomposition(key, q, num_samples=8, estimator="minibatch")
    with pytest.raises(ValueError, match="'mss' needs dataset_size"):
        kl_decomposition(key, q, num_samples=8, estimator="mss")
    with pytest.raises(ValueError, match="dataset_size=3 is smaller than the minibatch"):
        kl_decomposition(key, q, num_samples=8, estimator="mss", dataset_size=3)
    with pytest.raises(ValueError, match="estimator='exact' takes all N = 4"):
        kl_decomposition(key, q, num_samples=8, dataset_size=100)
    one = DiagGaussian(jnp.zeros((1, 3)), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="minibatch of >= 2"):
        kl_decomposition(key, one, num_samples=8, estimator="mws")


def test_results_are_pytrees_of_estimates():
    q = diag(*random_set(17, 5, d=2))
    dec = jax.jit(partial(kl_decomposition, num_samples=16))(jax.random.key(0), q)
    leaves = jax.tree_util.tree_leaves(dec)
    assert len(leaves) == 10 and all(leaf.shape == () for leaf in leaves)
    assert all(isinstance(getattr(dec, f), Estimate) for f in KLDecomposition._fields)

"""The distribution base (an equinox.Module): pytree protocol, copies, immutability, equality,
subclasses under jit, and the Flax NNX integration."""

import copy
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gkl_jax
from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian

D = 3
RNG = np.random.default_rng(0)
MEAN = RNG.normal(size=(2, D)).astype(np.float32)
LOG_VAR = RNG.uniform(-1, 1, (2, D)).astype(np.float32)
TRIL = np.tril(RNG.normal(size=(2, D, D))).astype(np.float32)
TRIL[..., np.arange(D), np.arange(D)] = RNG.uniform(0.5, 1.5, (2, D))
FACTOR = RNG.normal(size=(2, D, 2)).astype(np.float32)
LOGITS = RNG.normal(size=(2, 4)).astype(np.float32)
COMP_MEAN = RNG.normal(size=(2, 4, D)).astype(np.float32)
COMP_STD = RNG.uniform(0.5, 1.5, (2, 4, D)).astype(np.float32)


def build(kind):
    """A batched instance (batch shape (2,), event size D) of each distribution type."""
    if kind == "diag":
        return DiagGaussian(MEAN, LOG_VAR)
    if kind == "diag-std":
        return DiagGaussian.from_std(MEAN, np.exp(0.5 * LOG_VAR))
    if kind == "full":
        return FullGaussian(MEAN, TRIL)
    if kind == "low_rank":
        return LowRankGaussian(MEAN, FACTOR, LOG_VAR)
    if kind == "mixture":
        return GaussianMixture(LOGITS, DiagGaussian.from_std(COMP_MEAN, COMP_STD))
    raise ValueError(kind)


KINDS = ["diag", "diag-std", "full", "low_rank", "mixture"]
KEY_PATHS = {
    "diag": [".mean", ".spread"],
    "diag-std": [".mean", ".spread"],
    "full": [".mean", ".scale_tril"],
    "low_rank": [".mean", ".factor", ".log_diag"],
    "mixture": [".logits", ".components.mean", ".components.spread"],
}


def diag_cov(log_var):
    var = np.exp(np.asarray(log_var, np.float64))
    return var[..., :, None] * np.eye(var.shape[-1])


def cov_of(kind):
    """The float64 dense covariance of ``build(kind)`` (not for the mixture)."""
    if kind.startswith("diag"):
        return diag_cov(LOG_VAR)
    if kind == "full":
        t = TRIL.astype(np.float64)
        return t @ np.swapaxes(t, -1, -2)
    f = FACTOR.astype(np.float64)
    return f @ np.swapaxes(f, -1, -2) + diag_cov(LOG_VAR)


def kl_np(mean_p, cov_p, mean_q, cov_q):
    """Textbook float64 KL between dense Gaussians, batched over the leading axis."""
    mean_p, mean_q = np.asarray(mean_p, np.float64), np.asarray(mean_q, np.float64)
    prec_q = np.linalg.inv(cov_q)
    diff = mean_q - mean_p
    d = mean_p.shape[-1]
    trace = np.einsum("...ij,...ji->...", prec_q, cov_p)
    maha = np.einsum("...i,...ij,...j->...", diff, prec_q, diff)
    logdet = np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
    return 0.5 * (trace + maha - d + logdet)


def assert_same_tree(a, b):
    assert type(a) is type(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    if isinstance(a, DiagGaussian):
        assert a.param == b.param
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------------------------
# pytree protocol, copies


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "roundtrip",
    [lambda p: pickle.loads(pickle.dumps(p)), copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_pickle_and_copy_round_trip(kind, roundtrip):
    p = build(kind)
    r = roundtrip(p)
    assert_same_tree(p, r)
    assert bool(r == p)


def test_deepcopy_does_not_share_mutable_state_with_the_original():
    p = build("full")
    r = copy.deepcopy(p)
    assert r is not p
    # the round trip is usable: same KL as the original
    np.testing.assert_array_equal(gkl_jax.kl(r, build("diag")), gkl_jax.kl(p, build("diag")))


@pytest.mark.parametrize("kind", KINDS)
def test_key_paths_are_named(kind):
    p = build(kind)
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
    assert sorted(paths) == sorted(KEY_PATHS[kind])


def test_key_path_leaves_are_the_fields():
    p = build("mixture")
    leaves = dict(
        (jax.tree_util.keystr(k), v) for k, v in jax.tree_util.tree_flatten_with_path(p)[0]
    )
    np.testing.assert_array_equal(leaves[".logits"], LOGITS)
    np.testing.assert_array_equal(leaves[".components.mean"], COMP_MEAN)
    np.testing.assert_array_equal(leaves[".components.spread"], COMP_STD)


@pytest.mark.parametrize("kind", KINDS)
def test_distributions_are_immutable(kind):
    p = build(kind)
    with pytest.raises(AttributeError, match="immutable"):
        p.logits = jnp.zeros(4)  # an existing field (of the mixture) or a new one
    with pytest.raises(AttributeError, match="immutable"):
        p.new_attribute = 1


@pytest.mark.parametrize("kind", KINDS)
def test_equality_is_by_value(kind):
    p, q = build(kind), build(kind)
    assert p is not q
    assert bool(p == q)
    # a different leaf value: unequal
    leaves, treedef = jax.tree_util.tree_flatten(p)
    other = jax.tree_util.tree_unflatten(treedef, [leaves[0] + 1.0, *leaves[1:]])
    assert not bool(p == other)


def test_equality_sees_the_parametrization():
    # same arrays, different static metadata: not equal
    a = DiagGaussian(MEAN, var=np.exp(LOG_VAR))
    b = DiagGaussian(MEAN, std=np.exp(LOG_VAR))
    assert not bool(a == b)
    assert not bool(DiagGaussian(MEAN, LOG_VAR) == FullGaussian(MEAN, TRIL))


def test_hash_is_identity_so_bound_methods_can_be_jitted():
    p, q = build("diag"), build("diag")
    assert hash(p) == object.__hash__(p)
    assert {p: 1, q: 2}[q] == 2  # equal values, distinct keys


@pytest.mark.invalid_input
def test_unflattening_does_not_validate():
    p = build("diag")
    treedef = jax.tree_util.tree_structure(p)
    # integer leaves and mismatched latent sizes: the constructor rejects both ...
    bad_mean, bad_spread = np.zeros((2, D), np.int32), np.zeros((5,), np.float32)
    with pytest.raises(TypeError):
        DiagGaussian(bad_mean, LOG_VAR)
    with pytest.raises(ValueError, match="latent sizes"):
        DiagGaussian(MEAN, bad_spread)
    # ... unflattening fills the fields as given
    r = jax.tree_util.tree_unflatten(treedef, [bad_mean, bad_spread])
    assert type(r) is DiagGaussian
    assert r.mean is bad_mean and r.spread is bad_spread
    # and JAX transformations (which unflatten with placeholders) work
    mixture = build("mixture")
    assert jax.tree_util.tree_map(lambda x: object(), mixture).logits is not None
    out = jax.vmap(lambda g: g.mean.sum())(p)
    np.testing.assert_allclose(out, MEAN.sum(-1), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_and_event_shapes_are_tuples(kind):
    p = build(kind)
    assert isinstance(p.batch_shape, tuple) and p.batch_shape == (2,)
    assert isinstance(p.event_shape, tuple) and p.event_shape == (D,)
    assert p.event_size == D


# --------------------------------------------------------------------------------------------
# subclasses, jit


class Isotropic(DiagGaussian):
    """A user subclass with no registrations of its own."""


@pytest.mark.parametrize("q_kind", ["diag", "diag-std", "full", "low_rank"])
def test_user_subclass_passes_through_jit_like_its_parent(q_kind):
    q = build(q_kind)
    sub = Isotropic(MEAN[::-1], LOG_VAR[::-1])
    parent = DiagGaussian(MEAN[::-1], LOG_VAR[::-1])
    # was: TypeError "no closed form for KL(DynamicJaxprTracer || ...)"
    got = jax.jit(gkl_jax.kl)(sub, q)
    np.testing.assert_array_equal(got, jax.jit(gkl_jax.kl)(parent, q))
    np.testing.assert_array_equal(jax.jit(gkl_jax.kl)(q, sub), jax.jit(gkl_jax.kl)(q, parent))
    want = kl_np(MEAN[::-1], diag_cov(LOG_VAR[::-1]), MEAN, cov_of(q_kind))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # the subclass survives flatten/unflatten (and so jit) as itself
    leaves, treedef = jax.tree_util.tree_flatten(sub)
    assert type(jax.tree_util.tree_unflatten(treedef, leaves)) is Isotropic
    assert type(jax.jit(lambda g: g)(sub)) is Isotropic


def test_subclass_kl_matches_the_numpy_formula():
    p = Isotropic(MEAN, LOG_VAR)
    q = DiagGaussian(MEAN[::-1], LOG_VAR[::-1])
    want = kl_np(MEAN, diag_cov(LOG_VAR), MEAN[::-1], diag_cov(LOG_VAR[::-1]))
    np.testing.assert_allclose(jax.jit(gkl_jax.kl)(p, q), want, rtol=1e-5)


@pytest.mark.parametrize("kind", ["diag", "diag-std", "full", "low_rank"])
def test_jit_of_bound_log_prob(kind):
    p = build(kind)
    x = RNG.normal(size=(5, 2, D)).astype(np.float32)
    got = jax.jit(p.log_prob)(x)
    cov = cov_of(kind)
    want = np.stack(
        [
            stats.multivariate_normal(MEAN[b].astype(np.float64), cov[b]).logpdf(x[:, b])
            for b in (0, 1)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_jit_of_bound_mixture_log_prob():
    p = build("mixture")
    x = RNG.normal(size=(5, 2, D)).astype(np.float32)
    w = np.exp(LOGITS - LOGITS.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    dens = np.zeros((5, 2))
    for b in range(2):
        for k in range(4):
            cov = np.diag(COMP_STD[b, k].astype(np.float64) ** 2)
            dens[:, b] += w[b, k] * stats.multivariate_normal(COMP_MEAN[b, k], cov).pdf(x[:, b])
    np.testing.assert_allclose(jax.jit(p.log_prob)(x), np.log(dens), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Flax NNX


def test_nnx_module_attributes():
    nnx = pytest.importorskip("flax.nnx")
    import gkl_jax.nnx

    class Scaled(DiagGaussian):  # defined after the import: registered by the hook
        pass

    class Model(nnx.Module):
        def __init__(self):
            self.prior = DiagGaussian(MEAN, LOG_VAR)
            self.posterior = Scaled(MEAN[::-1], LOG_VAR[::-1])
            self.full = FullGaussian(MEAN, TRIL)

    model = Model()
    paths = {tuple(str(k) for k in path) for path, _ in nnx.to_flat_state(nnx.state(model))}
    assert {
        ("prior", "mean"),
        ("prior", "spread"),
        ("posterior", "mean"),
        ("posterior", "spread"),
        ("full", "mean"),
        ("full", "scale_tril"),
    } <= paths
    assert type(model.posterior) is Scaled

    @nnx.jit
    def loss(m):
        return gkl_jax.kl(m.posterior, m.prior), gkl_jax.kl(m.full, m.prior)

    got_sub, got_full = loss(model)
    diag_rev = diag_cov(LOG_VAR[::-1])
    np.testing.assert_allclose(
        got_sub, kl_np(MEAN[::-1], diag_rev, MEAN, cov_of("diag")), rtol=1e-5
    )
    np.testing.assert_allclose(
        got_full, kl_np(MEAN, cov_of("full"), MEAN, cov_of("diag")), rtol=1e-5, atol=1e-6
    )
    # nnx.split / merge round trip keeps the types
    graphdef, state = nnx.split(model)
    merged = nnx.merge(graphdef, state)
    assert type(merged.posterior) is Scaled
    assert bool(merged.prior == model.prior)


@pytest.mark.parametrize("kind", KINDS)
def test_nnx_data_wrapping(kind):
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self):
            self.dist = nnx.data(build(kind))

    model = Model()
    paths = {tuple(str(k) for k in path) for path, _ in nnx.to_flat_state(nnx.state(model))}
    want = {("dist", *k.lstrip(".").split(".")) for k in KEY_PATHS[kind]}
    assert paths == want
    got = nnx.jit(lambda m: m.dist.log_prob(jnp.zeros((2, D))))(model)
    np.testing.assert_array_equal(got, jax.jit(build(kind).log_prob)(jnp.zeros((2, D))))


def test_without_the_nnx_import_a_plain_attribute_needs_nnx_data():
    pytest.importorskip("flax.nnx")
    code = """
import jax.numpy as jnp
from flax import nnx
import gkl_jax

class Plain(nnx.Module):
    def __init__(self):
        self.prior = gkl_jax.DiagGaussian(jnp.zeros(3), jnp.zeros(3))

class Wrapped(nnx.Module):
    def __init__(self):
        self.prior = nnx.data(gkl_jax.DiagGaussian(jnp.zeros(3), jnp.zeros(3)))

try:
    Plain()
except ValueError as e:
    assert "nnx.data" in str(e), e
else:
    raise AssertionError("a plain attribute was accepted without import gkl_jax.nnx")
paths = [p for p, _ in nnx.to_flat_state(nnx.state(Wrapped()))]
assert paths == [("prior", "mean"), ("prior", "spread")], paths
import gkl_jax.nnx
Plain()
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

"""Batch indexing of every distribution type (``Distribution.__getitem__`` in base.py), and the
documented tree_map / vmap use of a stacked batch of distributions."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture, LowRankGaussian, kl

RNG = np.random.default_rng(3)
D, K, R = 3, 2, 2
BATCH = (4, 3)


def _f32(*shape, low=None):
    if low is not None:
        return RNG.uniform(low, low + 1.0, shape).astype(np.float32)
    return RNG.normal(size=shape).astype(np.float32)


def _tril(*batch):
    t = np.tril(_f32(*batch, D, D))
    t[..., np.arange(D), np.arange(D)] = _f32(*batch, D, low=0.5)
    return t


# Every type with parameters that broadcast: fewer and size-1 batch axes.
FIELDS = {
    "diag": lambda: DiagGaussian.from_std(_f32(4, 3, D), _f32(3, D, low=0.5)),
    "diag-size1": lambda: DiagGaussian(_f32(4, 1, D), _f32(1, 3, D)),
    "full": lambda: FullGaussian(_f32(4, 1, D), _tril(3)),
    "low_rank": lambda: LowRankGaussian(_f32(4, 3, D), _f32(D, R), _f32(3, D)),
    "mixture": lambda: GaussianMixture(
        _f32(4, 1, K), DiagGaussian.from_var(_f32(3, K, D), _f32(K, D, low=0.5))
    ),
}
DISTS = {kind: make() for kind, make in FIELDS.items()}

INDICES = {
    "int": 0,
    "negative int": -1,
    "slice": slice(1, 3),
    "step slice": slice(None, None, 2),
    "second axis": (slice(None), 2),
    "ellipsis": (Ellipsis, 1),
    "ellipsis only": Ellipsis,
    "newaxis": None,
    "newaxis inside": (0, None, slice(0, 2)),
    "int array": np.array([0, 2, 2]),
    "two int arrays": (np.array([0, 3]), np.array([1, 2])),
    "array and newaxis": (None, slice(None), np.array([2, 0])),
    "list": [1, 3],
}


def _by_hand(dist, index):
    """The parameters of ``dist[index]`` computed independently: NumPy indexes an array of batch
    positions (so its rules, ``...`` included, apply to the batch axes only), and every parameter,
    broadcast to the full batch shape, is gathered at those positions."""
    batch = dist.batch_shape
    pos = np.arange(int(np.prod(batch))).reshape(batch)[index]

    def take(x, trailing):
        full = np.broadcast_to(np.asarray(x), (*batch, *trailing))
        return full.reshape(-1, *trailing)[pos]

    if isinstance(dist, GaussianMixture):
        comps = dist.components
        return {
            "logits": take(dist.logits, (K,)),
            "mean": take(comps.mean, (K, D)),
            "spread": take(comps.spread, (K, D)),
        }
    out = {"mean": take(dist.mean, (D,))}
    if isinstance(dist, DiagGaussian):
        out["spread"] = take(dist.spread, (D,))
    elif isinstance(dist, FullGaussian):
        out["scale_tril"] = take(dist.scale_tril, (D, D))
    else:
        out["factor"] = take(dist.factor, (D, R))
        out["log_diag"] = take(dist.log_diag, (D,))
    return out


def _params(dist):
    """The parameters of ``dist``, broadcast to its full batch shape."""
    batch = dist.batch_shape
    if isinstance(dist, GaussianMixture):
        comps = dist.components
        return {
            "logits": jnp.broadcast_to(dist.logits, (*batch, K)),
            "mean": jnp.broadcast_to(comps.mean, (*batch, K, D)),
            "spread": jnp.broadcast_to(comps.spread, (*batch, K, D)),
        }
    out = {"mean": jnp.broadcast_to(dist.mean, (*batch, D))}
    if isinstance(dist, DiagGaussian):
        out["spread"] = jnp.broadcast_to(dist.spread, (*batch, D))
    elif isinstance(dist, FullGaussian):
        out["scale_tril"] = jnp.broadcast_to(dist.scale_tril, (*batch, D, D))
    else:
        out["factor"] = jnp.broadcast_to(dist.factor, (*batch, D, R))
        out["log_diag"] = jnp.broadcast_to(dist.log_diag, (*batch, D))
    return out


@pytest.mark.parametrize("index", INDICES.values(), ids=INDICES.keys())
@pytest.mark.parametrize("kind", FIELDS)
def test_indexing_matches_indexing_the_parameters_by_hand(kind, index):
    dist = DISTS[kind]
    assert dist.batch_shape == BATCH
    got = jax.jit(lambda d: d[index])(dist)
    assert type(got) is type(dist)
    assert got.batch_shape == np.empty(BATCH)[index].shape
    assert got.event_size == D
    ref = _by_hand(dist, index)
    params = _params(got)
    assert params.keys() == ref.keys()
    for name, value in params.items():
        np.testing.assert_array_equal(value, ref[name], err_msg=name)
    if kind.startswith("diag"):
        assert got.param == dist.param


@pytest.mark.parametrize("kind", FIELDS)
def test_boolean_mask_indexes_like_numpy(kind):
    dist = DISTS[kind]
    mask = np.array([[True, False, True]] * 2 + [[False] * 3] * 2)
    got = dist[mask]
    assert got.batch_shape == (4,)
    for name, value in _params(got).items():
        np.testing.assert_array_equal(value, _by_hand(dist, mask)[name], err_msg=name)


@pytest.mark.parametrize("kind", FIELDS)
def test_traced_integer_index_under_jit(kind):
    dist = DISTS[kind]
    got = jax.jit(lambda d, i: d[i, 1])(dist, jnp.int32(2))
    for name, value in _params(got).items():
        np.testing.assert_array_equal(value, _by_hand(dist, (2, 1))[name], err_msg=name)


def test_basic_indexing_keeps_shared_parameters_compact():
    p = DISTS["diag"]  # mean (4, 3, D), std (3, D)
    assert p[0].spread.shape == (3, D)
    assert p[:, 1].spread.shape == (D,)
    assert p[None].spread.shape == (3, D)
    low = DISTS["low_rank"]
    assert low[1:3].factor.shape == (D, R) and low[1:3, 0].log_diag.shape == (D,)
    mix = DISTS["mixture"]  # logits (4, 1, K); components mean (3, K, D), var (K, D)
    assert mix[2].logits.shape == (1, K)
    assert mix[2].components.spread.shape == (K, D)
    assert mix[:, 1].components.mean.shape == (K, D)


@pytest.mark.parametrize(
    "kind_p, kind_q", [("diag", "diag-size1"), ("full", "low_rank"), ("diag", "full")]
)
@pytest.mark.parametrize("index", [0, (slice(1, 3), -1), (Ellipsis, 2), np.array([3, 0])])
def test_kl_of_indexed_pairs_is_the_indexed_kl(kind_p, kind_q, index):
    p, q = DISTS[kind_p], DISTS[kind_q]
    np.testing.assert_allclose(kl(p[index], q[index]), kl(p, q)[index], rtol=1e-6)


def test_a_nested_mixture_index_never_touches_the_component_axis():
    mix = DISTS["mixture"]
    row = mix[1, 2]
    assert row.batch_shape == () and row.num_components == K
    assert row.components.batch_shape == (K,)
    x = jnp.asarray(_f32(5, D))
    np.testing.assert_allclose(row.log_prob(x), mix.log_prob(x[:, None, None, :])[:, 1, 2])


def test_iteration_over_the_leading_batch_axis():
    p = DISTS["full"]
    rows = list(p)
    assert len(rows) == 4 and all(r.batch_shape == (3,) for r in rows)
    np.testing.assert_array_equal(_params(rows[3])["mean"], _by_hand(p, 3)["mean"])


@pytest.mark.invalid_input
@pytest.mark.parametrize(
    "index, error, match",
    [
        ((0, 0, 0), IndexError, r"too many indices: 3 for batch shape \(4, 3\).*event axis"),
        ((Ellipsis, 0, 0, 0), IndexError, "too many indices"),
        ((Ellipsis, Ellipsis), IndexError, "single ellipsis"),
        (4, IndexError, r"index 4 is out of bounds for batch axis 0 with size 4"),
        ((0, -4), IndexError, r"index -4 is out of bounds for batch axis 1 with size 3"),
        (True, TypeError, "bool index"),
    ],
)
@pytest.mark.parametrize("kind", FIELDS)
def test_index_errors(kind, index, error, match):
    with pytest.raises(error, match=match):
        DISTS[kind][index]


@pytest.mark.invalid_input
def test_a_scalar_batch_cannot_be_indexed():
    with pytest.raises(IndexError, match=r"batch shape \(\).*event axis \(size 3\)"):
        DiagGaussian(jnp.zeros(3), jnp.zeros(3))[0]


@pytest.mark.invalid_input
def test_a_subclass_field_without_trailing_axes_is_reported():
    class Tagged(DiagGaussian):
        weight: jax.Array

        def __init__(self, mean, log_var, weight):
            super().__init__(mean, log_var)
            self.weight = jnp.asarray(weight)

    t = Tagged(jnp.zeros((2, 3)), jnp.zeros(3), 1.0)
    with pytest.raises(TypeError, match=r"field '\.weight'.*trailing_axes"):
        t[0]


def test_a_subclass_declaring_its_fields_is_indexed():
    class Weighted(DiagGaussian):
        weight: jax.Array = eqx.field(metadata={"trailing_axes": 0})

        def __init__(self, mean, log_var, weight):
            super().__init__(mean, log_var)
            self.weight = jnp.asarray(weight)

    w = Weighted(jnp.zeros((2, 3)), jnp.zeros(3), jnp.array([1.0, 2.0]))
    assert type(w[1]) is Weighted and float(w[1].weight) == 2.0


# ---------------------------------------------------------------------------------------------
# a stacked batch of distributions: tree_map and vmap (documented in base.py and the README)
# ---------------------------------------------------------------------------------------------


def test_tree_map_stacks_distributions_and_vmap_maps_over_the_stack():
    ps = [DiagGaussian.from_std(_f32(D), _f32(D, low=0.5)) for _ in range(5)]
    qs = [DiagGaussian.from_std(_f32(D), _f32(D, low=0.5)) for _ in range(5)]
    stack_p = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *ps)
    stack_q = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *qs)
    assert stack_p.batch_shape == (5,) and stack_p.param == "std"
    one_by_one = jnp.stack([kl(p, q) for p, q in zip(ps, qs, strict=True)])
    np.testing.assert_allclose(jax.vmap(kl)(stack_p, stack_q), one_by_one, rtol=1e-6)
    np.testing.assert_allclose(kl(stack_p, stack_q), one_by_one, rtol=1e-6)  # broadcasting
    for i in range(5):  # the stack indexes back into its members
        assert eqx.tree_equal(stack_p[i], ps[i])


def test_vmap_with_a_shared_leaf_takes_none_in_in_axes():
    p = DiagGaussian(_f32(6, D), _f32(D))  # spread shared by the batch
    q = DiagGaussian.standard(D)
    axes = eqx.tree_at(lambda d: d.spread, jax.tree_util.tree_map(lambda _: 0, p), None)
    got = jax.vmap(kl, in_axes=(axes, None))(p, q)
    np.testing.assert_allclose(got, kl(p, q), rtol=1e-6)

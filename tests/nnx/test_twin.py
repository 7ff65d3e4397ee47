"""TwinVAE: comparison against compare_posteriors, exact zeros for identical models, coupling
directions and gradients, alignment set after fitting, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

from gkl_jax import DiagGaussian, compare_posteriors, kl  # noqa: E402
from gkl_jax.nnx import VAE, TwinVAE  # noqa: E402

N, D, B = 6, 3, 4
PARAMS = ("log_var", "var", "std")


class Permute(eqx.Module):
    """Stand-in for gkl_jax.Alignment: permutes the latent axes of a DiagGaussian."""

    perm: jax.Array

    def __call__(self, p):
        return DiagGaussian.from_param(
            p.mean[..., self.perm], p.spread[..., self.perm], param=p.param
        )


def vae(seed, param="log_var"):
    return VAE(N, D, hidden=(5,), param=param, rngs=nnx.Rngs(seed))


def data(seed=0):
    return (jax.random.uniform(jax.random.key(seed), (B, N)) < 0.5).astype(jnp.float32)


def grad_leaves(grads, name):
    return [np.asarray(g) for g in jax.tree_util.tree_leaves(nnx.state(getattr(grads, name)))]


@pytest.mark.parametrize("param", PARAMS)
def test_a_model_against_itself_or_an_identical_copy_is_exactly_zero(param):
    x = data()
    model = vae(0, param)
    for twin in (TwinVAE(model, model), TwinVAE(vae(0, param), vae(0, param))):
        c = nnx.jit(lambda t, x: t(x))(twin, x)
        for leaf in (c.kl_ab, c.kl_ba, c.symmetric, c.per_dim_ab, c.per_dim_ba):
            assert np.all(np.asarray(leaf) == 0.0)
    c = compare_posteriors(model.encode(x), model.encode(x))
    assert np.all(np.asarray(c.symmetric) == 0.0)


def test_call_is_compare_posteriors_with_and_without_alignment():
    x = data(1)
    a, b = vae(0), vae(1, "std")
    align = Permute(jnp.array([1, 2, 0]))
    for alignment in (None, align, lambda q: align(q)):
        twin = TwinVAE(a, b, alignment=alignment)
        got = nnx.jit(lambda t, x: t(x))(twin, x)
        want = compare_posteriors(a.encode(x), b.encode(x), alignment=alignment)
        np.testing.assert_allclose(got.kl_ab, want.kl_ab, rtol=1e-6)
        np.testing.assert_allclose(got.per_dim_ba, want.per_dim_ba, rtol=1e-6, atol=1e-7)
    # the aligned comparison is the one of the permuted posterior
    qa, qb = a.encode(x), b.encode(x)
    np.testing.assert_allclose(
        TwinVAE(a, b, alignment=align)(x).kl_ab, kl(align(qa), qb), rtol=1e-6
    )


@pytest.mark.parametrize("coupling", ["a_to_b", "b_to_a", "mutual"])
def test_coupling_values_and_directions(coupling):
    x = data(2)
    twin = TwinVAE(vae(0), vae(1), coupling=coupling, alignment=Permute(jnp.array([2, 1, 0])))
    c = twin(x)
    value = nnx.jit(lambda t, x: t.coupling_loss(x))(twin, x)
    want = {"a_to_b": c.kl_ab, "b_to_a": c.kl_ba, "mutual": c.symmetric}[coupling]
    np.testing.assert_allclose(value, np.mean(np.asarray(want)), rtol=1e-5)
    grads = nnx.jit(nnx.grad(lambda t: t.coupling_loss(x)))(twin)
    ga, gb = grad_leaves(grads, "vae_a"), grad_leaves(grads, "vae_b")
    assert all(np.all(np.isfinite(g)) for g in ga + gb)
    # the teacher's side is held constant: only the student's encoder gets a gradient
    moved_a = any(np.any(g != 0) for g in ga)
    moved_b = any(np.any(g != 0) for g in gb)
    assert (moved_a, moved_b) == {
        "a_to_b": (False, True),
        "b_to_a": (True, False),
        "mutual": (True, True),
    }[coupling]


@pytest.mark.parametrize(
    ("coupling", "param"),
    [("mutual", "log_var"), ("mutual", "var"), ("mutual", "std"), ("a_to_b", "std")],
)
def test_coupling_gradient_is_finite_and_zero_for_identical_copies(coupling, param):
    # "mutual" holds both directions, KL(sg(q_a) || q_b) + KL(sg(q_b) || q_a)
    twin = TwinVAE(vae(0, param), vae(0, param), coupling=coupling)
    x = data(3)
    loss, grads = nnx.jit(nnx.value_and_grad(lambda t: t.coupling_loss(x)))(twin)
    assert float(loss) == 0.0
    leaves = grad_leaves(grads, "vae_a") + grad_leaves(grads, "vae_b")
    assert leaves and all(np.all(g == 0) for g in leaves)


def test_loss_is_both_vae_losses_plus_the_weighted_coupling():
    x = data(4)
    twin = TwinVAE(vae(0), vae(1), coupling="mutual", coupling_weight=0.3)
    key = jax.random.key(5)
    key_a, key_b = jax.random.split(key)
    want = (
        twin.vae_a.loss(x, key=key_a, beta=2.0)
        + twin.vae_b.loss(x, key=key_b, beta=2.0)
        + 0.3 * twin.coupling_loss(x)
    )
    got = nnx.jit(lambda t, x, k: t.loss(x, key=k, beta=2.0))(twin, x, key)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    uncoupled = TwinVAE(twin.vae_a, twin.vae_b, coupling_weight=2)
    np.testing.assert_allclose(
        uncoupled.loss(x, key=key),
        twin.vae_a.loss(x, key=key_a) + twin.vae_b.loss(x, key=key_b),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="no coupling set"):
        uncoupled.coupling_loss(x)


def test_distillation_moves_only_the_student():
    import optax

    x = data(6)
    twin = TwinVAE(vae(0), vae(1), coupling="a_to_b")
    teacher_before = nnx.state(twin.vae_a, nnx.Param)
    optimizer = nnx.Optimizer(twin, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def step(twin, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda t: t.coupling_loss(x))(twin)
        optimizer.update(twin, grads)
        return loss

    first = float(step(twin, optimizer, x))
    for _ in range(20):
        last = float(step(twin, optimizer, x))
    assert last < 0.5 * first, (first, last)
    same = jax.tree_util.tree_map(
        lambda u, v: bool(np.array_equal(u, v)), teacher_before, nnx.state(twin.vae_a, nnx.Param)
    )
    assert all(jax.tree_util.tree_leaves(same))


def test_alignment_set_or_replaced_after_fitting():
    x = data(7)
    twin = TwinVAE(vae(0), vae(1))
    compare = nnx.jit(lambda t, x: t(x))
    plain = compare(twin, x)
    align = Permute(jnp.array([2, 0, 1]))
    twin.alignment = align  # holds arrays: NNX data, not a Param
    paths = {tuple(str(k) for k in p) for p, _ in nnx.to_flat_state(nnx.state(twin))}
    assert ("alignment", "perm") in paths
    params = {tuple(str(k) for k in p) for p, _ in nnx.to_flat_state(nnx.state(twin, nnx.Param))}
    assert not any(p[0] == "alignment" for p in params)
    aligned = compare(twin, x)
    want = compare_posteriors(twin.vae_a.encode(x), twin.vae_b.encode(x), alignment=align)
    np.testing.assert_allclose(aligned.kl_ab, want.kl_ab, rtol=1e-6)
    assert not np.allclose(aligned.kl_ab, plain.kl_ab)
    twin.alignment = lambda q: q  # a function: static
    np.testing.assert_allclose(compare(twin, x).kl_ab, plain.kl_ab, rtol=1e-6)
    twin.alignment = None
    np.testing.assert_allclose(compare(twin, x).kl_ab, plain.kl_ab, rtol=1e-6)


def test_vaes_of_different_sizes():
    with pytest.raises(ValueError, match="differ in latent_dim"):
        TwinVAE(vae(0), VAE(N, D + 1, hidden=(5,), rngs=nnx.Rngs(0)))


@pytest.mark.invalid_input
def test_bad_coupling():
    with pytest.raises(ValueError, match="coupling must be one of"):
        TwinVAE(vae(0), vae(1), coupling="both")

"""VAE: shapes and dtypes, the ELBO terms against a NumPy forward pass, the Monte Carlo KL to a
mixture prior against quadrature, training, state paths, keys and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx")

from gkl_jax import DiagGaussian, FullGaussian, GaussianMixture  # noqa: E402
from gkl_jax.nnx import VAE, ELBOTerms, MixturePrior  # noqa: E402

PARAMS = ("log_var", "var", "std")
N, D, B = 6, 2, 4


def binary_data(seed, shape):
    return (jax.random.uniform(jax.random.key(seed), shape) < 0.4).astype(jnp.float32)


def _w(layer):
    return np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64)


def np_forward(model, x, eps):
    """The VAE's forward pass by hand in float64 (relu MLPs with one hidden layer)."""
    x = np.asarray(x, np.float64)
    (w1, b1), (wm, bm), (ws, bs) = (
        _w(model.encoder.layers[0]),
        _w(model.head.mean),
        _w(model.head.spread),
    )
    h = np.maximum(x @ w1 + b1, 0.0)
    mean, raw = h @ wm + bm, h @ ws + bs
    var = np.exp(raw) if model.head.param == "log_var" else np.logaddexp(0.0, raw)
    if model.head.param == "std":
        var = var**2
    z = mean + np.sqrt(var) * eps
    (wd, bd), (wo, bo) = _w(model.decoder.layers[0]), _w(model.output)
    out = np.maximum(z @ wd + bd, 0.0) @ wo + bo
    return mean, var, out


def np_bernoulli(x, logits):
    x = np.asarray(x, np.float64)
    return np.sum(-x * np.logaddexp(0.0, -logits) - (1 - x) * np.logaddexp(0.0, logits), -1)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(param, dtype):
    model = VAE(N, D, hidden=(5,), param=param, rngs=nnx.Rngs(0))
    x = binary_data(0, (B, N)).astype(dtype)
    q = model.encode(x)
    assert isinstance(q, DiagGaussian) and q.param == param
    assert q.batch_shape == (B,) and q.event_size == D and q.dtype == jnp.float32
    assert model.decode(q.mean).shape == (B, N)
    out, q2 = model(x, key=jax.random.key(0))
    assert out.shape == (B, N) and q2.batch_shape == (B,)
    terms = nnx.jit(lambda m, x, k: m.elbo_terms(x, key=k))(model, x, jax.random.key(1))
    assert isinstance(terms, ELBOTerms)
    for v in (terms.reconstruction, terms.kl, terms.elbo):
        assert v.shape == (B,) and v.dtype == jnp.float32 and np.all(np.isfinite(v))
    assert terms.kl_stderr is None and terms.reconstruction_stderr is None
    np.testing.assert_array_equal(terms.elbo, terms.reconstruction - terms.kl)


def test_extra_batch_axes_and_several_draws():
    model = VAE(N, D, hidden=(5,), rngs=nnx.Rngs(0))
    x = binary_data(1, (2, 3, N))
    terms = nnx.jit(lambda m, x: m.elbo_terms(x, key=jax.random.key(0), num_samples=8))(model, x)
    assert terms.kl.shape == (2, 3) and terms.reconstruction_stderr.shape == (2, 3)
    assert np.all(np.asarray(terms.reconstruction_stderr) > 0)


@pytest.mark.parametrize("param", PARAMS)
def test_elbo_terms_match_numpy_forward_pass(param):
    model = VAE(N, D, hidden=(5,), param=param, rngs=nnx.Rngs(3))
    x = binary_data(2, (B, N))
    key = jax.random.key(7)
    terms = nnx.jit(lambda m, x, k: m.elbo_terms(x, key=k))(model, x, key)
    eps = np.asarray(jax.random.normal(jax.random.split(key)[0], (1, B, D)), np.float64)[0]
    mean, var, logits = np_forward(model, x, eps)
    rec = np_bernoulli(x, logits)
    kl = 0.5 * np.sum(mean**2 + var - 1.0 - np.log(var), -1)
    np.testing.assert_allclose(terms.reconstruction, rec, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.elbo, rec - kl, rtol=1e-5, atol=1e-5)
    beta = 0.5
    np.testing.assert_allclose(
        model.loss(x, key=key, beta=beta), np.mean(beta * kl - rec), rtol=1e-5
    )


def test_gaussian_likelihood_and_diag_prior_match_numpy():
    prior_mean, prior_lv = np.array([0.5, -1.0]), np.array([0.3, -0.2])
    prior = DiagGaussian(jnp.asarray(prior_mean, jnp.float32), jnp.asarray(prior_lv, jnp.float32))
    model = VAE(
        N, D, hidden=(5,), likelihood="gaussian", obs_log_var=-1, prior=prior, rngs=nnx.Rngs(4)
    )
    x = jax.random.normal(jax.random.key(5), (B, N))
    key = jax.random.key(8)
    terms = nnx.jit(lambda m, x, k: m.elbo_terms(x, key=k))(model, x, key)
    eps = np.asarray(jax.random.normal(jax.random.split(key)[0], (1, B, D)), np.float64)[0]
    mean, var, out = np_forward(model, x, eps)
    s = np.exp(-1.0)
    rec = -0.5 * np.sum((np.asarray(x, np.float64) - out) ** 2 / s + np.log(2 * np.pi * s), -1)
    vp = np.exp(prior_lv)
    kl = 0.5 * np.sum((mean - prior_mean) ** 2 / vp + var / vp - 1 - np.log(var / vp), -1)
    np.testing.assert_allclose(terms.reconstruction, rec, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-6)
    assert terms.kl_stderr is None
    # bfloat16 data: the same terms, computed in float32
    t16 = model.elbo_terms(x.astype(jnp.bfloat16), key=key)
    assert t16.reconstruction.dtype == jnp.float32 and t16.kl.dtype == jnp.float32
    np.testing.assert_allclose(t16.kl, terms.kl, rtol=2e-2)


def np_kl_to_mixture_1d(mean, var, w, mu_k, var_k):
    """KL(N(mean, var) || sum_k w_k N(mu_k, var_k)) in 1-D by trapezoid quadrature (float64)."""
    t = np.linspace(mean - 14 * np.sqrt(var), mean + 14 * np.sqrt(var), 40001)
    log_q = -0.5 * ((t - mean) ** 2 / var + np.log(2 * np.pi * var))
    comp = -0.5 * ((t[:, None] - mu_k) ** 2 / var_k + np.log(2 * np.pi * var_k)) + np.log(w)
    log_m = np.logaddexp.reduce(comp, axis=-1)
    return np.trapezoid(np.exp(log_q) * (log_q - log_m), t)


@pytest.mark.parametrize("prior_kind", ["fixed", "learned"])
def test_mixture_prior_kl_is_an_honest_monte_carlo_estimate(prior_kind):
    if prior_kind == "fixed":
        comps = DiagGaussian(jnp.array([[-1.5], [1.0], [0.0]]), jnp.array([[0.0], [-1.0], [0.5]]))
        prior = GaussianMixture(jnp.array([0.2, -0.3, 0.0]), comps)
    else:
        prior = "mixture"
    model = VAE(4, 1, hidden=(4,), prior=prior, num_components=3, kl_samples=256, rngs=nnx.Rngs(5))
    x = binary_data(3, (B, 4))
    terms = nnx.jit(lambda m, x, k: m.elbo_terms(x, key=k))(model, x, jax.random.key(11))
    assert terms.kl_stderr is not None and terms.kl_stderr.shape == (B,)
    assert np.all(np.asarray(terms.kl_stderr) > 0)
    q = model.encode(x)
    mix = model.prior_distribution()
    w = np.asarray(jax.nn.softmax(mix.logits), np.float64)
    mu_k = np.asarray(mix.components.mean[:, 0], np.float64)
    var_k = np.asarray(mix.components.var[:, 0], np.float64)
    mean, var = np.asarray(q.mean[:, 0], np.float64), np.asarray(q.var[:, 0], np.float64)
    ref = np.array([np_kl_to_mixture_1d(mean[i], var[i], w, mu_k, var_k) for i in range(B)])
    err = np.abs(np.asarray(terms.kl, np.float64) - ref)
    assert np.all(err <= 4 * np.asarray(terms.kl_stderr) + 1e-6), (terms.kl, ref, terms.kl_stderr)
    if prior_kind == "fixed":
        return
    # the gradient reaches the encoder and the learned prior, and is finite
    grads = nnx.jit(nnx.grad(lambda m: m.loss(x, key=jax.random.key(1))))(model)
    leaves = jax.tree_util.tree_leaves(nnx.state(grads))
    assert leaves and all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert np.any(np.asarray(grads.prior.mean[...]) != 0)


def test_training_lowers_the_loss():
    model = VAE(12, 2, hidden=(16,), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x = binary_data(4, (64, 12))

    @nnx.jit
    def train_step(model, optimizer, x, key):
        loss, grads = nnx.value_and_grad(lambda m: m.loss(x, key=key))(model)
        optimizer.update(model, grads)
        return loss

    evaluate = nnx.jit(lambda m, x: m.loss(x, key=jax.random.key(99)))
    before = float(evaluate(model, x))
    for step in range(50):
        train_step(model, optimizer, x, jax.random.key(step))
    after = float(evaluate(model, x))
    assert np.isfinite(after) and after < before - 1.0, (before, after)


def test_state_paths_of_fixed_and_learned_priors():
    prior = DiagGaussian(jnp.ones(D), jnp.zeros(D))
    model = VAE(N, D, hidden=(5,), prior=prior, rngs=nnx.Rngs(0))
    paths = {tuple(str(k) for k in p) for p, _ in nnx.to_flat_state(nnx.state(model))}
    assert {("prior", "mean"), ("prior", "spread")} <= paths
    params = {tuple(str(k) for k in p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert not any(p[0] == "prior" for p in params)  # fixed: not trained
    assert ("head", "spread", "kernel") in params
    # an optimizer step leaves the fixed prior alone
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    x = binary_data(0, (B, N))
    grads = nnx.jit(nnx.grad(lambda m: m.loss(x, key=jax.random.key(0))))(model)
    optimizer.update(model, grads)
    np.testing.assert_array_equal(model.prior.mean, np.ones(D))

    learned = VAE(N, D, hidden=(5,), prior="mixture", num_components=3, rngs=nnx.Rngs(0))
    assert isinstance(learned.prior, MixturePrior)
    params = {tuple(str(k) for k in p) for p, _ in nnx.to_flat_state(nnx.state(learned, nnx.Param))}
    assert {("prior", "logits"), ("prior", "mean"), ("prior", "log_var")} <= params
    assert learned.prior().num_components == 3


def test_keys_from_the_sample_stream():
    model = VAE(N, D, hidden=(5,), rngs=nnx.Rngs(0))
    x = binary_data(5, (B, N))
    step = nnx.jit(lambda m, x: m.elbo_terms(x))
    a, b = step(model, x), step(model, x)
    assert not np.array_equal(a.reconstruction, b.reconstruction)  # the stream advanced
    no_stream = VAE(N, D, hidden=(5,), rngs=nnx.Rngs(params=0))
    with pytest.raises(ValueError, match="pass key="):
        no_stream.loss(x)
    assert np.isfinite(float(nnx.jit(lambda m, x: m.loss(x, key=jax.random.key(0)))(no_stream, x)))


def test_no_hidden_layers():
    model = VAE(N, D, hidden=(), param="std", rngs=nnx.Rngs(0))
    assert model.elbo_terms(binary_data(6, (B, N)), key=jax.random.key(0)).kl.shape == (B,)


def test_bad_options():
    with pytest.raises(ValueError, match="kl_samples must be even"):
        VAE(N, D, prior="mixture", kl_samples=7, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="latent size 3 differs"):
        VAE(N, D, prior=DiagGaussian(jnp.zeros(3), jnp.zeros(3)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="batch shape"):
        VAE(N, D, prior=DiagGaussian(jnp.zeros((2, D)), jnp.zeros((2, D))), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match='prior must be None, "mixture"'):
        VAE(N, D, prior="vamp", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="prior must be None"):
        VAE(N, D, prior=FullGaussian(jnp.zeros(D), jnp.eye(D)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="log_var_bounds"):
        VAE(N, D, log_var_bounds=(1.0, -1.0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="num_samples"):
        VAE(N, D, rngs=nnx.Rngs(0)).elbo_terms(jnp.ones((B, N)), num_samples=0)


@pytest.mark.invalid_input
def test_bad_likelihood_and_param():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(N, D, likelihood="poisson", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="param must be one of"):
        VAE(N, D, param="scale", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="obs_log_var"):
        VAE(N, D, likelihood="gaussian", obs_log_var="fixed", rngs=nnx.Rngs(0))

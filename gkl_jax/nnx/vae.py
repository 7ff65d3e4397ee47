"""``VAE``: an MLP variational auto-encoder whose KL term comes from gkl_jax, and ``ELBOTerms``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src.distributions.diag import DiagGaussian, Param
from gkl_jax._src.distributions.mixture import GaussianMixture
from gkl_jax._src.kl.diag import kl_diag_standard
from gkl_jax._src.kl.registry import kl
from gkl_jax._src.monte_carlo import kl_mc
from gkl_jax.nnx.head import GaussianHead, Number, check_log_var_bounds
from gkl_jax.nnx.prior import MixturePrior

__all__ = ["VAE", "ELBOTerms"]

_LIKELIHOODS = ("bernoulli", "gaussian")


class ELBOTerms(NamedTuple):
    """The per-example terms of the evidence lower bound (a pytree), shape ``batch``.

    Attributes:
      reconstruction: ``E_q[log p(x | z)]`` estimated from ``num_samples`` reparameterized draws
        ``z ~ q(z | x)`` (unbiased).
      kl: ``KL(q(z | x) || p(z))``: exact (closed form) for a standard-normal or DiagGaussian
        prior; a :func:`gkl_jax.kl_mc` estimate (unbiased) for a mixture prior.
      elbo: ``reconstruction - kl``.
      kl_stderr: the standard error of ``kl`` when it is estimated, ``None`` when it is exact.
      reconstruction_stderr: the standard error of ``reconstruction`` over its draws when
        ``num_samples >= 2``; ``None`` for a single draw (an unbiased estimate whose spread one
        draw cannot measure).
    """

    reconstruction: Float[Array, "*b"]
    kl: Float[Array, "*b"]
    elbo: Float[Array, "*b"]
    kl_stderr: Float[Array, "*b"] | None
    reconstruction_stderr: Float[Array, "*b"] | None


def _mlp(sizes: Sequence[int], activation: Callable, dtype, param_dtype, rngs) -> nnx.Sequential:
    """Linear layers between consecutive ``sizes``, each followed by ``activation``."""
    layers: list[Any] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers.append(nnx.Linear(n_in, n_out, dtype=dtype, param_dtype=param_dtype, rngs=rngs))
        layers.append(activation)
    return nnx.Sequential(*layers)


def _sample_stream(rngs: nnx.Rngs) -> Any:
    """A forked ``sample`` stream (or ``default``) of ``rngs``, or ``None`` if it has neither."""
    try:
        return rngs["sample"].fork()
    except KeyError:
        return None


def _check_prior(latent_dim: int, prior: Any) -> None:
    if not isinstance(prior, DiagGaussian | GaussianMixture | MixturePrior):
        raise TypeError(
            'VAE: prior must be None (standard normal), "mixture", a DiagGaussian, a '
            f"GaussianMixture or a MixturePrior, got {type(prior).__name__}"
        )
    if prior.event_size != latent_dim:
        raise ValueError(
            f"VAE: the prior's latent size {prior.event_size} differs from latent_dim={latent_dim}"
        )
    batch = () if isinstance(prior, MixturePrior) else prior.batch_shape
    if batch != ():
        raise ValueError(f"VAE: the prior must have batch shape (), got {batch}")


class VAE(nnx.Module):
    r"""A variational auto-encoder: MLP encoder, :class:`GaussianHead`, MLP decoder.

    ``encode(x)`` gives ``q(z | x)`` as a :class:`~gkl_jax.DiagGaussian` in the chosen
    parametrization; a reparameterized draw ``z = mean + std * eps`` is decoded into Bernoulli
    logits or Gaussian means. The KL term comes from gkl_jax, never hand-written here:

    * ``prior=None`` (standard normal): :func:`gkl_jax.kl_diag_standard`, exact;
    * a :class:`~gkl_jax.DiagGaussian` prior (fixed, held as NNX data: state paths
      ``prior/mean``, ``prior/spread``): :func:`gkl_jax.kl`, exact;
    * ``prior="mixture"`` (a :class:`MixturePrior` of ``num_components`` learned components,
      ``nnx.Param``), a :class:`MixturePrior` instance, or a fixed
      :class:`~gkl_jax.GaussianMixture`: no closed form, so :func:`gkl_jax.kl_mc` with
      ``kl_samples`` draws per example (antithetic pairs and control variates); the standard
      error is reported in :attr:`ELBOTerms.kl_stderr`. Gradients reach the encoder through the
      reparameterized draws and the prior's parameters through its log-density.

    Likelihoods, per example (summed over the ``in_features`` data dimensions):

    * ``"bernoulli"``: ``decode`` returns logits;
      ``log p(x | z) = sum[x log sigmoid(l) + (1 - x) log sigmoid(-l)]`` (for ``x`` in [0, 1]);
    * ``"gaussian"``: ``decode`` returns means; ``log p(x | z) = log N(x; mean, diag(s))`` with an
      observation log-variance ``log s`` per data dimension, an ``nnx.Param`` starting at 0 when
      ``obs_log_var="learned"`` (default), or the fixed number given.

    Args:
      in_features: data size ``n`` (inputs are ``(*batch, n)`` float arrays).
      latent_dim: latent size ``d``.
      hidden: hidden layer sizes of the encoder; the decoder uses them reversed.
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      param: the posterior's parametrization, ``"log_var"``, ``"var"`` or ``"std"`` (see
        :class:`GaussianHead`).
      prior: ``None``, ``"mixture"``, a DiagGaussian, a GaussianMixture or a MixturePrior (see
        above), with event size ``latent_dim`` and batch shape ``()``.
      num_components: components of the learned prior for ``prior="mixture"``.
      kl_samples: Monte Carlo draws per example for a mixture prior (even, >= 4). The standard
        error of :func:`gkl_jax.kl_mc` is calibrated from about 256 draws on and can be ~20%
        short at 64 or fewer; the default 32 is a training-speed choice -- evaluate with more.
      log_var_bounds: optional bounds on the posterior log-variance (see :class:`GaussianHead`).
      obs_log_var: ``"learned"`` or a fixed float (Gaussian likelihood only).
      activation: the hidden layers' nonlinearity.
      dtype: computation dtype of the linear layers.
      param_dtype: weight dtype of the linear layers.
      rngs: the ``nnx.Rngs`` for the weights; its ``sample`` stream (or ``default``) is forked
        for the draws when no ``key`` is passed to the methods.

    Raises:
      ValueError: unknown ``likelihood``/``param``/``prior`` string, a prior of another latent
        size or with a batch shape, ``kl_samples`` odd or < 4, bad ``log_var_bounds``.
      TypeError: ``prior`` of an unsupported type.

    Example:
      A jitted train step with ``nnx.Optimizer`` and optax:

      >>> import jax, jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> from gkl_jax.nnx import VAE
      >>> model = VAE(8, 2, hidden=(16,), rngs=nnx.Rngs(0))
      >>> optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
      >>> @nnx.jit
      ... def train_step(model, optimizer, x, key):
      ...     loss, grads = nnx.value_and_grad(lambda m: m.loss(x, key=key))(model)
      ...     optimizer.update(model, grads)
      ...     return loss
      >>> x = (jax.random.uniform(jax.random.key(1), (32, 8)) < 0.5).astype(jnp.float32)
      >>> losses = [train_step(model, optimizer, x, jax.random.key(i)) for i in range(3)]
      >>> terms = model.elbo_terms(x, key=jax.random.key(0))
      >>> terms.kl.shape, terms.kl_stderr is None  # exact KL to N(0, I)
      ((32,), True)
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        hidden: Sequence[int] = (256,),
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        param: Param = "log_var",
        prior: Any = None,
        num_components: int = 10,
        kl_samples: int = 32,
        log_var_bounds: tuple[Number, Number] | None = None,
        obs_log_var: Number | Literal["learned"] = "learned",
        activation: Callable[[Array], Array] = jax.nn.relu,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        fn = "VAE"
        if likelihood not in _LIKELIHOODS:
            raise ValueError(f"{fn}: likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
        if isinstance(kl_samples, bool) or not isinstance(kl_samples, int):
            raise TypeError(f"{fn}: kl_samples must be an int, got {kl_samples!r}")
        if kl_samples < 4 or kl_samples % 2:
            raise ValueError(
                f"{fn}: kl_samples must be even and >= 4 (antithetic pairs), got {kl_samples}"
            )
        if isinstance(prior, str):
            if prior != "mixture":
                raise ValueError(
                    f'{fn}: prior must be None, "mixture" or a distribution, got {prior!r}'
                )
        elif prior is not None:
            _check_prior(latent_dim, prior)
        if param not in ("log_var", "var", "std"):
            raise ValueError(f"{fn}: param must be one of ('log_var', 'var', 'std'), got {param!r}")
        check_log_var_bounds(fn, log_var_bounds)
        if obs_log_var != "learned" and (
            isinstance(obs_log_var, bool) or not isinstance(obs_log_var, int | float)
        ):
            raise ValueError(
                f'{fn}: obs_log_var must be "learned" or a number, got {obs_log_var!r}'
            )
        hidden = tuple(int(h) for h in hidden)
        self.in_features = in_features
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.kl_samples = kl_samples
        self.encoder = _mlp((in_features, *hidden), activation, dtype, param_dtype, rngs)
        self.head = GaussianHead(
            hidden[-1] if hidden else in_features,
            latent_dim,
            param=param,
            log_var_bounds=log_var_bounds,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.decoder = _mlp((latent_dim, *hidden[::-1]), activation, dtype, param_dtype, rngs)
        self.output = nnx.Linear(
            hidden[0] if hidden else latent_dim,
            in_features,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        if likelihood == "gaussian":
            if obs_log_var == "learned":
                self.obs_log_var = nnx.Param(jnp.zeros((in_features,), jnp.float32))
            else:
                self.obs_log_var = nnx.data(jnp.full((in_features,), obs_log_var, jnp.float32))
        else:
            self.obs_log_var = nnx.data(None)
        if isinstance(prior, str):
            prior = MixturePrior(latent_dim, num_components, rngs=rngs)
        self.prior = nnx.data(prior)
        stream = _sample_stream(rngs)
        self.rngs = nnx.data(stream)

    # --- the model ------------------------------------------------------------------------
    def encode(self, x: Float[ArrayLike, "*b n"]) -> DiagGaussian:
        """The posterior ``q(z | x)``: a DiagGaussian with batch shape ``batch``, event ``d``."""
        return self.head(self.encoder(jnp.asarray(x)))

    def decode(self, z: Float[ArrayLike, "*b d"]) -> Float[Array, "*b n"]:
        """Bernoulli logits or Gaussian means of ``p(x | z)``, shape ``(*batch, in_features)``."""
        return self.output(self.decoder(jnp.asarray(z)))

    def __call__(
        self, x: Float[ArrayLike, "*b n"], *, key: jax.Array | None = None
    ) -> tuple[Float[Array, "*b n"], DiagGaussian]:
        """``(decode(z), q)`` for one reparameterized draw ``z ~ q = encode(x)``."""
        q = self.encode(x)
        return self.decode(q.sample(self._key("__call__", key))), q

    def prior_distribution(self) -> DiagGaussian | GaussianMixture:
        """The prior ``p(z)`` as a gkl_jax distribution (``N(0, I)`` when ``prior=None``)."""
        if self.prior is None:
            return DiagGaussian.standard(self.latent_dim)
        if isinstance(self.prior, MixturePrior):
            return self.prior()
        return self.prior

    def log_likelihood(
        self, x: Float[ArrayLike, "*b n"], decoded: Float[Array, "*s n"]
    ) -> Float[Array, "*s"]:
        """``log p(x | z)`` summed over the data axis, from ``decoded = decode(z)``.

        ``decoded`` may carry leading sample axes in front of ``x``'s batch axes.
        """
        x = jnp.asarray(x)
        x = x.reshape((1,) * (decoded.ndim - x.ndim) + x.shape)
        out = decoded.astype(jnp.promote_types(decoded.dtype, jnp.float32))
        if self.likelihood == "bernoulli":
            x = x.astype(out.dtype)
            terms = x * jax.nn.log_sigmoid(out) + (1 - x) * jax.nn.log_sigmoid(-out)
            return jnp.sum(terms, axis=-1)
        obs = self.obs_log_var[...]
        return DiagGaussian(out, obs.reshape((1,) * (out.ndim - 1) + obs.shape)).log_prob(x)

    def kl_to_prior(
        self, q: DiagGaussian, *, key: jax.Array | None = None
    ) -> tuple[Float[Array, "*b"], Float[Array, "*b"] | None]:
        """``(KL(q || prior), stderr)``: exact with ``stderr=None``, or a Monte Carlo estimate.

        The key is used (and needed) only for a mixture prior.
        """
        if self.prior is None:
            return kl_diag_standard(q.mean, q.spread, param=q.param), None
        if isinstance(self.prior, DiagGaussian):
            return kl(q, self.prior), None
        est = kl_mc(
            self._key("kl_to_prior", key),
            q,
            self.prior_distribution(),
            num_samples=self.kl_samples,
        )
        return est.value, est.stderr

    def elbo_terms(
        self,
        x: Float[ArrayLike, "*b n"],
        *,
        key: jax.Array | None = None,
        num_samples: int = 1,
    ) -> ELBOTerms:
        """The per-example ELBO terms (see :class:`ELBOTerms`), each of shape ``batch``.

        Args:
          x: ``(*batch, in_features)`` data (0/1 floats for the Bernoulli likelihood).
          key: PRNG key, split in two: the first draws ``z = q.sample(key_z, (num_samples,))``,
            the second the Monte Carlo KL (mixture priors). Default: the model's ``sample``
            stream.
          num_samples: latent draws for the reconstruction term (static); with 2 or more its
            standard error is reported.

        Returns:
          ``ELBOTerms(reconstruction, kl, elbo, kl_stderr, reconstruction_stderr)``.

        Raises:
          ValueError: no key and no ``sample``/``default`` stream; ``num_samples < 1``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"VAE.elbo_terms: num_samples must be an int >= 1, got {num_samples}")
        key_z, key_kl = jax.random.split(self._key("elbo_terms", key))
        q = self.encode(x)
        z = q.sample(key_z, (num_samples,))  # (S, *batch, d)
        log_lik = self.log_likelihood(x, self.decode(z))  # (S, *batch)
        reconstruction = jnp.mean(log_lik, axis=0)
        rec_stderr = None
        if num_samples > 1:
            rec_stderr = jnp.std(log_lik, axis=0, ddof=1) / jnp.sqrt(num_samples)
        kl_value, kl_stderr = self.kl_to_prior(q, key=key_kl)
        kl_value = jnp.broadcast_to(kl_value, reconstruction.shape)
        if kl_stderr is not None:
            kl_stderr = jnp.broadcast_to(kl_stderr, reconstruction.shape)
        return ELBOTerms(reconstruction, kl_value, reconstruction - kl_value, kl_stderr, rec_stderr)

    def loss(
        self, x: Float[ArrayLike, "*b n"], *, key: jax.Array | None = None, beta: ArrayLike = 1.0
    ) -> Float[Array, ""]:
        """Mean over the batch of ``beta * kl - reconstruction`` (``beta = 1``: the negative
        ELBO; ``beta != 1``: the beta-VAE objective), from one latent draw per example."""
        terms = self.elbo_terms(x, key=key)
        return jnp.mean(beta * terms.kl - terms.reconstruction)

    def _key(self, fn: str, key: jax.Array | None) -> jax.Array:
        if key is not None:
            return key
        if self.rngs is None:
            raise ValueError(
                f"VAE.{fn}: pass key=..., or build the VAE with an nnx.Rngs that has a 'sample' "
                "or 'default' stream"
            )
        return self.rngs()

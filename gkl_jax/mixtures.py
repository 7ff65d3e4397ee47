r"""Gaussian mixtures, and the Hershey & Olsen (2007) closed-form approximations of their KL.

A mixture ``f(x) = sum_a pi_a f_a(x)`` has no closed-form KL divergence to a Gaussian or to another
mixture (this is the VampPrior / mixture-prior case). Two ways to get a number:

* :func:`gkl_jax.kl_mc` estimates ``KL(p || q)`` by Monte Carlo, with a standard error, for any
  mixture or Gaussian ``p`` and ``q``: the tool to trust.
* :func:`kl_mixture_variational` and :func:`kl_mixture_upper_bound` are deterministic and cheap
  (``O(K_p (K_p + K_q) d)``) closed forms built from the pairwise component KLs. The first is an
  *approximation* (it can be above or below the truth); the second is a guaranteed *upper bound*.
  Both are exact when each side has a single component.

Components are stored stacked on a component axis, the last batch axis of ``components``:
``components.batch_shape == (*batch, K)`` and ``logits.shape == (*batch, K)`` (batch axes
broadcast).

Reference:
  J. R. Hershey and P. A. Olsen, "Approximating the Kullback Leibler divergence between Gaussian
  mixture models", ICASSP 2007.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax import checks
from gkl_jax._numerics import align_ranks, as_float_arrays
from gkl_jax.gaussians import DiagGaussian
from gkl_jax.kl import kl

__all__ = ["GaussianMixture", "kl_mixture_upper_bound", "kl_mixture_variational"]


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
    r"""Mixture ``sum_k softmax(logits)_k N(mean_k, diag(var_k))``, batched over leading axes.

    Args:
      logits: ``(*batch, K)`` unnormalized log mixture weights.
      components: a :class:`~gkl_jax.DiagGaussian` with batch shape ``(*batch, K)``: the ``K``
        components stacked on its last batch axis (batch axes broadcast against ``logits``').

    Raises:
      TypeError: ``logits`` is not a floating-point array, or ``components`` is not a
        DiagGaussian.
      ValueError: ``logits`` is a scalar, ``components`` has no component axis, the numbers of
        components differ, or the batch shapes do not broadcast.

    Sampling draws the component index ``c ~ Categorical(softmax(logits))`` and then
    ``x = mean_c + std_c * eps``: gradients of samples flow to the component means and spreads,
    not to the logits (a discrete choice is not reparameterizable; :func:`gkl_jax.kl_mc` adds the
    score-function term for them).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, GaussianMixture
      >>> comps = DiagGaussian(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.zeros((2, 2)))
      >>> mix = GaussianMixture(jnp.zeros(2), comps)  # two equal-weight components in 2-D
      >>> mix.batch_shape, mix.event_size, mix.num_components
      ((), 2, 2)
      >>> mix.log_prob(jnp.zeros(2))  # = log N(1; 0, 1) + log N(0; 0, 1)
      Array(-2.337877, dtype=float32)
      >>> mix.sample(jax.random.key(0), (5,)).shape
      (5, 2)
    """

    __slots__ = ("components", "logits")
    logits: jax.Array
    components: DiagGaussian

    def __init__(self, logits: Float[ArrayLike, "*b k"], components: DiagGaussian):
        fn = "GaussianMixture"
        (logits,) = as_float_arrays(fn, ("logits",), (logits,))
        if not isinstance(components, DiagGaussian):
            raise TypeError(
                f"{fn}: components must be a DiagGaussian with the components stacked on its "
                f"last batch axis, got {type(components).__name__}"
            )
        if logits.ndim == 0:
            raise ValueError(f"{fn}: 'logits' is a scalar; it needs a component axis (K,)")
        cshape = components.batch_shape
        if len(cshape) == 0:
            raise ValueError(
                f"{fn}: 'components' has batch shape (); stack the K components on a leading "
                "axis, e.g. means of shape (K, d)"
            )
        if logits.shape[-1] != cshape[-1]:
            raise ValueError(
                f"{fn}: numbers of components differ: 'logits' has shape {logits.shape} and "
                f"'components' has batch shape {cshape} ({logits.shape[-1]} vs {cshape[-1]})"
            )
        try:
            jnp.broadcast_shapes(logits.shape[:-1], cshape[:-1])
        except ValueError:
            raise ValueError(
                f"{fn}: batch shapes do not broadcast: 'logits' has shape {logits.shape} and "
                f"'components' has batch shape {cshape}"
            ) from None
        checks.check_finite(fn, "logits", logits)
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "components", components)

    def tree_flatten(self):
        return (self.logits, self.components), None

    @classmethod
    def tree_unflatten(cls, _, children):
        self = object.__new__(cls)
        object.__setattr__(self, "logits", children[0])
        object.__setattr__(self, "components", children[1])
        return self

    def __setattr__(self, name, value):
        raise AttributeError(f"GaussianMixture is immutable; cannot set '{name}'")

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(batch_shape={self.batch_shape}, num_components="
            f"{self.num_components}, event_size={self.event_size}, dtype={self.dtype})"
        )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(jnp.broadcast_shapes(self.logits.shape[:-1], self.components.batch_shape[:-1]))

    @property
    def event_size(self) -> int:
        return self.components.event_size

    @property
    def num_components(self) -> int:
        return self.logits.shape[-1]

    @property
    def dtype(self):
        return jnp.promote_types(self.logits.dtype, self.components.dtype)

    @property
    def log_weights(self) -> Float[Array, "*b k"]:
        """Normalized log mixture weights ``log_softmax(logits)``."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    def log_prob(self, x: Float[ArrayLike, "*s d"]) -> Float[Array, "*s"]:
        """``log sum_k w_k N(x; mean_k, var_k)``, by ``logsumexp`` over the components.

        Args:
          x: ``(*sample, d)`` points; leading axes broadcast against the batch shape.

        Returns:
          The log-density, with the broadcast leading shape.

        Raises:
          TypeError: ``x`` is not a floating-point array.
          ValueError: ``x``'s last axis is not the event size, or its leading axes do not
            broadcast against the batch shape (at trace time; the message names both shapes).
        """
        fn = "GaussianMixture.log_prob"
        (x,) = as_float_arrays(fn, ("x",), (x,))
        checks.check_event_shapes(
            fn, ("mixture", "x"), ((*self.batch_shape, self.event_size), x.shape)
        )
        comp = self.components.log_prob(x[..., None, :])  # (*s, *batch, K)
        comp, log_w = align_ranks(comp, self.log_weights)
        return jax.nn.logsumexp(comp + log_w, axis=-1)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> Float[Array, "..."]:
        """Samples of shape ``(*sample_shape, *batch, d)`` (reparameterized given the component)."""
        loc, scale, eps, _ = self._sample_parts(key, sample_shape)
        return loc + scale * eps

    def _sample_parts(self, key: jax.Array, sample_shape: tuple[int, ...]):
        """``(loc, scale, eps, c)`` with ``x = loc + scale * eps`` for the chosen components ``c``.

        ``c`` has shape ``(*sample_shape, *batch)``; ``loc``, ``scale`` and ``eps`` have shape
        ``(*sample_shape, *batch, d)``. ``-eps`` gives the antithetic partner in the same component.
        """
        batch, k, d = self.batch_shape, self.num_components, self.event_size
        key_c, key_eps = jax.random.split(key)
        logits = jnp.broadcast_to(self.logits, (*batch, k))
        c = jax.random.categorical(key_c, logits, axis=-1, shape=(*sample_shape, *batch))
        eps = jax.random.normal(key_eps, (*sample_shape, *batch, d), self.components.dtype)
        full = (*batch, k, d)
        mean = jnp.broadcast_to(self.components.mean, full)
        std = jnp.broadcast_to(self.components.std, full)
        idx = c.reshape(*c.shape, 1, 1)
        mean, std, idx = align_ranks(mean, std, idx)
        loc = jnp.take_along_axis(mean, idx, axis=-2)[..., 0, :]
        scale = jnp.take_along_axis(std, idx, axis=-2)[..., 0, :]
        return loc, scale, eps, c


Mixable = GaussianMixture | DiagGaussian


def _static_int(fn: str, name: str, value: Any) -> int:
    """A static integer option: a Python or NumPy int (not a bool, a float or an array)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{fn}: {name} must be a Python int, got {type(value).__name__} {value!r}")
    return int(value)


def _as_mixture(fn: str, name: str, dist: Any) -> GaussianMixture:
    """A DiagGaussian as a one-component mixture; a mixture as is."""
    if isinstance(dist, GaussianMixture):
        return dist
    if isinstance(dist, DiagGaussian):
        comps = jax.tree_util.tree_map(lambda a: a[..., None, :], dist)
        return GaussianMixture(jnp.zeros((1,), dist.dtype), comps)
    raise TypeError(
        f"{fn}: '{name}' must be a GaussianMixture or a DiagGaussian, got {type(dist).__name__}"
    )


def _pairwise_kl(f: GaussianMixture, g: GaussianMixture) -> jax.Array:
    """``KL(f_a || g_b)`` for all component pairs: shape ``(*batch, K_f, K_g)``."""

    def expand(comp: DiagGaussian, axis: int) -> DiagGaussian:
        full = (*comp.batch_shape, comp.event_size)
        mean = jnp.expand_dims(jnp.broadcast_to(comp.mean, full), axis)
        spread = jnp.expand_dims(jnp.broadcast_to(comp.spread, full), axis)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(comp), (mean, spread))

    return kl(expand(f.components, -2), expand(g.components, -3))


def _prepare(fn: str, p: Any, q: Any) -> tuple[GaussianMixture, GaussianMixture]:
    f, g = _as_mixture(fn, "p", p), _as_mixture(fn, "q", q)
    checks.check_event_shapes(
        fn, ("p", "q"), ((*f.batch_shape, f.event_size), (*g.batch_shape, g.event_size))
    )
    return f, g


def kl_mixture_variational(p: Mixable, q: Mixable) -> Float[Array, "*b"]:
    r"""Hershey & Olsen's variational **approximation** of ``KL(p || q)`` for Gaussian mixtures.

    With ``p = sum_a pi_a p_a`` and ``q = sum_b w_b q_b``,

    .. math::

        D_{var}(p \| q) = \sum_a \pi_a \log
            \frac{\sum_{a'} \pi_{a'} e^{-KL(p_a \| p_{a'})}}{\sum_b w_b e^{-KL(p_a \| q_b)}} .

    It is an approximation, not a bound: it can lie on either side of the true KL (it is usually
    closer than the bounds). It is exact when both sides have one component, and ``0`` when
    ``p == q``; it can be slightly negative. Cost ``O(K_p (K_p + K_q) d)``; jit/vmap/grad safe.

    Args:
      p: a GaussianMixture or DiagGaussian (treated as one component), batch ``(*b_p)``.
      q: a GaussianMixture or DiagGaussian, batch ``(*b_q)``.

    Returns:
      The approximation, shape ``broadcast(b_p, b_q)``.

    Raises:
      TypeError: an argument is neither a GaussianMixture nor a DiagGaussian.
      ValueError: the latent sizes differ or the batch shapes do not broadcast.

    Reference:
      Hershey & Olsen (2007), Sec. 7 ("the variational approximation"). For a trustworthy
      number with an error bar use :func:`gkl_jax.kl_mc`.

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, GaussianMixture, kl_mixture_variational
      >>> comps = DiagGaussian(jnp.array([[-1.0], [1.0]]), jnp.zeros((2, 1)))
      >>> p = GaussianMixture(jnp.zeros(2), comps)
      >>> q = DiagGaussian(jnp.zeros(1), jnp.zeros(1))
      >>> kl_mixture_variational(p, q)  # a poor approximation here: the true KL is 0.1632
      Array(-0.0662..., dtype=float32)
      >>> kl_mixture_variational(q, p)  # the reverse direction: true KL 0.1927
      Array(0.5, dtype=float32)
    """
    fn = "kl_mixture_variational"
    f, g = _prepare(fn, p, q)
    kl_ff = _pairwise_kl(f, f)  # (*b, Ka, Ka)
    kl_fg = _pairwise_kl(f, g)  # (*b, Ka, Kb)
    lw_ff, kl_ff = align_ranks(f.log_weights[..., None, :], kl_ff)
    lw_fg, kl_fg = align_ranks(g.log_weights[..., None, :], kl_fg)
    num = jax.nn.logsumexp(lw_ff - kl_ff, axis=-1)  # (*b, Ka)
    den = jax.nn.logsumexp(lw_fg - kl_fg, axis=-1)
    log_pi, num, den = align_ranks(f.log_weights, num, den)
    return jnp.sum(jnp.exp(log_pi) * (num - den), axis=-1)


def kl_mixture_upper_bound(p: Mixable, q: Mixable, *, num_iters: int = 10) -> Float[Array, "*b"]:
    r"""Hershey & Olsen's variational **upper bound** on ``KL(p || q)`` for Gaussian mixtures.

    For any joint weights ``phi_ab >= 0`` with ``sum_b phi_ab = pi_a`` and ``psi_ab >= 0`` with
    ``sum_a psi_ab = w_b``, writing ``p = sum_ab phi_ab p_a`` and ``q = sum_ab psi_ab q_b`` and
    using the joint convexity of KL gives

    .. math::

        KL(p \| q) \le \sum_{ab} \phi_{ab} \Big[\log\frac{\phi_{ab}}{\psi_{ab}}
                                                + KL(p_a \| q_b)\Big].

    The bound starts from the product weights ``phi = psi = pi_a w_b`` (the "product" bound
    ``sum_ab pi_a w_b KL(p_a || q_b)``) and is tightened by ``num_iters`` alternating exact
    minimizations over ``phi`` and ``psi``; every iterate is a valid upper bound, and each one is
    no larger than the previous. It is exact when both sides have one component. Computed in
    log space; cost ``O(num_iters K_p K_q + K_p K_q d)``.

    Args:
      p: a GaussianMixture or DiagGaussian (treated as one component), batch ``(*b_p)``.
      q: a GaussianMixture or DiagGaussian, batch ``(*b_q)``.
      num_iters: number of ``(phi, psi)`` updates (static; ``0`` gives the product bound).

    Returns:
      The upper bound, shape ``broadcast(b_p, b_q)``.

    Raises:
      TypeError: an argument is neither a GaussianMixture nor a DiagGaussian, or ``num_iters``
        is not an int (a bool is not accepted).
      ValueError: the latent sizes differ, the batch shapes do not broadcast, or
        ``num_iters < 0``.

    Reference:
      Hershey & Olsen (2007), Sec. 8 ("the variational upper bound").

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, GaussianMixture, kl_mixture_upper_bound
      >>> comps = DiagGaussian(jnp.array([[-1.0], [1.0]]), jnp.zeros((2, 1)))
      >>> p = GaussianMixture(jnp.zeros(2), comps)
      >>> q = DiagGaussian(jnp.zeros(1), jnp.zeros(1))
      >>> kl_mixture_upper_bound(p, q)  # >= the true KL, 0.1632
      Array(0.5, dtype=float32)
    """
    fn = "kl_mixture_upper_bound"
    num_iters = _static_int(fn, "num_iters", num_iters)
    if num_iters < 0:
        raise ValueError(f"{fn}: num_iters must be a non-negative int, got {num_iters}")
    f, g = _prepare(fn, p, q)
    kl_fg = _pairwise_kl(f, g)  # (*b, Ka, Kb)
    log_pi, log_w, kl_fg = align_ranks(
        f.log_weights[..., :, None], g.log_weights[..., None, :], kl_fg
    )
    log_phi = jnp.broadcast_to(log_pi + log_w, jnp.broadcast_shapes(kl_fg.shape, log_w.shape))
    log_psi = log_phi

    def normalize(log_x, axis):
        """``log_x - logsumexp(log_x, axis)``, with all -inf slices kept -inf (zero weights)."""
        live = jnp.any(log_x > -jnp.inf, axis=axis, keepdims=True)
        norm = jax.nn.logsumexp(jnp.where(live, log_x, 0.0), axis=axis, keepdims=True)
        return log_x - jnp.where(live, norm, 0.0)

    def step(_, carry):
        log_phi, log_psi = carry
        log_phi = log_pi + normalize(log_psi - kl_fg, -1)
        log_psi = log_w + normalize(log_phi, -2)
        return log_phi, log_psi

    log_phi, log_psi = jax.lax.fori_loop(0, num_iters, step, (log_phi, log_psi))
    # Pairs with phi_ab = 0 (a zero-weight component) contribute 0; the double where keeps
    # their -inf - (-inf) out of both the value and the gradient.
    used = log_phi > -jnp.inf
    log_phi_u, log_psi_u = jnp.where(used, log_phi, 0.0), jnp.where(used, log_psi, 0.0)
    terms = jnp.exp(log_phi_u) * (log_phi_u - log_psi_u + kl_fg)
    return jnp.sum(jnp.where(used, terms, 0.0), axis=(-2, -1))

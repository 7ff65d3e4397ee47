"""``TwinVAE``: two VAEs trained side by side, compared and optionally coupled by a KL term."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from gkl_jax._src.base import Gaussian
from gkl_jax._src.compare import Comparison, compare_posteriors
from gkl_jax._src.kl.registry import kl
from gkl_jax.nnx.head import Number
from gkl_jax.nnx.vae import VAE

__all__ = ["TwinVAE"]

_COUPLINGS = (None, "a_to_b", "b_to_a", "mutual")


def _has_arrays(value: Any) -> bool:
    return any(hasattr(leaf, "shape") for leaf in jax.tree_util.tree_leaves(value))


def _stop_gradient(g: Any) -> Any:
    return jax.tree_util.tree_map(jax.lax.stop_gradient, g)


class TwinVAE(nnx.Module):
    r"""Two VAEs on the same data: their posteriors compared, and optionally pulled together.

    ``twin(x)`` is :func:`gkl_jax.compare_posteriors` of ``vae_a.encode(x)`` and
    ``vae_b.encode(x)`` (after ``alignment``, which maps a's latent axes to b's): the KL in both
    directions per example and per latent dimension.

    Coupling (distillation) terms, each the batch mean of a closed-form :func:`gkl_jax.kl` with
    the teacher's side held constant (``stop_gradient``), so only the student moves:

    * ``"a_to_b"``: ``KL(sg(q_a) || q_b)``: b's posterior is trained towards a's (a teaches b);
    * ``"b_to_a"``: ``KL(sg(q_b) || q_a)``: a's posterior is trained towards b's;
    * ``"mutual"``: ``KL(sg(q_a) || q_b) + KL(sg(q_b) || q_a)``: each towards the other (deep
      mutual learning); its value is the Jeffreys divergence of the pair;
    * ``None`` (default): no coupling; the VAEs train independently.

    ``q_a`` is always ``alignment(vae_a.encode(x))`` when an alignment is set, so the KLs are
    taken in b's axes. The KL direction is "teacher || student", the usual distillation
    direction: the student's posterior is pushed to cover the teacher's. At identical
    posteriors the coupling is exactly 0 with an exactly zero, finite gradient.

    Setting the alignment after fitting: any callable from a Gaussian in a's axes to a Gaussian
    in b's axes, e.g. ``twin.alignment = gkl_jax.align_latents(...)`` (a ``gkl_jax.Alignment``),
    a small equinox module, or a function; ``twin.alignment = None`` removes it. An alignment
    holding arrays is kept as NNX data (it appears in ``nnx.state(twin)`` but is not an
    ``nnx.Param``, so optimizers leave it alone); one without arrays is static.

    Args:
      vae_a: model a.
      vae_b: model b, with the same ``in_features`` and ``latent_dim``.
      alignment: optional callable mapping a's posterior into b's latent axes.
      coupling: ``None``, ``"a_to_b"``, ``"b_to_a"`` or ``"mutual"`` (see above).
      coupling_weight: weight of the coupling term in :meth:`loss`.

    Raises:
      ValueError: unknown ``coupling``, or the two VAEs differ in data or latent size.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from gkl_jax.nnx import VAE, TwinVAE
      >>> twin = TwinVAE(
      ...     VAE(6, 2, hidden=(8,), rngs=nnx.Rngs(0)),
      ...     VAE(6, 2, hidden=(8,), rngs=nnx.Rngs(1)),
      ...     coupling="a_to_b",
      ... )
      >>> x = jnp.ones((4, 6))
      >>> cmp = twin(x)
      >>> cmp.kl_ab.shape, cmp.per_dim_ab.shape
      ((4,), (4, 2))
      >>> loss = nnx.jit(lambda t, x, k: t.loss(x, key=k))(twin, x, jax.random.key(0))
      >>> twin.alignment = lambda q: q  # set or replace an alignment after fitting
    """

    def __init__(
        self,
        vae_a: VAE,
        vae_b: VAE,
        *,
        alignment: Callable[[Gaussian], Gaussian] | None = None,
        coupling: Literal["a_to_b", "b_to_a", "mutual"] | None = None,
        coupling_weight: Number = 1.0,
    ):
        fn = "TwinVAE"
        if coupling not in _COUPLINGS:
            raise ValueError(f"{fn}: coupling must be one of {_COUPLINGS}, got {coupling!r}")
        for attr in ("in_features", "latent_dim"):
            if getattr(vae_a, attr) != getattr(vae_b, attr):
                raise ValueError(
                    f"{fn}: the two VAEs differ in {attr}: {getattr(vae_a, attr)} vs "
                    f"{getattr(vae_b, attr)}"
                )
        self.vae_a = vae_a
        self.vae_b = vae_b
        self.alignment = alignment
        self.coupling = coupling
        self.coupling_weight = float(coupling_weight)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "alignment":  # data when it holds arrays (a fitted rotation), else static
            value = nnx.data(value) if _has_arrays(value) else nnx.static(value)
        super().__setattr__(name, value)

    def posteriors(self, x: Float[ArrayLike, "*b n"]) -> tuple[Gaussian, Gaussian]:
        """``(alignment(vae_a.encode(x)), vae_b.encode(x))``: both in b's latent axes."""
        q_a, q_b = self.vae_a.encode(x), self.vae_b.encode(x)
        if self.alignment is not None:
            q_a = self.alignment(q_a)
        return q_a, q_b

    def __call__(self, x: Float[ArrayLike, "*b n"]) -> Comparison:
        """:func:`gkl_jax.compare_posteriors` of the two models' posteriors for ``x``."""
        return compare_posteriors(
            self.vae_a.encode(x), self.vae_b.encode(x), alignment=self.alignment
        )

    def coupling_loss(self, x: Float[ArrayLike, "*b n"]) -> Float[Array, ""]:
        """The batch mean of the coupling KL (see the class docstring for the directions).

        Raises:
          ValueError: the twin was built with ``coupling=None``.
        """
        if self.coupling is None:
            raise ValueError(
                'TwinVAE.coupling_loss: no coupling set; build with coupling="a_to_b", '
                '"b_to_a" or "mutual"'
            )
        q_a, q_b = self.posteriors(x)
        if self.coupling == "a_to_b":
            values = kl(_stop_gradient(q_a), q_b)
        elif self.coupling == "b_to_a":
            values = kl(_stop_gradient(q_b), q_a)
        else:
            values = kl(_stop_gradient(q_a), q_b) + kl(_stop_gradient(q_b), q_a)
        return jnp.mean(values)

    def loss(
        self, x: Float[ArrayLike, "*b n"], *, key: jax.Array | None = None, beta: ArrayLike = 1.0
    ) -> Float[Array, ""]:
        """``vae_a.loss + vae_b.loss + coupling_weight * coupling_loss`` (no coupling term when
        ``coupling=None``); the two VAEs draw with independent keys split from ``key`` (default:
        each VAE's own ``sample`` stream)."""
        key_a, key_b = (None, None) if key is None else jax.random.split(key)
        total = self.vae_a.loss(x, key=key_a, beta=beta) + self.vae_b.loss(x, key=key_b, beta=beta)
        if self.coupling is not None:
            total = total + self.coupling_weight * self.coupling_loss(x)
        return total

r"""Comparing two models' posteriors on the same inputs: both KL directions, per latent dimension.

Two encoders ``a`` and ``b`` (two VAEs, two seeds, a teacher and a student) give, for each input
``x``, Gaussians ``q_a(z | x)`` and ``q_b(z | x)``. :func:`compare_posteriors` returns, per
example, ``KL(q_a || q_b)``, ``KL(q_b || q_a)`` and their sum (the Jeffreys divergence) and, when
both sides are diagonal, the per-latent-dimension terms that make up each KL -- all in closed form,
by the same exact kernels as :func:`gkl_jax.kl`.

Latent axes of independently trained models are only defined up to a permutation, sign flips or a
rotation; an ``alignment`` (e.g. from :func:`gkl_jax.align_latents`) maps ``q_a`` into ``b``'s
axes first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gkl_jax._src import checks
from gkl_jax._src.base import Gaussian, check_argument_values
from gkl_jax._src.distributions.diag import DiagGaussian, diag_pair
from gkl_jax._src.kl.diag import diag_kl_terms
from gkl_jax._src.kl.registry import kl
from gkl_jax._src.numerics import compute_dtype, sum_last

__all__ = ["Comparison", "compare_posteriors"]


def _concrete(fn: str, x: jax.Array) -> np.ndarray:
    """``x`` as a float64 NumPy array; TypeError inside ``jit`` (a traced value)."""
    if _is_traced(x):
        raise TypeError(f"Comparison.{fn}() needs concrete values; call it outside jit")
    return np.asarray(x, dtype=np.float64)


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


class Comparison(eqx.Module):
    """Per-example KL divergences between two models' posteriors (a pytree).

    Returned by :func:`compare_posteriors`; every value is a closed form, exact to float
    precision. It passes through ``jax.jit`` and ``jax.vmap`` like any pytree;
    :meth:`summary` and ``repr`` read the values on the host.

    Attributes:
      kl_ab: ``KL(q_a || q_b)``, shape ``batch_shape``.
      kl_ba: ``KL(q_b || q_a)``, shape ``batch_shape``.
      per_dim_ab: ``(*batch, d)`` per-latent-dimension terms of ``kl_ab`` (they sum to it) when
        both posteriors are diagonal (after the alignment), else ``None``.
      per_dim_ba: the same for ``kl_ba``.
      event_size: the latent size ``d`` (static).

    ``symmetric`` is the Jeffreys divergence ``kl_ab + kl_ba`` (the full sum, as
    :func:`gkl_jax.jeffreys`; not its half).
    """

    kl_ab: Float[Array, "*b"]
    kl_ba: Float[Array, "*b"]
    per_dim_ab: Float[Array, "*b d"] | None
    per_dim_ba: Float[Array, "*b d"] | None
    event_size: int = eqx.field(static=True)

    @property
    def symmetric(self) -> Float[Array, "*b"]:
        """The Jeffreys divergence ``J = KL(q_a || q_b) + KL(q_b || q_a)``, ``batch_shape``."""
        return self.kl_ab + self.kl_ba

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.kl_ab.shape)

    def summary(self) -> str:
        """A plain-text table: mean, median and max over the examples of each per-example KL
        (in nats), then the mean per-dimension terms when both sides are diagonal.

        Raises:
          TypeError: called on traced values (inside ``jit``).

        Example:
          >>> import jax.numpy as jnp
          >>> from gkl_jax import DiagGaussian, compare_posteriors
          >>> p_a = DiagGaussian(jnp.zeros((3, 2)), jnp.zeros((3, 2)))
          >>> p_b = DiagGaussian(jnp.array([[1.0, 0.0]] * 3), jnp.zeros((3, 2)))
          >>> print(compare_posteriors(p_a, p_b).summary())
          Posterior comparison: 3 examples, latent size 2 (KL in nats)
                               mean       median          max
          KL(a || b)            0.5          0.5          0.5
          KL(b || a)            0.5          0.5          0.5
          J = sum of both         1            1            1
          Per-dimension mean KL:
            dim     KL(a || b)   KL(b || a)
              0            0.5          0.5
              1              0            0
        """
        rows = [("KL(a || b)", self.kl_ab), ("KL(b || a)", self.kl_ba)]
        rows.append(("J = sum of both", self.symmetric))
        n = int(np.prod(self.batch_shape))
        lines = [
            f"Posterior comparison: {n} example{'s' if n != 1 else ''}, latent size "
            f"{self.event_size} (KL in nats)",
            f"{'':<16}{'mean':>11}  {'median':>11}  {'max':>11}",
        ]
        for name, value in rows:
            v = _concrete("summary", value).reshape(-1)
            lines.append(
                f"{name:<16}{np.mean(v):>11.4g}  {np.median(v):>11.4g}  {np.max(v):>11.4g}"
            )
        if self.per_dim_ab is None or self.per_dim_ba is None:
            lines.append("Per-dimension terms: not available (a side is not diagonal)")
            return "\n".join(lines)
        d = self.event_size
        ab = _concrete("summary", self.per_dim_ab).reshape(-1, d).mean(axis=0)
        ba = _concrete("summary", self.per_dim_ba).reshape(-1, d).mean(axis=0)
        lines.append("Per-dimension mean KL:")
        lines.append(f"  {'dim':>3}  {'KL(a || b)':>13}  {'KL(b || a)':>11}")
        lines.extend(
            f"  {i:>3}  {x:>13.4g}  {y:>11.4g}" for i, (x, y) in enumerate(zip(ab, ba, strict=True))
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        head = f"Comparison(batch_shape={self.batch_shape}, event_size={self.event_size}"
        per_dim = self.per_dim_ab is not None
        if _is_traced(self.kl_ab) or _is_traced(self.kl_ba):
            return f"{head}, per_dim={per_dim}, traced)"
        ab, ba = (float(np.mean(_concrete("repr", v))) for v in (self.kl_ab, self.kl_ba))
        return f"{head}, mean kl_ab={ab:.4g}, mean kl_ba={ba:.4g}, per_dim={per_dim})"


def _check_gaussian(fn: str, name: str, g: Any) -> None:
    if not isinstance(g, Gaussian):
        raise TypeError(
            f"{fn}: '{name}' must be a gkl_jax Gaussian (DiagGaussian, FullGaussian or "
            f"LowRankGaussian), got {type(g).__name__}"
        )


def compare_posteriors(
    p_a: Gaussian,
    p_b: Gaussian,
    *,
    alignment: Callable[[Gaussian], Gaussian] | None = None,
) -> Comparison:
    r"""Both KL divergences between two models' posteriors on the same inputs, per example.

    For each example, ``KL(q_a || q_b)``, ``KL(q_b || q_a)`` and, when both are diagonal, the
    per-latent-dimension terms
    ``0.5 * [(mu_a - mu_b)^2 / var_b + phi(log var_a - log var_b)]`` (``phi(x) = e^x - 1 - x``)
    that sum to each of them. Computed by the exact kernels of :func:`gkl_jax.kl`, in each
    side's own parametrization when the two agree (nearly identical posteriors keep their
    digits), so a model compared with itself gives exactly 0 everywhere.

    Args:
      p_a: model a's posteriors, a Gaussian with batch shape ``(B,)`` (any batch shape) and
        latent size ``d``; typically a :class:`~gkl_jax.DiagGaussian` from an encoder.
      p_b: model b's posteriors of the same inputs (batch shapes broadcast).
      alignment: optional callable mapping a Gaussian in model a's latent axes to model b's
        axes, applied to ``p_a`` first: it returns a DiagGaussian for a permutation or sign
        alignment, a FullGaussian for a rotation (``gkl_jax.Alignment``, from
        ``gkl_jax.align_latents``, is such a callable).

    Returns:
      A :class:`Comparison` with ``kl_ab``, ``kl_ba`` (shape ``batch``), ``symmetric`` (their
      sum, the Jeffreys divergence) and ``per_dim_ab``, ``per_dim_ba`` (shape ``(*batch, d)``,
      or ``None`` unless both sides are diagonal after the alignment). float32 for
      bfloat16/float16/float32 inputs, float64 for float64 ones.

    Raises:
      TypeError: ``p_a``, ``p_b`` or ``alignment(p_a)`` is not a gkl_jax Gaussian, or a parameter
        is not a floating-point array.
      ValueError: the latent sizes differ or the batch shapes do not broadcast.

    In the checked mode (:func:`gkl_jax.checked`) the values of ``p_a`` and ``p_b`` are checked
    (``compare_posteriors: argument 'p_a.mean' must be finite ...``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, compare_posteriors
      >>> p_a = DiagGaussian(jnp.array([[0.0, 1.0], [0.0, 0.0]]), jnp.zeros((2, 2)))
      >>> p_b = DiagGaussian(jnp.array([[0.0, 0.0], [0.0, 0.0]]), jnp.zeros((2, 2)))
      >>> c = jax.jit(compare_posteriors)(p_a, p_b)
      >>> c.kl_ab, c.symmetric
      (Array([0.5, 0. ], dtype=float32), Array([1., 0.], dtype=float32))
      >>> c.per_dim_ab  # which latent dimension the difference lives in
      Array([[0. , 0.5],
             [0. , 0. ]], dtype=float32)
      >>> compare_posteriors(p_a, p_a).kl_ab  # a model against itself: exactly 0
      Array([0., 0.], dtype=float32)
    """
    fn = "compare_posteriors"
    _check_gaussian(fn, "p_a", p_a)
    _check_gaussian(fn, "p_b", p_b)
    check_argument_values(fn, p_a=p_a, p_b=p_b)  # checked mode only
    if alignment is not None:
        if not callable(alignment):
            raise TypeError(
                f"{fn}: 'alignment' must be a callable mapping a Gaussian to a Gaussian, got "
                f"{type(alignment).__name__}"
            )
        p_a = alignment(p_a)
        _check_gaussian(fn, "alignment(p_a)", p_a)
    name_a = "p_a" if alignment is None else "alignment(p_a)"
    names, leaves = zip(*p_a.named_leaves(name_a), *p_b.named_leaves("p_b"), strict=True)
    dtype = compute_dtype(fn, names, leaves)
    p_a, p_b = (jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), g) for g in (p_a, p_b))
    batch, d = checks.check_event_shapes(
        fn,
        (name_a, "p_b"),
        ((*p_a.batch_shape, p_a.event_size), (*p_b.batch_shape, p_b.event_size)),
    )
    if not (isinstance(p_a, DiagGaussian) and isinstance(p_b, DiagGaussian)):
        kl_ab = jnp.broadcast_to(kl(p_a, p_b), batch)
        kl_ba = jnp.broadcast_to(kl(p_b, p_a), batch)
        return Comparison(kl_ab, kl_ba, None, None, d)
    # Both diagonal: the kernel behind kl(p, q), kept per dimension (kl sums exactly these).
    per_dim = []
    for p, q in ((p_a, p_b), (p_b, p_a)):
        param, arrays = diag_pair(p, q)
        per_dim.append(jnp.broadcast_to(diag_kl_terms(*arrays, param), (*batch, d)))
    per_ab, per_ba = per_dim
    return Comparison(sum_last(per_ab), sum_last(per_ba), per_ab, per_ba, d)

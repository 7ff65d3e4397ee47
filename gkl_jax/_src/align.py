r"""Latent alignment: maps the posteriors of one VAE into the latent axes of another.

Two VAEs trained independently do not share latent axes: their codes differ by a permutation,
sign flips or a rotation (the prior ``N(0, I)`` is invariant under all of them), so the raw
per-input KL between their posteriors mostly measures that arbitrary mismatch. An
:class:`Alignment` is an affine map ``T(z) = M z + t`` from model a's latent axes to model b's,
fitted on the paired posterior means of the same inputs, so that ``z_b ~= T(z_a)``. Applied to a
Gaussian of model a it returns the exact push-forward ``N(M mu + t, M Sigma M^T)``: a Gaussian in
model b's axes, whose KL to model b's posterior :func:`gkl_jax.kl` then computes exactly.

Two families of ``M`` (``method=``):

* ``"permutation"``: a signed permutation, ``z_b[j] = sign[j] * z_a[index[j]] + t[j]``. It maps a
  :class:`~gkl_jax.DiagGaussian` to a DiagGaussian in the same parametrization (a permuted
  standard deviation is a standard deviation), so no rounding at all happens in the spread and
  the KL stays exact. The assignment maximizes ``sum_i |C[i, perm(i)]|`` over the Pearson
  cross-correlation matrix ``C`` of the two sets of means (a linear assignment problem, solved
  exactly on the host by :func:`linear_assignment`).
* ``"orthogonal"``: ``M = R^T`` with ``R`` the orthogonal Procrustes solution
  ``argmin_R ||A R - B||_F`` over orthogonal ``R`` (``A``, ``B``: the ``(n, d)`` centred means, rows
  are inputs), ``R = U V^T`` from the SVD ``A^T B = U S V^T`` (Schoenemann 1966). ``R`` may be a
  reflection (``det R = -1``): sign flips are reflections. A rotated diagonal Gaussian is a
  :class:`~gkl_jax.FullGaussian`; its Cholesky factor is taken from a QR decomposition of the
  rotated factor, so no covariance matrix is formed.

The shift ``t = mean(mean_b) - M mean(mean_a)`` is fitted by default (``center=True``): an encoder's
means are centred only approximately, and the Procrustes rotation is only meaningful between
centred point clouds. ``center=False`` fits a purely linear map (no shift; ``t`` is ``None``),
which for a signed permutation is then exactly invertible, bit for bit.

``M`` is orthogonal in both methods: a difference of scale between the two models' latents is
not fitted away, so the KL after alignment still measures it (and the Pearson ``correlation``,
which is scale-free, does not show it).

Fitting (:func:`align_latents`) runs once, on the host, in float64 NumPy; it is not jit-able.
Applying an alignment (``alignment(p)``, :meth:`Alignment.map_points`) is pure JAX: jit, vmap and
grad safe.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int

from gkl_jax._src import lapack
from gkl_jax._src.base import Distribution
from gkl_jax._src.distributions.diag import DiagGaussian
from gkl_jax._src.distributions.full import FullGaussian
from gkl_jax._src.distributions.low_rank import LowRankGaussian
from gkl_jax._src.distributions.mixture import GaussianMixture
from gkl_jax._src.linalg import HI, mm
from gkl_jax._src.numerics import align_ranks, as_float_arrays, compute_dtype

__all__ = ["METHODS", "Alignment", "align_latents", "linear_assignment"]

METHODS = ("permutation", "orthogonal")


# ---------------------------------------------------------------------------------------------
# the linear assignment solver (host, float64)
# ---------------------------------------------------------------------------------------------


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    r"""Exact minimum-cost perfect matching of a square cost matrix (host NumPy, float64).

    Returns ``col`` with ``col[i]`` the column assigned to row ``i``, minimizing
    ``sum_i cost[i, col[i]]``. This is the shortest-augmenting-path form of the Hungarian method
    by Jonker and Volgenant (1987), as in Crouse (2016) and SciPy's ``linear_sum_assignment``:
    rows are added one at a time, each by a Dijkstra search for the cheapest augmenting path in
    reduced costs ``cost[i, j] - u[i] - v[j] >= 0`` with dual potentials ``u, v``. It is exact (no
    tolerance: every comparison is between sums of the given costs) and takes ``O(d^3)`` time
    at worst, ``O(d^2)`` Python-level steps of ``O(d)`` vector work (measured: 0.06 s for an
    adversarial ``i * j`` cost at d = 128, 0.26 s at d = 256; a few ms on correlation matrices).

    Args:
      cost: ``(d, d)`` finite costs.

    Returns:
      ``(d,)`` int64 column of each row (a permutation).

    References:
      R. Jonker and A. Volgenant, "A shortest augmenting path algorithm for dense and sparse
      linear assignment problems", Computing 38 (1987) 325-340. D. F. Crouse, "On implementing
      2D rectangular assignment algorithms", IEEE Trans. Aerosp. Electron. Syst. 52 (2016).

    Example:
      >>> import numpy as np
      >>> linear_assignment(np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
      array([1, 0, 2])
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"linear_assignment: cost must be a square matrix, got {cost.shape}")
    if not np.all(np.isfinite(cost)):
        raise ValueError("linear_assignment: cost must be finite")
    d = cost.shape[0]
    u, v = np.zeros(d), np.zeros(d)
    col4row = np.full(d, -1)
    row4col = np.full(d, -1)
    for cur in range(d):
        shortest = np.full(d, np.inf)  # shortest reduced path length to each column
        path = np.full(d, -1)  # the row preceding each column on that path
        seen_row = np.zeros(d, bool)
        seen_col = np.zeros(d, bool)
        min_val = 0.0
        i, sink = cur, -1
        while sink < 0:
            seen_row[i] = True
            reduced = min_val + cost[i] - u[i] - v
            better = ~seen_col & (reduced < shortest)
            path[better] = i
            shortest[better] = reduced[better]
            open_cost = np.where(seen_col, np.inf, shortest)
            min_val = float(open_cost.min())
            ties = np.flatnonzero(open_cost == min_val)
            free = ties[row4col[ties] < 0]  # among equals, an unassigned column ends the search
            j = int(free[0] if free.size else ties[0])
            seen_col[j] = True
            if row4col[j] < 0:
                sink = j
            else:
                i = int(row4col[j])
        # dual update, then augment along the path
        u[cur] += min_val
        others = seen_row.copy()
        others[cur] = False
        u[others] += min_val - shortest[col4row[others]]
        v[seen_col] -= min_val - shortest[seen_col]
        j = sink
        while True:
            i = int(path[j])
            row4col[j] = i
            col4row[i], j = j, int(col4row[i])
            if i == cur:
                break
    return col4row


# ---------------------------------------------------------------------------------------------
# the Alignment pytree
# ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.4f}"


class Alignment(eqx.Module):
    r"""An affine map ``T(z) = M z + t`` from model a's latent axes to model b's (a pytree).

    Built by :func:`align_latents`. ``alignment(p)`` maps a Gaussian of model a to the
    Gaussian of ``T(z)``, ``z ~ p``: ``N(M mu + t, M Sigma M^T)``, in model b's axes.

    Attributes:
      matrix: ``(d, d)`` the linear part ``M`` (a signed permutation matrix, or ``R^T`` for the
        Procrustes rotation ``R``).
      shift: ``(d,)`` the translation ``t``, or ``None`` when fitted with ``center=False``.
      index: ``(d,)`` int32, for ``method="permutation"``: b's latent ``j`` is a's latent
        ``index[j]`` (``None`` for ``"orthogonal"``).
      sign: ``(d,)`` ``+-1``, for ``method="permutation"``: ``z_b[j] = sign[j] * z_a[index[j]]
        + t[j]`` (``None`` for ``"orthogonal"``).
      correlation: ``(d,)`` per latent of model b, the Pearson correlation between the aligned
        means ``T(mean_a)`` and ``mean_b`` on the fitting data (NaN where a column is constant):
        the fit quality. 1 is a perfect match.
      inverse_correlation: ``(d,)`` the same for the inverse map, per latent of model a.
      method: ``"permutation"`` or ``"orthogonal"`` (static).
      num_fitted: the number ``n`` of paired means it was fitted on (static).
    """

    matrix: Float[Array, "d d"]
    shift: Float[Array, " d"] | None
    index: Int[Array, " d"] | None
    sign: Float[Array, " d"] | None
    correlation: Float[Array, " d"]
    inverse_correlation: Float[Array, " d"]
    method: str = eqx.field(static=True)
    num_fitted: int = eqx.field(static=True)

    # identity hash, as for the distributions: jax.jit(alignment) or of a bound method works
    __hash__ = object.__hash__

    def __check_init__(self):
        # runs when an Alignment is built (not when JAX unflattens one)
        if self.method not in METHODS:
            raise ValueError(f"Alignment: method must be one of {METHODS}, got {self.method!r}")
        if (self.index is None or self.sign is None) != (self.method == "orthogonal"):
            raise ValueError("Alignment: index and sign are given exactly for method='permutation'")

    @property
    def event_size(self) -> int:
        """``d``, the latent size of both models."""
        return self.matrix.shape[-1]

    @property
    def dtype(self) -> Any:
        return self.matrix.dtype

    # -- applying -------------------------------------------------------------------------------

    def _permute(self, x: jax.Array, *, signed: bool, shifted: bool) -> jax.Array:
        """``sign * x[..., index] (+ shift)``: the signed permutation on the last axis (exact)."""
        out = jnp.take(x, self.index, axis=-1)
        if signed:
            out, sign = align_ranks(out, self.sign.astype(out.dtype))
            out = sign * out
        if shifted and self.shift is not None:
            out, shift = align_ranks(out, self.shift.astype(out.dtype))
            out = out + shift
        return out

    def _permute_rows(self, mat: jax.Array) -> jax.Array:
        """``diag(sign) P mat``: a's rows of a ``(*b, d, k)`` matrix in b's order, signed."""
        out = jnp.take(mat, self.index, axis=-2)
        out, sign = align_ranks(out, self.sign.astype(out.dtype)[:, None])
        return sign * out

    def _affine_mean(self, mean: jax.Array) -> jax.Array:
        if self.method == "permutation":
            return self._permute(mean, signed=True, shifted=True)
        out = jnp.matmul(mean, self.matrix.astype(mean.dtype).T, precision=HI)
        if self.shift is not None:
            out, shift = align_ranks(out, self.shift.astype(out.dtype))
            out = out + shift
        return out

    def _rotate_factor(self, mean: jax.Array, factor_t: jax.Array) -> FullGaussian:
        """``FullGaussian(T(mean), tril)`` with ``tril tril^T = K K^T`` for ``K = factor_t^T``.

        ``K^T = Q R`` (QR) gives ``K K^T = R^T R``: ``tril = R^T``, with its columns' signs
        flipped to make the diagonal positive. No covariance is formed.
        """
        r = lapack.qr(factor_t, mode="r")
        diag = jnp.diagonal(r, axis1=-2, axis2=-1)
        tril = jnp.swapaxes(r, -1, -2)
        tril, flip = align_ranks(tril, jnp.where(diag < 0, -1.0, 1.0).astype(r.dtype)[..., None, :])
        return FullGaussian(self._affine_mean(mean), tril * flip)

    def _check_size(self, fn: str, name: str, shape: tuple[int, ...], size: int) -> None:
        if size != self.event_size:
            raise ValueError(
                f"{fn}: the alignment maps latents of size d={self.event_size}, but '{name}' has "
                f"latent size {size} (shape {shape})"
            )

    def __call__(self, p: Distribution) -> Distribution:
        r"""The distribution ``p`` of model a, in model b's latent axes: the law of ``T(z)``.

        ``N(mu, Sigma)`` becomes ``N(M mu + t, M Sigma M^T)`` exactly (an affine image of a
        Gaussian is Gaussian):

        * ``method="permutation"``: a :class:`~gkl_jax.DiagGaussian` stays a DiagGaussian with
          the same parametrization (``.param``; the spread is permuted, never converted), a
          :class:`~gkl_jax.LowRankGaussian` stays low-rank (rows of the factor permuted and
          signed), a :class:`~gkl_jax.GaussianMixture` has each component mapped, and a
          :class:`~gkl_jax.FullGaussian` becomes the FullGaussian of ``M L`` re-triangularized.
        * ``method="orthogonal"``: a :class:`~gkl_jax.FullGaussian` with the Cholesky factor of
          ``M Sigma M^T``, taken from the QR decomposition ``(M L)^T = Q R`` (``tril = R^T`` with a
          positive diagonal; ``L = diag(std)`` for a DiagGaussian, and a LowRankGaussian is first
          densified by ``to_full``, ``O(d^3)``). A mixture of diagonal components has no rotated
          form here (TypeError).

        Batch shapes are kept (and broadcast as the input's do). Computed in the common float
        dtype of ``p`` and the alignment (bfloat16/float16 become float32). Jit, vmap and grad
        safe.

        Args:
          p: a distribution of model a with event size ``d`` and any batch shape.

        Returns:
          The distribution of ``T(z)``, ``z ~ p``, with the same batch shape.

        Raises:
          ValueError: ``p``'s event size differs from the alignment's ``d``.
          TypeError: ``p`` is not a gkl_jax distribution, has a non-float parameter, or is a
            mixture with ``method="orthogonal"``.

        Example:
          >>> import jax, jax.numpy as jnp
          >>> from gkl_jax import DiagGaussian, align_latents
          >>> mean_a = jax.random.normal(jax.random.key(0), (100, 2))
          >>> alignment = align_latents(mean_a, mean_a[:, ::-1], center=False)  # b swaps axes
          >>> alignment(DiagGaussian.from_std(jnp.array([1.0, 2.0]), jnp.array([0.1, 0.2]))).std
          Array([0.2, 0.1], dtype=float32)
        """
        fn = "Alignment"
        if not isinstance(p, Distribution):
            raise TypeError(
                f"{fn}: argument 'p' must be a gkl_jax distribution (DiagGaussian, FullGaussian, "
                f"LowRankGaussian or GaussianMixture), got {type(p).__name__}"
            )
        self._check_size(fn, "p", (*p.batch_shape, p.event_size), p.event_size)
        named = p.named_leaves("p")
        names = [n for n, _ in named] + ["alignment.matrix"]
        dtype = compute_dtype(fn, names, [leaf for _, leaf in named] + [self.matrix])
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), p)
        perm = self.method == "permutation"

        if isinstance(p, GaussianMixture):
            if not perm:
                raise TypeError(
                    f"{fn}: a rotated mixture of diagonal components is not a GaussianMixture; "
                    "use method='permutation', or map the components one by one as FullGaussians"
                )
            return eqx.tree_at(lambda m: m.components, p, self(p.components))
        if isinstance(p, DiagGaussian):
            if perm:
                new = (self._permute(p.mean, signed=True, shifted=True),)
                new += (self._permute(p.spread, signed=False, shifted=False),)
                return eqx.tree_at(lambda g: (g.mean, g.spread), p, new)
            # (M diag(std))^T = diag(std) M^T
            std, mt = align_ranks(p.std[..., :, None], self.matrix.astype(dtype).T)
            return self._rotate_factor(p.mean, std * mt)
        if isinstance(p, LowRankGaussian):
            if perm:
                new = (
                    self._permute(p.mean, signed=True, shifted=True),
                    self._permute_rows(p.factor),
                    self._permute(p.log_diag, signed=False, shifted=False),
                )
                return eqx.tree_at(lambda g: (g.mean, g.factor, g.log_diag), p, new)
            p = p.to_full()
        if isinstance(p, FullGaussian):
            tril = p.scale_tril
            rotated = self._permute_rows(tril) if perm else mm(self.matrix.astype(dtype), tril)
            return self._rotate_factor(p.mean, jnp.swapaxes(rotated, -1, -2))
        raise TypeError(f"{fn}: no alignment rule for {type(p).__name__}")

    def map_points(self, z: Float[ArrayLike, "*s d"]) -> Float[Array, "*s d"]:
        """Maps points from model a's latent axes to model b's: ``T(z) = M z + t``.

        Args:
          z: ``(*s, d)`` latent codes of model a (e.g. posterior means, for a plot).

        Returns:
          ``(*s, d)`` the codes in model b's axes (float32 at least).

        Raises:
          ValueError: the last axis of ``z`` is not ``d``. TypeError: ``z`` is not a float array.
        """
        fn = "Alignment.map_points"
        (z,) = as_float_arrays(fn, ("z",), (z,))
        if z.ndim == 0:
            raise ValueError(f"{fn}: argument 'z' is a scalar; it needs a trailing latent axis")
        self._check_size(fn, "z", z.shape, z.shape[-1])
        dtype = jnp.promote_types(z.dtype, self.dtype)
        return self._affine_mean(z.astype(dtype))

    def inverse(self) -> Alignment:
        """The inverse map, from model b's axes to model a's: ``z_a = M^T (z_b - t)``.

        ``M`` is orthogonal, so its inverse is its transpose. For a signed permutation the
        inverse is again a signed permutation; with ``center=False`` (no shift)
        ``alignment.inverse()(alignment(p))`` returns ``p`` bit for bit. Its ``correlation`` is
        this one's ``inverse_correlation`` (and the reverse).
        """
        mt = self.matrix.T
        shift = None if self.shift is None else -mm(mt, self.shift[:, None])[:, 0]
        index = sign = None
        if self.method == "permutation":
            index = jnp.argsort(self.index).astype(jnp.int32)
            sign = jnp.take(self.sign, index)
            if self.shift is not None:  # exact: -sign[inv] * t[inv]
                shift = -sign * jnp.take(self.shift, index)
        return Alignment(
            matrix=mt,
            shift=shift,
            index=index,
            sign=sign,
            correlation=self.inverse_correlation,
            inverse_correlation=self.correlation,
            method=self.method,
            num_fitted=self.num_fitted,
        )

    # -- reporting ------------------------------------------------------------------------------

    def _stats(self) -> tuple[float, float, int, int]:
        corr = np.asarray(self.correlation, np.float64)
        undefined = int(np.sum(~np.isfinite(corr)))
        if undefined == corr.size:
            return float("nan"), float("nan"), -1, undefined
        worst = int(np.nanargmin(corr))
        return float(np.nanmean(corr)), float(corr[worst]), worst, undefined

    def summary(self) -> str:
        """A readable account of the map and of the fit quality (host; not under jit).

        Example:
          >>> import jax
          >>> from gkl_jax import align_latents
          >>> mean_a = jax.random.normal(jax.random.key(0), (100, 2))
          >>> print(align_latents(mean_a, -mean_a[:, ::-1], center=False).summary())
          Alignment by signed permutation of d=2 latents, fitted on n=100 paired means, no shift
          correlation of the aligned means with model b's: mean 1.0000, min 1.0000 (b[0])
            b[0] = -a[1]   r = 1.0000
            b[1] = -a[0]   r = 1.0000
        """
        kind = "signed permutation" if self.method == "permutation" else "orthogonal map"
        shift = "no shift" if self.shift is None else "with a shift"
        mean, low, worst, undefined = self._stats()
        lines = [
            f"Alignment by {kind} of d={self.event_size} latents, fitted on "
            f"n={self.num_fitted} paired means, {shift}",
            f"correlation of the aligned means with model b's: mean {_fmt(mean)}, min "
            f"{_fmt(low)} (b[{worst}])"
            + (f"; undefined (a constant column) for {undefined}" if undefined else ""),
        ]
        corr = np.asarray(self.correlation, np.float64)
        if self.method == "permutation":
            index, sign = np.asarray(self.index), np.asarray(self.sign)
            for j in range(self.event_size):
                term = f"{'-' if sign[j] < 0 else '+'}a[{index[j]}]"
                lines.append(f"  b[{j}] = {term:<7} r = {_fmt(corr[j])}")
        else:
            matrix = np.asarray(self.matrix, np.float64)
            for j in range(self.event_size):
                i = int(np.argmax(np.abs(matrix[j])))
                lines.append(
                    f"  b[{j}]: largest weight {matrix[j, i]:+.3f} on a[{i}]   r = {_fmt(corr[j])}"
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        try:
            mean, low, _, _ = self._stats()
            quality = f", correlation mean {_fmt(mean)} min {_fmt(low)}"
        except Exception:  # traced or partitioned leaves: no values to report
            quality = ""
        try:
            d = f", d={self.event_size}"
        except Exception:
            d = ""
        return f"Alignment(method={self.method!r}{d}, n={self.num_fitted}{quality})"


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------


def _standardized(x: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit norm (NaN for a constant column)."""
    xc = x - x.mean(axis=0)
    norm = np.sqrt(np.sum(xc * xc, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, xc / np.where(norm > 0, norm, 1.0), np.nan)


def _pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``x`` with the same column of ``y``."""
    return np.sum(_standardized(x) * _standardized(y), axis=0)


def align_latents(
    mean_a: Float[ArrayLike, "n d"],
    mean_b: Float[ArrayLike, "n d"],
    *,
    method: str = "permutation",
    center: bool = True,
) -> Alignment:
    r"""Fits the map ``z_b ~= T(z_a) = M z_a + t`` between two models' latent axes.

    Fitted on the posterior means of the same ``n`` inputs under both models (row ``k`` of
    ``mean_a`` and of ``mean_b`` belong to input ``k``). With ``A``, ``B`` the centred means:

    * ``method="permutation"``: ``C = corr(A, B)`` is the ``d x d`` Pearson cross-correlation
      matrix of the columns (a's latents by b's). The permutation maximizes
      ``sum_i |C[i, perm(i)]|`` (an exact linear assignment, :func:`linear_assignment`), and the
      sign of each pair is ``sign(C[i, perm(i)])`` (+1 where it is 0): ``M`` is a signed
      permutation matrix, applied without arithmetic.
    * ``method="orthogonal"``: ``M = R^T`` for ``R = argmin ||A R - B||_F`` over orthogonal
      matrices, ``R = U V^T`` with ``A^T B = U S V^T`` (rows are inputs, so ``A R ~= B`` reads
      ``z_b ~= R^T z_a`` per input). ``R`` may include reflections. Where ``A^T B`` is singular
      (``n <= d``, or latents that are constant in either model, such as collapsed dimensions)
      ``R`` is not determined on that subspace and the SVD picks one solution; the
      ``correlation`` shows it.

    With ``center=True`` (the default) the shift ``t = mean(mean_b) - M mean(mean_a)`` is fitted
    too; ``center=False`` fits a linear map (the Procrustes rotation of the uncentred means;
    the assignment still uses the Pearson correlations) and ``t`` is ``None``.

    The fit runs once, on the host, in float64 NumPy (``O(n d^2 + d^3)``), and cannot be traced
    (call it outside ``jit``); the returned :class:`Alignment` holds arrays in the inputs'
    compute dtype (float32 for bfloat16/float16 inputs) and is applied under jit, vmap and grad.

    Args:
      mean_a: ``(n, d)`` posterior means of model a, ``n >= 2``.
      mean_b: ``(n, d)`` posterior means of model b for the same inputs.
      method: ``"permutation"`` (signed permutation; keeps diagonal Gaussians diagonal) or
        ``"orthogonal"`` (Procrustes; returns full-covariance Gaussians).
      center: fit the shift ``t`` (default), or a purely linear map.

    Returns:
      The :class:`Alignment`, with its fit quality in ``correlation``.

    Raises:
      TypeError: a mean is not a floating-point array, is a JAX tracer (inside ``jit``/``vmap``/
        ``grad``), or ``center`` is not a bool.
      ValueError: a mean is not 2-D, the shapes differ, ``n < 2``, a mean has NaN or inf
        entries, or ``method`` is unknown.

    References:
      P. H. Schoenemann, "A generalized solution of the orthogonal Procrustes problem",
      Psychometrika 31 (1966) 1-10. Jonker and Volgenant (1987), see :func:`linear_assignment`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian, align_latents, kl
      >>> mean_a = jax.random.normal(jax.random.key(0), (200, 3))
      >>> mean_b = -mean_a[:, ::-1]  # model b: axes reversed, signs flipped
      >>> alignment = align_latents(mean_a, mean_b)
      >>> alignment.index, alignment.sign
      (Array([2, 1, 0], dtype=int32), Array([-1., -1., -1.], dtype=float32))
      >>> log_var = jnp.log(jnp.array([0.1, 0.2, 0.3]))
      >>> p_a, p_b = DiagGaussian(mean_a[0], log_var), DiagGaussian(mean_b[0], log_var[::-1])
      >>> float(kl(p_a, p_b)) > 1, float(kl(alignment(p_a), p_b))
      (True, 0.0)
    """
    fn = "align_latents"
    for name, x in (("mean_a", mean_a), ("mean_b", mean_b)):
        if isinstance(x, jax.core.Tracer):
            raise TypeError(
                f"{fn}: argument '{name}' is a JAX tracer; the alignment is fitted once on the "
                "host and cannot be traced (call align_latents outside jit/vmap/grad, then apply "
                "the Alignment inside)"
            )
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    if not isinstance(center, bool | np.bool_):
        raise TypeError(f"{fn}: center must be a bool, got {type(center).__name__} {center!r}")
    dtype = compute_dtype(fn, ("mean_a", "mean_b"), (mean_a, mean_b))
    a = np.asarray(mean_a).astype(np.float64)
    b = np.asarray(mean_b).astype(np.float64)
    for name, x in (("mean_a", a), ("mean_b", b)):
        if x.ndim != 2:
            raise ValueError(
                f"{fn}: argument '{name}' must be 2-D, (n, d) posterior means of n inputs, got "
                f"shape {x.shape}"
            )
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{fn}: latent sizes (last axis) differ: 'mean_a' has shape {a.shape} and 'mean_b' "
            f"has shape {b.shape} ({a.shape[1]} vs {b.shape[1]})"
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{fn}: numbers of paired inputs (first axis) differ: 'mean_a' has shape {a.shape} "
            f"and 'mean_b' has shape {b.shape}; row k of both must be the same input"
        )
    n, d = a.shape
    if n < 2:
        raise ValueError(f"{fn}: needs n >= 2 paired means to fit, got shape {a.shape}")
    if d < 1:
        raise ValueError(f"{fn}: the latent size is 0 (shape {a.shape})")
    for name, x in (("mean_a", a), ("mean_b", b)):
        bad = int(np.sum(~np.isfinite(x)))
        if bad:
            raise ValueError(f"{fn}: argument '{name}' has {bad} NaN or inf entries of {x.size}")

    index = sign = None
    if method == "permutation":
        corr = _standardized(a).T @ _standardized(b)  # (d_a, d_b)
        score = np.where(np.isfinite(corr), np.abs(corr), 0.0)
        perm = linear_assignment(-score)  # a's latent i -> b's latent perm[i]
        sign_a = np.where(corr[np.arange(d), perm] < 0, -1.0, 1.0)
        index = np.argsort(perm)  # b's latent j <- a's latent index[j]
        sign = sign_a[index]
        matrix = np.zeros((d, d))
        matrix[np.arange(d), index] = sign
    else:
        ac = a - a.mean(axis=0) if center else a
        bc = b - b.mean(axis=0) if center else b
        u, _, vt = np.linalg.svd(ac.T @ bc)
        matrix = (u @ vt).T  # M = R^T, R = U V^T

    shift = None
    if center and method == "permutation":
        shift = b.mean(axis=0) - sign * a.mean(axis=0)[index]  # M mean_a as an exact gather
    elif center:
        shift = b.mean(axis=0) - matrix @ a.mean(axis=0)

    def mapped(x, m, t):
        y = x @ m.T
        return y if t is None else y + t

    correlation = _pearson_columns(mapped(a, matrix, shift), b)
    inv_shift = None if shift is None else -(matrix.T @ shift)
    inverse_correlation = _pearson_columns(mapped(b, matrix.T, inv_shift), a)

    def arr(x):
        return None if x is None else jnp.asarray(x, dtype)

    return Alignment(
        matrix=arr(matrix),
        shift=arr(shift),
        index=None if index is None else jnp.asarray(index, jnp.int32),
        sign=arr(sign),
        correlation=arr(correlation),
        inverse_correlation=arr(inverse_correlation),
        method=method,
        num_fitted=n,
    )

"""Streaming reductions over a dataset of batches, sharded over a mesh, accumulated on device.

:func:`stream` feeds each batch of an iterator through a per-example function (e.g.
:func:`gkl_jax.compare_posteriors`) on every device of a 1-D mesh, and keeps on device, for each
per-example statistic: the count, the sum and the sum of squares, the minimum and maximum, and
(for a scalar statistic) a histogram over fixed bin edges. Nothing comes back to the host until
the end.

**The same answer on any number of devices.** Sums are kept as unevaluated pairs ``hi + lo``
(double-word arithmetic: Knuth's TwoSum, Dekker's fast TwoSum): each device reduces its rows
pairwise in that form, the device partials are gathered and added in a fixed order, and the
batch total joins the running total the same way. The pair holds ~2x the working precision, so
the order in which the rows are added (which depends on the device count and the batching)
changes the result by far less than 1e-6 relative -- the final ``hi + lo`` is the same float in
practice. Counts and histograms are integers (exact), minima and maxima are exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from gkl_jax._src.compare import compare_posteriors
from gkl_jax._src.mesh import mesh_axis, shard_batch

__all__ = ["StreamResult", "default_bins", "stream", "stream_comparison"]


# ---------------------------------------------------------------------------------------------
# double-word sums
# ---------------------------------------------------------------------------------------------


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _dd_add(x, y):
    """``(hi, lo) + (hi, lo)``, renormalized (double-word addition)."""
    s, e = _two_sum(x[0], y[0])
    e = e + (x[1] + y[1])
    hi = s + e
    return hi, e - (hi - s)


def _dd_sum(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pairwise double-word sum over the leading axis: ``(hi, lo)`` of shape ``v.shape[1:]``."""
    n = v.shape[0]
    size = 1 << max(0, (n - 1).bit_length())
    hi = jnp.pad(v, ((0, size - n),) + ((0, 0),) * (v.ndim - 1))
    lo = jnp.zeros_like(hi)
    while hi.shape[0] > 1:
        half = hi.shape[0] // 2
        hi, lo = _dd_add((hi[:half], lo[:half]), (hi[half:], lo[half:]))
    return hi[0], lo[0]


# ---------------------------------------------------------------------------------------------
# the accumulator
# ---------------------------------------------------------------------------------------------


def default_bins(dtype: Any = np.float32) -> np.ndarray:
    """Histogram edges for a divergence (nats): ``0``, then ``1e-6 .. 1e4`` log-spaced, 20 per
    decade (202 edges; values below the first or above the last fall in the two outer counts)."""
    return np.concatenate([[0.0], np.logspace(-6, 4, 201)]).astype(dtype)


class StreamResult(NamedTuple):
    """What :func:`stream` returns: per statistic name, host NumPy arrays (float64 moments).

    Scalar statistics are Python floats, the others float64 NumPy arrays.

    Attributes:
      count: number of examples seen.
      mean: ``{name: mean over the examples}`` (the statistic's trailing shape).
      std: ``{name: standard deviation over the examples}`` (``n - 1`` denominator).
      min, max: ``{name: extreme over the examples}``.
      histogram: ``{name: counts}`` for scalar statistics, ``len(bins) + 1`` counts: below
        ``bins[0]``, each ``[bins[i], bins[i+1])``, and ``>= bins[-1]``.
      bins: the histogram edges.
    """

    count: int
    mean: dict[str, Any]
    std: dict[str, Any]
    min: dict[str, Any]
    max: dict[str, Any]
    histogram: dict[str, np.ndarray]
    bins: np.ndarray

    def quantile(self, name: str, q: float) -> float:
        """The ``q``-quantile of scalar statistic ``name``, interpolated linearly inside the
        histogram bin where the cumulative count reaches ``q`` (the outer bins end at the
        minimum and maximum); as coarse as the bins."""
        counts = np.asarray(self.histogram[name], np.float64)
        edges = np.concatenate([[self.min[name]], self.bins, [self.max[name]]])
        edges = np.clip(edges, self.min[name], self.max[name])
        cum = np.cumsum(counts)
        target = q * cum[-1]
        i = int(min(np.searchsorted(cum, target), counts.size - 1))
        before = cum[i - 1] if i > 0 else 0.0
        frac = (target - before) / counts[i] if counts[i] > 0 else 0.0
        return float(edges[i] + frac * (edges[i + 1] - edges[i]))

    def summary(self) -> str:
        """A plain-text table: count, then mean, std, min, median (from the histogram) and max
        of every scalar statistic."""
        lines = [
            f"{self.count} examples",
            f"{'':<14}{'mean':>11} {'std':>11} {'min':>11} {'~median':>11} {'max':>11}",
        ]
        for name, mean in self.mean.items():
            if np.ndim(mean) != 0:
                continue
            lines.append(
                f"{name:<14}{mean:>11.5g} {self.std[name]:>11.4g} {self.min[name]:>11.4g} "
                f"{self.quantile(name, 0.5):>11.4g} {self.max[name]:>11.4g}"
            )
        return "\n".join(lines)


def _init(shapes: dict[str, tuple[tuple[int, ...], Any]], nbins: int) -> dict:
    acc = {}
    for name, (shape, dtype) in shapes.items():
        zero = jnp.zeros(shape, dtype)
        acc[name] = {
            "sum": (zero, zero),
            "sq": (zero, zero),
            "min": jnp.full(shape, jnp.inf, dtype),
            "max": jnp.full(shape, -jnp.inf, dtype),
        }
        if shape == ():
            acc[name]["hist"] = jnp.zeros((nbins + 1,), jnp.int32)
    return acc


def _batch_partials(fn, axis, bins, batch, mask):
    """Per device: the statistics of its rows, reduced; then combined over the devices.

    Every statistic and its square go into one ``(rows, W)`` matrix, so that one pairwise
    double-word sum and one gather of the ``D`` device partials serve them all."""
    stats = fn(batch)
    out, columns = {}, []
    for name, v in stats.items():
        w = mask.reshape((-1,) + (1,) * (v.ndim - 1))
        v0 = jnp.where(w, v, 0.0)
        columns += [v0.reshape(v0.shape[0], -1), (v0 * v0).reshape(v0.shape[0], -1)]
        part = {
            "min": jax.lax.pmin(jnp.min(jnp.where(w, v, jnp.inf), axis=0), axis),
            "max": jax.lax.pmax(jnp.max(jnp.where(w, v, -jnp.inf), axis=0), axis),
        }
        if v.ndim == 1:
            where = jnp.searchsorted(bins.astype(v.dtype), v, side="right")
            counts = jax.ops.segment_sum(
                mask.astype(jnp.int32), where, num_segments=bins.shape[0] + 1
            )
            part["hist"] = jax.lax.psum(counts, axis)
        out[name] = part
    dtype = jnp.result_type(*columns)
    hi, lo = _dd_sum(jnp.concatenate([c.astype(dtype) for c in columns], axis=1))
    hi, lo = jax.lax.all_gather(hi, axis), jax.lax.all_gather(lo, axis)
    total = (hi[0], lo[0])
    for i in range(1, hi.shape[0]):  # the device partials, added in device order
        total = _dd_add(total, (hi[i], lo[i]))
    start = 0
    for name, v in stats.items():
        size = math.prod(v.shape[1:])
        for key in ("sum", "sq"):
            out[name][key] = tuple(
                t[start : start + size].reshape(v.shape[1:]).astype(v.dtype) for t in total
            )
            start += size
    return out


@functools.partial(jax.jit, static_argnames=("fn", "mesh"))
def _step(acc, batch, mask, bins, fn, mesh):
    _, axis, _ = mesh_axis("stream", mesh)
    batch_spec = jax.tree_util.tree_map(lambda _: P(axis), batch)
    part = jax.shard_map(
        functools.partial(_batch_partials, fn, axis),
        mesh=mesh,
        in_specs=(P(), batch_spec, P(axis)),
        out_specs=P(),
        check_vma=False,
    )(bins, batch, mask)
    new = {}
    for name, a in acc.items():
        p = part[name]
        new[name] = {
            "sum": _dd_add(a["sum"], p["sum"]),
            "sq": _dd_add(a["sq"], p["sq"]),
            "min": jnp.minimum(a["min"], p["min"]),
            "max": jnp.maximum(a["max"], p["max"]),
        }
        if "hist" in a:
            new[name]["hist"] = a["hist"] + p["hist"]
    return new


def _pad_batch(batch: Any, rows: int, multiple: int) -> tuple[Any, np.ndarray]:
    """Pads every leaf's leading axis to a multiple of ``multiple`` with copies of its last row
    (valid values, masked out of every statistic); the mask is True on the real rows."""
    target = -(-rows // multiple) * multiple
    mask = np.arange(target) < rows
    if target == rows:
        return batch, mask

    def pad(a):
        a = np.asarray(a)
        return np.concatenate([a, np.repeat(a[-1:], target - rows, axis=0)])

    return jax.tree_util.tree_map(pad, batch), mask


def _progress(iterable: Iterable, enabled: bool, total: int | None, desc: str):
    """``iterable`` wrapped in a tqdm bar if asked for and tqdm is installed (else as is)."""
    if not enabled or jax.process_index() != 0:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra: no bar
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch")


def stream(
    fn: Callable[[Any], dict[str, jax.Array]],
    batches: Iterable[Any],
    *,
    mesh: Mesh | None = None,
    bins: Any = None,
    progress: bool = True,
    total: int | None = None,
    desc: str = "stream",
) -> StreamResult:
    """Reduces ``fn`` over a stream of batches, each sharded over ``mesh``, on device.

    Each batch is a pytree of arrays (e.g. a pair of DiagGaussians) whose leaves share a leading
    batch axis. It is padded to a multiple of the devices (copies of its last row, masked out),
    split by rows over the mesh (:func:`gkl_jax.sharding.shard_batch`; in a multi-process job
    each process passes its own rows, the same number in every process), and ``fn`` runs on each
    device's rows inside ``shard_map`` -- it must act row by row (any gkl_jax closed form
    does) and return ``{name: (rows, ...) array}``. Sums, sums of squares, minima, maxima and
    histograms stay on device in double-word form; one transfer at the end.

    The result is the same, within 1e-6 relative (in practice bitwise for the means), for any
    device count and any batching of the same examples (module docstring).

    Per-device memory: one batch's rows ``/ D`` (inputs and ``fn``'s per-example outputs, twice
    for the pairwise sum), plus the accumulators (the size of one example's statistics).

    Args:
      fn: ``batch -> {name: (rows, ...) array}``, applied per device (traced once per shape).
        Pass the same function object each call, or it is traced again.
      batches: an iterable of batches (each a pytree; NumPy or JAX arrays).
      mesh: a 1-D mesh (default: every device).
      bins: histogram edges, ascending (default :func:`default_bins`).
      progress: show a tqdm progress bar (if tqdm is installed; process 0 only).
      total: number of batches for the bar (default ``len(batches)`` when it has one).
      desc: the bar's label.

    Returns:
      A :class:`StreamResult` (host NumPy values).

    Raises:
      ValueError: ``batches`` is empty, or a batch's leaves differ in their leading axis.

    Example:
      >>> import numpy as np
      >>> from gkl_jax import kl_diag_standard
      >>> from gkl_jax.sharding import stream
      >>> data = [(np.full((5, 2), 1.0, np.float32), np.zeros((5, 2), np.float32))] * 3
      >>> res = stream(lambda b: {"kl": kl_diag_standard(*b)}, data, progress=False)
      >>> res.count, res.mean["kl"]
      (15, 1.0)
    """
    mesh, _, _ = mesh_axis("stream", mesh)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)
    acc, count, dtype_bins = None, 0, None
    for batch in _progress(batches, progress, total, desc):
        leaves = jax.tree_util.tree_leaves(batch)
        rows = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
        if len(rows) != 1 or None in rows:
            raise ValueError(
                f"stream: a batch's leaves must share a leading axis, got shapes "
                f"{[np.shape(leaf) for leaf in leaves]}"
            )
        n = rows.pop()
        if n == 0:
            continue
        padded, mask = _pad_batch(batch, n, local_devices)
        sharded, mask = shard_batch((padded, mask), mesh)
        if acc is None:
            local = jax.tree_util.tree_map(lambda a: a[:1], padded)
            shapes = jax.eval_shape(fn, local)
            shapes = {k: (v.shape[1:], v.dtype) for k, v in shapes.items()}
            dtype_bins = default_bins() if bins is None else np.asarray(bins)
            acc = _init(shapes, dtype_bins.shape[0])
        acc = _step(acc, sharded, mask, jnp.asarray(dtype_bins), fn, mesh)
        count += n * jax.process_count()
    if acc is None:
        raise ValueError("stream: 'batches' yielded no examples")
    acc = jax.device_get(acc)

    def value(pair):
        return np.float64(pair[0]) + np.float64(pair[1])

    mean, std, lo, hi, hist = {}, {}, {}, {}, {}
    for name, a in acc.items():
        s, sq = value(a["sum"]), value(a["sq"])
        mean[name] = s / count
        var = (sq - s * s / count) / (count - 1) if count > 1 else np.zeros_like(s)
        std[name] = np.sqrt(np.maximum(var, 0.0))
        lo[name], hi[name] = np.float64(a["min"]), np.float64(a["max"])
        if "hist" in a:
            hist[name] = np.asarray(a["hist"])

    def plain(values):  # scalar statistics as Python floats
        return {k: float(v) if np.ndim(v) == 0 else v for k, v in values.items()}

    return StreamResult(
        count, plain(mean), plain(std), plain(lo), plain(hi), hist, np.asarray(dtype_bins)
    )


def _comparison_stats(alignment, pair):
    c = compare_posteriors(*pair, alignment=alignment)
    out = {"kl_ab": c.kl_ab, "kl_ba": c.kl_ba, "symmetric": c.symmetric}
    if c.per_dim_ab is not None:
        out["per_dim_ab"], out["per_dim_ba"] = c.per_dim_ab, c.per_dim_ba
    return out


def stream_comparison(
    batches: Iterable[tuple[Any, Any]],
    *,
    mesh: Mesh | None = None,
    alignment: Callable | None = None,
    bins: Any = None,
    progress: bool = True,
    total: int | None = None,
) -> StreamResult:
    """:func:`gkl_jax.compare_posteriors` over a dataset: ``KL(a || b)``, ``KL(b || a)``, their
    sum and (diagonal posteriors) the per-dimension terms, reduced by :func:`stream`.

    Args:
      batches: an iterable of ``(p_a, p_b)`` pairs, two models' posteriors of the same inputs
        (Gaussians with batch shape ``(rows,)``).
      mesh: as in :func:`stream`.
      bins: as in :func:`stream`.
      progress: as in :func:`stream`.
      total: as in :func:`stream`.
      alignment: as in :func:`gkl_jax.compare_posteriors` (a hashable callable, e.g. an
        :class:`~gkl_jax.Alignment`).

    Returns:
      A :class:`StreamResult` with statistics ``kl_ab``, ``kl_ba``, ``symmetric`` and, for
      diagonal posteriors, ``per_dim_ab``, ``per_dim_ba`` (means per latent dimension).

    Example:
      >>> import numpy as np
      >>> from gkl_jax import DiagGaussian
      >>> from gkl_jax.sharding import stream_comparison
      >>> pa = DiagGaussian(np.zeros((6, 2), np.float32), np.zeros((6, 2), np.float32))
      >>> pb = DiagGaussian(np.ones((6, 2), np.float32), np.zeros((6, 2), np.float32))
      >>> res = stream_comparison([(pa, pb)] * 4, progress=False)
      >>> res.count, res.mean["kl_ab"], res.mean["per_dim_ab"]
      (24, 1.0, array([0.5, 0.5]))
    """
    return stream(
        functools.partial(_comparison_stats, alignment),  # traced once per call
        batches,
        mesh=mesh,
        bins=bins,
        progress=progress,
        total=total,
        desc="compare",
    )

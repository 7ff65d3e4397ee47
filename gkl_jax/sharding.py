r"""gkl_jax.sharding: the same estimators on one CPU, one GPU, a multi-GPU host or a pod.

The engine is JAX's own -- a 1-D :class:`jax.sharding.Mesh` with one axis, ``"batch"``,
``jax.shard_map`` and ``jax.lax.ppermute`` inside, :func:`jax.distributed.initialize` across
hosts. There is no home-made orchestration and no host round-trip inside a computation.

**What to shard.** Always the leading axis: examples (posteriors of a batch of inputs), samples
(``x_p``, ``x_q``), components of an aggregate posterior, draws.

* Closed forms (:func:`gkl_jax.kl`, :func:`gkl_jax.kl_diag`, :func:`gkl_jax.kl_diag_standard`,
  the divergences, :func:`gkl_jax.compare_posteriors`) need nothing: give them inputs sharded
  by :func:`shard_batch` and the outputs come back sharded the same way, with no gather (they
  act row by row; the tests check the compiled HLO).
* :func:`stream` / :func:`stream_comparison`: a dataset larger than one batch, an iterator of
  batches; each batch is split over the mesh and reduced on device (sums, sums of squares,
  extrema, histograms in double-word arithmetic: the same result on any device count).
* :func:`kl_from_samples_sharded` (kNN), :func:`kl_aggregate_sharded`,
  :func:`kl_aggregate_prior_sharded`, :func:`kl_decomposition_sharded`: both sample sets split
  by rows; the reference blocks circulate in a ring (``ppermute``), each device folds the block
  it holds into its own rows' result with the single-device kernel, and the single-device
  estimator finishes the job.

**Per-device memory** (``D`` devices, ``d`` dimensions, ``b`` bytes per float):

* kNN, ``n`` samples of p and ``m`` of q: ``b d (n + 2 m) / D`` for the sample blocks (queries,
  the reference block in use and the one arriving) ``+ ~ b * block_size * m / D`` for a block of
  distances ``+ O(n (k + max_ties) / D)`` neighbour lists.
* Aggregate posteriors, ``N_a``, ``N_b`` posteriors and ``S`` draws: ``2 b d (N_a + N_b) / D``
  ``+ O(b d S / D + b (S / D) chunk_size)`` ``+ O(K)`` stratum scalars (``K <= S / 2``).
* Streaming: one batch's ``rows / D`` (inputs and per-example outputs) plus the accumulators.

**Running it.** The same script runs everywhere; only the launch differs:

* one CPU or one GPU: ``python script.py`` (``batch_mesh()`` is then a 1-device mesh);
* several simulated CPU devices (testing): ``XLA_FLAGS=--xla_force_host_platform_device_count=8``;
* a multi-GPU host: ``python script.py`` -- ``batch_mesh()`` spans every local GPU;
* a multi-host GPU/TPU job: call ``jax.distributed.initialize()`` first in every process (on
  Cloud TPU and under SLURM/Open MPI it reads its arguments from the environment; else pass
  ``coordinator_address``, ``num_processes``, ``process_id``); ``batch_mesh()`` then spans the
  devices of all processes, each process feeds :func:`stream` / :func:`shard_batch` *its own*
  rows (the same number per process), and every process gets the same replicated result.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from gkl_jax import kl_diag_standard
  >>> from gkl_jax.sharding import batch_mesh, shard_batch
  >>> mesh = batch_mesh()
  >>> mu, lv = shard_batch((jnp.ones((8, 4)), jnp.zeros((8, 4))), mesh)
  >>> out = jax.jit(kl_diag_standard)(mu, lv)
  >>> out.sharding.is_equivalent_to(mu.sharding, 1), float(out[0])  # sharded like the input
  (True, 2.0)
"""

from gkl_jax._src.mesh import batch_mesh, shard_batch
from gkl_jax._src.ring import (
    kl_aggregate_prior_sharded,
    kl_aggregate_sharded,
    kl_decomposition_sharded,
    kl_from_samples_sharded,
)
from gkl_jax._src.streaming import StreamResult, default_bins, stream, stream_comparison

__all__ = [
    "StreamResult",
    "batch_mesh",
    "default_bins",
    "kl_aggregate_prior_sharded",
    "kl_aggregate_sharded",
    "kl_decomposition_sharded",
    "kl_from_samples_sharded",
    "shard_batch",
    "stream",
    "stream_comparison",
]

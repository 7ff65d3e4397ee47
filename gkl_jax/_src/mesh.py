"""The device mesh of :mod:`gkl_jax.sharding`: one batch axis, and arrays split along it.

Everything sharded in gkl_jax is split along its leading (batch / sample) axis over a 1-D
:class:`jax.sharding.Mesh` whose single axis is named ``"batch"`` by default. On several hosts
(after :func:`jax.distributed.initialize`) the mesh spans every process's devices and each process
hands over its own rows (:func:`shard_batch` uses ``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_mesh", "batch_sharding", "mesh_axis", "shard_batch"]

BATCH_AXIS = "batch"


def batch_mesh(devices: Sequence[Any] | None = None, *, axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process), axis ``axis_name``.

    Example:
      >>> import jax
      >>> from gkl_jax.sharding import batch_mesh
      >>> mesh = batch_mesh()
      >>> mesh.axis_names, mesh.size == jax.device_count()
      (('batch',), True)
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("batch_mesh: 'devices' is empty")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def mesh_axis(fn: str, mesh: Any) -> tuple[Mesh, str, int]:
    """``mesh`` (default :func:`batch_mesh`), its single axis name and its size."""
    if mesh is None:
        mesh = batch_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: 'mesh' must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"{fn}: 'mesh' must be 1-D (one batch axis), got axes {mesh.axis_names} of shape "
            f"{tuple(mesh.shape.values())}; build one with gkl_jax.sharding.batch_mesh"
        )
    return mesh, mesh.axis_names[0], mesh.size


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's axis, the other axes whole."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def shard_batch(tree: Any, mesh: Mesh | None = None) -> Any:
    """Every array leaf of ``tree`` split along its leading axis over ``mesh``'s devices.

    Leaves may be NumPy or JAX arrays (a distribution pytree such as a DiagGaussian works as a
    whole). In a multi-process job each process passes *its own* rows (the global array is their
    concatenation, in process order), as ``jax.make_array_from_process_local_data`` does.

    Raises:
      ValueError: a leaf has no leading axis, the leading axes differ, or the (global) leading
        size is not a multiple of the number of devices (pad the last batch, as
        :func:`gkl_jax.sharding.stream` does).

    Example:
      >>> import jax.numpy as jnp
      >>> from gkl_jax import DiagGaussian
      >>> from gkl_jax.sharding import batch_mesh, shard_batch
      >>> mesh = batch_mesh()
      >>> q = shard_batch(DiagGaussian(jnp.zeros((8, 2)), jnp.zeros((8, 2))), mesh)
      >>> q.mean.sharding.spec[0]
      'batch'
    """
    mesh, _, size = mesh_axis("shard_batch", mesh)
    sharding = batch_sharding(mesh)
    leaves = jax.tree_util.tree_leaves(tree)
    rows = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in rows or len(rows) > 1:
        shapes = [np.shape(leaf) for leaf in leaves]
        raise ValueError(
            f"shard_batch: every leaf needs the same leading (batch) axis, got shapes {shapes}"
        )
    local = rows.pop() if rows else 0
    local_devices = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    if local % max(local_devices, 1):
        raise ValueError(
            f"shard_batch: the leading axis ({local} rows in this process) must be a multiple "
            f"of the {local_devices} local devices of the mesh ({size} in all); pad it"
        )
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree
    )

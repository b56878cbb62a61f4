"""Device meshes and global batches.

The mesh has two named axes, `data` and `fsdp`; batches are split over both (every device
sees different examples), parameters may be split over `fsdp` by logical axis rules. The same
code runs on 1 CPU, 8 simulated CPU devices, a GPU or a TPU pod slice.
"""

from __future__ import annotations


import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from vasa_jax.errors import InputError

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A (data, fsdp) mesh over all devices; -1 means "the rest"."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if data == -1 and fsdp == -1:
    raise InputError("at most one of data/fsdp may be -1")
  if data == -1:
    data = n // fsdp
  if fsdp == -1:
    fsdp = n // data
  if data * fsdp != n:
    raise InputError(f"mesh data={data} x fsdp={fsdp} does not match {n} devices")
  arr = np.asarray(devices).reshape(data, fsdp)
  return Mesh(arr, BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def per_process_batch_size(global_batch_size: int, mesh: Mesh | None = None) -> int:
  n_dev = mesh.size if mesh is not None else jax.device_count()
  if global_batch_size % n_dev:
    raise InputError(f"global batch size {global_batch_size} is not divisible by {n_dev} devices")
  if global_batch_size % jax.process_count():
    raise InputError(f"global batch size {global_batch_size} is not divisible by "
                     f"{jax.process_count()} processes")
  return global_batch_size // jax.process_count()


def to_global(batch, mesh: Mesh):
  """Process-local numpy batch (leading dim = per-process batch) -> global jax.Arrays."""
  sharding = batch_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    if x.dtype == object:
      return x  # strings stay on the host
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map(put, batch)

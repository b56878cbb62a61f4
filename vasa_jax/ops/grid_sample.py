"""Trilinear / bilinear grid sampling with `torch.nn.functional.grid_sample` semantics.

The face latent model warps a 3D appearance volume `[B, D, H, W, C]` (channels-last) with
sampling grids `[B, Do, Ho, Wo, 3]`; this is its hot path. Each output point gathers the WHOLE
channel vector of each of its 8 (3D) or 4 (2D) corner voxels, one gather per corner over the
volume flattened to `[B * D * H * W, C]`, and blends them with weights from the fractional
parts of the unnormalised coordinates (as google-research camp_zipnerf `resample.py` does).
`jax.scipy.ndimage.map_coordinates` gives the same numbers but gathers every channel
separately; it is kept as a test reference only.

Semantics (identical to torch for mode='bilinear'):
  * grid[..., 0] = x indexes W (the last spatial axis), grid[..., 1] = y indexes H,
    grid[..., 2] = z indexes D.
  * align_corners=True: -1 and 1 are the centres of the corner voxels, i = (g + 1) / 2 * (n - 1).
    align_corners=False: -1 and 1 are the outer edges of the corner voxels,
    i = ((g + 1) * n - 1) / 2.
  * padding_mode='zeros': corners outside the volume contribute zero (their weight is masked;
    the in-range corners keep their usual weights, so points half a voxel outside fade out).
    padding_mode='border': coordinates are clamped to [0, n - 1] first (zero gradient w.r.t.
    the grid where clamped, like torch).
  * Differentiable w.r.t. the volume and the grid; works under jit and vmap.

Precision: weights and accumulation are in float32 (or wider, if the grid is wider); a bf16
volume is gathered in bf16 (half the bytes) and the result is returned in the volume's dtype.
Gradients come from JAX autodiff (forward and reverse mode): the volume gradient is the
transposed gather (a scatter-add of whole [C] rows, in the volume's dtype), the grid gradient
flows through the fractional parts. Non-finite grid values are not supported.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

PADDING_MODES = ("zeros", "border")

__all__ = ["grid_sample_2d", "grid_sample_3d", "identity_grid_2d", "identity_grid_3d",
           "PADDING_MODES"]


def _unnormalize(g, size: int, align_corners: bool):
  """Normalised coordinate in [-1, 1] -> voxel-index space (torch's formula)."""
  if align_corners:
    return (g + 1) / 2 * (size - 1)
  return ((g + 1) * size - 1) / 2


def _border_clip(c, size: int):
  """torch's clip_coordinates: clamp to [0, size - 1], zero gradient where clamped (and, like
  torch, exactly at the limits)."""
  inside = (c > 0) & (c < size - 1)
  return jnp.where(inside, c, jnp.clip(jax.lax.stop_gradient(c), 0, size - 1))


def _corners(spatial, g, align_corners: bool, padding_mode: str):
  """Corner indices and weights for M points.

  g: [M, n] normalised coordinates (x, y[, z]) in the compute dtype. Returns a list over the
  2**n corners of (index [M] int32 into the flattened spatial axes, clamped into range so the
  gather needs no bounds checks; weight [M], zero where the corner lies outside the volume).
  Gradients w.r.t. g flow through the weights (the fractional parts) by autodiff.
  """
  n = len(spatial)
  axes = []                                          # per spatial axis (D, H, W order)
  for a, size in enumerate(spatial):
    c = _unnormalize(g[:, n - 1 - a], size, align_corners)   # x (column 0) indexes W
    if padding_mode == "border":
      c = _border_clip(c, size)
    # Clamping before floor keeps the int cast defined for far-away points; a point clamped
    # here has both corners outside the volume, so its result (and gradient) is zero anyway.
    lo_f = jnp.floor(jnp.clip(c, -2.0, size + 1.0))
    frac = c - lo_f
    lo = lo_f.astype(jnp.int32)
    axes.append([(jnp.clip(i, 0, size - 1), w, (i >= 0) & (i < size))
                 for i, w in ((lo, 1 - frac), (lo + 1, frac))])

  strides = [math.prod(spatial[a + 1:]) for a in range(n)]
  out = []
  for corner in itertools.product((0, 1), repeat=n):
    parts = [axes[a][bit] for a, bit in enumerate(corner)]
    idx = sum(p[0] * st for p, st in zip(parts, strides))
    weight = functools.reduce(jnp.multiply, [p[1] for p in parts])
    valid = functools.reduce(jnp.logical_and, [p[2] for p in parts])
    out.append((idx, jnp.where(valid, weight, 0)))
  return out


def _flat(volume, grid):
  """[B, *S, C] -> [B * prod(S), C]; grid -> [B * P, n] compute dtype; batch offsets [B * P]."""
  b, spatial, c = volume.shape[0], tuple(volume.shape[1:-1]), volume.shape[-1]
  n = len(spatial)
  compute = jnp.result_type(grid.dtype, jnp.float32)
  g = grid.reshape(-1, n).astype(compute)
  points = g.shape[0] // b
  num_in = math.prod(spatial)
  base = jnp.repeat(jnp.arange(b, dtype=jnp.int32) * num_in, points)
  return volume.reshape(b * num_in, c), g, base, compute


def _gather(flat, idx):
  """Whole channel vectors: flat [N, C], idx [M] (in range) -> [M, C]."""
  return flat.at[idx].get(mode="promise_in_bounds", wrap_negative_indices=False)


def _forward(volume, grid, align_corners, padding_mode):
  # Points are flattened to [B * P] (batch offsets folded into the indices) so every
  # intermediate is 2-D: XLA:CPU runs the reductions over C that autodiff emits for the grid
  # gradient an order of magnitude slower on [B, P, C] than on [B * P, C].
  flat, g, base, compute = _flat(volume, grid)
  acc = jnp.result_type(volume.dtype, compute)
  out = None
  for idx, w in _corners(volume.shape[1:-1], g, align_corners, padding_mode):
    term = _gather(flat, base + idx).astype(acc) * w.astype(acc)[:, None]
    out = term if out is None else out + term
  return out.astype(volume.dtype).reshape(*grid.shape[:-1], volume.shape[-1])


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _grid_sample(volume, grid, align_corners: bool, padding_mode: str, name: str):
  n = grid.shape[-1]
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"{name}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
  if volume.ndim != n + 2 or grid.ndim != n + 2:
    raise ValueError(f"{name}: expected volume of rank {n + 2} and grid [B, ..., {n}] of rank "
                     f"{n + 2}, got {volume.shape} and {grid.shape}")
  if grid.shape[0] != volume.shape[0]:
    raise ValueError(f"{name}: batch sizes differ: volume {volume.shape}, grid {grid.shape}")
  if volume.size >= 2**31:
    raise ValueError(f"{name}: volume too large for int32 indices: {volume.shape}")
  return _forward(volume, grid, align_corners, padding_mode)


def grid_sample_3d(volume, grid, *, align_corners: bool = False, padding_mode: str = "zeros"):
  """Trilinear sampling of a channels-last volume at normalised grid points.

  Args:
    volume: [B, D, H, W, C].
    grid: [B, Do, Ho, Wo, 3] normalised coordinates, last axis ordered (x, y, z) with x indexing
      W, y indexing H and z indexing D, exactly like torch.nn.functional.grid_sample on 5-D
      inputs (mode='bilinear'); values outside [-1, 1] are allowed.
    align_corners: torch's flag (see the module docstring).
    padding_mode: "zeros" or "border".
  Returns:
    [B, Do, Ho, Wo, C] in the volume's dtype.
  """
  return _grid_sample(volume, grid, align_corners, padding_mode, "grid_sample_3d")


def grid_sample_2d(image, grid, *, align_corners: bool = False, padding_mode: str = "zeros"):
  """Bilinear sampling: image [B, H, W, C], grid [B, Ho, Wo, 2] ordered (x, y) -> [B, Ho, Wo, C]."""
  return _grid_sample(image, grid, align_corners, padding_mode, "grid_sample_2d")


def _centres(size: int, align_corners: bool) -> np.ndarray:
  """Normalised coordinates of the voxel centres along one axis (float64)."""
  i = np.arange(size, dtype=np.float64)
  if align_corners:
    return i * (2.0 / (size - 1)) - 1.0 if size > 1 else np.zeros(1)
  return (2.0 * i + 1.0) / size - 1.0


def identity_grid_3d(d: int, h: int, w: int, *, align_corners: bool = False, dtype=jnp.float32):
  """[d, h, w, 3] grid (x, y, z order) of voxel centres: sampling with it returns the volume."""
  z, y, x = np.meshgrid(*(_centres(s, align_corners) for s in (d, h, w)), indexing="ij")
  return jnp.asarray(np.stack([x, y, z], axis=-1), dtype=dtype)


def identity_grid_2d(h: int, w: int, *, align_corners: bool = False, dtype=jnp.float32):
  """[h, w, 2] grid (x, y order) of pixel centres: sampling with it returns the image."""
  y, x = np.meshgrid(*(_centres(s, align_corners) for s in (h, w)), indexing="ij")
  return jnp.asarray(np.stack([x, y], axis=-1), dtype=dtype)

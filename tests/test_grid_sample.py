"""grid_sample_3d / grid_sample_2d: parity with torch, a loop-based NumPy reference and
jax.scipy.ndimage.map_coordinates; identity grids; gradients; jit and vmap. All sizes are tiny."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from vasa_jax.ops import (grid_sample_2d, grid_sample_3d, identity_grid_2d, identity_grid_3d)

MODES = list(itertools.product((False, True), ("zeros", "border")))
MODE_IDS = [f"align{int(a)}-{p}" for a, p in MODES]


def _data(spatial, out_spatial, c=3, b=2, seed=0, lim=1.4):
  """Random channels-last volume and a grid reaching beyond [-1, 1] (to +-lim)."""
  rng = np.random.default_rng(seed)
  vol = rng.normal(size=(b, *spatial, c)).astype(np.float32)
  grid = rng.uniform(-lim, lim, size=(b, *out_spatial, len(spatial))).astype(np.float32)
  return vol, grid


def _sample(vol, grid, **kw):
  fn = grid_sample_3d if grid.shape[-1] == 3 else grid_sample_2d
  return fn(vol, grid, **kw)


# --------------------------------------------------------------------------- torch parity

def _torch_sample(torch, vol, grid, align_corners, padding_mode, requires_grad=False):
  """torch's grid_sample on channels-last arrays; returns (out channels-last, vol_t, grid_t)."""
  nd = grid.shape[-1]
  to_first = (0, nd + 1, *range(1, nd + 1))
  vol_t = torch.tensor(np.ascontiguousarray(vol.transpose(to_first)), requires_grad=requires_grad)
  grid_t = torch.tensor(grid, requires_grad=requires_grad)
  out = torch.nn.functional.grid_sample(vol_t, grid_t, mode="bilinear",
                                        padding_mode=padding_mode, align_corners=align_corners)
  to_last = (0, *range(2, nd + 2), 1)
  return out.permute(*to_last), vol_t, grid_t


@pytest.mark.parametrize("align_corners,padding_mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("nd", [3, 2])
def test_matches_torch(nd, align_corners, padding_mode):
  torch = pytest.importorskip("torch")
  spatial, out_spatial = ((3, 4, 5), (2, 3, 4)) if nd == 3 else ((4, 5), (6, 7))
  vol, grid = _data(spatial, out_spatial, seed=nd)
  ours = _sample(vol, grid, align_corners=align_corners, padding_mode=padding_mode)
  ref, _, _ = _torch_sample(torch, vol, grid, align_corners, padding_mode)
  np.testing.assert_allclose(np.asarray(ours), ref.detach().numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("align_corners,padding_mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("nd", [3, 2])
def test_gradients_match_torch(nd, align_corners, padding_mode):
  torch = pytest.importorskip("torch")
  spatial, out_spatial = ((3, 4, 5), (2, 3, 4)) if nd == 3 else ((4, 5), (6, 7))
  vol, grid = _data(spatial, out_spatial, seed=10 + nd)
  cot = np.random.default_rng(1).normal(size=(vol.shape[0], *out_spatial, vol.shape[-1]))
  cot = cot.astype(np.float32)

  def loss(v, g):
    return jnp.sum(_sample(v, g, align_corners=align_corners, padding_mode=padding_mode) * cot)

  g_vol, g_grid = jax.grad(loss, argnums=(0, 1))(vol, grid)
  out_t, vol_t, grid_t = _torch_sample(torch, vol, grid, align_corners, padding_mode,
                                       requires_grad=True)
  (out_t * torch.tensor(cot)).sum().backward()
  to_last = (0, *range(2, nd + 2), 1)
  np.testing.assert_allclose(np.asarray(g_vol), vol_t.grad.numpy().transpose(to_last),
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g_grid), grid_t.grad.numpy(), atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------- loop reference

def _ref_point(vol_b, coords, align_corners, padding_mode):
  """One output point by explicit loops. vol_b: [*spatial, C]; coords: (x, y[, z]) floats."""
  spatial = vol_b.shape[:-1]
  nd = len(spatial)
  pos = []                                   # index-space position per spatial axis (D, H, W)
  for axis in range(nd):
    g = float(coords[nd - 1 - axis])         # x drives the last axis
    n = spatial[axis]
    if align_corners:
      p = (g + 1.0) * (n - 1) / 2.0
    else:
      p = ((g + 1.0) * n - 1.0) / 2.0
    if padding_mode == "border":
      p = min(max(p, 0.0), n - 1.0)
    pos.append(p)
  out = np.zeros(vol_b.shape[-1], np.float64)
  for offsets in itertools.product((0, 1), repeat=nd):
    idx, w = [], 1.0
    for p, o in zip(pos, offsets):
      i = math.floor(p) + o
      w *= (p - math.floor(p)) if o else (1.0 - (p - math.floor(p)))
      idx.append(i)
    if all(0 <= i < n for i, n in zip(idx, spatial)):
      out += w * vol_b[tuple(idx)].astype(np.float64)
  return out


@pytest.mark.parametrize("align_corners,padding_mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("nd", [3, 2])
def test_matches_loop_reference(nd, align_corners, padding_mode):
  spatial, out_spatial = ((4, 3, 5), (2, 2, 3)) if nd == 3 else ((3, 6), (3, 4))
  vol, grid = _data(spatial, out_spatial, c=4, seed=20 + nd, lim=1.3)
  ours = np.asarray(_sample(vol, grid, align_corners=align_corners, padding_mode=padding_mode))
  for b in range(vol.shape[0]):
    for o in itertools.product(*(range(s) for s in out_spatial)):
      ref = _ref_point(vol[b], grid[(b, *o)], align_corners, padding_mode)
      np.testing.assert_allclose(ours[(b, *o)], ref, atol=1e-5, rtol=1e-5)


def test_exact_corner_and_edge_values():
  """Hand-checked points: voxel centres, midpoints, and half a voxel outside (zeros fade)."""
  vol = np.arange(2 * 2 * 2, dtype=np.float32).reshape(1, 2, 2, 2, 1)   # value = 4z + 2y + x
  pts = np.array([[-1, -1, -1], [1, 1, 1], [0, 0, 0], [2, 1, 1], [3, 3, 3]], np.float32)
  grid = pts.reshape(1, 5, 1, 1, 3)
  out = np.asarray(grid_sample_3d(vol, grid, align_corners=True))[0, :, 0, 0, 0]
  # x=2 is half a voxel past the last centre (index 1.5): x-corners 1 (weight .5) and 2 (outside).
  np.testing.assert_allclose(out, [0.0, 7.0, 3.5, 0.5 * 7.0, 0.0], atol=1e-6)
  out = np.asarray(grid_sample_3d(vol, grid, align_corners=True, padding_mode="border"))
  np.testing.assert_allclose(out[0, :, 0, 0, 0], [0.0, 7.0, 3.5, 7.0, 7.0], atol=1e-6)


# --------------------------------------------------------------------------- identity grid

@pytest.mark.parametrize("spatial,align_corners,padding_mode",
                         [((3, 4, 5), a, p) for a, p in MODES]
                         + [((1, 2, 3), a, "zeros") for a in (False, True)])
def test_identity_grid_reproduces_volume(spatial, align_corners, padding_mode):
  vol, _ = _data(spatial, spatial, c=2)
  grid = identity_grid_3d(*spatial, align_corners=align_corners)
  assert grid.shape == (*spatial, 3) and grid.dtype == jnp.float32
  grid = jnp.broadcast_to(grid, (vol.shape[0], *grid.shape))
  out = grid_sample_3d(vol, grid, align_corners=align_corners, padding_mode=padding_mode)
  np.testing.assert_allclose(np.asarray(out), vol, atol=1e-6)
  img = vol[:, 0]
  grid2 = jnp.broadcast_to(identity_grid_2d(*spatial[1:], align_corners=align_corners),
                           (img.shape[0], *spatial[1:], 2))
  out2 = grid_sample_2d(img, grid2, align_corners=align_corners, padding_mode=padding_mode)
  np.testing.assert_allclose(np.asarray(out2), img, atol=1e-6)


def test_identity_grid_axis_order():
  g = np.asarray(identity_grid_3d(2, 3, 4, align_corners=True))
  np.testing.assert_allclose(g[0, 0, :, 0], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)   # x along W
  np.testing.assert_allclose(g[0, :, 0, 1], [-1, 0, 1], atol=1e-6)               # y along H
  np.testing.assert_allclose(g[:, 0, 0, 2], [-1, 1], atol=1e-6)                  # z along D


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_check_grads_away_from_voxel_boundaries(padding_mode):
  """Finite differences (fwd and rev) on a tiny case; points keep fractional parts in
  [0.2, 0.8] so no finite-difference step crosses a voxel boundary."""
  rng = np.random.default_rng(3)
  spatial = (3, 4, 4)
  vol = rng.normal(size=(1, *spatial, 2)).astype(np.float32)
  # Index-space positions strictly inside cells, including one cell partly outside the volume
  # (-0.5 on z) for the zero-padding path; mapped back to align_corners=False coordinates.
  idx = rng.integers(0, 3, size=(1, 2, 2, 2, 3)) + rng.uniform(0.2, 0.8, size=(1, 2, 2, 2, 3))
  idx[0, 0, 0, 0] = [1.3, 2.6, -0.5]        # (x, y, z) index space, z half a voxel outside
  sizes = np.array(spatial[::-1], np.float64)  # (W, H, D) matching (x, y, z)
  idx = np.minimum(idx, sizes - 1.2)
  idx[0, 0, 0, 0, 2] = -0.5
  grid = ((2 * idx + 1) / sizes - 1).astype(np.float32)
  f = lambda v, g: grid_sample_3d(v, g, padding_mode=padding_mode)
  check_grads(f, (vol, grid), order=1, modes=("fwd", "rev"), eps=1e-2, atol=2e-2, rtol=2e-2)


# --------------------------------------------------------------------------- jit / vmap / dtypes

def test_jit_and_vmap():
  vol, grid = _data((3, 4, 5), (2, 3, 4), b=2, seed=5)
  f = lambda v, g: grid_sample_3d(v, g, align_corners=False, padding_mode="zeros")
  eager = np.asarray(f(vol, grid))
  np.testing.assert_allclose(np.asarray(jax.jit(f)(vol, grid)), eager, atol=1e-6)
  # An extra leading axis (e.g. time): vmap equals a Python loop.
  vols = np.stack([vol, vol * 2 + 1, -vol])
  grids = np.stack([grid, grid[::-1], grid * 0.5])
  batched = np.asarray(jax.jit(jax.vmap(f))(vols, grids))
  for t in range(3):
    np.testing.assert_allclose(batched[t], np.asarray(f(vols[t], grids[t])), atol=1e-6)
  # One volume, many grids.
  shared = np.asarray(jax.vmap(f, in_axes=(None, 0))(vol, grids))
  for t in range(3):
    np.testing.assert_allclose(shared[t], np.asarray(f(vol, grids[t])), atol=1e-6)
  # grad under jit and vmap.
  gfn = jax.jit(jax.vmap(jax.grad(lambda v, g: jnp.sum(f(v, g) ** 2), argnums=(0, 1))))
  gv, gg = gfn(vols, grids)
  assert gv.shape == vols.shape and gg.shape == grids.shape
  assert np.all(np.isfinite(np.asarray(gv))) and np.all(np.isfinite(np.asarray(gg)))


def test_bfloat16_volume():
  vol, grid = _data((3, 4, 5), (2, 3, 4), seed=6)
  ref = np.asarray(grid_sample_3d(vol, grid))
  out = grid_sample_3d(jnp.asarray(vol, jnp.bfloat16), grid)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2, rtol=3e-2)
  g = jax.grad(lambda v: jnp.sum(grid_sample_3d(v, grid).astype(jnp.float32)))(
      jnp.asarray(vol, jnp.bfloat16))
  assert g.dtype == jnp.bfloat16


def test_bad_arguments():
  vol, grid = _data((3, 4, 5), (2, 3, 4))
  with pytest.raises(ValueError, match="padding_mode"):
    grid_sample_3d(vol, grid, padding_mode="reflection")
  with pytest.raises(ValueError, match="rank"):
    grid_sample_3d(vol[:, 0], grid)
  with pytest.raises(ValueError, match="batch"):
    grid_sample_3d(vol, grid[:1])


# --------------------------------------------------------------------------- map_coordinates

@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_map_coordinates_in_range(align_corners):
  vol, grid = _data((3, 4, 5), (2, 3, 4), c=3, seed=7, lim=1.0)
  ours = np.asarray(grid_sample_3d(vol, grid, align_corners=align_corners))
  sizes = np.array([5, 4, 3], np.float64)            # (W, H, D) for (x, y, z)
  g = grid.astype(np.float64)
  idx = (g + 1) / 2 * (sizes - 1) if align_corners else ((g + 1) * sizes - 1) / 2
  coords = np.moveaxis(idx[..., ::-1], -1, 1).astype(np.float32)   # [B, 3 (z, y, x), ...]
  one = lambda v, c: jax.scipy.ndimage.map_coordinates(v, list(c), order=1, mode="constant")
  per_channel = jax.vmap(one, in_axes=(-1, None), out_axes=-1)
  ref = np.asarray(jax.vmap(per_channel)(vol, coords))
  in_range = np.all((idx >= 0) & (idx <= sizes - 1), axis=-1)
  assert in_range.sum() >= 10
  np.testing.assert_allclose(ours[in_range], ref[in_range], atol=1e-5, rtol=1e-5)

"""Trilinear grid sampling: vasa_jax.ops.grid_sample_3d vs a map_coordinates version.

The baseline is jax.scipy.ndimage.map_coordinates(order=1, mode='constant') vmapped over
channels (and batch): it re-gathers every channel separately, where grid_sample_3d gathers
whole [C] vectors (8 gathers per point). Both run under jax.jit on the default backend; forward
and forward+backward (grads w.r.t. volume and grid). Prints JSON: median ms per call after
warm-up, the speed-up, and rough bandwidths:
  gather_GBps     8 corner vectors per output point (bytes the gathers read) / time
  min_traffic_GBps  (volume + grid + output bytes) / time, a lower bound on memory traffic

  python benchmarks/grid_sample.py [--sizes 64,128] [--grid warp|uniform] [--repeats 7]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vasa_jax.ops import grid_sample_3d, identity_grid_3d  # noqa: E402


def map_coordinates_sample(volume, grid, align_corners=False):
  """Reference formulation: per-channel map_coordinates (zero padding per corner)."""
  sizes = jnp.asarray(volume.shape[1:4][::-1], grid.dtype)        # (W, H, D) for (x, y, z)
  if align_corners:
    idx = (grid + 1) / 2 * (sizes - 1)
  else:
    idx = ((grid + 1) * sizes - 1) / 2
  coords = jnp.moveaxis(idx[..., ::-1], -1, 0)                   # [3 (z, y, x), B, Do, Ho, Wo]

  def one(vol_c, coords_b):                                      # [D, H, W], [3, Do, Ho, Wo]
    return jax.scipy.ndimage.map_coordinates(vol_c, list(coords_b), order=1, mode="constant")

  per_channel = jax.vmap(one, in_axes=(-1, None), out_axes=-1)
  return jax.vmap(per_channel, in_axes=(0, 1))(volume, coords)


def _time(fn, args, repeats):
  jax.block_until_ready(fn(*args))                               # compile
  jax.block_until_ready(fn(*args))                               # warm-up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts) * 1e3


def _make(size, kind, dtype, seed=0):
  b, d, h, w, c = 1, 16, size, size, 32
  rng = np.random.default_rng(seed)
  vol = jnp.asarray(rng.normal(size=(b, d, h, w, c)), dtype)
  if kind == "uniform":
    grid = rng.uniform(-1.05, 1.05, size=(b, d, h, w, 3))
  else:  # a near-identity warp, as the motion fields produce: coherent, mostly in range
    grid = np.asarray(identity_grid_3d(d, h, w))[None]
    grid = grid + 0.05 * rng.normal(size=grid.shape) + np.array([0.03, -0.02, 0.01])
  return vol, jnp.asarray(grid, jnp.float32)


def bench(size, kind, repeats, dtype=jnp.float32):
  vol, grid = _make(size, kind, dtype)
  fns = {"grid_sample_3d": lambda v, g: grid_sample_3d(v, g),
         "map_coordinates": map_coordinates_sample}
  p = int(np.prod(grid.shape[:-1]))
  c = vol.shape[-1]
  item = jnp.dtype(dtype).itemsize
  gather_bytes = 8 * p * c * item
  min_bytes = vol.size * item + grid.size * 4 + p * c * item
  res = {"volume": list(vol.shape), "grid": list(grid.shape), "dtype": jnp.dtype(dtype).name,
         "points": p}
  cot = jnp.asarray(np.random.default_rng(1).normal(size=(*grid.shape[:-1], vol.shape[-1])),
                    jnp.float32)
  outs = {}
  for name, f in fns.items():
    fwd = jax.jit(f)
    outs[name] = np.asarray(fwd(vol, grid), np.float32)
    loss = lambda v, g, f=f: jnp.vdot(f(v, g).astype(jnp.float32), cot)   # fixed cotangent
    bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
    t_f = _time(fwd, (vol, grid), repeats)
    t_b = _time(bwd, (vol, grid), max(3, repeats // 2) if name == "map_coordinates" else repeats)
    res[name] = {"fwd_ms": round(t_f, 3), "fwd_bwd_ms": round(t_b, 3),
                 "fwd_gather_GBps": round(gather_bytes / t_f / 1e6, 2),
                 "fwd_min_traffic_GBps": round(min_bytes / t_f / 1e6, 2)}
  res["speedup_fwd"] = round(res["map_coordinates"]["fwd_ms"] / res["grid_sample_3d"]["fwd_ms"], 2)
  res["speedup_fwd_bwd"] = round(
      res["map_coordinates"]["fwd_bwd_ms"] / res["grid_sample_3d"]["fwd_bwd_ms"], 2)
  res["max_abs_diff"] = float(np.abs(outs["grid_sample_3d"] - outs["map_coordinates"]).max())
  return res


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--sizes", default="64,128", help="H=W of volume and grid (D=16, C=32)")
  ap.add_argument("--grid", default="warp", choices=["warp", "uniform"])
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--bf16", action="store_true", help="also time a bfloat16 volume (ours only)")
  a = ap.parse_args()
  out = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
         "cpu_count": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
         "grid_kind": a.grid, "results": []}
  for s in (int(x) for x in a.sizes.split(",")):
    out["results"].append(bench(s, a.grid, a.repeats))
    if a.bf16:
      vol, grid = _make(s, a.grid, jnp.bfloat16)
      fwd = jax.jit(lambda v, g: grid_sample_3d(v, g))
      out["results"][-1]["grid_sample_3d_bf16_fwd_ms"] = round(_time(fwd, (vol, grid), a.repeats), 3)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

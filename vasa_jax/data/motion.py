"""Stage-2 (MotionDiT) motion: the stored motion source and the per-dimension normalisation.

A motion source turns a stage-2 pipeline batch (vasa_jax/data/pipeline.py, `Stage2Transform`)
into the diffusion target: `motion` [B, W, D] for the window and `prev_motion` [B, K, D] for
the K frames before it, D = config.model.motion_dim = 6 + dyn_dim.

* `stored_motion(batch)` -- the only source: the motion read from a `motion_latents` dataset
  (vasa_jax/data/motion_latents.py, `vasa-jax data extract-motion`): the mesh codes (pose [6]
  ++ expression / lid / gaze coefficients) were measured once over every frame, and
  `Stage2Transform(with_motion=True)` slices "motion" and "prev_motion" out of the stored
  [T, D] arrays like any other track. No frames at train time.

Normalisation: `normalization_stats` estimates a per-dimension mean / std over valid frames
(mask 1) of a few batches; the trainer stores it as workdir/motion_stats.json (`save_stats` /
`load_stats`) and trains on `normalize(m) = (m - mean) / std`; samples are mapped back with
`denormalize(x) = x * std + mean`. `Moments` is the float64 accumulator behind it (also used
by the motion_latents builder for whole-dataset statistics).
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.errors import InputError

STATS_FILE = "motion_stats.json"


def stored_motion(batch):
  """motion_fn(batch) -> (motion, prev_motion) for batches that carry the stored motion
  (`Stage2Transform(with_motion=True)` over a motion_latents dataset)."""
  prev = batch.get("prev_motion")
  if prev is not None and prev.shape[1] == 0:
    prev = None
  return batch["motion"], prev


# ----------------------------------------------------------------------------- normalisation

@jax.jit
def _moments(m, mask):
  m = jnp.asarray(m, jnp.float32)
  w = jnp.asarray(mask, jnp.float32)[..., None]
  n = jnp.sum(w)
  mean = jnp.sum(m * w, axis=(0, 1)) / jnp.maximum(n, 1.0)
  m2 = jnp.sum(jnp.square(m - mean) * w, axis=(0, 1))
  return n, mean, m2


class Moments:
  """Running per-dimension count / mean / sum of squared deviations (M2), in float64.

  Batches are combined with Chan et al.'s parallel update, so the estimate does not lose
  precision to large means. `stats(min_std)` gives the {"mean", "std", "count"} dict that
  `save_stats` / `load_stats` and the trainer use.
  """

  def __init__(self):
    self.count, self.mean, self.m2 = 0.0, None, None

  def add_moments(self, n, mean, m2) -> None:
    """Adds a batch given by its count, mean [D] and M2 [D]."""
    n = float(n)
    if n == 0:
      return
    mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
    if self.mean is None:
      self.count, self.mean, self.m2 = n, mean, m2
      return
    delta = mean - self.mean
    total = self.count + n
    self.mean = self.mean + delta * (n / total)
    self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
    self.count = total

  def add(self, m, mask=None) -> None:
    """Adds the frames of a numpy motion array [..., D] (those with mask > 0 if given)."""
    m = np.asarray(m, np.float64)
    m = m.reshape(-1, m.shape[-1])
    if mask is not None:
      m = m[np.asarray(mask).reshape(-1) > 0]
    if m.shape[0]:
      mean = m.mean(axis=0)
      self.add_moments(m.shape[0], mean, np.square(m - mean).sum(axis=0))

  def stats(self, min_std: float = 1e-2) -> dict:
    if self.mean is None:
      raise InputError("no valid motion frames to compute normalisation statistics from")
    std = np.maximum(np.sqrt(self.m2 / max(self.count, 1.0)), min_std)
    return {"mean": [float(x) for x in self.mean], "std": [float(x) for x in std],
            "count": int(self.count)}


def normalization_stats(motion_iter: Iterable, n_batches: int, *, min_std: float = 1e-2) -> dict:
  """Per-dimension {"mean": [D], "std": [D]} (lists of floats) over `n_batches` items.

  Each item is motion [B,W,D] or (motion, mask [B,W]); frames with mask 0 (past the end of a
  clip) are left out. Batch moments are combined in float64 (`Moments`), so the estimate does
  not lose precision to large means. std is floored at `min_std` so that constant dimensions
  (e.g. zero padding) map to 0 instead of dividing by 0. Works on (sharded) jax arrays: the
  reductions run on device and only D-vectors come back.
  """
  if n_batches < 1:
    raise ValueError("n_batches must be >= 1")
  acc = Moments()
  it = iter(motion_iter)
  for _ in range(n_batches):
    try:
      item = next(it)
    except StopIteration:
      break
    m, mask = item if isinstance(item, tuple) else (item, None)
    if mask is None:
      mask = jnp.ones(m.shape[:2], jnp.float32)
    acc.add_moments(*(np.asarray(jax.device_get(v), np.float64) for v in _moments(m, mask)))
  return acc.stats(min_std)


def save_stats(path: str, stats: Mapping, **meta) -> None:
  """Writes stats (+ meta fields) as JSON atomically (tmp file + rename)."""
  out = {"mean": list(map(float, stats["mean"])), "std": list(map(float, stats["std"]))}
  out.update({k: v for k, v in stats.items() if k not in out})
  out.update(meta)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=1)
  os.replace(tmp, path)


def load_stats(path: str) -> dict:
  """{"mean", "std", ...} from a motion_stats.json (or a directory holding one), or an .npz
  with arrays "mean" and "std"."""
  if os.path.isdir(path):
    path = os.path.join(path, STATS_FILE)
  if path.endswith(".npz"):
    with np.load(path) as z:
      return {"mean": [float(x) for x in z["mean"]], "std": [float(x) for x in z["std"]]}
  with open(path) as f:
    stats = json.load(f)
  if "mean" not in stats or "std" not in stats or len(stats["mean"]) != len(stats["std"]):
    raise InputError(f"{path} does not hold per-dimension motion mean/std")
  return stats


def _vec(stats, key):
  return jnp.asarray(np.asarray(stats[key], np.float32))


def normalize(motion, stats: Mapping):
  """(m - mean) / std over the last axis."""
  return (jnp.asarray(motion, jnp.float32) - _vec(stats, "mean")) / _vec(stats, "std")


def denormalize(x, stats: Mapping):
  """Inverse of `normalize`: x * std + mean (apply to sampled motion)."""
  return jnp.asarray(x, jnp.float32) * _vec(stats, "std") + _vec(stats, "mean")

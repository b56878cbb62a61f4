"""Motion sources for stage 2 (MotionDiT) and the per-dimension normalisation of motion.

A motion source turns a stage-2 pipeline batch (vasa_jax/data/pipeline.py, `Stage2Transform`)
into the diffusion target: `motion` [B, W, D] for the window and `prev_motion` [B, K, D] for
the K frames before it, D = config.model.motion_dim = 6 + dyn_dim.

* `latent_motion_fn(face_latent_config, params)` -- THE VASA-1 WAY. Motion latents are what
  the trained stage-1 encoder reads off the frames: z_pose [6] ++ z_dyn [dyn_dim] per frame
  (`FaceLatentModel.encode_motion`). Needs the pipeline's decoded frames (`with_frames=True`);
  `Stage2FramesTransform` / `stage2_frames_loader` add the previous K frames as well
  (`prev_frames`), so that `prev_motion` comes from the same encoder.
* `ground_truth_motion(batch, motion_dim)` -- DEBUGGING / BOOTSTRAPPING ONLY. The labelled
  tracks of synthetic clips (pose [6], mouth [3], blink [1], gaze [2], emotion_intensity [1]
  = 13 numbers) zero-padded or truncated to motion_dim. These are not the latent space the
  stage-1 renderer consumes, so a model trained on them cannot drive the renderer; they exist
  to exercise and debug the stage-2 trainer without a stage-1 checkpoint.

* `stored_motion(batch)` -- the same latents read from a `motion_latents` dataset
  (vasa_jax/data/motion_latents.py, `vasa-jax data extract-motion`): the stage-1 encoder ran
  once over every frame, and `Stage2Transform(with_motion=True)` slices "motion" and
  "prev_motion" out of the stored [T, D] arrays like any other track. No frames, no encoder at
  train time.

Normalisation: `normalization_stats` estimates a per-dimension mean / std over valid frames
(mask 1) of a few batches; the trainer stores it as workdir/motion_stats.json (`save_stats` /
`load_stats`) and trains on `normalize(m) = (m - mean) / std`; samples are mapped back with
`denormalize(x) = x * std + mean`. `Moments` is the float64 accumulator behind it (also used
by the motion_latents builder for whole-dataset statistics).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.data import pipeline
from vasa_jax.errors import InputError

GROUND_TRUTH_TRACKS = (("pose", 6), ("mouth", 3), ("blink", 1), ("gaze", 2),
                       ("emotion_intensity", 1))
GROUND_TRUTH_DIM = sum(n for _, n in GROUND_TRUTH_TRACKS)   # 13
STATS_FILE = "motion_stats.json"


# ----------------------------------------------------------------------------- ground truth

def _gt(batch: Mapping, prefix: str, motion_dim: int | None):
  parts = []
  for name, n in GROUND_TRUTH_TRACKS:
    x = jnp.asarray(batch[prefix + name], jnp.float32)
    parts.append(x.reshape(*x.shape[:2], n))
  m = jnp.concatenate(parts, axis=-1)
  if motion_dim is None or motion_dim == GROUND_TRUTH_DIM:
    return m
  if motion_dim < GROUND_TRUTH_DIM:
    return m[..., :motion_dim]
  return jnp.pad(m, ((0, 0), (0, 0), (0, motion_dim - GROUND_TRUTH_DIM)))


def ground_truth_motion(batch: Mapping, motion_dim: int | None = None):
  """DEBUGGING / BOOTSTRAPPING SOURCE ONLY (see the module docstring); not VASA-1's motion.

  batch: a Stage2Transform batch (tracks "pose" [B,W,6], "mouth" [B,W,3], "blink" [B,W],
  "gaze" [B,W,2], "emotion_intensity" [B,W] and their "prev_" versions [B,K,...]).
  Returns (motion [B,W,motion_dim], prev_motion [B,K,motion_dim]): the 13 concatenated track
  values, zero-padded / truncated to motion_dim (None: 13). Works on numpy or (sharded) jax
  arrays.
  """
  return _gt(batch, "", motion_dim), _gt(batch, "prev_", motion_dim)


# ----------------------------------------------------------------------------- stage-1 latents

class Stage2FramesTransform(pipeline.Stage2Transform):
  """Stage2Transform with frames, plus the previous K frames as "prev_frames" [K,S,S,3] uint8
  (zeros where prev_mask is 0), so that prev_motion can be encoded like the window's motion."""

  def __init__(self, window: int, context: int):
    super().__init__(window, context, with_frames=True)

  def random_map(self, rec, rng: np.random.Generator):
    from vasa_jax.data import records
    out = super().random_map(rec, rng)
    k, s = self.context, int(rec["size"])
    t0 = int(out["start"])
    prev = np.zeros((k, s, s, 3), np.uint8)
    for n, ti in enumerate(range(t0 - k, t0)):
      if ti >= 0:
        prev[n] = records.decode_jpeg(rec["frames"][ti])
    out["prev_frames"] = prev
    return out


def stage2_frames_loader(source, *, batch_size: int, window: int, context: int, seed: int = 0,
                         worker_count: int = 0, **kw):
  """`pipeline.stage2_loader(with_frames=True)` that also yields "prev_frames" [B,K,S,S,3]."""
  return pipeline.make_loader(source, Stage2FramesTransform(window, context),
                              batch_size=batch_size, seed=seed, worker_count=worker_count, **kw)


def latent_motion_fn(face_latent_config, params, *, mesh=None, chunk: int | None = None,
                     compiler_options: dict | None = None):
  """The VASA-1 motion source: a jitted fn(frames uint8 [B,W,S,S,3]) -> [B,W,6+dyn_dim].

  face_latent_config: the stage-1 config (configs/face_latent.py) or its `model` sub-config.
  params: stage-1 generator params (e.g. `vasa_jax.eval.reenact.load_params(workdir, config)`,
  the EMA weights). Frames are converted to [-1, 1], resized to the stage-1 image_size when
  they differ (linear, antialiased), and encoded as one batch of B*W frames (or in chunks of
  `chunk` frames via lax.map, to bound memory); output is z_pose ++ z_dyn, float32. With a
  `mesh`, the params are replicated over it so that batch-sharded frames can be encoded.
  """
  from vasa_jax.models import face_latent as fl
  mc = face_latent_config.model if "model" in face_latent_config else face_latent_config
  model = fl.FaceLatentModel(mc)
  size = int(mc.image_size)
  if mesh is not None:
    from jax.sharding import NamedSharding, PartitionSpec as P
    params = jax.device_put(params, NamedSharding(mesh, P()))

  def encode(p, x):
    x = fl.images_to_float(x)
    if x.shape[1] != size or x.shape[2] != size:
      x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear", antialias=True)
    z = model.apply({"params": p}, x, method=fl.FaceLatentModel.encode_motion)
    return jnp.concatenate([z["z_pose"], z["z_dyn"]], axis=-1).astype(jnp.float32)

  @functools.partial(jax.jit, compiler_options=compiler_options)
  def run(p, frames):
    b, w = frames.shape[:2]
    flat = frames.reshape((b * w,) + frames.shape[2:])
    n = flat.shape[0]
    if chunk and n > chunk:
      pad = (-n) % chunk
      flat = jnp.pad(flat, ((0, pad),) + ((0, 0),) * 3)
      out = jax.lax.map(lambda x: encode(p, x), flat.reshape((-1, chunk) + flat.shape[1:]))
      out = out.reshape(-1, out.shape[-1])[:n]
    else:
      out = encode(p, flat)
    return out.reshape(b, w, -1)

  def fn(frames):
    return run(params, frames)

  fn.motion_dim = int(mc.pose_dim if "pose_dim" in mc else 6) + int(mc.dyn_dim)
  return fn


def latent_motion(encode_fn):
  """motion_fn(batch) -> (motion, prev_motion) from an encoder fn(frames) (`latent_motion_fn`),
  reading batch["frames"] and batch["prev_frames"] (None if the batch has no prev_frames)."""

  def motion_fn(batch):
    motion = encode_fn(batch["frames"])
    prev = batch.get("prev_frames")
    if prev is None or prev.shape[1] == 0:
      return motion, None
    return motion, encode_fn(prev)

  return motion_fn


def stored_motion(batch):
  """motion_fn(batch) -> (motion, prev_motion) for batches that already carry the latents
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

r"""Frames -> ground-truth factors: a small CNN that reads mouth, pose, gaze, blink and emotion.

Synthetic footage comes with the factors that generated it, so a regressor trained on it lets
an evaluation measure what a rendered video *shows*: lip opening, head pose, gaze, blinks,
emotion and head-to-camera distance. The report code uses it to check the controls
(requested gaze / distance / emotion vs the output) and mouth / pose / blink dynamics.

    from vasa_jax.eval import factors
    reg = factors.load()                 # bundled weights (vasa_jax/assets/evaluators/factors)
    out = reg.predict(frames)            # frames: uint8 [T, S, S, 3], any S
    out["mouth"]  [T, 3]   open, wide, round in [0, 1]
    out["pose"]   [T, 6]   yaw, pitch, roll (rad), tx, ty, tz (m)
    out["gaze"]   [T, 2]   theta, phi (rad, camera frame)
    out["blink"]  [T]      0 open .. 1 closed
    out["emotion_intensity"] [T]; out["emotion"] [T] (argmax class, index into EMOTIONS);
    out["emotion_probs"] [T, C]; out["distance"] [T] (m)

Input framing is the project's portrait framing (the synthetic corpus and the face-latent
model's renders share it): a square frame seen by the synthetic 14-degree camera, never
re-cropped by the caller, because the face's size and position carry distance and translation.

Two stages, trained jointly:
  global  the whole frame at 64 px -> head pose (yaw, pitch, roll, tx, ty, tz);
  face    a face-aligned crop (96 px, brows to chin) cut from the full-resolution frame where
          the global pose puts the face -> mouth, pose angles, gaze, blink, emotion. The
          reported pose takes its angles from this stage and its translation from the global
          one. Cropping first is what makes small features (lips, irises, lids) learnable by
          a small network in minutes of CPU.

`distance` is the per-frame head-to-camera distance, i.e. the pose's tz (it equals
`pose[:, 5]`). The clip-level distance control of the synthetic corpus is the value around
which tz drifts by about 1.5 cm, so the clip mean of `distance` estimates it; the control
itself is not visible in any single frame and is not a separate target.

Training (`main`), on the identity-disjoint synthetic split:

    vasa-jax eval factors --data-dir /tmp/tfds_synth --time-limit 720 \
        [--out vasa_jax/assets/evaluators/factors] [--report docs/evaluators/factors.json]

samples `--frames-per-clip` frames of every train clip (a quarter of them from blinks, which
are rare), pre-decodes them once into a uint8 cache under /tmp (whole frames at 64 px and
face patches around the true pose), trains with light augmentation (horizontal flips with
mirrored labels, small shifts with matching tx/ty, crop jitter like the global stage's error,
colour jitter, blur and noise so that it transfers to rendered output), then validates on
held-out identities (test split) through the full `predict` path and writes the weights
(`factors.msgpack`, float32) and `factors.json` (architecture, target statistics, validation
summary) into --out. With --time-limit the learning-rate schedule ends at the time limit.

Validation figures (the --report JSON): per-factor MAE (angles in degrees, translations in mm)
and Pearson r over frames, each next to the MAE of predicting the train mean; emotion accuracy
next to chance; blink AUC (closed = label > 0.5) and r; and the clip-level controls: the clip
mean of the predictions vs control_gaze / control_distance / control_emotion, next to the same
figure for the clip mean of the *true* per-frame tracks (the floor set by saccades and drift).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import serialization

from vasa_jax import artifacts
from vasa_jax.synth import head as head_lib
from vasa_jax.errors import InputError

__all__ = ["EMOTIONS", "FactorNet", "FactorRegressor", "NetConfig", "default_dir", "load",
           "save", "crop_faces", "train", "validate", "main"]

EMOTIONS: tuple[str, ...] = tuple(head_lib.EMOTIONS)   # class i = vasa_jax emotion id i

FORMAT = "vasa-jax-factors"
VERSION = 1
PARAMS_FILE = "factors.msgpack"
META_FILE = "factors.json"
DEFAULT_DATASET = "synthetic_talking_heads/r256_n1000"

# Regression targets (raw order, normalised by train statistics): mouth 3, pose 6, gaze 2,
# emotion intensity 1.
FACTOR_NAMES = ("mouth_open", "mouth_wide", "mouth_round", "yaw", "pitch", "roll", "tx", "ty",
                "tz", "gaze_theta", "gaze_phi", "emotion_intensity")
REG_DIM = len(FACTOR_NAMES)
I_MOUTH, I_POSE, I_GAZE, I_EMO = 0, 3, 9, 11
GLOBAL_OUT = 6                                     # pose
FACE_IDX = np.array([0, 1, 2, 3, 4, 5, 9, 10, 11])  # mouth, pose angles, gaze, emotion intensity
FACE_REG = len(FACE_IDX)
FACE_OUT = FACE_REG + 1 + len(EMOTIONS)            # + blink logit + emotion logits


def default_dir() -> str:
  """The bundled weights (vasa_jax/assets/evaluators/factors)."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                      "evaluators", "factors")


# ----------------------------------------------------------------------------- geometry

# The face crop, in the synthetic head's anatomical frame (metres; x to the subject's left,
# y down, z from the face to the back of the head; scaled by head.HEAD_SCALE when posed): a
# square centred between brows and chin on the front of the face, wide enough for brows,
# eyes, cheeks, mouth and chin of every sampled identity.
CROP_CENTRE = (0.0, 0.035, -0.09)
CROP_SIDE = 0.15
TRAIN_MARGIN = 1.25          # training patches cover 1.25 crops, so crops can be jittered


def focal_px(size: int) -> float:
  """Focal length in pixels of the synthetic portrait camera at output size `size`."""
  return (size / 2) / math.tan(math.radians(head_lib.FOV_Y_DEG / 2))


def face_boxes(pose: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Crop centres [T, 2] (x right, y down, pixels) and sides [T] (pixels) for poses [T, 6] in
  a frame of `size` pixels."""
  pose = np.asarray(pose, np.float64).reshape(-1, 6)
  p = np.asarray(CROP_CENTRE) * head_lib.HEAD_SCALE
  f = focal_px(size)
  centres = np.empty((len(pose), 2))
  sides = np.empty(len(pose))
  for i, (yaw, pitch, roll, tx, ty, tz) in enumerate(pose):
    cam = head_lib.rotation_matrix(yaw, pitch, roll) @ p + np.array([tx, ty, tz])
    z = float(np.clip(cam[2], 0.2, 10.0))
    centres[i] = f * cam[:2] / z + size / 2
    sides[i] = f * CROP_SIDE * head_lib.HEAD_SCALE / z
  centres = np.clip(np.nan_to_num(centres, nan=size / 2), -size, 2 * size)
  return centres, np.clip(np.nan_to_num(sides, nan=size / 2), 4.0, 4.0 * size)


def crop_faces(frames: np.ndarray, pose: np.ndarray, out_size: int,
               margin: float = 1.0) -> np.ndarray:
  """uint8 [T, out, out, 3] face crops (`margin` crops wide) of uint8 frames [T, S, S, 3] posed
  as `pose` [T, 6]. Shrinking goes through an area resize first, so any S gives the same crop."""
  import cv2
  frames = np.asarray(frames)
  size = frames.shape[1]
  centres, sides = face_boxes(pose, size)
  out = np.empty((len(frames), out_size, out_size, 3), np.uint8)
  for i, img in enumerate(frames):
    (cx, cy), region = centres[i], sides[i] * margin
    k = region / out_size                       # input pixels per output pixel
    if k > 1.0:
      new = max(1, int(round(size / k)))
      img = cv2.resize(img, (new, new), interpolation=cv2.INTER_AREA)
      r = new / size
      cx, cy, region = cx * r, cy * r, region * r
      k = region / out_size
    m = np.array([[k, 0.0, cx - region / 2 + 0.5 * k - 0.5],
                  [0.0, k, cy - region / 2 + 0.5 * k - 0.5]], np.float64)
    out[i] = cv2.warpAffine(np.ascontiguousarray(img), m, (out_size, out_size),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
  return out


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 [T, S, S, 3] -> uint8 [T, size, size, 3] (area when shrinking, bilinear otherwise)."""
  frames = np.asarray(frames)
  if frames.shape[1] == size:
    return np.ascontiguousarray(frames)
  import cv2
  interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_LINEAR
  out = np.empty((frames.shape[0], size, size, 3), np.uint8)
  for i, f in enumerate(frames):
    out[i] = cv2.resize(f, (size, size), interpolation=interp)
  return out


# ----------------------------------------------------------------------------- model

class ConvNet(nn.Module):
  """Strided conv stages (conv s2 + conv s1, GroupNorm, ReLU; the first stage has only its
  strided conv), flattened (position matters) into one hidden layer and a linear read-out."""
  widths: Sequence[int]
  hidden: int
  outputs: int

  @nn.compact
  def __call__(self, x):
    """x: float [B, S, S, 3] in [0, 1] -> [B, outputs]."""
    x = x * 2.0 - 1.0
    for i, w in enumerate(self.widths):
      for stride in ((2,) if i == 0 else (2, 1)):
        x = nn.Conv(w, (3, 3), strides=stride, padding=1, use_bias=False)(x)
        x = nn.GroupNorm(num_groups=min(8, w // 4))(x)
        x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.outputs)(x)


class FactorNet(nn.Module):
  """Two stages: `pose` reads the head pose from the whole (small) frame; `face` reads mouth,
  pose angles, gaze, blink and emotion from the face crop that pose locates."""
  global_widths: Sequence[int]
  global_hidden: int
  face_widths: Sequence[int]
  face_hidden: int

  def setup(self):
    self.global_net = ConvNet(self.global_widths, self.global_hidden, GLOBAL_OUT)
    self.face_net = ConvNet(self.face_widths, self.face_hidden, FACE_OUT)

  def pose(self, g):
    return self.global_net(g)

  def face(self, f):
    return self.face_net(f)

  def __call__(self, g, f):
    return self.global_net(g), self.face_net(f)


@dataclasses.dataclass(frozen=True)
class NetConfig(artifacts.JsonConfig):
  global_size: int = 64
  face_size: int = 96
  global_widths: tuple = (16, 24, 32, 48, 64)
  global_hidden: int = 64
  face_widths: tuple = (16, 32, 48, 64, 96)
  face_hidden: int = 96

  def module(self) -> FactorNet:
    return FactorNet(tuple(self.global_widths), self.global_hidden, tuple(self.face_widths),
                     self.face_hidden)



def _init_params(cfg: NetConfig, seed: int = 0):
  g = jnp.zeros((1, cfg.global_size, cfg.global_size, 3), jnp.float32)
  f = jnp.zeros((1, cfg.face_size, cfg.face_size, 3), jnp.float32)
  return jax.jit(cfg.module().init)(jax.random.PRNGKey(seed), g, f)["params"]


def _param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


# ----------------------------------------------------------------------------- inference

@functools.lru_cache(maxsize=8)
def _forward_fns(cfg: NetConfig):
  module = cfg.module()

  @jax.jit
  def pose(params, x_uint8):
    return module.apply({"params": params}, x_uint8.astype(jnp.float32) / 255.0,
                        method=FactorNet.pose)

  @jax.jit
  def face(params, x_uint8):
    return module.apply({"params": params}, x_uint8.astype(jnp.float32) / 255.0,
                        method=FactorNet.face)
  return pose, face


def _denorm_pose(g_out: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
  return np.asarray(g_out, np.float32) * std[I_POSE:I_POSE + 6] + mean[I_POSE:I_POSE + 6]


def _decode_outputs(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict:
  """Raw outputs [T, GLOBAL_OUT + FACE_OUT] -> the factor dict (denormalised, bounded where
  bounded). Pose angles come from the face stage, translations from the global stage."""
  raw = np.asarray(raw, np.float32)
  g, f = raw[:, :GLOBAL_OUT], raw[:, GLOBAL_OUT:]
  face_reg = f[:, :FACE_REG] * std[FACE_IDX] + mean[FACE_IDX]
  pose = np.concatenate([face_reg[:, 3:6], _denorm_pose(g, mean, std)[:, 3:6]], 1)
  logits = f[:, FACE_REG + 1:].astype(np.float64)
  logits -= logits.max(-1, keepdims=True)
  probs = np.exp(logits)
  probs /= probs.sum(-1, keepdims=True)
  return {
      "mouth": np.clip(face_reg[:, 0:3], 0.0, 1.0).astype(np.float32),
      "pose": pose.astype(np.float32),
      "gaze": face_reg[:, 6:8].astype(np.float32),
      "blink": (1.0 / (1.0 + np.exp(-f[:, FACE_REG].astype(np.float64)))).astype(np.float32),
      "emotion_intensity": np.clip(face_reg[:, 8], 0.0, 1.0).astype(np.float32),
      "emotion": probs.argmax(-1).astype(np.int32),
      "emotion_probs": probs.astype(np.float32),
      "distance": pose[:, 5].astype(np.float32),
  }


class FactorRegressor:
  """A trained FactorNet with its target statistics. `predict` takes uint8 frames of any size."""

  def __init__(self, params, config: NetConfig, stats: dict, meta: dict | None = None):
    self.params = jax.tree_util.tree_map(jnp.asarray, params)
    self.config = config
    self.mean = np.asarray(stats["mean"], np.float32)
    self.std = np.asarray(stats["std"], np.float32)
    if self.mean.shape != (REG_DIM,) or self.std.shape != (REG_DIM,):
      raise ValueError(f"target statistics must have {REG_DIM} entries")
    self.meta = dict(meta or {})

  def raw(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Network outputs [T, GLOBAL_OUT + FACE_OUT] for uint8 frames [T, S, S, 3]
    (fixed-size batches: one compile per batch size)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
      raise ValueError(f"frames must be uint8 [T, S, S, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
      raise ValueError(f"frames must be uint8, got {frames.dtype}")
    n = frames.shape[0]
    out = np.empty((n, GLOBAL_OUT + FACE_OUT), np.float32)
    if n == 0:
      return out
    bs = max(1, min(int(batch_size), n))
    pose_fn, face_fn = _forward_fns(self.config)
    cfg = self.config

    def run(fn, x, m):
      if m < bs:
        x = np.concatenate([x, np.zeros((bs - m, *x.shape[1:]), np.uint8)])
      return np.asarray(fn(self.params, jnp.asarray(x)))[:m]

    for i in range(0, n, bs):
      chunk = frames[i:i + bs]
      m = chunk.shape[0]
      g = run(pose_fn, resize_frames(chunk, cfg.global_size), m)
      crops = crop_faces(chunk, _denorm_pose(g, self.mean, self.std), cfg.face_size)
      out[i:i + m, :GLOBAL_OUT] = g
      out[i:i + m, GLOBAL_OUT:] = run(face_fn, crops, m)
    return out

  def predict(self, frames: np.ndarray, batch_size: int = 64) -> dict:
    """uint8 [T, S, S, 3] -> dict of numpy arrays (see the module docstring)."""
    return _decode_outputs(self.raw(frames, batch_size), self.mean, self.std)


def save(out_dir: str, reg: FactorRegressor, extra_meta: dict | None = None) -> str:
  """Writes out_dir/factors.msgpack (float32 params) and out_dir/factors.json, atomically
  (vasa_jax.artifacts)."""
  from vasa_jax import artifacts
  params = artifacts.to_host(reg.params)
  meta = {
      "format": FORMAT, "version": VERSION, "config": reg.config.to_json(),
      "emotions": list(EMOTIONS), "targets": list(FACTOR_NAMES),
      "stats": {"mean": [float(x) for x in reg.mean], "std": [float(x) for x in reg.std]},
      "crop": {"centre": list(CROP_CENTRE), "side": CROP_SIDE},
      "params": _param_count(params),
      **{k: v for k, v in reg.meta.items()
         if k not in ("format", "version", "config", "stats", "params", "crop")},
      **(extra_meta or {}),
  }
  return artifacts.write_weights_folder(out_dir, weights={PARAMS_FILE: params},
                                        documents={META_FILE: meta}, prefix=".factors.")


def load(path: str | None = None) -> FactorRegressor:
  """A FactorRegressor from a folder written by `save` (default: the bundled weights)."""
  path = os.path.abspath(os.fspath(path or default_dir()))
  meta_path, params_path = os.path.join(path, META_FILE), os.path.join(path, PARAMS_FILE)
  if not (os.path.isfile(meta_path) and os.path.isfile(params_path)):
    raise FileNotFoundError(f"no factor-regressor weights in {path} (need {META_FILE} and "
                            f"{PARAMS_FILE}; train them with `vasa-jax eval factors`)")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT or int(meta.get("version", -1)) != VERSION:
    raise InputError(f"{meta_path}: not a {FORMAT} v{VERSION} file")
  if tuple(meta.get("emotions", ())) != EMOTIONS:
    raise InputError(f"{meta_path}: emotion classes {meta.get('emotions')} != {list(EMOTIONS)}")
  if meta.get("crop") != {"centre": list(CROP_CENTRE), "side": CROP_SIDE}:
    raise InputError(f"{meta_path}: trained with another face crop ({meta.get('crop')})")
  cfg = NetConfig.from_json(meta["config"])
  with open(params_path, "rb") as f:
    params = serialization.msgpack_restore(f.read())
  ref = jax.eval_shape(lambda: _init_params(cfg))
  got = {jax.tree_util.keystr(k): np.shape(v)
         for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  want = {jax.tree_util.keystr(k): tuple(v.shape)
          for k, v in jax.tree_util.tree_flatten_with_path(ref)[0]}
  if got != want:
    raise InputError(f"{params_path}: parameters do not match the config in {META_FILE}")
  return FactorRegressor(params, cfg, meta["stats"], meta)


# ----------------------------------------------------------------------------- data

def _frame_targets(rec: dict, idx: np.ndarray) -> dict:
  """Per-frame labels of frames `idx` of one record (raw units)."""
  emo_i = np.asarray(rec["emotion_intensity"], np.float32)[idx]
  cls = int(rec["control_emotion"]) if int(rec.get("has_control_emotion", 0)) else -1
  classes = np.where(emo_i > 0, cls, 0 if cls >= 0 else -1).astype(np.int32)
  reg = np.concatenate([np.asarray(rec["mouth"], np.float32)[idx],
                        np.asarray(rec["pose"], np.float32)[idx],
                        np.asarray(rec["gaze"], np.float32)[idx], emo_i[:, None]], 1)
  return {"reg": reg, "blink": np.asarray(rec["blink"], np.float32)[idx], "emotion": classes}


def _pick_frames(rec: dict, k: int, rng: np.random.Generator, blink_share: float) -> np.ndarray:
  """k distinct frames: up to blink_share*k from blinks (blink > 0.3), the rest uniform."""
  t = int(rec["num_frames"])
  if k >= t:
    return np.arange(t)
  blinks = np.nonzero(np.asarray(rec["blink"]) > 0.3)[0]
  nb = min(len(blinks), int(round(k * blink_share)))
  chosen = list(rng.choice(blinks, nb, replace=False)) if nb else []
  rest = np.setdiff1d(np.arange(t), chosen)
  chosen += list(rng.choice(rest, k - nb, replace=False))
  return np.sort(np.asarray(chosen, np.int64))


_CLIP_KEYS = ("control_gaze", "control_distance", "control_emotion", "has_control_gaze",
              "has_control_distance", "has_control_emotion")


def read_clips(name: str, split: str, data_dir: str, *, frames_per_clip: int, seed: int,
               blink_share: float = 0.0, evenly: bool = False, max_clips: int | None = None):
  """Yields (decoded frames uint8 [k, S, S, 3], labels dict, clip dict) per clip: evenly
  spaced frames (evenly=True) or random ones with blinks oversampled."""
  import tensorflow_datasets as tfds

  from vasa_jax.data import records
  src = tfds.data_source(name, split=split, data_dir=data_dir)
  n = len(src) if max_clips is None else min(len(src), max_clips)
  rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
  for c in range(n):
    rec = src[c]
    t = int(rec["num_frames"])
    if t == 0:
      continue
    if evenly:
      idx = np.unique(np.linspace(0, t - 1, min(t, frames_per_clip)).round().astype(np.int64))
    else:
      idx = _pick_frames(rec, frames_per_clip, rng, blink_share)
    frames = np.stack([records.decode_jpeg(rec["frames"][i]) for i in idx])
    labels = _frame_targets(rec, idx)
    labels["has"] = np.repeat(np.array(
        [[int(rec.get(f, 0)) for f in ("has_mouth", "has_pose", "has_gaze", "has_blink",
                                       "has_emotion")]], np.int32), len(idx), 0)
    yield frames, labels, {k: np.asarray(rec[k]) for k in _CLIP_KEYS}


def _collect(items, frame_fn) -> dict:
  """Concatenates per-clip (frames, labels, clip) items; frame_fn(frames, labels) -> dict of
  per-frame arrays to keep."""
  cols: dict[str, list] = {}
  clips: dict[str, list] = {k: [] for k in _CLIP_KEYS}
  for c, (frames, labels, clip) in enumerate(items):
    per = {**frame_fn(frames, labels), **labels,
           "clip": np.full(len(frames), c, np.int32)}
    for k, v in per.items():
      cols.setdefault(k, []).append(v)
    for k in _CLIP_KEYS:
      clips[k].append(clip[k])
  out = {k: np.concatenate(v) for k, v in cols.items()}
  out.update({k: np.stack(v) for k, v in clips.items()})
  return out


def build_train_cache(name: str, data_dir: str, cfg: NetConfig, *, frames_per_clip: int,
                      seed: int, blink_share: float, cache_dir: str | None,
                      max_clips: int | None = None) -> dict:
  """Training arrays, cached as .npz: `global` (whole frames at global_size), `face` (face
  patches TRAIN_MARGIN crops wide around the true pose), labels and clip controls."""
  patch = int(round(cfg.face_size * TRAIN_MARGIN))
  tag = (f"{name.replace('/', '_')}_train_g{cfg.global_size}_f{patch}_k{frames_per_clip}"
         f"_seed{seed}_b{blink_share:g}_n{max_clips or 'all'}")
  path = os.path.join(cache_dir, tag + ".npz") if cache_dir else None
  if path and os.path.isfile(path):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}

  def views(frames, labels):
    return {"global": resize_frames(frames, cfg.global_size),
            "face": crop_faces(frames, labels["reg"][:, I_POSE:I_POSE + 6], patch, TRAIN_MARGIN)}
  out = _collect(read_clips(name, "train", data_dir, frames_per_clip=frames_per_clip, seed=seed,
                            blink_share=blink_share, max_clips=max_clips), views)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cache.", suffix=".npz", dir=cache_dir)
    os.close(fd)
    np.savez(tmp, **out)
    os.replace(tmp, path)
  return out


def _reg_mask(has: np.ndarray) -> np.ndarray:
  """[N, REG_DIM] 0/1 from the has_* flags (mouth, pose, gaze, _, emotion)."""
  return np.concatenate([np.repeat(has[:, 0:1], 3, 1), np.repeat(has[:, 1:2], 6, 1),
                         np.repeat(has[:, 2:3], 2, 1), has[:, 4:5]], 1).astype(np.float32)


# ----------------------------------------------------------------------------- augmentation

def _colour(key, x):
  """Contrast, saturation, brightness, white balance, sometimes a blur, a little noise."""
  b = x.shape[0]
  ks = jax.random.split(key, 7)

  def u(k, lo, hi, shape=(b, 1, 1, 1)):
    return jax.random.uniform(k, shape, minval=lo, maxval=hi)

  mean = x.mean((1, 2, 3), keepdims=True)
  x = (x - mean) * u(ks[0], 0.75, 1.25) + mean
  grey = x.mean(-1, keepdims=True)
  x = grey + (x - grey) * u(ks[1], 0.7, 1.3)
  x = x * u(ks[2], 0.75, 1.2) * u(ks[3], 0.9, 1.1, (b, 1, 1, 3))
  k1 = jnp.array([1.0, 2.0, 1.0]) / 4.0
  kern = jnp.tile((k1[:, None] * k1[None, :])[:, :, None, None], (1, 1, 1, 3))
  blurred = jax.lax.conv_general_dilated(x, kern, (1, 1), "SAME", feature_group_count=3,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x = jnp.where(jax.random.bernoulli(ks[4], 0.35, (b, 1, 1, 1)), blurred, x)
  x = x + jax.random.normal(ks[5], x.shape) * u(ks[6], 0.0, 0.025)
  return jnp.clip(x, 0.0, 1.0)


def _bilinear_crop(patch, out_size: int, margin: float, scale, offset):
  """Samples [B, out, out, C] from patches [B, P, P, C] that span `margin` crops: the crop is
  scaled by `scale` [B] and moved by `offset` [B, 2] (in crop sides)."""
  b, p = patch.shape[0], patch.shape[1]
  a = (jnp.arange(out_size) + 0.5) / out_size - 0.5
  per_side = p / margin
  xs = p / 2 + (a[None] * scale[:, None] + offset[:, 0:1]) * per_side - 0.5
  ys = p / 2 + (a[None] * scale[:, None] + offset[:, 1:2]) * per_side - 0.5
  x0, y0 = jnp.floor(xs), jnp.floor(ys)
  wx, wy = (xs - x0)[:, None, :, None], (ys - y0)[:, :, None, None]
  xi = lambda d: jnp.clip(x0 + d, 0, p - 1).astype(jnp.int32)[:, None, :]  # noqa: E731
  yi = lambda d: jnp.clip(y0 + d, 0, p - 1).astype(jnp.int32)[:, :, None]  # noqa: E731
  bi = jnp.arange(b)[:, None, None]
  g = lambda dy, dx: patch[bi, yi(dy), xi(dx)]  # noqa: E731
  return ((1 - wy) * ((1 - wx) * g(0, 0) + wx * g(0, 1))
          + wy * ((1 - wx) * g(1, 0) + wx * g(1, 1)))


def augment(rng, g, f, reg, *, max_shift: int, face_size: int, crop_jitter: float = 0.05,
            scale_jitter: float = 0.07):
  """Augments global frames g [B, Sg, Sg, 3] and face patches f [B, P, P, 3] (floats in [0, 1],
  TRAIN_MARGIN crops wide) and their labels reg [B, REG_DIM] (raw units).

  One horizontal flip per example for both views mirrors yaw, roll, tx and gaze theta (the crop
  template is symmetric). The global view is shifted by up to max_shift pixels, moving tx, ty
  by shift * tz / f; the face crop is taken at a random offset and scale around the true one,
  as the global stage's pose error would place it. Each view gets its own colour jitter."""
  b, s = g.shape[0], g.shape[1]
  ks = jax.random.split(rng, 6)
  flip = jax.random.bernoulli(ks[0], 0.5, (b,))
  g = jnp.where(flip[:, None, None, None], g[:, :, ::-1], g)
  f = jnp.where(flip[:, None, None, None], f[:, :, ::-1], f)
  sign = jnp.ones((REG_DIM,)).at[jnp.array([I_POSE, I_POSE + 2, I_POSE + 3, I_GAZE])].set(-1.0)
  reg = jnp.where(flip[:, None], reg * sign, reg)
  if max_shift > 0:
    d = jax.random.randint(ks[1], (b, 2), -max_shift, max_shift + 1)
    gp = jnp.pad(g, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)), mode="edge")
    g = jax.vmap(lambda im, dd: jax.lax.dynamic_slice(
        im, (max_shift - dd[1], max_shift - dd[0], 0), (s, s, 3)))(gp, d)
    tz = reg[:, I_POSE + 5]
    reg = reg.at[:, I_POSE + 3].add(d[:, 0] * tz / focal_px(s))
    reg = reg.at[:, I_POSE + 4].add(d[:, 1] * tz / focal_px(s))
  scale = jnp.exp(jax.random.uniform(ks[2], (b,), minval=-scale_jitter, maxval=scale_jitter))
  offset = jax.random.uniform(ks[3], (b, 2), minval=-crop_jitter, maxval=crop_jitter)
  f = _bilinear_crop(f, face_size, TRAIN_MARGIN, scale, offset)
  return _colour(ks[4], g), _colour(ks[5], f), reg


# ----------------------------------------------------------------------------- training

def _huber(err):
  return jnp.where(jnp.abs(err) < 1.0, 0.5 * err ** 2, jnp.abs(err) - 0.5)


def _loss_fn(params, module, g, f, reg_n, mask, blink, blink_m, cls):
  g_out, f_out = module.apply({"params": params}, g, f)
  pm = mask[:, I_POSE:I_POSE + 6]
  l_pose = (_huber(g_out - reg_n[:, I_POSE:I_POSE + 6]) * pm).sum() / jnp.maximum(pm.sum(), 1.0)
  fi = jnp.asarray(FACE_IDX)
  fm = mask[:, fi]
  l_face = (_huber(f_out[:, :FACE_REG] - reg_n[:, fi]) * fm).sum() / jnp.maximum(fm.sum(), 1.0)
  z = f_out[:, FACE_REG]
  bce = jnp.maximum(z, 0) - z * blink + jnp.log1p(jnp.exp(-jnp.abs(z)))
  l_blink = (bce * blink_m).sum() / jnp.maximum(blink_m.sum(), 1.0)
  logp = jax.nn.log_softmax(f_out[:, FACE_REG + 1:])
  valid = cls >= 0
  ce = -jnp.take_along_axis(logp, jnp.maximum(cls, 0)[:, None], 1)[:, 0]
  l_cls = jnp.where(valid, ce, 0.0).sum() / jnp.maximum(valid.sum(), 1)
  total = 2.0 * l_pose + 3.0 * l_face + l_blink + 0.5 * l_cls
  return total, {"pose": l_pose, "face": l_face, "blink": l_blink, "emotion": l_cls}


def train(data: dict, *, cfg: NetConfig, steps: int, batch_size: int, seed: int, lr: float,
          max_shift: int, log_every: int = 50, time_limit_s: float | None = None):
  """Trains a FactorNet on a cache from `build_train_cache` through the one training loop
  (vasa_jax/train/loop.py), in memory; returns (FactorRegressor, info)."""
  import ml_collections
  import optax

  from vasa_jax.train import common, loop
  reg_raw = data["reg"].astype(np.float32)
  mask = _reg_mask(data["has"])
  mean = (reg_raw * mask).sum(0) / np.maximum(mask.sum(0), 1)
  std = np.sqrt((((reg_raw - mean) ** 2) * mask).sum(0) / np.maximum(mask.sum(0), 1))
  std = np.maximum(std, 1e-3).astype(np.float32)
  mean = mean.astype(np.float32)
  module = cfg.module()
  params = _init_params(cfg, seed)
  # AdamW with unit rate; the rate itself is fed per step (warmup + cosine over the run's
  # progress, which with a time limit is the larger of the step and the time fraction).
  tx = common.adamw(1.0, weight_decay=1e-4)
  warmup = min(100, steps // 10 + 1)

  def rate(i: int, elapsed: float) -> float:
    if i < warmup:
      return lr * (i + 1) / warmup
    frac = (i - warmup) / max(1, steps - warmup)
    if time_limit_s:
      frac = max(frac, elapsed / time_limit_s)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

  mean_j, std_j = jnp.asarray(mean), jnp.asarray(std)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, batch):
    params, opt = state
    lr_t, rng, g_u8, f_u8, reg, mask, blink, blink_m, cls = batch
    g, f, reg = augment(rng, g_u8.astype(jnp.float32) / 255.0, f_u8.astype(jnp.float32) / 255.0,
                        reg, max_shift=max_shift, face_size=cfg.face_size)
    reg_n = (reg - mean_j) / std_j
    (loss, parts), grads = jax.value_and_grad(_loss_fn, has_aux=True)(
        params, module, g, f, reg_n, mask, blink, blink_m, cls)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, jax.tree_util.tree_map(lambda u: u * lr_t, updates))
    return (params, opt), {"loss": loss, **parts, "grad_norm": common.global_norm(grads)}

  n = len(reg_raw)
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  blink_m = data["has"][:, 3].astype(np.float32)
  t0 = time.perf_counter()
  hist, window = [], []
  counter = iter(range(steps + 1))

  def draw():
    i = next(counter)
    b = rng.choice(n, min(batch_size, n), replace=False)
    return (np.float32(rate(i, time.perf_counter() - t0)), jax.random.fold_in(key, i),
            data["global"][b], data["face"][b], reg_raw[b], mask[b], data["blink"][b],
            blink_m[b], data["emotion"][b])

  def keep(done, state, batch, metrics):     # the losses of the steps since the last log line
    if metrics:
      window.append(metrics["loss"])

  def record(done, scalars):
    rec = {"step": done, "loss": float(np.mean(window)), "grad_norm": scalars["grad_norm"],
           **{k: v for k, v in scalars.items() if k not in ("loss", "grad_norm")
              and not k.startswith("data/")},
           "seconds": round(time.perf_counter() - t0, 1)}
    hist.append(rec)
    window.clear()
    print(json.dumps(rec), file=sys.stderr, flush=True)

  out = loop.run(ml_collections.ConfigDict({"steps": steps, "log_every": log_every}),
                 state=(params, tx.init(params)), start=0, data_iter=loop.forever(draw),
                 train_step=step, make_batch=lambda b: b, on_step=[keep], on_log=[record],
                 max_seconds=time_limit_s or 0.0)
  done, params = out.step, out.state[0]
  if window:
    hist.append({"step": done, "loss": float(np.mean(window)),
                 "seconds": round(time.perf_counter() - t0, 1)})
  seconds = time.perf_counter() - t0
  reg_model = FactorRegressor(jax.device_get(params), cfg, {"mean": mean, "std": std})
  info = {"steps": done, "batch_size": batch_size, "lr": lr, "seed": seed,
          "train_frames": int(n), "train_seconds": round(seconds, 1),
          "time_limit_s": time_limit_s, "history": hist}
  return reg_model, info


# ----------------------------------------------------------------------------- validation

def pearson(a, b) -> float:
  a = np.asarray(a, np.float64) - np.mean(a)
  b = np.asarray(b, np.float64) - np.mean(b)
  den = math.sqrt(float((a * a).sum() * (b * b).sum()))
  return float((a * b).sum() / den) if den > 1e-12 else 0.0


def auc(score, positive) -> float | None:
  """ROC AUC by ranks (ties averaged); None without both classes."""
  score = np.asarray(score, np.float64)
  positive = np.asarray(positive, bool)
  npos, nneg = int(positive.sum()), int((~positive).sum())
  if npos == 0 or nneg == 0:
    return None
  from scipy.stats import rankdata
  r = rankdata(score)
  return float((r[positive].sum() - npos * (npos + 1) / 2) / (npos * nneg))


# Report units: angles in degrees, translations in mm, the rest as is.
_UNITS = {"yaw": ("deg", 180 / math.pi), "pitch": ("deg", 180 / math.pi),
          "roll": ("deg", 180 / math.pi), "gaze_theta": ("deg", 180 / math.pi),
          "gaze_phi": ("deg", 180 / math.pi), "tx": ("mm", 1000.0), "ty": ("mm", 1000.0),
          "tz": ("mm", 1000.0)}


def load_eval_frames(name: str, split: str, data_dir: str, *, frames_per_clip: int,
                     max_clips: int | None = None) -> dict:
  """Evenly spaced full-resolution frames of every clip of a split, with labels and controls."""
  return _collect(read_clips(name, split, data_dir, frames_per_clip=frames_per_clip, seed=0,
                             evenly=True, max_clips=max_clips),
                  lambda frames, labels: {"frames": frames})


def validate(reg: FactorRegressor, data: dict, *, batch_size: int = 64) -> dict:
  """Frame- and clip-level figures of `reg` on `load_eval_frames` data (held-out clips)."""
  raw = reg.raw(data["frames"], batch_size)
  pred = _decode_outputs(raw, reg.mean, reg.std)
  p_reg = np.concatenate([pred["mouth"], pred["pose"], pred["gaze"],
                          pred["emotion_intensity"][:, None]], 1)
  gt = data["reg"].astype(np.float64)
  mask = _reg_mask(data["has"]).astype(bool)
  frame = {}
  for j, name in enumerate(FACTOR_NAMES):
    m = mask[:, j]
    if not m.any():
      continue
    unit, scale = _UNITS.get(name, ("", 1.0))
    frame[name] = {
        "mae": round(float(np.abs(p_reg[m, j] - gt[m, j]).mean() * scale), 4),
        "mae_train_mean": round(float(np.abs(reg.mean[j] - gt[m, j]).mean() * scale), 4),
        "pearson_r": round(pearson(p_reg[m, j], gt[m, j]), 4),
        "unit": unit}
  # The global stage's own angles (it only places the crop; the reported ones are the face's).
  g_ang = _denorm_pose(raw[:, :GLOBAL_OUT], reg.mean, reg.std)[:, :3]
  pm = mask[:, I_POSE]
  global_stage = {f"{k}_mae_deg": round(float(np.degrees(np.abs(g_ang[pm, j] - gt[pm, I_POSE + j]))
                                                .mean()), 4) if pm.any() else None
                  for j, k in enumerate(("yaw", "pitch", "roll"))}
  bm = data["has"][:, 3] > 0
  blink = {}
  if bm.any():
    closed = data["blink"][bm] > 0.5
    a = auc(pred["blink"][bm], closed)
    blink = {"auc_closed": None if a is None else round(a, 4),
             "pearson_r": round(pearson(pred["blink"][bm], data["blink"][bm]), 4),
             "mae": round(float(np.abs(pred["blink"][bm] - data["blink"][bm]).mean()), 4),
             "closed_frames": int(closed.sum()), "frames": int(bm.sum())}
  cls = data["emotion"]
  cm = cls >= 0
  emotion = {}
  if cm.any():
    counts = np.bincount(cls[cm], minlength=len(EMOTIONS))
    confusion = np.zeros((len(EMOTIONS), len(EMOTIONS)), np.int64)
    np.add.at(confusion, (cls[cm], pred["emotion"][cm]), 1)
    emotion = {"accuracy": round(float((pred["emotion"][cm] == cls[cm]).mean()), 4),
               "chance_majority": round(float(counts.max() / counts.sum()), 4),
               "chance_uniform": round(1.0 / len(EMOTIONS), 4),
               "classes": list(EMOTIONS), "confusion_true_by_pred": confusion.tolist()}
  # Clip level: mean prediction per clip vs the clip's controls.
  clip = data["clip"]
  n_clips = len(data["control_distance"])
  per = lambda v: np.stack([v[clip == c].mean(0) for c in range(n_clips)])  # noqa: E731
  deg = 180 / math.pi
  controls: dict[str, Any] = {}
  g = data["has_control_gaze"] > 0
  if g.any():
    pg, tg, cg = per(pred["gaze"])[g], per(gt[:, I_GAZE:I_GAZE + 2])[g], data["control_gaze"][g]
    controls["gaze"] = {
        "clips": int(g.sum()),
        "mae_deg": round(float(np.abs(pg - cg).mean() * deg), 3),
        "mae_theta_deg": round(float(np.abs(pg[:, 0] - cg[:, 0]).mean() * deg), 3),
        "mae_phi_deg": round(float(np.abs(pg[:, 1] - cg[:, 1]).mean() * deg), 3),
        "pearson_r_theta": round(pearson(pg[:, 0], cg[:, 0]), 4),
        "pearson_r_phi": round(pearson(pg[:, 1], cg[:, 1]), 4),
        "mae_deg_true_tracks": round(float(np.abs(tg - cg).mean() * deg), 3),
        "mae_deg_predict_zero": round(float(np.abs(cg).mean() * deg), 3)}
  d = data["has_control_distance"] > 0
  if d.any():
    pd_, td, cd = per(pred["distance"])[d], per(gt[:, I_POSE + 5])[d], data["control_distance"][d]
    controls["distance"] = {
        "clips": int(d.sum()),
        "mae_m": round(float(np.abs(pd_ - cd).mean()), 4),
        "pearson_r": round(pearson(pd_, cd), 4),
        "mae_m_true_tracks": round(float(np.abs(td - cd).mean()), 4),
        "mae_m_predict_mean": round(float(np.abs(cd - cd.mean()).mean()), 4)}
  e = data["has_control_emotion"] > 0
  if e.any():
    pe = per(pred["emotion_probs"])[e].argmax(-1)
    ce = data["control_emotion"][e]
    counts = np.bincount(ce, minlength=len(EMOTIONS))
    controls["emotion"] = {
        "clips": int(e.sum()),
        "accuracy": round(float((pe == ce).mean()), 4),
        "chance_majority": round(float(counts.max() / counts.sum()), 4)}
  return {"frames": int(len(gt)), "clips": int(n_clips), "frame": frame, "blink": blink,
          "emotion": emotion, "clip_controls": controls, "global_stage": global_stage}


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="vasa-jax eval factors",
                              description="Train and validate the frames -> factors regressor.")
  p.add_argument("--data-dir", required=True, help="TFDS data dir holding --dataset")
  p.add_argument("--dataset", default=DEFAULT_DATASET,
                 help=f"TFDS name (default {DEFAULT_DATASET})")
  p.add_argument("--out", default=default_dir(), help="folder for the weights (default: bundled)")
  p.add_argument("--report", default="docs/evaluators/factors.json", help="validation JSON")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--frames-per-clip", type=int, default=12, help="train frames per clip")
  p.add_argument("--val-frames-per-clip", type=int, default=25)
  p.add_argument("--max-clips", type=int, default=None, help="per split (default: all)")
  p.add_argument("--max-shift", type=int, default=2, help="global-view shift, pixels")
  p.add_argument("--time-limit", type=float, default=None,
                 help="seconds of training; the learning-rate schedule ends there")
  p.add_argument("--cache-dir",
                 default=os.path.join(tempfile.gettempdir(), "vasa_jax_factors_cache"))
  p.add_argument("--validate-only", action="store_true", help="validate the weights in --out")
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  args = _parser().parse_args(argv)
  if args.steps < 1 or args.batch_size < 1 or args.frames_per_clip < 1:
    print("vasa-jax eval factors: error: --steps, --batch-size and --frames-per-clip must be >= 1",
          file=sys.stderr)
    return 2
  t0 = time.perf_counter()
  try:
    if args.validate_only:
      reg, info = load(args.out), {}
    else:
      cfg = NetConfig()
      tr = build_train_cache(args.dataset, args.data_dir, cfg, frames_per_clip=args.frames_per_clip,
                             seed=args.seed, blink_share=0.25, cache_dir=args.cache_dir,
                             max_clips=args.max_clips)
      print(f"data: {len(tr['reg'])} train frames ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr, flush=True)
      reg, info = train(tr, cfg=cfg, steps=args.steps, batch_size=args.batch_size,
                        seed=args.seed, lr=args.lr, max_shift=args.max_shift,
                        time_limit_s=args.time_limit)
      del tr
      info.update(dataset=args.dataset, train_split="train", frames_per_clip=args.frames_per_clip,
                  max_shift=args.max_shift)
    val = load_eval_frames(args.dataset, "test", args.data_dir,
                           frames_per_clip=args.val_frames_per_clip, max_clips=args.max_clips)
  except (FileNotFoundError, ValueError, AssertionError) as e:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"vasa-jax eval factors: error: {msg}", file=sys.stderr)
    return 2
  summary = validate(reg, val, batch_size=args.batch_size)
  summary.update(dataset=args.dataset, split="test (identities disjoint from train)",
                 val_frames_per_clip=args.val_frames_per_clip)
  if not args.validate_only:
    slim = {k: v for k, v in info.items() if k != "history"}
    save(args.out, reg, {"train": slim, "validation": {
        "frame_mae": {k: v["mae"] for k, v in summary["frame"].items()},
        "emotion_accuracy": summary["emotion"].get("accuracy"),
        "blink_auc": summary["blink"].get("auc_closed")}})
    summary["train"] = info
  summary["params"] = _param_count(reg.params)
  out_abs = os.path.abspath(args.out)
  summary["weights"] = os.path.relpath(out_abs) if out_abs.startswith(os.getcwd()) else out_abs
  summary["seconds_total"] = round(time.perf_counter() - t0, 1)
  if args.report:
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    tmp = args.report + ".partial"
    with open(tmp, "w") as f:
      json.dump(summary, f, indent=1)
    os.replace(tmp, args.report)
  print(json.dumps({k: v for k, v in summary.items() if k != "train"}, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

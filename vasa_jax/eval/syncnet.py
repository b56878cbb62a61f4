r"""A SyncNet-style audio-visual sync evaluator: Sync-C / Sync-D of a talking-face video.

VASA-1 reports lip-sync as SyncNet's confidence (Sync-C, higher is better) and distance
(Sync-D, lower is better). No pretrained SyncNet can be downloaded here, so this module trains
a small one of its own on our datasets and ships its weights
(`vasa_jax/assets/evaluators/syncnet/`). Its numbers are on its own scale: compare generated
videos with real footage scored by the same weights, never with published SyncNet figures.

Model. A window is 5 consecutive frames (0.2 s at 25 fps) and the same 0.2 s of audio
(samples [640 t, 640 (t + 5))).
  video: the mouth region of the aligned face crop, REGION = rows 0.52..0.86, columns
         0.25..0.75 of the side (the ellipse of `vasa_jax.losses.mouth_mask`, centre (0.6, 0.5),
         radii (0.11, 0.17), enlarged to cover where real and synthetic crops put the mouth),
         grey, resized to 32 x 48, minus the clip's mean mouth image, over the clip's pixel
         standard deviation (`normalise_crops`); the 5 frames are the channels;
  audio: log-mel, 40 bands, 4 mel frames per video frame (hop 160 samples), normalised per
         clip (`contrastive.normalise_log_mel`): [20, 40] per window.
Two small conv encoders map them to L2-normalised 128-d embeddings (~0.32 M parameters,
1.3 MB). Training draws 6 windows of each of 32 clips per batch, pairwise at least 3 frames
apart within 15 frames; the loss is InfoNCE within each clip's group (the same clip's audio 3-15
frames off is the only negative: timing, which no identity cue can solve) plus 0.3 x the
InfoNCE over the whole batch (other clips' audio too). Real clips (`talking_face_videos`) make
up half of the batches' clips, synthetic ones the rest; crops are jittered, mirrored and
contrast-scaled, mel bands masked, both get noise.

Scoring (`SyncEvaluator.score`). Embed every window of the clip; for offsets k in
[-max_offset, max_offset] the distance is the mean over audio windows t of
|| v(t + k) - a(t) || (Euclidean, unit embeddings: 0..2), over the t that are valid for every
offset. Sync-D is the minimum over k, Sync-C the median minus the minimum, and `offset` the
argmin: positive means the video lags the audio (the mouth shows at frame t + k what the
audio says at frame t). Validation: docs/evaluators/syncnet.json.

Train and validate (weights to --out, validation to --report):

    vasa-jax eval syncnet --data-dir /tmp/tfds_synth \
        --out vasa_jax/assets/evaluators/syncnet --report docs/evaluators/syncnet.json

or validate existing weights only: `... --eval-only --weights DIR`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vasa_jax import artifacts
from vasa_jax.eval import contrastive

log = logging.getLogger(__name__)

NAME = "syncnet"
from vasa_jax.constants import SAMPLES_PER_FRAME  # noqa: E402
from vasa_jax.data.records import text as _text  # noqa: E402
from vasa_jax.errors import InputError
REAL_DATASET = "talking_face_videos/r256"
SYNTH_DATASET = "synthetic_talking_heads/r256_n1000"


@dataclasses.dataclass(frozen=True)
class Config(artifacts.JsonConfig):
  region: tuple[float, float, float, float] = (0.52, 0.86, 0.25, 0.75)  # y0, y1, x0, x1
  crop: tuple[int, int] = (32, 48)        # mouth crop H, W
  margin: int = 3                         # extra crop pixels each side (training jitter)
  window: int = 5                         # frames per window
  n_mels: int = 40
  mel_per_frame: int = 4
  embed_dim: int = 128
  video_widths: tuple[int, ...] = (32, 48, 64, 96)
  audio_widths: tuple[int, ...] = (48, 96, 96)
  hidden: int = 128


# ----------------------------------------------------------------------------- features

def mouth_crops(frames: np.ndarray, cfg: Config = Config(),
                margin: int | None = None) -> np.ndarray:
  """Face crops uint8 [T, S, S, 3] (RGB) or [T, S, S] (grey) -> grey mouth crops uint8
  [T, H + 2 m, W + 2 m] of cfg.region, enlarged by `margin` crop pixels on every side."""
  import cv2
  frames = np.asarray(frames)
  if frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
    raise ValueError(f"frames must be [T, S, S, 3] RGB or [T, S, S] grey, got {frames.shape}")
  m = cfg.margin if margin is None else int(margin)
  h, w = cfg.crop
  sy, sx = frames.shape[1], frames.shape[2]
  y0, y1, x0, x1 = cfg.region
  py, px = (y1 - y0) / h, (x1 - x0) / w           # region per crop pixel
  r0 = int(round(max(0.0, y0 - m * py) * sy))
  r1 = int(round(min(1.0, y1 + m * py) * sy))
  c0 = int(round(max(0.0, x0 - m * px) * sx))
  c1 = int(round(min(1.0, x1 + m * px) * sx))
  out = np.empty((frames.shape[0], h + 2 * m, w + 2 * m), np.uint8)
  for i, f in enumerate(frames):
    f = np.ascontiguousarray(f[r0:r1, c0:c1])
    if f.ndim == 3:
      f = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
    out[i] = cv2.resize(f, (w + 2 * m, h + 2 * m), interpolation=cv2.INTER_AREA)
  return out


def normalise_crops(crops: np.ndarray) -> np.ndarray:
  """Per clip: minus the clip's mean mouth image, over the clip's pixel standard deviation
  (the appearance drops out, the mouth's motion stays; a still video gives ~0)."""
  c = np.asarray(crops, np.float32)
  return ((c - c.mean(axis=0, keepdims=True)) / (c.std() + 1.0) * 4.0).astype(np.float32)


def audio_features(audio_16k: np.ndarray, cfg: Config = Config()) -> np.ndarray:
  """16 kHz mono float audio -> normalised log-mel [T, mel_per_frame, n_mels]."""
  mel = contrastive.log_mel(audio_16k, n_mels=cfg.n_mels, per_frame=cfg.mel_per_frame)
  return contrastive.normalise_log_mel(mel)


def video_windows(video: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
  """[T, H, W] -> [N, H, W, window] (frames start .. start + window - 1 as channels)."""
  idx = np.asarray(starts)[:, None] + np.arange(window)[None, :]
  return np.moveaxis(video[idx], 1, -1)


def audio_windows(mel: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
  """[T, P, M] -> [N, window * P, M]."""
  idx = np.asarray(starts)[:, None] + np.arange(window)[None, :]
  x = mel[idx]
  return x.reshape(x.shape[0], -1, x.shape[-1])


def centre(video: np.ndarray, cfg: Config) -> np.ndarray:
  """Cuts the margin off [T, H + 2m, W + 2m] crops."""
  m = (video.shape[1] - cfg.crop[0]) // 2
  return video[:, m:m + cfg.crop[0], m:m + cfg.crop[1]]


# ----------------------------------------------------------------------------- model

class VideoEncoder(nn.Module):
  widths: Sequence[int]
  hidden: int
  embed_dim: int

  @nn.compact
  def __call__(self, x):                                   # [N, H, W, window]
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3, 3), strides=1 if i == 2 else 2, name=f"conv{i}")(x))
    x = nn.relu(nn.Conv(24, (1, 1), name="squeeze")(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, name="fc")(x))
    return contrastive.l2_normalise(nn.Dense(self.embed_dim, name="out")(x))


class AudioEncoder(nn.Module):
  widths: Sequence[int]
  hidden: int
  embed_dim: int

  @nn.compact
  def __call__(self, x):                                   # [N, window * P, n_mels]
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3,), strides=1 if i == 0 else 2, name=f"conv{i}")(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, name="fc")(x))
    return contrastive.l2_normalise(nn.Dense(self.embed_dim, name="out")(x))


class SyncNet(nn.Module):
  cfg: Config

  def setup(self):
    c = self.cfg
    self.video = VideoEncoder(c.video_widths, c.hidden, c.embed_dim)
    self.audio = AudioEncoder(c.audio_widths, c.hidden, c.embed_dim)
    self.log_scale = self.param("log_scale", lambda _: jnp.asarray(np.log(10.0), jnp.float32))

  def __call__(self, v, a):
    return self.video(v), self.audio(a), jnp.exp(jnp.minimum(self.log_scale, np.log(100.0)))

  def embed_video(self, v):
    return self.video(v)

  def embed_audio(self, a):
    return self.audio(a)


def init_params(cfg: Config, seed: int = 0):
  h, w = cfg.crop
  v = jnp.zeros((1, h, w, cfg.window), jnp.float32)
  a = jnp.zeros((1, cfg.window * cfg.mel_per_frame, cfg.n_mels), jnp.float32)
  return SyncNet(cfg).init(jax.random.key(seed), v, a)["params"]


# ----------------------------------------------------------------------------- offset search

def offset_curve(v_emb: np.ndarray, a_emb: np.ndarray, max_offset: int):
  """(offsets, dists): dists[i] = mean_t || v[t + k] - a[t] || for k = offsets[i], over the
  audio windows t for which t + k is a video window for every |k| <= max_offset. Raises
  ValueError when the clip is too short for max_offset."""
  v = np.asarray(v_emb, np.float64)
  a = np.asarray(a_emb, np.float64)
  n = min(len(v), len(a))
  k = int(max_offset)
  if k < 0:
    raise ValueError("max_offset must be >= 0")
  if n - 2 * k < 1:
    raise InputError(f"clip too short for max_offset={k}: {n} windows, need at least "
                     f"{2 * k + 1} (a clip of {2 * k + 5} frames)")
  t = np.arange(k, n - k)
  offsets = np.arange(-k, k + 1)
  dists = np.array([np.linalg.norm(v[t + o] - a[t], axis=-1).mean() for o in offsets])
  return offsets, dists


def sync_scores(offsets: np.ndarray, dists: np.ndarray) -> dict:
  """SyncNet's read-out of a distance curve: Sync-D = min, Sync-C = median - min, offset =
  argmin."""
  i = int(np.argmin(dists))
  return {"sync_d": float(dists[i]), "sync_c": float(np.median(dists) - dists[i]),
          "offset": int(offsets[i]), "offsets": [int(o) for o in offsets],
          "dists": [float(d) for d in dists]}


# ----------------------------------------------------------------------------- evaluator

class SyncEvaluator(contrastive.TwoTowerEvaluator):
  """Trained sync model: `score(frames, audio)` -> Sync-C / Sync-D / offset of one clip."""

  CHUNK = 256   # windows per jitted call (padded), so every clip length reuses one compile

  def __init__(self, params, cfg: Config = Config(), meta: dict | None = None):
    super().__init__(SyncNet(cfg), SyncNet.embed_video, SyncNet.embed_audio, params, cfg, meta)
    self._video, self._audio = self._embed_a, self._embed_b

  def embed_video(self, video: np.ndarray) -> np.ndarray:
    """Normalised centre crops [T, H, W] -> window embeddings [T - window + 1, D]."""
    n = video.shape[0] - self.cfg.window + 1
    if n < 1:
      return np.zeros((0, self.cfg.embed_dim), np.float32)
    return self._run(self._video, video_windows(video, np.arange(n), self.cfg.window))

  def embed_audio(self, mel: np.ndarray) -> np.ndarray:
    """Normalised log-mel [T, P, M] -> window embeddings [T - window + 1, D]."""
    n = mel.shape[0] - self.cfg.window + 1
    if n < 1:
      return np.zeros((0, self.cfg.embed_dim), np.float32)
    return self._run(self._audio, audio_windows(mel, np.arange(n), self.cfg.window))

  def video_features(self, frames: np.ndarray) -> np.ndarray:
    """uint8 face crops [T, S, S, 3] -> normalised mouth crops [T, H, W] (the model's input)."""
    return centre(normalise_crops(mouth_crops(frames, self.cfg)), self.cfg)

  def score(self, frames: np.ndarray, audio: np.ndarray, max_offset: int = 15) -> dict:
    """Aligned face crops uint8 [T, S, S, 3] at 25 fps and 16 kHz mono float audio ->
    {"sync_d", "sync_c", "offset", "offsets", "dists", "windows", "max_offset"} (see the
    module doc). Frames and audio are cut to the shorter of the two (audio frame t = samples
    640 t ...). A clip shorter than 2 * max_offset + 5 frames is searched over the offsets it
    allows (`max_offset` in the result says which; Sync-C over fewer offsets is not comparable
    with the full search); one shorter than 7 frames raises ValueError."""
    frames = np.asarray(frames)
    audio = np.asarray(audio, np.float32).reshape(-1)
    t = min(frames.shape[0], len(audio) // SAMPLES_PER_FRAME)
    n = t - self.cfg.window + 1
    k = min(int(max_offset), (n - 1) // 2)
    if k < 1:
      raise InputError(f"a clip of {t} frames is too short to score: at least "
                       f"{self.cfg.window + 2} frames of video and audio are needed")
    v = self.embed_video(self.video_features(frames[:t]))
    a = self.embed_audio(audio_features(audio[:t * SAMPLES_PER_FRAME], self.cfg))
    offsets, dists = offset_curve(v, a, k)
    out = sync_scores(offsets, dists)
    out["windows"] = int(n - 2 * k)
    out["max_offset"] = k
    return out


def save(out_dir: str, params, cfg: Config, extra: dict | None = None) -> str:
  return contrastive.save(out_dir, NAME, params,
                          {"config": dataclasses.asdict(cfg), **(extra or {})})


def load(path: str | None = None) -> SyncEvaluator:
  """The trained evaluator in `path` (default: the bundled weights)."""
  params, meta = contrastive.load(path, NAME)
  return SyncEvaluator(params, Config.from_json(meta["config"]), meta)


# ----------------------------------------------------------------------------- data cache

@dataclasses.dataclass
class ClipSet:
  """Pre-extracted clips, concatenated: video [F, H + 2m, W + 2m] (normalised, float16),
  mel [F, P, M] (normalised, float16), starts [C + 1] (clip c is rows starts[c]:starts[c+1]),
  ids [C]."""
  video: np.ndarray
  mel: np.ndarray
  starts: np.ndarray
  ids: list

  def __len__(self):
    return len(self.starts) - 1

  def clip(self, c: int):
    s, e = self.starts[c], self.starts[c + 1]
    return self.video[s:e], self.mel[s:e]

  def lengths(self) -> np.ndarray:
    return np.diff(self.starts)



def extract(name: str, split: str, data_dir: str, cfg: Config, *, max_clips: int = 0,
            cache_dir: str = "/tmp/vasa_syncnet_cache") -> ClipSet:
  """Mouth crops and log-mel of every clip of a clip dataset split (cached as .npz)."""
  import cv2
  import tensorflow_datasets as tfds
  from vasa_jax.data import records
  key = json.dumps([name, split, os.path.abspath(data_dir), max_clips,
                    dataclasses.asdict(cfg)], sort_keys=True)
  path = os.path.join(cache_dir, f"{name.replace('/', '_')}_{split}_"
                      f"{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz")
  if os.path.isfile(path):
    z = np.load(path, allow_pickle=False)
    return ClipSet(z["video"], z["mel"], z["starts"], [str(s) for s in z["ids"]])
  t0 = time.perf_counter()
  src = tfds.data_source(name, split=split, data_dir=data_dir)
  n = len(src) if not max_clips else min(max_clips, len(src))
  videos, mels, ids = [], [], []
  for i in range(n):
    rec = src[i]
    t = int(rec["num_frames"])
    if t < cfg.window:
      continue
    grey = np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE)
                     for b in rec["frames"][:t]])
    videos.append(normalise_crops(mouth_crops(grey, cfg)).astype(np.float16))
    mel = audio_features(records.audio_to_float(rec["audio"]), cfg)[:t]
    mels.append(np.pad(mel, ((0, t - len(mel)), (0, 0), (0, 0))).astype(np.float16))
    ids.append(_text(rec["clip_id"]))
  starts = np.concatenate([[0], np.cumsum([len(v) for v in videos])]).astype(np.int64)
  out = ClipSet(np.concatenate(videos), np.concatenate(mels), starts, ids)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + ".partial.npz"
  np.savez(tmp, video=out.video, mel=out.mel, starts=out.starts, ids=np.array(ids))
  os.replace(tmp, path)
  log.info("extracted %s:%s (%d clips, %d frames) in %.0f s", name, split, len(out),
           len(out.video), time.perf_counter() - t0)
  return out


# ----------------------------------------------------------------------------- training

def _group_starts(rng: np.random.Generator, n_windows: int, group: int, min_gap: int,
                  max_gap: int) -> np.ndarray:
  """`group` window starts in [0, n_windows), pairwise >= min_gap apart, all within max_gap of
  the first where the clip allows (so shifted audio of the same clip is a nearby negative)."""
  t0 = int(rng.integers(0, n_windows))
  lo, hi = max(0, t0 - max_gap), min(n_windows - 1, t0 + max_gap)
  chosen = [t0]
  for pool in (rng.permutation(np.arange(lo, hi + 1)), rng.permutation(n_windows)):
    for c in pool:
      if len(chosen) == group:
        break
      if all(abs(int(c) - x) >= min_gap for x in chosen):
        chosen.append(int(c))
  if len(chosen) < group:                  # a clip too short for the gap: spread out
    return np.linspace(0, n_windows - 1, group).round().astype(int)
  return np.array(chosen)


def sample_batch(rng: np.random.Generator, sets: Sequence[ClipSet], weights: Sequence[float],
                 clips: int, group: int, cfg: Config, augment: bool = True):
  """(video windows [clips * group, H, W, window], audio windows [..., window * P, M]); the
  `group` rows of one clip are consecutive. Augmentation: crop jitter, mirror, contrast and
  pixel noise on the video; a masked band of mel channels and noise on the audio."""
  h, w = cfg.crop
  vs, as_ = [], []
  which = rng.choice(len(sets), size=clips, p=np.asarray(weights) / np.sum(weights))
  for si in which:
    cs = sets[si]
    ok = np.nonzero(cs.lengths() - cfg.window + 1 >= 3 * group)[0]
    video, mel = cs.clip(int(rng.choice(ok)))
    starts = _group_starts(rng, len(video) - cfg.window + 1, group, 3, 15)
    vw = video_windows(video, starts, cfg.window).astype(np.float32)
    aw = audio_windows(mel, starts, cfg.window).astype(np.float32)
    m = cfg.margin
    dy, dx = rng.integers(0, 2 * m + 1, size=2) if augment else (m, m)
    vw = vw[:, dy:dy + h, dx:dx + w]
    if augment:
      if rng.random() < 0.5:
        vw = vw[:, :, ::-1]
      vw = vw * np.exp(rng.uniform(-0.3, 0.3)) + rng.normal(0, 0.15, vw.shape)
      width = int(rng.integers(0, 7))
      f0 = int(rng.integers(0, cfg.n_mels - width + 1))
      aw[..., f0:f0 + width] = 0.0
      aw = aw + rng.normal(0, 0.1, aw.shape)
    vs.append(vw)
    as_.append(aw)
  return np.concatenate(vs).astype(np.float32), np.concatenate(as_).astype(np.float32)


def sync_loss(v: jax.Array, a: jax.Array, scale: jax.Array, group: int, cross_weight: float):
  """InfoNCE within each clip's group of windows (the same clip's audio at other times is the
  only negative: timing, not identity) plus `cross_weight` x the InfoNCE over the whole batch
  (other clips' audio too). Returns (loss, within-group accuracy)."""
  n = v.shape[0]
  logits = scale * (v @ a.T)
  gid = jnp.arange(n) // group
  same = gid[:, None] == gid[None, :]
  masked = jnp.where(same, logits, -1e9)
  diag = jnp.arange(n)
  within = -0.5 * jnp.mean(jax.nn.log_softmax(masked, axis=1)[diag, diag]
                           + jax.nn.log_softmax(masked, axis=0)[diag, diag])
  full, _ = contrastive.clip_loss(v, a, scale)
  acc = jnp.mean(jnp.argmax(masked, axis=1) == diag)
  return within + cross_weight * full, acc


def fit(model: nn.Module, params, next_batch, *, steps: int, group: int, cross_weight: float,
        lr: float, warmup_steps: int, max_seconds: float = 0.0, log_every: int = 50):
  """Fits a two-tower sync model (`model(x, a)` -> (x embeddings, audio embeddings, logit
  scale)) with `sync_loss` through the one training loop (vasa_jax/train/loop.py), in memory;
  next_batch() -> (x windows, audio windows), `group` rows per clip. Returns (params, info with
  the logged history). Shared by this SyncNet and the mesh one (vasa_jax/eval/meshsync.py)."""
  import ml_collections
  import optax

  from vasa_jax.train import common, loop
  tx = common.adamw(lr, warmup_steps=warmup_steps, decay_steps=steps, weight_decay=1e-4)

  def loss_fn(p, x, a):
    xe, ae, scale = model.apply({"params": p}, x, a)
    return sync_loss(xe, ae, scale, group, cross_weight)

  @jax.jit
  def step(state, batch):
    p, o = state
    (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(p, *batch)
    upd, o = tx.update(g, o, p)
    return (optax.apply_updates(p, upd), o), {"loss": loss, "acc": acc}

  t0 = time.perf_counter()
  hist = []

  def record(done, scalars):
    hist.append({"step": done, "loss": round(scalars["loss"], 4),
                 "acc": round(scalars["acc"], 4),
                 "seconds": round(time.perf_counter() - t0, 1)})
    log.warning("step %d loss %.4f acc %.3f (%.0f s)", done, scalars["loss"], scalars["acc"],
                time.perf_counter() - t0)

  out = loop.run(ml_collections.ConfigDict({"steps": steps, "log_every": log_every}),
                 state=(params, tx.init(params)), start=0, data_iter=loop.forever(next_batch),
                 train_step=step, make_batch=lambda b: tuple(jnp.asarray(x) for x in b),
                 on_log=[record], max_seconds=max_seconds)
  return jax.device_get(out.state[0]), {"steps": out.step, "history": hist,
                                        "seconds": round(time.perf_counter() - t0, 1)}


def train(sets: Sequence[ClipSet], weights: Sequence[float], cfg: Config, *, steps: int,
          clips: int, group: int = 6, cross_weight: float = 0.3, lr: float = 2e-3,
          seed: int = 0, max_seconds: float = 0.0, log_every: int = 50):
  """Fits the SyncNet (`fit`). Returns (params, info with the logged history)."""
  rng = np.random.default_rng(seed)
  return fit(SyncNet(cfg), init_params(cfg, seed),
             lambda: sample_batch(rng, sets, weights, clips, group, cfg), steps=steps,
             group=group, cross_weight=cross_weight, lr=lr,
             warmup_steps=min(100, steps // 10 + 1), max_seconds=max_seconds,
             log_every=log_every)


# ----------------------------------------------------------------------------- validation

def _round(x, n=4):
  return round(float(x), n)


def validate_set(ev: SyncEvaluator, cs: ClipSet, *, shifts=(5, 10, 15), max_offset: int = 15,
                 seed: int = 0) -> dict:
  """Held-out sync metrics on pre-extracted clips (see the module doc and `main`)."""
  emb = []
  for c in range(len(cs)):
    video, mel = cs.clip(c)
    emb.append((ev.embed_video(centre(video.astype(np.float32), ev.cfg)),
                ev.embed_audio(mel.astype(np.float32))))
  win = {k: [] for k in shifts}
  clip = {k: [] for k in shifts}
  for v, a in emb:
    n = min(len(v), len(a))
    d0 = np.linalg.norm(v[:n] - a[:n], axis=-1)
    for k in shifts:
      if n <= k:
        continue
      # audio shifted later (a[t + k]) and earlier (a[t - k]) against the same video window
      late = np.linalg.norm(v[:n - k] - a[k:n], axis=-1)
      early = np.linalg.norm(v[k:n] - a[:n - k], axis=-1)
      win[k].extend(list(d0[:n - k] < late) + list(d0[k:n] < early))
      clip[k].extend([d0[:n - k].mean() < late.mean(), d0[k:n].mean() < early.mean()])
  # other clips' audio: clip i's video against clip perm[i]'s audio, same window index
  rng = np.random.default_rng(seed)
  perm = (np.arange(len(emb)) + rng.integers(1, len(emb))) % len(emb)
  mis_win, mis_clip = [], []
  for i, j in enumerate(perm):
    v, a = emb[i]
    a2 = emb[j][1]
    n = min(len(v), len(a), len(a2))
    d0 = np.linalg.norm(v[:n] - a[:n], axis=-1)
    d1 = np.linalg.norm(v[:n] - a2[:n], axis=-1)
    mis_win.extend(d0 < d1)
    mis_clip.append(d0.mean() < d1.mean())
  curves, argmins, sc, sd = [], [], [], []
  for v, a in emb:
    if min(len(v), len(a)) - 2 * max_offset < 1:
      continue
    offsets, dists = offset_curve(v, a, max_offset)
    s = sync_scores(offsets, dists)
    curves.append(dists)
    argmins.append(s["offset"])
    sc.append(s["sync_c"])
    sd.append(s["sync_d"])
  argmins = np.array(argmins)
  return {
      "clips": len(emb), "windows": int(sum(min(len(v), len(a)) for v, a in emb)),
      "shift_accuracy": {
          str(k): {"per_window": _round(np.mean(win[k])), "per_clip": _round(np.mean(clip[k])),
                   "window_comparisons": len(win[k]), "clip_comparisons": len(clip[k])}
          for k in shifts},
      "mismatched_clip_accuracy": {"per_window": _round(np.mean(mis_win)),
                                   "per_clip": _round(np.mean(mis_clip))},
      "offset_search": {
          "max_offset": max_offset, "clips": len(curves),
          "offsets": list(range(-max_offset, max_offset + 1)),
          "mean_dists": [_round(d) for d in np.mean(curves, axis=0)],
          "argmin_within_1": _round(np.mean(np.abs(argmins) <= 1)),
          "argmin_exact_0": _round(np.mean(argmins == 0)),
          "argmin_histogram": {str(int(o)): int(c) for o, c in
                               zip(*np.unique(argmins, return_counts=True))},
          "sync_c_mean": _round(np.mean(sc)), "sync_d_mean": _round(np.mean(sd)),
      },
  }


def validate_real_scores(ev: SyncEvaluator, data_dir: str, split: str = "test",
                         shift: int = 10, max_offset: int = 15) -> dict:
  """Sync-C / Sync-D through the public `score` on decoded real clips, as they are and with
  the audio delayed by `shift` frames (the video then leads: expected offset -shift)."""
  import tensorflow_datasets as tfds
  from vasa_jax.data import records
  src = tfds.data_source(REAL_DATASET, split=split, data_dir=data_dir)
  rows = []
  for i in range(len(src)):
    rec = src[i]
    t = int(rec["num_frames"])
    if t < 2 * max_offset + 5:
      continue
    frames = np.stack([records.decode_jpeg(b) for b in rec["frames"][:t]])
    audio = records.audio_to_float(rec["audio"])
    delayed = np.concatenate([np.zeros(shift * SAMPLES_PER_FRAME, np.float32), audio])[:len(audio)]
    m = ev.score(frames, audio, max_offset)
    s = ev.score(frames, delayed, max_offset)
    z = m["offsets"].index(0)
    rows.append({"clip": _text(rec["clip_id"]), "frames": t,
                 "matched": {"sync_c": _round(m["sync_c"]), "sync_d": _round(m["sync_d"]),
                             "offset": m["offset"], "dist_at_0": _round(m["dists"][z])},
                 "shifted": {"sync_c": _round(s["sync_c"]), "sync_d": _round(s["sync_d"]),
                             "offset": s["offset"], "dist_at_0": _round(s["dists"][z])}})

  def mean(which, key):
    return _round(np.mean([r[which][key] for r in rows]))
  summary = {w: {k: mean(w, k) for k in ("sync_c", "sync_d", "dist_at_0")}
             for w in ("matched", "shifted")}
  summary["shifted"]["offset_recovered_within_1"] = _round(
      np.mean([abs(r["shifted"]["offset"] + shift) <= 1 for r in rows]))
  summary["matched"]["offset_within_1"] = _round(
      np.mean([abs(r["matched"]["offset"]) <= 1 for r in rows]))
  # A clip whose own audio is off by a few frames still moves by exactly `shift`:
  summary["shifted"]["offset_moved_by_shift_within_1"] = _round(
      np.mean([abs(r["shifted"]["offset"] - r["matched"]["offset"] + shift) <= 1 for r in rows]))
  return {"dataset": f"{REAL_DATASET}:{split}", "shift_frames": shift,
          "max_offset": max_offset, "clips": len(rows), **summary, "per_clip": rows}


def summarise(report: dict) -> dict:
  """The key held-out numbers of a validation report."""
  out = {"note": "own model: embeddings are unit vectors (distances 0..2), so Sync-C / Sync-D "
                 "are on this model's scale, not comparable with published SyncNet figures; "
                 "compare generated video with real footage scored by the same weights"}
  for name in ("real_test", "synthetic_test"):
    r = report[name]
    out[name] = {
        "clips": r["clips"],
        "shift_accuracy_per_window": {k: v["per_window"] for k, v in r["shift_accuracy"].items()},
        "shift_accuracy_per_clip": {k: v["per_clip"] for k, v in r["shift_accuracy"].items()},
        "mismatched_clip_accuracy": r["mismatched_clip_accuracy"],
        "argmin_offset_within_1": r["offset_search"]["argmin_within_1"],
        "sync_c_mean": r["offset_search"]["sync_c_mean"],
        "sync_d_mean": r["offset_search"]["sync_d_mean"],
    }
  s = report["real_test_scores"]
  out["real_test_score_api"] = {
      "clips": s["clips"], "matched": s["matched"],
      f"audio_delayed_{s['shift_frames']}_frames": s["shifted"]}
  return out


# ----------------------------------------------------------------------------- main

def _parser():
  p = argparse.ArgumentParser(prog="vasa-jax eval syncnet", description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", default="/tmp/tfds_synth",
                 help=f"TFDS folder holding {REAL_DATASET} and {SYNTH_DATASET}")
  p.add_argument("--out", default=contrastive.assets_dir(NAME), help="weights folder to write")
  p.add_argument("--report", default="docs/evaluators/syncnet.json", help="validation JSON")
  p.add_argument("--steps", type=int, default=2500)
  p.add_argument("--batch-size", type=int, default=32, help="clips per batch")
  p.add_argument("--windows-per-clip", type=int, default=6,
                 help="windows of one clip per batch, >= 3 frames apart within 15 frames")
  p.add_argument("--cross-clip-weight", type=float, default=0.3,
                 help="weight of the whole-batch InfoNCE next to the within-clip one")
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--real-fraction", type=float, default=0.5,
                 help="share of each batch drawn from the real clips")
  p.add_argument("--max-synthetic-clips", type=int, default=0, help="0: all")
  p.add_argument("--max-minutes", type=float, default=13.0,
                 help="stop training after this long, a guard on a busy machine (0: none)")
  p.add_argument("--cache-dir", default="/tmp/vasa_syncnet_cache")
  p.add_argument("--eval-only", action="store_true", help="validate --weights, do not train")
  p.add_argument("--weights", default=None, help="with --eval-only (default: bundled)")
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _parser().parse_args(argv)
  t0 = time.perf_counter()
  cfg = Config()
  try:
    if args.eval_only:
      ev = load(args.weights)
      cfg = ev.cfg
      info = contrastive.trained_info(ev.meta, args.weights, NAME)
    else:
      real = extract(REAL_DATASET, "train", args.data_dir, cfg, cache_dir=args.cache_dir)
      synth = extract(SYNTH_DATASET, "train", args.data_dir, cfg,
                      max_clips=args.max_synthetic_clips, cache_dir=args.cache_dir)
      log.warning("data: %d real clips (%d frames), %d synthetic clips (%d frames), %.0f s",
                  len(real), len(real.video), len(synth), len(synth.video),
                  time.perf_counter() - t0)
      params, info = train([real, synth], [args.real_fraction, 1 - args.real_fraction], cfg,
                           steps=args.steps, clips=args.batch_size,
                           group=args.windows_per_clip, cross_weight=args.cross_clip_weight,
                           lr=args.lr, seed=args.seed,
                           max_seconds=args.max_minutes * 60)
      info.update({"command": f"vasa-jax eval {NAME} " + " ".join(argv),
                   "real_clips": len(real), "synthetic_clips": len(synth),
                   "batch_clips": args.batch_size, "windows_per_clip": args.windows_per_clip,
                   "cross_clip_weight": args.cross_clip_weight, "lr": args.lr,
                   "real_fraction": args.real_fraction, "seed": args.seed,
                   "datasets": [f"{REAL_DATASET}:train", f"{SYNTH_DATASET}:train"]})
      save(args.out, params, cfg, {"training": info})
      ev = load(args.out)
    tv = time.perf_counter()
    report = {
        "evaluator": NAME, "config": dataclasses.asdict(cfg), "params": contrastive.count_params(
            ev.params),
        "training": info,
        "real_test": validate_set(ev, extract(REAL_DATASET, "test", args.data_dir, cfg,
                                              cache_dir=args.cache_dir)),
        "synthetic_test": validate_set(ev, extract(SYNTH_DATASET, "test", args.data_dir, cfg,
                                                   cache_dir=args.cache_dir)),
        "real_test_scores": validate_real_scores(ev, args.data_dir),
    }
    report["summary"] = summarise(report)
    report["validation_seconds"] = round(time.perf_counter() - tv, 1)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
  except (contrastive.EvaluatorError, ValueError, FileNotFoundError) as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 2
  contrastive.write_json(args.report, report)
  brief = {k: report[k] for k in ("real_test", "synthetic_test")}
  brief["real_test_scores"] = {k: v for k, v in report["real_test_scores"].items()
                               if k != "per_clip"}
  for r in brief.values():
    r.get("offset_search", {}).pop("mean_dists", None)
  print(json.dumps(brief, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

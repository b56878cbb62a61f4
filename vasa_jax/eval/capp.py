r"""CAPP: contrastive audio-pose pretraining, a trained score of how well head motion fits speech.

VASA-1 measures audio-pose alignment with CAPP, a CLIP-style pair of encoders trained on real
videos: the cosine similarity of a 3-second window of head pose and the same window's audio.
No such model can be downloaded here, so this module trains a small one on our motion-latent
dataset and ships its weights (`vasa_jax/assets/evaluators/capp/`). Its numbers are on its own
scale: compare generated motion with real footage scored by the same weights.

Inputs. Head pose [T, 6] = (yaw, pitch, roll, tx, ty, tz) as the face-mesh tracker reads it
(the first 6 dims of the geometry motion codes; `vasa-jax eval report` reads generated video
and footage the same way), 25 fps; 16 kHz mono audio (frame t = samples 640 t ...).
A window is 75 frames (3 s). Pose features per frame: the pose relative to the window's first
frame and its frame-to-frame velocity, each divided by per-dimension standard deviations of the
training windows (stored with the weights) -> [75, 12]; audio features: log-mel, 16 bands, two
mel frames per video frame, normalised per clip (`contrastive.normalise_log_mel`) -> [75, 32].

Model ("profile" head, the default). Each encoder is a local 1-D conv (kernel 9 frames) that
turns its input into 2 activity curves over time; the curves are averaged over 5-frame steps
(15 steps per window), made zero-mean over the window, flattened and L2-normalised. The cosine
of a pose and an audio embedding is thus the correlation of their learned activity curves
(e.g. "how much the head moves" against "how much is said"), ~3k parameters in all. It is
deliberately tiny: the audio-pose signal in a few hundred real clips is weak (8-way retrieval
on 60 held-out clips: 0.17 against a chance rate of 0.125, docs/evaluators/capp.json) and they
are memorised by anything larger (train accuracy up, held-out at chance). A dense head
(`profile=0`: strided convs, flatten, dense layers) is kept as an option (`--config`).

Training: symmetric InfoNCE over a batch of windows from distinct clips; a batch is all-real
or all-synthetic (so the model cannot score by telling real speech from synthetic), real with
probability --real-fraction; head motion is mirrored (yaw, roll, tx negated) at random.
--val-fraction > 0 holds out train identities and keeps the step with the lowest held-out loss.

Score (`CappEvaluator.score`): mean cosine similarity of matched pose and audio embeddings over
the 3-second windows starting every second (starts 0, 25, 50, ... <= T - 75). A clip shorter
than 3 s gives one window padded to 75 frames: the pose holds its last value and the audio is
silence (`padded_frames` says how many frames were added); a clip shorter than 1 s raises
ValueError.

Train and validate (weights to --out, validation to --report):

    vasa-jax eval capp --data-dir DATA --dataset motion_latents/geo \
        --out vasa_jax/assets/evaluators/capp --report docs/evaluators/capp.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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

NAME = "capp"
from vasa_jax.constants import SAMPLES_PER_FRAME  # noqa: E402
from vasa_jax.data.records import text as _text  # noqa: E402
from vasa_jax.errors import InputError
DATASET = "motion_latents/geo"
POSE_DIMS = 6
MIRROR = np.array([-1, 1, -1, -1, 1, 1], np.float32)   # yaw, roll, tx change sign in a mirror
MIN_FRAMES = 25


@dataclasses.dataclass(frozen=True)
class Config(artifacts.JsonConfig):
  window: int = 75              # frames (3 s)
  stride: int = 25              # frames between scored windows (1 s)
  n_mels: int = 16
  mel_per_frame: int = 2
  # "profile" head (the default, see SeqEncoder): local convs -> `profile` activity curves
  profile: int = 2
  widths: tuple[int, ...] = (8,)
  kernels: tuple[int, ...] = (9,)
  dropout: float = 0.0
  # dense head (profile=0): strided convs, squeeze, flatten, two dense layers
  strides: tuple[int, ...] = (1,)
  squeeze: int = 8
  hidden: int = 64
  embed_dim: int = 64
  profile_pool: int = 5         # frames per profile step


# ----------------------------------------------------------------------------- features

def audio_features(audio_16k: np.ndarray, cfg: Config = Config()) -> np.ndarray:
  """16 kHz mono float audio -> normalised log-mel [T, mel_per_frame * n_mels]."""
  mel = contrastive.log_mel(audio_16k, n_mels=cfg.n_mels, per_frame=cfg.mel_per_frame)
  mel = contrastive.normalise_log_mel(mel)
  return mel.reshape(mel.shape[0], -1)


def pose_features(pose: np.ndarray, stats: dict) -> np.ndarray:
  """Pose windows [..., W, 6] -> [..., W, 12]: pose minus the window's first frame, and the
  per-frame velocity (0 at the first frame), each over its training standard deviation."""
  p = np.asarray(pose, np.float32)
  rel = p - p[..., :1, :]
  vel = np.concatenate([np.zeros_like(p[..., :1, :]), np.diff(p, axis=-2)], axis=-2)
  return np.concatenate([rel / np.asarray(stats["rel_std"], np.float32),
                         vel / np.asarray(stats["vel_std"], np.float32)], axis=-1)


def pose_stats(poses: Sequence[np.ndarray], window: int, floor: float = 1e-4) -> dict:
  """Per-dimension std of window-relative pose and of velocity over the given clips."""
  rel, vel = [], []
  for p in poses:
    p = np.asarray(p, np.float64)
    for s in range(0, max(1, len(p) - window + 1), max(1, window // 3)):
      w = p[s:s + window]
      rel.append(w - w[:1])
    vel.append(np.diff(p, axis=0))
  rel = np.concatenate(rel)
  vel = np.concatenate(vel)
  return {"rel_std": [float(max(x, floor)) for x in rel.std(0)],
          "vel_std": [float(max(x, floor)) for x in vel.std(0)]}


def window_starts(t: int, cfg: Config) -> np.ndarray:
  return np.arange(0, t - cfg.window + 1, cfg.stride)


# ----------------------------------------------------------------------------- model

class SeqEncoder(nn.Module):
  """[N, W, C] -> L2-normalised [N, embed_dim]: strided 1-D convs, a 1x1 squeeze, flattened
  (the time layout of the window is kept), two dense layers."""
  widths: Sequence[int]
  kernels: Sequence[int]
  strides: Sequence[int]
  squeeze: int
  hidden: int
  embed_dim: int
  dropout: float = 0.0
  profile: int = 0
  profile_pool: int = 5

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.profile:
      # Local convs (no striding) -> `profile` activity curves, averaged over profile_pool
      # frames, each made zero-mean over the window, flattened and L2-normalised: the cosine
      # of two embeddings is the correlation of their curves over time, and a local encoder
      # cannot memorise whole clips.
      for i, (w, k) in enumerate(zip(self.widths, self.kernels)):
        x = nn.gelu(nn.Conv(w, (k,), name=f"conv{i}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.Conv(self.profile, (1,), name="profile")(x)
      n, t, c = x.shape
      q = t // self.profile_pool
      x = x[:, :q * self.profile_pool].reshape(n, q, self.profile_pool, c).mean(axis=2)
      x = x - x.mean(axis=1, keepdims=True)
      return contrastive.l2_normalise(x.reshape(n, -1))
    for i, (w, k, s) in enumerate(zip(self.widths, self.kernels, self.strides)):
      x = nn.gelu(nn.Conv(w, (k,), strides=s, name=f"conv{i}")(x))
    x = nn.gelu(nn.Conv(self.squeeze, (1,), name="squeeze")(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.gelu(nn.Dense(self.hidden, name="fc")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return contrastive.l2_normalise(nn.Dense(self.embed_dim, name="out")(x))


class Capp(nn.Module):
  cfg: Config

  def setup(self):
    c = self.cfg
    args = (c.widths, c.kernels, c.strides, c.squeeze, c.hidden, c.embed_dim, c.dropout,
            c.profile, c.profile_pool)
    self.pose = SeqEncoder(*args)
    self.audio = SeqEncoder(*args)
    self.log_scale = self.param("log_scale", lambda _: jnp.asarray(np.log(10.0), jnp.float32))

  def __call__(self, p, a, train: bool = False):
    return (self.pose(p, train), self.audio(a, train),
            jnp.exp(jnp.minimum(self.log_scale, np.log(100.0))))

  def embed_pose(self, p):
    return self.pose(p)

  def embed_audio(self, a):
    return self.audio(a)


def init_params(cfg: Config, seed: int = 0):
  p = jnp.zeros((1, cfg.window, 2 * POSE_DIMS), jnp.float32)
  a = jnp.zeros((1, cfg.window, cfg.mel_per_frame * cfg.n_mels), jnp.float32)
  return Capp(cfg).init(jax.random.key(seed), p, a)["params"]


# ----------------------------------------------------------------------------- evaluator

class CappEvaluator(contrastive.TwoTowerEvaluator):
  """Trained CAPP model: `score(pose, audio)` -> mean matched cosine similarity."""

  CHUNK = 32   # windows per jitted call (padded), one compile for every clip length

  def __init__(self, params, cfg: Config, stats: dict, meta: dict | None = None):
    super().__init__(Capp(cfg), Capp.embed_pose, Capp.embed_audio, params, cfg, meta)
    self.stats = stats
    self._pose, self._audio = self._embed_a, self._embed_b

  def embed_pose_windows(self, pose_windows: np.ndarray) -> np.ndarray:
    """Raw pose windows [N, window, 6] -> [N, D]."""
    return self._run(self._pose, pose_features(pose_windows, self.stats))

  def embed_audio_windows(self, feat_windows: np.ndarray) -> np.ndarray:
    """Audio feature windows [N, window, A] (from `audio_features`) -> [N, D]."""
    return self._run(self._audio, feat_windows)

  def prepare(self, pose: np.ndarray, audio: np.ndarray):
    """(pose [T', 6], audio features [T', A], padded frames) with T' >= window."""
    pose = np.asarray(pose, np.float32)
    if pose.ndim != 2 or pose.shape[1] != POSE_DIMS:
      raise ValueError(f"pose must be [T, 6] (yaw, pitch, roll, tx, ty, tz), got {pose.shape}")
    audio = np.asarray(audio, np.float32).reshape(-1)
    t = min(len(pose), len(audio) // SAMPLES_PER_FRAME)
    if t < MIN_FRAMES:
      raise InputError(f"CAPP needs at least {MIN_FRAMES} frames (1 s) of pose and audio, "
                       f"got {t}")
    pad = max(0, self.cfg.window - t)
    pose = np.concatenate([pose[:t], np.repeat(pose[t - 1:t], pad, axis=0)])
    audio = np.concatenate([audio[:t * SAMPLES_PER_FRAME],
                            np.zeros(pad * SAMPLES_PER_FRAME, np.float32)])
    return pose, audio_features(audio, self.cfg), pad

  def embed(self, pose: np.ndarray, audio: np.ndarray):
    """(pose embeddings [N, D], audio embeddings [N, D], padded frames) over the clip's
    windows."""
    pose, feats, pad = self.prepare(pose, audio)
    idx = window_starts(len(pose), self.cfg)[:, None] + np.arange(self.cfg.window)[None, :]
    return self.embed_pose_windows(pose[idx]), self.embed_audio_windows(feats[idx]), pad

  def score(self, pose: np.ndarray, audio: np.ndarray) -> dict:
    """Head pose [T, 6] float and 16 kHz mono float audio -> {"capp" (mean matched cosine
    similarity, -1..1), "windows", "cos" (per window), "padded_frames"}."""
    pe, ae, pad = self.embed(pose, audio)
    cos = np.sum(pe * ae, axis=-1)
    return {"capp": float(np.mean(cos)), "windows": int(len(cos)),
            "cos": [float(c) for c in cos], "padded_frames": int(pad)}


def save(out_dir: str, params, cfg: Config, stats: dict, extra: dict | None = None) -> str:
  return contrastive.save(out_dir, NAME, params, {"config": dataclasses.asdict(cfg),
                                                  "pose_stats": stats, **(extra or {})})


def load(path: str | None = None) -> CappEvaluator:
  """The trained evaluator in `path` (default: the bundled weights)."""
  params, meta = contrastive.load(path, NAME)
  return CappEvaluator(params, Config.from_json(meta["config"]), meta["pose_stats"], meta)


# ----------------------------------------------------------------------------- data

@dataclasses.dataclass
class Clip:
  pose: np.ndarray       # [T, 6]
  audio: np.ndarray      # [T * 640] float
  feats: np.ndarray      # [T, A]
  real: bool
  clip_id: str
  identity: str = ""



def load_clips(data_dir: str, split: str, cfg: Config, dataset: str = DATASET) -> list[Clip]:
  import tensorflow_datasets as tfds
  from vasa_jax.data import records
  from vasa_jax import config_utils
  src = tfds.data_source(dataset, split=split, data_dir=data_dir or config_utils.DEFAULT_DATA_DIR)
  out = []
  for i in range(len(src)):
    rec = src[i]
    t = int(rec["num_frames"])
    audio = records.audio_to_float(rec["audio"])[:t * SAMPLES_PER_FRAME]
    out.append(Clip(pose=np.asarray(rec["motion"], np.float32)[:t, :POSE_DIMS], audio=audio,
                    feats=audio_features(audio, cfg), real=_text(rec["source"]) != "synthetic",
                    clip_id=_text(rec["clip_id"]), identity=_text(rec["identity"])))
  return out


# ----------------------------------------------------------------------------- training

def sample_batch(rng: np.random.Generator, clips: Sequence[Clip], n: int, cfg: Config,
                 stats: dict, augment: bool = True):
  """n windows from n distinct clips (fewer if there are fewer clips): pose features
  [n, W, 12], audio features [n, W, A]."""
  pick = rng.choice(len(clips), size=min(n, len(clips)), replace=False)
  ps, as_ = [], []
  for c in pick:
    clip = clips[c]
    s = int(rng.integers(0, len(clip.pose) - cfg.window + 1))
    p = clip.pose[s:s + cfg.window]
    if augment and rng.random() < 0.5:
      p = p * MIRROR
    ps.append(p)
    as_.append(clip.feats[s:s + cfg.window])
  return pose_features(np.stack(ps), stats), np.stack(as_).astype(np.float32)


def _val_batches(groups: Sequence[Sequence[Clip]], batch: int, cfg: Config, stats: dict,
                 per_group: int = 8, seed: int = 1234):
  """Fixed validation batches (no augmentation): `per_group` batches of each group."""
  rng = np.random.default_rng(seed)
  return [sample_batch(rng, g, batch, cfg, stats, augment=False)
          for g in groups if len(g) >= 2 for _ in range(per_group)]


def train(groups: Sequence[Sequence[Clip]], weights: Sequence[float], cfg: Config, stats: dict,
          *, steps: int, batch: int, lr: float = 1e-3, seed: int = 0,
          val_groups: Sequence[Sequence[Clip]] = (), eval_every: int = 100,
          max_seconds: float = 0.0, log_every: int = 100):
  """Trains on `groups` (a batch is drawn from one group, group g with probability
  weights[g]) through the one training loop (vasa_jax/train/loop.py), in memory. With
  `val_groups`, the InfoNCE loss on fixed batches of those clips is measured every
  `eval_every` steps and the parameters with the lowest one are returned (early stopping: the
  audio-pose signal is weak and a few hundred clips are easy to memorise)."""
  import ml_collections
  import optax

  from vasa_jax.train import common, loop
  tx = common.adamw(lr, warmup_steps=min(100, steps // 10 + 1), decay_steps=steps,
                    weight_decay=1e-2)
  params = init_params(cfg, seed)
  model = Capp(cfg)

  def loss_fn(p, pose, audio, key, train):
    pe, ae, scale = model.apply({"params": p}, pose, audio, train, rngs={"dropout": key})
    return contrastive.clip_loss(pe, ae, scale)

  @jax.jit
  def step(state, batch):
    p, o = state
    pose, audio, key = batch
    (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(p, pose, audio, key, True)
    upd, o = tx.update(g, o, p)
    return (optax.apply_updates(p, upd), o), {"loss": loss, "acc": acc}

  @jax.jit
  def val_loss(p, pose, audio):
    return loss_fn(p, pose, audio, jax.random.key(0), False)

  val = _val_batches(val_groups, batch, cfg, stats) if val_groups else []

  def evaluate(p):
    out = [val_loss(p, jnp.asarray(x), jnp.asarray(y)) for x, y in val]
    return (float(np.mean([float(l) for l, _ in out])),
            float(np.mean([float(a) for _, a in out])))

  rng = np.random.default_rng(seed)
  key = jax.random.key(seed + 1)
  probs = np.asarray(weights, np.float64) / np.sum(weights)
  t0 = time.perf_counter()
  hist, window = [], []
  best = [np.inf, 0, params, None]
  counter = iter(range(steps + 1))

  def draw():
    i = next(counter)
    g = int(rng.choice(len(groups), p=probs))
    pose, audio = sample_batch(rng, groups[g], batch, cfg, stats)
    return jnp.asarray(pose), jnp.asarray(audio), jax.random.fold_in(key, i)

  def keep(done, state, batch, metrics):     # the losses of the steps since the last log line
    if metrics:
      window.append((metrics["loss"], metrics["acc"]))

  def record(done, scalars):
    losses, accs = np.array(window).reshape(-1, 2).T
    window.clear()
    row = {"step": done, "loss": round(float(losses.mean()), 4),
           "acc": round(float(accs.mean()), 4), "seconds": round(time.perf_counter() - t0, 1)}
    if val and (done % eval_every == 0 or done == steps):
      vl, va = evaluate(state_now[0][0])
      row.update({"val_loss": round(vl, 4), "val_acc": round(va, 4)})
      if vl < best[0]:
        best[:] = [vl, done, jax.device_get(state_now[0][0]), va]
    hist.append(row)
    log.warning("%s", row)

  state_now = [None]

  def track(done, state, batch, metrics):
    state_now[0] = state

  out = loop.run(ml_collections.ConfigDict({"steps": steps, "log_every": log_every}),
                 state=(params, tx.init(params)), start=0, data_iter=loop.forever(draw),
                 train_step=step, make_batch=lambda b: b, on_step=[track, keep],
                 max_seconds=max_seconds)
  info = {"steps": out.step, "history": hist, "seconds": round(time.perf_counter() - t0, 1)}
  if val:
    info.update({"best_step": best[1], "best_val_loss": round(best[0], 4),
                 "best_val_acc": round(best[3], 4), "val_batch_size": batch})
    return best[2], info
  return jax.device_get(out.state[0]), info


# ----------------------------------------------------------------------------- validation

def _round(x, n=4):
  return round(float(x), n)


def shifted_audio(audio: np.ndarray, frames: int) -> np.ndarray:
  """The audio rotated later by `frames` video frames (circularly)."""
  return np.roll(np.asarray(audio, np.float32), frames * SAMPLES_PER_FRAME)


def other_audio(audio: np.ndarray, length: int) -> np.ndarray:
  """Another clip's audio tiled / cut to `length` samples."""
  reps = int(np.ceil(length / max(1, len(audio))))
  return np.tile(np.asarray(audio, np.float32), reps)[:length]


def validate_group(ev: CappEvaluator, clips: Sequence[Clip], *, n_way: int = 8,
                   draws: int = 500, seed: int = 0) -> dict:
  """Retrieval accuracy and CAPP of matched / mismatched-clip / time-shifted audio."""
  rng = np.random.default_rng(seed)
  usable = [c for c in clips if len(c.pose) >= ev.cfg.window]
  emb = [ev.embed(c.pose, c.audio)[:2] for c in usable]
  # N-way retrieval: one random window of each of N random clips
  hits_pa, hits_ap = [], []
  n = min(n_way, len(emb))
  for _ in range(draws):
    pick = rng.choice(len(emb), size=n, replace=False)
    w = [int(rng.integers(0, len(emb[c][0]))) for c in pick]
    pe = np.stack([emb[c][0][j] for c, j in zip(pick, w)])
    ae = np.stack([emb[c][1][j] for c, j in zip(pick, w)])
    sim = pe @ ae.T
    hits_pa.extend(np.argmax(sim, axis=1) == np.arange(n))
    hits_ap.extend(np.argmax(sim, axis=0) == np.arange(n))
  # all clips at once: first window of each
  pe = np.stack([e[0][0] for e in emb])
  ae = np.stack([e[1][0] for e in emb])
  sim = pe @ ae.T
  rank = (sim > np.diag(sim)[:, None]).sum(1)
  # CAPP scores
  perm = (np.arange(len(usable)) + rng.integers(1, len(usable))) % len(usable)
  rows = []
  for i, c in enumerate(usable):
    t = len(c.pose)
    shift = max(38, t // 2)
    m = ev.score(c.pose, c.audio)["capp"]
    x = ev.score(c.pose, other_audio(usable[perm[i]].audio, len(c.audio)))["capp"]
    s = ev.score(c.pose, shifted_audio(c.audio, shift))["capp"]
    rows.append({"clip": c.clip_id, "frames": t, "matched": _round(m), "mismatched": _round(x),
                 "shifted": _round(s), "shift_frames": shift})
  arr = lambda k: np.array([r[k] for r in rows])   # noqa: E731
  return {
      "clips": len(usable), "skipped_short": len(clips) - len(usable),
      "retrieval": {"n_way": n, "draws": draws, "chance": _round(1.0 / n),
                    "pose_to_audio": _round(np.mean(hits_pa)),
                    "audio_to_pose": _round(np.mean(hits_ap)),
                    "all_clips_n": len(emb), "all_clips_top1": _round(np.mean(rank == 0)),
                    "all_clips_mean_rank": _round(np.mean(rank))},
      "capp": {"matched": _round(arr("matched").mean()),
               "mismatched_clip": _round(arr("mismatched").mean()),
               "time_shifted": _round(arr("shifted").mean()),
               "matched_above_mismatched": _round(np.mean(arr("matched") > arr("mismatched"))),
               "matched_above_shifted": _round(np.mean(arr("matched") > arr("shifted"))),
               **{f"matched_minus_{k}": {"mean": _round(d.mean()),
                                        "stderr": _round(d.std(ddof=1) / np.sqrt(len(d)))}
                  for k, d in (("mismatched", arr("matched") - arr("mismatched")),
                               ("shifted", arr("matched") - arr("shifted")))},
               "shift": "circular, max(38 frames = 1.52 s, half the clip)"},
      "per_clip": rows,
  }


# ----------------------------------------------------------------------------- main

def _parser():
  p = argparse.ArgumentParser(prog="vasa-jax eval capp", description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", default=None, help=f"TFDS folder holding {DATASET}")
  p.add_argument("--dataset", default=DATASET)
  p.add_argument("--out", default=contrastive.assets_dir(NAME), help="weights folder to write")
  p.add_argument("--report", default="docs/evaluators/capp.json", help="validation JSON")
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--batch-size", type=int, default=64, help="windows (distinct clips) per batch")
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--real-fraction", type=float, default=1.0,
                 help="share of batches drawn from the real clips (the rest: synthetic clips "
                      "of the dataset, if it has any)")
  p.add_argument("--val-fraction", type=float, default=0.0,
                 help="share of train identities held out to pick the training step by their "
                      "loss (early stopping); 0: train on every clip for --steps")
  p.add_argument("--max-minutes", type=float, default=8.0,
                 help="stop training after this long, a guard on a busy machine (0: none)")
  p.add_argument("--eval-only", action="store_true", help="validate --weights, do not train")
  p.add_argument("--weights", default=None, help="with --eval-only (default: bundled)")
  p.add_argument("--config", default="", help="model overrides, e.g. widths=32,32;dropout=0.1")
  return p


def _config(text: str) -> Config:
  """Config() with `name=value;...` overrides (tuples as comma-separated ints)."""
  kw = {}
  types = {f.name: f.type for f in dataclasses.fields(Config)}
  for item in filter(None, text.split(";")):
    k, _, v = item.partition("=")
    k = k.strip()
    if k not in types:
      raise InputError(f"unknown CAPP config field {k!r}")
    t = str(types[k])
    kw[k] = (tuple(int(x) for x in v.split(",")) if "tuple" in t
             else float(v) if "float" in t else int(v))
  return Config(**kw)


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _parser().parse_args(argv)
  t0 = time.perf_counter()
  try:
    cfg = _config(args.config)
    if args.eval_only:
      ev = load(args.weights)
      cfg = ev.cfg
      info = contrastive.trained_info(ev.meta, args.weights, NAME)
    else:
      clips = [c for c in load_clips(args.data_dir, "train", cfg, args.dataset)
               if len(c.pose) >= cfg.window]
      from vasa_jax.data import records
      is_val = lambda c: records.is_test_identity("capp-val:" + c.identity,  # noqa: E731
                                                  args.val_fraction)
      fit = [c for c in clips if not is_val(c)]
      held = [c for c in clips if is_val(c)]
      real = [c for c in fit if c.real]
      synth = [c for c in fit if not c.real]
      if (not real and args.real_fraction > 0) or (not synth and args.real_fraction < 1):
        raise InputError(f"{args.dataset}:train needs real and synthetic clips of >= "
                         f"{cfg.window} frames (found {len(real)} real, {len(synth)} synthetic; "
                         "--real-fraction 1 trains on real clips alone)")
      stats = pose_stats([c.pose for c in fit], cfg.window)
      val_groups = [g for g in ([c for c in held if c.real], [c for c in held if not c.real])
                    if g]
      log.warning("data: %d real, %d synthetic train clips; validation (early stopping) %d real, "
                  "%d synthetic (%.0f s)", len(real), len(synth),
                  sum(c.real for c in held), sum(not c.real for c in held),
                  time.perf_counter() - t0)
      groups = [(g, w) for g, w in ((real, args.real_fraction), (synth, 1 - args.real_fraction))
                if w > 0]
      params, info = train([g for g, _ in groups], [w for _, w in groups], cfg,
                           stats, steps=args.steps, batch=args.batch_size, lr=args.lr,
                           seed=args.seed, val_groups=val_groups,
                           max_seconds=args.max_minutes * 60)
      info.update({"command": f"vasa-jax eval {NAME} " + " ".join(argv),
                   "real_clips": len(real), "synthetic_clips": len(synth),
                   "val_real_clips": sum(c.real for c in held),
                   "val_synthetic_clips": sum(not c.real for c in held),
                   "val_fraction": args.val_fraction,
                   "batch": args.batch_size, "lr": args.lr, "seed": args.seed,
                   "real_fraction": args.real_fraction, "dataset": f"{args.dataset}:train"})
      save(args.out, params, cfg, stats, {"training": info})
      ev = load(args.out)
    tv = time.perf_counter()
    test = load_clips(args.data_dir, "test", cfg, args.dataset)
    report = {
        "evaluator": NAME, "config": dataclasses.asdict(cfg),
        "params": contrastive.count_params(ev.params), "pose_stats": ev.stats,
        "training": info,
    }
    for key, group in (("real_test", [c for c in test if c.real]),
                       ("synthetic_test", [c for c in test if not c.real])):
      if sum(len(c.pose) >= cfg.window for c in group) >= 2:
        report[key] = validate_group(ev, group)
    report["summary"] = {
        "note": "own model: cosine similarities on this model's scale (a zero-mean curve "
                "correlation, -1..1); compare generated motion with real footage scored by the "
                "same weights",
        **{k: {"clips": report[k]["clips"],
               "retrieval": {x: report[k]["retrieval"][x]
                             for x in ("n_way", "chance", "pose_to_audio", "audio_to_pose")},
               "capp": {x: v for x, v in report[k]["capp"].items() if x != "shift"}}
           for k in ("real_test", "synthetic_test") if k in report}}
    report["validation_seconds"] = round(time.perf_counter() - tv, 1)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
  except (contrastive.EvaluatorError, ValueError, FileNotFoundError) as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 2
  contrastive.write_json(args.report, report)
  print(json.dumps({k: {kk: vv for kk, vv in report[k].items() if kk != "per_clip"}
                    for k in ("real_test", "synthetic_test") if k in report}, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

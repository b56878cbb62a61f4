r"""A lip-sync evaluator on the tracked face mesh: is the mouth in time with the speech?

The pixel SyncNet (`vasa_jax.eval.syncnet`) learns from mouth pixels. With about a hundred real
training clips it cannot separate timing from appearance: on held-out real footage its best
offset lands within one frame of 0 on only 58% of clips, so its "in-sync share" cannot tell a
well-synced generator from a poor one. This evaluator sees what the face mesh tracker
(`vasa_jax.geometry.tracking`) measures instead: the lips and chin of the frontalised
(canonical) mesh. Identity, lighting, skin, teeth and render blur drop out before the model;
what stays is how the mouth moves, which is what sync is about. Generated video and footage are
measured by the same tracker, so the two read on one scale.

Model. A window is `window` consecutive frames (9 = 0.36 s at 25 fps) and the same span of
audio.
  mesh:  the x, y of LIP_POINTS (outer and inner lip contour, chin) of the canonical mesh
         (`codes.encode(...).canonical`, template units), over the eye-corner distance, minus
         the clip's mean, over the clip's lip-motion standard deviation plus a floor (a still
         mouth stays near 0): [window, 2 * len(LIP_POINTS)];
  audio: log-mel, 40 bands, 4 mel frames per video frame, normalised per clip
         (`contrastive.normalise_log_mel`): [window * 4, 40].
Two small temporal conv encoders map them to L2-normalised embeddings. Training is the pixel
SyncNet's recipe (`syncnet.sync_loss`): InfoNCE within groups of windows of one clip, 3-15
frames apart (the same clip's audio at another time is the negative: timing, nothing else),
plus 0.3 x the InfoNCE over the batch. Real clips (`motion_latents/geo`, the tracker's
landmarks of ../shared/real) and synthetic ones (`motion_latents/geosynth`, espeak-ng speech
with known timing) each fill half of every batch. Augmentation: lip-motion gain, a small
rotation and noise on the mesh; gain, a masked mel band and noise on the audio.

Scoring (`MeshSyncEvaluator.score`) is SyncNet's: for offsets k in [-15, 15] the mean over
audio windows t of || m(t + k) - a(t) ||; Sync-D the minimum, Sync-C the median minus the
minimum, offset the argmin (positive: the mouth lags the audio). A clip is in sync when
|offset| <= 1 frame. Validation on the identity-disjoint test split: docs/evaluators/meshsync.json.

Train and validate (weights to --out, validation to --report):

    vasa-jax eval meshsync --data-dir DATA \
        --out vasa_jax/assets/evaluators/meshsync --report docs/evaluators/meshsync.json

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
from vasa_jax.eval import contrastive, syncnet
from vasa_jax.errors import InputError

log = logging.getLogger(__name__)

NAME = "meshsync"
REAL_DATASET = "motion_latents/geo"
SYNTH_DATASET = "motion_latents/geosynth"
# Face mesh indices: outer lip contour, inner lip contour, chin (moves with the jaw).
OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181,
             91, 146)
INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178,
             88, 95)
CHIN = (152, 148, 377, 176, 400, 199)
LIP_POINTS = OUTER_LIP + INNER_LIP + CHIN
EYE_CORNERS = (33, 263)
NUM_MEASURES = 10
MOTION_FLOOR = 0.004      # floor of the lip-motion std (eye-corner distances): ~a still mouth


@dataclasses.dataclass(frozen=True)
class Config(artifacts.JsonConfig):
  window: int = 9                          # frames per window
  n_mels: int = 40
  mel_per_frame: int = 4
  embed_dim: int = 128
  mesh_widths: tuple[int, ...] = (128, 128, 128)
  audio_widths: tuple[int, ...] = (64, 128, 128)
  hidden: int = 256
  min_gap: int = 2                         # training: windows of one group this far apart
  max_gap: int = 15                        # ... and within this many frames of the first


# ----------------------------------------------------------------------------- features

def mouth_measures(canonical: np.ndarray) -> np.ndarray:
  """Canonical meshes [T, N, 3] -> MEASURES [T, 10], each over the eye-corner distance:
  inner and outer lip gap, inner and outer mouth width, upper and lower lip height, lip-corner
  height, chin height, upper and lower lip protrusion (z)."""
  p = np.asarray(canonical, np.float64)
  if p.ndim != 3 or p.shape[1] <= max(LIP_POINTS) or p.shape[2] < 3:
    raise ValueError(f"canonical meshes must be [T, 468+, 3], got {p.shape}")
  iod = np.linalg.norm(p[:, EYE_CORNERS[1], :2] - p[:, EYE_CORNERS[0], :2], axis=-1)
  iod = max(float(np.median(iod)), 1e-9) if len(iod) else 1.0
  x, y, z = p[..., 0], p[..., 1], p[..., 2]
  out = np.stack([
      y[:, 14] - y[:, 13], y[:, 17] - y[:, 0],                       # gaps
      x[:, 308] - x[:, 78], x[:, 291] - x[:, 61],                    # widths
      y[:, 0], y[:, 17], 0.5 * (y[:, 61] + y[:, 291]), y[:, 152],    # heights
      z[:, 0], z[:, 17]], -1)                                        # protrusion
  return out / iod


def lip_features(canonical: np.ndarray) -> np.ndarray:
  """Canonical meshes [T, N, 3] -> normalised mouth motion [T, 10] (`mouth_measures`, minus
  the clip mean, over the clip's standard deviation plus MOTION_FLOOR: a still mouth stays near
  0, and a mouth that moves less than real ones is read for its timing, not its size)."""
  x = mouth_measures(canonical)
  x = x - x.mean(axis=0, keepdims=True)
  return (x / (x.std() + MOTION_FLOOR)).astype(np.float32)


audio_features = syncnet.audio_features   # normalised log-mel [T, mel_per_frame, n_mels]


def mesh_windows(x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
  """[T, C] -> [N, window, C]."""
  idx = np.asarray(starts)[:, None] + np.arange(window)[None, :]
  return x[idx]


# ----------------------------------------------------------------------------- model

class TemporalEncoder(nn.Module):
  """1-D convs over time ([N, L, C]), the first `strided` of them halving L, then an MLP to a
  unit embedding."""
  widths: Sequence[int]
  hidden: int
  embed_dim: int
  strided: int

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.gelu(nn.Conv(w, (3,), strides=2 if i < self.strided else 1, name=f"conv{i}")(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.gelu(nn.Dense(self.hidden, name="fc")(x))
    return contrastive.l2_normalise(nn.Dense(self.embed_dim, name="out")(x))


class MeshSyncNet(nn.Module):
  cfg: Config

  def setup(self):
    c = self.cfg
    self.mesh = TemporalEncoder(c.mesh_widths, c.hidden, c.embed_dim, strided=0)
    self.audio = TemporalEncoder(c.audio_widths, c.hidden, c.embed_dim, strided=2)
    self.log_scale = self.param("log_scale", lambda _: jnp.asarray(np.log(10.0), jnp.float32))

  def __call__(self, m, a):
    return self.mesh(m), self.audio(a), jnp.exp(jnp.minimum(self.log_scale, np.log(100.0)))

  def embed_mesh(self, m):
    return self.mesh(m)

  def embed_audio(self, a):
    return self.audio(a)


def init_params(cfg: Config, seed: int = 0):
  m = jnp.zeros((1, cfg.window, NUM_MEASURES), jnp.float32)
  a = jnp.zeros((1, cfg.window * cfg.mel_per_frame, cfg.n_mels), jnp.float32)
  return MeshSyncNet(cfg).init(jax.random.key(seed), m, a)["params"]


# ----------------------------------------------------------------------------- evaluator

class MeshSyncEvaluator(syncnet.SyncEvaluator):
  """Trained mesh sync model: `score(canonical, audio)` -> Sync-C / Sync-D / offset. The
  pixel SyncNet's evaluator with the mouth measures of the mesh in place of mouth crops (its
  audio embedding, offset search and read-out are shared)."""

  def __init__(self, params, cfg: Config = Config(), meta: dict | None = None):
    contrastive.TwoTowerEvaluator.__init__(self, MeshSyncNet(cfg), MeshSyncNet.embed_mesh,
                                           MeshSyncNet.embed_audio, params, cfg, meta)
    self._video, self._audio = self._embed_a, self._embed_b

  def embed_video(self, feats: np.ndarray) -> np.ndarray:
    """lip_features [T, C] -> window embeddings [T - window + 1, D]."""
    n = feats.shape[0] - self.cfg.window + 1
    if n < 1:
      return np.zeros((0, self.cfg.embed_dim), np.float32)
    return self._run(self._video, mesh_windows(feats, np.arange(n), self.cfg.window))

  def video_features(self, canonical: np.ndarray) -> np.ndarray:
    """Canonical meshes [T, N, 3] -> lip_features [T, C] (the model's input)."""
    return lip_features(canonical)

  def score(self, canonical: np.ndarray, audio: np.ndarray, max_offset: int = 15) -> dict:
    """Canonical meshes [T, N, 3] at 25 fps (the tracker's, `codes.encode(...).canonical`)
    and 16 kHz mono float audio -> {"sync_d", "sync_c", "offset", "offsets", "dists",
    "windows", "max_offset"} (see the module doc). Both are cut to the shorter; a short clip
    is searched over the offsets it allows; one too short for +-1 raises ValueError."""
    return super().score(np.asarray(canonical), audio, max_offset)


def save(out_dir: str, params, cfg: Config, extra: dict | None = None) -> str:
  return contrastive.save(out_dir, NAME, params,
                          {"config": dataclasses.asdict(cfg), **(extra or {})})


def load(path: str | None = None) -> MeshSyncEvaluator:
  """The trained evaluator in `path` (default: the bundled weights)."""
  params, meta = contrastive.load(path, NAME)
  return MeshSyncEvaluator(params, Config.from_json(meta["config"]), meta)


# ----------------------------------------------------------------------------- data

@dataclasses.dataclass
class ClipSet:
  """Pre-extracted clips, concatenated: mesh [F, C] (lip_features), mel [F, P, M] (normalised,
  float16), starts [C + 1], ids, identities."""
  mesh: np.ndarray
  mel: np.ndarray
  starts: np.ndarray
  ids: list
  identities: list

  def __len__(self):
    return len(self.starts) - 1

  def clip(self, c: int):
    s, e = self.starts[c], self.starts[c + 1]
    return self.mesh[s:e], self.mel[s:e]

  def lengths(self) -> np.ndarray:
    return np.diff(self.starts)

  def subset(self, keep) -> "ClipSet":
    keep = [int(c) for c in keep]
    mesh = [self.clip(c)[0] for c in keep]
    mel = [self.clip(c)[1] for c in keep]
    starts = np.concatenate([[0], np.cumsum([len(m) for m in mesh])]).astype(np.int64)
    return ClipSet(np.concatenate(mesh), np.concatenate(mel), starts,
                   [self.ids[c] for c in keep], [self.identities[c] for c in keep])


_text = syncnet._text


def default_basis():
  """The bundled demo face basis (its template defines the canonical frame)."""
  from vasa_jax.geometry import codes
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                      "demo", "face_basis.npz")
  return codes.FaceBasis.load(path)


def extract(name: str, split: str, data_dir: str, cfg: Config, *, max_clips: int = 0,
            cache_dir: str = "/tmp/vasa_meshsync_cache", basis=None) -> ClipSet:
  """Lip features and log-mel of every clip of a geometry motion dataset split (cached)."""
  import tensorflow_datasets as tfds
  from vasa_jax.data import records
  from vasa_jax.geometry import codes
  key = json.dumps([name, split, os.path.abspath(data_dir), max_clips, cfg.n_mels,
                    cfg.mel_per_frame, "measures-v1", MOTION_FLOOR], sort_keys=True)
  path = os.path.join(cache_dir, f"{name.replace('/', '_')}_{split}_"
                      f"{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz")
  if os.path.isfile(path):
    z = np.load(path, allow_pickle=False)
    return ClipSet(z["mesh"], z["mel"], z["starts"], [str(s) for s in z["ids"]],
                   [str(s) for s in z["identities"]])
  basis = basis or default_basis()
  t0 = time.perf_counter()
  src = tfds.data_source(name, split=split, data_dir=data_dir)
  n = len(src) if not max_clips else min(max_clips, len(src))
  meshes, mels, ids, who = [], [], [], []
  for i in range(n):
    rec = src[i]
    t = int(rec["num_frames"])
    if t < cfg.window + 2 or "landmarks" not in rec:
      continue
    pts = np.asarray(rec["landmarks"], np.float32).reshape(t, -1, 3)
    canon = codes.encode(pts, basis, float(rec["size"])).canonical
    meshes.append(lip_features(canon).astype(np.float32))
    mel = audio_features(records.audio_to_float(rec["audio"]), cfg)[:t]
    mels.append(np.pad(mel, ((0, t - len(mel)), (0, 0), (0, 0))).astype(np.float16))
    ids.append(_text(rec["clip_id"]))
    who.append(_text(rec["identity"]))
  if not meshes:
    raise InputError(f"{name}:{split} in {data_dir} has no clip with landmarks (build it with "
                     f"`vasa-jax data extract-motion --geometry`)")
  starts = np.concatenate([[0], np.cumsum([len(m) for m in meshes])]).astype(np.int64)
  out = ClipSet(np.concatenate(meshes), np.concatenate(mels), starts, ids, who)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + ".partial.npz"
  np.savez(tmp, mesh=out.mesh, mel=out.mel, starts=out.starts, ids=np.array(ids),
           identities=np.array(who))
  os.replace(tmp, path)
  log.info("extracted %s:%s (%d clips, %d frames) in %.0f s", name, split, len(out),
           len(out.mesh), time.perf_counter() - t0)
  return out


# ----------------------------------------------------------------------------- training

def sample_batch(rng: np.random.Generator, sets: Sequence[ClipSet], weights: Sequence[float],
                 clips: int, group: int, cfg: Config, augment: bool = True):
  """(mesh windows [clips * group, window, C], audio windows [..., window * P, M]); the
  `group` rows of one clip are consecutive (`syncnet.sync_loss`)."""
  ms, as_ = [], []
  which = rng.choice(len(sets), size=clips, p=np.asarray(weights) / np.sum(weights))
  for si in which:
    cs = sets[si]
    ok = np.nonzero(cs.lengths() - cfg.window + 1 >= cfg.min_gap * group)[0]
    mesh, mel = cs.clip(int(rng.choice(ok)))
    starts = syncnet._group_starts(rng, len(mesh) - cfg.window + 1, group, cfg.min_gap,
                                   cfg.max_gap)
    mw = mesh_windows(mesh, starts, cfg.window).astype(np.float32)
    aw = syncnet.audio_windows(mel, starts, cfg.window).astype(np.float32)
    if augment:
      # lip-motion gain and a small in-plane rotation of the (x, y) offsets, then noise
      mw = mw * np.exp(rng.uniform(-0.4, 0.4, size=(1, 1, mw.shape[-1])))
      mw = mw + rng.normal(0, 0.1, mw.shape)
      width = int(rng.integers(0, 7))
      f0 = int(rng.integers(0, cfg.n_mels - width + 1))
      aw = aw * np.exp(rng.uniform(-0.2, 0.2))
      aw[..., f0:f0 + width] = 0.0
      aw = aw + rng.normal(0, 0.1, aw.shape)
    ms.append(mw)
    as_.append(aw)
  return np.concatenate(ms).astype(np.float32), np.concatenate(as_).astype(np.float32)


def train(sets: Sequence[ClipSet], weights: Sequence[float], cfg: Config, *, steps: int,
          clips: int, group: int = 6, cross_weight: float = 0.3, lr: float = 1e-3,
          seed: int = 0, max_seconds: float = 0.0, log_every: int = 100):
  """Fits the model (`syncnet.fit`, the pixel SyncNet's loop and loss). Returns (params, info
  with the logged history)."""
  rng = np.random.default_rng(seed)
  return syncnet.fit(MeshSyncNet(cfg), init_params(cfg, seed),
                     lambda: sample_batch(rng, sets, weights, clips, group, cfg), steps=steps,
                     group=group, cross_weight=cross_weight, lr=lr,
                     warmup_steps=min(200, steps // 10 + 1), max_seconds=max_seconds,
                     log_every=log_every)


# ----------------------------------------------------------------------------- validation

def _round(x, n=4):
  return round(float(x), n)


def validate_set(ev: MeshSyncEvaluator, cs: ClipSet, *, shift: int = 10,
                 max_offset: int = 15) -> dict:
  """Held-out figures: the best offset of each clip as it is (in sync: |offset| <= 1) and with
  the audio delayed by `shift` frames (the mouth then leads: the offset should move by
  -shift); Sync-C / Sync-D means."""
  rows = []
  for c in range(len(cs)):
    mesh, mel = cs.clip(c)
    mel = mel.astype(np.float32)
    m = ev.embed_video(mesh)
    if len(m) - 2 * max_offset - shift < 1:
      continue
    a = ev.embed_audio(mel)
    offsets, dists = syncnet.offset_curve(m, a, max_offset)
    s = syncnet.sync_scores(offsets, dists)
    # audio delayed by `shift`: audio window t is now what was said at t - shift
    offs2, d2 = syncnet.offset_curve(m[shift:], a[:len(a) - shift], max_offset)
    s2 = syncnet.sync_scores(offs2, d2)
    rows.append({"clip": cs.ids[c], "offset": s["offset"], "sync_c": _round(s["sync_c"]),
                 "sync_d": _round(s["sync_d"]), "delayed_offset": s2["offset"]})
  off = np.array([r["offset"] for r in rows])
  off2 = np.array([r["delayed_offset"] for r in rows])
  return {"clips": len(rows), "max_offset": max_offset, "shift_frames": shift,
          "in_sync_share": _round(np.mean(np.abs(off) <= 1)),
          "exact_0_share": _round(np.mean(off == 0)),
          "delayed_recovered_within_1": _round(np.mean(np.abs(off2 - off + shift) <= 1)),
          "sync_c_mean": _round(np.mean([r["sync_c"] for r in rows])),
          "sync_d_mean": _round(np.mean([r["sync_d"] for r in rows])),
          "offset_histogram": {str(int(o)): int(n) for o, n in zip(*np.unique(off,
                                                                             return_counts=True))},
          "per_clip": rows}


def split_by_identity(cs: ClipSet, fraction: float, seed: int = 0):
  """(train, dev) subsets of a clip set with no identity in both (dev: ~fraction of the
  identities)."""
  who = sorted(set(cs.identities))
  rng = np.random.default_rng(seed)
  dev_who = set(rng.permutation(who)[:max(1, int(round(fraction * len(who))))])
  dev = [c for c in range(len(cs)) if cs.identities[c] in dev_who]
  train_ = [c for c in range(len(cs)) if cs.identities[c] not in dev_who]
  return cs.subset(train_), cs.subset(dev)


# ----------------------------------------------------------------------------- main

def _parser():
  p = argparse.ArgumentParser(prog="vasa-jax eval meshsync", description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", required=True,
                 help=f"TFDS folder holding {REAL_DATASET} and {SYNTH_DATASET}")
  p.add_argument("--out", default=contrastive.assets_dir(NAME), help="weights folder to write")
  p.add_argument("--report", default="docs/evaluators/meshsync.json", help="validation JSON")
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--batch-size", type=int, default=32, help="clips per batch")
  p.add_argument("--windows-per-clip", type=int, default=6)
  p.add_argument("--window", type=int, default=Config.window, help="frames per window")
  p.add_argument("--min-gap", type=int, default=Config.min_gap,
                 help="frames between the windows of one clip in a batch: the nearest timing "
                      "the model must tell apart")
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--real-fraction", type=float, default=0.5,
                 help="share of each batch drawn from the real clips")
  p.add_argument("--dev-fraction", type=float, default=0.0,
                 help="hold out this share of the TRAIN identities and report on them (for "
                      "choosing settings without looking at the test split)")
  p.add_argument("--max-minutes", type=float, default=20.0,
                 help="stop training after this long (0: no limit)")
  p.add_argument("--cache-dir", default="/tmp/vasa_meshsync_cache")
  p.add_argument("--eval-only", action="store_true", help="validate --weights, do not train")
  p.add_argument("--weights", default=None, help="with --eval-only (default: bundled)")
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _parser().parse_args(argv)
  t0 = time.perf_counter()
  try:
    if args.window < 3:
      raise InputError(f"--window must be at least 3 frames, got {args.window}")
    if args.min_gap < 1:
      raise InputError(f"--min-gap must be at least 1 frame, got {args.min_gap}")
    cfg = Config(window=args.window, min_gap=args.min_gap)
    report = {"evaluator": NAME}
    if args.eval_only:
      ev = load(args.weights)
      cfg = ev.cfg
      info = contrastive.trained_info(ev.meta, args.weights, NAME)
    else:
      real = extract(REAL_DATASET, "train", args.data_dir, cfg, cache_dir=args.cache_dir)
      synth = extract(SYNTH_DATASET, "train", args.data_dir, cfg, cache_dir=args.cache_dir)
      dev = None
      if args.dev_fraction > 0:
        real, dev = split_by_identity(real, args.dev_fraction, args.seed)
      log.warning("data: %d real clips (%d frames), %d synthetic clips (%d frames), %.0f s",
                  len(real), len(real.mesh), len(synth), len(synth.mesh),
                  time.perf_counter() - t0)
      params, info = train([real, synth], [args.real_fraction, 1 - args.real_fraction], cfg,
                           steps=args.steps, clips=args.batch_size,
                           group=args.windows_per_clip, lr=args.lr, seed=args.seed,
                           max_seconds=args.max_minutes * 60)
      info.update({"command": f"vasa-jax eval {NAME} " + " ".join(argv),
                   "real_clips": len(real), "synthetic_clips": len(synth),
                   "batch_clips": args.batch_size, "windows_per_clip": args.windows_per_clip,
                   "lr": args.lr, "real_fraction": args.real_fraction, "seed": args.seed,
                   "datasets": [f"{REAL_DATASET}:train", f"{SYNTH_DATASET}:train"]})
      save(args.out, params, cfg, {"training": info})
      ev = load(args.out)
      if dev is not None:
        report["real_dev"] = validate_set(ev, dev)
    report.update({"config": dataclasses.asdict(cfg),
                   "params": contrastive.count_params(ev.params), "training": info})
    if args.dev_fraction <= 0:
      report["real_test"] = validate_set(ev, extract(REAL_DATASET, "test", args.data_dir, cfg,
                                                     cache_dir=args.cache_dir))
      report["synthetic_test"] = validate_set(ev, extract(SYNTH_DATASET, "test", args.data_dir,
                                                          cfg, cache_dir=args.cache_dir))
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
  except (contrastive.EvaluatorError, ValueError, FileNotFoundError) as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 2
  contrastive.write_json(args.report, report)
  brief = {k: {kk: vv for kk, vv in v.items() if kk != "per_clip"}
           for k, v in report.items() if k in ("real_dev", "real_test", "synthetic_test")}
  print(json.dumps(brief, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

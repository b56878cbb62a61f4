r"""TFDS builder `motion_latents`: the measured face-mesh motion of clip datasets, stored once.

Stage 2 (MotionDiT) trains on motion m_t = [z_pose_t, z_dyn_t]: the codes of the face mesh
tracked in every frame (vasa_jax.geometry: pose [6] ++ expression coefficients of a face basis,
eyelid openness and gaze). Tracking inside each training step is far too slow; this builder
tracks every frame of every clip of the source datasets (`synthetic_talking_heads/...`,
`talking_face_videos/...`) once, fits the face basis on `train` (or loads a given one), and
stores one example per clip:

  motion [T, 6 + dyn_dim] float32, landmarks [T, 478 * 3] float16 (pixels of the clip's frames)
  with landmarks_valid [T] (which frames were measured; the others are interpolated) and size,
  audio [T * 640] int16 (as in the clip), num_frames, the label tracks of `records.TRACKS` with
  their has_* flags, the controls (control_*, has_control_*), dataset ("name/config" of the
  source), clip_id and source (as in the source clip), identity ("<dataset>:<identity>", so
  identities of different sources never collide) and identity_index (its hash).

Splits are the sources' splits (train / test). The dataset's version folder holds
face_basis.npz (the basis the codes are in; `load_dataset_basis`) and motion_stats.json, the
per-dimension mean / std over all frames of `train` (the format of
`vasa_jax.data.motion.save_stats`; `load_dataset_stats`).

    vasa-jax data extract-motion --datasets talking_face_videos/r256 --data-dir DIR \
        [--face-basis BASIS.npz] [--name geo]

    # or in Python:
    b = MotionLatents(config=make_config("mine", ["talking_face_videos/r256"]), data_dir=DIR)
    b.download_and_prepare(file_format="array_record")
    tfds.data_source("motion_latents/mine", split="train", data_dir=DIR)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable, Iterable

import numpy as np
import tensorflow_datasets as tfds

from vasa_jax.data import records
from vasa_jax.data.records import text as _text  # noqa: E402
from vasa_jax.errors import InputError

log = logging.getLogger(__name__)

NAME = "motion_latents"
STATS_FILE = "motion_stats.json"   # = vasa_jax.data.motion.STATS_FILE
SPLIT_ORDER = ("train", "test")


@dataclasses.dataclass
class MotionLatentsConfig(tfds.core.BuilderConfig):
  datasets: tuple[str, ...] = ()    # source clip datasets, "name/config"
  max_clips: int = 0                # at most this many clips of each split of each source (0: all)
  stats_min_std: float = 1e-2       # floor of the per-dimension std in motion_stats.json
  face_basis: str = ""              # a face_basis.npz to use ("": fit one on train)
  exp_dim: int = 40                 # expression components of a fitted basis


def make_config(name: str, datasets, max_clips: int = 0, **kw) -> MotionLatentsConfig:
  datasets = tuple(datasets)
  limit = f", at most {max_clips} clips per split and source" if max_clips else ""
  return MotionLatentsConfig(
      name=name, datasets=datasets, max_clips=int(max_clips or 0),
      description=f"face-geometry codes and landmarks of {', '.join(datasets)}{limit}", **kw)


def features():
  feats = {
      "motion": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="bytes"),
      "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
      "num_frames": np.int32,
      "dataset": tfds.features.Text(),
      "clip_id": tfds.features.Text(),
      "source": tfds.features.Text(),
      "identity": tfds.features.Text(),
      "identity_index": np.int64,
      **records.control_features(),
  }
  for name, shape in records.TRACKS.items():
    feats[name] = tfds.features.Tensor(shape=(None, *shape), dtype=np.float32)
  for flag in records.LABEL_FLAGS:
    feats[flag] = np.int32
  # [T, 478 * 3] landmarks in pixels of the clip's frames, and which frames were measured
  # (the others are interpolated).
  feats["landmarks"] = tfds.features.Tensor(shape=(None, None), dtype=np.float16,
                                            encoding="bytes")
  feats["landmarks_valid"] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
  feats["size"] = np.int32
  return tfds.features.FeaturesDict(feats)


class MotionLatents(tfds.core.GeneratorBasedBuilder):
  """Per-clip face-mesh codes and landmarks with the clips' audio, labels and controls."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  # No registered configs: each build names its own (MotionLatentsConfig: sources, face
  # basis), and reading "motion_latents/<name>" loads the built dataset from its files.

  def __init__(self, *, source_data_dir: str | None = None,
               progress: Callable[[], None] | None = None, track_workers: int = 1, **kwargs):
    """Build-time options (reading needs none): source_data_dir, where the source datasets are
    built (default: this data_dir); progress, called once per tracked clip; track_workers,
    tracking processes."""
    self._source_data_dir = source_data_dir
    self._progress = progress
    self._track_workers = max(1, int(track_workers))
    self.summary: dict = {}
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features())

  # --------------------------------------------------------------------------- generation

  def _split_generators(self, dl_manager):
    """Tracks every clip of every split once (landmarks), fits the face basis on `train` (or
    loads cfg.face_basis), then yields codes + landmarks per clip."""
    from vasa_jax.geometry import codes as codes_lib
    from vasa_jax.geometry import tracking
    cfg = self.builder_config
    sources = open_sources(cfg.datasets, self._source_data_dir or os.fspath(self.data_dir_root))
    splits = sorted({s for _, b in sources for s in b.info.splits},
                    key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))
    if "train" not in splits:
      raise InputError(f"none of {list(cfg.datasets)} has a train split")
    tracked: dict[str, list] = {}
    t0 = time.perf_counter()
    for split in splits:
      for name, b in sources:
        if split not in b.info.splits or not b.info.splits[split].num_examples:
          continue
        src = b.as_data_source(split=split)
        n = min(len(src), cfg.max_clips) if cfg.max_clips else len(src)
        for i, rec, tr in tracking.track_source(src, n, workers=self._track_workers,
                                                      decode=records.decode_jpeg):
          tracked.setdefault(split, []).append((name, src, i, tr, int(rec["size"]),
                                                _text(rec["identity"])))
          if self._progress is not None:
            self._progress()
    log.info("tracked %d clips in %.0f s", sum(len(v) for v in tracked.values()),
             time.perf_counter() - t0)
    if cfg.face_basis:
      basis = codes_lib.FaceBasis.load(cfg.face_basis)
    else:
      clips = [dict(points=tr.points, valid=tr.valid, identity=f"{name}:{ident}", crop=size,
                    real=not name.startswith("synthetic"),
                    weight=0.5 if name.startswith("synthetic") else 1.0)
               for name, _, _, tr, size, ident in tracked["train"]]
      basis = codes_lib.fit_basis(clips, exp_dim=cfg.exp_dim)
    os.makedirs(os.fspath(self.data_path), exist_ok=True)
    basis.save(os.path.join(os.fspath(self.data_path), codes_lib.BASIS_FILE))
    self._basis = basis
    self._motion_dim = 6 + basis.dyn_dim
    self.summary = {"splits": {}, "motion_dim": self._motion_dim,
                    "basis": dict(basis.meta)}
    return {split: self._generate_examples(split, tracked.get(split, [])) for split in splits}

  def _generate_examples(self, split, items):
    from vasa_jax.geometry import codes as codes_lib
    cfg = self.builder_config
    moments = _motion().Moments() if split == "train" else None
    t0, clips, frames, measured = time.perf_counter(), 0, 0, 0
    for name, src, i, tr, size, _ in items:
      rec = src[i]
      if not tr.valid.any():
        log.warning("%s:%s: no face tracked in any frame; skipped", name, _text(rec["clip_id"]))
        continue
      c = codes_lib.encode(tr.points, self._basis, size)
      motion = np.concatenate([c.pose, c.dyn], -1).astype(np.float32)
      ex = _example(name, rec, motion)
      ex["landmarks"] = tr.points.reshape(len(tr.points), -1).astype(np.float16)
      ex["landmarks_valid"] = tr.valid.astype(np.int32)
      ex["size"] = np.int32(size)
      if moments is not None:
        moments.add(motion[tr.valid])
      clips += 1
      frames += motion.shape[0]
      measured += int(tr.valid.sum())
      yield f"{name}:{ex['clip_id']}", ex
    self.summary["splits"][split] = {"clips": clips, "frames": frames,
                                     "tracked_frames": measured,
                                     "seconds": round(time.perf_counter() - t0, 1)}
    if moments is not None:
      path = os.path.join(os.fspath(self.data_path), STATS_FILE)
      _motion().save_stats(
          path, moments.stats(cfg.stats_min_std), split="train", motion_source="geometry",
          datasets=list(cfg.datasets), face_basis=codes_lib.BASIS_FILE,
          dyn_names=codes_lib.dyn_names(self._basis.exp_dim))


# ----------------------------------------------------------------------------- helpers

def _motion():
  from vasa_jax.data import motion   # imports jax: only when building or reading stats
  return motion


def open_sources(datasets: Iterable[str], data_dir: str | None):
  """[(name, builder)] of built clip datasets (the `records` schema: synthetic_talking_heads,
  talking_face_videos, ...); ValueError / FileNotFoundError (one line) for a name that is not a
  registered clip dataset or is not built in data_dir."""
  from vasa_jax.data import pipeline, register_builders
  register_builders()          # the clip builders are known to TFDS once imported
  datasets = list(datasets)
  if not datasets:
    raise InputError("no source datasets given")
  out = []
  for name in datasets:
    kind, _, config = name.partition("/")
    try:
      tfds.builder_cls(kind)
      known = kind != NAME and bool(config)
    except tfds.core.registered.DatasetNotFoundError:
      known = False
    if not known:
      raise InputError(f"unknown source dataset {name!r}: use synthetic_talking_heads/<config> or "
                       "talking_face_videos/<config>")
    builder = pipeline.open_builder(name, data_dir)
    if "frames" not in builder.info.features:
      raise InputError(f"{name} is not a clip dataset (it has no frames)")
    out.append((name, builder))
  return out


def _example(dataset: str, rec, motion: np.ndarray) -> dict:
  """The motion_latents example of one source clip record and its motion [T, D]."""
  t = int(rec["num_frames"])
  if motion.shape[0] != t:
    raise ValueError(f"{dataset}:{_text(rec['clip_id'])}: {motion.shape[0]} frames, "
                     f"num_frames={t}")
  identity = f"{dataset}:{_text(rec['identity'])}"
  ex = {
      "motion": np.asarray(motion, np.float32),
      "audio": np.asarray(rec["audio"], np.int16),
      "num_frames": np.int32(t),
      "dataset": dataset,
      "clip_id": _text(rec["clip_id"]),
      "source": _text(rec["source"]),
      "identity": identity,
      "identity_index": np.int64(records.identity_index(identity)),
      "control_gaze": np.asarray(rec["control_gaze"], np.float32),
      "control_distance": np.float32(rec["control_distance"]),
      "control_emotion": np.int32(rec["control_emotion"]),
      "control_emotion_intensity": np.float32(rec["control_emotion_intensity"]),
  }
  for f in ("has_control_gaze", "has_control_distance", "has_control_emotion",
            *records.LABEL_FLAGS):
    ex[f] = np.int32(rec[f])
  for name, shape in records.TRACKS.items():
    ex[name] = np.asarray(rec[name], np.float32).reshape(t, *shape)
  return ex


# ----------------------------------------------------------------------------- reading

def dataset_dir(data_dir: str | None, name: str) -> str:
  """The version folder of a built motion_latents dataset (`name` like motion_latents/geo)."""
  from vasa_jax.data import pipeline
  if name.split("/")[0] != NAME:
    raise InputError(f"{name!r} is not a {NAME}/<name> dataset")
  return os.fspath(pipeline.open_builder(name, data_dir).data_path)


def load_dataset_basis(data_dir: str | None, name: str):
  """The FaceBasis stored with a geometry motion_latents dataset (its face_basis.npz)."""
  from vasa_jax.geometry import codes as codes_lib
  path = os.path.join(dataset_dir(data_dir, name), codes_lib.BASIS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing: {name} was not built with `vasa-jax data "
                            "extract-motion` (an old learned-latent dataset?)")
  return codes_lib.FaceBasis.load(path)


def load_dataset_stats(data_dir: str | None, name: str) -> dict:
  """The per-dimension motion statistics ({"mean", "std", "count", ...}) stored with a built
  motion_latents dataset (its motion_stats.json)."""
  path = os.path.join(dataset_dir(data_dir, name), STATS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} is missing; rebuild {name} with `vasa-jax data extract-motion`")
  return _motion().load_stats(path)

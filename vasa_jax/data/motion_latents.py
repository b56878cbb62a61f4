r"""TFDS builder `motion_latents`: stage-1 motion latents of clip datasets, stored once.

Stage 2 (MotionDiT) trains on motion latents m_t = [z_pose_t, z_dyn_t], what the trained stage-1
encoder (`FaceLatentModel.encode_motion`, EMA weights) reads off every frame. Encoding them
inside each training step is far too slow; this builder runs the encoder once over every frame
of every clip of the source datasets (`synthetic_talking_heads/...`, `talking_face_videos/...`)
and stores one example per clip:

  motion [T, 6 + dyn_dim] float32, audio [T * 640] int16 (as in the clip), num_frames, the
  label tracks of `records.TRACKS` with their has_* flags, the controls (control_*,
  has_control_*), dataset ("name/config" of the source), clip_id and source (as in the source
  clip), identity ("<dataset>:<identity>", so identities of different sources never collide)
  and identity_index (its hash).

Splits are the sources' splits (train / test). motion_stats.json in the dataset's version folder
holds the per-dimension mean / std over all frames of `train` (the format of
`vasa_jax.data.motion.save_stats`; `load_dataset_stats`), with where the latents came from.

    vasa-jax data extract-motion --face-latent-checkpoint STAGE1_WORKDIR \
        --face-latent-config configs/face_latent.py:demo \
        --datasets synthetic_talking_heads/r256_n1000,talking_face_videos/r256 --data-dir DIR

    # or in Python:
    b = MotionLatents(config=MotionLatentsConfig(name="mine", datasets=(...,),
                                                 face_latent_config="configs/face_latent.py:demo"),
                      data_dir=DIR, face_latent_checkpoint=STAGE1_WORKDIR)
    b.download_and_prepare(file_format="array_record")
    tfds.data_source("motion_latents/mine", split="train", data_dir=DIR)

Frames are decoded on a thread pool one clip ahead of the encoder; the frames of consecutive
clips are packed into fixed batches of `batch_size` (only the last batch of a source split is
zero-padded), so the jitted encoder compiles once per frame size. Frames whose size differs
from the model's image_size are resized on device exactly as `motion.latent_motion_fn` does.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import time
from typing import Callable, Iterable, Iterator

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
  face_latent_config: str = "configs/face_latent.py:demo"   # the stage-1 checkpoint's config
  max_clips: int = 0                # at most this many clips of each split of each source (0: all)
  stats_min_std: float = 1e-2       # floor of the per-dimension std in motion_stats.json
  # "latent": the stage-1 encoder's z_pose ++ z_dyn (face_latent_config + a checkpoint);
  # "geometry": codes of the measured face mesh (vasa_jax.geometry), plus the landmarks.
  motion_source: str = "latent"
  face_basis: str = ""              # geometry: a face_basis.npz to use ("": fit one on train)
  exp_dim: int = 40                 # geometry: expression components of a fitted basis


def make_config(name: str, datasets, face_latent_config: str, max_clips: int = 0,
                **kw) -> MotionLatentsConfig:
  datasets = tuple(datasets)
  limit = f", at most {max_clips} clips per split and source" if max_clips else ""
  what = ("face-geometry codes and landmarks" if kw.get("motion_source") == "geometry"
          else f"stage-1 motion latents ({face_latent_config})")
  return MotionLatentsConfig(
      name=name, datasets=datasets, face_latent_config=face_latent_config,
      max_clips=int(max_clips or 0),
      description=f"{what} of {', '.join(datasets)}{limit}", **kw)


def features(geometry: bool = False):
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
  if geometry:
    # [T, 478 * 3] landmarks in pixels of the clip's frames, and which frames were measured
    # (the others are interpolated).
    feats["landmarks"] = tfds.features.Tensor(shape=(None, None), dtype=np.float16,
                                              encoding="bytes")
    feats["landmarks_valid"] = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    feats["size"] = np.int32
  return tfds.features.FeaturesDict(feats)


class MotionLatents(tfds.core.GeneratorBasedBuilder):
  """Per-clip stage-1 motion latents with the clips' audio, labels and controls."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  # No registered configs: each build names its own (MotionLatentsConfig: sources, stage-1
  # config), and reading "motion_latents/<name>" loads the built dataset from its files.

  def __init__(self, *, face_latent_checkpoint: str | None = None,
               face_latent_params=None, source_data_dir: str | None = None,
               batch_size: int = 64, workers: int | None = None,
               compiler_options: dict | None = None,
               progress: Callable[[], None] | None = None,
               dyn_labels: str | None = None, track_workers: int = 1, **kwargs):
    """Build-time options (reading needs none): face_latent_checkpoint, the stage-1 workdir,
    and face_latent_params, its EMA params (train.common.load_stage1 restores them);
    source_data_dir, where the source datasets are built (default: this data_dir); batch_size,
    frames per encoder call; workers, JPEG decoding threads; progress, called once per clip;
    dyn_labels, an .npz of tools/label_mouth.py: z_dyn[0:4] become the named factors (see
    `named_dyn`)."""
    if batch_size < 1:
      raise ValueError("batch_size must be >= 1")
    self._checkpoint = face_latent_checkpoint
    self._params = face_latent_params
    self._source_data_dir = source_data_dir
    self._batch_size = int(batch_size)
    self._workers = workers or min(8, os.cpu_count() or 1)
    self._compiler_options = compiler_options
    self._progress = progress
    self._dyn_labels = load_dyn_labels(dyn_labels) if dyn_labels else None
    self._track_workers = max(1, int(track_workers))
    self.summary: dict = {}
    super().__init__(**kwargs)

  @property
  def _geometry(self) -> bool:
    return getattr(self.builder_config, "motion_source", "latent") == "geometry"

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 features=features(self._geometry))

  # --------------------------------------------------------------------------- generation

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    if self._geometry:
      return self._geometry_splits()
    if not self._checkpoint:
      raise InputError("building motion_latents needs face_latent_checkpoint= (the stage-1 "
                       "workdir)")
    sources = open_sources(cfg.datasets, self._source_data_dir or os.fspath(self.data_dir_root))
    splits = sorted({s for _, b in sources for s in b.info.splits},
                    key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))
    if "train" not in splits:
      raise InputError(f"none of {list(cfg.datasets)} has a train split")
    self._encode, self._motion_dim = _encoder(cfg.face_latent_config, self._checkpoint,
                                              self._compiler_options, self._params)
    self.summary = {"splits": {}, "motion_dim": self._motion_dim}
    return {split: self._generate_examples(
        split, [(name, b.as_data_source(split=split)) for name, b in sources
                if split in b.info.splits and b.info.splits[split].num_examples])
            for split in splits}

  # --------------------------------------------------------------------------- geometry

  def _geometry_splits(self):
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
    return {split: self._geometry_examples(split, tracked.get(split, [])) for split in splits}

  def _geometry_examples(self, split, items):
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

  def _generate_examples(self, split, parts):
    cfg = self.builder_config
    moments = _motion().Moments() if split == "train" else None
    t0, clips, frames = time.perf_counter(), 0, 0
    for dataset, src in parts:
      n = min(len(src), cfg.max_clips) if cfg.max_clips else len(src)
      clip_frames = _decoded(src, n, self._workers)
      for rec, motion in encode_stream(clip_frames, self._encode, self._batch_size):
        if self._dyn_labels is not None:
          motion = named_dyn(dataset, rec, motion, self._dyn_labels)
        ex = _example(dataset, rec, motion)
        if moments is not None:
          moments.add(motion)
        clips += 1
        frames += motion.shape[0]
        if self._progress is not None:
          self._progress()
        yield f"{dataset}:{ex['clip_id']}", ex
    seconds = time.perf_counter() - t0
    self.summary["splits"][split] = {"clips": clips, "frames": frames,
                                     "seconds": round(seconds, 1)}
    log.info("motion_latents[%s]: %d clips, %d frames in %.1f s", split, clips, frames, seconds)
    if moments is not None:
      path = os.path.join(os.fspath(self.data_path), STATS_FILE)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      _motion().save_stats(
          path, moments.stats(cfg.stats_min_std), split="train", motion_source="latent",
          face_latent_checkpoint=os.path.abspath(self._checkpoint),
          face_latent_config=cfg.face_latent_config, datasets=list(cfg.datasets))


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


def _encoder(face_latent_config: str, checkpoint: str, compiler_options, params=None):
  """(encode(frames uint8 [1,N,S,S,3]) -> [1,N,D], D) with the stage-1 EMA encoder whose
  params the caller restored (train.common.load_stage1: this layer restores no checkpoint)."""
  from vasa_jax import config_utils
  if params is None:
    raise InputError(f"the stage-1 params of {checkpoint} are needed (face_latent_params=)")
  fl_config = config_utils.run_config(checkpoint, face_latent_config)
  enc = _motion().latent_motion_fn(fl_config, params, compiler_options=compiler_options)
  return enc, enc.motion_dim


def _decode_frame(data) -> np.ndarray:
  return records.decode_jpeg(bytes(data))


def _decoded(source, n: int, workers: int) -> Iterator[tuple[dict, np.ndarray]]:
  """(record, frames uint8 [T,S,S,3]) of the first n clips; decoding runs one clip ahead."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
      concurrent.futures.ThreadPoolExecutor(1) as reader:

    def load(i):
      rec = source[i]
      return rec, np.stack(list(pool.map(_decode_frame, rec["frames"])))

    ahead = collections.deque(reader.submit(load, i) for i in range(min(n, 2)))
    nxt = len(ahead)
    while ahead:
      item = ahead.popleft().result()
      if nxt < n:
        ahead.append(reader.submit(load, nxt))
        nxt += 1
      yield item


def encode_stream(items: Iterable[tuple[object, np.ndarray]], encode, batch: int):
  """Encodes the frames of a stream of clips in fixed-size batches; yields (payload, motion).

  items: (payload, frames [T, S, S, 3]) in order. Frames of consecutive clips share batches of
  exactly `batch` frames (the last one zero-padded; a change of frame size also flushes), so
  `encode(frames [1, batch, S, S, 3]) -> [1, batch, D]` compiles once per frame size. Motion
  comes back as float32 [T, D] in the order of the input.
  """
  queue: list[np.ndarray] = []          # frames not yet sent to the encoder
  queued = 0
  inflight = collections.deque()        # (device output [batch, D], valid rows)
  rows: list[np.ndarray] = []           # encoded rows not yet handed out
  have = 0
  clips = collections.deque()           # (payload, T, cumulative end frame)
  sent = total = 0
  shape = None

  def dispatch():
    nonlocal queued, sent
    parts, need = [], batch
    while need and queue:
      f = queue[0]
      if len(f) <= need:
        parts.append(queue.pop(0))
        need -= len(f)
      else:
        parts.append(f[:need])
        queue[0] = f[need:]
        need = 0
    if need:
      parts.append(np.zeros((need, *shape), np.uint8))
    inflight.append((encode(np.concatenate(parts)[None])[0], batch - need))
    queued -= batch - need
    sent += batch - need

  def take(t):
    nonlocal have, rows
    while have < t:
      out, n = inflight.popleft()
      rows.append(np.asarray(out, np.float32)[:n])
      have += n
    flat = np.concatenate(rows) if len(rows) != 1 else rows[0]
    rows, have = [flat[t:]], have - t
    return flat[:t]

  def ready(final=False):
    while clips and (final or clips[0][2] <= sent):
      payload, t, _ = clips.popleft()
      yield payload, take(t)

  for payload, frames in items:
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or not len(frames):
      raise ValueError(f"frames must be [T >= 1, S, S, 3], got {frames.shape}")
    if shape is not None and frames.shape[1:] != shape and queued:
      dispatch()
    shape = frames.shape[1:]
    total += len(frames)
    clips.append((payload, len(frames), total))
    queue.append(frames)
    queued += len(frames)
    while queued >= batch:
      dispatch()
    yield from ready()
  while queued:
    dispatch()
  yield from ready(final=True)



NAMED_DYN = ("mouth_open", "mouth_wide", "mouth_round", "blink")


def load_dyn_labels(path: str) -> dict:
  """{"dataset:clip_id": float32 [T, 4]} from a tools/label_mouth.py .npz."""
  with np.load(path) as z:
    return {k: np.asarray(z[k], np.float32) for k in z.files if not k.startswith("__")}


def named_dyn(dataset: str, rec, motion: np.ndarray, labels: dict) -> np.ndarray:
  """motion [T, 6 + dyn] with z_dyn[0:4] (motion[:, 6:10]) = mouth open, wide, round, blink.

  The clip's own ground truth where it has both (synthetic clips), else the pseudo-labels of
  `labels` (tools/label_mouth.py) for "dataset:clip_id". A clip with neither is an error: a
  motion dataset whose named dims mean different things per clip would teach stage 2 noise.
  These are the dims the retired mouth rig read (learned-flow codes).
  """
  motion = np.array(motion, np.float32, copy=True)
  t = motion.shape[0]
  if int(rec["has_mouth"]) and int(rec["has_blink"]):
    named = np.c_[np.asarray(rec["mouth"], np.float32).reshape(t, 3),
                  np.asarray(rec["blink"], np.float32).reshape(t, 1)]
  else:
    key = f"{dataset}:{_text(rec['clip_id'])}"
    if key not in labels:
      raise InputError(f"{key}: no ground-truth mouth/blink and no entry in the dyn labels")
    named = labels[key]
    if named.shape != (t, 4):
      raise InputError(f"{key}: dyn labels {named.shape}, expected {(t, 4)}")
  motion[:, 6:6 + len(NAMED_DYN)] = named
  return motion


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
  """The version folder of a built motion_latents dataset (`name` like motion_latents/demo)."""
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
                            "extract-motion --geometry`")
  return codes_lib.FaceBasis.load(path)


def load_dataset_stats(data_dir: str | None, name: str) -> dict:
  """The per-dimension motion statistics ({"mean", "std", "count", ...}) stored with a built
  motion_latents dataset (its motion_stats.json)."""
  path = os.path.join(dataset_dir(data_dir, name), STATS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} is missing; rebuild {name} with `vasa-jax data extract-motion`")
  return _motion().load_stats(path)

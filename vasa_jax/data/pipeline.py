"""grain input pipelines: dataset sources and loaders, and the stage-2 window transform.

Sources are TFDS array_record datasets read with `tfds.data_source` (no TensorFlow), one or
several concatenated (synthetic + real). Each process reads its own shard
(`ShardOptions(process_index, process_count)`), batches its share of the global batch, and
`sharding.to_global` assembles `jax.Array`s on the mesh. Iterator state is a small JSON blob
(`iterator.get_state()`), saved with the checkpoint so a restarted run sees the same data.

(The stage-1 frame pairs are vasa_jax/data/geometry_pairs.py, on these sources and loaders.)

Stage 2 example (motion diffusion):
  a window of W frames: per-frame tracks [W, ...], audio [W*640]; the previous K frames' tracks
  and audio with prev_mask [K] (0 where the window starts before frame K); clip controls.
  Over a motion_latents dataset (`with_motion=True`) the stored per-frame motion codes [T, D]
  are sliced the same way into "motion" [W, D] and "prev_motion" [K, D].
"""

from __future__ import annotations

from typing import Sequence

import grain.python as grain
import numpy as np

from vasa_jax.data import records
from vasa_jax.errors import InputError

SPF = records.SAMPLES_PER_FRAME


# ----------------------------------------------------------------------------- sources

def build_hint(name: str) -> str:
  """The command that builds dataset `name`."""
  if name.split("/")[0] == "motion_latents":
    return f"vasa-jax data extract-motion --name {name.partition('/')[2] or 'NAME'} ..."
  return f"vasa-jax data build {name}"


def open_builder(name: str, data_dir: str | None = None, **builder_kwargs):
  """The TFDS builder of a built dataset; FileNotFoundError (with the build command) if it is
  not built. Configs that are not registered in code (e.g. motion_latents/<your name>) are
  read from their files."""
  import tensorflow_datasets as tfds

  from vasa_jax.data import register_builders
  register_builders()
  try:
    builder = tfds.builder(name, data_dir=data_dir, **builder_kwargs)
  except ValueError as e:   # DatasetNotFoundError, or an unregistered config that is not built
    raise FileNotFoundError(
        f"dataset {name} is not built in {data_dir or 'the default data dir'} "
        f"({str(e).strip().splitlines()[0]}); run `{build_hint(name)}` first") from None
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"dataset {name} is not built in {builder.data_dir}; run `{build_hint(name)}` first")
  return builder


def open_source(name: str, split: str, data_dir: str | None = None, **builder_kwargs):
  """A random-access view of a built TFDS dataset (`name` like synthetic_talking_heads/r256_n1000)."""
  return open_builder(name, data_dir, **builder_kwargs).as_data_source(split=split)


class ConcatSource(grain.RandomAccessDataSource):
  """Several random-access sources as one, each optionally repeated to weight the mix."""

  def __init__(self, sources: Sequence, repeats: Sequence[int] | None = None):
    repeats = list(repeats or [1] * len(sources))
    if len(repeats) != len(sources) or min(repeats) < 1:
      raise ValueError("repeats must be positive, one per source")
    self._sources = list(sources)
    self._lengths = [len(s) for s in sources]
    self._offsets = np.cumsum([0] + [n * r for n, r in zip(self._lengths, repeats)])
    if self._offsets[-1] == 0:
      raise InputError("all data sources are empty")

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __getitem__(self, index: int):
    index = int(index)
    k = int(np.searchsorted(self._offsets, index, side="right") - 1)
    return self._sources[k][(index - self._offsets[k]) % self._lengths[k]]

  @property
  def sources(self) -> list:
    return list(self._sources)

  def __repr__(self) -> str:
    return f"ConcatSource(lengths={self._lengths})"


def weighted_concat(sources: Sequence, weights: Sequence[float]):
  """Sources mixed so that each one's share of the records follows its weight: each is
  repeated in the concatenation (a single source is returned as it is)."""
  if len(sources) != len(weights) or not sources:
    raise InputError("one weight per source, and at least one source")
  if min(weights) <= 0:
    raise InputError(f"weights must be positive, got {list(weights)}")
  if len(sources) == 1:
    return sources[0]
  per_unit = [len(s) / float(w) for s, w in zip(sources, weights)]
  base = max(per_unit)
  return ConcatSource(sources, [max(1, int(round(base / p))) for p in per_unit])


def parse_mix(spec: str) -> list[tuple[str, float]]:
  """"NAME:SHARE[+NAME:SHARE...]" (e.g. "motion_latents/geo_syn:0.3") -> [(name, share)]; each
  share in (0, 1), their sum under 1."""
  out = []
  for part in (p.strip() for p in str(spec or "").split("+")):
    if not part:
      continue
    name, sep, share = part.rpartition(":")
    try:
      w = float(share)
    except ValueError:
      w = -1.0
    if not sep or not name or not 0.0 < w < 1.0:
      raise InputError(f"bad mix entry {part!r}: expected NAME:SHARE with 0 < SHARE < 1")
    out.append((name, w))
  if sum(w for _, w in out) >= 1.0:
    raise InputError(f"the mix's shares sum to {sum(w for _, w in out):g}; they must stay under 1")
  return out


# ----------------------------------------------------------------------------- stage 2

def _flags(rec) -> dict:
  return {f: np.int32(rec[f]) for f in records.LABEL_FLAGS}


class Stage2Transform(grain.RandomMapTransform):
  """Clip record -> a window of W frames + previous K frames (see module docstring).

  with_frames: also decode the window's frames ("frames" [W,S,S,3] uint8).
  with_motion: the record carries stored motion latents "motion" [T,D] (a motion_latents
  dataset); they are sliced like the tracks into "motion" [W,D] and "prev_motion" [K,D].
  controls_from_motion: the stored motion is geometry codes (pose 6 ++ ... ++ eye gaze 2, the
  layout of vasa_jax.geometry.codes); a record without its own gaze / distance controls gets
  them measured from the window's motion (`window_controls`), and every window gets its clip's
  blink rate ("control_blink_rate", blinks/min, `blink_rate`), so that the controls are
  learned from real footage. measured_controls_only: the measured gaze / distance replace a
  record's own too (a mix of datasets whose own controls are in other units).
  audio_left: also "left_audio", the raw audio of the `audio_left` frames before the previous
  K (zeros before the clip), so that a model featurises [left | prev | window] as one
  contiguous stretch, as the live generator does (vasa_jax/live.py).
  """

  def __init__(self, window: int, context: int, with_frames: bool = False,
               with_motion: bool = False, controls_from_motion: bool = False,
               measured_controls_only: bool = False, audio_left: int = 0):
    if window < 1 or context < 0 or audio_left < 0:
      raise ValueError("window must be >= 1, context and audio_left >= 0")
    self.audio_left = int(audio_left)
    if controls_from_motion and not with_motion:
      raise ValueError("controls_from_motion needs with_motion (stored geometry codes)")
    self.window, self.context, self.with_frames = window, context, with_frames
    self.with_motion = with_motion
    self.controls_from_motion = controls_from_motion
    self.measured_only = bool(measured_controls_only)
    self.tracks = tuple(records.TRACKS) + (("motion",) if with_motion else ())

  def random_map(self, rec, rng: np.random.Generator):
    w, k = self.window, self.context
    t = int(rec["num_frames"])
    audio = records.audio_to_float(rec["audio"])
    # A window may start anywhere a full window fits; clips shorter than W are padded (mask).
    t0 = int(rng.integers(max(t - w, 0) + 1))
    frame_idx = np.arange(t0, t0 + w)
    valid = frame_idx < t
    prev_idx = np.arange(t0 - k, t0)
    prev_valid = prev_idx >= 0
    out = {"mask": valid.astype(np.float32), "prev_mask": prev_valid.astype(np.float32),
           "start": np.int32(t0)}
    for name in self.tracks:
      track = np.asarray(rec[name], np.float32)
      out[name] = _take(track, frame_idx, valid)
      out["prev_" + name] = _take(track, prev_idx, prev_valid)
    out["audio"] = _take_audio(audio, t0, w)
    out["prev_audio"] = _take_audio(audio, t0 - k, k)
    if self.audio_left:
      out["left_audio"] = _take_audio(audio, t0 - k - self.audio_left, self.audio_left)
    out["control_gaze"] = np.asarray(rec["control_gaze"], np.float32)
    out["control_distance"] = np.float32(rec["control_distance"])
    out["control_emotion"] = np.int32(rec["control_emotion"])
    out["control_emotion_intensity"] = np.float32(rec["control_emotion_intensity"])
    for f in ("has_control_gaze", "has_control_distance", "has_control_emotion"):
      out[f] = np.int32(rec[f])
    if self.controls_from_motion and valid.any():
      gaze, dist = window_controls(out["motion"][valid])
      if not out["has_control_gaze"] or self.measured_only:
        out["control_gaze"], out["has_control_gaze"] = gaze, np.int32(1)
      if not out["has_control_distance"] or self.measured_only:
        out["control_distance"], out["has_control_distance"] = dist, np.int32(1)
      # the clip's blink rate: a style of the speaker, like the main gaze
      out["control_blink_rate"] = np.float32(blink_rate(np.asarray(rec["motion"])[:t]))
      out["has_control_blink_rate"] = np.int32(1)
    out.update(_flags(rec))
    out["identity_index"] = np.int64(rec["identity_index"])
    if self.with_frames:
      s = int(rec["size"])
      frames = np.zeros((w, s, s, 3), np.uint8)
      for n, ti in enumerate(frame_idx):
        if ti < t:
          frames[n] = records.decode_jpeg(rec["frames"][ti])
      out["frames"] = frames
    return out


def window_controls(motion: np.ndarray) -> tuple[np.ndarray, np.float32]:
  """Geometry codes [n, 6 + dyn] (pose yaw, pitch, roll, tx, ty, tz first; eye-in-head gaze
  theta, phi last) -> (main gaze [2] rad in the camera frame, distance m): the window's mean
  of head rotation plus eye rotation (where the eyes look, as the gaze control means it), and
  its mean head-to-camera distance tz."""
  m = np.asarray(motion, np.float32)
  gaze = np.stack([m[:, 0] + m[:, -2], m[:, 1] + m[:, -1]], -1).mean(0)
  return gaze.astype(np.float32), np.float32(m[:, 5].mean())


BLINK_CLOSED = 0.5      # a blink: mean lid openness under this share of the open-eye level
BLINK_MIN_GAP = 4       # frames between two blink onsets (a flutter is one blink)


def blink_onsets(motion: np.ndarray) -> np.ndarray:
  """Frame indices where a blink starts in geometry codes [T, 6 + dyn] (lid openness of the
  two eyes at dims -4, -3): the mean openness drops below BLINK_CLOSED x the clip's open-eye
  level (its 90th percentile)."""
  lids = np.asarray(motion, np.float32)[:, -4:-2].mean(-1)
  if lids.size < 2:
    return np.zeros(0, np.int64)
  closed = lids < BLINK_CLOSED * np.percentile(lids, 90)
  starts = np.nonzero(closed[1:] & ~closed[:-1])[0] + 1
  keep, last = [], -BLINK_MIN_GAP
  for f in starts:
    if f - last >= BLINK_MIN_GAP:
      keep.append(f)
      last = f
  return np.asarray(keep, np.int64)


def blink_rate(motion: np.ndarray, fps: int = 25) -> float:
  """Blinks per minute of a geometry-code track [T, 6 + dyn]."""
  t = np.shape(motion)[0]
  return 60.0 * len(blink_onsets(motion)) * fps / max(t, 1)


def _take(track: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
  out = np.zeros((idx.shape[0], *track.shape[1:]), np.float32)
  out[valid] = track[idx[valid]]
  return out


def _take_audio(audio: np.ndarray, t0: int, n: int) -> np.ndarray:
  out = np.zeros(n * SPF, np.float32)
  a0, a1 = t0 * SPF, (t0 + n) * SPF
  lo, hi = max(a0, 0), min(a1, audio.shape[0])
  if hi > lo:
    out[lo - a0: hi - a0] = audio[lo:hi]
  return out


# ----------------------------------------------------------------------------- loaders

def make_loader(
    source,
    transform: grain.RandomMapTransform,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    worker_count: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
) -> grain.DataLoader:
  """A grain DataLoader over this process's shard, yielding per-process batches.

  `batch_size` is the per-process batch (global batch / process count). Shard index/count
  default to this JAX process's index and the process count.
  """
  if worker_count:
    # grain's worker processes read absl flags; outside absl.app nothing has parsed them.
    from absl import flags
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
  if shard_index is None or shard_count is None:
    import jax
    shard_index, shard_count = jax.process_index(), jax.process_count()
  if len(source) < shard_count:
    raise InputError(f"dataset has {len(source)} clips, fewer than the {shard_count} shards")
  sampler = grain.IndexSampler(
      num_records=len(source),
      shard_options=grain.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                       drop_remainder=True),
      shuffle=shuffle, num_epochs=num_epochs, seed=seed)
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[transform, grain.Batch(batch_size=batch_size, drop_remainder=True)],
      worker_count=worker_count,
      read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=64))


def stage2_loader(source, *, batch_size: int, window: int, context: int, seed: int = 0,
                  with_frames: bool = False, with_motion: bool = False, worker_count: int = 0,
                  controls_from_motion: bool = False, measured_controls_only: bool = False,
                  audio_left: int = 0, **kw) -> grain.DataLoader:
  return make_loader(source, Stage2Transform(window, context, with_frames, with_motion,
                                             controls_from_motion, measured_controls_only,
                                             audio_left),
                     batch_size=batch_size, seed=seed, worker_count=worker_count, **kw)

"""Training pairs for the geometry-grounded stage 1: self-reenactment within a clip.

A geometry motion_latents dataset (`vasa-jax data extract-motion --geometry`) holds every clip's
landmarks; the frames stay in the clip datasets it was built from. `GeometryClips` joins the two
(by dataset and clip id), and `PairTransform` turns one clip into a training example:

  source frame i, driving frame j of the same clip (j chosen, with probability `hard_pairs`,
  for a large mouth / eyelid difference from i, since that is where the decoder has work);
  the portrait geometry of frame i, the driving geometry decoded from frame j's codes (as at
  inference), the warp, and the part patches:

    mouth_in [rm, rm, 8], eye_in [2, re, re, 8]      decoder inputs (vasa_jax.geometry.render)
    mouth_tgt [rm, rm, 3], eye_tgt [2, re, re, 3]    frame j at the same patches, in [-1, 1]

A horizontal flip (mirrored frames and landmarks, eyes swapped) and a photometric jitter shared
by both frames augment the pairs.
"""

from __future__ import annotations

import grain.python as grain
import numpy as np

from vasa_jax.data import records

__all__ = ["GeometryClips", "PairTransform", "pair_loader", "make_example"]


def _text(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


class GeometryClips(grain.RandomAccessDataSource):
  """Records of a geometry motion_latents split with their clips' frames attached."""

  def __init__(self, geometry_source, data_dir: str | None = None, *, sources: dict | None = None,
               repeats: dict | None = None):
    """repeats: {dataset name prefix: n}, e.g. {"talking_face_videos": 2} to draw real clips
    twice as often as the others."""
    from vasa_jax.data import pipeline
    self._geo = geometry_source
    self._sources: dict = dict(sources or {})
    self._index: dict = {}
    split_of: dict = {}
    for i in range(len(geometry_source)):
      rec = geometry_source[i]
      ds = _text(rec["dataset"])
      split_of.setdefault(ds, set()).add(i)
    self._rows = []
    for ds in split_of:
      if ds not in self._sources:
        builder = pipeline.open_builder(ds, data_dir)
        self._sources[ds] = {s: builder.as_data_source(split=s) for s in builder.info.splits}
      for split, src in self._sources[ds].items():
        for k in range(len(src)):
          self._index[(ds, _text(src[k]["clip_id"]))] = (split, k)
    for i in range(len(geometry_source)):
      rec = geometry_source[i]
      key = (_text(rec["dataset"]), _text(rec["clip_id"]))
      if key not in self._index:
        raise ValueError(f"clip {key[1]} of {key[0]} is in the geometry dataset but not in "
                         "the clip dataset (rebuilt since?)")
      self._rows.append(key)
    self._order = []
    for i, (ds, _) in enumerate(self._rows):
      n = max([int(v) for k, v in (repeats or {}).items() if ds.startswith(k)] or [1])
      self._order.extend([i] * n)

  def __len__(self) -> int:
    return len(self._order)

  def __getitem__(self, index: int):
    index = self._order[int(index)]
    rec = dict(self._geo[index])
    ds, _ = self._rows[index]
    split, k = self._index[self._rows[index]]
    clip = self._sources[ds][split][k]
    rec["frames"] = clip["frames"]
    return rec

  def __repr__(self) -> str:
    return f"GeometryClips({len(self)} clips)"


def _flip_points(points: np.ndarray, size: int, mirror: np.ndarray) -> np.ndarray:
  p = np.array(points, np.float32, copy=True)[mirror]
  p[:, 0] = size - p[:, 0]
  return p


def _mouth_gap(p: np.ndarray) -> float:
  return float(p[14, 1] - p[13, 1])


def _lid_gap(p: np.ndarray) -> float:
  return float(p[145, 1] - p[159, 1] + p[374, 1] - p[386, 1])


def make_example(src_frame, src_points, drv_frame, drv_points, basis, model_config) -> dict:
  """One pair -> decoder inputs and targets (see the module docstring)."""
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.geometry import render
  res = {"mouth": int(model_config.mouth.res), "eye_a": int(model_config.eye.res),
         "eye_b": int(model_config.eye.res)}
  portrait = render.PortraitGeometry.from_crop(src_frame, src_points, basis, res)
  s = src_frame.shape[0]
  c = codes_lib.encode(np.asarray(drv_points, np.float32)[None], basis, s)
  fr = portrait.frame(c.pose[0], c.dyn[0])
  tgt = {p: render.extract(drv_frame, fr.matrices[p], r).astype(np.float32) / 127.5 - 1.0
         for p, r in res.items()}
  return {
      "mouth_in": fr.inputs["mouth"], "mouth_tgt": tgt["mouth"],
      "eye_in": np.stack([fr.inputs["eye_a"], fr.inputs["eye_b"]]),
      "eye_tgt": np.stack([tgt["eye_a"], tgt["eye_b"]]),
  }


class PairTransform(grain.RandomMapTransform):
  """GeometryClips record -> one self-reenactment training example."""

  def __init__(self, basis, model_config, *, min_gap: int = 4, hard_pairs: float = 0.7,
               flip: float = 0.5, color: float = 0.1, candidates: int = 6):
    self._basis = basis
    self._model = model_config
    self._min_gap, self._hard, self._flip, self._color = min_gap, hard_pairs, flip, color
    self._candidates = candidates

  def random_map(self, rec, rng: np.random.Generator):
    t = int(rec["num_frames"])
    size = int(rec["size"])
    lms = np.asarray(rec["landmarks"], np.float32).reshape(t, -1, 3)
    valid = np.asarray(rec["landmarks_valid"], bool)
    good = np.flatnonzero(valid)
    if good.size == 0:
      good = np.arange(t)
    i = int(rng.choice(good))
    far = good[np.abs(good - i) >= self._min_gap]
    if far.size == 0:
      far = good
    if rng.random() < self._hard and far.size > 1:
      cand = rng.choice(far, size=min(self._candidates, far.size), replace=False)
      score = [abs(_mouth_gap(lms[k]) - _mouth_gap(lms[i])) + 0.5 * abs(
          _lid_gap(lms[k]) - _lid_gap(lms[i])) for k in cand]
      j = int(cand[int(np.argmax(score))])
    else:
      j = int(rng.choice(far))
    fi = records.decode_jpeg(rec["frames"][i])
    fj = records.decode_jpeg(rec["frames"][j])
    pi, pj = lms[i], lms[j]
    if rng.random() < self._flip:
      fi, fj = np.ascontiguousarray(fi[:, ::-1]), np.ascontiguousarray(fj[:, ::-1])
      pi = _flip_points(pi, size, self._basis.mirror)
      pj = _flip_points(pj, size, self._basis.mirror)
    if self._color:
      gain = 1.0 + rng.uniform(-self._color, self._color, size=3)
      bias = rng.uniform(-self._color, self._color) * 255.0
      fi = np.clip(fi * gain + bias, 0, 255).astype(np.uint8)
      fj = np.clip(fj * gain + bias, 0, 255).astype(np.uint8)
    return make_example(fi, pi, fj, pj, self._basis, self._model)


def pair_loader(source, basis, config, *, batch_size: int, seed: int = 0,
                worker_count: int = 0, **kw) -> grain.DataLoader:
  from vasa_jax.data import pipeline
  d = config.data
  transform = PairTransform(basis, config.model, min_gap=int(d.min_gap),
                            hard_pairs=float(d.hard_pairs), flip=float(d.flip),
                            color=float(d.color))
  return pipeline.make_loader(source, transform, batch_size=batch_size, seed=seed,
                              worker_count=worker_count, **kw)

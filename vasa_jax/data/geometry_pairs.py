"""Training pairs for the geometry-grounded stage 1: self-reenactment within a clip.

A geometry motion_latents dataset (`vasa-jax data extract-motion --geometry`) holds every clip's
landmarks; the frames stay in the clip datasets it was built from. `GeometryClips` joins the two
(by dataset and clip id), and `PairTransform` turns one clip into a training example:

  source frame i, driving frame j of the same clip (j chosen, with probability `hard_pairs`,
  for a large mouth difference from i, since that is where the compositor has work); the
  portrait geometry of frame i, the driving geometry decoded from frame j's codes (as at
  inference), the warp, a mouth reference, and the mouth patch:

    mouth_in [rm, rm, 13]    compositor inputs (vasa_jax.geometry.render.mouth_inputs)
    mouth_tgt [rm, rm, 3]    frame j at the same patch, in [-1, 1]

The reference is what inference would paste into the opening, from one of three places:
  * another frame k of the same clip whose inner lips are shaped most like frame j's (the
    compositor learns to copy: the reference is nearly right);
  * a donor of another identity from the part bank, lit like the portrait, its entry nearest
    frame j's shape (it learns to adapt another person's mouth: light, shape, edges);
  * none (closed lips, or a bank without entries).

A horizontal flip (mirrored frames and landmarks) and a photometric jitter shared by both
frames augment the pairs.
"""

from __future__ import annotations

import grain.python as grain
import numpy as np

from vasa_jax.data import records
from vasa_jax.data.records import text as _text  # noqa: E402
from vasa_jax.errors import InputError

__all__ = ["GeometryClips", "PairTransform", "pair_loader", "make_example", "pick_pair",
           "VolumePairTransform", "volume_pair_loader", "volume_example"]



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
        raise InputError(f"clip {key[1]} of {key[0]} is in the geometry dataset but not in "
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


def make_example(src_frame, src_points, drv_frame, drv_points, basis, model_config, *,
                 reference=None) -> dict:
  """One pair -> compositor inputs and target (see the module docstring). reference: a
  banks.MouthReference (its entry nearest the driving shape is used) or None."""
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.geometry import render
  r = int(model_config.mouth.res)
  portrait = render.PortraitGeometry.from_crop(src_frame, src_points, basis, {"mouth": r})
  s = src_frame.shape[0]
  c = codes_lib.encode(np.asarray(drv_points, np.float32)[None], basis, s)
  fr = portrait.frame(c.pose[0], c.dyn[0])
  index = None
  if reference is not None:
    index = int(np.argmin(reference.costs(fr.mesh[None])[0]))
  tgt = render.extract(drv_frame, fr.matrices["mouth"], r).astype(np.float32) / 127.5 - 1.0
  return {"mouth_in": render.mouth_inputs(fr, reference, index), "mouth_tgt": tgt}


def _gap_of(p: np.ndarray) -> np.ndarray:
  return p[..., 14, 1] - p[..., 13, 1]


class PairTransform(grain.RandomMapTransform):
  """GeometryClips record -> one self-reenactment training example."""

  def __init__(self, basis, model_config, *, bank=None, min_gap: int = 4,
               hard_pairs: float = 0.7, flip: float = 0.5, color: float = 0.1,
               candidates: int = 6, same_clip: float = 0.4, no_reference: float = 0.1):
    self._basis = basis
    self._model = model_config
    self._bank = bank
    self._min_gap, self._hard, self._flip, self._color = min_gap, hard_pairs, flip, color
    self._candidates = candidates
    self._same, self._none = same_clip, no_reference

  def _reference(self, rec, lms, fi, pi, j, size, rng, flip, jitter):
    from vasa_jax.geometry import banks
    u = rng.random()
    if u < self._none:
      return None
    t = len(lms)
    iod = np.linalg.norm(lms[:, 263, :2] - lms[:, 33, :2], axis=1)
    gap = _gap_of(lms) / np.maximum(iod, 1e-3)
    use_bank = self._bank is not None and len(self._bank) and u >= self._none + self._same
    if not use_bank:
      far = np.flatnonzero((np.abs(np.arange(t) - j) >= 3) & (gap > 0.03))
      if far.size == 0:
        return None
      cand = rng.choice(far, size=min(12, far.size), replace=False)
      _, _, can = banks.skull(lms[cand], self._basis.template)
      _, _, can_j = banks.skull(lms[j][None], self._basis.template)
      d = np.abs(banks.mouth_descriptors(can) - banks.mouth_descriptors(can_j)).mean(1)
      k = int(cand[int(np.argmin(d))])
      fk = jitter(records.decode_jpeg(rec["frames"][k]))
      pk = lms[k]
      if flip:
        fk = np.ascontiguousarray(fk[:, ::-1])
        pk = _flip_points(pk, size, self._basis.mirror)
      entry = banks.cut_mouth(fk, pk, self._basis.template)
      return banks.MouthReference(None, None, fi, pi, self._basis.template, self_entry=entry)
    ident = _text(rec.get("identity", "")).rpartition(":")[2]
    donors = [k for k, d in enumerate(self._bank.donors) if d["name"] != ident
              and (self._bank.mouth_donor == k).any()]
    if not donors:
      return None
    return banks.MouthReference(self._bank, int(rng.choice(donors)), fi, pi,
                                self._basis.template)

  def random_map(self, rec, rng: np.random.Generator):
    size = int(rec["size"])
    lms = _landmarks(rec)
    fi, pi, fj, pj, j, flip, jitter = pick_pair(rec, lms, rng, self._basis, min_gap=self._min_gap,
                                                hard=self._hard, candidates=self._candidates,
                                                flip=self._flip, color=self._color)
    ref = self._reference(rec, lms, fi, pi, j, size, rng, flip, jitter)
    return make_example(fi, pi, fj, pj, self._basis, self._model, reference=ref)


def _landmarks(rec) -> np.ndarray:
  t = int(rec["num_frames"])
  return np.asarray(rec["landmarks"], np.float32).reshape(t, -1, 3)


def pick_pair(rec, lms, rng, basis, *, min_gap: int, hard: float, candidates: int,
              flip: float, color: float):
  """Two frames i, j of a clip at least min_gap apart (j chosen, with probability `hard`, for
  the largest mouth difference among a few candidates), flipped together with probability
  `flip` and given one photometric jitter: (frame_i, points_i, frame_j, points_j, j, flipped,
  jitter), the jitter a function that applies the same change to another frame."""
  t = int(rec["num_frames"])
  size = int(rec["size"])
  valid = np.asarray(rec["landmarks_valid"], bool)
  good = np.flatnonzero(valid)
  if good.size == 0:
    good = np.arange(t)
  i = int(rng.choice(good))
  far = good[np.abs(good - i) >= min_gap]
  if far.size == 0:
    far = good
  if rng.random() < hard and far.size > 1:
    cand = rng.choice(far, size=min(candidates, far.size), replace=False)
    score = [abs(_mouth_gap(lms[k]) - _mouth_gap(lms[i])) for k in cand]
    j = int(cand[int(np.argmax(score))])
  else:
    j = int(rng.choice(far))
  fi = records.decode_jpeg(rec["frames"][i])
  fj = records.decode_jpeg(rec["frames"][j])
  pi, pj = lms[i], lms[j]
  flipped = rng.random() < flip
  if flipped:
    fi, fj = np.ascontiguousarray(fi[:, ::-1]), np.ascontiguousarray(fj[:, ::-1])
    pi = _flip_points(pi, size, basis.mirror)
    pj = _flip_points(pj, size, basis.mirror)
  gain, bias = np.ones(3), 0.0
  if color:
    gain = 1.0 + rng.uniform(-color, color, size=3)
    bias = rng.uniform(-color, color) * 255.0

  def jitter(f):
    return np.clip(f * gain + bias, 0, 255).astype(np.uint8) if color else f
  return jitter(fi), pi, jitter(fj), pj, j, flipped, jitter


def volume_example(src_frame, src_points, drv_frame, drv_points, basis, image_size: int) -> dict:
  """One pair for the volume renderer (vasa_jax.models.volume): both frames at image_size,
  their head poses, the portrait's canonical mesh and the driving canonical mesh the driving
  codes decode to from the portrait's (as inference makes it), in volume units."""
  import cv2

  from vasa_jax.geometry import codes as codes_lib
  s = src_frame.shape[0]
  cs = codes_lib.encode(np.asarray(src_points, np.float32)[None], basis, s)
  cd = codes_lib.encode(np.asarray(drv_points, np.float32)[None], basis, s)
  drv_canon = codes_lib.decode_canonical(cs, cd.pose, cd.dyn, basis)
  interp = cv2.INTER_AREA if image_size < s else cv2.INTER_CUBIC

  def resized(f):
    return f if s == image_size else cv2.resize(f, (image_size, image_size),
                                                interpolation=interp)
  k = 2.0 * float(basis.s_ref)
  return {"source": resized(src_frame), "driving": resized(drv_frame),
          "regions": part_boxes(drv_points, s),
          "pose_s": cs.pose[0].astype(np.float32), "pose_d": cd.pose[0].astype(np.float32),
          "verts_s": (k * cs.canonical[0]).astype(np.float32),
          "verts_d": (k * drv_canon[0]).astype(np.float32)}


def part_boxes(points: np.ndarray, size: int, pad: float = 0.25) -> np.ndarray:
  """[3, 4] float32 boxes (y0, x0, y1, x1, fractions of the crop) around the mouth (outer
  lips) and the two eyes of landmarks [N, 3] in a crop of side `size`, each grown by `pad` of
  its larger side: where the volume trainer weighs the reconstruction more."""
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.geometry import flow as flow_lib
  p = np.asarray(points, np.float32)[:, :2] / float(size)
  out = []
  for idx in (flow_lib.OUTER_LIPS, codes_lib.EYE_REGION_A, codes_lib.EYE_REGION_B):
    q = p[list(idx)]
    lo, hi = q.min(0), q.max(0)
    g = pad * float(max(hi - lo))
    out.append([lo[1] - g, lo[0] - g, hi[1] + g, hi[0] + g])
  return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


class VolumePairTransform(grain.RandomMapTransform):
  """GeometryClips record -> one self-reenactment example for the volume renderer."""

  def __init__(self, basis, image_size: int, *, min_gap: int = 4, hard_pairs: float = 0.5,
               flip: float = 0.5, color: float = 0.1, candidates: int = 6):
    self._basis, self._size = basis, int(image_size)
    self._kw = dict(min_gap=min_gap, hard=hard_pairs, candidates=candidates, flip=flip,
                    color=color)

  def random_map(self, rec, rng: np.random.Generator):
    fi, pi, fj, pj, _, _, _ = pick_pair(rec, _landmarks(rec), rng, self._basis, **self._kw)
    return volume_example(fi, pi, fj, pj, self._basis, self._size)


def pair_loader(source, basis, config, *, batch_size: int, seed: int = 0,
                worker_count: int = 0, bank=None, **kw) -> grain.DataLoader:
  from vasa_jax.data import pipeline
  d = config.data
  transform = PairTransform(basis, config.model, bank=bank, min_gap=int(d.min_gap),
                            hard_pairs=float(d.hard_pairs), flip=float(d.flip),
                            color=float(d.color), same_clip=float(d.get("same_clip", 0.4)),
                            no_reference=float(d.get("no_reference", 0.1)))
  return pipeline.make_loader(source, transform, batch_size=batch_size, seed=seed,
                              worker_count=worker_count, **kw)


def volume_pair_loader(source, basis, config, *, batch_size: int, seed: int = 0,
                       worker_count: int = 0, **kw) -> grain.DataLoader:
  from vasa_jax.data import pipeline
  d = config.data
  transform = VolumePairTransform(basis, int(config.model.image_size), min_gap=int(d.min_gap),
                                  hard_pairs=float(d.hard_pairs), flip=float(d.flip),
                                  color=float(d.color))
  return pipeline.make_loader(source, transform, batch_size=batch_size, seed=seed,
                              worker_count=worker_count, **kw)

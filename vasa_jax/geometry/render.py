"""Geometry-grounded rendering, the numpy side: portrait state, per-frame warp, part patches.

The learned decoder (`vasa_jax.models.geo_decoder`) only sees small patches aligned to the
driving face: the mouth (the portrait may not show teeth, tongue or the mouth's inside) and each
eye (closed lids, uncovered iris). Everything else is the geometric warp of the photo's own
pixels at its own resolution. This module builds those patches and puts the decoder's output
back:

    portrait = PortraitGeometry.from_crop(crop, points, basis)      # once
    fr = portrait.frame(pose [6], dyn [K+4])                        # per frame: warp + inputs
    out = compose(fr, decoder_outputs)                               # [S, S, 3] uint8

Part inputs (channels last, float32): the warped portrait patch (RGB in [-1, 1]), the driving
region mask of the part's interior (mouth or eye opening), the warp's log area ratio (low where
the source is stretched over content it does not show), the portrait's own patch at the same
part (its appearance: lip colour, teeth, iris), and where the portrait's own interior lands
after the warp (teeth that must disappear behind closing lips), 9 channels in all. The decoder
may only change pixels near these interiors or where the warp stretches the portrait
(`vasa_jax.models.geo_decoder`): everywhere else the portrait's own pixels stay.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry import flow as flow_lib
from vasa_jax.geometry import landmarks as lm

__all__ = ["PortraitGeometry", "FrameGeometry", "PARTS", "part_matrix", "compose",
           "IN_CHANNELS", "feather_window"]

# (name, mesh points that place it, patch side in eye-corner distances, flip)
PARTS = {
    "mouth": (flow_lib.OUTER_LIPS, 1.25, False),
    "eye_a": (lm.EYE_A_CONTOUR, 0.6, False),
    "eye_b": (lm.EYE_B_CONTOUR, 0.6, True),
}
PART_CLASS = {"mouth": flow_lib.CLASS_MOUTH, "eye_a": flow_lib.CLASS_EYE,
              "eye_b": flow_lib.CLASS_EYE}
IN_CHANNELS = 9
MOUTH_DOWN = 0.12     # mouth patch centre below the lips' centre, in patch sides


def part_matrix(mesh_px: np.ndarray, part: str, res: int) -> np.ndarray:
  """2x3 map from continuous patch coordinates [0, res)^2 to crop coordinates for `part`,
  aligned with the face's eye line."""
  idx, side_iod, flip = PARTS[part]
  p = np.asarray(mesh_px, np.float64)[:, :2]
  d = p[263] - p[33]
  iod = float(np.hypot(*d))
  angle = float(np.arctan2(d[1], d[0]))
  c = p[list(idx)].mean(0)
  side = side_iod * iod
  if part == "mouth":
    c = c + MOUTH_DOWN * side * np.array([-np.sin(angle), np.cos(angle)])
  return lm.roi_matrix(float(c[0]), float(c[1]), max(side, 4.0), angle, res, flip=flip)


def extract(image: np.ndarray, m: np.ndarray, res: int, interp=cv2.INTER_LINEAR) -> np.ndarray:
  """The patch of `m` (part_matrix) from an image [H, W, C]."""
  a, b = m[:, :2], m[:, 2]
  mi = np.concatenate([a, (b + a @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)
  return cv2.warpAffine(image, mi, (res, res), flags=interp | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)


def feather_window(res: int, edge: float = 0.18) -> np.ndarray:
  """[res, res] weights, 1 in the middle falling to 0 at the patch border (cosine)."""
  ramp = max(int(round(res * edge)), 1)
  t = np.ones(res, np.float32)
  x = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
  e = 0.5 - 0.5 * np.cos(np.pi * x)
  t[:ramp] = e
  t[res - ramp:] = e[::-1]
  return np.minimum(t[:, None], t[None, :])


def _to_float(img: np.ndarray) -> np.ndarray:
  return img.astype(np.float32) / 127.5 - 1.0


@dataclasses.dataclass
class FrameGeometry:
  """One driving frame: the warped crop and the decoder's part inputs."""
  warped: np.ndarray                 # uint8 [S, S, 3]
  mesh: np.ndarray                   # [478, 3] driving landmarks (crop pixels)
  matrices: dict                     # part -> 2x3 patch->crop map
  inputs: dict                       # part -> float32 [res, res, 8]
  map_xy: np.ndarray | None = None   # [S, S, 2] the backward map (kept for diagnostics)


@dataclasses.dataclass
class PortraitGeometry:
  """Everything about a portrait crop that does not change per frame."""
  crop: np.ndarray                   # uint8 [S, S, 3]
  points: np.ndarray                 # [478, 3] its landmarks, crop pixels
  codes: codes_lib.Codes             # batch 1
  basis: codes_lib.FaceBasis
  topology: flow_lib.Topology
  src_points: np.ndarray             # [P, 3] warp points of the portrait itself
  src_class: np.ndarray              # [S, S] uint8 region classes of the portrait itself
  part_res: dict                     # part -> patch resolution
  source_patches: dict               # part -> float32 [res, res, 3]

  @property
  def size(self) -> int:
    return int(self.crop.shape[0])

  @property
  def motion(self) -> np.ndarray:
    """The portrait's own motion code [6 + K + 4]."""
    return np.concatenate([self.codes.pose[0], self.codes.dyn[0]]).astype(np.float32)

  @classmethod
  def from_crop(cls, crop: np.ndarray, points: np.ndarray, basis: codes_lib.FaceBasis,
                part_res: dict | None = None) -> "PortraitGeometry":
    crop = np.ascontiguousarray(crop[..., :3])
    s = crop.shape[0]
    codes = codes_lib.encode(np.asarray(points, np.float32)[None], basis, s)
    topo = flow_lib.Topology.build(basis, codes, s, 0)
    sim = (codes.scale[0], codes.rotation[0], codes.shift[0])
    srcp = topo.points(points, sim, sim, s)
    _, src_class, _ = flow_lib.dense_map(srcp, srcp, topo.triangles, topo.tri_class, s)
    part_res = dict(part_res or {"mouth": 64, "eye_a": 32, "eye_b": 32})
    patches = {p: _to_float(extract(crop, part_matrix(points, p, r), r))
               for p, r in part_res.items()}
    return cls(crop=crop, points=np.asarray(points, np.float32), codes=codes, basis=basis,
               topology=topo, src_points=srcp, src_class=src_class, part_res=part_res,
               source_patches=patches)

  def driving_mesh(self, pose: np.ndarray, dyn: np.ndarray) -> np.ndarray:
    """[T, 478, 3] landmarks of the portrait performing pose [T, 6], dyn [T, K + 4]."""
    return codes_lib.decode(self.codes, pose, dyn, self.basis, self.size)

  def frame(self, pose: np.ndarray, dyn: np.ndarray, *, mesh: np.ndarray | None = None,
            keep_map: bool = False) -> FrameGeometry:
    """Warp + part inputs for one frame's motion (pose [6], dyn [K+4]); `mesh` overrides the
    decoded driving landmarks (e.g. a driving frame's own measured mesh in training)."""
    s = self.size
    if mesh is None:
      mesh = self.driving_mesh(np.asarray(pose)[None], np.asarray(dyn)[None])[0]
    sd, rd, td = codes_lib._similarity_from_pose(np.asarray(pose, np.float64)[None], s,
                                                self.basis)
    sim0 = (self.codes.scale[0], self.codes.rotation[0], self.codes.shift[0])
    dst = self.topology.points(mesh, (sd[0], rd[0], td[0]), sim0, s)
    map_xy, cls, ratio = flow_lib.dense_map(self.src_points, dst, self.topology.triangles,
                                            self.topology.tri_class, s)
    warped = flow_lib.remap(self.crop, map_xy)
    ratio = np.where(cls == flow_lib.CLASS_OUTER, 1.0, ratio).astype(np.float32)  # face only
    src_cls = cv2.remap(self.src_class, map_xy[..., 0], map_xy[..., 1],
                        interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    mats, inputs = {}, {}
    for p, r in self.part_res.items():
      m = part_matrix(mesh, p, r)
      mats[p] = m
      w = _to_float(extract(warped, m, r))
      region = extract((cls == PART_CLASS[p]).astype(np.float32), m, r)
      rat = extract(ratio, m, r)
      moved = extract((src_cls == PART_CLASS[p]).astype(np.float32), m, r)
      inputs[p] = np.concatenate([w, region[..., None], np.log(np.clip(rat, 0.05, 4.0))[..., None],
                                  self.source_patches[p], moved[..., None]],
                                 -1).astype(np.float32)
    return FrameGeometry(warped=warped, mesh=mesh, matrices=mats, inputs=inputs,
                         map_xy=map_xy if keep_map else None)


def compose(frame: FrameGeometry, outputs: dict, *, image: np.ndarray | None = None,
            scale: float = 1.0) -> np.ndarray:
  """The final crop: `frame.warped` (or `image`: the same warp applied at `scale` x the render
  size, e.g. to the photo's full-resolution crop) with each part's decoder output blended in.

  outputs: part -> (rgb float [res, res, 3] in [-1, 1], alpha float [res, res] in [0, 1]).
  The alpha is feathered to 0 at the patch border, so nothing outside the parts changes."""
  acc = np.array(frame.warped if image is None else image, np.uint8, copy=True)
  h, w = acc.shape[:2]
  for p, (rgb, alpha) in outputs.items():
    m = frame.matrices[p] * scale
    res = rgb.shape[0]
    a = np.asarray(alpha, np.float32) * feather_window(res)
    patch = np.concatenate([(np.asarray(rgb, np.float32) + 1.0) * 127.5, a[..., None]], -1)
    # patch -> crop: dst(crop idx) = M^-1 ...; warpAffine with the forward patch->crop map
    a2, b2 = m[:, :2], m[:, 2]
    fwd = np.concatenate([a2, (b2 + a2 @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)
    # bounding box of the patch in the crop
    corners = np.array([[0, 0], [res, 0], [0, res], [res, res]], np.float64) @ a2.T + b2
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
      continue
    fwd_local = fwd.copy()
    fwd_local[:, 2] -= [x0, y0]
    big = cv2.warpAffine(patch, fwd_local, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    al = big[..., 3:4]
    region = acc[y0:y1, x0:x1].astype(np.float32)
    acc[y0:y1, x0:x1] = np.clip(region * (1.0 - al) + big[..., :3] * al + 0.5, 0, 255).astype(
        np.uint8)
  return acc

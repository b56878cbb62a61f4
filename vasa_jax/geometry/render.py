"""Geometry-grounded rendering, the numpy side: portrait state, per-frame warp, the parts.

Everything but the inside of the mouth is the geometric warp of the photo's own pixels at its
own resolution (`vasa_jax.geometry.flow`), with the eyes handled by `vasa_jax.geometry.eyes`
(the portrait's own iris moved rigidly, its own sclera where the iris uncovers it, its own lids
brought down by the mesh, a real closed lid as the eye shuts). The inside of an open mouth, which
a portrait with closed lips does not show, is copied from a real donor mouth
(`vasa_jax.geometry.banks.MouthReference`) warped onto the driving inner-lip contour; the learned
mouth compositor (`vasa_jax.models.geo_decoder`) sees that reference on a small patch aligned
to the driving mouth and says how to blend it (alpha, a small flow, shading, a residual):

    portrait = PortraitGeometry.from_crop(crop, points, basis)      # once
    parts = PartState.build(portrait, bank, full_crop)              # once (bank: the bundle's)
    frs = [portrait.frame(pose, dyn) for ...]                       # per frame: warp + inputs
    idx = parts.select(frs)                                         # donor entries, per window
    x = parts.mouth_inputs(frs[t], idx[t])                          # the compositor's input
    out = parts.compose(frs[t], idx[t], fields)                     # [S, S, 3] uint8

Mouth inputs (channels last, float32): the warped portrait patch (RGB in [-1, 1]), the driving
region mask of the mouth opening, the warp's log area ratio (low where the source is stretched
over content it does not show), the portrait's own mouth patch, where the portrait's own
interior lands after the warp, then the donor reference warped onto the driving contour (RGB)
and its coverage: 13 channels in all.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from vasa_jax.geometry import banks
from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry import eyes as eyes_lib
from vasa_jax.geometry import flow as flow_lib
from vasa_jax.geometry import landmarks as lm

__all__ = ["PortraitGeometry", "FrameGeometry", "PartState", "PARTS", "part_matrix", "mouth_inputs",
           "IN_CHANNELS", "BASE_CHANNELS", "feather_window", "extract"]

# (name, mesh points that place it, patch side in eye-corner distances, flip)
PARTS = {
    "mouth": (flow_lib.OUTER_LIPS, 1.25, False),
}
PART_CLASS = {"mouth": flow_lib.CLASS_MOUTH}
BASE_CHANNELS = 9     # what the warp gives; the reference adds RGB + coverage
IN_CHANNELS = 13
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
  map_xy: np.ndarray                 # [S, S, 2] the backward map (pixel-index coordinates)


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
    part_res = dict(part_res or {"mouth": 64})
    patches = {p: _to_float(extract(crop, part_matrix(points, p, r), r))
               for p, r in part_res.items()}
    return cls(crop=crop, points=np.asarray(points, np.float32), codes=codes, basis=basis,
               topology=topo, src_points=srcp, src_class=src_class, part_res=part_res,
               source_patches=patches)

  def driving_mesh(self, pose: np.ndarray, dyn: np.ndarray) -> np.ndarray:
    """[T, 478, 3] landmarks of the portrait performing pose [T, 6], dyn [T, K + 4]."""
    return codes_lib.decode(self.codes, pose, dyn, self.basis, self.size, render=True)

  def frame(self, pose: np.ndarray, dyn: np.ndarray, *, mesh: np.ndarray | None = None
            ) -> FrameGeometry:
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
                         map_xy=map_xy)


def _upscale_map(map_xy: np.ndarray, side: int) -> np.ndarray:
  """A backward map computed at render size, for an output `side` pixels wide."""
  s = map_xy.shape[0]
  if side == s:
    return map_xy.copy()
  k = side / s
  big = cv2.resize(map_xy, (side, side), interpolation=cv2.INTER_LINEAR)
  return (big + 0.5) * k - 0.5


def mouth_inputs(fr: FrameGeometry, reference: banks.MouthReference | None,
                 index: int | None) -> np.ndarray:
  """The compositor's input [r, r, IN_CHANNELS]: the frame's own 9 channels plus the donor
  reference entry `index` on the driving contour (the warped patch and zero coverage where
  there is none: closed lips, or no reference)."""
  base = fr.inputs["mouth"]
  r = base.shape[0]
  ref, cov = base[..., :3], np.zeros((r, r), np.float32)
  if reference is not None and index is not None and \
      banks.MouthReference.roi(fr.mesh, (fr.warped.shape[0],) * 2) is not None:
    rgb, a = reference.render(int(index), fr.mesh, fr.matrices["mouth"], (r, r))
    ref, cov = rgb / 127.5 - 1.0, a
  return np.concatenate([base, ref, cov[..., None]], -1).astype(np.float32)


@dataclasses.dataclass
class PartState:
  """What the part renderer keeps for one portrait: its eye layer, the donor mouth reference
  (None: no bank and lips that show no teeth), the closed-lid exemplars, all at the output
  crop's resolution (`scale` x the render crop's)."""
  photo: np.ndarray                   # uint8 [S, S, 3] the crop the output is warped from
  eyes: eyes_lib.EyeLayer
  mouth: banks.MouthReference | None
  lids: banks.LidReference | None
  scale: float
  res: int                            # the compositor's patch side

  @classmethod
  def build(cls, pg: PortraitGeometry, bank: banks.PartBank | None,
            full_crop: np.ndarray | None = None) -> "PartState":
    img = np.ascontiguousarray((full_crop if full_crop is not None else pg.crop)[..., :3])
    k = img.shape[0] / pg.size
    pts = np.asarray(pg.points, np.float64) * k
    eyes = eyes_lib.EyeLayer.build(img, pts)
    mouth = banks.MouthReference.for_portrait(bank, img, pts, pg.basis.template)
    lids = banks.LidReference(bank, img, pts) if bank is not None and bank.num_lids else None
    return cls(photo=img, eyes=eyes, mouth=mouth, lids=lids, scale=float(k),
               res=int(pg.part_res["mouth"]))

  def reset(self) -> None:
    """A new video: the mouth's choice over time starts afresh."""
    if self.mouth is not None:
      self.mouth.reset()

  def select(self, frames: list) -> np.ndarray | None:
    """Donor entry per frame (continuing the previous window's choice), or None."""
    if self.mouth is None:
      return None
    return self.mouth.select(np.stack([f.mesh for f in frames]))

  def mouth_inputs(self, fr: FrameGeometry, index: int | None) -> np.ndarray:
    """The compositor's input for one frame (`mouth_inputs`)."""
    return mouth_inputs(fr, self.mouth, index)

  def warp(self, fr: FrameGeometry) -> np.ndarray:
    """The frame at the output resolution: the photo warped along the mesh, the eyes from the
    eye layer, the lids cross-faded to a real closed lid as they shut."""
    side = self.eyes.width
    big = _upscale_map(fr.map_xy, side)
    mesh = np.asarray(fr.mesh, np.float64) * self.scale
    img = cv2.remap(self.photo, big[..., 0], big[..., 1], interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    self.eyes.render(img, mesh)
    if self.lids is not None:
      eyes_lib.lid_blend(img, self.lids, mesh, self.eyes.own_gap)
    return img

  def compose(self, fr: FrameGeometry, index: int | None, fields: dict | None = None
              ) -> np.ndarray:
    """The output crop of one frame. fields: the compositor's outputs on the mouth patch
    ({"alpha" [r, r], "flow" [r, r, 2] (normalised patch units), "shade" [r, r] (gain - 1),
    "residual" [r, r, 3] (in [-1, 1] units)}); None pastes the reference onto the driving
    opening as it is."""
    img = self.warp(fr)
    h, w = img.shape[:2]
    mesh = np.asarray(fr.mesh, np.float64) * self.scale
    has_ref = self.mouth is not None and index is not None
    if fields is None:
      if not has_ref:
        return img
      box = banks.MouthReference.roi(mesh, (h, w))
      if box is None:
        return img
      x0, y0, x1, y1 = box
      tm = np.array([[1.0, 0, x0], [0, 1.0, y0]])
      rgb, a = self.mouth.render(int(index), mesh, tm, (x1 - x0, y1 - y0))
      reg = img[y0:y1, x0:x1].astype(np.float32)
      img[y0:y1, x0:x1] = np.clip(reg + (rgb - reg) * a[..., None] + 0.5, 0, 255).astype(np.uint8)
      return img
    return self._compose_fields(img, fr, mesh, index if has_ref else None, fields)

  def _compose_fields(self, img, fr, mesh, index, fields) -> np.ndarray:
    h, w = img.shape[:2]
    r = fields["alpha"].shape[0]
    alpha = np.asarray(fields["alpha"], np.float32) * feather_window(r)
    on = alpha > 1.0 / 255
    if not on.any():
      return img
    m = np.array(fr.matrices["mouth"], np.float64)
    m[:, :2] *= self.scale                       # patch -> output crop
    m[:, 2] *= self.scale
    ys, xs = np.nonzero(on)
    corners = np.stack([np.r_[xs, xs + 1, xs, xs + 1], np.r_[ys, ys, ys + 1, ys + 1]], -1)
    pc = banks._apply(m, corners.astype(np.float64))
    x0, y0 = np.maximum(np.floor(pc.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(pc.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
      return img
    # the patch fields at every output pixel of the box
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    q = banks._apply(banks._invert(m), np.stack([gx + 0.5, gy + 0.5], -1)).astype(np.float32)
    stack = np.concatenate([alpha[..., None], np.asarray(fields["flow"], np.float32),
                            np.asarray(fields["shade"], np.float32)[..., None],
                            np.asarray(fields["residual"], np.float32)], -1)
    f = cv2.remap(stack, q[..., 0] - 0.5, q[..., 1] - 0.5, cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = f[..., 0:1]
    flow_px = f[..., 1:3] * (r / 2.0) @ m[:, :2].T.astype(np.float32)     # output pixels
    tm = np.array([[1.0, 0, x0], [0, 1.0, y0]])
    if index is not None:
      ref, _ = self.mouth.render(int(index), mesh, tm, (x1 - x0, y1 - y0), offset=flow_px,
                                 feather=0.0)
    else:
      px = np.stack([gx, gy], -1).astype(np.float32) + flow_px
      ref = cv2.remap(img, px[..., 0], px[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    rgb = ref * (1.0 + f[..., 3:4]) + f[..., 4:7] * 127.5
    reg = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(reg + (rgb - reg) * a + 0.5, 0, 255).astype(np.uint8)
    return img

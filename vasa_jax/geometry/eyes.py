"""The eyes of a warped portrait: its own iris moved rigidly by the gaze, its own sclera where the
iris uncovers it, its own lids brought down by the mesh, and a real closed lid as the eye shuts.

The dense warp (`vasa_jax.geometry.flow`) moves the photo's pixels along the face mesh. Inside
the eye opening a piecewise-affine warp would stretch the iris, so this module redraws the
opening at the output's own resolution:

  * a sclera plate, the photo with its irises filled in from the surrounding sclera (once per
    portrait), mapped by the affine fit of the driving eye contour onto the portrait's;
  * over it the portrait's own iris, moved and scaled rigidly to the driving iris (with a thin
    ring of sclera, so that at rest every pixel is its own); iris that the portrait's lids hid
    is taken from the mirrored side of the same iris;
  * the opening blended into the warp with an anti-aliased edge.

With the portrait's own landmarks every eye pixel is the photo's: an open eye keeps the photo's
pixels at the photo's resolution, and nothing learned is drawn over it. Outside the opening the
mesh warp is untouched: a closing lid is the portrait's own upper-lid skin with its lash line
(the lash band follows the lid, `codes.LASH_BAND`). `closed_weight` says how far to cross-fade
towards a real closed-lid exemplar (`banks.LidReference`, `lid_blend`): only as the eye shuts.

    eyes = EyeLayer.build(photo_crop, points_px)        # once per portrait (crop pixels)
    frame = remap(photo_crop, map)                      # the mesh warp
    eyes.render(frame, driving_points_px)               # per frame, in place
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from vasa_jax.geometry import banks
from vasa_jax.geometry.landmarks import EYE_A_CONTOUR, EYE_B_CONTOUR, IRIS_A, IRIS_B

__all__ = ["EyeLayer", "lid_gap", "closed_weight", "lid_blend", "IRIS_MARGIN"]

CONTOURS = (EYE_A_CONTOUR, EYE_B_CONTOUR)
IRISES = (IRIS_A, IRIS_B)
LID_PAIRS = (((160, 144), (159, 145), (158, 153)), ((387, 373), (386, 374), (385, 380)))
CORNERS = ((33, 133), (362, 263))
IRIS_MARGIN = 1.2     # the rigid disc is this x the iris radius (+ 1 pixel)
SHUT = (0.10, 0.35)   # lid openness / the portrait's: fully exemplar below, none above


def lid_gap(points: np.ndarray) -> np.ndarray:
  """[..., 2] lid openness of both eyes: mean gap of the middle lid pairs / eye width."""
  p = np.asarray(points, np.float64)
  out = []
  for e in (0, 1):
    gap = np.mean([np.linalg.norm(p[..., lo, :2] - p[..., up, :2], axis=-1)
                   for up, lo in LID_PAIRS[e]], axis=0)
    a, b = CORNERS[e]
    w = np.linalg.norm(p[..., b, :2] - p[..., a, :2], axis=-1)
    out.append(gap / np.maximum(w, 1e-6))
  return np.stack(out, -1)


def closed_weight(openness: np.ndarray, own: np.ndarray) -> np.ndarray:
  """How far to cross-fade to a closed-lid exemplar: 1 when the driving lid gap is under
  SHUT[0] of the portrait's own, 0 above SHUT[1] (smooth between)."""
  r = np.asarray(openness, np.float64) / np.maximum(np.asarray(own, np.float64), 1e-3)
  t = np.clip((SHUT[1] - r) / (SHUT[1] - SHUT[0]), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def _iris(p: np.ndarray, e: int) -> tuple[np.ndarray, float]:
  sl = IRISES[e]
  c = p[sl.start, :2]
  r = float(np.mean(np.linalg.norm(p[sl.start + 1:sl.stop, :2] - c, axis=1)))
  return c, max(r, 0.5)


def _affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """Least-squares 2x3 affine with dst ~ A [src, 1]."""
  x = np.c_[src, np.ones(len(src))]
  a, *_ = np.linalg.lstsq(x, dst, rcond=None)
  return a.T


def _smoothstep(a: float, b: float, x):
  t = np.clip((x - a) / (b - a), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def _remap(img: np.ndarray, q: np.ndarray) -> np.ndarray:
  """img sampled (bilinear) at continuous coordinates q [h, w, 2]."""
  q = q.astype(np.float32) - 0.5
  return cv2.remap(img, q[..., 0], q[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclasses.dataclass
class EyeLayer:
  """Per portrait: its photo crop, the sclera plate and its eyes (crop pixels)."""
  photo: np.ndarray          # float32 [S, S, 3]
  plate: np.ndarray          # float32 [S, S, 3]: the photo with its irises filled from sclera
  visible: np.ndarray        # float32 [S, S]: the portrait's eye openings (grown, softened)
  points: np.ndarray         # [478, 3] the portrait's landmarks (crop pixels)
  own_gap: np.ndarray        # [2] the portrait's lid openness

  @property
  def width(self) -> int:
    return int(self.photo.shape[1])

  @classmethod
  def build(cls, photo: np.ndarray, points: np.ndarray) -> "EyeLayer":
    photo = np.ascontiguousarray(photo[..., :3]).astype(np.float32)
    h, w = photo.shape[:2]
    p = np.asarray(points, np.float64)
    plate = photo.copy()
    visible = np.zeros((h, w), np.float32)
    yy, xx = np.ogrid[:h, :w]
    for e in (0, 1):
      cont = p[list(CONTOURS[e]), :2]
      mask = banks.polygon_mask(cont, (h, w), 2) > 0.5
      grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
      visible = np.maximum(visible, grown.astype(np.float32))
      c, r = _iris(p, e)
      disc = (xx + 0.5 - c[0]) ** 2 + (yy + 0.5 - c[1]) ** 2 <= (IRIS_MARGIN * r + 2.5) ** 2
      hole = disc & grown
      if not hole.any():
        continue
      # sclera inside the opening (lash pixels at its edge left out) fills the hole: push-pull
      # within an ROI about the eye, so the lids and skin do not bleed in
      core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
      x0, y0 = np.maximum(np.floor(cont.min(0) - 4 * r).astype(int), 0)
      x1, y1 = np.minimum(np.ceil(cont.max(0) + 4 * r).astype(int), [w, h])
      valid = (core & ~disc)[y0:y1, x0:x1]
      if valid.sum() < 4:
        continue
      roi = banks.fill_outward(plate[y0:y1, x0:x1], valid)
      region = hole[y0:y1, x0:x1]
      plate[y0:y1, x0:x1][region] = roi[region]
    visible = cv2.GaussianBlur(visible, (3, 3), 0.8)
    return cls(photo=photo, plate=plate, visible=visible, points=p, own_gap=lid_gap(p))

  def render(self, image: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """Redraws, in place, both eye openings of `image` (the warped crop, uint8) for the
    driving landmarks [478, 3] (same crop pixels): the sclera plate mapped by the affine fit of
    the driving eye contour onto the portrait's, the portrait's iris (with a ring of sclera)
    moved rigidly over it, hidden iris taken from its mirrored side, the opening blended in
    with an anti-aliased edge. With the portrait's own landmarks every pixel is its own."""
    h, w = image.shape[:2]
    d = np.asarray(driving, np.float64)
    for e in (0, 1):
      cont_d = d[list(CONTOURS[e]), :2]
      lo = np.floor(cont_d.min(0) - 2).astype(int)
      hi = np.ceil(cont_d.max(0) + 2).astype(int)
      x0, y0 = max(lo[0], 0), max(lo[1], 0)
      x1, y1 = min(hi[0], w), min(hi[1], h)
      if x1 - x0 < 2 or y1 - y0 < 2:
        continue
      opening = banks.polygon_mask(cont_d - [x0, y0], (y1 - y0, x1 - x0), 4)
      if opening.max() <= 0:
        continue
      ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
      pix = np.stack([xs + 0.5, ys + 0.5], -1)
      a = _affine(cont_d, self.points[list(CONTOURS[e]), :2])
      sclera = _remap(self.plate, pix @ a[:, :2].T + a[:, 2])
      c_d, r_d = _iris(d, e)
      c_s, r_s = _iris(self.points, e)
      v = pix - c_d
      q = c_s + v * (r_s / r_d)
      q2 = c_s + v * np.array([1.0, -1.0]) * (r_s / r_d)
      w1 = _remap(self.visible, q)
      w2 = (1.0 - w1) * _remap(self.visible, q2)
      iris = (w1[..., None] * _remap(self.photo, q) + w2[..., None] * _remap(self.photo, q2)) \
          / np.maximum(w1 + w2, 1e-6)[..., None]
      rad = IRIS_MARGIN * r_d + 2.5 * (r_d / r_s)
      disc = 1.0 - _smoothstep(rad, rad + 1.5, np.sqrt((v ** 2).sum(-1)))
      ai = (disc * np.clip(w1 + w2, 0.0, 1.0))[..., None]
      eye = sclera + (iris - sclera) * ai
      reg = image[y0:y1, x0:x1].astype(np.float32)
      image[y0:y1, x0:x1] = np.clip(reg + (eye - reg) * opening[..., None] + 0.5, 0, 255
                                    ).astype(np.uint8)
    return image


def lid_blend(image: np.ndarray, lids: "banks.LidReference", driving: np.ndarray,
              own_gap: np.ndarray, scale: float = 1.0) -> np.ndarray:
  """Cross-fades, in place, each eye of `image` (the warped crop) towards the closed-lid
  exemplar as the driving lids (driving [478, 3], render-crop pixels) shut."""
  wts = closed_weight(lid_gap(driving), own_gap)
  h, w = image.shape[:2]
  for e in (0, 1):
    if wts[e] <= 1e-3:
      continue
    out = lids.render(e, driving, (h, w), scale)
    if out is None:
      continue
    rgb, wt, (x0, y0) = out
    a = (wts[e] * wt)[..., None]
    y1, x1 = y0 + rgb.shape[0], x0 + rgb.shape[1]
    reg = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.clip(reg * (1 - a) + rgb * a + 0.5, 0, 255).astype(np.uint8)
  return image


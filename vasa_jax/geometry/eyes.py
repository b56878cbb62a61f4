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
from vasa_jax.geometry.landmarks import EYE_A_RING, EYE_B_RING, IRIS_A, IRIS_B

__all__ = ["EyeLayer", "lid_gap", "closed_weight", "lid_blend", "IRIS_MARGIN"]

CONTOURS = (EYE_A_RING, EYE_B_RING)      # eye openings as polygons
IRISES = (IRIS_A, IRIS_B)
LID_PAIRS = (((160, 144), (159, 145), (158, 153)), ((387, 373), (386, 374), (385, 380)))
CORNERS = ((33, 133), (362, 263))
IRIS_MARGIN = 1.2     # the rigid disc is this x the iris radius (+ 1 pixel)
SHUT = (0.10, 0.35)   # lid openness / the portrait's: fully exemplar below, none above
MOVED = (0.25, 1.0)   # eye change (px) over which the redraw fades in


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


RAYS = 96            # directions of the radial sclera map


def _rays(poly: np.ndarray, centre: np.ndarray, axis: float) -> np.ndarray:
  """[RAYS] distance from `centre` to the polygon's boundary along directions at angles
  2 pi k / RAYS from the eye's axis (the nearest crossing; 0 where the centre is outside)."""
  ang = axis + 2 * np.pi * np.arange(RAYS) / RAYS
  dirs = np.stack([np.cos(ang), np.sin(ang)], -1)                     # [R, 2]
  a = poly - centre
  b = np.roll(poly, -1, 0) - centre
  e = b - a                                                           # [E, 2]
  # centre + t dir = a + u e  ->  solve for t, u per ray and edge
  den = dirs[:, None, 0] * e[None, :, 1] - dirs[:, None, 1] * e[None, :, 0]
  t = (a[None, :, 0] * e[None, :, 1] - a[None, :, 1] * e[None, :, 0]) / np.where(
      np.abs(den) < 1e-12, np.nan, den)
  u = (a[None, :, 0] * dirs[:, None, 1] - a[None, :, 1] * dirs[:, None, 0]) / np.where(
      np.abs(den) < 1e-12, np.nan, den)
  ok = (t > 0) & (u >= 0) & (u <= 1)
  return np.nan_to_num(np.min(np.where(ok, t, np.inf), axis=1), posinf=0.0)


INSET = 0.15         # the redrawn opening: the mesh's, this share of its height in from the lids


def _outline(p: np.ndarray, e: int) -> np.ndarray:
  """[16, 2] the eye opening the layer redraws: the mesh's eye outline pulled INSET of its
  height towards the line through the corners, so that the lid margin and lashes, which the
  mesh's outline may take in, stay the warp's."""
  cont = np.asarray(p, np.float64)[list(CONTOURS[e]), :2]
  a, b = (np.asarray(p, np.float64)[i, :2] for i in CORNERS[e])
  u = (b - a) / max(np.linalg.norm(b - a), 1e-9)
  rel = cont - a
  along = rel @ u
  foot = a + along[:, None] * u
  return cont - INSET * (cont - foot)


def _axis(p: np.ndarray, e: int) -> float:
  a, b = CORNERS[e]
  d = p[b, :2] - p[a, :2]
  return float(np.arctan2(d[1], d[0]))


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
      cover = banks.polygon_mask(_outline(p, e), (h, w), 4)
      mask = cover > 0.5
      grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
      visible = np.maximum(visible, (cover >= 0.6).astype(np.float32))
      c, r = _iris(p, e)
      disc = (xx + 0.5 - c[0]) ** 2 + (yy + 0.5 - c[1]) ** 2 <= (IRIS_MARGIN * r + 2.5) ** 2
      # The plate: inside the opening the photo with the iris filled in, outside it (beyond
      # the grown opening, so every pixel the opening's edge samples at rest is the photo's)
      # the sclera extended, so a driving opening wider than the portrait's shows sclera, not
      # the lid skin. The fill comes from the brighter half of the sclera inside the opening
      # (lash pixels at its edge and shadow left out), by push-pull within an ROI.
      core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
      x0, y0 = np.maximum(np.floor(cont.min(0) - 4 * r).astype(int), 0)
      x1, y1 = np.minimum(np.ceil(cont.max(0) + 4 * r).astype(int), [w, h])
      roi = plate[y0:y1, x0:x1]
      sclera = (core & ~disc)[y0:y1, x0:x1]
      if sclera.sum() < 4:
        continue
      lum = roi[..., 0] * 0.299 + roi[..., 1] * 0.587 + roi[..., 2] * 0.114
      bright = sclera & (lum >= np.median(lum[sclera]))
      filled = banks.fill_outward(roi, bright if bright.sum() >= 4 else sclera)
      region = ((disc & grown) | ~grown)[y0:y1, x0:x1]
      roi[region] = filled[region]
    visible = cv2.GaussianBlur(visible, (3, 3), 0.5)
    return cls(photo=photo, plate=plate, visible=visible, points=p, own_gap=lid_gap(p))

  def render(self, image: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """Redraws, in place, both eye openings of `image` (the warped crop, uint8) for the
    driving landmarks [478, 3] (same crop pixels): the portrait's own sclera stretched
    radially between the rigid iris disc and the lids (`_sclera`), the portrait's iris (with
    a ring of sclera) moved rigidly over it, hidden iris taken from its mirrored side, the
    opening blended in with an anti-aliased edge. With the portrait's own landmarks every
    pixel is its own."""
    h, w = image.shape[:2]
    d = np.asarray(driving, np.float64)
    for e in (0, 1):
      cont_d = _outline(d, e)
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
      c_d, r_d = _iris(d, e)
      c_s, r_s = _iris(self.points, e)
      # how far this eye changed, relative to its corners: an eye that only moved with the
      # head is the warp's (the photo's eye, moved), and the redraw fades in over MOVED px
      moved = self._change(e, d)
      weight = _smoothstep(MOVED[0], MOVED[1], moved)
      if weight <= 0.0:
        continue
      v = pix - c_d
      sclera = self._sclera(e, d, cont_d, c_d, r_d, c_s, r_s, pix, v)
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
      image[y0:y1, x0:x1] = np.clip(reg + (eye - reg) * (weight * opening)[..., None] + 0.5,
                                    0, 255).astype(np.uint8)
    return image

  def _change(self, e: int, d: np.ndarray) -> float:
    """Largest distance (pixels) of the driving eye's outline and iris from the portrait's
    moved onto the driving eye corners by a similarity."""
    idx = list(CONTOURS[e]) + list(range(IRISES[e].start, IRISES[e].stop))
    a, b = CORNERS[e]
    src = self.points[[a, b], :2]
    dst = d[[a, b], :2]
    zs, zd = complex(*(src[1] - src[0])), complex(*(dst[1] - dst[0]))
    k = zd / zs if abs(zs) > 1e-9 else 1.0
    q = self.points[idx, :2] - src[0]
    z = (q[:, 0] + 1j * q[:, 1]) * k
    pred = np.stack([z.real, z.imag], -1) + dst[0]
    return float(np.max(np.linalg.norm(d[idx, :2] - pred, axis=1)))

  def _sclera(self, e, d, cont_d, c_d, r_d, c_s, r_s, pix, v) -> np.ndarray:
    """The sclera at every pixel of the driving eye's ROI, from the portrait's own sclera
    along the same direction from the iris (relative to the eye's axis): the stretch between
    the rigid iris disc and the lids maps onto the portrait's. Directions in which the
    portrait shows no sclera blend the nearest ones on either side that show some (with none
    at all, the sclera plate under the affine fit of the contours)."""
    p = self.points
    cont_s = _outline(p, e)
    ax_d, ax_s = _axis(d, e), _axis(p, e)
    r1_d = IRIS_MARGIN * r_d + 2.5 * (r_d / r_s)
    r1_s = IRIS_MARGIN * r_s + 2.5
    big_d = _rays(cont_d, c_d, ax_d)
    big_s = _rays(cont_s, c_s, ax_s)
    rho = np.sqrt((v ** 2).sum(-1))
    phi = (np.arctan2(v[..., 1], v[..., 0]) - ax_d) % (2 * np.pi)
    k = phi / (2 * np.pi) * RAYS

    def at(table, kk):
      i0 = np.floor(kk).astype(int) % RAYS
      f = kk - np.floor(kk)
      return table[i0] * (1 - f) + table[(i0 + 1) % RAYS] * f
    t = np.clip((rho - r1_d) / np.maximum(at(big_d, k) - r1_d, 1.0), 0.0, 1.0)
    # a direction of the portrait without sclera blends its two nearest neighbours with some
    # (by angle), so the fill changes smoothly around the iris
    has = np.flatnonzero(big_s - r1_s > 1.0)
    if has.size == 0:
      a = _affine(cont_d, cont_s)
      return _remap(self.plate, pix @ a[:, :2].T + a[:, 2])
    idx = np.arange(RAYS)
    fwd = (has[None] - idx[:, None]) % RAYS                  # steps to each direction ahead
    j1 = has[np.argmin(fwd, 1)]
    d1 = np.min(fwd, 1).astype(np.float64)
    back = (idx[:, None] - has[None]) % RAYS
    j2 = has[np.argmin(back, 1)]
    d2 = np.min(back, 1).astype(np.float64)
    k0 = np.round(k).astype(int) % RAYS
    own = big_s[k0] - r1_s > 1.0

    def sample(kk):
      ang = ax_s + kk / RAYS * 2 * np.pi
      dist = r1_s + t * np.maximum(at(big_s, kk) - r1_s, 0.0)
      return _remap(self.photo, c_s + np.stack([np.cos(ang), np.sin(ang)], -1) * dist[..., None])
    out = sample(np.where(own, k, j1[k0].astype(np.float64)))
    if not own.all():
      w2 = (d1[k0] / np.maximum(d1[k0] + d2[k0], 1e-9))[..., None]
      other = sample(j2[k0].astype(np.float64))
      out = np.where(own[..., None], out, out * (1 - w2) + other * w2)
    return out


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
    y1, x1 = y0 + rgb.shape[0], x0 + rgb.shape[1]
    # what is still open of the eye stays the warp's (no eye showing through a lid): the
    # exemplar replaces the lids around the slit, and all of it once the slit is gone
    slit = banks.polygon_mask(np.asarray(driving, np.float64)[list(CONTOURS[e]), :2] * scale
                              - [x0, y0], rgb.shape[:2], 4)
    a = (wts[e] * wt * (1.0 - slit))[..., None]
    reg = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.clip(reg * (1 - a) + rgb * a + 0.5, 0, 255).astype(np.uint8)
  return image


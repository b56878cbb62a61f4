"""The dense motion field that two face meshes imply, and warping photos with it.

The crop is covered by one triangulation: the 478 face points, three rings of virtual points
around the face (hair, ears, neck: they follow the head's rigid motion with weights that fall
off outward and downward) and fixed points on the crop border. Every output pixel samples the
source image at the point with the same barycentric coordinates in the corresponding source
triangle (piecewise-affine, the classic landmark warp), with a z-buffer so that a turning head
hides its far side. Because the border points never move, the field is exactly zero at the crop
border: pasted back into the photo, the warped crop has no seam.

    topo = Topology.build(basis, source_codes, crop)           # once per portrait
    src = topo.points(source_mesh_px, source_sim, source_sim)  # [P, 3]
    dst = topo.points(driving_mesh_px, driving_sim, source_sim)
    map_xy, cls = dense_map(src, dst, topo.triangles, topo.tri_class, size)
    frame = cv2.remap(photo_crop, map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR)

`cls` labels each output pixel by what covers it (outer region, face, mouth interior, eye
interior), which the learned decoder uses to know where the portrait has no pixels to give.
Rasterisation is numba-compiled: ~1-2 ms for a 512 x 512 field on one core.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry.landmarks import EYE_A_CONTOUR, EYE_B_CONTOUR, IRIS_A, IRIS_B, NUM_POINTS

__all__ = ["Topology", "dense_map", "remap", "INNER_LIPS", "OUTER_LIPS", "CLASS_OUTER",
           "CLASS_FACE", "CLASS_MOUTH", "CLASS_EYE"]

INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,   # upper, corner to corner
              324, 318, 402, 317, 14, 87, 178, 88, 95)             # lower, back
OUTER_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
              375, 321, 405, 314, 17, 84, 181, 91, 146)
EYE_A = tuple(EYE_A_CONTOUR) + tuple(range(IRIS_A.start, IRIS_A.stop))
EYE_B = tuple(EYE_B_CONTOUR) + tuple(range(IRIS_B.start, IRIS_B.stop))
CLASS_OUTER, CLASS_FACE, CLASS_MOUTH, CLASS_EYE = 0, 1, 2, 3

RING_SCALES = (1.3, 1.75, 2.4)      # virtual rings: the face outline scaled about its centre
RING_POINTS = 28
BORDER_POINTS = 8                   # per crop side


# ----------------------------------------------------------------------------- raster

def _raster_py(src, dst, dz, tris, tcls, size, out_map, out_cls, out_ratio):
  """Rasterises the driving triangles (z-buffered): per pixel the source position, the class
  and the area ratio source / driving of the covering triangle (< 1 where the warp stretches
  the source: content the portrait does not show)."""
  zbuf = np.full((size, size), np.inf)
  for f in range(tris.shape[0]):
    i0, i1, i2 = tris[f]
    x0, y0 = dst[i0]
    x1, y1 = dst[i1]
    x2, y2 = dst[i2]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if abs(area) < 1e-9:
      continue
    sa = ((src[i1, 0] - src[i0, 0]) * (src[i2, 1] - src[i0, 1])
          - (src[i2, 0] - src[i0, 0]) * (src[i1, 1] - src[i0, 1]))
    ratio = min(abs(sa / area), 4.0)
    lo_x = max(int(math.floor(min(x0, x1, x2) - 0.5)), 0)
    hi_x = min(int(math.ceil(max(x0, x1, x2) - 0.5)), size - 1)
    lo_y = max(int(math.floor(min(y0, y1, y2) - 0.5)), 0)
    hi_y = min(int(math.ceil(max(y0, y1, y2) - 0.5)), size - 1)
    for py in range(lo_y, hi_y + 1):
      cy = py + 0.5
      for px in range(lo_x, hi_x + 1):
        cx = px + 0.5
        w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) / area
        w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) / area
        w2 = 1.0 - w0 - w1
        if w0 < -1e-6 or w1 < -1e-6 or w2 < -1e-6:
          continue
        z = w0 * dz[i0] + w1 * dz[i1] + w2 * dz[i2]
        if z < zbuf[py, px]:
          zbuf[py, px] = z
          out_map[py, px, 0] = w0 * src[i0, 0] + w1 * src[i1, 0] + w2 * src[i2, 0]
          out_map[py, px, 1] = w0 * src[i0, 1] + w1 * src[i1, 1] + w2 * src[i2, 1]
          out_cls[py, px] = tcls[f]
          out_ratio[py, px] = ratio


try:
  import numba

  _raster = numba.njit(cache=True, nogil=True)(_raster_py)
except ImportError:     # pragma: no cover - numba is a dependency; keep a working fallback
  _raster = _raster_py


def dense_map(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, tri_class: np.ndarray,
              size: int, scale: float = 1.0):
  """Backward map of a triangulated warp.

  src, dst: [P, 2+] point positions in continuous crop pixels (dst may carry depth in column 2:
  larger = further; the nearest triangle wins). Returns map [size, size, 2] float32 (for each
  output pixel index, the source position in pixel-index coordinates, ready for cv2.remap),
  cls [size, size] uint8 (`tri_class` of the covering triangle) and ratio [size, size] float32
  (source / driving area of that triangle). scale: the field is computed on a size x size grid
  for points given at `scale` x that resolution."""
  src = np.ascontiguousarray(np.asarray(src, np.float64)[:, :2] / scale)
  dst3 = np.asarray(dst, np.float64)
  d2 = np.ascontiguousarray(dst3[:, :2] / scale)
  dz = np.ascontiguousarray(dst3[:, 2] if dst3.shape[1] > 2 else np.zeros(len(dst3)))
  out = _identity(int(size)).copy()     # identity (continuous) where nothing covers
  cls = np.zeros((size, size), np.uint8)
  ratio = np.ones((size, size), np.float32)
  _raster(src, d2, dz, np.ascontiguousarray(triangles, np.int64),
          np.ascontiguousarray(tri_class, np.uint8), int(size), out, cls, ratio)
  if scale != 1.0:
    out *= scale
  out -= 0.5
  return out.astype(np.float32), cls, ratio


_IDENTITY: dict = {}


def _identity(size: int) -> np.ndarray:
  """[size, size, 2] float64 pixel-centre coordinates (cached per size)."""
  if size not in _IDENTITY:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    _IDENTITY[size] = np.stack([xs + 0.5, ys + 0.5], -1)
    _IDENTITY[size].setflags(write=False)
  return _IDENTITY[size]


def remap(image: np.ndarray, map_xy: np.ndarray, border=cv2.BORDER_REPLICATE) -> np.ndarray:
  return cv2.remap(image, map_xy[..., 0], map_xy[..., 1], interpolation=cv2.INTER_LINEAR,
                   borderMode=border)


# ----------------------------------------------------------------------------- topology

def _outline(template_xy: np.ndarray) -> np.ndarray:
  """Face outline: the convex hull of the template points, resampled to RING_POINTS points
  evenly in angle about the centre (so rings of different scales line up)."""
  from scipy.spatial import ConvexHull
  hull = template_xy[ConvexHull(template_xy).vertices]
  c = template_xy.mean(0)
  ang = np.arctan2(hull[:, 1] - c[1], hull[:, 0] - c[0])
  rad = np.linalg.norm(hull - c, axis=1)
  order = np.argsort(ang)
  ang, rad = ang[order], rad[order]
  a = np.linspace(-np.pi, np.pi, RING_POINTS, endpoint=False)
  r = np.interp(a, np.r_[ang - 2 * np.pi, ang, ang + 2 * np.pi], np.r_[rad, rad, rad])
  return c + np.stack([np.cos(a), np.sin(a)], -1) * r[:, None]


def _open_shape(basis: codes_lib.FaceBasis) -> np.ndarray:
  """A template with the mouth and eyes opened, so its triangulation has triangles across the
  mouth and eye openings (and none that bridge lips to chin through them)."""
  t = basis.template.astype(np.float64).copy()
  up = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
  lo = [324, 318, 402, 317, 14, 87, 178, 88, 95]
  gap = t[lo, 1].mean() - t[up[1:-1], 1].mean()
  want = 0.12
  if gap < want:
    # open along the expression direction that separates the inner lips most
    k = basis.exp_basis.astype(np.float64)
    d = k[:, lo, 1].mean(1) - k[:, up[1:-1], 1].mean(1)
    j = int(np.argmax(np.abs(d)))
    t = t + k[j] * (want - gap) / d[j]
  return t


@dataclasses.dataclass
class Topology:
  """The warp triangulation of one portrait. Points: 478 face points, then the virtual ring
  points, then the border points."""
  triangles: np.ndarray      # [F, 3] int
  tri_class: np.ndarray      # [F] uint8
  ring_can: np.ndarray       # [V, 3] virtual points in template units
  follow: np.ndarray         # [V] how much each virtual point follows the head (0..1)
  border: np.ndarray         # [B, 2] crop-normalised border positions in [0, 1]

  @property
  def num_points(self) -> int:
    return NUM_POINTS + len(self.ring_can) + len(self.border)

  @classmethod
  def build(cls, basis: codes_lib.FaceBasis, source: codes_lib.Codes, crop: float,
            index: int = 0) -> "Topology":
    from scipy.spatial import Delaunay
    tmpl = basis.template.astype(np.float64)
    shape = _open_shape(basis)
    out2 = _outline(tmpl[:, :2])
    centre = tmpl[:, :2].mean(0)
    zedge = float(np.percentile(tmpl[:, 2], 90))
    chin_y, brow_y = float(tmpl[152, 1]), float(tmpl[10, 1])
    rings, follow = [], []
    for k, f in enumerate(RING_SCALES):
      p = centre + (out2 - centre) * f
      # weights: full follow above the mouth, less on the neck; less further out
      top = (1.0, 0.6, 0.25)[k]
      bottom = (0.55, 0.3, 0.1)[k]
      yy = np.clip((p[:, 1] - tmpl[13, 1]) / max(chin_y - brow_y, 1e-6) * 2.0, 0.0, 1.0)
      rings.append(np.c_[p, np.full(len(p), zedge + 0.3 * (k + 1))])
      follow.append(top + (bottom - top) * yy)
    ring_can = np.concatenate(rings)
    follow = np.concatenate(follow)
    # Border points in crop-normalised coordinates, mapped into the template plane through the
    # source's in-plane similarity (for the triangulation only).
    u = np.linspace(0.0, 1.0, BORDER_POINTS + 1)[:-1]
    border = np.concatenate([np.c_[u, np.zeros_like(u)], np.c_[np.ones_like(u), u],
                             np.c_[1 - u, np.ones_like(u)], np.c_[np.zeros_like(u), 1 - u]])
    s = float(source.scale[index])
    r = source.rotation[index]
    t = source.shift[index]
    a2 = s * r[:2, :2]
    inv = np.linalg.inv(a2)
    b_tmpl = (border * crop - t[:2]) @ inv.T
    # Drop ring points that fall outside (or too near) the crop.
    ring_px = ring_can[:, :2] @ a2.T + t[:2]
    margin = 0.03 * crop
    inside = ((ring_px > margin) & (ring_px < crop - margin)).all(1)
    ring_can, follow = ring_can[inside], follow[inside]
    pts2 = np.concatenate([shape[:, :2], ring_can[:, :2], b_tmpl])
    # The irises are not in the triangulation: the eye opening is triangulated by its outline
    # alone, so a shutting lid passes over the iris points instead of folding the warp around
    # them (vasa_jax.geometry.eyes draws the iris where the gaze puts it).
    keep = np.setdiff1d(np.arange(len(pts2)), np.arange(IRIS_A.start, IRIS_B.stop))
    tri = keep[Delaunay(pts2[keep]).simplices].astype(np.int64)
    n_all = len(pts2)

    def member(idx):
      m = np.zeros(n_all, bool)
      m[list(idx)] = True
      return m[tri].all(1)

    tcls = np.where(tri.max(1) < NUM_POINTS, CLASS_FACE, CLASS_OUTER).astype(np.uint8)
    tcls[member(EYE_A) | member(EYE_B)] = CLASS_EYE
    tcls[member(INNER_LIPS)] = CLASS_MOUTH
    return cls(triangles=tri, tri_class=tcls, ring_can=ring_can.astype(np.float32),
               follow=follow.astype(np.float32), border=border.astype(np.float32))

  def points(self, mesh_px: np.ndarray, sim, source_sim, crop: float) -> np.ndarray:
    """[P, 3] positions (x, y in crop pixels; depth) of every warp point for a frame whose face
    mesh is `mesh_px` [478, 3] and whose similarity (s, R, t) is `sim`; `source_sim` is the
    portrait's (the virtual points move by `follow` x the change between the two)."""
    s, r, t = sim
    s0, r0, t0 = source_sim
    v = self.ring_can.astype(np.float64)
    p_src = s0 * v @ r0.T + t0
    p_drv = s * v @ r.T + t
    ring = p_src + self.follow[:, None] * (p_drv - p_src)
    mesh = np.asarray(mesh_px, np.float64).copy()
    border = np.c_[self.border * crop, np.full(len(self.border), 1e9)]
    ring[:, 2] = np.maximum(ring[:, 2], mesh[:, 2].max() + 1e-3 * s)
    return np.concatenate([mesh, ring, border]).astype(np.float64)

"""Motion codes from measured face geometry: z_pose and z_dyn of the geometry-grounded latent space.

A frame's 478 landmarks (`vasa_jax.geometry.landmarks`) in pixels of a square face crop of side
S become:

  z_pose [6]   yaw, pitch, roll (rad), tx, ty, tz (m): the similarity transform that maps the
               canonical template onto the mesh (least squares over points that move with the
               skull), in the project's conventions (docs/conventions.md; R = Rz Ry Rx). tz comes
               from the face's scale in the crop: a face `s_ref` of the crop wide (outer eye
               corners) is at the reference distance; tx, ty are metres at that distance.
  z_dyn [K+4]  the coefficients of an expression basis over canonical-frame mesh displacement
               (jaw, lips, cheeks, brows), then the eyelid openness of both eyes (lid gap / eye
               width) and the eye-in-head gaze (theta, phi; radians) from the irises.
  z_id  [Kid]  identity shape coefficients (for disentangling only: decoding is relative to the
               portrait's own measured mesh).

`FaceBasis` holds the template, the bases and their prior variances. `fit_basis` learns them from
tracked clips: a generalised Procrustes template (made mirror-symmetric, x to the subject's left,
the forehead-chin line vertical), identity shape PCA over per-person mean shapes, the eyelid
displacement by regression on measured lid openness, pose-correlated artefacts regressed out, and
expression PCA of what is left of the within-clip motion. `encode` is a ridge (MAP) fit of
identity and expression jointly, so identity shape does not leak into the expression codes;
`decode` gives the landmarks of a portrait performing other codes: its own measured mesh plus the
change in expression, lids and gaze, moved rigidly to the new pose.

Everything is numpy, batched over frames.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np

from vasa_jax.geometry.landmarks import EYE_A_CONTOUR, EYE_B_CONTOUR, IRIS_A, IRIS_B, NUM_POINTS
from vasa_jax.errors import InputError

__all__ = ["FaceBasis", "Codes", "fit_basis", "encode", "decode", "fit_similarity",
           "rotation_to_angles", "angles_to_rotation", "dyn_names", "BASIS_FILE",
           "skull_still", "open_mouth", "inner_gap", "shut_lids"]

BASIS_FILE = "face_basis.npz"
REF_DISTANCE = 0.65                 # metres (= models/warp.REF_DISTANCE)
FOV_DEG = 14.0                      # the crop spans this field of view at REF_DISTANCE
EYEBALL_RATIO = 0.42                # eyeball radius / eye width (corner to corner), human average

# Points that move with the skull: forehead, temples, nose bridge and sides, eye corners,
# cheekbones. No brows, lips, jaw or eyelids.
RIGID = (10, 109, 338, 67, 297, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263,
         127, 356, 234, 454, 21, 251, 162, 389, 54, 284, 103, 332, 98, 327, 129, 358, 116, 345,
         123, 352, 50, 280, 47, 277, 114, 343, 188, 412)
# The skull points less those on the face's side silhouette (temples, cheeks, nose wings):
# when the head turns, the image there slides along the outline instead of following the point.
# What remains (forehead, nose, eye corners, inner cheekbones) is the skull as the pixels show
# it: `skull_still` keeps these still under expression, tracking.pixel_rotation follows them.
SILHOUETTE = (127, 356, 234, 454, 162, 389, 116, 345, 123, 352, 50, 280, 129, 358)
SKULL_INTERIOR = tuple(i for i in RIGID if i not in SILHOUETTE)
# Mirror pairs used to find the symmetry plane of the template before all pairs are matched.
SEED_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (127, 356), (70, 300), (105, 334),
              (98, 327), (50, 280), (172, 397), (58, 288), (159, 386), (145, 374))
# Upper / lower lid points facing each other (middle of the eye), for lid openness.
LID_PAIRS_A = ((160, 144), (159, 145), (158, 153))
LID_PAIRS_B = ((387, 373), (386, 374), (385, 380))
CORNERS_A = (33, 133)
CORNERS_B = (362, 263)
EYE_REGION_A = EYE_A_CONTOUR
EYE_REGION_B = EYE_B_CONTOUR


def dyn_names(k: int) -> list[str]:
  """Names of the z_dyn dims for a basis with k expression components."""
  return [f"exp{i:02d}" for i in range(k)] + ["lid_a", "lid_b", "gaze_theta", "gaze_phi"]


# ----------------------------------------------------------------------------- rotations

def angles_to_rotation(yaw, pitch, roll) -> np.ndarray:
  """[...] angles (rad) -> [..., 3, 3] R = Rz(roll) @ Ry(yaw) @ Rx(pitch) (conventions.md)."""
  yaw, pitch, roll = (np.asarray(a, np.float64) for a in (yaw, pitch, roll))
  cy, sy, cp, sp, cr, sr = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                            np.cos(roll), np.sin(roll))
  one, zero = np.ones_like(yaw), np.zeros_like(yaw)
  rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                 np.stack([zero, sp, cp], -1)], -2)
  ry = np.stack([np.stack([cy, zero, -sy], -1), np.stack([zero, one, zero], -1),
                 np.stack([sy, zero, cy], -1)], -2)
  rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1),
                 np.stack([zero, zero, one], -1)], -2)
  return rz @ ry @ rx


def rotation_to_angles(r: np.ndarray) -> np.ndarray:
  """[..., 3, 3] -> [..., 3] (yaw, pitch, roll), inverse of `angles_to_rotation`."""
  r = np.asarray(r, np.float64)
  yaw = np.arcsin(np.clip(r[..., 2, 0], -1.0, 1.0))
  pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
  roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
  return np.stack([yaw, pitch, roll], -1)


def fit_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
  """Least-squares similarity dst ~ s R src + t (Umeyama), batched: src [N,3] or [B,N,3],
  dst [B,N,3] -> s [B], R [B,3,3], t [B,3]."""
  dst = np.asarray(dst, np.float64)
  src = np.broadcast_to(np.asarray(src, np.float64), dst.shape)
  w = np.ones(dst.shape[-2]) if weights is None else np.asarray(weights, np.float64)
  w = w / w.sum()
  mu_s = np.einsum("n,bnk->bk", w, src)
  mu_d = np.einsum("n,bnk->bk", w, dst)
  a = src - mu_s[:, None]
  b = dst - mu_d[:, None]
  cov = np.einsum("n,bni,bnj->bij", w, b, a)
  u, sig, vt = np.linalg.svd(cov)
  d = np.sign(np.linalg.det(u @ vt))
  corr = np.ones_like(sig)
  corr[:, 2] = d
  r = u @ (corr[:, :, None] * vt)
  var_s = np.einsum("n,bnk->b", w, a * a)
  s = (sig * corr).sum(-1) / np.maximum(var_s, 1e-12)
  t = mu_d - s[:, None] * np.einsum("bij,bj->bi", r, mu_s)
  return s, r, t


# ----------------------------------------------------------------------------- the basis

@dataclasses.dataclass
class FaceBasis:
  """Template and linear bases of the measured face (all in template units: the distance
  between the outer eye corners is 1). Shapes are [N, 3] with N = 478."""
  template: np.ndarray          # [N, 3]
  id_basis: np.ndarray          # [Kid, N, 3] orthonormal (flattened)
  id_var: np.ndarray            # [Kid] prior variances of the identity coefficients
  exp_basis: np.ndarray         # [K, N, 3] orthonormal (flattened)
  exp_var: np.ndarray           # [K]
  lid_basis: np.ndarray         # [2, N, 3] displacement per unit of lid openness (eye a, b)
  mirror: np.ndarray            # [N] int: index of each point's mirror image
  s_ref: float                  # outer-eye-corner distance / crop side at the reference distance
  meta: dict = dataclasses.field(default_factory=dict)

  @property
  def exp_dim(self) -> int:
    return int(self.exp_basis.shape[0])

  @property
  def dyn_dim(self) -> int:
    return self.exp_dim + 4

  @property
  def id_dim(self) -> int:
    return int(self.id_basis.shape[0])

  def save(self, path: str) -> str:
    from vasa_jax.media import atomic_output
    with atomic_output(path) as tmp:
      with open(tmp, "wb") as f:
        np.savez_compressed(
            f, template=self.template.astype(np.float32),
            id_basis=self.id_basis.astype(np.float32), id_var=self.id_var.astype(np.float32),
            exp_basis=self.exp_basis.astype(np.float32),
            exp_var=self.exp_var.astype(np.float32),
            lid_basis=self.lid_basis.astype(np.float32), mirror=self.mirror.astype(np.int32),
            s_ref=np.float32(self.s_ref), meta=np.asarray(json.dumps(self.meta)))
    return path

  @classmethod
  def load(cls, path: str) -> "FaceBasis":
    if not os.path.isfile(path):
      raise FileNotFoundError(f"face basis not found: {path}")
    try:
      with np.load(path, allow_pickle=False) as z:
        return cls(template=z["template"], id_basis=z["id_basis"], id_var=z["id_var"],
                   exp_basis=z["exp_basis"], exp_var=z["exp_var"], lid_basis=z["lid_basis"],
                   mirror=z["mirror"], s_ref=float(z["s_ref"]),
                   meta=json.loads(str(z["meta"])))
    except (KeyError, ValueError, OSError) as e:
      raise InputError(f"{path} is not a face basis file: {e}") from None

  def half_extent_m(self) -> float:
    return REF_DISTANCE * math.tan(math.radians(FOV_DEG) / 2.0)


@dataclasses.dataclass
class Codes:
  """Per-frame codes of `encode` (leading batch axis B)."""
  pose: np.ndarray        # [B, 6]
  dyn: np.ndarray         # [B, K + 4]
  ident: np.ndarray       # [B, Kid]
  canonical: np.ndarray   # [B, N, 3] the measured mesh in template units, pose removed
  scale: np.ndarray       # [B] template units -> crop pixels
  rotation: np.ndarray    # [B, 3, 3]
  shift: np.ndarray       # [B, 3] pixels


def _eye_measures(c: np.ndarray):
  """canonical meshes [B,N,3] -> lids [B,2], gaze [B,2] (theta, phi rad), eye widths [B,2]."""
  out_lid, out_gaze, widths = [], [], []
  for pairs, corners, iris in ((LID_PAIRS_A, CORNERS_A, IRIS_A), (LID_PAIRS_B, CORNERS_B, IRIS_B)):
    a, b = c[:, corners[0]], c[:, corners[1]]
    w = np.linalg.norm(b[:, :2] - a[:, :2], axis=-1)
    gap = np.mean([c[:, lo, 1] - c[:, up, 1] for up, lo in pairs], axis=0)
    out_lid.append(gap / np.maximum(w, 1e-6))
    centre = (a + b) / 2
    off = (c[:, iris.start, :2] - centre[:, :2]) / (EYEBALL_RATIO * np.maximum(w, 1e-6))[:, None]
    out_gaze.append(np.arcsin(np.clip(off, -0.95, 0.95)))
    widths.append(w)
  return (np.stack(out_lid, -1), np.mean(out_gaze, axis=0), np.stack(widths, -1))


def _rigid_weights(n: int = NUM_POINTS) -> np.ndarray:
  w = np.zeros(n)
  w[list(RIGID)] = 1.0
  return w


def _canonicalize(points: np.ndarray, template: np.ndarray):
  """points [B,N,3] (pixels) -> (canonical [B,N,3], s, R, t) with points = s R c + t."""
  s, r, t = fit_similarity(template, points, _rigid_weights(points.shape[-2]))
  c = np.einsum("bji,bnj->bni", r, points - t[:, None]) / s[:, None, None]
  return c, s, r, t


def _pose_from_similarity(s, r, t, crop: float, basis: FaceBasis) -> np.ndarray:
  ang = rotation_to_angles(r)
  rel = (s / crop) / basis.s_ref           # face size relative to the reference framing
  tz = REF_DISTANCE / np.maximum(rel, 1e-6)
  e = basis.half_extent_m()
  # crop centre -> 0; the crop spans 2E metres at the reference distance (and 2E tz/ref at tz)
  tx = (t[:, 0] / crop - 0.5) * 2 * e * tz / REF_DISTANCE
  ty = (t[:, 1] / crop - 0.5) * 2 * e * tz / REF_DISTANCE
  return np.concatenate([ang, tx[:, None], ty[:, None], tz[:, None]], -1)


def _similarity_from_pose(pose: np.ndarray, crop: float, basis: FaceBasis):
  pose = np.asarray(pose, np.float64)
  r = angles_to_rotation(pose[:, 0], pose[:, 1], pose[:, 2])
  tz = pose[:, 5]
  s = basis.s_ref * crop * REF_DISTANCE / tz
  e = basis.half_extent_m()
  tx = (pose[:, 3] * REF_DISTANCE / (2 * e * tz) + 0.5) * crop
  ty = (pose[:, 4] * REF_DISTANCE / (2 * e * tz) + 0.5) * crop
  return s, r, np.stack([tx, ty, np.zeros_like(tx)], -1)


def _design(basis: FaceBasis):
  """Flattened [Kid + K, 3N] design and prior precisions of the joint identity/expression fit."""
  a = np.concatenate([basis.id_basis.reshape(basis.id_dim, -1),
                      basis.exp_basis.reshape(basis.exp_dim, -1)], 0)
  var = np.concatenate([basis.id_var, basis.exp_var])
  return a, var


_PROJ: dict = {}


def _projector(basis: "FaceBasis", noise: float) -> np.ndarray:
  """[3N, Kid + K] map from a flattened residual to the MAP coefficients (cached per basis):
  coef = r W A^T (A W A^T + noise^2 diag(1 / var))^-1."""
  key = (id(basis), noise)
  hit = _PROJ.get(key)
  if hit is not None and hit[0] is basis:
    return hit[1]
  a, var = _design(basis)
  a = a.astype(np.float64)
  w = np.repeat(_fit_weights(basis.template.shape[0]), 3)
  lhs = (a * w) @ a.T + np.diag(noise ** 2 / np.maximum(var.astype(np.float64), 1e-12))
  proj = (a * w).T @ np.linalg.inv(lhs)
  _PROJ[key] = (basis, proj)
  return proj


def _fit_weights(n: int = NUM_POINTS) -> np.ndarray:
  """Per-point weights of the expression / identity fit: irises and lids are measured
  directly, so they do not vote."""
  w = np.ones(n)
  w[IRIS_A] = w[IRIS_B] = 0.0
  w[list(EYE_REGION_A)] = w[list(EYE_REGION_B)] = 0.2
  return w


def encode(points, basis: FaceBasis, crop: float, noise: float = 0.01) -> Codes:
  """Landmarks [B, N, 3] (or [N, 3]) in pixels of a square crop of side `crop` -> Codes.

  noise: std of the measurement noise in template units (the ridge strength of the MAP fit)."""
  pts = np.asarray(points, np.float64)
  if pts.ndim == 2:
    pts = pts[None]
  c, s, r, t = _canonicalize(pts, basis.template)
  lids, gaze, _ = _eye_measures(c)
  resid = c - basis.template[None] - np.einsum("bk,knd->bnd", lids, basis.lid_basis)
  proj = _projector(basis, float(noise))
  coef = resid.reshape(len(c), -1) @ proj
  kid = basis.id_dim
  dyn = np.concatenate([coef[:, kid:], lids, gaze], -1)
  return Codes(pose=_pose_from_similarity(s, r, t, crop, basis).astype(np.float32),
               dyn=dyn.astype(np.float32), ident=coef[:, :kid].astype(np.float32),
               canonical=c.astype(np.float32), scale=s, rotation=r, shift=t)


def skull_still(disp: np.ndarray, base: np.ndarray, rotation: np.ndarray) -> np.ndarray:
  """Expression displacements disp [T, N, 3] (canonical units) of the mesh `base` [N, 3], seen
  through the head rotations `rotation` [T, 3, 3], less what would look like head motion: per
  frame, the small similarity (rotation, shift, scale) that best explains the image-plane
  (x, y) motion of the skull points (SKULL_INTERIOR) is removed from every point.

  The expression basis was learned from tracked footage, where the tracker's rigid fit (in 3D,
  with the mesh network's noisy depth) leaves a little apparent head motion in the expression
  residuals: rendered as learned, a smile nods the head by a fraction of a degree. With this,
  expression leaves the skull where the pose puts it (`--head-motion 0` is still), and the
  lips and jaw move as before up to a fraction of a pixel."""
  ids = list(SKULL_INTERIOR)
  q = np.einsum("tij,nj->tni", rotation, base - base[ids].mean(0))        # [T, N, 3] view frame
  v = np.einsum("tij,tnj->tni", rotation, disp)
  # linearised similarity fields at the skull points, image plane: shift (x, y), rotation
  # w x q (3), scale q; a shift in depth shows nothing there
  qs = q[:, ids]
  eye = np.broadcast_to(np.eye(3)[:, :2], qs.shape[:2] + (3, 2))
  rot = np.stack([np.cross(np.eye(3)[a], qs) for a in range(3)], -1)        # [T, M, 3, 3]
  fields = np.concatenate([eye, rot, qs[..., None]], -1)[:, :, :2]           # [T, M, 2, 6]
  a = fields.reshape(len(q), -1, 6)
  coef = np.einsum("tkm,tm->tk", np.linalg.pinv(a), v[:, ids, :2].reshape(len(q), -1))
  shift = np.concatenate([coef[:, :2], np.zeros((len(q), 1))], -1)
  v = v - (shift[:, None] + np.cross(coef[:, None, 2:5], q) + coef[:, None, 5:] * q)
  return np.einsum("tji,tnj->tni", rotation, v)


# Each upper-lid contour point and the mesh point above it (the top of the lash band): when a
# lid closes, the band follows it by LASH_FOLLOW of its motion (decode(render=True)), so the
# lashes come down with the lid edge and the stretch goes to the smooth skin under the brow.
LASH_BAND = ((246, 247), (161, 30), (160, 29), (159, 27), (158, 28), (157, 56), (173, 190),
             (466, 467), (388, 260), (387, 259), (386, 257), (385, 258), (384, 286),
             (398, 414))
LASH_FOLLOW = 0.6
# Share of the iris' vertical shift (gaze) that the eye opening (lids and lash band) follows
# when rendering: a downward look lowers the upper lid with the iris, as real lids do.
LID_FOLLOW_GAZE = 0.6


# Drawing gives back what is lost between the tracked opening and the rendered one, measured on
# the train split (the test split only reports):
# - the codes keep 0.914 of each inner-lip opening the tracker measures (the MAP fit shrinks the
#   expression towards the mean; slope of the decoded opening on the measured one over the train
#   split's 243 moving clips; 0.92 on the test split's);
# - the renderer realises 0.89 of the opening of the mesh it is asked to draw (the tracker's
#   opening on the output against the driving mesh's, `vasa-jax eval reenact --dataset
#   motion_latents/geo:train --max-clips 16`: the warp and the compositor keep some lip where
#   the mesh has cavity).
# The change of the opening from the portrait's own is scaled up by the inverse of both.
CODES_OPENING = 0.914
RENDER_OPENING = 0.89
OPENING_GAIN = 1.0 / (CODES_OPENING * RENDER_OPENING)
SHUT_MEASURED = 0.3    # lid openness / the face's open one at which the mesh tracker reads a
                       # blink's shut lid (median of the footage's blink minima: 0.35)


def shut_lids(lids: np.ndarray, own: np.ndarray) -> np.ndarray:
  """Lid openness [T, 2] as it is drawn: the measured openness, except that below 0.6 of the
  face's own (`own` [2]) it closes faster, to shut at SHUT_MEASURED of it. The mesh tracker
  never sees a lid shut (it reads a third open at a blink's deepest), so codes learned from it
  ask for 0.3 where the eye is shut. A cubic joins the two smoothly (value and slope)."""
  own = np.maximum(np.asarray(own, np.float64), 1e-3)
  r = np.asarray(lids, np.float64) / own
  a, b = SHUT_MEASURED, 0.6
  x = np.clip((r - a) / (b - a), 0.0, 1.0)
  # Hermite on [a, b]: f(a) = 0, f'(a) = 0, f(b) = b, f'(b) = 1 (in r units)
  h = b - a
  f = b * (3 * x ** 2 - 2 * x ** 3) + h * (x ** 3 - x ** 2)
  return np.where(r >= b, r, f) * own


def decode(source: Codes, pose, dyn, basis: FaceBasis, crop: float, index: int = 0, *,
           render: bool = False) -> np.ndarray:
  """Landmarks [T, N, 3] (pixels of the crop) of the portrait `source` (its frame `index`)
  performing pose [T, 6] and dyn [T, K + 4]: `pose_mesh` of `decode_canonical`."""
  c = decode_canonical(source, pose, dyn, basis, index, render=render)
  return pose_mesh(c, pose, crop, basis)


def pose_mesh(canonical: np.ndarray, pose, crop: float, basis: FaceBasis) -> np.ndarray:
  """Canonical meshes [T, N, 3] (template units) moved rigidly to pose [T, 6]: pixels of a
  crop of side `crop` (float32). The same map as models/warp.py's canonical_to_source on
  volume points p = 2 s_ref c, in normalised crop units."""
  pose = np.atleast_2d(np.asarray(pose, np.float64))
  s, r, t = _similarity_from_pose(pose, crop, basis)
  c = np.asarray(canonical, np.float64)
  return (s[:, None, None] * np.einsum("bij,bnj->bni", r, c) + t[:, None]).astype(np.float32)


def decode_canonical(source: Codes, pose, dyn, basis: FaceBasis, index: int = 0, *,
                     render: bool = False) -> np.ndarray:
  """The mesh of `decode` before its rigid move: [T, N, 3] in template units (float64).

  The portrait's own measured canonical mesh is the base: with the portrait's own codes the
  result is its own mesh (up to the rigid fit's residual). Expression, lids and gaze add their
  change relative to the portrait's codes (expression through `skull_still`, so that it moves
  no skull point the way a head motion would; `pose` gives the head rotation it works
  against); `pose_mesh` then moves the mesh rigidly to `pose`. The irises move with their eye under expression and look where the gaze codes say.
  render=True (drawing, not measuring): the opening the codes and the renderer lose is given
  back (OPENING_GAIN), a lid the tracker would read a third open is drawn shut (`shut_lids`), the
  points above the upper lids follow the lids (LASH_BAND), and the eye opening follows the
  iris' vertical shift (LID_FOLLOW_GAZE)."""
  pose = np.atleast_2d(np.asarray(pose, np.float64))
  dyn = np.atleast_2d(np.asarray(dyn, np.float64))
  k = basis.exp_dim
  base = source.canonical[index].astype(np.float64)
  d0 = source.dyn[index].astype(np.float64)
  if render:         # the codes and the renderer lose a share of each opening: give it back
    dyn = open_mouth(dyn, d0, float(inner_gap(base)), basis, OPENING_GAIN,
                     about=float(inner_gap(base)))
  dd = dyn - d0[None]
  r = angles_to_rotation(pose[:, 0], pose[:, 1], pose[:, 2])
  n = max(len(pose), len(dyn))
  expr = np.einsum("tk,knd->tnd", dd[:, :k], basis.exp_basis)
  expr = np.broadcast_to(expr, (n,) + base.shape).copy()
  # The irises move with their eye under expression; where they look is the gaze codes' (the
  # basis, fitted on residuals that still held the footage's gaze, would move them too).
  for sl, ring in ((IRIS_A, EYE_REGION_A), (IRIS_B, EYE_REGION_B)):
    expr[:, sl] = expr[:, list(ring)].mean(1, keepdims=True)
  c = base[None] + skull_still(expr, base, np.broadcast_to(r, (n, 3, 3)))
  dlid = dd[:, k:k + 2]
  if render:        # the tracker's "shut" is a third open: draw it shut (`shut_lids`)
    dlid = shut_lids(dyn[:, k:k + 2], d0[k:k + 2]) - d0[None, k:k + 2]
  lid = np.einsum("tk,knd->tnd", dlid, basis.lid_basis)
  c = c + lid
  if render:
    up, band = (list(x) for x in zip(*LASH_BAND))
    c[:, band] += LASH_FOLLOW * lid[:, up]
  # Gaze: irises move within the eye by the change of sin(angle) x eyeball radius.
  _, _, widths = _eye_measures(base[None])
  g0 = d0[k + 2:k + 4]
  shift = np.sin(np.clip(dyn[:, k + 2:k + 4], -1.2, 1.2)) - np.sin(g0)[None]
  for e, sl in enumerate((IRIS_A, IRIS_B)):
    move = shift * EYEBALL_RATIO * widths[0, e]
    c[:, sl, :2] += move[:, None, :]
    if render:        # the eye opening follows the eye's vertical turn (the lids ride on it)
      rows = list(EYE_REGION_A if e == 0 else EYE_REGION_B)
      rows += [b for u, b in LASH_BAND if u in rows]
      c[:, rows, 1] += LID_FOLLOW_GAZE * move[:, None, 1]
  return c


def inner_gap(canonical: np.ndarray) -> np.ndarray:
  """Inner-lip gap (points 13 / 14, template units) of canonical meshes [..., N, 3]."""
  c = np.asarray(canonical)
  return c[..., 14, 1] - c[..., 13, 1]


def open_mouth(dyn: np.ndarray, dyn0: np.ndarray, base_gap: float, basis: FaceBasis,
               gain: float, about: float = 0.0) -> np.ndarray:
  """dyn [T, K + 4] with each frame's inner-lip opening scaled by `gain` (about closed lips):
  the expression codes move along the way the face moves when the mouth opens (the jaw, the
  lips, the chin together): u = S a / (a^T S a), with a the opening each code makes and S the
  codes' prior variances, which is the regression of the codes on the opening over the data
  the basis was fitted on (its components are uncorrelated there). base_gap: the portrait's own
  canonical inner-lip gap, whose codes are dyn0. about: the gap that stays (0: closed lips; the
  portrait's own base_gap keeps its own motion unchanged), never closing past closed lips."""
  k = basis.exp_dim
  d = np.array(dyn, np.float64, copy=True)
  a = (basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1]).astype(np.float64)
  var = basis.exp_var.astype(np.float64)
  u = var * a / max(float(a @ (var * a)), 1e-12)
  gap = float(base_gap) + (d[:, :k] - np.asarray(dyn0, np.float64)[:k]) @ a
  new = np.where(gap > 0, np.maximum(float(about) + float(gain) * (gap - float(about)), 0.0),
                 gap)
  d[:, :k] += (new - gap)[:, None] * u
  return d.astype(np.asarray(dyn).dtype)


# Upper / lower lid points facing each other along each eye (corner to corner, corners
# excluded), in the order of the iris model's contour.
LID_ROWS_A = ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155))
LID_ROWS_B = ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))
UPPER_SHARE = 0.8     # of a change in lid gap, the upper lid moves this share (blinks)


def analytic_lid_basis(template: np.ndarray) -> np.ndarray:
  """[2, N, 3] lid displacement per unit of openness (gap / eye width) for each eye: the upper
  lid moves UPPER_SHARE of the gap change, the lower lid the rest, with the template's gap
  profile along the eye, scaled so that `_eye_measures` of the result changes by exactly the
  openness added (decoding a lid code gives that lid opening)."""
  n = template.shape[0]
  out = np.zeros((2, n, 3))
  for e, (rows, pairs, corners) in enumerate(((LID_ROWS_A, LID_PAIRS_A, CORNERS_A),
                                              (LID_ROWS_B, LID_PAIRS_B, CORNERS_B))):
    w = float(np.linalg.norm(template[corners[1], :2] - template[corners[0], :2]))
    gaps = {u: max(float(template[lo, 1] - template[u, 1]), 1e-3) for u, lo in rows}
    mid = np.mean([gaps[u] for u, _ in pairs])
    for u, lo in rows:
      prof = gaps[u] / mid
      out[e, u, 1] = -UPPER_SHARE * w * prof
      out[e, lo, 1] = (1.0 - UPPER_SHARE) * w * prof
  return out


def transfer(portrait: np.ndarray, driver: np.ndarray, driver_ref: np.ndarray, exp_dim: int,
             *, lid_gain_max: float = 1.6) -> np.ndarray:
  """Relative motion transfer (video-driven reenactment): the portrait's motion [6 + K + 4]
  changed by what the driver did since its reference frame (driver [T, D] vs driver_ref [D]):

    rotation   R_out = (R_t R_ref^T) R_portrait          (the driver's head turn, applied)
    tx, ty     portrait + driver change;   tz  portrait x driver ratio (closer / further)
    expression portrait + driver change;   gaze portrait + driver change
    lids       portrait x driver ratio (a blink closes the portrait's eyes whatever their size)
  """
  driver = np.atleast_2d(np.asarray(driver, np.float64))
  ref = np.asarray(driver_ref, np.float64)
  p = np.asarray(portrait, np.float64)
  out = np.repeat(p[None], len(driver), axis=0)
  r_rel = angles_to_rotation(driver[:, 0], driver[:, 1], driver[:, 2]) @ np.swapaxes(
      angles_to_rotation(ref[0], ref[1], ref[2]), -1, -2)
  out[:, :3] = rotation_to_angles(r_rel @ angles_to_rotation(p[0], p[1], p[2]))
  out[:, 3:5] = p[3:5] + driver[:, 3:5] - ref[3:5]
  out[:, 5] = p[5] * driver[:, 5] / max(ref[5], 1e-6)
  k = 6 + exp_dim
  out[:, 6:k] = p[6:k] + driver[:, 6:k] - ref[6:k]
  ratio = np.clip(driver[:, k:k + 2] / np.maximum(ref[k:k + 2], 1e-3), 0.0, lid_gain_max)
  out[:, k:k + 2] = p[k:k + 2] * ratio
  out[:, k + 2:k + 4] = p[k + 2:k + 4] + driver[:, k + 2:k + 4] - ref[k + 2:k + 4]
  return out.astype(np.float32)


# ----------------------------------------------------------------------------- fitting

def _mirror_map(t: np.ndarray) -> np.ndarray:
  """For a roughly symmetric template with the symmetry plane x = 0: each point's mirror."""
  from scipy.spatial import cKDTree
  m = t.copy()
  m[:, 0] = -m[:, 0]
  _, idx = cKDTree(t).query(m)
  return idx.astype(np.int32)


def _symmetric_frame(t: np.ndarray):
  """Rotation + centre that put a mesh's symmetry plane at x = 0 (x to the subject's left =
  image right when frontal), with the forehead (10) to chin (152) line along +y."""
  right = np.mean([t[b] - t[a] for a, b in SEED_PAIRS], axis=0)
  x = right / np.linalg.norm(right)
  down = t[152] - t[10]
  y = down - x * (down @ x)
  y /= np.linalg.norm(y)
  z = np.cross(x, y)
  rot = np.stack([x, y, z])            # rows: new axes
  centre = np.mean(t[list(RIGID)], axis=0)
  return rot, centre


def _template(meshes: np.ndarray, iters: int = 4):
  """Generalised Procrustes mean of meshes [M,N,3] -> symmetric template [N,3] (eye corners
  1 apart) and the mirror map."""
  w = _rigid_weights(meshes.shape[1])
  t = meshes[0].astype(np.float64)
  for _ in range(iters):
    rot, centre = _symmetric_frame(t)
    t = (t - centre) @ rot.T
    t /= np.linalg.norm(t[263] - t[33])
    s, r, tr = fit_similarity(t, meshes, w)
    c = np.einsum("bji,bnj->bni", r, meshes - tr[:, None]) / s[:, None, None]
    t = np.median(c, axis=0)
  rot, centre = _symmetric_frame(t)
  t = (t - centre) @ rot.T
  mirror = _mirror_map(t / np.linalg.norm(t[263] - t[33]))
  for a, b in SEED_PAIRS:           # the seed pairs are known: enforce them
    mirror[a], mirror[b] = b, a
  for sl_a, sl_b in ((IRIS_A, IRIS_B),):
    for i, j in zip(range(sl_a.start, sl_a.stop), range(sl_b.start, sl_b.stop)):
      mirror[i], mirror[j] = j, i
  mt = t[mirror].copy()
  mt[:, 0] = -mt[:, 0]
  t = (t + mt) / 2
  t -= np.mean(t[list(RIGID)], axis=0)
  t /= np.linalg.norm(t[263] - t[33])
  return t, mirror


def _pca(x: np.ndarray, k: int, weights: np.ndarray | None = None):
  """Top-k principal directions (rows, orthonormal) and variances of rows of x [M, D]."""
  if weights is not None:
    x = x * np.sqrt(weights / weights.mean())[:, None]
  x = x - x.mean(0)
  _, sv, vt = np.linalg.svd(x, full_matrices=False)
  var = sv ** 2 / max(len(x) - 1, 1)
  return vt[:k], var[:k], var


def fit_basis(clips: Sequence[dict], *, exp_dim: int = 40, id_dim: int = 24,
              frame_stride: int = 2, template_frames: int = 4000, crop_key: str = "crop",
              seed: int = 0) -> FaceBasis:
  """Learns a FaceBasis from tracked clips.

  clips: dicts with "points" [T, N, 3] (pixels of a crop of side clip[crop_key]), "valid" [T]
  bool, "identity" (str) and optional "weight" (relative weight of the clip's frames in the
  expression PCA, e.g. lower for synthetic clips) and "real" (bool: template and identity
  statistics use real faces only, default True)."""
  rng = np.random.default_rng(seed)
  kept = []
  for c in clips:
    v = np.asarray(c["valid"], bool)
    idx = np.nonzero(v)[0][::frame_stride]
    if len(idx) >= 4:
      kept.append((c, idx))
  if not kept:
    raise InputError("no clip has enough tracked frames to fit a face basis")
  real = [(c, i) for c, i in kept if c.get("real", True)]
  if len({c["identity"] for c, _ in real}) < 2:
    raise InputError("fitting a face basis needs real clips of at least 2 identities")
  # 1. template (real faces)
  pool = np.concatenate([np.asarray(c["points"], np.float64)[i] for c, i in real])
  if len(pool) > template_frames:
    pool = pool[rng.choice(len(pool), template_frames, replace=False)]
  template, mirror = _template(pool)
  # 2. canonical meshes, lids, per-clip means
  canon, lids, pose_ang, clip_of, weights = [], [], [], [], []
  means, idents, is_real = [], [], []
  for k, (c, idx) in enumerate(kept):
    cc, s, r, _ = _canonicalize(np.asarray(c["points"], np.float64)[idx], template)
    lid, _, _ = _eye_measures(cc)
    ang = rotation_to_angles(r)
    canon.append(cc)
    lids.append(lid)
    pose_ang.append(ang)
    clip_of.append(np.full(len(idx), k))
    weights.append(np.full(len(idx), float(c.get("weight", 1.0)) / len(idx) ** 0.5))
    means.append((cc.mean(0), lid.mean(0), ang.mean(0)))
    idents.append(c["identity"])
    is_real.append(bool(c.get("real", True)))
  canon = np.concatenate(canon)
  lids = np.concatenate(lids)
  pose_ang = np.concatenate(pose_ang)
  clip_of = np.concatenate(clip_of)
  weights = np.concatenate(weights)
  n = canon.shape[1]
  mc = np.stack([m[0] for m in means])[clip_of]
  ml = np.stack([m[1] for m in means])[clip_of]
  ma = np.stack([m[2] for m in means])[clip_of]
  resid = (canon - mc).reshape(len(canon), -1)
  dl = lids - ml
  da = pose_ang - ma
  # 3. eyelid displacement (eye-region points only) and pose-correlated artefacts, regressed
  #    jointly on within-clip lid and pose deviations.
  x = np.concatenate([dl, da, da ** 2], 1)
  coef, *_ = np.linalg.lstsq(x * weights[:, None], resid * weights[:, None], rcond=None)
  lid_basis = analytic_lid_basis(template)
  # Remove the pose artefacts and the lids' own motion; what the lids seem to move elsewhere
  # (brows twitch with blinks) stays for the expression basis.
  resid = resid - x[:, 2:] @ coef[2:] - dl @ lid_basis.reshape(2, -1)
  # irises are gaze, not expression
  r3 = resid.reshape(len(resid), n, 3)
  r3[:, IRIS_A] = 0.0
  r3[:, IRIS_B] = 0.0
  resid = r3.reshape(len(resid), -1)
  # 4. expression PCA (all clips, weighted)
  exp_basis, exp_var, all_var = _pca(resid, exp_dim, weights)
  explained = float(exp_var.sum() / max(all_var.sum(), 1e-12))
  # 5. identity PCA over per-identity mean shapes (real clips), expression mean removed
  by_id: dict[str, list] = {}
  for k, (c, _) in enumerate(kept):
    if is_real[k]:
      mean = means[k][0].reshape(-1) - template.reshape(-1)
      mean = mean - (mean @ exp_basis.T) @ exp_basis
      by_id.setdefault(idents[k], []).append(mean)
  id_means = np.stack([np.mean(v, 0) for v in by_id.values()])
  kid = min(id_dim, len(id_means) - 1)
  id_basis, id_var, _ = _pca(id_means, kid)
  # 6. s_ref: median face width in the crop (real clips) = the reference framing
  s_all = []
  for c, idx in real:
    s, _, _ = fit_similarity(template, np.asarray(c["points"], np.float64)[idx],
                             _rigid_weights(n))
    s_all.append(s / float(c[crop_key]))
  s_ref = float(np.median(np.concatenate(s_all)))
  meta = {"clips": len(kept), "real_clips": len(real), "identities": len(by_id),
          "frames": int(len(canon)), "exp_dim": int(exp_dim), "id_dim": int(kid),
          "exp_variance_explained": round(explained, 4),
          "exp_variance": [float(v) for v in exp_var[:8]]}
  return FaceBasis(template=template.astype(np.float32),
                   id_basis=id_basis.reshape(kid, n, 3).astype(np.float32),
                   id_var=id_var.astype(np.float32),
                   exp_basis=exp_basis.reshape(exp_dim, n, 3).astype(np.float32),
                   exp_var=exp_var.astype(np.float32),
                   lid_basis=lid_basis.astype(np.float32), mirror=mirror, s_ref=s_ref, meta=meta)

"""Explicit mouth articulation on rendered frames, driven by the named motion dims.

Why this exists. VASA-1's decoder learns mouth motion from data: the warping flow moves the
lips and the 2D generator paints the mouth interior. The bundled demo decoder was trained for
about an hour on a 2-core CPU and did not get there: its flow generators are still close to
their zero initialisation, so it renders head pose but a static mouth. The motion generator
(stage 2) does produce mouth motion from audio, in the named dims z_dyn[0:4] = mouth open,
wide, round, blink (see `vasa_jax.data.motion_latents.named_dyn` and losses.dyn_label_loss).
This module turns those numbers into pixels with a small parametric jaw / lip model on the
output frame. A bundle whose decoder renders the mouth itself leaves it off (bundle.json
"mouth_rig": null); the Animator applies it only when the bundle asks for it.

Geometry, in a mouth frame (u along the lips, v down, pixels of the output frame):
  * the anchor (mouth centre, half-width `hw`, roll) comes from the face detector's keypoints
    on the source crop and follows the head: `track` maps it through the stage-1 rigid pose
    model (vasa_jax.models.warp) from the source pose to each frame's driving pose;
  * the gap between the lips opens to `gap = gain * open * hw` at the centre and narrows to
    nothing at the corners (a lens profile); the lower lip, jaw and chin move down with it
    (broadening with distance from the lips, fading out below the chin), the upper lip lifts
    by a small fraction; mouth width scales with `wide` and `round`;
  * the warp is a backward map (`cv2.remap`), so it is exact and hole-free outside the gap;
    inside the gap the mouth interior is painted: a dark cavity in the lips' hue, upper teeth
    when the gap is large enough, a hint of tongue, with anti-aliased edges.
`open` at or below the rest value leaves the frame untouched (bit-exact).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vasa_jax.models import warp as warp_lib

__all__ = ["Anchor", "RigConfig", "anchor_from_keypoints", "default_anchor", "track",
           "face_homographies", "refine_anchor", "articulate", "NAMED_SLICE"]

NAMED_SLICE = slice(6, 10)      # motion[:, 6:10] = z_dyn[0:4] = open, wide, round, blink


@dataclasses.dataclass(frozen=True)
class RigConfig:
  """Stored in bundle.json under "mouth_rig" (all optional there)."""
  gain: float = 1.1           # gap height at the lips' centre, in mouth half-widths, at open 1
  open_rest: float = 0.08     # `open` values at or below this leave the mouth closed
  wide_rest: float = 0.3
  round_rest: float = 0.2
  width_gain: float = 0.25    # mouth width change per unit of (wide - rest) ...
  round_gain: float = 0.3     # ... and per unit of (round - rest), narrowing
  lift: float = 0.25          # upper lip lift, as a fraction of the gap
  depth: float = -0.8         # mouth depth in the stage-1 volume (normalised units, - = front)
  half_width_per_eye: float = 0.4   # mouth half-width / eye distance, from detector keypoints

  @classmethod
  def from_dict(cls, d) -> "RigConfig":
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"unknown mouth_rig settings {unknown}")
    return cls(**{k: float(v) for k, v in d.items()})


@dataclasses.dataclass(frozen=True)
class Anchor:
  """The mouth on the model-size source crop: centre (x, y) px, half-width px, roll (rad)."""
  x: float
  y: float
  half_width: float
  roll: float


def anchor_from_keypoints(keypoints, box, size: int, cfg: RigConfig = RigConfig()) -> Anchor:
  """BlazeFace keypoints [6, 2] (right eye, left eye, nose, mouth, ...) in photo pixels and
  the crop box (x0, y0, side) -> the mouth anchor on the size x size crop."""
  kp = np.asarray(keypoints, np.float64)
  x0, y0, side = box
  k = (kp - np.array([x0, y0])) * (size / float(side))
  eye_r, eye_l, mouth = k[0], k[1], k[3]
  d = eye_l - eye_r
  roll = math.atan2(d[1], d[0])
  return Anchor(float(mouth[0]), float(mouth[1]),
                float(cfg.half_width_per_eye * np.hypot(*d)), float(roll))


def refine_anchor(crop: np.ndarray, anchor: Anchor, search: float = 0.6) -> Anchor:
  """Moves the anchor across the lips onto the line where they meet.

  Detector mouth keypoints are rough (a few pixels above or below the lips' contact line on
  paintings and statues), and the gap must open exactly there. The contact line is the
  darkest line across the mouth: the mean luminance of the lips' middle (|u| < 0.45 of the
  half-width) is profiled for offsets within +-`search` half-widths along v, lightly smoothed,
  with a small pull towards the detector's estimate; the anchor moves to its minimum.
  """
  import cv2
  hw = anchor.half_width
  if hw < 2.0:
    return anchor
  grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY).astype(np.float32)
  co, si = math.cos(anchor.roll), math.sin(anchor.roll)
  d = np.arange(-search * hw, search * hw + 1e-6, 0.5)
  u = np.linspace(-0.45 * hw, 0.45 * hw, 15)
  dd, uu = np.meshgrid(d, u, indexing="ij")
  x = (anchor.x + co * uu - si * dd).astype(np.float32)
  y = (anchor.y + si * uu + co * dd).astype(np.float32)
  prof = cv2.remap(grey, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).mean(1)
  prof = np.convolve(np.pad(prof, 2, mode="edge"), np.ones(5) / 5.0, mode="valid")
  span = float(prof.max() - prof.min())
  if span < 4.0:                  # no visible lip line (flat, dark or blurred): keep it
    return anchor
  cost = prof + 0.25 * span * np.abs(d) / (search * hw)
  off = float(d[int(np.argmin(cost))])
  return Anchor(anchor.x - si * off, anchor.y + co * off, hw, anchor.roll)


def default_anchor(size: int) -> Anchor:
  """Where the mouth sits in a training-style aligned crop (vasa_jax/data/video.py's crop
  around a detector box): used when the detector finds no face on a given aligned crop."""
  return Anchor(0.5 * size, 0.655 * size, 0.095 * size, 0.0)


def _to_volume(px, size):
  return (2.0 * np.asarray(px, np.float64) + 1.0) / size - 1.0


def _to_pixels(q, size):
  return ((np.asarray(q, np.float64) + 1.0) * size - 1.0) / 2.0


def _rigid(points_px, source_pose, poses, size, depth, ref_distance, fov_deg):
  """Crop pixels [N, 2] at volume depth `depth` -> [T, N, 2] crop pixels under each pose."""
  poses = np.asarray(poses, np.float64).reshape(-1, 6)
  kw = dict(ref_distance=ref_distance, fov_deg=fov_deg)
  r_s, s_s, t_s = (np.asarray(a, np.float64) for a in
                   warp_lib.pose_scale_shift(np.asarray(source_pose, np.float32)[None], **kw))
  r_d, s_d, t_d = (np.asarray(a, np.float64) for a in
                   warp_lib.pose_scale_shift(poses.astype(np.float32), **kw))
  pts = np.asarray(points_px, np.float64)
  q = np.concatenate([_to_volume(pts, size), np.full((len(pts), 1), depth)], axis=1)
  p = ((q - t_s[0]) / s_s[0]) @ r_s[0]                 # R_s^T (q - t_s) / s_s, row vectors
  qd = s_d[:, None, None] * np.einsum("tij,nj->tni", r_d, p) + t_d[:, None, :]
  return _to_pixels(qd[..., :2], size)


def face_homographies(source_pose, poses, size: int, cfg: RigConfig = RigConfig(), *,
                      ref_distance: float = warp_lib.REF_DISTANCE,
                      fov_deg: float = warp_lib.FOV_DEG) -> np.ndarray:
  """[T, 3, 3] homographies (crop pixels -> crop pixels) that move the source crop's face
  plane (volume depth cfg.depth, facing the camera in the source pose) with the rigid pose
  change from source_pose [6] to each of poses [T, 6]: the "warp" composite's head motion."""
  import cv2
  c = (size - 1) / 2.0
  half = 0.3 * size
  src = np.array([[c - half, c - half], [c + half, c - half], [c + half, c + half],
                  [c - half, c + half]])
  dst = _rigid(src, source_pose, poses, size, cfg.depth, ref_distance, fov_deg)
  return np.stack([cv2.getPerspectiveTransform(src.astype(np.float32), d.astype(np.float32))
                   for d in dst]).astype(np.float64)


def track(anchor: Anchor, source_pose, poses, size: int, cfg: RigConfig = RigConfig(), *,
          ref_distance: float = warp_lib.REF_DISTANCE, fov_deg: float = warp_lib.FOV_DEG):
  """Mouth centre / half-width / roll on the crop for each driving pose.

  source_pose [6], poses [T, 6] (z_pose: yaw, pitch, roll rad; tx, ty, tz m). The anchor and a
  point one half-width along the lips are lifted to the volume at depth cfg.depth, taken to
  the canonical frame with the source pose and out again with each driving pose (the rigid
  part of the stage-1 warp). Returns float64 arrays cx, cy, half_width, roll of shape [T].
  """
  c, s = math.cos(anchor.roll), math.sin(anchor.roll)
  pts_px = np.array([[anchor.x, anchor.y],
                     [anchor.x + c * anchor.half_width, anchor.y + s * anchor.half_width]])
  px = _rigid(pts_px, source_pose, poses, size, cfg.depth, ref_distance, fov_deg)
  d = px[:, 1] - px[:, 0]
  return px[:, 0, 0], px[:, 0, 1], np.hypot(d[:, 0], d[:, 1]), np.arctan2(d[:, 1], d[:, 0])


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def articulate(frame: np.ndarray, cx: float, cy: float, half_width: float, roll: float,
               named, cfg: RigConfig = RigConfig()) -> np.ndarray:
  """One frame (uint8 [H, W, 3]) with the mouth opened by named = (open, wide, round, ...).

  cx, cy, half_width, roll: the mouth on this frame (pixels, radians). Returns a new array
  (or `frame` itself when nothing changes).
  """
  import cv2
  named = np.asarray(named, np.float64).reshape(-1)
  hw = float(half_width)
  amount = max(0.0, float(named[0]) - cfg.open_rest) / max(1.0 - cfg.open_rest, 1e-6)
  gap = cfg.gain * min(amount, 1.0) * hw
  hscale = 1.0
  if named.size >= 3:
    hscale = 1.0 + cfg.width_gain * (named[1] - cfg.wide_rest) \
        - cfg.round_gain * (named[2] - cfg.round_rest)
    hscale = float(np.clip(hscale, 0.8, 1.2))
  if (gap < 0.25 and abs(hscale - 1.0) < 0.01) or hw < 2.0:
    return frame
  h, w = frame.shape[:2]
  rad = 3.6 * hw + gap
  xa, xb = int(max(0, math.floor(cx - rad))), int(min(w, math.ceil(cx + rad) + 1))
  ya, yb = int(max(0, math.floor(cy - rad))), int(min(h, math.ceil(cy + rad) + 1))
  if xb - xa < 4 or yb - ya < 4:
    return frame
  gx, gy = np.meshgrid(np.arange(xa, xb, dtype=np.float64), np.arange(ya, yb, dtype=np.float64))
  co, si = math.cos(roll), math.sin(roll)
  dx, dy = gx - cx, gy - cy
  u = co * dx + si * dy                  # along the lips
  v = -si * dx + co * dy                 # down, across the lips

  lens = np.clip(1.0 - (u / (1.05 * hw)) ** 2, 0.0, None) ** 0.8   # gap profile along the lips
  jaw = np.exp(-(u / (1.5 * hw)) ** 2)                               # the jaw moves broadly
  top, bot = -cfg.lift * gap * lens, gap * lens                      # gap edges in the output

  def down(vs):                          # forward displacement of source points below the lips
    blend = 1.0 - np.exp(-vs / (0.35 * hw))
    chin = 1.0 - _smoothstep((vs - 2.2 * hw) / (1.1 * hw))
    return gap * (lens * (1.0 - blend) + jaw * blend) * chin

  def up(vs):                            # ... and above them (the upper lip lifts a little)
    return -cfg.lift * gap * lens * np.exp(-(vs / (0.5 * hw)) ** 2)

  lower, upper = v >= bot, v <= top
  vl = np.maximum(v - bot, 0.0)
  vu = np.minimum(v - top, 0.0)
  for _ in range(6):                     # fixed point of vs + D(vs) = v on each side
    vl = np.maximum(v - down(vl), 0.0)
    vu = np.minimum(v - up(vu), 0.0)
  vs = np.where(lower, vl, np.where(upper, vu, 0.0))
  # Width: lips (and a little around them) scale along u about the centre.
  wmask = np.exp(-(vs / (0.9 * hw)) ** 2) * np.exp(-(u / (2.0 * hw)) ** 2)
  us = u / (1.0 + (hscale - 1.0) * wmask)
  sx = (cx + co * us - si * vs).astype(np.float32)
  sy = (cy + si * us + co * vs).astype(np.float32)
  roi = cv2.remap(frame, sx, sy, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
  if gap < 0.25:
    out = frame.copy()
    out[ya:yb, xa:xb] = roi
    return out

  # The mouth interior inside the gap (anti-aliased over ~1 px).
  soft = max(0.04 * hw, 0.6)
  inside = _smoothstep((v - top) / soft + 0.5) * _smoothstep((bot - v) / soft + 0.5) * (lens > 0)
  lip_band = (np.abs(u) < 0.5 * hw) & (np.abs(vs) < 0.25 * hw) & (lower | upper)
  src = roi.reshape(-1, 3)[lip_band.reshape(-1)].astype(np.float64) / 255.0
  lip = src.mean(0) if len(src) else np.array([0.6, 0.35, 0.35])
  lum = float(np.clip(lip.mean() / 0.45, 0.5, 1.4))            # scene brightness at the lips
  height = np.maximum(bot - top, 1e-6)
  t = np.clip((v - top) / height, 0.0, 1.0)                    # 0 upper edge .. 1 lower edge
  shade = 0.35 + 0.65 * (2.0 * np.abs(t - 0.5)) ** 1.5         # darkest in the middle
  cavity = (0.38 * lip[None, None, :] + 0.03) * (0.45 + 0.55 * shade[..., None])
  # upper teeth: a band under the upper lip, narrower than the mouth, when the gap is wide
  teeth_h = np.minimum(0.3 * height, 0.22 * hw)
  teeth_a = _smoothstep((gap / hw - 0.15) / 0.25) * np.clip(1.0 - (u / (0.62 * hw)) ** 4, 0, 1)
  in_teeth = np.clip((top + teeth_h - v) / max(0.08 * hw, 0.8), 0.0, 1.0) * teeth_a
  teeth = np.array([0.86, 0.84, 0.78])[None, None, :] * 0.8 * lum * (
      1.0 - 0.35 * np.clip((v - top) / np.maximum(teeth_h, 1e-6), 0, 1))[..., None]
  color = cavity * (1 - in_teeth[..., None]) + teeth * in_teeth[..., None]
  # tongue: the lower part of a wide gap takes a muted lip hue
  tongue_a = _smoothstep((t - 0.65) / 0.3) * _smoothstep((gap / hw - 0.3) / 0.3) * lens
  color = color * (1 - 0.6 * tongue_a[..., None]) + (0.55 * lip)[None, None, :] * (
      0.6 * tongue_a[..., None])
  a = inside[..., None]
  mixed = roi.astype(np.float64) / 255.0 * (1.0 - a) + np.clip(color, 0, 1) * a
  out = frame.copy()
  out[ya:yb, xa:xb] = np.clip(mixed * 255.0 + 0.5, 0, 255).astype(np.uint8)
  return out

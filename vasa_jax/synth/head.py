"""Procedural 3D head: identity sampling, per-frame controls and the deformable head mesh.

Geometry is built in "anatomical" metres (a real-size adult head, origin midway between the
ears, axes as in docs/conventions.md: x to the subject's left, y down, z from the face to the
back of the head) and scaled by HEAD_SCALE when placed in front of the camera. The scale makes
the fixed 14-degree portrait camera frame a VoxCeleb/HDTF-like crop at tz = 0.65 (face about half
the frame height, hair and shoulders visible). Pose, gaze and shape controls are unaffected.

The skin is one lofted grid (rows of constant height, superellipse cross-sections) with facial
features added as smooth displacements. Eye openings and the mouth opening are carved per frame
by pushing skin vertices behind the eyeballs / into the mouth, so blinks and speech need no
topology changes: the z-buffer cuts the exact opening.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from vasa_jax.constants import EMOTIONS  # noqa: E402

HEAD_SCALE = 0.46          # anatomical metres -> rendered metres (see module docstring)
FOV_Y_DEG = 14.0           # vertical field of view of the pinhole camera
EYE_YAW_LIMIT = math.radians(35.0)
EYE_PITCH_LIMIT = math.radians(30.0)
EYE_RADIUS = 0.012

HAIR_STYLES = ("bald", "buzz", "short", "medium", "long")
BEARDS = ("none", "stubble", "moustache", "full")
BACKGROUNDS = ("gradient", "blobs", "room", "noise", "solid")
CLOTHES = ("crew", "vneck", "collar")


# ----------------------------------------------------------------------------- controls

@dataclasses.dataclass(frozen=True)
class Identity:
  """Everything fixed for one synthetic person. Plain Python/NumPy scalars and tuples only."""
  seed: int = 0
  sex: float = 0.5                 # 0 female-typical .. 1 male-typical proportions
  # face shape (multipliers around 1 or offsets around 0)
  head_w: float = 1.0
  head_h: float = 1.0
  head_d: float = 1.0
  jaw_w: float = 1.0
  chin_len: float = 0.0
  chin_fwd: float = 0.0
  cheek: float = 1.0
  forehead: float = 0.0
  brow_ridge: float = 1.0
  nose_len: float = 1.0
  nose_w: float = 1.0
  nose_bridge: float = 1.0
  nose_tip: float = 1.0
  eye_sep: float = 1.0
  eye_size: float = 1.0
  eye_tilt: float = 0.0
  lip_upper: float = 1.0
  lip_lower: float = 1.0
  mouth_w: float = 1.0
  ear_size: float = 1.0
  ear_out: float = 0.25
  neck_w: float = 1.0
  shoulder_w: float = 1.0
  # appearance
  skin_rgb: tuple = (0.80, 0.62, 0.52)
  skin_var: float = 0.5
  blush: float = 0.4
  skin_spec: float = 0.12
  lip_rgb: tuple = (0.68, 0.38, 0.38)
  hair_style: str = "short"
  hair_rgb: tuple = (0.20, 0.14, 0.10)
  hair_volume: float = 1.0
  hairline: float = 0.0
  brow_rgb: tuple = (0.18, 0.13, 0.10)
  brow_thick: float = 1.0
  brow_arch: float = 1.0
  brow_h: float = 0.0
  iris_rgb: tuple = (0.35, 0.22, 0.12)
  beard: str = "none"
  makeup: float = 0.0
  cloth_rgb: tuple = (0.2, 0.3, 0.5)
  cloth2_rgb: tuple = (0.9, 0.9, 0.9)
  cloth_style: str = "crew"
  cloth_pattern: int = 0
  bg_style: str = "gradient"
  bg_rgb: tuple = ((0.5, 0.55, 0.6), (0.2, 0.25, 0.3), (0.8, 0.7, 0.6))
  light_dir: tuple = (0.4, -0.5, -1.0)      # camera frame, direction *towards* the light
  light_rgb: tuple = (1.0, 0.97, 0.92)
  ambient_rgb: tuple = (0.38, 0.38, 0.40)
  fill: float = 0.25


@dataclasses.dataclass
class FrameParams:
  yaw: float = 0.
  pitch: float = 0.
  roll: float = 0.
  tx: float = 0.
  ty: float = 0.
  tz: float = 0.65
  gaze_theta: float = 0.
  gaze_phi: float = 0.
  mouth_open: float = 0.
  mouth_wide: float = 0.
  mouth_round: float = 0.
  blink: float = 0.
  emotion: int = 0
  emotion_intensity: float = 0.


_SKIN_TONES = np.array([  # light .. dark, display-space RGB
    (0.96, 0.80, 0.71), (0.92, 0.74, 0.63), (0.87, 0.68, 0.56), (0.80, 0.60, 0.47),
    (0.72, 0.52, 0.38), (0.62, 0.43, 0.30), (0.50, 0.34, 0.24), (0.38, 0.25, 0.18),
    (0.28, 0.19, 0.14)])
_HAIR_COLOURS = np.array([
    (0.06, 0.05, 0.05), (0.13, 0.09, 0.07), (0.24, 0.16, 0.10), (0.40, 0.27, 0.16),
    (0.62, 0.47, 0.29), (0.80, 0.66, 0.44), (0.50, 0.22, 0.10), (0.62, 0.60, 0.58),
    (0.85, 0.84, 0.82)])
_IRIS_COLOURS = np.array([
    (0.22, 0.13, 0.07), (0.35, 0.22, 0.11), (0.45, 0.33, 0.17), (0.30, 0.45, 0.62),
    (0.42, 0.55, 0.65), (0.33, 0.45, 0.28), (0.45, 0.45, 0.42)])


def _pick(rng, table, p=None):
  return tuple(float(v) for v in table[rng.choice(len(table), p=p)])


def _jitter(rng, rgb, s):
  return tuple(float(np.clip(c * (1 + rng.normal(0, s)), 0, 1)) for c in rgb)


def _hsv(h, s, v):
  import colorsys
  return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def sample_identity(rng: np.random.Generator) -> Identity:
  """A random person. Only `rng` is consumed, so the same generator state gives the same person."""
  n = lambda s: float(rng.normal(0, s))
  sex = float(rng.random() < 0.5) * 0.8 + 0.1 + n(0.05)
  male = sex > 0.5
  tone_pos = float(rng.random()) * (len(_SKIN_TONES) - 1)
  lo = int(tone_pos)
  hi = min(lo + 1, len(_SKIN_TONES) - 1)
  skin = (1 - (tone_pos - lo)) * _SKIN_TONES[lo] + (tone_pos - lo) * _SKIN_TONES[hi]
  skin = _jitter(rng, skin, 0.04)
  dark = 1.0 - float(np.mean(skin))
  lip = tuple(float(c) for c in np.clip(np.array(skin) * np.array([0.86, 0.62, 0.64]) + n(0.03), 0, 1))
  if not male and rng.random() < 0.35:   # lipstick
    lip = _pick(rng, np.array([(0.62, 0.12, 0.18), (0.72, 0.30, 0.35), (0.55, 0.22, 0.25),
                               (0.80, 0.45, 0.45)]))
  hair_p = np.array([0.25, 0.22, 0.2, 0.12, 0.08, 0.03, 0.04, 0.04, 0.02])
  if dark > 0.45:
    hair_p = np.array([0.6, 0.3, 0.08, 0.02, 0, 0, 0, 0, 0])
  hair = _jitter(rng, _pick(rng, _HAIR_COLOURS, hair_p / hair_p.sum()), 0.08)
  if male:
    style = str(rng.choice(HAIR_STYLES, p=[0.08, 0.17, 0.45, 0.22, 0.08]))
    beard = str(rng.choice(BEARDS, p=[0.6, 0.18, 0.07, 0.15]))
  else:
    style = str(rng.choice(HAIR_STYLES, p=[0.0, 0.03, 0.12, 0.3, 0.55]))
    beard = "none"
  iris_p = np.array([0.35, 0.2, 0.13, 0.12, 0.07, 0.08, 0.05]) if dark < 0.35 else \
      np.array([0.6, 0.3, 0.1, 0, 0, 0, 0])
  brow = tuple(float(c) * 0.8 for c in hair)
  if hair[0] > 0.55:          # blond/grey people: slightly darker brows
    brow = tuple(float(c) * 0.6 for c in hair)
  bg_style = str(rng.choice(BACKGROUNDS, p=[0.25, 0.25, 0.2, 0.15, 0.15]))
  bg = tuple(_hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.95)) for _ in range(3))
  ld = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.1), -1.0])
  temp = rng.uniform(-1, 1)
  light_rgb = tuple(float(v) for v in np.array([1.0 + 0.08 * temp, 0.97, 1.0 - 0.12 * temp])
                    * rng.uniform(0.75, 1.05))
  amb = rng.uniform(0.28, 0.48)
  ambient = tuple(float(v) for v in amb * np.array([1.0 - 0.05 * temp, 1.0, 1.0 + 0.06 * temp]))
  cloth = _hsv(rng.random(), rng.uniform(0.0, 0.8), rng.uniform(0.08, 0.9))
  cloth2 = _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.3, 1.0))
  return Identity(
      seed=int(rng.integers(0, 2**31 - 1)), sex=sex,
      head_w=1 + n(0.035) + (0.02 if male else -0.02), head_h=1 + n(0.035), head_d=1 + n(0.03),
      jaw_w=1 + n(0.12) + (0.12 if male else -0.08), chin_len=n(0.006), chin_fwd=n(0.004),
      cheek=float(np.clip(1 + n(0.3), 0.3, 1.8)), forehead=n(0.004),
      brow_ridge=float(np.clip(1 + n(0.25) + (0.3 if male else -0.2), 0.3, 2.0)),
      nose_len=1 + n(0.08), nose_w=1 + n(0.12) + 0.15 * dark, nose_bridge=float(np.clip(1 + n(0.25), 0.4, 1.7)),
      nose_tip=1 + n(0.12), eye_sep=1 + n(0.04), eye_size=1 + n(0.06) + (0.0 if male else 0.04),
      eye_tilt=n(0.06), lip_upper=float(np.clip(1 + n(0.2) + 0.2 * dark, 0.5, 1.8)),
      lip_lower=float(np.clip(1 + n(0.2) + 0.2 * dark, 0.5, 1.8)), mouth_w=1 + n(0.07),
      ear_size=1 + n(0.08), ear_out=float(np.clip(0.25 + n(0.12), 0.0, 0.6)),
      neck_w=1 + n(0.06) + (0.06 if male else -0.06), shoulder_w=1 + n(0.06) + (0.07 if male else -0.07),
      skin_rgb=skin, skin_var=float(rng.uniform(0.3, 1.0)), blush=float(rng.uniform(0.1, 0.8)),
      skin_spec=float(rng.uniform(0.05, 0.2)), lip_rgb=lip, hair_style=style, hair_rgb=hair,
      hair_volume=float(rng.uniform(0.7, 1.3)), hairline=n(0.006) + (0.004 if male else -0.003),
      brow_rgb=brow, brow_thick=float(np.clip(1 + n(0.25) + (0.25 if male else -0.15), 0.4, 1.8)),
      brow_arch=float(np.clip(1 + n(0.35), 0.2, 2.0)), brow_h=n(0.002),
      iris_rgb=_jitter(rng, _pick(rng, _IRIS_COLOURS, iris_p / iris_p.sum()), 0.08), beard=beard,
      makeup=float(rng.random() * 0.8) if not male else 0.0,
      cloth_rgb=cloth, cloth2_rgb=cloth2, cloth_style=str(rng.choice(CLOTHES)),
      cloth_pattern=int(rng.integers(0, 4)), bg_style=bg_style, bg_rgb=bg,
      light_dir=tuple(float(v) for v in ld), light_rgb=light_rgb, ambient_rgb=ambient,
      fill=float(rng.uniform(0.1, 0.4)))


# ----------------------------------------------------------------------------- rotations, gaze

def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """R = Rz(roll) @ Ry(yaw) @ Rx(pitch) with the signs of docs/conventions.md.

  yaw > 0 turns the face (head -z) towards image right (+x), pitch > 0 points it down (+y),
  roll > 0 is clockwise in the image.
  """
  cy, sy = math.cos(yaw), math.sin(yaw)
  cp, sp = math.cos(pitch), math.sin(pitch)
  cr, sr = math.cos(roll), math.sin(roll)
  ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
  rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return rz @ ry @ rx


def gaze_vector(theta: float, phi: float) -> np.ndarray:
  """Unit looking direction for gaze angles (theta right, phi down; (0, 0) = -z)."""
  return np.array([math.sin(theta) * math.cos(phi), math.sin(phi), -math.cos(theta) * math.cos(phi)])


def gaze_angles(v: np.ndarray) -> tuple[float, float]:
  v = np.asarray(v, np.float64)
  v = v / np.linalg.norm(v)
  return float(math.atan2(v[0], -v[2])), float(math.asin(np.clip(v[1], -1, 1)))


def eye_angles(p: FrameParams) -> tuple[float, float, float, float]:
  """(eye yaw, eye pitch) relative to the head after clamping, and the camera-frame gaze shown."""
  r = rotation_matrix(p.yaw, p.pitch, p.roll)
  gh = r.T @ gaze_vector(p.gaze_theta, p.gaze_phi)
  a, b = gaze_angles(gh)
  a = float(np.clip(a, -EYE_YAW_LIMIT, EYE_YAW_LIMIT))
  b = float(np.clip(b, -EYE_PITCH_LIMIT, EYE_PITCH_LIMIT))
  th, ph = gaze_angles(r @ gaze_vector(a, b))
  return a, b, th, ph


# ----------------------------------------------------------------------------- small helpers

def smoothstep(e0, e1, x):
  t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def gauss2(x, y, cx, cy, sx, sy):
  return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _interp(y, pts):
  """C1-smooth monotone (PCHIP) interpolation through knots, clamped outside: no shading creases."""
  from scipy.interpolate import PchipInterpolator
  xs, vs = zip(*pts)
  y = np.asarray(y, np.float64)
  return PchipInterpolator(np.array(xs), np.array(vs), extrapolate=False)(np.clip(y, xs[0], xs[-1]))


def grid_tris(nr: int, nc: int, offset: int = 0, wrap: bool = False) -> np.ndarray:
  """Two triangles per cell of an nr x nc vertex grid (row-major)."""
  cols = nc if wrap else nc - 1
  r, c = np.meshgrid(np.arange(nr - 1), np.arange(cols), indexing="ij")
  c1 = (c + 1) % nc
  a = r * nc + c
  b = r * nc + c1
  d = (r + 1) * nc + c
  e = (r + 1) * nc + c1
  t = np.concatenate([np.stack([a, d, b], -1).reshape(-1, 3), np.stack([b, d, e], -1).reshape(-1, 3)])
  return (t + offset).astype(np.int32)


def orient_outward(verts: np.ndarray, tris: np.ndarray, centre) -> np.ndarray:
  """Flips all triangles of a part if most of them face towards `centre`."""
  p0, p1, p2 = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
  n = np.cross(p1 - p0, p2 - p0)
  area = np.linalg.norm(n, axis=1)
  s = np.sum(np.sign(np.einsum("ij,ij->i", n, (p0 + p1 + p2) / 3 - np.asarray(centre))) * area)
  return tris if s >= 0 else tris[:, ::-1].copy()


# ----------------------------------------------------------------------------- the head surface

MOUTH_BAND = 7          # rows collapsed onto the lip line at rest; they open into the mouth


@dataclasses.dataclass
class FaceLayout:
  """Identity-dependent landmark positions of the rest face (anatomical metres)."""
  eye_x: float
  eye_y: float
  eye_w: float
  eye_hu: float
  eye_hl: float
  eye_tilt: float
  brow_y: float
  nose_tip_y: float
  nose_base_y: float
  mouth_y: float
  mouth_w: float
  chin_y: float
  hairline_y: float


def face_layout(idn: Identity) -> FaceLayout:
  hh = idn.head_h
  return FaceLayout(
      eye_x=0.031 * idn.eye_sep, eye_y=-0.008 * hh, eye_w=0.0135 * idn.eye_size,
      eye_hu=0.0052 * idn.eye_size, eye_hl=0.0040 * idn.eye_size, eye_tilt=-0.10 + idn.eye_tilt,
      brow_y=(-0.030 + idn.brow_h) * hh, nose_tip_y=0.030 * hh * idn.nose_len,
      nose_base_y=0.037 * hh * idn.nose_len, mouth_y=0.055 * hh + 0.002 * (idn.nose_len - 1),
      mouth_w=0.0245 * idn.mouth_w, chin_y=(0.1 + idn.chin_len) * hh,
      hairline_y=(-0.078 + idn.hairline) * hh)


def head_rows(idn: Identity, lay: FaceLayout):
  """Row heights y and cross-section scales c of the lofted skin grid, plus mouth-band s."""
  hh = idn.head_h
  y0, y_top, y_bot = -0.045 * hh, -0.125 * hh, 0.122 * hh
  # cap: uniform in angle
  th = np.linspace(-math.pi / 2, 0, 26)[:-1]
  cap_y = y0 + (y0 - y_top) * np.sin(th)
  cap_c = np.cos(th)
  # body: density-based sampling (finer around eyes and mouth)
  ys = np.linspace(y0, y_bot, 2000)
  dens = (1 / 0.0023 + 1 / 0.0012 * smoothstep(0.004, 0.0, np.abs(ys - (lay.eye_y - 0.003)) - 0.015)
          + 1 / 0.0011 * smoothstep(0.004, 0.0, np.abs(ys - lay.mouth_y) - 0.016))
  cum = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(ys))])
  nb = int(round(cum[-1]))
  body_y = np.interp(np.linspace(0, cum[-1], nb + 1), cum, ys)
  # mouth band: remove rows close to the lip line, insert the collapsed band
  half = 0.0004
  keep = np.abs(body_y - lay.mouth_y) > 0.0012
  body_y = body_y[keep]
  band = lay.mouth_y + np.linspace(-half, half, MOUTH_BAND)
  body_y = np.sort(np.concatenate([body_y, band]))
  yc = 0.098 * hh
  body_c = np.where(body_y > yc, np.sqrt(np.clip(1 - ((body_y - yc) / (y_bot - yc + 1e-4)) ** 2, 0, 1)), 1.0)
  body_c = np.maximum(body_c, 0.0) ** 0.8
  y = np.concatenate([cap_y, body_y])
  c = np.concatenate([cap_c, body_c])
  s = np.clip((y - (lay.mouth_y - half)) / (2 * half), 0, 1)   # 0 upper lip side .. 1 lower side
  return y, c, s


def u_to_phi(su):
  return math.pi * (0.35 * su + 0.65 * su ** 5)


def base_surface(idn: Identity, lay: FaceLayout, phi, y, c):
  """Lofted base skin (no features). phi, y, c broadcastable arrays -> x, y, z."""
  hw, hd = idn.head_w, idn.head_d
  jw = idn.jaw_w
  rx = hw * _interp(y, [(-0.2, 0.076), (-0.045, 0.077), (0.0, 0.075), (0.03, 0.069), (0.06, 0.062 + 0.004 * jw),
                        (0.085, 0.05 + 0.006 * jw), (0.105, 0.036 + 0.006 * jw), (0.13, 0.03)])
  # narrower lower face towards the front (jaw -> chin)
  rzf = hd * _interp(y, [(-0.2, 0.094 + idn.forehead), (-0.045, 0.095 + idn.forehead), (-0.03, 0.096),
                         (-0.012, 0.093), (0.02, 0.097), (0.055, 0.099), (0.08, 0.097 + idn.chin_fwd),
                         (0.098, 0.094 + idn.chin_fwd), (0.13, 0.07)])
  rzb = hd * _interp(y, [(-0.2, 0.102), (-0.045, 0.102), (0.02, 0.098), (0.07, 0.075), (0.13, 0.06)])
  ex = _interp(y, [(-0.2, 2.4), (0.0, 2.6), (0.04, 2.3), (0.13, 2.0)])
  sphi, cphi = np.sin(phi), np.cos(phi)
  px = 2.0 / ex
  x = rx * c * np.sign(sphi) * np.abs(sphi) ** px
  zf = np.where(cphi >= 0, -rzf, rzb)
  z = zf * c * np.abs(cphi) ** px
  # lower face: the front narrows towards the chin (V-shaped jaw seen from the front)
  lower = smoothstep(0.02, 0.12, y) * np.clip(cphi, 0, 1)
  x = x * (1 - 0.12 * lower * (1.1 - 0.4 * idn.jaw_w))
  return x, np.broadcast_to(y, np.shape(x)).astype(np.float64), z


def feature_dz(idn: Identity, lay: FaceLayout, x, y, front):
  """Static facial relief along -z (negative = towards the camera)."""
  ax = np.abs(x)
  d = np.zeros(np.shape(x))
  # brow ridge, forehead curvature
  d -= 0.0045 * idn.brow_ridge * gauss2(ax, y, 0.026, lay.brow_y + 0.002, 0.02, 0.007)
  d -= 0.002 * idn.brow_ridge * gauss2(ax, y, 0.0, lay.brow_y - 0.002, 0.012, 0.008)
  # eye sockets (the orbit) and the lid bulge are handled by eye_region; general hollow here
  d += 0.0055 * gauss2(ax, y, lay.eye_x + 0.002, lay.eye_y + 0.001, 0.016, 0.011)
  # cheekbones and cheeks
  d -= 0.006 * idn.cheek * gauss2(ax, y, 0.042, lay.eye_y + 0.027, 0.016, 0.013)
  d -= 0.003 * gauss2(ax, y, 0.032, lay.mouth_y - 0.012, 0.014, 0.018)
  # nose: bridge ridge growing to the tip, wings, columella
  ny0, nyt, nyb = lay.eye_y - 0.01, lay.nose_tip_y, lay.nose_base_y
  t = np.clip((y - ny0) / (nyt - ny0), 0, 1.2)
  prof = (0.004 + 0.011 * idn.nose_bridge * t ** 1.2) * np.where(y < nyt, 1.0, 0.0)
  below = np.clip((y - nyt) / (nyb - nyt + 1e-6), 0, 1)
  prof = prof + np.where(y >= nyt, (0.016 + 0.004 * idn.nose_tip) * (1 - below) ** 1.5 + 0.002, 0.0)
  prof = np.where(y < ny0, 0.004 * np.exp(-((y - ny0) / 0.008) ** 2), prof)
  prof = prof * np.where(y > nyb, np.exp(-((y - nyb) / 0.003) ** 2), 1.0)
  nw = (0.0045 + 0.0035 * np.clip((y - ny0) / (nyt - ny0), 0, 1)) * idn.nose_w
  d -= prof * np.exp(-0.5 * (x / nw) ** 2)
  d -= 0.004 * idn.nose_tip * gauss2(ax, y, 0.0, nyt - 0.001, 0.0065 * idn.nose_w, 0.005)
  d -= 0.0055 * gauss2(ax, y, 0.0115 * idn.nose_w, nyb - 0.0035, 0.0042 * idn.nose_w, 0.0045)
  # philtrum / muzzle, lips
  my, mw = lay.mouth_y, lay.mouth_w
  d -= 0.005 * gauss2(ax, y, 0.0, my - 0.004, 0.022, 0.016)
  d -= 0.0035 * idn.lip_upper * gauss2(ax, y, 0.0, my - 0.0035 * idn.lip_upper, mw * 0.75, 0.0035)
  d -= 0.004 * idn.lip_lower * gauss2(ax, y, 0.0, my + 0.0045 * idn.lip_lower, mw * 0.7, 0.0042)
  d += 0.0025 * gauss2(ax, y, 0.0, my + 0.0125 + 0.002 * idn.lip_lower, 0.016, 0.0035)  # mentolabial
  d += 0.0015 * gauss2(ax, y, mw + 0.002, my, 0.003, 0.005)                              # corners
  # chin
  d -= (0.006 + 0.3 * idn.chin_fwd) * gauss2(ax, y, 0.0, lay.chin_y - 0.012, 0.014, 0.011)
  return d * front


def hair_mask(idn: Identity, lay: FaceLayout, x, y, phi):
  """1 where the scalp carries hair (before style-specific density)."""
  aphi = np.abs(phi)
  hl = lay.hairline_y
  yb = _interp(aphi, [(0.0, hl), (0.45, hl + 0.012), (0.75, hl + 0.006), (1.05, -0.030),
                      (1.25, 0.006), (1.42, -0.020), (1.75, -0.020), (2.1, 0.035), (2.6, 0.075),
                      (3.2, 0.075)])
  ph0 = (idn.seed % 997) / 997 * 2 * math.pi
  yb = yb + (0.0025 * np.sin(phi * 9 + ph0) + 0.0015 * np.sin(phi * 23 + 2 * ph0)) * (aphi < 1.3)
  if idn.seed % 3 == 0:   # a side parting / swept fringe: the hairline dips on one side
    yb = yb + 0.008 * np.exp(-((phi - (0.35 if idn.seed % 2 else -0.35)) / 0.3) ** 2)
  return smoothstep(yb + 0.004, yb - 0.004, y), yb


# ----------------------------------------------------------------------------- the whole model

PART_SKIN, PART_HAIR, PART_EYE, PART_TEETH, PART_TONGUE, PART_CLOTH, PART_EAR, PART_CURTAIN, PART_NECK = range(9)
ATLAS_H, ATLAS_W = 768, 512
HEAD_TEX = 512              # head skin texture occupies atlas[0:512, 0:512]
EYE_TEX = (512, 0, 256)     # row, col, size
CLOTH_TEX = (512, 256, 192)
SKINPATCH_TEX = (512, 448, 64)
WHITE_UV = (452.0, 516.0)   # a pure white texel (u, v) in atlas pixels


@dataclasses.dataclass
class HeadModel:
  lay: FaceLayout
  nu: int
  nv: int
  rows_y: np.ndarray
  rows_c: np.ndarray
  rows_s: np.ndarray
  skin: np.ndarray            # [Nh, 3] rest skin (anatomical metres)
  skin_front: np.ndarray
  skin_phi: np.ndarray
  eye_idx: np.ndarray         # indices of skin vertices near the eyes
  eye_info: dict
  mouth_idx: np.ndarray
  mouth_info: dict
  emo_delta: np.ndarray       # [5, len(face_idx), 3]
  face_idx: np.ndarray
  wide_delta: np.ndarray
  round_delta: np.ndarray
  eye_centres: np.ndarray     # [2, 3]
  parts: dict                 # name -> (start, stop) vertex ranges in the concatenated arrays
  verts: np.ndarray           # [N, 3] concatenated rest vertices
  tris: np.ndarray            # [M, 3]
  tri_mat: np.ndarray         # [M]
  uv: np.ndarray              # [N, 2] atlas pixel coordinates
  tint: np.ndarray            # [N, 3] static per-vertex colour multiplier (baked occlusion etc.)
  eye_local: np.ndarray       # [Ne, 3] unit eyeball in its own frame
  jaw_hinge: np.ndarray
  neck_w: np.ndarray          # blend weight head->torso for neck vertices
  hair_uv_rows: tuple


def _sphere(nlat, nlon):
  th = np.linspace(0, math.pi, nlat)
  ph = np.linspace(0, 2 * math.pi, nlon, endpoint=False)
  t, p = np.meshgrid(th, ph, indexing="ij")
  # pole axis is -z (the front), so the dense rings sit around the iris
  v = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), -np.cos(t)], -1).reshape(-1, 3)
  return v, grid_tris(nlat, nlon, wrap=True)


def build_model(idn: Identity) -> HeadModel:
  lay = face_layout(idn)
  rows_y, rows_c, rows_s = head_rows(idn, lay)
  nv = len(rows_y)
  nu = 121
  su = np.linspace(-1, 1, nu)
  phi = u_to_phi(su)
  P, Y = np.meshgrid(phi, rows_y, indexing="xy")
  C = np.broadcast_to(rows_c[:, None], P.shape)
  S = np.broadcast_to(rows_s[:, None], P.shape)
  x, y, z = base_surface(idn, lay, P, Y, C)
  front = np.clip(np.cos(P), 0, 1) ** 0.5 * (C > 0.3)
  z = z + feature_dz(idn, lay, x, y, front)
  skin = np.stack([x, y, z], -1).reshape(-1, 3)
  skin_front = front.reshape(-1)
  skin_phi = P.reshape(-1)
  skin_s = S.reshape(-1)
  tris_skin = orient_outward(skin, grid_tris(nv, nu), (0, 0, 0))
  rows_i, cols_i = np.meshgrid(np.arange(nv), np.arange(nu), indexing="ij")
  uv_skin = np.stack([cols_i.reshape(-1) / (nu - 1) * (HEAD_TEX - 1),
                      rows_i.reshape(-1) / (nv - 1) * (HEAD_TEX - 1)], -1)
  tint_skin = np.ones((skin.shape[0], 3))

  # --- eyes
  ex, ey = lay.eye_x, lay.eye_y
  eye_c = []
  for side in (-1, 1):
    cx = side * ex
    j = np.argmin((skin[:, 0] - cx) ** 2 + (skin[:, 1] - ey) ** 2 + 1e3 * (skin[:, 2] > 0))
    zc = skin[j, 2] + EYE_RADIUS - 0.0015
    eye_c.append((cx, ey, zc))
  eye_c = np.array(eye_c)
  near = np.zeros(len(skin), bool)
  for cx, cy, _ in eye_c:
    near |= ((skin[:, 0] - cx) ** 2 / 0.022 ** 2 + (skin[:, 1] - cy) ** 2 / 0.018 ** 2 < 1) & (skin[:, 2] < 0)
  eye_idx = np.nonzero(near)[0]
  ev = skin[eye_idx]
  side = np.where(ev[:, 0] > 0, 1, 0)
  ec = eye_c[side]
  dx, dy = ev[:, 0] - ec[:, 0], ev[:, 1] - ec[:, 1]
  xl = dx * np.where(ev[:, 0] > 0, 1, -1)      # >0 towards the temple
  rr = np.sqrt((dx / 1.25) ** 2 + dy ** 2)
  rl = EYE_RADIUS + 0.0017
  zlid = ec[:, 2] - np.sqrt(np.clip(rl ** 2 - dx ** 2 - dy ** 2, 0, None))
  wl = smoothstep(0.0175, 0.0105, rr)
  z_rest = ev[:, 2] * (1 - wl) + np.minimum(zlid, ev[:, 2] + 0.003) * wl
  skin[eye_idx, 2] = z_rest
  eye_info = dict(xl=xl, dy=dy, ezc=ec[:, 2], zlid=z_rest)

  # --- mouth / jaw region
  my, mw = lay.mouth_y, lay.mouth_w
  mouth_sel = (skin[:, 1] > my - 0.03) & (skin[:, 2] < 0.03) & (skin_front > 0) | \
      ((skin[:, 1] > my - 0.01) & (skin[:, 2] < 0.06))
  mouth_idx = np.nonzero(mouth_sel)[0]
  mv = skin[mouth_idx]
  mouth_info = dict(s=skin_s[mouth_idx], front=skin_front[mouth_idx])

  # --- emotion / viseme deltas over the face (front) region
  face_sel = (skin_front > 0.2) & (skin[:, 1] > lay.hairline_y - 0.02) & (skin[:, 1] < lay.chin_y + 0.02)
  face_idx = np.nonzero(face_sel)[0]
  fv = skin[face_idx]
  fx, fy = fv[:, 0], fv[:, 1]
  sgn = np.sign(fx)
  ax = np.abs(fx)
  s_f = skin_s[face_idx]
  brow_in = gauss2(ax, fy, 0.012, lay.brow_y, 0.011, 0.011)
  brow_out = gauss2(ax, fy, 0.045, lay.brow_y + 0.002, 0.014, 0.011)
  brow_all = gauss2(ax, fy, 0.03, lay.brow_y - 0.004, 0.026, 0.014)
  corner = gauss2(ax, fy, mw, my, 0.008, 0.008)
  cheek = gauss2(ax, fy, 0.036, lay.eye_y + 0.03, 0.014, 0.013)
  lips = gauss2(ax, fy, 0.0, my, mw * 0.9, 0.009)
  emo = np.zeros((5, len(face_idx), 3))
  # happy: corners up/out/back, cheeks raised
  emo[1, :, 0] += sgn * 0.004 * corner
  emo[1, :, 1] += -0.0065 * corner - 0.003 * cheek
  emo[1, :, 2] += 0.002 * corner - 0.0035 * cheek
  # sad: inner brows up, outer slightly down, corners down, lower lip out
  emo[2, :, 1] += -0.0055 * brow_in + 0.002 * brow_out + 0.0045 * corner
  emo[2, :, 2] += -0.0015 * gauss2(ax, fy, 0, my + 0.006, mw * 0.7, 0.005)
  # angry: brows down and together, lips pressed
  emo[3, :, 0] += -sgn * 0.004 * brow_in
  emo[3, :, 1] += 0.0055 * brow_in + 0.003 * brow_out
  emo[3, :, 2] += -0.002 * brow_in
  emo[3, :, 1] += 0.0015 * gauss2(ax, fy, 0, my + 0.006, mw, 0.005) - 0.0012 * gauss2(ax, fy, 0, my - 0.005, mw, 0.004)
  # surprised: brows up
  emo[4, :, 1] += -0.0075 * brow_all - 0.002 * brow_in
  emo[4, :, 2] += -0.0008 * brow_all
  wide = np.zeros((len(face_idx), 3))
  wide[:, 0] = sgn * 0.009 * gauss2(ax, fy, mw, my, 0.013, 0.011) * np.clip(ax / mw, 0, 1.3)
  wide[:, 1] = -0.0015 * corner
  wide[:, 2] = 0.003 * corner
  rnd = np.zeros((len(face_idx), 3))
  rnd[:, 0] = -fx * 0.38 * lips
  rnd[:, 2] = -0.008 * lips

  # --- ears
  parts = {}
  chunks_v, chunks_t, chunks_m, chunks_uv, chunks_tint = [], [], [], [], []
  count = 0

  def add(name, v, t, mat, uv, tint):
    nonlocal count
    parts[name] = (count, count + len(v))
    chunks_v.append(v)
    chunks_t.append(t + count)
    chunks_m.append(np.full(len(t), mat, np.int32))
    chunks_uv.append(uv)
    chunks_tint.append(tint)
    count += len(v)

  add("skin", skin, tris_skin, PART_SKIN, uv_skin, tint_skin)

  sp_r, sp_c, sp_n = SKINPATCH_TEX
  skin_uv_const = np.array([sp_c + sp_n / 2, sp_r + sp_n / 2])
  ev_, et_ = _sphere(10, 16)
  for s_ in (-1, 1):
    v = ev_.copy()
    v = v[:, [2, 1, 0]] * np.array([0.0055, 0.029 * idn.ear_size, 0.016 * idn.ear_size])
    ang = s_ * idn.ear_out
    ca, sa = math.cos(ang), math.sin(ang)
    v = v @ np.array([[ca, 0, -sa], [0, 1, 0], [sa, 0, ca]]).T
    rx0 = base_surface(idn, lay, np.array(s_ * math.pi / 2 * 1.08), np.array(-0.002), np.array(1.0))[0]
    v = v + np.array([float(rx0) - s_ * 0.002, -0.004 * idn.head_h, 0.014])
    tint = np.ones((len(v), 3)) * np.array([1.0, 0.93, 0.92])
    inner = (ev_[:, 2] * s_ < 0)   # the side facing the head
    tint[inner] *= 0.75
    add(f"ear{s_}", v, orient_outward(v, et_, v.mean(0)), PART_EAR, np.tile(skin_uv_const, (len(v), 1)), tint)

  # --- eyeballs
  eye_local, eye_tris = _sphere(14, 24)
  er, ec_, en = EYE_TEX
  px = eye_local[:, 0] * np.where(eye_local[:, 2] < 0, 1.0, 0.0) * 0.95 + \
      np.where(eye_local[:, 2] >= 0, 0.97 * np.sign(eye_local[:, 0] + 1e-9), 0)
  py = eye_local[:, 1] * np.where(eye_local[:, 2] < 0, 1.0, 0.0) * 0.95
  uv_eye = np.stack([ec_ + (px * 0.5 + 0.5) * (en - 1), er + (py * 0.5 + 0.5) * (en - 1)], -1)
  for k in range(2):
    add(f"eye{k}", eye_c[k] + EYE_RADIUS * eye_local, orient_outward(eye_local, eye_tris, (0, 0, 0)), PART_EYE, uv_eye, np.ones((len(eye_local), 3)))

  # --- teeth and tongue (behind the lips)
  mid = np.argmin(np.abs(skin[:, 0]) + np.abs(skin[:, 1] - my) * 10 + 1e3 * (skin[:, 2] > 0))
  z_lip = skin[mid, 2]
  tf = z_lip + 0.0055
  nt = 24
  tt = np.linspace(-1.25, 1.25, nt)
  arc_x = 0.021 * np.sin(tt) / math.sin(1.25) * idn.mouth_w
  arc_z = tf + 0.02 * (1 - np.cos(tt)) / (1 - math.cos(1.25))
  tooth_tint = 0.62 + 0.38 * np.abs(np.cos(tt * 6.5 * math.pi / 2.5 * 1.0)) ** 0.4
  for name, ya, yb_, gum in (("teeth_up", my - 0.011, my + 0.0035, 0), ("teeth_lo", my + 0.0005, my + 0.011, 1)):
    rows = np.linspace(ya, yb_, 4)
    vv = np.stack([np.tile(arc_x, 4), np.repeat(rows, nt), np.tile(arc_z, 4)], -1)
    tint = np.ones((len(vv), 3)) * np.array([0.93, 0.9, 0.82])
    tint *= np.tile(tooth_tint, 4)[:, None]
    gum_row = 0 if gum == 0 else 3
    tint[gum_row * nt:(gum_row + 1) * nt] = np.array([0.75, 0.38, 0.40])
    tr = grid_tris(4, nt)
    tr = orient_outward(vv, tr, (0, my, tf + 0.05))
    add(name, vv, tr, PART_TEETH, np.tile(np.array(WHITE_UV), (len(vv), 1)), tint)
  tv, tt_ = _sphere(8, 16)
  tv = tv * np.array([0.017, 0.006, 0.022]) + np.array([0, my + 0.0085, tf + 0.022])
  add("tongue", tv, orient_outward(tv, tt_, tv.mean(0)), PART_TONGUE,
      np.tile(np.array(WHITE_UV), (len(tv), 1)), np.ones((len(tv), 3)) * np.array([0.72, 0.33, 0.33]))

  # --- hair shell
  hm, _ = hair_mask(idn, lay, skin[:, 0], skin[:, 1], skin_phi)
  thick = {"bald": 0.0, "buzz": 0.0, "short": 0.009, "medium": 0.016, "long": 0.015}[idn.hair_style]
  thick *= idn.hair_volume
  hair_uv_rows = (0, 0)
  if thick > 0:
    vn = np.zeros_like(skin)
    p0, p1, p2 = skin[tris_skin[:, 0]], skin[tris_skin[:, 1]], skin[tris_skin[:, 2]]
    fn = np.cross(p1 - p0, p2 - p0)
    for k in range(3):
      np.add.at(vn, tris_skin[:, k], fn)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True) + 1e-12
    _, yb = hair_mask(idn, lay, skin[:, 0], skin[:, 1], skin_phi)
    prof = smoothstep(yb + 0.002, yb - 0.035, skin[:, 1])
    prof = prof * (0.45 + 0.9 * smoothstep(-0.02, -0.11, skin[:, 1]))   # fuller on top, flat at the sides
    hv = skin + vn * (thick * prof)[:, None]
    keep_v = hm > 0.02
    tkeep = keep_v[tris_skin].all(1)
    ht = tris_skin[tkeep]
    used = np.unique(ht)
    remap = np.full(len(hv), -1, np.int64)
    remap[used] = np.arange(len(used))
    add("hair", hv[used], remap[ht].astype(np.int32), PART_HAIR, uv_skin[used], np.ones((len(used), 3)))
    if idn.hair_style == "long":
      ncol, nrow = 40, 22
      ang = np.linspace(1.4, 2 * math.pi - 1.4, ncol)
      ry = np.linspace(-0.03, 0.19, nrow)
      A, RY = np.meshgrid(ang, ry, indexing="xy")
      bx, _, bz = base_surface(idn, lay, A, np.full(A.shape, -0.03), np.ones(A.shape))
      grow = 1.0 + 0.25 * smoothstep(-0.03, 0.1, RY) * idn.hair_volume
      cx_ = bx * grow * 1.06
      cz_ = (bz - 0.01) * grow * 1.06 + 0.01
      cv = np.stack([cx_, RY, cz_], -1).reshape(-1, 3)
      cu = (0.82 + 0.16 * (A / (2 * math.pi))).reshape(-1) * (HEAD_TEX - 1)
      cvv = (0.05 + 0.3 * (RY - ry[0]) / (ry[-1] - ry[0])).reshape(-1) * (HEAD_TEX - 1)
      tint_c = np.ones((len(cv), 3)) * (0.8 + 0.2 * smoothstep(0.19, 0.1, RY)).reshape(-1, 1)
      add("curtain", cv, grid_tris(nrow, ncol), PART_CURTAIN, np.stack([cu, cvv], -1), tint_c)
      hair_uv_rows = (0.05, 0.35)

  # --- neck and torso
  nn, nr_ = 24, 10
  a = np.linspace(0, 2 * math.pi, nn, endpoint=False)
  ny = np.linspace(0.03, 0.2, nr_)
  A, NY = np.meshgrid(a, ny, indexing="xy")
  nwid = 0.05 * idn.neck_w
  neck = np.stack([nwid * np.sin(A), NY, 0.016 - 0.05 * np.cos(A) * idn.neck_w], -1).reshape(-1, 3)
  neck_tint = np.ones((len(neck), 3)) * (0.8 + 0.2 * smoothstep(0.16, 0.12, NY)).reshape(-1, 1)
  neck_tint *= (1 - 0.3 * smoothstep(0.07, 0.105, NY) * smoothstep(0.14, 0.105, NY)).reshape(-1, 1)
  add("neck", neck, orient_outward(neck, grid_tris(nr_, nn, wrap=True), (0, 0.1, 0.016)), PART_NECK,
      np.tile(skin_uv_const, (len(neck), 1)), neck_tint)
  neck_w = smoothstep(0.08, 0.17, neck[:, 1])

  tn, trw = 48, 16
  a = np.linspace(0, 2 * math.pi, tn, endpoint=False)
  ty_ = np.concatenate([np.linspace(0.135, 0.24, 11), np.linspace(0.27, 0.53, 5)])
  A, TY = np.meshgrid(a, ty_, indexing="xy")
  sw = idn.shoulder_w
  trx = _interp(TY, [(0.135, 0.056 * idn.neck_w), (0.15, 0.12 * sw), (0.17, 0.175 * sw), (0.21, 0.2 * sw),
                     (0.28, 0.21 * sw), (0.55, 0.205 * sw)])
  trz = _interp(TY, [(0.135, 0.052), (0.155, 0.068), (0.18, 0.085), (0.23, 0.1), (0.55, 0.105)])
  sa, ca = np.sin(A), np.cos(A)
  e = 2 / 2.6
  torso = np.stack([trx * np.sign(sa) * np.abs(sa) ** e, TY, 0.02 - trz * np.sign(ca) * np.abs(ca) ** e],
                   -1).reshape(-1, 3)
  cr, cc, cn = CLOTH_TEX
  uv_t = np.stack([(cc + (A / (2 * math.pi)) * (cn - 1)).reshape(-1),
                   (cr + (TY - 0.135) / 0.395 * 255).reshape(-1)], -1)
  t_tint = np.ones((len(torso), 3)) * (0.7 + 0.3 * smoothstep(0.135, 0.18, TY)).reshape(-1, 1)
  add("torso", torso, orient_outward(torso, grid_tris(trw, tn, wrap=True), (0, 0.3, 0.02)), PART_CLOTH,
      uv_t, t_tint)

  verts = np.concatenate(chunks_v).astype(np.float64)
  tris = np.concatenate(chunks_t).astype(np.int32)
  tri_mat = np.concatenate(chunks_m).astype(np.int32)
  uv = np.concatenate(chunks_uv).astype(np.float32)
  tint = np.concatenate(chunks_tint).astype(np.float32)
  return HeadModel(
      lay=lay, nu=nu, nv=nv, rows_y=rows_y, rows_c=rows_c, rows_s=rows_s, skin=skin,
      skin_front=skin_front, skin_phi=skin_phi, eye_idx=eye_idx, eye_info=eye_info,
      mouth_idx=mouth_idx, mouth_info=mouth_info, emo_delta=emo, face_idx=face_idx,
      wide_delta=wide, round_delta=rnd, eye_centres=eye_c, parts=parts, verts=verts, tris=tris,
      tri_mat=tri_mat, uv=uv, tint=tint, eye_local=eye_local, jaw_hinge=np.array([0.0, 0.0, 0.012]),
      neck_w=neck_w, hair_uv_rows=hair_uv_rows)


# ----------------------------------------------------------------------------- per-frame pose

def emotion_weights(p: FrameParams) -> np.ndarray:
  w = np.zeros(5)
  e = int(p.emotion)
  if 0 < e < 5:
    w[e] = float(np.clip(p.emotion_intensity, 0, 1))
  return w


def pose_skin(m: HeadModel, p: FrameParams, eye_pitch: float):
  """Deformed skin vertices (anatomical metres, head frame) and a per-vertex tint multiplier.

  Returns (skin [Nh, 3], tint_mul [Nh, 3] or None for untouched rows, jaw angle, lip gap).
  """
  lay = m.lay
  v = m.skin.copy()
  emo = emotion_weights(p)
  wide = float(np.clip(p.mouth_wide, 0, 1)) + 0.35 * emo[1]
  rnd = float(np.clip(p.mouth_round, 0, 1))
  op = float(np.clip(p.mouth_open, 0, 1)) + 0.3 * emo[4]
  # linear shape deltas on the face region
  d = np.tensordot(emo, m.emo_delta, axes=(0, 0)) + wide * m.wide_delta + rnd * m.round_delta
  v[m.face_idx] += d

  # --- mouth: jaw rotation + carved opening
  mi = m.mouth_idx
  mv = v[mi]
  s = m.mouth_info["s"]
  mw = lay.mouth_w * (1 + 0.25 * wide - 0.35 * rnd)
  my = lay.mouth_y
  ax = np.abs(mv[:, 0])
  rel = np.clip(mv[:, 1] - my, 0, None)
  mw_eff = mw + rel * 1.6
  shape = np.sqrt(np.clip(1 - (ax / mw_eff) ** 2, 0, 1))
  cheek = smoothstep(my - 0.006, my + 0.035, mv[:, 1]) * 0.6
  frontish = smoothstep(0.045, -0.02, mv[:, 2])
  w_jaw = (s * shape + (1 - shape) * cheek) * frontish
  alpha = 0.20 * op + 0.03 * rnd
  # round: a small extra parting in the middle
  part_r = 0.0035 * rnd * np.sqrt(np.clip(1 - (ax / (0.55 * mw)) ** 2, 0, 1)) * (mv[:, 1] < my + 0.02)
  h = m.jaw_hinge
  ry, rz = mv[:, 1] - h[1], mv[:, 2] - h[2]
  ang = alpha * w_jaw
  ca, sa = np.cos(ang), np.sin(ang)
  ny = h[1] + ry * ca - rz * sa
  nz = h[2] + ry * sa + rz * ca
  up_lip = (1 - s) * np.exp(-((mv[:, 1] - my) / 0.008) ** 2) * shape
  ny = ny - 0.0015 * op * up_lip - part_r * (1 - s) * 0.4 + part_r * s
  gap_mid = 0.11 * alpha + 0.0035 * rnd          # approx. opening at the middle (metres)
  depth = 0.028 * np.sin(np.pi * s) * shape * min(1.0, gap_mid / 0.004)
  nz = nz + depth
  mv[:, 1], mv[:, 2] = ny, nz
  v[mi] = mv

  # --- eyes: lids
  ei = m.eye_idx
  inf = m.eye_info
  xl, dy = inf["xl"], inf["dy"]
  w = lay.eye_w
  base_shape = np.clip(1 - (xl / w) ** 2, 0, 1)
  hu = lay.eye_hu * (1 + 0.4 * emo[4] - 0.22 * emo[3] - 0.12 * emo[1])
  hl = lay.eye_hl * (1 - 0.45 * emo[1] + 0.15 * emo[4])
  look = 0.45 * EYE_RADIUS * math.sin(eye_pitch)
  y_u = lay.eye_tilt * xl - hu * base_shape ** 0.75 + look * base_shape
  y_l = lay.eye_tilt * xl + hl * base_shape ** 0.9 + 0.3 * look * base_shape
  b = float(np.clip(p.blink, 0, 1))
  y_u = y_u + (y_l + 0.0012 - y_u) * b
  eps = 0.0009
  du = dy - y_u
  dl = y_l - dy
  mopen = np.clip(du / eps, 0, 1) * np.clip(dl / eps, 0, 1) * np.clip((w - np.abs(xl)) / eps, 0, 1)
  ve = v[ei]
  z_push = inf["ezc"] + 0.002
  ve[:, 2] = inf["zlid"] + (z_push - inf["zlid"]) * mopen
  v[ei] = ve
  tint = np.ones((len(ei), 3))
  lash = np.exp(-((du + 0.0007) / 0.0009) ** 2) * (base_shape > 0) * (1 - mopen) * np.clip(1.3 - np.abs(xl) / w, 0, 1)
  lash_lo = 0.35 * np.exp(-((dl + 0.0005) / 0.0006) ** 2) * (base_shape > 0) * (1 - mopen)
  tint *= (1 - 0.85 * np.clip(lash + lash_lo, 0, 1))[:, None]
  tint = tint * (1 - mopen[:, None]) + mopen[:, None] * np.array([0.55, 0.28, 0.28])
  return v, tint, alpha

"""HeadRenderer: per-identity textures/background + per-frame posing, rasterisation and shading."""

from __future__ import annotations

import math

import cv2
import numpy as np

from vasa_jax.synth import head as H
from vasa_jax.synth import raster

_S = H.smoothstep
_G = H.gauss2


def _noise(rng, shape, cells, out_hw):
  """Smooth value noise: a random grid of `cells` upsampled bicubically to out_hw, ~N(0, 1)."""
  g = rng.standard_normal((max(2, cells[0]), max(2, cells[1]))).astype(np.float32)
  r = cv2.resize(g, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_CUBIC)
  return r / (r.std() + 1e-6)


def _mix(a, b, t):
  t = np.asarray(t, np.float32)[..., None] if np.ndim(t) == np.ndim(a) - 1 else t
  return a * (1 - t) + b * t


# ----------------------------------------------------------------------------- textures

def paint_atlas(idn: H.Identity, m: H.HeadModel) -> np.ndarray:
  rng = np.random.default_rng(np.random.SeedSequence([idn.seed, 11]))
  atlas = np.zeros((H.ATLAS_H, H.ATLAS_W, 3), np.float32)
  n = H.HEAD_TEX
  lay = m.lay
  # texel -> rest base position
  cols = np.arange(n) / (n - 1)
  rows = np.arange(n) / (n - 1) * (m.nv - 1)
  phi = H.u_to_phi(-1 + 2 * cols)[None, :]
  ry = np.interp(rows, np.arange(m.nv), m.rows_y)[:, None]
  rc = np.interp(rows, np.arange(m.nv), m.rows_c)[:, None]
  rs = np.interp(rows, np.arange(m.nv), m.rows_s)[:, None]
  x, y, _ = H.base_surface(idn, lay, np.broadcast_to(phi, (n, n)), np.broadcast_to(ry, (n, n)),
                           np.broadcast_to(rc, (n, n)))
  ax = np.abs(x)
  front = (np.cos(phi) > 0).astype(np.float32) * np.ones((n, 1))
  skin = np.array(idn.skin_rgb, np.float32)
  # --- skin with low-frequency variation, blotches and pores
  var = (0.045 * _noise(rng, None, (6, 6), (n, n)) + 0.025 * _noise(rng, None, (24, 24), (n, n))) * idn.skin_var
  pores = 0.03 * rng.standard_normal((n, n)).astype(np.float32)
  pores = cv2.GaussianBlur(pores, (0, 0), 0.7)
  col = skin[None, None] * (1 + var[..., None] + pores[..., None])
  red = skin * np.array([1.06, 0.80, 0.80], np.float32)
  cheeks = idn.blush * 0.55 * _G(ax, y, 0.04, lay.eye_y + 0.028, 0.014, 0.012) * front
  nose_r = 0.25 * _G(ax, y, 0.0, lay.nose_tip_y, 0.008, 0.008) * front
  col = _mix(col, red[None, None] * (1 + var[..., None]), np.clip(cheeks + nose_r, 0, 1))
  # around the eyes: slightly darker, cooler
  orb = _G(ax, y, lay.eye_x, lay.eye_y, 0.017, 0.011) * front
  col *= (1 - 0.12 * orb)[..., None]
  if idn.makeup > 0:
    shadow = _G(ax, y, lay.eye_x + 0.002, lay.eye_y - 0.007, 0.013, 0.004) * front * idn.makeup
    mc = np.array(H._hsv(rng.random(), 0.3, 0.4), np.float32)
    col = _mix(col, mc[None, None] * skin, 0.6 * shadow)
  # nasolabial folds and under-nose shading
  for s in (-1, 1):
    p0 = np.array([s * 0.016 * idn.nose_w, lay.nose_base_y - 0.004])
    p1 = np.array([s * (lay.mouth_w + 0.006), lay.mouth_y + 0.008])
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(x - p0[0] - t * d[0], y - p0[1] - t * d[1])
    col *= (1 - 0.10 * np.exp(-(dist / 0.0025) ** 2) * front)[..., None]
    nos = _G(x, y, s * 0.0058 * idn.nose_w, lay.nose_base_y - 0.0012, 0.0026 * idn.nose_w, 0.0014) * front
    col *= (1 - 0.8 * np.clip(nos * 1.3, 0, 1))[..., None]
  # --- lips
  my, mw = lay.mouth_y, lay.mouth_w
  sh = np.clip(1 - (ax / mw) ** 2, 0, 1)
  bow = 1 - 0.18 * np.exp(-(ax / 0.0025) ** 2) + 0.08 * np.exp(-((ax - 0.006) / 0.003) ** 2)
  lu = 0.0068 * idn.lip_upper * sh ** 0.5 * bow
  ll = 0.0085 * idn.lip_lower * sh ** 0.45
  e = 0.0007
  lipm = (_S(my - lu - e, my - lu + e, y) * _S(my + ll + e, my + ll - e, y)) * front * (ax < mw * 1.02)
  lip = np.array(idn.lip_rgb, np.float32)
  lipcol = lip[None, None] * (1 + 0.5 * var[..., None]) * (1 + 0.05 * np.sin(ax * 2500)[..., None])
  col = _mix(col, lipcol, np.clip(lipm, 0, 1) * 0.95)
  # mouth band (the inside of the mouth when it opens): wet red lips -> dark throat
  s_band = np.broadcast_to(rs, (n, n))
  inside = (s_band > 0) & (s_band < 1) & (ax < mw * 1.1)
  dark = np.clip(np.sin(np.pi * s_band) * 1.6, 0, 1)
  throat = _mix(lip[None, None] * 0.7, np.array([0.18, 0.05, 0.05], np.float32)[None, None], dark)
  col = np.where(inside[..., None], throat, col)
  # --- beard
  if idn.beard != "none":
    bx_line = lay.eye_y + 0.035 + 0.25 * np.maximum(ax - 0.02, 0)
    beard = _S(bx_line - 0.003, bx_line + 0.006, y) * (np.abs(phi) < 2.0) * (y < lay.chin_y + 0.03)
    beard *= 1 - np.clip(lipm, 0, 1)
    if idn.beard == "moustache":
      beard = beard * _G(ax, y, 0.0, my - 0.008, mw * 1.1, 0.005) * 1.4
    dens = {"stubble": 0.45, "moustache": 0.9, "full": 0.92}[idn.beard]
    grain = np.clip(0.5 + 0.5 * _noise(rng, None, (200, 200), (n, n)), 0, 1)
    bcol = np.array(idn.hair_rgb, np.float32)
    col = _mix(col, bcol[None, None] * (0.7 + 0.5 * grain[..., None]), np.clip(beard * dens, 0, 1) * front)
  # --- eyebrows
  streak = np.clip(0.5 + 0.35 * _noise(rng, None, (40, 260), (n, n)), 0, 1)
  for s in (-1, 1):
    t = (ax - 0.0085) / 0.042
    yc = lay.brow_y + 0.0025 - 0.0045 * idn.brow_arch * (1 - ((t - 0.62) / 0.7) ** 2)
    th = 0.0062 * idn.brow_thick * (1 - 0.55 * np.clip(t, 0, 1))
    bm = _S(th / 2 + 0.0009, th / 2 - 0.0006, np.abs(y - yc)) * _S(-0.05, 0.06, t) * _S(1.05, 0.9, t)
    bm = bm * (x * s > 0) * front * (0.55 + 0.6 * streak)
    col = _mix(col, np.array(idn.brow_rgb, np.float32)[None, None], np.clip(bm, 0, 0.95))
  # --- hair on the scalp
  hm, _ = H.hair_mask(idn, lay, x, y, np.broadcast_to(phi, (n, n)))
  dens = {"bald": 0.0, "buzz": 0.6, "short": 1.0, "medium": 1.0, "long": 1.0}[idn.hair_style]
  if idn.hair_style == "bald":
    hm = hm * (np.abs(phi) > 1.2) * _S(-0.06, -0.03, y) * 0.55 * (idn.sex > 0.5)
    dens = 1.0
  hair = np.array(idn.hair_rgb, np.float32)
  strands = (0.55 * _noise(rng, None, (48, 300), (n, n)) + 0.45 * _noise(rng, None, (20, 110), (n, n)))
  hc = hair[None, None] * np.clip(0.72 + 0.32 * strands, 0.25, 1.6)[..., None]
  if idn.hair_style == "buzz":
    hc = _mix(hc, skin[None, None] * 0.8, 0.35)
  col = _mix(col, hc, np.clip(hm * dens, 0, 1))
  atlas[:n, :n] = col
  # --- eye texture
  er, ec, en = H.EYE_TEX
  g = (np.arange(en) + 0.5) / en * 2 - 1
  ex, ey = np.meshgrid(g, g, indexing="xy")
  r = np.hypot(ex, ey)
  a = np.arctan2(ey, ex)
  ri, rp = 0.45, 0.15 + 0.03 * rng.random()
  sclera = np.array([0.93, 0.91, 0.89], np.float32) * (1 - 0.12 * _S(0.6, 1.0, r))[..., None]
  vein = _S(0.55, 0.95, r) * np.clip(_noise(rng, None, (8, 60), (en, en)), 0, None) * 0.15
  sclera = sclera * (1 - vein[..., None] * np.array([0.1, 0.6, 0.6], np.float32))
  iris = np.array(idn.iris_rgb, np.float32)
  fib = 1 + 0.35 * np.sin(a * 37 + 3 * rng.random()) * np.sin(a * 11) + 0.25 * _noise(rng, None, (16, 16), (en, en))
  icol = iris[None, None] * fib[..., None] * (0.75 + 0.5 * _S(ri, rp, r))[..., None]
  icol = icol * (1 - 0.6 * _S(ri - 0.06, ri, r))[..., None]       # limbal ring
  eye = _mix(sclera, icol, _S(ri + 0.012, ri - 0.012, r))
  eye = _mix(eye, np.array([0.02, 0.02, 0.025], np.float32)[None, None], _S(rp + 0.01, rp - 0.01, r))
  atlas[er:er + en, ec:ec + en] = eye
  # --- clothing
  cr, cc, cn = H.CLOTH_TEX
  cu = np.arange(cn) / (cn - 1) * 2 * math.pi
  cv = 0.135 + np.arange(256) / 255 * 0.395
  A, V = np.meshgrid(cu, cv, indexing="xy")
  aw = np.minimum(A, 2 * math.pi - A)
  c1 = np.array(idn.cloth_rgb, np.float32)
  c2 = np.array(idn.cloth2_rgb, np.float32)
  weave = 1 + 0.05 * _noise(rng, None, (60, 60), (256, cn)) + 0.06 * _noise(rng, None, (6, 6), (256, cn))
  pat = idn.cloth_pattern
  if pat == 1:
    t = (np.sin(V * 2 * math.pi / 0.025) > 0.3).astype(np.float32)
  elif pat == 2:
    t = ((np.sin(V * 2 * math.pi / 0.03) > 0) ^ (np.sin(A * 14) > 0)).astype(np.float32) * 0.5
  elif pat == 3:
    t = (aw < 0.45).astype(np.float32)     # open jacket over a shirt
  else:
    t = np.zeros_like(A, np.float32)
  cloth = _mix(c1[None, None] * np.ones_like(A)[..., None], c2[None, None], t) * weave[..., None]
  skin_c = skin[None, None] * np.ones_like(A)[..., None]
  if idn.cloth_style == "vneck":
    neckline = aw < 0.55 * _S(0.22, 0.14, V)
  elif idn.cloth_style == "collar":
    neckline = aw < 0.3 * _S(0.2, 0.14, V)
    band = (np.abs(V - 0.15) < 0.012) & (aw < 1.6)
    cloth = np.where(band[..., None], cloth * 1.25 + 0.05, cloth)
  else:
    neckline = (V < 0.155) & (aw < 0.9)
  cloth = np.where(neckline[..., None], skin_c * 0.95, cloth)
  atlas[cr:cr + 256, cc:cc + cn] = cloth
  # --- plain skin patch (ears, neck) and a white texel block
  sr, sc, sn = H.SKINPATCH_TEX
  atlas[sr:sr + 256, sc:sc + sn] = skin[None, None] * (1 + 0.02 * _noise(rng, None, (8, 4), (256, sn)))[..., None]
  atlas[512:522, 448:458] = 1.0
  return np.clip(atlas, 0, 1.2).astype(np.float32)


def make_background(idn: H.Identity, size: int) -> np.ndarray:
  """Per-identity backdrop, painted at <= 256 px (it is smooth) and resized, plus fine grain."""
  rng = np.random.default_rng(np.random.SeedSequence([idn.seed, 13]))
  lo = _paint_background(idn, min(size, 256))
  img = cv2.resize(lo, (size, size), interpolation=cv2.INTER_CUBIC) if lo.shape[0] != size else lo
  img = img * (1 + 0.015 * rng.standard_normal((size, size, 1)).astype(np.float32))
  return np.clip(img, 0, 1).astype(np.float32)


def _paint_background(idn: H.Identity, size: int) -> np.ndarray:
  rng = np.random.default_rng(np.random.SeedSequence([idn.seed, 12]))
  c = [np.array(v, np.float32) for v in idn.bg_rgb]
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  st = idn.bg_style
  if st == "solid":
    img = c[0][None, None] * (1 + 0.03 * _noise(rng, None, (4, 4), (size, size)))[..., None]
  elif st == "gradient":
    a = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5)) * 1.2, 0, 1)
    img = _mix(c[0][None, None], c[1][None, None], t)
  elif st == "blobs":
    img = np.ones((size, size, 3), np.float32) * c[1] * 0.7
    for _ in range(int(rng.integers(5, 14))):
      cx, cy, rad = rng.random(), rng.random(), rng.uniform(0.05, 0.3)
      col = c[int(rng.integers(0, 3))] * rng.uniform(0.6, 1.3)
      w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad ** 2)) * rng.uniform(0.3, 0.9)
      img = _mix(img, col[None, None], w)
  elif st == "room":
    img = np.ones((size, size, 3), np.float32) * c[0] * (0.85 + 0.3 * yy[..., None])
    for _ in range(int(rng.integers(2, 6))):
      x0, y0 = rng.uniform(-0.2, 0.9), rng.uniform(-0.2, 0.8)
      x1, y1 = x0 + rng.uniform(0.1, 0.6), y0 + rng.uniform(0.1, 0.7)
      col = c[int(rng.integers(1, 3))] * rng.uniform(0.7, 1.3)
      box = ((xx > x0) & (xx < x1) & (yy > y0) & (yy < y1)).astype(np.float32)
      img = _mix(img, col[None, None], box)
    img = cv2.GaussianBlur(img, (0, 0), size * 0.025)
  else:  # noise texture
    t = np.clip(0.5 + 0.3 * _noise(rng, None, (5, 5), (size, size)) + 0.1 * _noise(rng, None, (30, 30), (size, size)), 0, 1)
    img = _mix(c[0][None, None], c[2][None, None], t)
  img = img * (1 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))[..., None]   # vignette
  return np.clip(img, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------- renderer

def _materials(idn: H.Identity) -> np.ndarray:
  m = np.zeros((9, raster.N_MAT_COLS), np.float32)
  #            spec            shine  cull catch wrap
  m[H.PART_SKIN] = (idn.skin_spec, 18, 1, 0, 0.3)
  m[H.PART_HAIR] = (0.12, 10, 1, 0, 0.1)
  m[H.PART_EYE] = (0.6, 90, 1, 0.9, 0.0)
  m[H.PART_TEETH] = (0.2, 30, 0, 0, 0.2)
  m[H.PART_TONGUE] = (0.3, 20, 1, 0, 0.2)
  m[H.PART_CLOTH] = (0.04, 6, 1, 0, 0.2)
  m[H.PART_EAR] = (idn.skin_spec, 18, 0, 0, 0.4)
  m[H.PART_CURTAIN] = (0.08, 10, 0, 0, 0.2)
  m[H.PART_NECK] = (idn.skin_spec * 0.7, 18, 1, 0, 0.3)
  return m


def _light(idn: H.Identity) -> np.ndarray:
  ld = np.array(idn.light_dir, np.float64)
  ld /= np.linalg.norm(ld)
  fd = np.array([-ld[0], 0.3 * ld[1], ld[2]])
  fd /= np.linalg.norm(fd)
  key = np.array(idn.light_rgb) * 0.72
  amb = np.array(idn.ambient_rgb)
  fill = idn.fill * np.array(idn.light_rgb) * 0.6
  return np.concatenate([ld, key, amb, fd, fill]).astype(np.float64)


class HeadRenderer:
  """Renders one identity. Construction precomputes mesh, textures and background (~0.1 s)."""

  def __init__(self, identity: H.Identity, size: int = 256, supersample: float | None = None):
    """supersample: internal resolution factor (area-filtered down); default 2 up to 128 px, else 1.5."""
    self.identity = identity
    self.size = int(size)
    if supersample is None:
      supersample = 2.0 if self.size <= 128 else 1.5
    self.res = max(self.size, int(round(self.size * float(supersample))))
    self.ss = self.res / self.size
    self.model = H.build_model(identity)
    self.atlas = paint_atlas(identity, self.model)
    self.bg = make_background(identity, self.res)
    self.mats = _materials(identity)
    self.light = _light(identity)
    self.f = (self.res / 2) / math.tan(math.radians(H.FOV_Y_DEG / 2))
    self.c = self.res / 2
    self.bufs = raster.make_buffers(self.res, self.res)
    m = self.model
    self.torso_w = np.zeros(len(m.verts))
    a, b = m.parts["neck"]
    self.torso_w[a:b] = m.neck_w
    a, b = m.parts["torso"]
    self.torso_w[a:b] = 1.0
    self.torso_w = self.torso_w[:, None]
    self._n_rigid = min(m.parts["neck"][0], m.parts["torso"][0])
    assert self._n_rigid == len(m.verts) - (m.parts["neck"][1] - m.parts["neck"][0]) \
        - (m.parts["torso"][1] - m.parts["torso"][0])
    self._nrm = np.zeros((len(m.verts), 3), np.float64)

  def rendered_gaze(self, p: H.FrameParams) -> tuple[float, float]:
    """Camera-frame gaze (theta, phi) actually shown, after the eye-range clamp."""
    _, _, th, ph = H.eye_angles(p)
    return th, ph

  def pose_vertices(self, p: H.FrameParams):
    """Camera-frame vertex positions (metres) and per-vertex tint for frame p."""
    m = self.model
    ea, eb, _, _ = H.eye_angles(p)
    skin, eye_tint, alpha = H.pose_skin(m, p, eb)
    v = m.verts.copy()
    a, b = m.parts["skin"]
    v[a:b] = skin
    re = H.rotation_matrix(ea, eb, 0.0)
    for k in range(2):
      a, b = m.parts[f"eye{k}"]
      v[a:b] = m.eye_centres[k] + H.EYE_RADIUS * (m.eye_local @ re.T)
    h = m.jaw_hinge
    ca, sa = math.cos(alpha), math.sin(alpha)
    rj = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    for name in ("teeth_lo", "tongue"):
      a, b = m.parts[name]
      v[a:b] = h + (v[a:b] - h) @ rj.T
    tint = m.tint.copy()
    tint[m.eye_idx] *= eye_tint.astype(np.float32)
    r = H.rotation_matrix(p.yaw, p.pitch, p.roll)
    rt = H.rotation_matrix(0.3 * p.yaw, 0.15 * p.pitch, 0.3 * p.roll)
    t = np.array([p.tx, p.ty, p.tz])
    vs = v * H.HEAD_SCALE
    cam = np.empty_like(vs)
    nh = self._n_rigid
    cam[:nh] = vs[:nh] @ r.T
    cam[nh:] = (vs[nh:] @ r.T) * (1 - self.torso_w[nh:]) + (vs[nh:] @ rt.T) * self.torso_w[nh:]
    cam += t
    return cam, tint

  def render_float(self, p: H.FrameParams) -> np.ndarray:
    m = self.model
    cam, tint = self.pose_vertices(p)
    raster.vertex_normals(cam, m.tris, self._nrm)
    out = raster.render_buffers(cam, self._nrm, m.uv, tint, m.tris, m.tri_mat, self.mats, self.atlas,
                                self.bg, self.light, self.f, self.c, self.c, self.bufs)
    if self.res != self.size:
      out = cv2.resize(out, (self.size, self.size), interpolation=cv2.INTER_AREA)
    return out

  def render(self, p: H.FrameParams) -> np.ndarray:
    out = self.render_float(p)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)

  def project(self, p: H.FrameParams, pts_head) -> np.ndarray:
    """Pixel coordinates (x right, y down; output resolution) of anatomical head-frame points."""
    pts = np.asarray(pts_head, np.float64).reshape(-1, 3) * H.HEAD_SCALE
    cam = pts @ H.rotation_matrix(p.yaw, p.pitch, p.roll).T + np.array([p.tx, p.ty, p.tz])
    uv = self.f * cam[:, :2] / cam[:, 2:3] + self.c
    return uv / self.ss

  def landmarks(self, p: H.FrameParams) -> dict:
    """A few 2D landmarks of the rest face (eye centres, nose tip, mouth centre) for frame p."""
    lay = self.model.lay
    sk = self.model.skin
    nose = sk[np.argmin(sk[:, 2])]
    pts = np.array([self.model.eye_centres[0], self.model.eye_centres[1], nose,
                    [0.0, lay.mouth_y, nose[2] + 0.015]])
    uv = self.project(p, pts)
    return {"eye_right": uv[0], "eye_left": uv[1], "nose_tip": uv[2], "mouth": uv[3]}

  def material_map(self) -> np.ndarray:
    """Part id (head.PART_*) per supersampled pixel of the last render, -1 for background."""
    tb = self.bufs[1]
    return np.where(tb >= 0, self.model.tri_mat[np.maximum(tb, 0)], -1)


def render_batch(renderer: HeadRenderer, params) -> np.ndarray:
  """uint8 [T, size, size, 3] for a sequence of FrameParams."""
  params = list(params)
  out = np.empty((len(params), renderer.size, renderer.size, 3), np.uint8)
  for i, p in enumerate(params):
    out[i] = renderer.render(p)
  return out

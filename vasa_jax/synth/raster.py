"""numba kernels: vertex normals and a z-buffered, perspective-correct triangle rasteriser/shader.

Everything is nopython + cache=True, so the first process compiles once (a few seconds) and later
processes load the cached machine code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# material table columns
M_SPEC, M_SHINE, M_CULL, M_CATCH, M_WRAP = range(5)
N_MAT_COLS = 5


@njit(cache=True, fastmath=True)
def vertex_normals(p, tris, out):
  """Area-weighted vertex normals of a triangle mesh into out [N, 3] (normalised)."""
  out[:] = 0.0
  for t in range(tris.shape[0]):
    a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
    e1x = p[b, 0] - p[a, 0]
    e1y = p[b, 1] - p[a, 1]
    e1z = p[b, 2] - p[a, 2]
    e2x = p[c, 0] - p[a, 0]
    e2y = p[c, 1] - p[a, 1]
    e2z = p[c, 2] - p[a, 2]
    nx = e1y * e2z - e1z * e2y
    ny = e1z * e2x - e1x * e2z
    nz = e1x * e2y - e1y * e2x
    for v in (a, b, c):
      out[v, 0] += nx
      out[v, 1] += ny
      out[v, 2] += nz
  for v in range(out.shape[0]):
    n = np.sqrt(out[v, 0] ** 2 + out[v, 1] ** 2 + out[v, 2] ** 2) + 1e-20
    out[v, 0] /= n
    out[v, 1] /= n
    out[v, 2] /= n


@njit(cache=True, fastmath=True)
def rasterize(p, tris, tri_mat, mats, f, cx, cy, zbuf, tbuf, b0, b1):
  """Fills zbuf (1/z, larger = nearer), tbuf (triangle id or -1) and screen barycentrics."""
  h, w = zbuf.shape
  for t in range(tris.shape[0]):
    i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
    z0, z1, z2 = p[i0, 2], p[i1, 2], p[i2, 2]
    if z0 < 1e-3 or z1 < 1e-3 or z2 < 1e-3:
      continue
    iz0, iz1, iz2 = 1.0 / z0, 1.0 / z1, 1.0 / z2
    x0 = f * p[i0, 0] * iz0 + cx
    y0 = f * p[i0, 1] * iz0 + cy
    x1 = f * p[i1, 0] * iz1 + cx
    y1 = f * p[i1, 1] * iz1 + cy
    x2 = f * p[i2, 0] * iz2 + cx
    y2 = f * p[i2, 1] * iz2 + cy
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if abs(area) < 1e-12:
      continue
    # screen area = f^2 (n . p0) / (z0 z1 z2): negative <=> the face normal points at the camera
    if area >= 0.0 and mats[tri_mat[t], M_CULL] > 0.5:
      continue
    inv_area = 1.0 / area
    xmin = max(int(np.floor(min(x0, min(x1, x2)) - 0.5)), 0)
    xmax = min(int(np.ceil(max(x0, max(x1, x2)) - 0.5)), w - 1)
    ymin = max(int(np.floor(min(y0, min(y1, y2)) - 0.5)), 0)
    ymax = min(int(np.ceil(max(y0, max(y1, y2)) - 0.5)), h - 1)
    if xmin > xmax or ymin > ymax:
      continue
    for yy in range(ymin, ymax + 1):
      py = yy + 0.5
      for xx in range(xmin, xmax + 1):
        px = xx + 0.5
        w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
        if w0 < 0.0:
          continue
        w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
        if w1 < 0.0:
          continue
        w2 = 1.0 - w0 - w1
        if w2 < 0.0:
          continue
        iz = w0 * iz0 + w1 * iz1 + w2 * iz2
        if iz > zbuf[yy, xx]:
          zbuf[yy, xx] = iz
          tbuf[yy, xx] = t
          b0[yy, xx] = w0
          b1[yy, xx] = w1


@njit(cache=True, fastmath=True)
def shade(p, nrm, uv, tint, tris, tri_mat, mats, tex, bg, light, f, cx, cy, zbuf, tbuf, b0, b1, out):
  """Perspective-correct interpolation + Lambert/wrap diffuse, hemisphere ambient, fill, Blinn specular.

  light: [0:3] direction to the key light, [3:6] key colour, [6:9] ambient colour,
  [9:12] fill direction, [12:15] fill colour.
  """
  h, w = zbuf.shape
  th, tw = tex.shape[0], tex.shape[1]
  lx, ly, lz = light[0], light[1], light[2]
  for yy in range(h):
    for xx in range(w):
      t = tbuf[yy, xx]
      if t < 0:
        out[yy, xx, 0] = bg[yy, xx, 0]
        out[yy, xx, 1] = bg[yy, xx, 1]
        out[yy, xx, 2] = bg[yy, xx, 2]
        continue
      i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
      iz = zbuf[yy, xx]
      w0 = b0[yy, xx] / p[i0, 2] / iz
      w1 = b1[yy, xx] / p[i1, 2] / iz
      w2 = 1.0 - w0 - w1
      u = w0 * uv[i0, 0] + w1 * uv[i1, 0] + w2 * uv[i2, 0]
      v = w0 * uv[i0, 1] + w1 * uv[i1, 1] + w2 * uv[i2, 1]
      # bilinear texture fetch (inlined: no per-pixel allocation)
      u = min(max(u, 0.0), tw - 1.001)
      v = min(max(v, 0.0), th - 1.001)
      iu = int(u)
      iv = int(v)
      fu = u - iu
      fv = v - iv
      k00 = (1.0 - fu) * (1.0 - fv)
      k01 = fu * (1.0 - fv)
      k10 = (1.0 - fu) * fv
      k11 = fu * fv
      c0 = k00 * tex[iv, iu, 0] + k01 * tex[iv, iu + 1, 0] + k10 * tex[iv + 1, iu, 0] + k11 * tex[iv + 1, iu + 1, 0]
      c1 = k00 * tex[iv, iu, 1] + k01 * tex[iv, iu + 1, 1] + k10 * tex[iv + 1, iu, 1] + k11 * tex[iv + 1, iu + 1, 1]
      c2 = k00 * tex[iv, iu, 2] + k01 * tex[iv, iu + 1, 2] + k10 * tex[iv + 1, iu, 2] + k11 * tex[iv + 1, iu + 1, 2]
      tr = w0 * tint[i0, 0] + w1 * tint[i1, 0] + w2 * tint[i2, 0]
      tg = w0 * tint[i0, 1] + w1 * tint[i1, 1] + w2 * tint[i2, 1]
      tb = w0 * tint[i0, 2] + w1 * tint[i1, 2] + w2 * tint[i2, 2]
      nx = w0 * nrm[i0, 0] + w1 * nrm[i1, 0] + w2 * nrm[i2, 0]
      ny = w0 * nrm[i0, 1] + w1 * nrm[i1, 1] + w2 * nrm[i2, 1]
      nz = w0 * nrm[i0, 2] + w1 * nrm[i1, 2] + w2 * nrm[i2, 2]
      nl = np.sqrt(nx * nx + ny * ny + nz * nz) + 1e-12
      nx /= nl
      ny /= nl
      nz /= nl
      # view vector (towards the camera)
      vx = -(xx + 0.5 - cx) / f
      vy = -(yy + 0.5 - cy) / f
      vz = -1.0
      vl = np.sqrt(vx * vx + vy * vy + 1.0)
      vx /= vl
      vy /= vl
      vz /= vl
      ndv = nx * vx + ny * vy + nz * vz
      m = tri_mat[t]
      if ndv < 0.0:
        if mats[m, M_CULL] < 0.5:
          nx, ny, nz, ndv = -nx, -ny, -nz, -ndv
        else:
          ndv = 0.0
      wrap = mats[m, M_WRAP]
      ndl = (nx * lx + ny * ly + nz * lz + wrap) / (1.0 + wrap)
      if ndl < 0.0:
        ndl = 0.0
      ndf = nx * light[9] + ny * light[10] + nz * light[11]
      if ndf < 0.0:
        ndf = 0.0
      hemi = 0.75 - 0.25 * ny
      # soft occlusion at grazing angles
      occ = 0.82 + 0.18 * ndv
      hx = lx + vx
      hy = ly + vy
      hz = lz + vz
      hl = np.sqrt(hx * hx + hy * hy + hz * hz) + 1e-12
      ndh = (nx * hx + ny * hy + nz * hz) / hl
      if ndh < 0.0:
        ndh = 0.0
      lum = (tr + tg + tb) * (1.0 / 3.0)
      spec = 0.0
      if ndh > 0.5:
        spec = mats[m, M_SPEC] * ndh ** mats[m, M_SHINE] * lum * (0.3 + 0.7 * ndl)
      if mats[m, M_CATCH] > 0.0 and ndv > 0.97:
        spec += mats[m, M_CATCH] * ndv ** 300.0
      alb0 = c0 * tr
      alb1 = c1 * tg
      alb2 = c2 * tb
      out[yy, xx, 0] = alb0 * (occ * hemi * light[6] + ndl * light[3] + ndf * light[12]) + spec * light[3]
      out[yy, xx, 1] = alb1 * (occ * hemi * light[7] + ndl * light[4] + ndf * light[13]) + spec * light[4]
      out[yy, xx, 2] = alb2 * (occ * hemi * light[8] + ndl * light[5] + ndf * light[14]) + spec * light[5]


def render_buffers(p, nrm, uv, tint, tris, tri_mat, mats, tex, bg, light, f, cx, cy, bufs):
  """Runs rasterize + shade into bufs = (zbuf, tbuf, b0, b1, out); returns out (float32 HxWx3)."""
  zbuf, tbuf, b0, b1, out = bufs
  zbuf[:] = 0.0
  tbuf[:] = -1
  rasterize(p, tris, tri_mat, mats, f, cx, cy, zbuf, tbuf, b0, b1)
  shade(p, nrm, uv, tint, tris, tri_mat, mats, tex, bg, light, f, cx, cy, zbuf, tbuf, b0, b1, out)
  return out


def make_buffers(h: int, w: int):
  return (np.zeros((h, w), np.float32), np.full((h, w), -1, np.int32), np.zeros((h, w), np.float32),
          np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32))

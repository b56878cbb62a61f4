"""The measures every evaluator shares (`eval report`, `eval motion`, `eval controls`,
`eval reenact`), so that generated video and real footage are read one way: PSNR and SSIM as
the papers report them, on device (batched, jittable) and on the host (one pair, no dispatch);
the audio envelope, lagged correlation, head-motion speed and jitter, the mouth gap of a face
mesh; SVG line charts; and opening a built dataset split.

  PSNR  dB on [0, 255]: per image 10 log10(255^2 / MSE), capped at PSNR_CAP_DB (identical
        images) so that means stay finite.
  SSIM  on [0, 1] images (x / 255, max_val 1), Gaussian window 11 / sigma 1.5 as in
        `vasa_jax.losses.ssim` (the same value as SSIM on [-1, 1] with max_val 2).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import losses as losses_lib
from vasa_jax.constants import SAMPLES_PER_FRAME as SPF

__all__ = ["PSNR_CAP_DB", "psnr", "ssim", "psnr_image", "ssim_image", "parse_dataset",
           "open_dataset", "envelope", "lagged_corr", "delta_p", "jitter",
           "delay_audio", "eye_corner_distance", "mouth_gap", "svg_panels", "MAX_LAG"]

PSNR_CAP_DB = 100.0
MAX_LAG = 5                       # frames: lagged correlations look this far either way
MOUTH = (13, 14)                  # inner upper / lower lip centre (face-mesh indices)
EYE_CORNERS = (33, 263)
SSIM_RANGE = "[0, 1]"


# ----------------------------------------------------------------------------- metrics

def psnr(x, y, *, data_range: float = 255.0, max_db: float | None = PSNR_CAP_DB):
  """Per-image PSNR in dB of [..., H, W, C] images on a [0, data_range] scale (uint8 is fine).

  Identical images give `max_db` (or inf with max_db=None). Works eagerly and under jit.
  """
  x = jnp.asarray(x).astype(jnp.float32)
  y = jnp.asarray(y).astype(jnp.float32)
  mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
  peak = float(data_range) ** 2
  if max_db is not None:
    mse = jnp.maximum(mse, peak * 10.0 ** (-float(max_db) / 10.0))
  return 10.0 * jnp.log10(peak / mse)


def ssim(x, y, *, data_range: float = 255.0):
  """Per-image SSIM of [..., H, W, C] images, computed on [0, 1] (x / data_range).

  Gaussian window 11, sigma 1.5 (`vasa_jax.losses.ssim`); identical images give 1.
  """
  x = jnp.asarray(x).astype(jnp.float32) / float(data_range)
  y = jnp.asarray(y).astype(jnp.float32) / float(data_range)
  lead = x.shape[:-3]
  xb = x.reshape((-1,) + x.shape[-3:])
  yb = y.reshape((-1,) + y.shape[-3:])
  per = jax.vmap(lambda a, b: losses_lib.ssim(a[None], b[None], max_val=1.0))(xb, yb)
  return per.reshape(lead)


def psnr_image(x: np.ndarray, y: np.ndarray, *, data_range: float = 255.0,
               max_db: float | None = PSNR_CAP_DB) -> float:
  """`psnr` of one pair of images on the host (no JAX dispatch per call)."""
  mse = float(np.mean(np.square(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
  peak = float(data_range) ** 2
  if max_db is not None:
    mse = max(mse, peak * 10.0 ** (-float(max_db) / 10.0))
  return float(10.0 * np.log10(peak / mse)) if mse > 0 else float("inf")


def ssim_image(x: np.ndarray, y: np.ndarray, *, data_range: float = 255.0) -> float:
  """SSIM of one pair of images [H, W, C] on the host (OpenCV filters): the same figure as
  `ssim` (Gaussian window 11, sigma 1.5, valid region), without a JAX dispatch per call (the
  per-frame evaluators call it thousands of times on boxes of changing size)."""
  import cv2
  x = np.asarray(x, np.float64) / float(data_range)
  y = np.asarray(y, np.float64) / float(data_range)
  side = min(x.shape[0], x.shape[1])
  win = min(11, side if side % 2 else side - 1)
  k = losses_lib._gaussian_1d(win, 1.5 * win / 11).astype(np.float64)
  r = (win - 1) // 2

  def f(a):
    out = cv2.sepFilter2D(a, cv2.CV_64F, k, k, borderType=cv2.BORDER_CONSTANT)
    return out[r:a.shape[0] - r, r:a.shape[1] - r]
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  mx, my = f(x), f(y)
  sxx = f(x * x) - mx * mx
  syy = f(y * y) - my * my
  sxy = f(x * y) - mx * my
  m = (2 * mx * my + c1) / (mx * mx + my * my + c1) * (2 * sxy + c2) / (sxx + syy + c2)
  return float(m.mean())


# ----------------------------------------------------------------------------- datasets

def parse_dataset(item) -> tuple[str, str]:
  """(name, split) of "name:split" (split defaults to "test") or of a (name, split) pair."""
  if isinstance(item, str):
    name, _, split = item.partition(":")
    return name, split or "test"
  name, split = item
  return str(name), str(split)


def open_dataset(name: str, split: str, data_dir: str | None):
  """The random-access source of a built dataset split; FileNotFoundError (one line) when it
  cannot be opened."""
  from vasa_jax.data import pipeline
  try:
    return pipeline.open_source(name, split, data_dir=data_dir)
  except FileNotFoundError:
    raise
  except Exception as e:   # unknown name / config / split
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise FileNotFoundError(f"cannot open dataset {name}:{split} in {data_dir}: {msg}") from None


# ----------------------------------------------------------------------------- time series

def envelope(audio: np.ndarray, n: int) -> np.ndarray:
  """Per-frame RMS of 16 kHz audio for n frames (the same envelope as tools/mouth_sync.py)."""
  a = np.pad(np.asarray(audio, np.float64), (0, max(0, n * SPF - len(audio))))[:n * SPF]
  return np.sqrt((a.reshape(n, SPF) ** 2).mean(1))


def lagged_corr(x: np.ndarray, y: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
  """(best Pearson r, lag) of x[t + lag] against y[t]; (nan, 0) for constant or short input."""
  best = (-math.inf, 0)
  n = min(len(x), len(y))
  for lag in range(-max_lag, max_lag + 1):
    a, b = (x[lag:n], y[:n - lag]) if lag >= 0 else (x[:n + lag], y[-lag:n])
    if len(a) < 10 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
      continue
    c = float(np.corrcoef(a, b)[0, 1])
    if c > best[0]:
      best = (c, lag)
  return (float("nan"), 0) if best[0] == -math.inf else best


def delta_p(angles_deg: np.ndarray) -> float:
  """Mean absolute frame-to-frame change of the pose angles [T,3] (degrees per frame)."""
  return float(np.mean(np.abs(np.diff(angles_deg, axis=0)))) if len(angles_deg) > 1 else 0.0


def jitter(x: np.ndarray) -> float:
  """Mean absolute second difference over time (per frame^2) of [T] or [T,k]."""
  return float(np.mean(np.abs(np.diff(x, n=2, axis=0)))) if len(x) > 2 else 0.0


def delay_audio(audio: np.ndarray, frames: int) -> np.ndarray:
  """The audio `frames` video frames later (silence first), same length."""
  a = np.asarray(audio, np.float32)
  return np.concatenate([np.zeros(frames * SPF, np.float32), a])[:len(a)]


# ----------------------------------------------------------------------------- face mesh

def eye_corner_distance(points):
  """Outer eye-corner distance of mesh points [..., N, 3] (pixels or template units)."""
  p = np.asarray(points)
  return np.linalg.norm(p[..., EYE_CORNERS[1], :2] - p[..., EYE_CORNERS[0], :2], axis=-1)


def mouth_gap(points) -> np.ndarray:
  """Inner-lip gap / eye-corner distance of mesh points [T, N, 3] -> [T] (image-space or
  canonical points: the eval measures on the canonical mesh, so head pose does not count)."""
  p = np.asarray(points)
  return (p[..., MOUTH[1], 1] - p[..., MOUTH[0], 1]) / eye_corner_distance(p)


# ----------------------------------------------------------------------------- plots (SVG)

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def svg_panels(panels: Sequence[dict], *, width: int = 720, panel_height: int = 200) -> str:
  """Stacked line-chart panels: each {"title", "xlabel", "ylabel", "series": [(label, x, y)]}
  and optionally "vlines": x values marked by thin vertical lines (e.g. window seams).
  `width` is the plot area plus axes; the legend column is added to it, as wide as the labels."""
  longest = max((len(str(s[0])) for p in panels for s in p["series"]), default=0)
  ml, mr, mt, mb = 60, max(150, 40 + int(6.5 * longest)), 26, 34
  width = width + mr - 150
  h = len(panels) * panel_height
  el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
        f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>']
  for p_i, p in enumerate(panels):
    y0 = p_i * panel_height
    pw, ph = width - ml - mr, panel_height - mt - mb
    xs = np.concatenate([np.asarray(s[1], np.float64) for s in p["series"]])
    ys = np.concatenate([np.asarray(s[2], np.float64) for s in p["series"]])
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
      continue
    x_lo, x_hi = float(xs[ok].min()), float(xs[ok].max())
    y_lo, y_hi = float(ys[ok].min()), float(ys[ok].max())
    if x_hi - x_lo < 1e-12:
      x_hi = x_lo + 1.0
    if y_hi - y_lo < 1e-12:
      y_lo, y_hi = y_lo - 0.5, y_hi + 0.5

    def px(x):
      return ml + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y):
      return y0 + mt + (1.0 - (y - y_lo) / (y_hi - y_lo)) * ph

    el.append(f'<text x="{ml}" y="{y0 + 16}" font-size="13" font-weight="bold">'
              f'{_esc(p["title"])}</text>')
    el.append(f'<rect x="{ml}" y="{y0 + mt}" width="{pw}" height="{ph}" fill="none" '
              f'stroke="#999"/>')
    for frac in (0.0, 0.5, 1.0):
      yv = y_lo + frac * (y_hi - y_lo)
      yv = 0.0 if abs(yv) < 1e-6 * (y_hi - y_lo) else yv
      el.append(f'<text x="{ml - 4}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
      xv = x_lo + frac * (x_hi - x_lo)
      el.append(f'<text x="{px(xv):.1f}" y="{y0 + mt + ph + 14}" text-anchor="middle">'
                f'{xv:.3g}</text>')
    el.append(f'<text x="{ml + pw / 2}" y="{y0 + panel_height - 4}" text-anchor="middle">'
              f'{_esc(p.get("xlabel", ""))}</text>')
    el.append(f'<text x="14" y="{y0 + mt + ph / 2}" text-anchor="middle" '
              f'transform="rotate(-90 14 {y0 + mt + ph / 2})">{_esc(p.get("ylabel", ""))}</text>')
    for xv in p.get("vlines", ()):
      if x_lo <= xv <= x_hi:
        el.append(f'<line x1="{px(xv):.1f}" y1="{y0 + mt}" x2="{px(xv):.1f}" y2="{y0 + mt + ph}" '
                  f'stroke="#ccc" stroke-width="1"/>')
    for s_i, (label, x, y) in enumerate(p["series"]):
      color = _COLORS[s_i % len(_COLORS)]
      pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y)
                     if np.isfinite(a) and np.isfinite(b))
      el.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.4" points="{pts}"/>')
      ly = y0 + mt + 12 + 16 * s_i
      el.append(f'<line x1="{width - mr + 8}" y1="{ly - 4}" x2="{width - mr + 26}" '
                f'y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
      el.append(f'<text x="{width - mr + 30}" y="{ly}">{_esc(label)}</text>')
  el.append("</svg>")
  return "\n".join(el)


def _esc(s: str) -> str:
  return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

"""Image metrics and dataset helpers shared by the evaluators (`eval reenact`, `eval report`,
the geometry self-reenactment): PSNR and SSIM as the papers report them, on device (batched,
jittable) and on the host (one pair, no dispatch), and opening a built dataset split.

  PSNR  dB on [0, 255]: per image 10 log10(255^2 / MSE), capped at PSNR_CAP_DB (identical
        images) so that means stay finite.
  SSIM  on [0, 1] images (x / 255, max_val 1), Gaussian window 11 / sigma 1.5 as in
        `vasa_jax.losses.ssim` (the same value as SSIM on [-1, 1] with max_val 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import losses as losses_lib

__all__ = ["PSNR_CAP_DB", "psnr", "ssim", "psnr_image", "ssim_image", "parse_dataset",
           "open_dataset"]

PSNR_CAP_DB = 100.0
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

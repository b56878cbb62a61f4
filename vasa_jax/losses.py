"""Stage-1 image losses: pure functions returning scalars (the trainers weight and sum them).

Images are float in [-1, 1], [B, H, W, 3]. Nothing here downloads anything: the structural /
perceptual terms are multi-scale SSIM (gaussian window) and a Laplacian-pyramid L1; a VGG19
perceptual loss is available only when the user passes a local .npz of weights
(`make_vgg_loss(path)`). The GAN terms are the hinge losses and discriminator feature
matching; `mouth_region_loss` weights the mouth of the aligned crop.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

__all__ = [
    "l1", "ssim", "ms_ssim", "ms_ssim_loss", "laplacian_pyramid", "laplacian_l1",
    "hinge_d_loss", "hinge_g_loss", "feature_matching", "mouth_mask", "mouth_region_loss",
    "VGG19", "load_vgg19_params", "make_vgg_loss",
]


def _f32(x):
  return jnp.asarray(x).astype(jnp.float32)


def l1(x, y):
  return jnp.mean(jnp.abs(_f32(x) - _f32(y)))


# ----------------------------------------------------------------------------- SSIM

def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * (r / sigma) ** 2)
  return (g / g.sum()).astype(np.float32)


def _sep_filter(x, k1d, padding="VALID"):
  """Depthwise separable filter of [B,H,W,C] with a 1D kernel along H then W."""
  c = x.shape[-1]
  k = jnp.asarray(k1d)
  kh = jnp.tile(k.reshape(-1, 1, 1, 1), (1, 1, 1, c))
  kw = jnp.tile(k.reshape(1, -1, 1, 1), (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), padding, dimension_numbers=dn,
                                   feature_group_count=c)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), padding, dimension_numbers=dn,
                                      feature_group_count=c)


def _ssim_map(x, y, max_val, window, sigma):
  side = min(x.shape[1], x.shape[2])
  win = min(window, side if side % 2 else side - 1)
  k = _gaussian_1d(win, sigma * win / window)
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  mx, my = _sep_filter(x, k), _sep_filter(y, k)
  sxx = _sep_filter(x * x, k) - mx * mx
  syy = _sep_filter(y * y, k) - my * my
  sxy = _sep_filter(x * y, k) - mx * my
  cs = (2 * sxy + c2) / (sxx + syy + c2)
  lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
  return lum * cs


def ssim(x, y, *, max_val: float = 2.0, window: int = 11, sigma: float = 1.5):
  """Mean SSIM of two image batches (gaussian window; max_val 2 for [-1, 1] images)."""
  return jnp.mean(_ssim_map(_f32(x), _f32(y), max_val, window, sigma))


def _downsample2(x):
  b, h, w, c = x.shape
  h2, w2 = h // 2 * 2, w // 2 * 2
  x = x[:, :h2, :w2]
  return x.reshape(b, h2 // 2, 2, w2 // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x, y, *, scales: int = 4, max_val: float = 2.0, window: int = 11,
            weights: Sequence[float] | None = None):
  """Multi-scale SSIM: weighted mean of SSIM over a 2x average-pooled pyramid.

  The arithmetic mean across scales (instead of Wang et al.'s product of powers) keeps the loss
  and its gradient well defined when a scale's contrast term is negative. Scales stop before
  the image side falls under 8 px. Identical images give exactly 1.
  """
  x, y = _f32(x), _f32(y)
  vals = []
  for k in range(scales):
    if k and min(x.shape[1], x.shape[2]) < 16:
      break
    if k:
      x, y = _downsample2(x), _downsample2(y)
    vals.append(ssim(x, y, max_val=max_val, window=window))
  w = np.ones(len(vals)) if weights is None else np.asarray(weights[:len(vals)], np.float64)
  w = jnp.asarray(w / w.sum(), jnp.float32)
  return jnp.sum(jnp.stack(vals) * w)


def ms_ssim_loss(x, y, **kw):
  return 1.0 - ms_ssim(x, y, **kw)


# ----------------------------------------------------------------------------- Laplacian pyramid

_BLUR5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def _blur(x):
  xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  return _sep_filter(xp, _BLUR5)


def laplacian_pyramid(x, levels: int = 4) -> list:
  """[band_0 (finest), ..., band_{L-2}, low-pass residual]; stops when a side < 8 px."""
  x = _f32(x)
  bands = []
  for _ in range(levels - 1):
    if min(x.shape[1], x.shape[2]) < 8:
      break
    low = _downsample2(_blur(x))
    up = jnp.repeat(jnp.repeat(low, 2, axis=1), 2, axis=2)
    up = _blur(up)
    bands.append(x[:, :up.shape[1], :up.shape[2]] - up)
    x = low
  bands.append(x)
  return bands


def laplacian_l1(x, y, *, levels: int = 4):
  """Mean over pyramid levels of the L1 between Laplacian bands (coarser bands weigh 2^k)."""
  px, py = laplacian_pyramid(x, levels), laplacian_pyramid(y, levels)
  return sum((2.0 ** k) * l1(a, b) for k, (a, b) in enumerate(zip(px, py))) / len(px)


# ----------------------------------------------------------------------------- VGG19 (optional)

_VGG19_BLOCKS = (2, 2, 4, 4, 4)
_VGG19_NAMES = tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(_VGG19_BLOCKS) for i in range(n))
# torchvision vgg19 `features.N` indices of the 16 convs
_TORCH_IDX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
DEFAULT_VGG_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


class VGG19(nn.Module):
  """VGG19 feature extractor (convs + ReLU + 2x2 max-pool); widths come from the weights file.

  `widths` lists the output channels of conv1_1, conv1_2, ... (as many as are needed). Input is
  [B,H,W,3] in [-1, 1]; ImageNet mean/std normalisation happens inside. Returns a dict
  {"relu{b}_{i}": activations} for the requested layers.
  """
  widths: tuple
  layers: tuple = DEFAULT_VGG_LAYERS

  @nn.compact
  def __call__(self, x):
    mean = jnp.array([0.485, 0.456, 0.406], jnp.float32)
    std = jnp.array([0.229, 0.224, 0.225], jnp.float32)
    x = ((_f32(x) + 1.0) / 2.0 - mean) / std
    out = {}
    last = max(_VGG19_NAMES.index("conv" + l[len("relu"):]) for l in self.layers)
    k = 0
    for b, n in enumerate(_VGG19_BLOCKS):
      if b:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for i in range(n):
        name = f"conv{b + 1}_{i + 1}"
        x = nn.relu(nn.Conv(self.widths[k], (3, 3), padding="SAME", name=name)(x))
        relu = f"relu{b + 1}_{i + 1}"
        if relu in self.layers:
          out[relu] = x
        if k == last:
          return out
        k += 1
    return out


def load_vgg19_params(path: str) -> tuple[dict, tuple]:
  """Reads VGG19 weights from a local .npz -> (flax params, widths).

  Accepted key layouts: `conv1_1/kernel` [3,3,Cin,Cout] + `conv1_1/bias` (ours; also `_W`/`_b`
  suffixes), or torchvision's `features.0.weight` [Cout,Cin,3,3] + `features.0.bias`. A file may
  hold only the first convs (enough for the requested layers).
  """
  data = dict(np.load(path))
  params, widths = {}, []
  for k, name in enumerate(_VGG19_NAMES):
    cands = [(f"{name}/kernel", f"{name}/bias", False), (f"{name}_W", f"{name}_b", False),
             (f"features.{_TORCH_IDX[k]}.weight", f"features.{_TORCH_IDX[k]}.bias", True)]
    for kk, bk, torch_layout in cands:
      if kk in data:
        w = np.asarray(data[kk], np.float32)
        if torch_layout:
          w = w.transpose(2, 3, 1, 0)
        params[name] = {"kernel": jnp.asarray(w), "bias": jnp.asarray(data[bk], jnp.float32)}
        widths.append(w.shape[-1])
        break
    else:
      break
  if not params:
    raise ValueError(f"{path}: no VGG19 conv weights found (expected keys like conv1_1/kernel "
                     "or features.0.weight)")
  return {"params": params}, tuple(widths)


def make_vgg_loss(path: str, layers: Sequence[str] = DEFAULT_VGG_LAYERS,
                  weights: Sequence[float] = DEFAULT_VGG_WEIGHTS) -> Callable:
  """Perceptual loss (x, y) -> scalar: weighted L1 of VGG19 activations, y's stop-gradient."""
  variables, widths = load_vgg19_params(path)
  avail = {f"relu{n[len('conv'):]}" for n in _VGG19_NAMES[:len(widths)]}
  pairs = [(l, w) for l, w in zip(layers, weights) if l in avail]
  if not pairs:
    raise ValueError(f"{path}: the weights do not reach any of the layers {tuple(layers)}")
  net = VGG19(widths=widths, layers=tuple(l for l, _ in pairs))

  def loss(x, y):
    fx = net.apply(variables, x)
    fy = jax.lax.stop_gradient(net.apply(variables, y))
    return sum(w * l1(fx[l], fy[l]) for l, w in pairs)

  return loss


# ----------------------------------------------------------------------------- GAN

def _logits(d_out) -> list:
  """Discriminator output (list of {"logits", "features"} per scale, or arrays) -> logits list."""
  if isinstance(d_out, dict):
    d_out = [d_out]
  if not isinstance(d_out, (list, tuple)):
    d_out = [d_out]
  return [o["logits"] if isinstance(o, dict) else o for o in d_out]


def hinge_d_loss(real, fake):
  """Discriminator hinge: mean over scales of E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
  r, f = _logits(real), _logits(fake)
  terms = [jnp.mean(jax.nn.relu(1.0 - _f32(a))) + jnp.mean(jax.nn.relu(1.0 + _f32(b)))
           for a, b in zip(r, f)]
  return sum(terms) / len(terms)


def hinge_g_loss(fake):
  """Generator hinge: mean over scales of -E[D(fake)]."""
  f = _logits(fake)
  return sum(-jnp.mean(_f32(a)) for a in f) / len(f)


def feature_matching(real, fake):
  """L1 between discriminator features of real (stop-gradient) and fake, mean over layers/scales."""
  terms = []
  for r, f in zip(real, fake):
    for a, b in zip(r["features"], f["features"]):
      terms.append(l1(jax.lax.stop_gradient(a), b))
  return sum(terms) / max(len(terms), 1)


# ----------------------------------------------------------------------------- mouth region

def mouth_mask(height: int, width: int, region: Sequence[float] = (0.6, 0.5, 0.11, 0.17)):
  """A soft elliptical weight map [H, W] in [0, 1] over where the mouth sits in the aligned crop.

  `region` = (centre y, centre x, radius y, radius x) as fractions of the side. The crops of
  both dataset builders (and of `prepare_portrait`) are face-normalised the same way, so the
  mouth falls in one place up to head motion; the mask is 1 inside the ellipse and falls off
  as a Gaussian outside it, wide enough to cover turned and shifted heads.
  """
  cy, cx, ry, rx = (float(v) for v in region)
  y = (np.arange(height, dtype=np.float64) + 0.5) / height
  x = (np.arange(width, dtype=np.float64) + 0.5) / width
  d = np.sqrt(((y[:, None] - cy) / ry) ** 2 + ((x[None, :] - cx) / rx) ** 2)
  m = np.exp(-0.5 * (np.maximum(d - 1.0, 0.0) / 0.5) ** 2)
  return m.astype(np.float32)


def mouth_region_loss(x, y, region: Sequence[float] = (0.6, 0.5, 0.11, 0.17)):
  """Mask-weighted L1 of the image and of its finest Laplacian band over the mouth region.

  Whole-image losses spend little on the mouth (a few percent of the pixels), so a small model
  trained briefly reconstructs a static mouth; this term makes the lips' shape and edges count
  as much as the rest of the face together. The band term rewards sharp lip edges, which blur
  would otherwise trade away.
  """
  x, y = _f32(x), _f32(y)
  m = jnp.asarray(mouth_mask(x.shape[1], x.shape[2], region))[None, :, :, None]
  norm = jnp.sum(m) * x.shape[0] * x.shape[-1]
  pix = jnp.sum(m * jnp.abs(x - y)) / norm
  bx, by = laplacian_pyramid(x, 2)[0], laplacian_pyramid(y, 2)[0]
  mb = m[:, :bx.shape[1], :bx.shape[2]]
  band = jnp.sum(mb * jnp.abs(bx - by)) / (jnp.sum(mb) * x.shape[0] * x.shape[-1])
  return pix + 2.0 * band

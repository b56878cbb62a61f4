"""Stage 1, geometry-grounded: the learned part of the warping decoder.

The motion field comes from measured geometry (`vasa_jax.geometry.flow`: the dense
displacement that the portrait's and the driving face meshes imply); this network learns only
what geometry cannot give, on small patches aligned to the driving face where the portrait
lacks content: the mouth (teeth, tongue, the dark inside, lips parting) and each eye (closed
lids, an iris the lids covered).

For each part patch [B, r, r, 8] (`vasa_jax.geometry.render` builds them: warped portrait RGB,
the part's interior mask, the warp's log area ratio, the portrait's own patch) a small U-Net
predicts

  residual flow   [B, r, r, 2]  a correction of the geometric warp inside the patch
  occlusion m     [B, r, r]     1: the (re-sampled) warped portrait is right here; 0: generate
  content         [B, r, r, 3]  RGB for what the portrait does not show
  alpha           [B, r, r]     how much of the patch replaces the geometric warp

    rgb    = m * sample(warped, residual flow) + (1 - m) * content
    output = (1 - alpha * window) * warped + alpha * window * rgb

where `window` is a fixed feather that is 0 at the patch border, so the decoder never touches
pixels outside its parts and the portrait's own pixels stay sharp at the photo's resolution. A
fresh network has alpha ~ 0.05 (inside the allowed region) and m ~ 0.95: it starts as the
geometric warp.

    dec = GeometryDecoder(config.model)
    params = dec.init(rng, *dummy_inputs(config.model, 1))["params"]
    out = dec.apply({"params": params}, mouth_in, eye_in)     # {"mouth": {...}, "eye": {...}}
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from vasa_jax.geometry.render import IN_CHANNELS, feather_window as feather
from vasa_jax.models import layers
from vasa_jax.models.layers import Conv, GroupNorm, ResBlock, act, get_dtype
from vasa_jax.ops.grid_sample import grid_sample_2d, identity_grid_2d

__all__ = ["PartNet", "GeometryDecoder", "dummy_inputs", "blend", "feather", "IN_CHANNELS",
           "param_count"]

class PartNet(nn.Module):
  """U-Net over one part patch -> {"rgb", "alpha", "flow", "occlusion", "content"}."""
  widths: Sequence[int]
  blocks: Sequence[int]
  groups: int = 8
  max_flow: float = 0.15      # normalised patch units (1 = half the patch side)
  grow: int = 2               # allowed region dilation, in pixels of the patch
  void: bool = False          # the driving interior that the warp stretches to under a quarter
                              # of its area has no portrait pixels: content only (void_mask)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dt = self.dtype
    widths = tuple(self.widths)
    blocks = layers.per_stage(self.blocks, len(widths), "blocks")
    warped = x[..., :3].astype(jnp.float32)
    h = Conv(widths[0], (3, 3), dtype=dt, name="stem")(x.astype(dt))
    skips = []
    for i, w in enumerate(widths):
      for b in range(blocks[i]):
        h = ResBlock(w, 2, self.groups, dt, name=f"enc{i}_res{b}")(h)
      skips.append(h)
      if i < len(widths) - 1:
        h = Conv(widths[i + 1], (3, 3), strides=2, dtype=dt, name=f"enc{i}_down")(h)
    for i in range(len(widths) - 2, -1, -1):
      h = layers.upsample_nearest(act(h), (2, 2))
      h = jnp.concatenate([h, act(skips[i])], axis=-1)
      h = Conv(widths[i], (3, 3), dtype=dt, name=f"dec{i}_fuse")(h)
    h = act(GroupNorm(self.groups, dt, name="norm_out")(h))
    out = Conv(7, (3, 3), zero_init=True, out_axis="out_small", dtype=dt, name="head")(h)
    out = out.astype(jnp.float32)
    flow = self.max_flow * jnp.tanh(out[..., 0:2])
    occ = nn.sigmoid(out[..., 2] + 3.0)
    content = jnp.tanh(out[..., 3:6])
    alpha = nn.sigmoid(out[..., 6] - 3.0) * allowed_mask(x, self.grow)
    if self.void:
      hole = void_mask(x)
      occ = occ * (1.0 - hole)
      alpha = jnp.maximum(alpha, hole)
    r = x.shape[1]
    grid = identity_grid_2d(r, r)[None] + flow
    copy = grid_sample_2d(warped, grid, padding_mode="border")
    rgb = occ[..., None] * copy + (1.0 - occ[..., None]) * content
    return {"rgb": rgb, "alpha": alpha, "flow": flow, "occlusion": occ, "content": content}


def _stretched(x, log_ratio: float, soft: float):
  """[B, r, r] in [0, 1]: 1 where the warp's log area ratio (ch 4) is below log_ratio - soft,
  0 above log_ratio, linear between."""
  return jnp.clip((log_ratio - x[..., 4]) / soft, 0.0, 1.0)


def void_mask(x):
  """[B, r, r] in [0, 1]: the driving interior (ch 3) where the warp stretches the portrait to
  under a quarter of its area (ch 4: log ratio), i.e. a mouth opened wider than the portrait's.
  The geometric warp can only smear the lips over it, so there the decoder's content is the
  output. Softened by one pixel so the content meets the lips without a hard edge."""
  m = (x[..., 3] * _stretched(x, -1.39, 0.5))[..., None]
  m = nn.avg_pool(m, (3, 3), strides=(1, 1), padding="SAME")
  return m[..., 0]


def allowed_mask(x, grow: int = 2):
  """[B, r, r] where the decoder may change the warped portrait: the driving interior (ch 3),
  where the portrait's own interior lands (ch 8) and where the warp stretches the portrait to
  under half its area (ch 4: log ratio), dilated by `grow` pixels and softened."""
  m = jnp.maximum(jnp.maximum(x[..., 3], x[..., 8]), _stretched(x, -0.69, 0.4))[..., None]
  k = 2 * grow + 1
  m = nn.max_pool(m, (k, k), strides=(1, 1), padding="SAME")
  m = nn.avg_pool(m, (3, 3), strides=(1, 1), padding="SAME")
  return m[..., 0]


class GeometryDecoder(nn.Module):
  """The two part networks: `mouth` and `eye` (both eyes share it; the second eye's patch comes
  mirrored). `config` is the `model` sub-config of configs/face_latent.py (kind="geometry")."""
  config: ml_collections.ConfigDict

  def setup(self):
    c = self.config
    dt = get_dtype(c.dtype)
    self.mouth = PartNet(tuple(c.mouth.widths), tuple(c.mouth.blocks), c.groups,
                         float(c.max_flow), grow=int(c.mouth.get("grow", 2)),
                         void=bool(c.mouth.get("void", False)), dtype=dt)
    self.eye = PartNet(tuple(c.eye.widths), tuple(c.eye.blocks), c.groups, float(c.max_flow),
                       grow=int(c.eye.get("grow", 1)), dtype=dt)

  def __call__(self, mouth, eyes):
    """mouth [B, rm, rm, 8], eyes [2B, re, re, 8] (eye a then eye b of each frame, interleaved
    per frame: [f0a, f0b, f1a, ...])."""
    return {"mouth": self.mouth(mouth), "eye": self.eye(eyes)}


def blend(warped, out: dict):
  """The patch composite (training and tests): (1 - alpha w) warped + alpha w rgb."""
  r = warped.shape[1]
  a = (out["alpha"] * jnp.asarray(feather(r)))[..., None]
  return (1.0 - a) * warped + a * out["rgb"]


def dummy_inputs(model_config, batch: int = 1):
  rm, re = int(model_config.mouth.res), int(model_config.eye.res)
  return (jnp.zeros((batch, rm, rm, IN_CHANNELS), jnp.float32),
          jnp.zeros((2 * batch, re, re, IN_CHANNELS), jnp.float32))


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))

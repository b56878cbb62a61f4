"""Stage 1, geometry-grounded: the learned part of the warping decoder, a reference-guided
mouth compositor.

The motion field comes from measured geometry (`vasa_jax.geometry.flow`: the dense
displacement that the portrait's and the driving face meshes imply), and what the portrait
does not show is copied from real footage (`vasa_jax.geometry.banks`: a donor's real mouth
interior warped onto the driving inner-lip contour). This network only learns how to put that
reference into the warped portrait, on a small patch aligned to the driving mouth: where to
sample it (a small flow), how to shade it, a small residual, and the alpha of the result. It
copies, which converges on a CPU, instead of inventing content, which a network trained with
pixel losses settles on the average of (a pale smear).

The patch inputs (`vasa_jax.geometry.render`, IN_CHANNELS = 13): the warped portrait RGB, the
mouth's interior mask, the warp's log area ratio, the portrait's own patch, where the
portrait's interior lands, the reference RGB and its coverage. The outputs are smooth fields;
at inference they are applied at the photo's own resolution to the full-resolution reference
(`render.PartState.compose`), so teeth stay as sharp as the donor's.

    dec = GeometryDecoder(config.model)
    params = dec.init(rng, *dummy_inputs(config.model, 1))["params"]
    out = dec.apply({"params": params}, mouth_in)     # {"mouth": {"alpha", "flow", ...}}
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from vasa_jax.geometry.render import BASE_CHANNELS, IN_CHANNELS, feather_window as feather
from vasa_jax.models import layers
from vasa_jax.models.layers import Conv, GroupNorm, ResBlock, act, get_dtype
from vasa_jax.ops.grid_sample import grid_sample_2d, identity_grid_2d

__all__ = ["PartNet", "GeometryDecoder", "MouthCritic", "dummy_inputs", "blend", "feather",
           "is_copy", "copy_fields",
           "IN_CHANNELS", "BASE_CHANNELS", "allowed_mask",
           "param_count"]

class PartNet(nn.Module):
  """U-Net over one part patch -> {"rgb", "alpha", "flow", "shade", "residual"}.

  Reference-guided (inputs of `render.IN_CHANNELS`: the warp's 9 channels, then the donor
  reference warped onto the driving contour and its coverage): the network copies instead of
  inventing. It predicts where to sample the reference (a small flow), how to shade it (a gain),
  a small residual, and the alpha of the result over the warped portrait:

      rgb   = (1 + shade) * sample(reference, flow) + residual
      alpha = sigmoid(a + 8 (coverage - 1/2)) * allowed
      out   = (1 - alpha * window) * warped + alpha * window * rgb

  A fresh network is the reference pasted onto the driving opening (alpha ~ coverage, no flow,
  no shading, no residual). Where there is no reference (closed lips) the reference channels
  hold the warped patch, so the same fields can only touch up the warp."""
  widths: Sequence[int]
  blocks: Sequence[int]
  groups: int = 8
  max_flow: float = 0.08      # normalised patch units (1 = half the patch side)
  max_shade: float = 0.5
  max_residual: float = 0.25
  grow: int = 2               # allowed region dilation, in pixels of the patch
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dt = self.dtype
    widths = tuple(self.widths)
    blocks = layers.per_stage(self.blocks, len(widths), "blocks")
    warped = x[..., :3].astype(jnp.float32)
    ref = x[..., BASE_CHANNELS:BASE_CHANNELS + 3].astype(jnp.float32)
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
    shade = self.max_shade * jnp.tanh(out[..., 2])
    residual = self.max_residual * jnp.tanh(out[..., 3:6])
    alpha = _alpha(out[..., 6], x, self.grow)
    r = x.shape[1]
    grid = identity_grid_2d(r, r)[None] + flow
    copy = grid_sample_2d(ref, grid, padding_mode="border")
    rgb = jnp.clip((copy + 1.0) * (1.0 + shade[..., None]) - 1.0 + residual, -1.0, 1.0)
    return {"rgb": rgb, "alpha": alpha, "flow": flow, "shade": shade, "residual": residual,
            "warped": warped}


def _alpha(logit, x, grow: int):
  """The compositor's alpha: its logit on top of the reference's coverage, where it may act."""
  cover = x[..., BASE_CHANNELS + 3].astype(jnp.float32)
  return nn.sigmoid(logit + 8.0 * (cover - 0.5)) * allowed_mask(x, grow)


def _stretched(x, log_ratio: float, soft: float):
  """[B, r, r] in [0, 1]: 1 where the warp's log area ratio (ch 4) is below log_ratio - soft,
  0 above log_ratio, linear between."""
  return jnp.clip((log_ratio - x[..., 4]) / soft, 0.0, 1.0)


def allowed_mask(x, grow: int = 2):
  """[B, r, r] where the decoder may change the warped portrait: the driving interior (ch 3),
  where the portrait's own interior lands (ch 8), where the warp stretches the portrait to
  under half its area (ch 4: log ratio) and where the reference covers the opening (ch 12),
  dilated by `grow` pixels and softened."""
  m = jnp.maximum(jnp.maximum(x[..., 3], x[..., 8]), _stretched(x, -0.69, 0.4))
  if x.shape[-1] > BASE_CHANNELS + 3:
    m = jnp.maximum(m, x[..., BASE_CHANNELS + 3])
  m = m[..., None]
  k = 2 * grow + 1
  m = nn.max_pool(m, (k, k), strides=(1, 1), padding="SAME")
  m = nn.avg_pool(m, (3, 3), strides=(1, 1), padding="SAME")
  return m[..., 0]


class GeometryDecoder(nn.Module):
  """The mouth compositor (`PartNet` over the mouth patch). The eyes have no network: an open
  eye is the photo's own pixels (vasa_jax/geometry/eyes.py). `config` is the `model`
  sub-config of configs/face_latent.py (kind="geometry")."""
  config: ml_collections.ConfigDict

  def setup(self):
    c = self.config
    self.mouth = PartNet(tuple(c.mouth.widths), tuple(c.mouth.blocks), c.groups,
                         float(c.max_flow), grow=int(c.mouth.get("grow", 2)),
                         dtype=get_dtype(c.dtype))

  def __call__(self, mouth):
    """mouth [B, r, r, IN_CHANNELS] -> {"mouth": PartNet outputs}."""
    return {"mouth": self.mouth(mouth)}


def is_copy(params) -> bool:
  """Whether the compositor's params are the copy one (its output head all zero, as at
  initialisation and as `vasa-jax export --copy-compositor` ships it)."""
  head = params["mouth"]["head"]
  return all(not np.any(np.asarray(v)) for v in jax.tree_util.tree_leaves(head))


def copy_fields(x, grow: int = 2) -> dict:
  """What a compositor with a zero head gives, without running the U-Net: the reference
  pasted onto the opening (alpha from its coverage, no flow, shade or residual).
  x [B, r, r, IN_CHANNELS] -> {"alpha", "flow", "shade", "residual"}."""
  x = x.astype(jnp.float32)
  shape = x.shape[:3]
  return {"alpha": _alpha(0.0, x, grow), "flow": jnp.zeros(shape + (2,), jnp.float32),
          "shade": jnp.zeros(shape, jnp.float32),
          "residual": jnp.zeros(shape + (3,), jnp.float32)}


class MouthCritic(nn.Module):
  """Hinge patch discriminator on the mouth patch (training only): strided 4x4 convolutions,
  GroupNorm, leaky ReLU; returns {"logits" [B, h, w, 1], "features": [per layer]} for the hinge
  and feature-matching losses (vasa_jax.losses)."""
  widths: Sequence[int] = (32, 64, 128)
  groups: int = 8

  @nn.compact
  def __call__(self, x):
    feats = []
    h = x.astype(jnp.float32)
    for i, w in enumerate(self.widths):
      h = Conv(w, (4, 4), strides=2 if i < len(self.widths) - 1 else 1, name=f"conv{i}")(h)
      if i > 0:
        h = GroupNorm(self.groups, jnp.float32, name=f"norm{i}")(h)
      h = nn.leaky_relu(h, 0.2)
      feats.append(h)
    logits = Conv(1, (3, 3), out_axis="out_small", name="logits")(h)
    return {"logits": logits.astype(jnp.float32), "features": feats}


def blend(warped, out: dict):
  """The patch composite (training and tests): (1 - alpha w) warped + alpha w rgb."""
  r = warped.shape[1]
  a = (out["alpha"] * jnp.asarray(feather(r)))[..., None]
  return (1.0 - a) * warped + a * out["rgb"]


def dummy_inputs(model_config, batch: int = 1):
  rm = int(model_config.mouth.res)
  return (jnp.zeros((batch, rm, rm, IN_CHANNELS), jnp.float32),)


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))

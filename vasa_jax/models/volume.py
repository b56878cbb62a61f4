"""Stage 1, the volume renderer: VASA-1's 3D appearance volume and warping decoder, driven by
the dense 3D displacement that the face meshes imply (no learned motion codes).

    source image [B,S,S,3] in [-1,1] -- appearance encoder --> V_app [B, D, h, w, C]
    prepare(V_app, pose_s)                               once per portrait
        each canonical voxel p samples V_app at s_s R_s p + t_s: the source head un-posed
        rigidly (its own expression is the canonical one), then 3D resblocks
    render(canonical, pose_d, verts_s, verts_d)          per frame
        each driving voxel q goes to the canonical head frame rigidly,
        u = R_d^T (q - t_d) / s_d, then moves by the mesh flow (where the driving mesh's
        vertices are, towards where the same vertices are on the portrait's mesh) plus a
        small learned residual, samples the canonical volume there; the warped volume is
        decoded to the image by a 2D network.

Motion is the measured geometry codes of vasa_jax.geometry.codes, the motion space of every
renderer and of stage 2: pose [6] (yaw, pitch, roll rad; tx, ty, tz m) and the canonical
meshes the codes decode to. Meshes enter in volume units: p = 2 s_ref c for a canonical mesh
c in template units, which puts codes.pose_mesh's pixels and models/warp.py's rigid map on the
same points (tests/test_geometry.py checks it). The residual flow ends in a zero-initialised
conv, so a fresh model warps by the mesh alone: with the portrait's own pose and mesh the
composition of both warps is the identity.

    model = VolumeDecoder(config.model)            # configs/face_latent.py:volume*
    params = model.init(rng, *dummy_inputs(config.model, 1))["params"]
    v_app = model.apply({"params": params}, image, method=VolumeDecoder.encode)
    canon = model.apply({"params": params}, v_app, pose_s, method=VolumeDecoder.prepare)
    frames = model.apply({"params": params}, canon, pose_d, verts_s, verts_d,
                         method=VolumeDecoder.render)       # [T, S, S, 3] from batch-1 canon
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from vasa_jax.models import layers
from vasa_jax.models import warp as warp_lib
from vasa_jax.models.layers import Conv, GroupNorm, ResBlock, act, get_dtype, lrelu
from vasa_jax.ops.grid_sample import grid_sample_3d, identity_grid_3d

__all__ = ["VolumeDecoder", "PatchDiscriminator", "images_to_float", "float_to_images",
           "volume_shape", "dummy_inputs", "param_count", "NUM_VERTS"]

NUM_VERTS = 478          # the face mesh's points with the irises (geometry.codes.NUM_POINTS)


def images_to_float(images):
  """uint8 [..., 3] in [0, 255] -> float32 in [-1, 1] (float input passes through)."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)


def float_to_images(x):
  """float in [-1, 1] -> uint8 in [0, 255]."""
  return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def volume_shape(config) -> tuple[int, int, int, int]:
  """(D, h, w, C) of the appearance volume for a `model` config."""
  h = config.image_size // config.down
  return (config.vol_depth, h, h, config.vol_channels)


def _log2(n: int, what: str) -> int:
  k = int(round(math.log2(n)))
  if 2 ** k != n:
    raise ValueError(f"{what} must be a power of two, got {n}")
  return k



# ----------------------------------------------------------------------------- sub-networks

class AppearanceEncoder(nn.Module):
  """Image -> 2D features at S/down -> D*C channels -> volume [B, D, h, w, C] -> 3D resblocks."""
  config: Any

  @nn.compact
  def __call__(self, x):
    c = self.config
    dt = get_dtype(c.dtype)
    n_down = _log2(c.down, "model.down")
    widths = tuple(c.app_widths)
    if len(widths) != n_down + 1:
      raise ValueError(f"model.app_widths needs log2(down) + 1 = {n_down + 1} entries")
    x = Conv(widths[0], (7, 7), dtype=dt, name="stem")(x.astype(dt))
    blocks2d = layers.per_stage(c.app_blocks2d, n_down + 1, "model.app_blocks2d")
    for i in range(n_down + 1):
      for b in range(blocks2d[i]):
        x = ResBlock(widths[i], 2, c.groups, dt, name=f"s{i}_res{b}")(x)
      if i < n_down:
        x = Conv(widths[i + 1], (3, 3), strides=2, dtype=dt, name=f"s{i}_down")(x)
    x = act(GroupNorm(c.groups, dt, name="norm_2d")(x))
    d, h, w, ch = volume_shape(c)
    x = Conv(d * ch, (1, 1), dtype=dt, name="to_volume")(x)
    x = x.reshape(x.shape[0], h, w, d, ch).transpose(0, 3, 1, 2, 4)
    for b in range(c.app_blocks3d):
      x = ResBlock(ch, 3, c.groups, dt, name=f"res3d_{b}")(x)
    return x



class ResidualFlow(nn.Module):
  """(mesh flow, canonical position) per voxel -> a correction of the flow [B, D, h, w, 3];
  zero-initialised last conv: a fresh model warps by the mesh alone."""
  config: Any

  @nn.compact
  def __call__(self, flow, points):
    c = self.config
    dt = get_dtype(c.dtype)
    x = jnp.concatenate([flow / float(c.mesh_sigma), points], -1).astype(dt)
    for i, wd in enumerate(tuple(c.residual_widths)):
      x = Conv(wd, (3, 3, 3), dtype=dt, name=f"conv{i}")(x)
      x = act(GroupNorm(c.groups, dt, name=f"norm{i}")(x))
    out = Conv(3, (3, 3, 3), zero_init=True, out_axis="out_small", dtype=dt, name="out")(x)
    return out.astype(jnp.float32)


class Decoder2D(nn.Module):
  """Warped volume [B, D, h, w, C'] -> image [B, S, S, 3] in [-1, 1]."""
  config: Any

  @nn.compact
  def __call__(self, vol):
    c = self.config
    dt = get_dtype(c.dtype)
    b, d, h, w, ch = vol.shape
    x = vol.transpose(0, 2, 3, 1, 4).reshape(b, h, w, d * ch)   # depth folded into channels
    x = Conv(c.dec_width, (1, 1), dtype=dt, name="from_volume")(x)
    for i in range(c.dec_blocks):
      x = ResBlock(c.dec_width, 2, c.groups, dt, name=f"res{i}")(x)
    n_up = _log2(c.down, "model.down")
    ups = tuple(c.dec_up_widths)
    if len(ups) != n_up:
      raise ValueError(f"model.dec_up_widths needs log2(down) = {n_up} entries")
    up_blocks = layers.per_stage(c.get("dec_up_blocks", 1), n_up, "model.dec_up_blocks")
    for i, wd in enumerate(ups):
      x = layers.upsample_nearest(x, (2, 2))
      x = Conv(wd, (3, 3), dtype=dt, name=f"up{i}_conv")(x)
      for b in range(up_blocks[i]):
        # The first block keeps its historical name so older checkpoints still load.
        x = ResBlock(wd, 2, c.groups, dt, name=f"up{i}_res" + (f"{b}" if b else ""))(x)
    x = act(GroupNorm(c.groups, dt, name="norm_out")(x))
    x = Conv(3, (3, 3), out_axis="out_small", dtype=dt, name="to_rgb")(x)
    return jnp.tanh(x.astype(jnp.float32))



# ----------------------------------------------------------------------------- the model

def dummy_inputs(config, batch: int = 1):
  """Zero inputs of `__call__`'s shapes (init, parameter shapes)."""
  s = int(config.image_size)
  pose = jnp.tile(jnp.asarray(warp_lib.REFERENCE_POSE, jnp.float32)[None], (batch, 1))
  verts = jnp.zeros((batch, NUM_VERTS, 3), jnp.float32)
  return jnp.zeros((batch, s, s, 3), jnp.float32), pose, pose, verts, verts


class VolumeDecoder(nn.Module):
  """The volume renderer's network; `config` is the `model` sub-config of
  configs/face_latent.py:volume* (kind="volume")."""
  config: ml_collections.ConfigDict

  def setup(self):
    c = self.config
    dt = get_dtype(c.dtype)
    self.appearance = AppearanceEncoder(c)
    self.residual = ResidualFlow(c)
    self.canonical_in = Conv(c.canon_channels, (1, 1, 1), dtype=dt)
    self.canonical_net = [ResBlock(c.canon_channels, 3, c.groups, dt)
                          for _ in range(c.canon_blocks)]
    self.decoder = Decoder2D(c)

  def _grid(self):
    d, h, w, _ = volume_shape(self.config)
    return identity_grid_3d(d, h, w, align_corners=self.config.align_corners)

  def _pose_kw(self):
    return dict(ref_distance=self.config.ref_distance, fov_deg=self.config.fov_deg)

  def source_grid(self, pose):
    """[B, D, h, w, 3]: where each canonical voxel samples the source volume (rigid)."""
    return warp_lib.canonical_to_source(self._grid(), pose, **self._pose_kw())

  def driving_grid(self, pose, verts_s, verts_d):
    """[B, D, h, w, 3]: where each driving voxel samples the canonical volume (rigid, the mesh
    flow from the driving mesh to the portrait's, and the learned residual)."""
    u = warp_lib.driving_to_canonical(self._grid(), pose, **self._pose_kw())
    c = self.config
    flow = warp_lib.mesh_flow(u, verts_s, verts_d, sigma=float(c.mesh_sigma),
                              depth_sigma=float(c.mesh_depth_sigma), floor=float(c.mesh_floor))
    return u + flow + self.residual(flow, u)

  def encode(self, image):
    """image [B,S,S,3] (uint8, or float in [-1,1]) -> V_app [B,D,h,w,C] (compute dtype)."""
    return self.appearance(images_to_float(image))

  def prepare(self, v_app, pose):
    """The source volume un-posed rigidly -> canonical volume (once per portrait)."""
    vol = grid_sample_3d(v_app, self.source_grid(pose), align_corners=self.config.align_corners)
    x = self.canonical_in(vol)
    for blk in self.canonical_net:
      x = blk(x)
    return x

  def render(self, canonical, pose, verts_s, verts_d):
    """Canonical volume [1 or B, ...] + driving pose [B,6] and meshes [B or 1, V, 3] ->
    image [B,S,S,3] in [-1,1]. A batch-1 canonical volume and portrait mesh are shared by B
    frames."""
    b = pose.shape[0]
    if canonical.shape[0] == 1 and b > 1:
      canonical = jnp.broadcast_to(canonical, (b,) + canonical.shape[1:])
    verts_s = jnp.broadcast_to(verts_s, (b,) + verts_s.shape[1:])
    grid = self.driving_grid(pose, verts_s, verts_d)
    vol = grid_sample_3d(canonical, grid, align_corners=self.config.align_corners)
    return self.decoder(vol)

  def __call__(self, source, pose_s, pose_d, verts_s, verts_d):
    """Reconstruct the driving frame from the source image and both frames' geometry."""
    return self.render(self.prepare(self.encode(source), pose_s), pose_d, verts_s, verts_d)


# ----------------------------------------------------------------------------- discriminator

class _ScaleDiscriminator(nn.Module):
  widths: tuple
  groups: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    feats = []
    for i, w in enumerate(self.widths):
      stride = 2 if i < len(self.widths) - 1 else 1
      x = Conv(w, (4, 4), strides=stride, dtype=self.dtype, name=f"conv{i}")(x)
      if i > 0:
        x = GroupNorm(self.groups, self.dtype, name=f"norm{i}")(x)
      x = lrelu(x)
      feats.append(x)
    logits = Conv(1, (4, 4), out_axis="out_small", dtype=self.dtype, name="logits")(x)
    return {"logits": logits.astype(jnp.float32), "features": feats}


class PatchDiscriminator(nn.Module):
  """Multi-scale hinge patch-GAN (pix2pixHD style).

  `config` is the `model` sub-config; uses config.disc.{widths, scales}. Scale k sees the image
  average-pooled by 2^k. Returns a list (one per scale) of {"logits": [B,h,w,1] float32,
  "features": [per-layer activations]} for the hinge and feature-matching losses.
  """
  config: ml_collections.ConfigDict

  @nn.compact
  def __call__(self, image):
    c = self.config
    dt = get_dtype(c.dtype)
    x = images_to_float(image).astype(dt)
    outs = []
    for k in range(c.disc.scales):
      if k:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      outs.append(_ScaleDiscriminator(tuple(c.disc.widths), c.groups, dt, name=f"scale{k}")(x))
    return outs




def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))

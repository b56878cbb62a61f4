"""Stage 1: the face latent model (MegaPortraits / VASA-1 style, 3D-aided) and its discriminator.

    image [B,S,S,3] in [-1,1]
      ├─ appearance encoder ─► V_app [B, D, h, w, C]        (h = w = S / down)
      ├─ identity encoder   ─► z_id [B, Zid]
      └─ motion encoder     ─► z_pose [B, 6] (yaw, pitch, roll rad; tx, ty, tz m), z_dyn [B, Zdyn]

    prepare(V_app, z_id, z_pose_s, z_dyn_s)        once per portrait
      source -> canonical grid (rigid^-1 + flow_s(z_dyn_s, z_id)), one grid_sample_3d,
      3D resblocks  ─► canonical [B, D, h, w, C']
    render(prepared, z_pose_d, z_dyn_d)            per frame
      canonical -> driving grid (flow_d(z_dyn_d, z_id) + rigid), one grid_sample_3d,
      [B,D,h,w,C'] -> [B,h,w,D*C'], 2D resblocks + upsampling ─► image [B,S,S,3] in [-1,1]

The coordinate conventions of the warps (metres -> normalised volume units, rotation signs) are
documented in `vasa_jax.models.warp`. Flow generators end in a zero-initialised conv and the
pose head in a zero-initialised dense layer, so a fresh model warps rigidly with the reference
pose (frontal, 0.65 m): training starts from the identity warp.

Use the methods independently with the same params:
    params = model.init(rng, source, driving)["params"]
    enc = model.apply({"params": params}, img, method=FaceLatentModel.encode)
    prep = model.apply({"params": params}, enc["v_app"], enc["z_id"], enc["z_pose"],
                       enc["z_dyn"], method=FaceLatentModel.prepare)
    frame = model.apply({"params": params}, prep, z_pose_t, z_dyn_t, method=FaceLatentModel.render)

A prepared portrait (batch 1) renders a batch of T frames at once: render(prep, z_pose [T,6],
z_dyn [T,Zdyn]). `decode` = prepare + render.
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
from vasa_jax.models.layers import (Conv, ConvEncoder, Dense, GroupNorm, ResBlock, act,
                                    get_dtype, lrelu)
from vasa_jax.ops.grid_sample import grid_sample_3d, identity_grid_3d

__all__ = ["FaceLatentModel", "PatchDiscriminator", "images_to_float", "float_to_images",
           "volume_shape"]


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


class MotionHeads(nn.Module):
  """Pooled features -> z_pose (explicit units) and z_dyn."""
  config: Any

  @nn.compact
  def __call__(self, f):
    c = self.config
    h = act(Dense(c.motion_hidden, name="hidden")(f))
    raw = Dense(6, zero_init=True, out_axis="out_small", name="pose")(h)
    angles = (c.max_angle * jnp.tanh(raw[:, :3]))
    txy = c.max_shift_m * jnp.tanh(raw[:, 3:5])
    tz = c.ref_distance * jnp.exp(c.tz_log_range * jnp.tanh(raw[:, 5:6]))
    z_pose = jnp.concatenate([angles, txy, tz], axis=-1)
    z_dyn = Dense(c.dyn_dim, name="dyn")(h)
    return z_pose.astype(jnp.float32), z_dyn.astype(jnp.float32)


class FlowGenerator(nn.Module):
  """(z_dyn, z_id) -> 3D offset field [B, D, h, w, 3] in normalised units (x, y, z order).

  MLP -> low-resolution grid -> [nearest x2 upsample, 3x3x3 conv, GN, SiLU] per width -> zero-
  initialised 3x3x3 conv to 3 channels (the flow is exactly zero at initialisation).
  """
  config: Any

  @nn.compact
  def __call__(self, z_dyn, z_id):
    c = self.config
    dt = get_dtype(c.dtype)
    d, h, w, _ = volume_shape(c)
    widths = tuple(c.flow_widths)
    n_up = len(widths)
    bd, bh, bw = max(1, d >> n_up), max(1, h >> n_up), max(1, w >> n_up)
    z = jnp.concatenate([z_dyn, z_id], axis=-1).astype(jnp.float32)
    x = act(Dense(c.flow_hidden, dtype=dt, name="mlp0")(z))
    x = Dense(bd * bh * bw * widths[0], dtype=dt, name="mlp1")(x)
    x = x.reshape(x.shape[0], bd, bh, bw, widths[0])
    for i, wd in enumerate(widths):
      cur = x.shape[1:4]
      factors = tuple(2 if cur[a] * 2 <= (d, h, w)[a] else 1 for a in range(3))
      x = layers.upsample_nearest(x, factors)
      x = Conv(wd, (3, 3, 3), dtype=dt, name=f"up{i}_conv")(x)
      x = act(GroupNorm(c.groups, dt, name=f"up{i}_norm")(x))
    if x.shape[1:4] != (d, h, w):
      x = jax.image.resize(x, (x.shape[0], d, h, w, x.shape[-1]), "linear")
    flow = Conv(3, (3, 3, 3), zero_init=True, out_axis="out_small", dtype=dt, name="out")(x)
    return flow.astype(jnp.float32)


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

def _with_labels(z_dyn, labels, mask):
  """z_dyn [B,D] with its first k dims replaced by labels [B,k] where mask [B] is 1."""
  labels = jnp.asarray(labels, z_dyn.dtype)
  k = labels.shape[-1]
  m = jnp.asarray(mask, z_dyn.dtype).reshape(-1, 1)
  head = m * labels + (1.0 - m) * z_dyn[:, :k]
  return jnp.concatenate([head, z_dyn[:, k:]], axis=-1)


class FaceLatentModel(nn.Module):
  """Stage-1 face latent model; `config` is the `model` sub-config of configs/face_latent.py."""
  config: ml_collections.ConfigDict

  def setup(self):
    c = self.config
    dt = get_dtype(c.dtype)
    self.appearance = AppearanceEncoder(c)
    self.identity = ConvEncoder(tuple(c.id_widths), c.enc_blocks, c.groups, dt)
    self.id_head = Dense(c.id_dim)
    self.motion = ConvEncoder(tuple(c.motion_widths), c.enc_blocks, c.groups, dt)
    self.motion_heads = MotionHeads(c)
    self.flow_to_canonical = FlowGenerator(c)
    self.flow_to_driving = FlowGenerator(c)
    self.canonical_in = Conv(c.canon_channels, (1, 1, 1), dtype=dt)
    self.canonical_net = [ResBlock(c.canon_channels, 3, c.groups, dt)
                          for _ in range(c.canon_blocks)]
    self.decoder = Decoder2D(c)

  # -- geometry
  def _grid(self):
    d, h, w, _ = volume_shape(self.config)
    return identity_grid_3d(d, h, w, align_corners=self.config.align_corners)

  def _pose_kw(self):
    return dict(ref_distance=self.config.ref_distance, fov_deg=self.config.fov_deg)

  def source_grid(self, z_id, z_pose, z_dyn):
    """[B, D, h, w, 3] where each canonical voxel samples the source volume."""
    flow = self.flow_to_canonical(z_dyn, z_id)
    return warp_lib.canonical_to_source(self._grid(), z_pose, flow, **self._pose_kw())

  def driving_grid(self, z_id, z_pose, z_dyn):
    """[B, D, h, w, 3] where each driving voxel samples the canonical volume."""
    flow = self.flow_to_driving(z_dyn, z_id)
    return warp_lib.driving_to_canonical(self._grid(), z_pose, flow, **self._pose_kw())

  # -- encoders
  def encode_identity(self, image):
    return self.id_head(self.identity(self._prep_input(image))).astype(jnp.float32)

  def encode_motion(self, image):
    """image [B,S,S,3] in [-1,1] -> {z_pose [B,6], z_dyn [B,Zdyn]} (float32)."""
    z_pose, z_dyn = self.motion_heads(self.motion(self._prep_input(image)))
    return {"z_pose": z_pose, "z_dyn": z_dyn}

  def encode(self, image):
    """image -> {v_app [B,D,h,w,C] (compute dtype), z_id, z_pose, z_dyn}."""
    image = images_to_float(image)
    out = {"v_app": self.appearance(image), "z_id": self.encode_identity(image)}
    out.update(self.encode_motion(image))
    return out

  def _prep_input(self, image):
    image = images_to_float(image)
    size = self.config.encoder_size
    return layers.resize_images(image, size) if size else image

  # -- decoder
  def prepare(self, v_app, z_id, z_pose, z_dyn):
    """Source appearance -> canonical volume (run once per portrait)."""
    grid = self.source_grid(z_id, z_pose, z_dyn)
    vol = grid_sample_3d(v_app, grid, align_corners=self.config.align_corners)
    x = self.canonical_in(vol)
    for blk in self.canonical_net:
      x = blk(x)
    return {"canonical": x, "z_id": z_id}

  def render(self, prepared, z_pose, z_dyn):
    """Canonical volume + driving motion -> image [B,S,S,3] in [-1,1] (run per frame).

    A prepared portrait with batch 1 is broadcast against B motion codes (B frames of one
    portrait in one call).
    """
    canonical, z_id = prepared["canonical"], prepared["z_id"]
    b = z_pose.shape[0]
    if canonical.shape[0] == 1 and b > 1:
      canonical = jnp.broadcast_to(canonical, (b,) + canonical.shape[1:])
      z_id = jnp.broadcast_to(z_id, (b,) + z_id.shape[1:])
    grid = self.driving_grid(z_id, z_pose, z_dyn)
    vol = grid_sample_3d(canonical, grid, align_corners=self.config.align_corners)
    return self.decoder(vol)

  def decode(self, v_app, z_id, z_pose_s, z_dyn_s, z_pose_d, z_dyn_d):
    """prepare + render in one call (DESIGN.md's FaceLatentModel.decode)."""
    return self.render(self.prepare(v_app, z_id, z_pose_s, z_dyn_s), z_pose_d, z_dyn_d)

  def __call__(self, source, driving):
    """Reconstruct `driving` from `source`'s appearance and `driving`'s motion."""
    src = self.encode(source)
    drv = self.encode_motion(driving)
    prepared = self.prepare(src["v_app"], src["z_id"], src["z_pose"], src["z_dyn"])
    image = self.render(prepared, drv["z_pose"], drv["z_dyn"])
    return {"image": image, "z_id": src["z_id"], "source_pose": src["z_pose"],
            "source_dyn": src["z_dyn"], "driving_pose": drv["z_pose"],
            "driving_dyn": drv["z_dyn"]}

  def training_outputs(self, source, driving, cross=None, consistency: bool = True,
                       dyn_labels=None):
    """Everything the generator losses need, in one apply (losses.generator_losses).

    source, driving: two frames i, j of one clip; cross: a frame of another identity (or None).
    Renders from the source's canonical volume, batched into one render call:
      recon   = render(pose_j, dyn_j)            reconstruct the driving frame
      cons_a  = render(pose_i, dyn_j)            source's pose, driving's dynamics
      cons_b  = render(pose_j, dyn_i)            driving's pose, source's dynamics
      cross   = render(pose_k, dyn_k)            source person with the other person's motion
    then the motion encoder on cons_a / cons_b (latent cycle consistency) and the identity
    encoder on the cross reenactment. consistency=False skips cons_a / cons_b (and their
    outputs), cross=None skips the cross reenactment.

    dyn_labels: optional {"source": (labels [B,k], mask [B]), "driving": (...)}: where mask is 1
    the first k dims of that frame's z_dyn are replaced by the labels for rendering (teacher
    forcing of named dynamics dims, see losses.dyn_label_loss), so the decoder learns to render
    them while the encoder is still learning to read them. The returned source_dyn /
    driving_dyn stay the encoder's own predictions.
    """
    b = source.shape[0]
    src = self.encode(source)
    frames = [images_to_float(driving)] + ([] if cross is None else [images_to_float(cross)])
    mot = self.encode_motion(jnp.concatenate(frames, axis=0))
    pose_j, dyn_j = mot["z_pose"][:b], mot["z_dyn"][:b]
    pose_i, dyn_i = src["z_pose"], src["z_dyn"]
    out_dyn_i, out_dyn_j = dyn_i, dyn_j
    if dyn_labels is not None:
      dyn_i = _with_labels(dyn_i, *dyn_labels["source"])
      dyn_j = _with_labels(dyn_j, *dyn_labels["driving"])
    prepared = self.prepare(src["v_app"], src["z_id"], pose_i, dyn_i)
    poses, dyns = [pose_j], [dyn_j]
    if consistency:
      poses += [pose_i, pose_j]
      dyns += [dyn_j, dyn_i]
    if cross is not None:
      poses.append(mot["z_pose"][b:])
      dyns.append(mot["z_dyn"][b:])
    n = len(poses)
    tiled = jax.tree_util.tree_map(lambda x: jnp.concatenate([x] * n, axis=0), prepared)
    renders = self.render(tiled, jnp.concatenate(poses, 0), jnp.concatenate(dyns, 0))
    out = {
        "image": renders[:b],
        "z_id": src["z_id"],
        "source_pose": pose_i, "source_dyn": out_dyn_i,
        "driving_pose": pose_j, "driving_dyn": out_dyn_j,
    }
    if consistency:
      cons_a, cons_b = renders[b:2 * b], renders[2 * b:3 * b]
      back = self.encode_motion(jnp.concatenate([cons_a, cons_b], axis=0))
      out.update({
          "cons_a": cons_a, "cons_b": cons_b,
          "cons_a_pose": back["z_pose"][:b], "cons_a_dyn": back["z_dyn"][:b],
          "cons_b_pose": back["z_pose"][b:], "cons_b_dyn": back["z_dyn"][b:],
      })
    if cross is not None:
      cross_img = renders[(3 if consistency else 1) * b:]
      out["cross_image"] = cross_img
      out["cross_pose"] = mot["z_pose"][b:]
      out["cross_dyn"] = mot["z_dyn"][b:]
      out["cross_z_id"] = self.encode_identity(cross_img)
    return out


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

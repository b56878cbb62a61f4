"""Trainer for the volume renderer (configs/face_latent.py:volume*, vasa_jax/models/volume.py).

Self-reenactment through the measured geometry: a source frame i of a clip and a driving frame
j of the same clip (vasa_jax.data.geometry_pairs.VolumePairTransform). The source's appearance
volume, un-posed with frame i's head pose, is warped by frame j's pose and by the mesh flow
from the driving canonical mesh (frame j's codes decoded from frame i's, as inference does) to
frame i's; the decoder reconstructs frame j. Losses: L1, 1 - MS-SSIM and a Laplacian-pyramid
L1 of the whole crop, extra L1 inside the driving mouth and eye boxes, optional VGG19
perceptual loss, and from `gan_start_step` a multi-scale hinge patch discriminator with
feature matching.

    vasa-jax train --config configs/face_latent.py:volume --workdir RUN --data-dir DATA \\
        --config.data.geometry=motion_latents/geo

Checkpoints (params, discriminator, optimizers, EMA, step, data iterator) resume exactly, as
for every trainer here (vasa_jax.train.common / loop).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax import losses
from vasa_jax import sharding as sharding_lib
from vasa_jax.models import volume as vm
from vasa_jax.train import common

log = logging.getLogger(__name__)

STEP_KEYS = ("source", "driving", "pose_s", "pose_d", "verts_s", "verts_d", "regions")


def make_model(config):
  return vm.VolumeDecoder(config.model)


def make_critic(config):
  return vm.PatchDiscriminator(config.model)


def make_optimizer(config):
  return common.optimizer(config.optim)


def init_state(config, rng, batch_size: int = 1):
  rg, rd = jax.random.split(rng)
  inputs = vm.dummy_inputs(config.model, batch_size)
  params = make_model(config).init(rg, *inputs)["params"]
  d_params = make_critic(config).init(rd, inputs[0])["params"]
  return common.adversarial_state(params, d_params, make_optimizer(config))


def create_state(config, mesh, rng):
  return common.create_sharded_state(init_state, config, mesh, rng)


def box_masks(regions, size: int):
  """[B, 3, 4] boxes (y0, x0, y1, x1 fractions) -> [B, 3, size, size] 0/1 masks."""
  c = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  r = jnp.asarray(regions, jnp.float32)
  ys = (c[None, None, :] >= r[..., 0:1]) & (c[None, None, :] <= r[..., 2:3])
  xs = (c[None, None, :] >= r[..., 1:2]) & (c[None, None, :] <= r[..., 3:4])
  return (ys[..., :, None] & xs[..., None, :]).astype(jnp.float32)


def reconstruction_terms(image, target, regions, w, vgg=None) -> tuple[jax.Array, dict]:
  """The reconstruction loss of a batch of rendered frames and its named terms."""
  l1 = losses.l1(image, target)
  ms = losses.ms_ssim_loss(image, target, scales=min(4, max(1, int(np.log2(image.shape[1] / 16)))))
  lap = losses.laplacian_l1(image, target, levels=min(4, max(1, int(np.log2(image.shape[1] / 8)))))
  masks = box_masks(regions, image.shape[1])[..., None]            # [B, 3, S, S, 1]
  err = jnp.abs(image - target)[:, None]
  part = jnp.sum(err * masks, axis=(2, 3, 4)) / (3.0 * jnp.sum(masks, axis=(2, 3, 4)) + 1.0)
  mouth, eyes = jnp.mean(part[:, 0]), jnp.mean(part[:, 1:])
  total = w.l1 * l1 + w.ms_ssim * ms + w.laplacian * lap + w.mouth * mouth + w.eyes * eyes
  terms = {"l1": l1, "ms_ssim": ms, "laplacian": lap, "mouth": mouth, "eyes": eyes}
  if vgg is not None:
    terms["vgg"] = vgg(image, target)
    total = total + w.vgg * terms["vgg"]
  return total, terms


def make_train_step(config, mesh, state_shardings):
  model, critic = make_model(config), make_critic(config)
  opt = make_optimizer(config)
  w = config.loss
  gan_start = int(w.get("gan_start_step", 0))
  use_gan = float(w.get("gan", 0.0)) > 0 or float(w.get("feature_matching", 0.0)) > 0
  vgg = (losses.make_vgg_loss(w.vgg_weights) if float(w.get("vgg", 0.0)) > 0
         and w.get("vgg_weights") else None)
  batch_sharding = sharding_lib.batch_sharding(mesh)

  def step_fn(state, batch):
    n_bad = common.count_nonfinite(batch)
    target = vm.images_to_float(batch["driving"])
    gan_scale = (state["step"] >= gan_start).astype(jnp.float32)
    args = (batch["source"], batch["pose_s"], batch["pose_d"], batch["verts_s"], batch["verts_d"])

    def g_loss(params):
      image = model.apply({"params": params}, *args)
      total, terms = reconstruction_terms(image, target, batch["regions"], w, vgg)
      if use_gan:
        fake = critic.apply({"params": state["d_params"]}, image)
        real = critic.apply({"params": state["d_params"]}, target)
        g_adv = losses.hinge_g_loss(fake)
        fm = losses.feature_matching(real, fake)
        total = total + gan_scale * (w.gan * g_adv + w.feature_matching * fm)
        terms.update(gan=g_adv, feature_matching=fm)
      terms["total"] = total
      return total, (terms, image)

    new_state, metrics = common.adversarial_step(
        state, config, opt, g_loss, lambda p, x: critic.apply({"params": p}, x), target,
        lambda image: image, gan_scale=gan_scale, use_gan=use_gan, n_bad=n_bad)
    # the source frame as it is, no warp: what the renderer has to beat
    metrics["loss/l1_source"] = losses.l1(vm.images_to_float(batch["source"]), target)
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,),
                 compiler_options=common.compiler_options(config))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, source=None,
                       basis=None, data_dir: str | None = None) -> dict:
  """Trains to config.steps (resuming from workdir); returns the last metrics as floats."""
  import sys

  from vasa_jax.data import geometry_pairs
  if source is None or basis is None:
    source, basis = common.open_geometry_data(config, data_dir)
  return common.train_stage1(
      config, workdir, sys.modules[__name__],
      lambda bs: geometry_pairs.volume_pair_loader(source, basis, config, batch_size=bs,
                                                   seed=config.seed,
                                                   worker_count=int(config.data.worker_count)),
      source=source, basis=basis, step_keys=STEP_KEYS, what="volume decoder")


def restore_params(workdir: str, config, key: str = "ema"):
  """(params, step) of a workdir's newest checkpoint."""
  return common.restore_params(workdir, config, init_state, key=key)


def sanity_batch(config, batch: int = 2, seed: int = 0) -> dict:
  """A batch of the step's shapes (tests, benchmarks): random images, poses near the reference,
  a random mesh in front of the face and a driving mesh moved a little."""
  rng = np.random.default_rng(seed)
  s = int(config.model.image_size)
  pose = np.tile(np.asarray([0.0, 0.0, 0.0, 0.0, 0.0, 0.65], np.float32), (batch, 1))
  pose_d = pose + rng.normal(0, 0.03, pose.shape).astype(np.float32) * [1, 1, 1, 0.1, 0.1, 0.5]
  verts = rng.uniform(-0.5, 0.5, (batch, vm.NUM_VERTS, 3)).astype(np.float32)
  return {"source": rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8),
          "driving": rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8),
          "pose_s": pose, "pose_d": pose_d.astype(np.float32), "verts_s": verts,
          "verts_d": verts + rng.normal(0, 0.02, verts.shape).astype(np.float32),
          "regions": np.tile(np.asarray([[0.55, 0.3, 0.8, 0.7], [0.3, 0.2, 0.45, 0.45],
                                         [0.3, 0.55, 0.45, 0.8]], np.float32), (batch, 1, 1))}

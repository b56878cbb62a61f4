"""Trainer for the geometry-grounded stage 1 (configs/face_latent.py:geo*): the mouth compositor.

Self-reenactment: a source frame of a clip drives to another frame of the same clip through the
measured geometry, and a real mouth reference (another frame of the same clip, or a donor of
another identity from the part bank) is warped onto the driving inner lips
(vasa_jax.data.geometry_pairs). The compositor (vasa_jax.models.geo_decoder) learns how to put
the reference into the warped portrait. Losses on the patch composite against the true driving
patch: L1, 1 - SSIM, Laplacian-pyramid L1, extra L1 inside the mouth opening, a hinge patch
discriminator with feature matching on the mouth (from `gan_start_step`), so that what remains
invented is sharp rather than the mean, and small penalties on alpha outside the opening and on
the flow.

    vasa-jax train --config configs/face_latent.py:geo --workdir RUN --data-dir DATA \\
        --config.data.geometry=motion_latents/geo --config.data.part_bank=BANK_DIR

Logged per step (TensorBoard in RUN/tensorboard, and RUN/curve.jsonl for the training curve):
every loss term, mouth_l1 (the composite's error) next to mouth_l1_warp (the geometric warp
alone) and mouth_l1_paste (the reference pasted onto the opening as it is), the discriminator's
terms, and gradient norms. Checkpoints (params, discriminator, optimizers, EMA, step, data
iterator) resume exactly.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax import losses
from vasa_jax import sharding as sharding_lib
from vasa_jax.models import geo_decoder as gd
from vasa_jax.train import common

log = logging.getLogger(__name__)

STEP_KEYS = ("mouth_in", "mouth_tgt")


def make_model(config):
  return gd.GeometryDecoder(config.model)


def make_critic(config):
  return gd.MouthCritic(tuple(config.model.critic.widths), int(config.model.groups))


def make_optimizer(config):
  return common.optimizer(config.optim)


def init_state(config, rng, batch_size: int = 1):
  rg, rd = jax.random.split(rng)
  (x,) = gd.dummy_inputs(config.model, batch_size)
  params = make_model(config).init(rg, x)["params"]
  r = int(config.model.mouth.res)
  d_params = make_critic(config).init(rd, jnp.zeros((batch_size, r, r, 4), jnp.float32))["params"]
  return common.adversarial_state(params, d_params, make_optimizer(config))


def create_state(config, mesh, rng):
  return common.create_sharded_state(init_state, config, mesh, rng)


def critic_input(image, x_in):
  """What the critic sees: the patch inside the region the compositor may change (dilated),
  and that region."""
  m = gd.allowed_mask(x_in, 4)[..., None]
  return jnp.concatenate([image * m, m], -1)


def composite_terms(x_in, target, out, w) -> tuple[jax.Array, dict]:
  """Reconstruction terms of the mouth composite (batched) and its named figures."""
  warped = x_in[..., :3]
  region = x_in[..., 3:4]
  cover = x_in[..., gd.BASE_CHANNELS + 3:gd.BASE_CHANNELS + 4]
  comp = gd.blend(warped, out)
  l1 = jnp.mean(jnp.abs(comp - target))
  ssim = 1.0 - losses.ssim(comp, target, window=7)
  lap = losses.laplacian_l1(comp, target, levels=3)
  inside = jnp.maximum(region, cover)
  interior = jnp.sum(jnp.abs(comp - target) * inside) / (3.0 * jnp.sum(inside) + 1.0)
  alpha_out = jnp.mean(out["alpha"] * (1.0 - cover[..., 0]))
  flow = jnp.mean(jnp.abs(out["flow"]))
  total = (w.l1 * l1 + w.ssim * ssim + w.laplacian * lap + w.interior * interior
           + w.alpha * alpha_out + w.flow * flow)
  ref = x_in[..., gd.BASE_CHANNELS:gd.BASE_CHANNELS + 3]
  a = cover * jnp.asarray(gd.feather(x_in.shape[1]))[..., None]
  paste = (1.0 - a) * warped + a * ref
  return total, {"l1": l1, "ssim": ssim, "laplacian": lap, "interior": interior,
                 "alpha_outside": alpha_out, "flow": flow,
                 "l1_warp": jnp.mean(jnp.abs(warped - target)),
                 "l1_paste": jnp.mean(jnp.abs(paste - target)),
                 "interior_paste": jnp.sum(jnp.abs(paste - target) * inside)
                 / (3.0 * jnp.sum(inside) + 1.0)}, comp


def make_train_step(config, mesh, state_shardings):
  model, critic = make_model(config), make_critic(config)
  opt = make_optimizer(config)
  w = config.loss
  gan_start = int(w.get("gan_start_step", 0))
  use_gan = float(w.get("gan", 0.0)) > 0 or float(w.get("feature_matching", 0.0)) > 0
  batch_sharding = sharding_lib.batch_sharding(mesh)

  def step_fn(state, batch):
    n_bad = common.count_nonfinite(batch)
    x_in, target = batch["mouth_in"], batch["mouth_tgt"]
    gan_scale = (state["step"] >= gan_start).astype(jnp.float32)
    real_in = critic_input(target, x_in)

    def g_loss(params):
      out = model.apply({"params": params}, x_in)["mouth"]
      total, terms, comp = composite_terms(x_in, target, out, w)
      if use_gan:
        fake = critic.apply({"params": state["d_params"]}, critic_input(comp, x_in))
        real = critic.apply({"params": state["d_params"]}, real_in)
        g_adv = losses.hinge_g_loss([fake])
        fm = losses.feature_matching([real], [fake])
        total = total + gan_scale * (w.gan * g_adv + w.feature_matching * fm)
        terms.update(gan=g_adv, feature_matching=fm)
      terms["total"] = total
      return total, (terms, comp)

    return common.adversarial_step(
        state, config, opt, g_loss, lambda p, x: critic.apply({"params": p}, x), real_in,
        lambda comp: critic_input(comp, x_in), gan_scale=gan_scale, use_gan=use_gan,
        n_bad=n_bad, prefix="loss/mouth_")

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,),
                 compiler_options=common.compiler_options(config))


def open_data(config, data_dir: str | None = None, split: str | None = None):
  """(GeometryClips source, FaceBasis, PartBank or None) of config.data."""
  from vasa_jax.geometry import banks
  source, basis = common.open_geometry_data(config, data_dir, split)
  bank = banks.PartBank.load(config.data.part_bank) if config.data.get("part_bank") else None
  return source, basis, bank


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, source=None,
                       basis=None, bank=None, data_dir: str | None = None) -> dict:
  """Trains to config.steps (resuming from workdir); returns the last metrics as floats."""
  import sys

  from vasa_jax.data import geometry_pairs
  if source is None or basis is None:
    source, basis, bank = open_data(config, data_dir)
  return common.train_stage1(
      config, workdir, sys.modules[__name__],
      lambda bs: geometry_pairs.pair_loader(source, basis, config, batch_size=bs,
                                            seed=config.seed, bank=bank,
                                            worker_count=int(config.data.worker_count)),
      source=source, basis=basis, step_keys=STEP_KEYS, what="mouth compositor")


def restore_params(workdir: str, config, key: str = "ema"):
  """(params, step) of a workdir's newest checkpoint."""
  return common.restore_params(workdir, config, init_state, key=key)


def sanity_batch(config, batch: int = 2, seed: int = 0) -> dict:
  """A random batch of the step's shapes (tests, benchmarks)."""
  rng = np.random.default_rng(seed)
  r = int(config.model.mouth.res)
  return {"mouth_in": rng.uniform(-1, 1, (batch, r, r, gd.IN_CHANNELS)).astype(np.float32),
          "mouth_tgt": rng.uniform(-1, 1, (batch, r, r, 3)).astype(np.float32)}


"""Stage-1 trainer: the face latent model with a multi-scale patch GAN.

    vasa-jax train --config configs/face_latent.py:demo --workdir DIR [--config.steps=1000 ...]

One `train_and_evaluate(config, workdir)`, written as banner-commented sections. The state is a
plain dict {params, d_params, opt_g, opt_d, ema, step}; the update step is one `jax.jit` with
explicit shardings (batch over the (data, fsdp) mesh axes, parameters by logical axis rules)
and donated state. Restarting with the same workdir resumes from the newest readable
checkpoint, data order included. A batch with NaN/Inf inputs is skipped (no update, a
warning, counted in data/skipped_batches; config.skip_nonfinite_batches,
config.max_skipped_batches; see common.BadBatches); a non-finite loss stops the run.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vasa_jax import losses as losses_lib
from vasa_jax import sharding as sharding_lib
from vasa_jax.data import pipeline
from vasa_jax.models import face_latent as fl
from vasa_jax.train import common
from vasa_jax.train import loop

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- input

def make_source(config, data_dir: str | None = None):
  """The training mix (`common.make_clip_mix`)."""
  return common.make_clip_mix(config, data_dir)


def _images(batch, size: int):
  """uint8 frames -> float [-1, 1] at the model's size (resized on device if the data differ)."""
  def prep(x):
    x = x.astype(jnp.float32) / 127.5 - 1.0
    if x.shape[1] != size:
      x = jax.image.resize(x, (x.shape[0], size, size, 3), method="linear", antialias=True)
    return x
  out = dict(batch)
  for k in ("source", "driving", "cross"):
    out[k] = dict(batch[k], image=prep(batch[k]["image"]))
  return out


# ----------------------------------------------------------------------------- model + state


def make_models(config):
  return fl.FaceLatentModel(config.model), fl.PatchDiscriminator(config.model)


def make_optimizers(config):
  o = config.optim
  return common.optimizer(o, lr=o.lr_g), common.optimizer(o, lr=o.lr_d)


def _dummy_batch(config, batch_size: int):
  s = config.model.image_size
  img = jnp.zeros((batch_size, s, s, 3), jnp.float32)
  return img


def init_state(config, rng, batch_size: int = 1):
  """The full train state (boxed with logical partitioning metadata)."""
  gen, disc = make_models(config)
  opt_g, opt_d = make_optimizers(config)
  img = _dummy_batch(config, batch_size)
  rg, rd = jax.random.split(rng)
  params = gen.init(rg, img, img, img, method=fl.FaceLatentModel.training_outputs)["params"]
  d_params = disc.init(rd, img)["params"]
  return {
      "params": params,
      "d_params": d_params,
      "opt_g": opt_g.init(params),
      "opt_d": opt_d.init(d_params),
      "ema": jax.tree_util.tree_map(lambda x: x, params),
      "step": jnp.zeros((), jnp.int32),
  }


def create_state(config, mesh, rng):
  """Abstract state -> shardings -> jitted, sharded init (no host copy of the parameters)."""
  return common.create_sharded_state(init_state, config, mesh, rng)


# ----------------------------------------------------------------------------- update step

def make_train_step(config, mesh, state_shardings):
  gen, disc = make_models(config)
  opt_g, opt_d = make_optimizers(config)
  weights = config.loss
  perceptual = None
  if weights.get("vgg", 0.0) and weights.get("vgg_weights", ""):
    perceptual = losses_lib.make_vgg_loss(weights.vgg_weights)
  gan_start = int(weights.get("gan_start_step", 0))
  size = config.model.image_size
  batch_sharding = sharding_lib.batch_sharding(mesh)

  # Terms with weight 0 are not computed at all (static switches): no consistency renders
  # without the consistency loss, no cross-identity render without the identity loss, no
  # discriminator without the GAN / feature-matching losses.
  use_consistency = float(weights.get("consistency", 0.0)) > 0
  use_cross = float(weights.get("identity", 0.0)) > 0
  use_gan = float(weights.get("gan", 0.0)) > 0 or float(weights.get("feature_matching", 0.0)) > 0

  skip_bad = bool(config.get("skip_nonfinite_batches", True))
  teacher = bool(weights.get("dyn_labels_teacher", False))

  def step_fn(state, batch):
    # NaN/Inf in the float inputs (labels; uint8 frames cannot be non-finite, so the float
    # images made from them cannot either): with skip_nonfinite_batches the update is dropped.
    n_bad = common.count_nonfinite(batch)
    batch = _images(batch, size)
    step = state["step"]
    gan_scale = (step >= gan_start).astype(jnp.float32)
    src, drv, crs = batch["source"]["image"], batch["driving"]["image"], batch["cross"]["image"]

    dyn_labels = None
    if teacher:
      # both frames come from one clip: one flag for each label kind
      m = (batch["has_mouth"] * batch["has_blink"]).reshape(-1)
      dyn_labels = {k: (jnp.concatenate([batch[k]["mouth"], batch[k]["blink"].reshape(-1, 1)],
                                        axis=-1), m) for k in ("source", "driving")}

    def g_loss(params):
      out = gen.apply({"params": params}, src, drv, crs if use_cross else None,
                      consistency=use_consistency, dyn_labels=dyn_labels,
                      method=fl.FaceLatentModel.training_outputs)
      fake = real = None
      if use_gan:
        fake = disc.apply({"params": state["d_params"]}, out["image"])
        real = disc.apply({"params": state["d_params"]}, drv)
      terms = losses_lib.generator_losses(out, batch, weights, disc_fake=fake, disc_real=real,
                                          perceptual=perceptual, gan_scale=gan_scale)
      return terms["total"], (terms, out)

    (_, (g_terms, out)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(state["params"])
    g_updates, opt_g_state = opt_g.update(g_grads, state["opt_g"], state["params"])
    params = optax.apply_updates(state["params"], g_updates)

    fake_img = jax.lax.stop_gradient(out["image"])

    def d_loss(d_params):
      terms = losses_lib.discriminator_losses(disc.apply({"params": d_params}, drv),
                                              disc.apply({"params": d_params}, fake_img))
      return terms["total"] * gan_scale, terms

    if use_gan:
      (_, d_terms), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state["d_params"])
      d_updates, opt_d_state = opt_d.update(d_grads, state["opt_d"], state["d_params"])
      d_params = optax.apply_updates(state["d_params"], d_updates)
    else:
      d_terms, d_params, opt_d_state = {}, state["d_params"], state["opt_d"]

    new_state = {
        "params": params, "d_params": d_params, "opt_g": opt_g_state, "opt_d": opt_d_state,
        "ema": common.ema_update(state["ema"], params, config.ema_decay), "step": step + 1,
    }
    if skip_bad:
      new_state = common.keep_if_bad(n_bad, new_state, state)
    metrics = {f"loss/{k}": v for k, v in g_terms.items()}
    metrics[common.NONFINITE_INPUTS] = n_bad
    metrics.update({f"disc/{k}": v for k, v in d_terms.items()})
    metrics["norm/grad_g"] = common.global_norm(g_grads)
    if use_gan:
      metrics["norm/grad_d"] = common.global_norm(d_grads)
    metrics["norm/params_g"] = common.global_norm(params)
    metrics["norm/update_g"] = common.global_norm(g_updates)
    metrics["stats/z_dyn_std"] = jnp.mean(jnp.std(out["driving_dyn"].astype(jnp.float32), axis=0))
    return new_state, metrics

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,),
                 compiler_options=common.compiler_options(config))


def make_preview_fn(config):
  """EMA-parameter renders for TensorBoard: [source | driving | reconstruction | cross]."""
  gen, _ = make_models(config)
  size = config.model.image_size

  @functools.partial(jax.jit, compiler_options=common.compiler_options(config))
  def preview(ema, batch):
    batch = _images(batch, size)
    src, drv, crs = batch["source"]["image"], batch["driving"]["image"], batch["cross"]["image"]
    out = gen.apply({"params": ema}, src, drv, crs, method=fl.FaceLatentModel.training_outputs)
    rows = [src, drv, out["image"], crs, out["cross_image"]]
    grid = jnp.concatenate([jnp.concatenate(list(r[:4]), axis=1) for r in rows], axis=0)
    return jnp.clip((grid + 1.0) * 127.5, 0, 255).astype(jnp.uint8)

  return preview


# ----------------------------------------------------------------------------- main loop

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, source=None,
                       data_dir: str | None = None) -> dict:
  """Trains to config.steps (resuming from workdir if it holds checkpoints); returns the last
  metrics as floats."""
  # --- logging + mesh -------------------------------------------------------------------------
  mesh, writer = common.open_run(config, workdir)

  # --- input ----------------------------------------------------------------------------------
  source = source if source is not None else make_source(config, data_dir)
  local_bs = sharding_lib.per_process_batch_size(config.batch_size, mesh)
  loader = pipeline.stage1_loader(source, batch_size=local_bs, seed=config.seed,
                                  augment=dict(config.data.augment),
                                  worker_count=config.data.worker_count)
  data_iter = iter(loader)

  # --- model, state, shardings ----------------------------------------------------------------
  state, shardings, ckpt, start = common.start_run(config, workdir, mesh, create_state, data_iter)
  n_g = fl.param_count(state["params"])
  log.info("generator %.2fM params, discriminator %.2fM params", n_g / 1e6,
           fl.param_count(state["d_params"]) / 1e6)

  # --- update step ------------------------------------------------------------------------------
  train_step = make_train_step(config, mesh, shardings)
  preview = make_preview_fn(config)

  def images(step, state, batch, metrics):
    if config.get("image_every", 0) and step % config.image_every == 0:
      writer.write_images(step, {"source_driving_recon_cross":
                                 np.asarray(preview(state["ema"], batch))[None]})

  return loop.run(config, state=state, start=start, ckpt=ckpt, writer=writer,
                  data_iter=data_iter, train_step=train_step,
                  make_batch=lambda raw: sharding_lib.to_global(raw, mesh), on_step=[images]).metrics

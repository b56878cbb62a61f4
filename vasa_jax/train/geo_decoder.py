"""Trainer for the geometry-grounded stage 1 (configs/face_latent.py:geo*).

Self-reenactment: a source frame of a clip drives to another frame of the same clip through the
measured geometry (vasa_jax.data.geometry_pairs); the decoder (vasa_jax.models.geo_decoder)
learns, on the mouth and eye patches, what the warp cannot give. Losses on the patch composite
against the true driving patch: L1, 1 - SSIM, Laplacian-pyramid L1, extra L1 inside the part's
interior (the inside of the mouth, the eye opening), and small penalties on alpha (so the
portrait's own pixels are kept where the warp is right) and on the residual flow (the geometry
carries the motion).

    vasa-jax train --config configs/face_latent.py:geo --workdir RUN --data-dir DATA \\
        --config.data.geometry=motion_latents/geo

Logged per step (TensorBoard in RUN/tensorboard, and RUN/curve.jsonl for the convergence plot):
every loss term, mouth_l1 (the decoder's mouth-patch error) next to mouth_l1_warp (the
geometric warp alone on the same patches), the same for the eyes, and gradient norms.
Checkpoints (params, optimizer, EMA, step, data iterator) resume exactly.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax import losses
from vasa_jax import sharding as sharding_lib
from vasa_jax.models import geo_decoder as gd
from vasa_jax.train import common
from vasa_jax.train import loop

log = logging.getLogger(__name__)

STEP_KEYS = ("mouth_in", "mouth_tgt", "eye_in", "eye_tgt")


def make_model(config):
  return gd.GeometryDecoder(config.model)


def make_optimizer(config):
  return common.optimizer(config.optim)


def init_state(config, rng, batch_size: int = 1):
  params = make_model(config).init(rng, *gd.dummy_inputs(config.model, batch_size))["params"]
  return {"params": params, "opt": make_optimizer(config).init(params),
          "ema": jax.tree_util.tree_map(lambda x: x, params), "step": jnp.zeros((), jnp.int32)}


def create_state(config, mesh, rng):
  return common.create_sharded_state(init_state, config, mesh, rng)


def part_loss(x_in, target, out, w) -> tuple[jax.Array, dict]:
  """Loss of one part's decoder output (batched) and its named terms."""
  warped = x_in[..., :3]
  region = x_in[..., 3:4]
  comp = gd.blend(warped, out)
  l1 = jnp.mean(jnp.abs(comp - target))
  ssim = 1.0 - losses.ssim(comp, target, window=7)
  lap = losses.laplacian_l1(comp, target, levels=3)
  inside = jnp.sum(jnp.abs(comp - target) * region) / (3.0 * jnp.sum(region) + 1.0)
  alpha = jnp.mean(out["alpha"])
  flow = jnp.mean(jnp.abs(out["flow"]))
  total = (w.l1 * l1 + w.ssim * ssim + w.laplacian * lap + w.interior * inside
           + w.alpha * alpha + w.flow * flow)
  warp_l1 = jnp.mean(jnp.abs(warped - target))
  return total, {"total": total, "l1": l1, "ssim": ssim, "laplacian": lap, "interior": inside,
                 "alpha": alpha, "flow": flow, "l1_warp": warp_l1}


def loss_fn(params, model, batch, w):
  eye_in = batch["eye_in"].reshape((-1,) + batch["eye_in"].shape[2:])     # [2B, r, r, 8]
  eye_tgt = batch["eye_tgt"].reshape((-1,) + batch["eye_tgt"].shape[2:])
  out = model.apply({"params": params}, batch["mouth_in"], eye_in)
  lm, tm = part_loss(batch["mouth_in"], batch["mouth_tgt"], out["mouth"], w)
  le, te = part_loss(eye_in, eye_tgt, out["eye"], w)
  total = lm + w.eye_weight * le
  terms = {f"mouth_{k}": v for k, v in tm.items()}
  terms.update({f"eye_{k}": v for k, v in te.items()})
  terms["total"] = total
  return total, terms


def make_train_step(config, mesh, state_shardings):
  model = make_model(config)
  opt = make_optimizer(config)
  w = config.loss
  batch_sharding = sharding_lib.batch_sharding(mesh)
  skip_bad = bool(config.get("skip_nonfinite_batches", True))

  def step_fn(state, batch):
    n_bad = common.count_nonfinite(batch)
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], model, batch,
                                                                  w)
    new_state, norms = common.apply_gradients(state, grads, opt, ema_decay=config.ema_decay,
                                              n_bad=n_bad, skip_bad=skip_bad)
    return new_state, {**{f"loss/{k}": v for k, v in terms.items()}, **norms}

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,),
                 compiler_options=common.compiler_options(config))


def open_data(config, data_dir: str | None = None, split: str | None = None):
  """(GeometryClips source, FaceBasis) of config.data.geometry."""
  from vasa_jax.data import geometry_pairs, motion_latents, pipeline
  name = config.data.geometry
  if not name:
    raise ValueError("config.data.geometry is empty: build one with `vasa-jax data "
                     "extract-motion --geometry` and pass --config.data.geometry=motion_latents/NAME")
  data_dir = common.resolve_data_dir(config, data_dir)
  geo = pipeline.open_source(name, split or config.data.split, data_dir)
  basis = motion_latents.load_dataset_basis(data_dir, name)
  if basis.exp_dim != int(config.model.exp_dim):
    raise ValueError(f"{name} has a face basis of {basis.exp_dim} expression components, the "
                     f"config's model.exp_dim is {config.model.exp_dim}")
  source_dir = config.data.get("source_data_dir", "") or data_dir
  repeats = dict(config.data.get("repeats", {}) or {})
  return geometry_pairs.GeometryClips(geo, source_dir, repeats=repeats), basis


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, source=None,
                       basis=None, data_dir: str | None = None) -> dict:
  """Trains to config.steps (resuming from workdir); returns the last metrics as floats."""
  from vasa_jax.data import geometry_pairs
  mesh, writer = common.open_run(config, workdir)
  if source is None or basis is None:
    source, basis = open_data(config, data_dir)
  # The basis this decoder is trained with travels with its workdir (the bundle takes it).
  from vasa_jax.geometry import codes as codes_lib
  basis_path = os.path.join(workdir, codes_lib.BASIS_FILE)
  if jax.process_index() == 0 and not os.path.isfile(basis_path):
    basis.save(basis_path)
  local_bs = sharding_lib.per_process_batch_size(config.batch_size, mesh)
  data_iter = iter(geometry_pairs.pair_loader(source, basis, config, batch_size=local_bs,
                                              seed=config.seed,
                                              worker_count=int(config.data.worker_count)))
  state, shardings, ckpt, start = common.start_run(config, workdir, mesh, create_state,
                                                    data_iter, init_state_fn=init_state)
  log.info("GeometryDecoder %.3fM params", gd.param_count(state["params"]) / 1e6)
  train_step = make_train_step(config, mesh, shardings)
  curve_path = os.path.join(workdir, "curve.jsonl")

  def curve(step, scalars):     # the convergence curve, one JSON line per logged step
    if jax.process_index() == 0:
      with open(curve_path, "a") as f:
        f.write(json.dumps({"step": step, **{k: round(float(v), 6)
                                             for k, v in scalars.items()}}) + "\n")

  return loop.run(config, state=state, start=start, ckpt=ckpt, writer=writer,
                  data_iter=data_iter, train_step=train_step,
                  make_batch=lambda raw: sharding_lib.to_global({k: raw[k] for k in STEP_KEYS},
                                                                mesh),
                  on_log=[curve]).metrics


def restore_params(workdir: str, config, key: str = "ema"):
  """(params, step) of a workdir's newest checkpoint."""
  return common.restore_params(workdir, config, init_state, key=key)


def sanity_batch(config, batch: int = 2, seed: int = 0) -> dict:
  """A random batch of the step's shapes (tests, benchmarks)."""
  rng = np.random.default_rng(seed)
  rm, re = int(config.model.mouth.res), int(config.model.eye.res)
  c = gd.IN_CHANNELS
  return {"mouth_in": rng.uniform(-1, 1, (batch, rm, rm, c)).astype(np.float32),
          "mouth_tgt": rng.uniform(-1, 1, (batch, rm, rm, 3)).astype(np.float32),
          "eye_in": rng.uniform(-1, 1, (batch, 2, re, re, c)).astype(np.float32),
          "eye_tgt": rng.uniform(-1, 1, (batch, 2, re, re, 3)).astype(np.float32)}

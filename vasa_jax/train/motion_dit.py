r"""Stage-2 trainer: the motion diffusion transformer (MotionDiT) on stored motion windows.

Two commands: measure every frame's mesh codes once into a stored `motion_latents` dataset
(vasa_jax/data/motion_latents.py), then train on windows of it:

    vasa-jax data extract-motion --face-basis BASIS.npz \
        --datasets talking_face_videos/r256 --data-dir DIR --name geo
    vasa-jax train --config configs/motion_dit.py:geo --workdir WORKDIR --data-dir DIR \
        [--config.data.motion_dataset=motion_latents/geo --config.steps=1000 ...]

The loader slices the stored motion like any other track (`Stage2Transform(with_motion=True)`),
and the normalisation statistics are the dataset's motion_stats.json (copied to
workdir/motion_stats.json on the first start). model.motion_dim must equal the dataset's
motion dim (6 + dyn_dim). `train_and_evaluate(source=...)` takes an injected source instead,
whose records carry `motion` (config.motion_source="dataset"; statistics computed from it).

Fields read with `config.get` (absent from configs/motion_dit.py, defaults in brackets):
  data.motion_dataset  [""] a built motion_latents dataset ("motion_latents/NAME"), see above.
  data.motion_mix      [""] more motion datasets mixed in, "NAME:SHARE[+NAME:SHARE]" (configs).
  data.stats_batches   [16] batches used for the motion normalisation statistics.
  data.stats_min_std   [1e-2] floor of the per-dimension std.
  data.with_frames     [False] decode frames for an injected motion_fn.
  optim.eps            [1e-8] Adam epsilon.

The state is a plain dict {params, opt, ema, step}; the update step is one `jax.jit` with
explicit shardings (batch over the (data, fsdp) mesh axes, parameters by logical axis rules)
and donated state. Motion is taken from the global, sharded batch outside the step, normalised
inside it with the statistics of workdir/motion_stats.json (copied from the motion dataset, or
computed from data, at the first start; reused on every restart; `config.data.motion_stats` may
point at a fixed file instead). Restarting with the same workdir resumes from the newest
readable checkpoint, data order included. A batch with NaN/Inf inputs is skipped (no update, a
warning, counted in data/skipped_batches; config.skip_nonfinite_batches,
config.max_skipped_batches; see common.BadBatches); a non-finite loss stops the run.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vasa_jax import config_utils
from vasa_jax import sharding as sharding_lib
from vasa_jax.data import motion as motion_lib
from vasa_jax.data import pipeline
from vasa_jax.models import motion_dit as md
from vasa_jax.train import common
from vasa_jax.train import loop

log = logging.getLogger(__name__)

# Pipeline keys the update step consumes (frames stay out of it).
STEP_KEYS = ("motion", "prev_motion", "mask", "prev_mask", "audio", "prev_audio", "left_audio",
             "control_gaze", "control_distance", "control_emotion", "control_emotion_intensity",
             "has_control_gaze", "has_control_distance", "has_control_emotion",
             "control_blink_rate", "has_control_blink_rate")


class ConfigError(config_utils.ConfigError):
  """A required config field is missing or inconsistent."""


# ----------------------------------------------------------------------------- input

def motion_dataset_name(config) -> str:
  """config.data.motion_dataset ("" when the source is injected)."""
  return str(config.data.get("motion_dataset", "") or "")


def make_source(config, data_dir: str | None = None):
  """The stored motion dataset's split (config.data.motion_dataset), with data.motion_mix's
  datasets mixed in."""
  name = motion_dataset_name(config)
  if not name:
    raise ConfigError("config.data.motion_dataset is empty: build one with `vasa-jax data "
                      "extract-motion` and pass --config.data.motion_dataset=motion_latents/NAME")
  data_dir = common.resolve_data_dir(config, data_dir)
  try:
    mix = pipeline.parse_mix(config.data.get("motion_mix", ""))
  except ValueError as e:
    raise ConfigError(f"data.motion_mix: {e}") from None
  if mix:
    _check_same_basis(data_dir, [name] + [m for m, _ in mix])
  sources = [pipeline.open_source(n, config.data.split, data_dir=data_dir)
             for n in [name] + [m for m, _ in mix]]
  return pipeline.weighted_concat(sources, [1.0 - sum(w for _, w in mix)] + [w for _, w in mix])


def _check_same_basis(data_dir, names) -> None:
  """ConfigError unless the geometry motion datasets `names` share one face basis (codes in
  different bases mean different things dimension by dimension)."""
  from vasa_jax.data import motion_latents
  ref = None
  for n in names:
    try:
      b = motion_latents.load_dataset_basis(data_dir, n)
    except FileNotFoundError:
      continue                        # an old learned-latent dataset: no basis to compare
    sig = (b.template.shape, b.exp_basis.shape)
    if ref is None:
      ref = (n, b, sig)
    elif sig != ref[2] or not (np.allclose(b.template, ref[1].template, atol=1e-5)
                               and np.allclose(b.exp_basis, ref[1].exp_basis, atol=1e-5)):
      raise ConfigError(f"{n} and {ref[0]} were extracted with different face bases; extract "
                        f"both with --face-basis of one basis to mix them")


def check_motion_dataset(config, source) -> None:
  """ConfigError unless the stored motion of `source` has model.motion_dim dimensions."""
  d = int(config.model.motion_dim)
  parts = getattr(source, "sources", None) or [source]
  dims = {int(np.shape(s[0]["motion"])[-1]) for s in parts}
  if len(dims) > 1:
    raise ConfigError(f"the motion datasets of data.motion_dataset and data.motion_mix hold "
                      f"codes of different sizes {sorted(dims)}; extract them with one face basis")
  dim = dims.pop()
  if dim != d:
    raise ConfigError(
        f"{motion_dataset_name(config)} holds motion latents of {dim} dims (6 + dyn_dim "
        f"{dim - 6}) but model.motion_dim={d}; set --config.model.dyn_dim={dim - 6} or extract "
        "the motion with a face basis of the size this config expects")


def motion_source_name(config) -> str:
  """"dataset": stored motion (a motion dataset, or an injected source whose records carry
  `motion`), the only source; ConfigError for the retired ones ("latent", "ground_truth")."""
  if motion_dataset_name(config):
    return "dataset"
  name = str(config.get("motion_source", "dataset") or "dataset")
  if name != "dataset":
    raise ConfigError(f"motion_source={name!r} is retired: stage 2 trains on stored motion only "
                      "(motion_source='dataset'); build a motion dataset with `vasa-jax data "
                      "extract-motion` and pass --config.data.motion_dataset=motion_latents/NAME")
  return name


def make_motion_fn(config, mesh) -> tuple[Callable, bool]:
  """(motion_fn(global batch) -> (motion, prev_motion), needs_frames): the stored motion."""
  del mesh
  motion_source_name(config)
  log.info("motion read from %s", motion_dataset_name(config) or "the injected source")
  return motion_lib.stored_motion, False


def make_loader(config, source, batch_size: int, *, frames: bool, seed: int | None = None):
  with_motion = motion_source_name(config) == "dataset"
  return pipeline.stage2_loader(
      source, batch_size=batch_size, window=int(config.data.window),
      context=int(config.data.context), seed=config.seed if seed is None else seed,
      worker_count=config.data.worker_count, with_frames=frames, with_motion=with_motion,
      controls_from_motion=with_motion and bool(config.data.get("controls_from_motion", False)),
      measured_controls_only=bool(config.data.get("measured_controls_only", False)),
      audio_left=int(config.data.get("audio_left", 0)))


def step_batch(batch, motion_fn, mesh):
  """Global pipeline batch -> the update step's batch (raw motion attached, frames dropped).
  The motion is motion_fn's alone: with prev None, no stored prev_motion stays behind."""
  m, prev = motion_fn(batch)
  out = {k: batch[k] for k in STEP_KEYS if k in batch and k not in ("motion", "prev_motion")}
  sh = sharding_lib.batch_sharding(mesh)
  out["motion"] = jax.device_put(m, sh)
  if prev is not None:
    out["prev_motion"] = jax.device_put(prev, sh)
  return out


def audio_features_fn(config):
  """The FeatureSource of config.model.audio_features (log-mel, or log-mel + the frozen
  phonetic front end of vasa_jax/models/phonetic.py)."""
  from vasa_jax.models import phonetic
  try:
    return phonetic.audio_source(config.model)
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(str(e)) from None


# ----------------------------------------------------------------------------- statistics

def motion_stats(config, workdir: str, source, motion_fn, mesh, *, frames: bool,
                 data_dir: str | None = None) -> dict:
  """The normalisation statistics: config.data.motion_stats if set, else workdir's
  motion_stats.json, written the first time: copied from the motion dataset's
  motion_stats.json (config.data.motion_dataset), or computed from data (from a separate
  loader, so the training data order is untouched). The values used are always those read back
  from the file, so a first run and a resumed run normalise identically."""
  fixed = config.data.get("motion_stats", "")
  dataset = motion_dataset_name(config)
  if fixed:
    stats = motion_lib.load_stats(fixed)
  else:
    path = os.path.join(workdir, motion_lib.STATS_FILE)
    if os.path.exists(path):
      stats = motion_lib.load_stats(path)
    else:
      if dataset:
        from vasa_jax.data import motion_latents
        stats = motion_latents.load_dataset_stats(common.resolve_data_dir(config, data_dir),
                                                  dataset)
        meta = {"motion_source": "dataset", "motion_dataset": dataset}
      else:
        n = int(config.data.get("stats_batches", 16))
        local_bs = sharding_lib.per_process_batch_size(config.batch_size, mesh)
        it = iter(make_loader(config, source, local_bs, frames=frames, seed=config.seed + 1))

        def motions():
          while True:
            batch = sharding_lib.to_global(next(it), mesh)
            m, _ = motion_fn(batch)
            yield m, batch["mask"]

        stats = motion_lib.normalization_stats(
            motions(), n, min_std=float(config.data.get("stats_min_std", 1e-2)))
        meta = {"motion_source": motion_source_name(config), "batches": n,
                "batch_size": int(config.batch_size)}
      if jax.process_index() == 0:
        motion_lib.save_stats(path, stats, **meta)
        log.info("motion statistics over %d frames written to %s", stats["count"], path)
        stats = motion_lib.load_stats(path)
  d = int(config.model.motion_dim)
  if len(stats["mean"]) != d:
    raise ConfigError(f"motion statistics have {len(stats['mean'])} dims, model.motion_dim={d}")
  return stats


# ----------------------------------------------------------------------------- model + state

def make_model(config):
  return md.MotionDiT(config.model)


def make_optimizer(config):
  return common.optimizer(config.optim)


def init_state(config, rng, batch_size: int = 1):
  """The full train state (boxed with logical partitioning metadata)."""
  model = make_model(config)
  x_t, t, cond, drop = md.dummy_inputs(config.model, batch_size)
  params = model.init(rng, x_t, t, cond, drop)["params"]
  return {
      "params": params,
      "opt": make_optimizer(config).init(params),
      "ema": jax.tree_util.tree_map(lambda x: x, params),
      "step": jnp.zeros((), jnp.int32),
  }


def create_state(config, mesh, rng):
  """Abstract state -> shardings -> jitted, sharded init."""
  return common.create_sharded_state(init_state, config, mesh, rng)


# ----------------------------------------------------------------------------- update step

def make_train_step(config, mesh, state_shardings, stats):
  """jit(state, batch) -> (state, metrics); batch = `step_batch` output (raw motion)."""
  model = make_model(config)
  opt = make_optimizer(config)
  feats = audio_features_fn(config)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  seed, impl = int(config.seed), config.get("rng_impl") or None
  stats = {k: np.asarray(stats[k], np.float32) for k in ("mean", "std")}

  skip_bad = bool(config.get("skip_nonfinite_batches", True))

  def step_fn(state, batch):
    # NaN/Inf in the inputs (motion, audio, controls): with skip_nonfinite_batches the update
    # is dropped (the step still advances; see common.keep_if_bad).
    n_bad = common.count_nonfinite(batch)
    step = state["step"]
    rng = jax.random.fold_in(jax.random.key(seed, impl=impl), step)

    def motion_key(b):
      prev = b.get("prev_motion")
      return (motion_lib.normalize(b["motion"], stats),
              None if prev is None else motion_lib.normalize(prev, stats))

    tb = md.batch_from_pipeline(batch, motion_key, feats)

    def loss_fn(params):
      return md.training_loss(params, model, tb, rng, config)

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    new_state, norms = common.apply_gradients(state, grads, opt, ema_decay=config.ema_decay,
                                              n_bad=n_bad, skip_bad=skip_bad)
    return new_state, {**{f"loss/{k}": v for k, v in terms.items()}, **norms,
                       "stats/motion_abs": jnp.mean(jnp.abs(tb["motion"]))}

  return jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=(0,),
                 compiler_options=common.compiler_options(config))


# ----------------------------------------------------------------------------- main loop

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, source=None,
                       data_dir: str | None = None, motion_fn: Callable | None = None) -> dict:
  """Trains to config.steps (resuming from workdir if it holds checkpoints); returns the last
  metrics as floats. `motion_fn(global pipeline batch) -> (motion, prev_motion)` overrides
  the stored motion (prev_motion may be None: no previous-window context; with
  config.data.with_frames the batches carry the window's decoded frames)."""
  # --- logging + mesh -------------------------------------------------------------------------
  mesh, writer = common.open_run(config, workdir)

  # --- motion source + input ------------------------------------------------------------------
  if motion_fn is None:
    motion_fn, frames = make_motion_fn(config, mesh)
  else:
    frames = bool(config.data.get("with_frames", False))
  source = source if source is not None else make_source(config, data_dir)
  if motion_dataset_name(config):
    check_motion_dataset(config, source)
  local_bs = sharding_lib.per_process_batch_size(config.batch_size, mesh)
  stats = motion_stats(config, workdir, source, motion_fn, mesh, frames=frames,
                       data_dir=data_dir)
  data_iter = iter(make_loader(config, source, local_bs, frames=frames))

  # --- model, state, shardings ----------------------------------------------------------------
  state, shardings, ckpt, start = common.start_run(config, workdir, mesh, create_state,
                                                    data_iter, init_state_fn=init_state)
  log.info("MotionDiT %.2fM params", md.param_count(state["params"]) / 1e6)

  # --- update step ------------------------------------------------------------------------------
  train_step = make_train_step(config, mesh, shardings, stats)

  # --- loop (vasa_jax/train/loop.py) -------------------------------------------------------------
  return loop.run(config, state=state, start=start, ckpt=ckpt, writer=writer,
                  data_iter=data_iter, train_step=train_step,
                  make_batch=lambda raw: step_batch(sharding_lib.to_global(raw, mesh), motion_fn,
                                                    mesh)).metrics

"""Pieces every trainer shares: checkpoints, metric writers, progress, NaN guards, EMA, shardings.

Checkpoints are orbax: one CheckpointManager per workdir holding the train state (a plain dict
of params / optimizer states / EMA / step) and the grain iterator state, so a restarted run
continues with the same parameters and the same data order. If the newest checkpoint cannot be
read (a run killed while writing it), the previous one is used, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Callable, Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from vasa_jax.errors import InputError

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN/Inf; the message names the step and the term."""


class TooManyBadBatchesError(NonFiniteError):
  """More than config.max_skipped_batches batches had non-finite inputs: the data is broken."""


class CheckpointRestoreError(RuntimeError):
  """Checkpoints exist but none of them matches what this run expects."""


# ----------------------------------------------------------------------------- shardings

def adamw(lr, *, warmup_steps: int = 0, decay_steps: int = 0, end_ratio: float = 0.05,
          grad_clip: float = 1.0, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0):
  """The one optimizer of every trainer here (both stages, the evaluators): global-norm
  clipping, then AdamW. The rate: a linear warmup over warmup_steps then constant; with
  decay_steps, the warmup then a cosine decay to end_ratio x lr at decay_steps."""
  import optax
  if decay_steps:
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(int(warmup_steps), 1),
                                               int(decay_steps), end_value=lr * end_ratio)
  elif warmup_steps:
    sched = optax.linear_schedule(0.0, lr, int(warmup_steps))
  else:
    sched = lr
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))


def optimizer(optim, lr: float | None = None):
  """`adamw` from a config's optim block (lr: a rate other than optim.lr)."""
  return adamw(float(optim.lr if lr is None else lr),
               warmup_steps=int(optim.get("warmup_steps", 0)),
               decay_steps=int(optim.get("decay_steps", 0)), grad_clip=float(optim.grad_clip),
               b1=float(optim.b1), b2=float(optim.b2), eps=float(optim.get("eps", 1e-8)),
               weight_decay=float(optim.weight_decay))


def state_shardings(abstract_state, mesh: Mesh, rules) -> Any:
  """NamedShardings for a state pytree whose leaves may carry flax logical partitioning.

  Leaves boxed with `nn.with_logical_partitioning` are mapped to the mesh through `rules`
  (e.g. fsdp-sharded kernels); everything else is replicated.
  """
  specs = nn.get_partition_spec(abstract_state)
  mesh_specs = nn.logical_to_mesh(specs, rules)

  def to_sharding(spec):
    return NamedSharding(mesh, spec if isinstance(spec, P) else P())

  return jax.tree_util.tree_map(to_sharding, mesh_specs, is_leaf=lambda x: isinstance(x, P) or x is None)


def compiler_options(config):
  """Optional XLA options from a config's `compiler_options` (e.g. cheap CPU compiles in tests)."""
  opts = config.get("compiler_options", None)
  return dict(opts) if opts else None


def resolve_data_dir(config, data_dir: str | None = None) -> str | None:
  """The TFDS data dir: the argument, else config.data.data_dir, else $VASA_JAX_DATA_DIR, else
  None (TFDS's default, ~/tensorflow_datasets)."""
  return data_dir or config.data.get("data_dir") or os.environ.get("VASA_JAX_DATA_DIR") or None


def open_geometry_data(config, data_dir: str | None = None, split: str | None = None):
  """(GeometryClips source, FaceBasis) of config.data: a geometry motion_latents dataset
  (`extract-motion --geometry`) joined with its clips; what both stage-1 renderers train on."""
  from vasa_jax.data import geometry_pairs, motion_latents, pipeline
  name = config.data.geometry
  if not name:
    raise InputError("config.data.geometry is empty: build one with `vasa-jax data "
                     "extract-motion --geometry` and pass --config.data.geometry=motion_latents/NAME")
  data_dir = resolve_data_dir(config, data_dir)
  geo = pipeline.open_source(name, split or config.data.split, data_dir)
  basis = motion_latents.load_dataset_basis(data_dir, name)
  if basis.exp_dim != int(config.model.exp_dim):
    raise InputError(f"{name} has a face basis of {basis.exp_dim} expression components, the "
                     f"config's model.exp_dim is {config.model.exp_dim}")
  source_dir = config.data.get("source_data_dir", "") or data_dir
  repeats = dict(config.data.get("repeats", {}) or {})
  return geometry_pairs.GeometryClips(geo, source_dir, repeats=repeats), basis


def adversarial_state(params, d_params, opt) -> dict:
  """A stage-1 trainer's state: generator and discriminator parameters, their optimizer
  states (one optimizer), the generator's EMA and the step."""
  return {"params": params, "opt": opt.init(params), "d_params": d_params,
          "opt_d": opt.init(d_params), "ema": jax.tree_util.tree_map(lambda x: x, params),
          "step": jnp.zeros((), jnp.int32)}


def adversarial_step(state: dict, config, opt, g_loss: Callable, critic: Callable, real_in,
                     fake_input: Callable, *, gan_scale, use_gan: bool, n_bad,
                     prefix: str = "loss/") -> tuple[dict, dict]:
  """One generator + discriminator update of a stage-1 trainer (both renderers').

  g_loss(params) -> (total, (terms, output)); critic(d_params, x) -> the discriminator's
  output on x; fake_input(output) -> what the critic sees of the generator's output (given
  without gradient); real_in, what it sees of the target. The discriminator takes a hinge step
  (scaled by gan_scale: 0 before the GAN starts) when use_gan. A batch with non-finite inputs
  (n_bad > 0) leaves the state as it was (config.skip_nonfinite_batches). Returns the new
  state and the metrics: the generator's terms under `prefix`, the discriminator's under
  disc/, gradient / parameter / update norms."""
  import optax

  from vasa_jax import losses
  (_, (terms, out)), grads = jax.value_and_grad(g_loss, has_aux=True)(state["params"])
  updates, opt_state = opt.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  fake_in = fake_input(jax.lax.stop_gradient(out))

  def d_loss(d_params):
    real, fake = critic(d_params, real_in), critic(d_params, fake_in)
    loss = losses.hinge_d_loss(real, fake)
    first = lambda o: (o[0] if isinstance(o, (list, tuple)) else o)["logits"]
    return loss * gan_scale, {"hinge": loss, "real": jnp.mean(first(real)),
                              "fake": jnp.mean(first(fake))}

  if use_gan:
    (_, d_terms), d_grads = jax.value_and_grad(d_loss, has_aux=True)(state["d_params"])
    d_updates, opt_d = opt.update(d_grads, state["opt_d"], state["d_params"])
    d_params = optax.apply_updates(state["d_params"], d_updates)
  else:
    d_terms, d_params, opt_d = {}, state["d_params"], state["opt_d"]
  new_state = {"params": params, "opt": opt_state, "d_params": d_params, "opt_d": opt_d,
               "ema": ema_update(state["ema"], params, config.ema_decay),
               "step": state["step"] + 1}
  if bool(config.get("skip_nonfinite_batches", True)):
    new_state = keep_if_bad(n_bad, new_state, state)
  metrics = {f"{prefix}{k}": v for k, v in terms.items()}
  metrics.update({f"disc/{k}": v for k, v in d_terms.items()})
  metrics[NONFINITE_INPUTS] = n_bad
  metrics["norm/grad"] = global_norm(grads)
  metrics["norm/params"] = global_norm(params)
  metrics["norm/update"] = global_norm(updates)
  return new_state, metrics


def train_stage1(config, workdir: str, trainer, make_loader: Callable, *, source, basis,
                 step_keys, what: str) -> dict:
  """A stage-1 run on geometry clip pairs (both renderers' trainers): the run's workdir, the
  face basis saved beside its checkpoints (the bundle takes it from there), the data iterator
  `make_loader(local_batch_size)`, the state (fresh or resumed), and `loop.run` to
  config.steps; returns the last metrics as floats."""
  from vasa_jax import sharding as sharding_lib
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.train import loop
  mesh, writer = open_run(config, workdir)
  basis_path = os.path.join(workdir, codes_lib.BASIS_FILE)
  if jax.process_index() == 0 and not os.path.isfile(basis_path):
    basis.save(basis_path)
  local_bs = sharding_lib.per_process_batch_size(config.batch_size, mesh)
  data_iter = iter(make_loader(local_bs))
  state, shardings, ckpt, start = start_run(config, workdir, mesh, trainer.create_state,
                                            data_iter, init_state_fn=trainer.init_state)
  count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(t)) / 1e6
  log.info("%s %.3fM params, discriminator %.3fM params", what, count(state["params"]),
           count(state["d_params"]))
  train_step = trainer.make_train_step(config, mesh, shardings)
  return loop.run(config, state=state, start=start, ckpt=ckpt, writer=writer,
                  data_iter=data_iter, train_step=train_step,
                  make_batch=lambda raw: sharding_lib.to_global({k: raw[k] for k in step_keys},
                                                                mesh),
                  on_log=[curve_writer(workdir)]).metrics


def curve_writer(workdir: str) -> Callable:
  """An on_log hook of loop.run that appends each logged step's scalars to
  workdir/curve.jsonl (the training curve, one JSON line per logged step)."""
  path = os.path.join(workdir, "curve.jsonl")

  def write(step, scalars):
    if jax.process_index() == 0:
      with open(path, "a") as f:
        f.write(json.dumps({"step": step, **{k: round(float(v), 6)
                                             for k, v in scalars.items()}}) + "\n")
  return write


def create_sharded_state(init_fn, config, mesh, rng):
  """Abstract state -> shardings -> jitted, sharded init (parameters never pass through the host).

  `init_fn(config, rng)` returns the state with flax logical-partitioning boxes; the result is
  unboxed and placed by `config.logical_axis_rules`. Returns (state, shardings).
  """
  import functools
  abstract = jax.eval_shape(functools.partial(init_fn, config), rng)
  shardings = state_shardings(abstract, mesh, config.logical_axis_rules)
  init = jax.jit(lambda r: unbox(init_fn(config, r)), out_shardings=shardings,
                 compiler_options=compiler_options(config))
  return init(rng), shardings


def unbox(tree):
  """Drops flax partitioning boxes (nn.Partitioned) leaving the raw arrays."""
  return nn.meta.unbox(tree)


# ----------------------------------------------------------------------------- numerics

def ema_update(ema, params, decay: float):
  return jax.tree_util.tree_map(lambda e, p: e * decay + (1.0 - decay) * p.astype(e.dtype), ema, params)


def global_norm(tree) -> jax.Array:
  leaves = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.sqrt(sum(leaves)) if leaves else jnp.zeros(())


def check_finite(metrics: dict, step: int) -> None:
  """Raises NonFiniteError naming the first non-finite metric (losses, grad norms)."""
  bad = [k for k, v in metrics.items() if not np.all(np.isfinite(np.asarray(v)))]
  if bad:
    raise NonFiniteError(
        f"non-finite value at step {step} in {', '.join(sorted(bad))}; stopping. The last good "
        "checkpoint is intact: lower the learning rate or inspect the data, then restart.")


# ----------------------------------------------------------------------------- bad batches
#
# A batch whose float inputs hold NaN/Inf is skipped inside the jitted step: the step counts
# the non-finite input values (`NONFINITE_INPUTS` in its metrics, read on the host with the
# other metrics, so no extra sync) and, with config.skip_nonfinite_batches, keeps the old
# params / optimizer states / EMA instead of the update (an elementwise select, so one
# compiled program serves good and bad batches). The state's step still advances: a skipped
# batch consumes a step (the step counts batches drawn, so checkpoints, the data iterator and
# the per-step RNG stay aligned; the optimizer's own count, hence the LR schedule, does not
# advance). Non-finite LOSSES on finite inputs still stop the run (check_finite).

NONFINITE_INPUTS = "data/nonfinite_inputs"
SKIPPED_BATCHES = "data/skipped_batches"


def _float_leaves(tree):
  return [x for x in jax.tree_util.tree_leaves(tree)
          if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]


def count_nonfinite(tree) -> jax.Array:
  """(In jit) the number of NaN/Inf values over the floating-point leaves of `tree`."""
  counts = [jnp.sum(~jnp.isfinite(x)).astype(jnp.int32) for x in _float_leaves(tree)]
  return sum(counts) if counts else jnp.zeros((), jnp.int32)


def keep_if_bad(n_bad, new_state: dict, old_state: dict) -> dict:
  """(In jit) `new_state` if n_bad == 0, else `old_state` for every entry but "step" (the new
  step is kept: a skipped batch consumes a step)."""
  ok = n_bad == 0
  out = {k: jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), v, old_state[k])
         for k, v in new_state.items() if k != "step"}
  if "step" in new_state:
    out["step"] = new_state["step"]
  return out


def apply_gradients(state: dict, grads, opt, *, ema_decay: float, n_bad, skip_bad: bool):
  """The update of a {"params", "opt", "ema", "step"} train state (inside a jitted step):
  the optimizer step, the EMA, the step count, and -- with skip_bad -- the old state kept where
  the batch had `n_bad` non-finite inputs. Returns (new_state, metrics): the non-finite input
  count and the gradient / parameter / update norms."""
  import optax
  updates, opt_state = opt.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  new_state = {"params": params, "opt": opt_state,
               "ema": ema_update(state["ema"], params, ema_decay), "step": state["step"] + 1}
  if skip_bad:
    new_state = keep_if_bad(n_bad, new_state, state)
  return new_state, {NONFINITE_INPUTS: n_bad, "norm/grad": global_norm(grads),
                     "norm/params": global_norm(params), "norm/update": global_norm(updates)}


def nonfinite_fields(batch) -> list[str]:
  """Names of the float leaves of a (global) batch holding NaN/Inf. Only called after a step
  flagged the batch (every process does, as the flag is global)."""
  flat = [(jax.tree_util.keystr(path), x)
          for path, x in jax.tree_util.tree_flatten_with_path(batch)[0]
          if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  bad = jax.device_get(jax.jit(lambda xs: [jnp.any(~jnp.isfinite(x)) for x in xs])(
      [x for _, x in flat]))
  return [name for (name, _), b in zip(flat, bad) if b]


class BadBatches:
  """Host side of skipping batches with non-finite inputs (see above).

  config.skip_nonfinite_batches [True]: skip such a batch with a warning and count it;
  False: raise NonFiniteError naming the step and the fields. config.max_skipped_batches
  [100]: one more skipped batch than this raises TooManyBadBatchesError. The count covers the
  batches seen since this process started (a resumed run starts again from 0).
  """

  def __init__(self, config):
    self.enabled = bool(config.get("skip_nonfinite_batches", True))
    self.limit = int(config.get("max_skipped_batches", 100))
    self.count = 0

  def __call__(self, metrics: dict, step: int, batch) -> bool:
    """Pops NONFINITE_INPUTS from the host `metrics` of step `step`; True: the step skipped
    its batch (its other metrics are meaningless), False: a normal step. May raise."""
    n = int(np.asarray(metrics.pop(NONFINITE_INPUTS, 0)))
    if not n:
      return False
    fields = ", ".join(nonfinite_fields(batch)) or "?"
    if not self.enabled:
      raise NonFiniteError(
          f"non-finite input at step {step}: {n} NaN/Inf values in {fields}; stopping "
          "(skip_nonfinite_batches=False). The last good checkpoint is intact: inspect the data.")
    self.count += 1
    log.warning("step %d: skipped a batch with %d non-finite input values in %s (%d skipped "
                "so far)", step, n, fields, self.count)
    if self.count > self.limit:
      raise TooManyBadBatchesError(
          f"{self.count} batches with non-finite inputs (the last at step {step}, in {fields}) "
          f"exceed max_skipped_batches={self.limit}; stopping: the data is broken. Fix or "
          "rebuild the dataset, or raise config.max_skipped_batches.")
    return True


# ----------------------------------------------------------------------------- checkpoints

class Checkpointer:
  """orbax CheckpointManager for {state, data-iterator} with keep-N and safe restore."""

  def __init__(self, workdir: str, *, keep: int = 3, save_every: int = 1000, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, save_interval_steps=1,
            enable_async_checkpointing=async_save))
    self.save_every = save_every

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iter=None, *, force: bool = False) -> bool:
    if not force and (step % self.save_every) != 0:
      return False
    import grain.python as grain
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.PyGrainCheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state, data_iter=None):
    """Restores the newest readable checkpoint; returns (state, step) or (None, None)."""
    import grain.python as grain
    steps = sorted(self.manager.all_steps(), reverse=True)
    errors = []
    for i, step in enumerate(steps):
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None:
        items["data"] = grain.PyGrainCheckpointRestore(data_iter)
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:  # truncated/corrupt checkpoint: fall back to the previous one
        errors.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        log.warning("checkpoint at step %d is unreadable (%s); trying an older one", step, errors[-1])
        continue
      if i:
        log.warning("restored step %d instead of the newest step %d", step, steps[0])
      return out["state"], step
    if steps:
      # Starting from scratch would silently overwrite a run: refuse instead.
      raise CheckpointRestoreError(
          f"{self.directory} holds checkpoints {sorted(steps)} but none can be restored "
          f"(newest: {errors[0]}); is this the same config and data as the run that wrote them?")
    return None, None

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


# ----------------------------------------------------------------------------- preemption

class PreemptionGuard:
  """Turns SIGTERM / SIGINT into "save a checkpoint after this step and stop cleanly".

  TPU VMs get SIGTERM as the preemption notice; SLURM sends it before the time limit when the
  job has `--signal=TERM@<seconds>`. Used as a context manager around the training loop: the
  handlers are installed on entry and the previous ones restored on exit. The loop asks
  `should_stop(step)` after every step.

  Multi-host (jax.distributed initialised with a preemption sync manager): no Python handlers
  are installed, jax's own notifier owns SIGTERM, and `multihost_utils.reached_preemption_sync_point(step)` makes every process
  agree on the same step, so all of them save that step together. Single process: a local flag.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, signals=None):
    self.signals = tuple(signals) if signals is not None else self.SIGNALS
    self.received: int | None = None        # signal number, once one arrived
    self._previous: dict = {}
    self._multihost = _preemption_sync_available()

  # --- signal handling --------------------------------------------------------------------------
  def _handler(self, signum, frame):
    del frame
    if self.received is None:
      log.warning("received %s: will save a checkpoint after the current step and stop",
                  signal.Signals(signum).name)
    self.received = signum

  def __enter__(self):
    return self.install()

  def __exit__(self, *exc):
    self.restore()
    return False

  def install(self) -> "PreemptionGuard":
    if threading.current_thread() is not threading.main_thread():
      log.warning("PreemptionGuard outside the main thread: signals are not caught")
      return self
    if self._multihost:
      return self                             # jax's preemption notifier owns SIGTERM there
    for sig in self.signals:
      self._previous[sig] = signal.signal(sig, self._handler)
    return self

  def restore(self) -> None:
    """Puts the signal handlers that were there before `install` back."""
    for sig, old in self._previous.items():
      signal.signal(sig, old if old is not None else signal.SIG_DFL)
    self._previous.clear()

  # --- the loop's question ----------------------------------------------------------------------
  def should_stop(self, step: int) -> bool:
    if self._multihost:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        if self.received is None:
          self.received = signal.SIGTERM
        return True
      return False                            # (Ctrl-C stays a plain KeyboardInterrupt there)
    return self.received is not None


def _preemption_sync_available() -> bool:
  try:
    from jax._src import distributed
  except ImportError:  # pragma: no cover
    return False
  gs = distributed.global_state
  return gs.client is not None and getattr(gs, "preemption_sync_manager", None) is not None


def save_on_preemption(ckpt: "Checkpointer", step: int, state, data_iter) -> dict:
  """Forced save of `state` at `step` (with the data-iterator state), waits for it to land."""
  log.warning("preempted: saving checkpoint at step %d to %s", step, ckpt.directory)
  if ckpt.latest_step() != step:             # the periodic save may already have written it
    ckpt.save(step, state, data_iter, force=True)
  ckpt.wait()
  log.warning("preempted: checkpoint at step %d written; exiting cleanly (rerun the same "
              "command to resume)", step)
  return {"preempted": 1.0, "preempted_step": float(step)}


# ----------------------------------------------------------------------------- logging

def create_writer(workdir: str):
  from clu import metric_writers
  return metric_writers.create_default_writer(
      os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0,
      asynchronous=True)


class Progress:
  """Steps/s and ETA, logged every `every` steps."""

  def __init__(self, total_steps: int, start_step: int, every: int = 50):
    self.total, self.every = total_steps, every
    self._t, self._s = time.perf_counter(), start_step

  def __call__(self, step: int) -> dict:
    if step % self.every:
      return {}
    now = time.perf_counter()
    rate = (step - self._s) / max(now - self._t, 1e-9)
    self._t, self._s = now, step
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    log.info("step %d/%d  %.2f steps/s  ETA %.0f s", step, self.total, rate, eta)
    return {"steps_per_second": rate, "eta_seconds": eta}


def open_run(config, workdir: str):
  """A run's workdir (its config recorded there: later steps read what it trained with), its
  device mesh and its metrics writer."""
  from vasa_jax import config_utils
  from vasa_jax import sharding as sharding_lib
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    config_utils.record_config(workdir, config)
  mesh = sharding_lib.make_mesh(config.mesh.data, config.mesh.fsdp)
  log.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
           jax.process_count())
  return mesh, create_writer(workdir)


def start_run(config, workdir: str, mesh, create_state: Callable, data_iter,
              init_state_fn=None):
  """A trainer's state at the start of a run: fresh (sharded over `mesh`, from config.seed)
  or restored from the workdir's newest checkpoint (see checkpointer_and_resume). Returns
  (state, shardings, checkpointer, start step)."""
  rng = jax.random.key(config.seed, impl=config.get("rng_impl") or None)
  state, shardings = create_state(config, mesh, rng)
  state, ckpt = checkpointer_and_resume(config, workdir, state, shardings, data_iter,
                                        init_state_fn=init_state_fn)
  return state, shardings, ckpt, int(state["step"])


def checkpointer_and_resume(config, workdir: str, state, shardings, data_iter,
                            init_state_fn=None):
  """The run's Checkpointer, and the state restored from its newest readable checkpoint (with
  the data iterator's position) or the fresh `state` when there is none.

  Warm start: with no checkpoint in workdir and config.init_from set (another workdir of the
  same model config), its newest params and EMA replace the fresh ones (`init_state_fn`, the
  trainer's init_state, builds the abstract state to read it); the optimizer state, step and
  data order start afresh. init_from may also be an inference bundle: its EMA parameters of
  this stage start both params and EMA, grafted by shape (`graft`), so a model whose input
  grew (more audio features) starts as the bundle's. A run that resumes its own checkpoint
  ignores init_from.
  """
  ckpt = Checkpointer(workdir, keep=config.keep, save_every=config.ckpt_every,
                      async_save=config.get("async_checkpoint", True))
  abstract = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
  restored, step = ckpt.restore(abstract, data_iter)
  if restored is not None:
    log.info("resumed from step %d", step)
    return restored, ckpt
  init_from = config.get("init_from", "") or ""
  if init_from and os.path.isfile(os.path.join(init_from, "bundle.json")):
    state = {**state, **warm_start_from_bundle(init_from, config, state)}
  elif init_from:
    if init_state_fn is None:
      raise InputError("config.init_from is not supported by this trainer")
    loaded = {}
    for key in ("params", "ema"):
      try:
        tree, from_step = restore_params(init_from, config, init_state_fn, key=key)
      except FileNotFoundError as e:
        raise CheckpointRestoreError(f"config.init_from={init_from}: {e}") from None
      loaded[key] = jax.tree_util.tree_map(lambda x, ref: jax.device_put(x, ref.sharding),
                                           tree, state[key])
    state = {**state, **loaded}
    log.info("initialised params and EMA from %s (step %d)", init_from, from_step)
  return state, ckpt


def graft(fresh, old):
  """`old` parameters on the tree of `fresh` (host arrays): a leaf of the same shape is
  copied; a leaf that grew (every dim >= old's) gets old's values in its leading block --
  kernels with zeros elsewhere, so new inputs start with no effect; vectors (biases, norm
  scales) with the fresh values elsewhere; a positional table ("pos*") of a shorter window
  gets old's leading rows; any other leaf stays fresh.
  Returns (tree, the paths of leaves not copied whole)."""
  flat_old = {jax.tree_util.keystr(k): np.asarray(v)
              for k, v in jax.tree_util.tree_flatten_with_path(old)[0]}
  changed = []

  def one(path, x):
    x = np.asarray(x)
    o = flat_old.get(jax.tree_util.keystr(path))
    if o is not None and o.shape == x.shape:
      return o.astype(x.dtype)
    changed.append(jax.tree_util.keystr(path))
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    if (name.startswith("pos") and o is not None and o.ndim == x.ndim == 2
        and o.shape[1] == x.shape[1] and o.shape[0] > x.shape[0]):
      return o[:x.shape[0]].astype(x.dtype)
    if o is None or o.ndim != x.ndim or any(a > b for a, b in zip(o.shape, x.shape)):
      return x
    out = np.zeros_like(x) if x.ndim >= 2 else x.copy()
    out[tuple(slice(0, n) for n in o.shape)] = o
    return out
  return jax.tree_util.tree_map_with_path(one, fresh), changed


def warm_start_from_bundle(path: str, config, state) -> dict:
  """{"params", "ema"} of `state` started from an inference bundle's EMA parameters of
  config.stage (grafted by shape), placed with the fresh state's shardings."""
  from vasa_jax import bundle as bundle_lib
  try:
    b = bundle_lib.load(path)
  except bundle_lib.BundleError as e:
    raise CheckpointRestoreError(f"config.init_from={path}: {e}") from None
  old = {"motion_dit": b.motion_dit_params, "face_latent": b.face_latent_params}.get(
      config.get("stage", ""))
  if old is None:
    raise CheckpointRestoreError(f"config.init_from={path}: a bundle holds no {config.stage!r}")
  tree, changed = graft(jax.device_get(state["params"]), old)
  log.info("initialised params and EMA from the bundle %s (%d leaves grafted: %s)", path,
           len(changed), ", ".join(changed[:4]))
  return {k: jax.tree_util.tree_map(lambda x, ref: jax.device_put(x, ref.sharding), tree,
                                    state[k]) for k in ("params", "ema")}


# ----------------------------------------------------------------------------- per-step metrics

def finish_step(metrics: dict, step: int, batch, bad_batches, last: dict) -> tuple[dict, dict]:
  """After a train step (metrics already on the host): the skip / non-finite checks.

  Returns (last, scalars): `last` = this step's metrics (the previous ones if the batch was
  skipped) plus the skipped-batch count; `scalars` = what to log for this step (only the count
  on a skipped step: its losses mean nothing). Raises NonFiniteError as `check_finite` does.
  """
  skipped = bad_batches(metrics, step, batch)  # non-finite inputs: update dropped (or raise)
  if not skipped:
    check_finite(metrics, step)                # before any checkpoint of this state
    last = {k: float(v) for k, v in metrics.items()}
  count = {SKIPPED_BATCHES: float(bad_batches.count)}
  last = {**last, **count}
  return last, (count if skipped else last)


# ----------------------------------------------------------------------------- inference restore

class CheckpointNotFoundError(FileNotFoundError):
  """The workdir holds no (readable) checkpoint for this config."""


class _HoldWarnings(logging.Filter):
  """Holds the per-step "unreadable checkpoint" warnings: shown only if a restore works,
  else folded into the one-line error."""

  def __init__(self):
    super().__init__()
    self.records = []

  def filter(self, record):
    self.records.append(record)
    return False


def init_state_for(config) -> Callable:
  """The trainer's init_state for a config: what its checkpoints hold."""
  import importlib
  from vasa_jax.train import trainer_module
  module = trainer_module(config)
  if module is None:
    raise InputError(f"no trainer takes a config with stage={config.get('stage')!r}")
  return importlib.import_module(module).init_state


def restore_params(workdir: str, config, init_state_fn=None, *, key: str = "ema"):
  """(state[key], step) of workdir's newest readable checkpoint, on the first local device:
  the one place a training run's parameters are read back (export, evaluators, init_from).

  The abstract state comes from jax.eval_shape(init_state_fn(config, rng)) (default: the
  trainer of `config`'s stage), so no optimizer or data iterator is needed. Raises
  CheckpointNotFoundError (a FileNotFoundError) when there is no readable checkpoint.
  """
  import functools
  directory = os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")
  if not os.path.isdir(os.fspath(workdir)):
    raise CheckpointNotFoundError(f"no checkpoint in {workdir}: no such folder")
  if not (os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))):
    raise CheckpointNotFoundError(
        f"no checkpoint in {directory}; train first: vasa-jax train --config "
        f"configs/{config.get('stage', '<stage>')}.py:<variant> --workdir {workdir}")
  init_state_fn = init_state_fn or init_state_for(config)
  rng = jax.random.key(int(config.get("seed", 0)), impl=config.get("rng_impl", None) or None)
  abstract = unbox(jax.eval_shape(functools.partial(init_state_fn, config), rng))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
  held = _HoldWarnings()
  log.addFilter(held)
  ckpt = Checkpointer(os.fspath(workdir), async_save=False)
  try:
    state, step = ckpt.restore(abstract)
  except CheckpointRestoreError:
    state, step = None, None
  finally:
    log.removeFilter(held)
    ckpt.close()
  if state is None:
    why = held.records[0].getMessage() if held.records else ""
    raise CheckpointNotFoundError(
        f"no readable checkpoint in {directory} for this config (variant "
        f"{config.get('variant', '?')}); does --config match the run that wrote it? ({why})")
  for rec in held.records:
    log.handle(rec)
  return state[key], int(step)

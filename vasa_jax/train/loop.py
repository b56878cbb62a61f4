"""The one training loop of both stages: step, non-finite handling, metrics, progress,
checkpoints (every `checkpoint_every` steps and the last), preemption (SIGTERM/SIGINT: this
step is checkpointed, then the loop stops; rerunning the same command resumes exactly).

A trainer builds its state, checkpointer, writer, data iterator and jitted step, and hands
them here with two small callables: `make_batch(raw) -> batch` (host batch to the global,
sharded one the step takes) and optional hooks."""

from __future__ import annotations

from typing import Callable, Iterable

import jax

from vasa_jax.train import common


def run(config, *, state, start: int, ckpt: "common.Checkpointer", writer, data_iter,
        train_step: Callable, make_batch: Callable,
        on_log: Iterable[Callable[[int, dict], None]] = (),
        on_step: Iterable[Callable[[int, dict, dict], None]] = ()) -> dict:
  """Runs steps start+1 .. config.steps. Returns the last finite metrics (plus "preempted" /
  "preempted_step" when a signal stopped it early).

  on_log: hook(step, scalars) at each logged step (after the scalars are written);
  on_step: hook(step, state, batch) after every step, before its checkpoint."""
  progress = common.Progress(config.steps, start, every=max(config.log_every, 1))
  last, step = {}, start
  bad_batches = common.BadBatches(config)     # skip (and count) batches with NaN/Inf inputs
  guard = common.PreemptionGuard().install()  # SIGTERM/SIGINT: checkpoint this step, stop
  try:
    while step < config.steps:
      batch = make_batch(next(data_iter))
      state, metrics = train_step(state, batch)
      step += 1
      metrics = jax.device_get(metrics)
      last, scalars = common.finish_step(metrics, step, batch, bad_batches, last)
      if step % config.log_every == 0 or step == config.steps:
        writer.write_scalars(step, {**scalars, **progress(step)})
        for hook in on_log:
          hook(step, scalars)
      for hook in on_step:
        hook(step, state, batch)
      ckpt.save(step, state, data_iter, force=(step == config.steps))
      if guard.should_stop(step) and step < config.steps:
        last.update(common.save_on_preemption(ckpt, step, state, data_iter))
        break
  finally:
    guard.restore()
    ckpt.close()
    writer.flush()
  return last

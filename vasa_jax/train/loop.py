"""The one training loop: both stages' trainers and the evaluators' trainers run through it.

It owns the step, non-finite handling, metrics, progress, checkpoints (every
`checkpoint_every` steps and the last), a time budget, and preemption (SIGTERM/SIGINT: this
step is checkpointed, then the loop stops; rerunning the same command resumes exactly).

A trainer builds its state, checkpointer, writer, data iterator and jitted step, and hands
them here with two small callables: `make_batch(raw) -> batch` (host batch to the global,
sharded one the step takes) and optional hooks. The evaluators' small in-memory fits pass
no checkpointer and no writer: then nothing is written and Ctrl-C interrupts as usual."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Iterable

import jax

from vasa_jax.train import common

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
  """What `run` ends with: the last state, the last finite metrics (plus "preempted" /
  "preempted_step" when a signal stopped it, "out_of_time" when the budget did) and the
  number of steps done in all (start included)."""
  state: Any
  metrics: dict
  step: int


def run(config, *, state, start: int, data_iter, train_step: Callable, make_batch: Callable,
        ckpt: "common.Checkpointer | None" = None, writer=None,
        on_log: Iterable[Callable[[int, dict], None]] = (),
        on_step: Iterable[Callable[[int, Any, Any, dict], None]] = (),
        max_seconds: float = 0.0) -> Outcome:
  """Runs steps start+1 .. config.steps (config needs `steps` and `log_every`; see
  common.BadBatches for the non-finite settings).

  on_step: hook(step, state, batch, metrics) after every step, before its log line and its
  checkpoint (metrics on the host; empty on a step whose batch was skipped);
  on_log: hook(step, scalars) at each logged step (after the scalars are written).
  max_seconds > 0: stop (with a checkpoint) after the first step past that many seconds."""
  steps, log_every = int(config.steps), max(int(config.log_every), 1)
  progress = common.Progress(steps, start, every=log_every)
  last, step = {}, start
  bad_batches = common.BadBatches(config)     # skip (and count) batches with NaN/Inf inputs
  guard = common.PreemptionGuard().install() if ckpt is not None else None
  t0 = time.perf_counter()
  try:
    while step < steps:
      batch = make_batch(next(data_iter))
      state, metrics = train_step(state, batch)
      step += 1
      metrics = jax.device_get(metrics)
      skipped_before = bad_batches.count
      last, scalars = common.finish_step(metrics, step, batch, bad_batches, last)
      step_metrics = {} if bad_batches.count > skipped_before else scalars
      for hook in on_step:
        hook(step, state, batch, step_metrics)
      if step % log_every == 0 or step == steps:
        if writer is not None:
          writer.write_scalars(step, {**scalars, **progress(step)})
        else:
          progress(step)
        for hook in on_log:
          hook(step, scalars)
      out_of_time = bool(max_seconds) and time.perf_counter() - t0 > max_seconds
      if ckpt is not None:
        ckpt.save(step, state, data_iter, force=(step == steps or out_of_time))
      if out_of_time and step < steps:
        log.warning("stopping at step %d: the time budget of %.0f s is spent", step, max_seconds)
        last["out_of_time"] = True
        break
      if guard is not None and guard.should_stop(step) and step < steps:
        last.update(common.save_on_preemption(ckpt, step, state, data_iter))
        break
  finally:
    if guard is not None:
      guard.restore()
    if ckpt is not None:
      ckpt.close()
    if writer is not None:
      writer.flush()
  return Outcome(state=state, metrics=last, step=step)


def forever(make: Callable[[], Any]):
  """An endless iterator of make() (the in-memory fits' random batches)."""
  while True:
    yield make()

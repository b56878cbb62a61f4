"""Stage-1 trainer: sharded == single-device, loss goes down, exact resume, NaN stop."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from conftest import ListSource, make_fake_records
from conftest import (assert_skipped_step, checkpoint_states as _states,  # noqa: F401
                      corrupt_call as _corrupt_call)
from vasa_jax.data import pipeline
from vasa_jax.train import common
from vasa_jax.train import face_latent as trainer

from conftest import fast_tiny_config, one_step_single_and_sharded



def tiny_config(**overrides):
  return fast_tiny_config("face_latent", {"data.augment": ml_collections.ConfigDict(
      dict(pipeline.AugmentConfig.none().__dict__))}, overrides)


@pytest.fixture(scope="module")
def source():
  return ListSource(make_fake_records(n_clips=8, frames=10, size=32, identities=4))


def _batch(source, bs=8, seed=0):
  return next(iter(pipeline.stage1_loader(source, batch_size=bs, seed=seed, augment=None,
                                          shard_index=0, shard_count=1)))


def test_sharded_step_equals_single_device(source):
  config = tiny_config()
  (_, p1, m1), (_, p8, m8) = one_step_single_and_sharded(trainer, config, _batch(source))
  assert len(jax.devices()) == 8
  np.testing.assert_allclose(m1["loss/total"], m8["loss/total"], rtol=1e-4)
  np.testing.assert_allclose(m1["disc/total"], m8["disc/total"], rtol=1e-4, atol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5), p1, p8)
  # The step actually changed the parameters.
  assert m1["norm/update_g"] > 0


def test_resume_continues_exactly_and_loss_decreases(source, tmp_path):
  # Uninterrupted run of 12 steps.
  full = trainer.train_and_evaluate(tiny_config(steps=12, ckpt_every=4, image_every=6),
                                    str(tmp_path / "a"), source=source)
  # TensorBoard got scalars and the EMA image grid.
  from tensorboard.backend.event_processing import event_accumulator
  ev = event_accumulator.EventAccumulator(str(tmp_path / "a" / "tensorboard"),
                                          size_guidance={"images": 0, "tensors": 0})
  ev.Reload()
  tags = ev.Tags()
  assert any("source_driving_recon_cross" in t for t in tags.get("tensors", []) + tags.get("images", []))
  assert any("loss/l1" in t for t in tags.get("tensors", []) + tags.get("scalars", []))
  # Same run stopped at step 4 (as if killed after that checkpoint), then restarted.
  trainer.train_and_evaluate(tiny_config(steps=4, ckpt_every=4), str(tmp_path / "b"), source=source)
  resumed = trainer.train_and_evaluate(tiny_config(steps=12, ckpt_every=4), str(tmp_path / "b"),
                                       source=source)
  for k in ("loss/total", "loss/l1", "norm/params_g"):
    np.testing.assert_allclose(resumed[k], full[k], rtol=1e-4, err_msg=k)
  ck = common.Checkpointer(str(tmp_path / "b"))
  assert ck.latest_step() == 12
  ck.close()
  # A short run on a handful of clips lowers the reconstruction loss.
  first = trainer.train_and_evaluate(tiny_config(steps=1), str(tmp_path / "c"), source=source)
  assert full["loss/l1"] < first["loss/l1"]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(source, tmp_path):
  wd = str(tmp_path / "nan")
  trainer.train_and_evaluate(tiny_config(steps=2, ckpt_every=1), wd, source=source)
  bad = tiny_config(steps=5, ckpt_every=1)
  bad.optim.lr_g = 1e30
  with pytest.raises(common.NonFiniteError, match=r"step 3 .*norm/"):
    trainer.train_and_evaluate(bad, wd, source=source)
  ck = common.Checkpointer(wd)
  assert ck.latest_step() == 2                   # nothing non-finite was saved
  ck.close()


_KILL_SCRIPT = r"""
import os, sys
sys.path.insert(0, {tests!r})
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import conftest  # noqa: F401  (same env setup as the tests)
from conftest import ListSource, make_fake_records
import test_train_face_latent as t
src = ListSource(make_fake_records(n_clips=8, frames=10, size=32, identities=4))
t.trainer.train_and_evaluate(t.tiny_config(steps={steps}, ckpt_every=1), {workdir!r}, source=src)
"""


def test_kill_9_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
  import signal
  import subprocess
  import sys
  import time
  wd = str(tmp_path / "killed")
  script = tmp_path / "run.py"
  tests = os.path.dirname(os.path.abspath(__file__))
  script.write_text(_KILL_SCRIPT.format(tests=tests, steps=10_000, workdir=wd))
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckdir = os.path.join(wd, "checkpoints")
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
      if len(steps) >= 1 and max(steps) >= 3:
        break
      time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)           # no chance to clean up
  finally:
    proc.wait()
  ck = common.Checkpointer(wd)
  latest = ck.latest_step()
  ck.close()
  assert latest is not None and latest >= 3
  # A restart continues from the newest complete checkpoint and trains on.
  out = trainer.train_and_evaluate(tiny_config(steps=latest + 2, ckpt_every=1), wd,
                                   source=ListSource(make_fake_records(n_clips=8, frames=10, size=32, identities=4)))
  assert np.isfinite(out["loss/total"])
  ck = common.Checkpointer(wd)
  assert ck.latest_step() == latest + 2
  ck.close()


def test_mismatched_checkpoint_is_refused_not_overwritten(source, tmp_path):
  wd = str(tmp_path / "mm")
  trainer.train_and_evaluate(tiny_config(steps=1), wd, source=source)
  other = ListSource(make_fake_records(n_clips=5, frames=10, size=32, identities=3, seed=1))
  with pytest.raises(common.CheckpointRestoreError, match="none can be restored"):
    trainer.train_and_evaluate(tiny_config(steps=3), wd, source=other)



def test_batch_with_non_finite_input_is_skipped(source, tmp_path, monkeypatch, caplog):
  wd = str(tmp_path / "skip")
  _corrupt_call(monkeypatch, 2, ("driving", "pose"))     # the batch of step 2
  with caplog.at_level("WARNING", logger=common.__name__):
    out = trainer.train_and_evaluate(tiny_config(steps=3, ckpt_every=1), wd, source=source)
  assert out[common.SKIPPED_BATCHES] == 1.0 and np.isfinite(out["loss/total"])
  assert "step 2: skipped a batch" in caplog.text and "['driving']['pose']" in caplog.text
  assert_skipped_step(_states(wd), 2)


def test_non_finite_input_stops_when_skipping_is_off(source, tmp_path, monkeypatch):
  wd = str(tmp_path / "noskip")
  _corrupt_call(monkeypatch, 2, ("source", "gaze"))
  with pytest.raises(common.NonFiniteError, match=r"input at step 2: .*\['source'\]\['gaze'\]"):
    trainer.train_and_evaluate(tiny_config(steps=3, skip_nonfinite_batches=False), wd,
                               source=source)
  ck = common.Checkpointer(wd)
  assert ck.latest_step() == 1                   # nothing after the bad batch was saved
  ck.close()

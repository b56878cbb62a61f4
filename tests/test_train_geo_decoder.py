"""The default stage-1 trainer (the mouth compositor, vasa_jax/train/geo_decoder.py): what every
trainer guarantees. Sharded == single device, an exact resume, a non-finite loss stops with the
last good checkpoint kept, a non-finite input batch is skipped, a checkpoint of another model is
refused and not overwritten."""

import jax
import ml_collections
import numpy as np
import pytest

from conftest import FAST_COMPILE, ListSource, load_stage_config, one_step_single_and_sharded
from test_geometry_animate import _basis, _geo_records
from conftest import (assert_skipped_step, checkpoint_states as _states,
                      corrupt_call as _corrupt_call)
from vasa_jax.train import common
from vasa_jax.train import geo_decoder as trainer


def tiny_config(spec: str = ""):
  c = load_stage_config("face_latent").get_config("geo_tiny,batch_size=8" + spec)
  with c.unlocked():
    c.rng_impl, c.async_checkpoint = "unsafe_rbg", False
    c.compiler_options = ml_collections.ConfigDict(FAST_COMPILE)
  return c


@pytest.fixture(scope="module")
def source():
  return ListSource(_geo_records())


@pytest.fixture(scope="module")
def basis():
  return _basis()


def test_sharded_step_equals_single_device():
  config = tiny_config()
  (p0, p1, m1), (_, p8, m8) = one_step_single_and_sharded(
      trainer, config, trainer.sanity_batch(config, batch=8))
  assert len(jax.devices()) == 8
  np.testing.assert_allclose(m1["loss/mouth_total"], m8["loss/mouth_total"], rtol=1e-4)
  np.testing.assert_allclose(m1["disc/hinge"], m8["disc/hinge"], rtol=1e-4, atol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5),
                         p1, p8)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p0),
                                                       jax.tree_util.tree_leaves(p1)))


def test_resume_continues_exactly(source, basis, tmp_path):
  full = trainer.train_and_evaluate(tiny_config(",steps=4,ckpt_every=2"), str(tmp_path / "a"),
                                    source=source, basis=basis)
  trainer.train_and_evaluate(tiny_config(",steps=2,ckpt_every=2"), str(tmp_path / "b"),
                             source=source, basis=basis)
  resumed = trainer.train_and_evaluate(tiny_config(",steps=4,ckpt_every=2"), str(tmp_path / "b"),
                                       source=source, basis=basis)
  for k in ("loss/mouth_total", "disc/hinge"):
    np.testing.assert_allclose(resumed[k], full[k], rtol=1e-4, err_msg=k)
  ck = common.Checkpointer(str(tmp_path / "b"))
  assert ck.latest_step() == 4
  ck.close()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(source, basis, tmp_path):
  wd = str(tmp_path / "nan")
  trainer.train_and_evaluate(tiny_config(",steps=2,ckpt_every=1"), wd, source=source,
                             basis=basis)
  bad = tiny_config(",steps=5,ckpt_every=1")
  bad.optim.lr = 1e30
  with pytest.raises(common.NonFiniteError, match=r"step 3 "):
    trainer.train_and_evaluate(bad, wd, source=source, basis=basis)
  ck = common.Checkpointer(wd)
  assert ck.latest_step() == 2                   # nothing non-finite was saved
  ck.close()


def test_batch_with_non_finite_input_is_skipped(source, basis, tmp_path, monkeypatch):
  wd = str(tmp_path / "skip")
  _corrupt_call(monkeypatch, 2, ("mouth_in",))   # the batch of step 2
  out = trainer.train_and_evaluate(tiny_config(",steps=3,ckpt_every=1"), wd, source=source,
                                   basis=basis)
  assert out[common.SKIPPED_BATCHES] == 1.0 and np.isfinite(out["loss/mouth_total"])
  assert_skipped_step(_states(wd), 2)


def test_a_checkpoint_of_another_model_is_refused_not_overwritten(source, basis, tmp_path):
  wd = str(tmp_path / "mm")
  trainer.train_and_evaluate(tiny_config(",steps=1"), wd, source=source, basis=basis)
  other = tiny_config(",steps=3")
  other.model.mouth.widths = (8, 16)             # another compositor
  with pytest.raises(common.CheckpointRestoreError, match="none can be restored"):
    trainer.train_and_evaluate(other, wd, source=source, basis=basis)
  ck = common.Checkpointer(wd)
  assert ck.latest_step() == 1
  ck.close()


def test_the_run_records_its_config_and_export_reads_it(source, basis, tmp_path, caplog):
  """A stage-1 run writes the config it trained with into its workdir; what reads the run
  back (export, restore_params) takes that record, not a config spec: a spec for another
  model is ignored with a warning, and without a record a spec is required."""
  import json
  import os

  from vasa_jax import config_utils
  wd = str(tmp_path / "run")
  config = tiny_config(",steps=1")
  trainer.train_and_evaluate(config, wd, source=source, basis=basis)
  recorded = config_utils.run_config(wd)
  assert recorded.model.to_dict() == json.loads(config.model.to_json_best_effort())
  params, step = trainer.restore_params(wd, recorded)
  assert step == 1 and "mouth" in params
  spec = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "face_latent.py") + ":geo"
  with caplog.at_level("WARNING"):
    again = config_utils.run_config(wd, spec)          # another model: the record wins
  assert again.model.to_dict() == recorded.model.to_dict()
  assert "using the config the run recorded" in caplog.text
  with pytest.raises(config_utils.ConfigError, match="records no config"):
    config_utils.run_config(str(tmp_path))

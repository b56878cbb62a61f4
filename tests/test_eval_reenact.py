"""Stage-1 reenactment evaluation: metrics, self-reenactment, cross grid, checkpoint restore, CLI."""

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import FAST_COMPILE, ListSource, fast_tiny_config, make_fake_records
from vasa_jax import sharding
from vasa_jax.data import pipeline, records
from vasa_jax.eval import reenact
from vasa_jax.models import FaceLatentModel
from vasa_jax.train import face_latent as trainer

_CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "configs", "face_latent.py")

# Cheap CPU compiles (as in tests/test_face_latent.py).
_FAST = FAST_COMPILE


def tiny_config(**overrides):
  return fast_tiny_config("face_latent", {"data.augment": ml_collections.ConfigDict(
      dict(pipeline.AugmentConfig.none().__dict__))}, overrides)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 1-step tiny training run: (config, workdir, source)."""
  source = ListSource(make_fake_records(n_clips=8, frames=10, size=32, identities=4))
  config = tiny_config(steps=1)
  workdir = str(tmp_path_factory.mktemp("stage1_run"))
  trainer.train_and_evaluate(config, workdir, source=source)
  return config, workdir, source


@pytest.fixture(scope="module")
def model_params(run):
  config, workdir, _ = run
  return FaceLatentModel(config.model), reenact.load_params(workdir, config)


def _frames(source, clip, idx):
  return [records.decode_jpeg(source[clip]["frames"][t]) for t in idx]


# ----------------------------------------------------------------------------- metrics

def test_perfect_render_scores_high_through_the_jitted_metrics():
  """What self_reenactment computes for a render that equals the driver frame exactly."""
  frames = np.stack(_frames(ListSource(make_fake_records(n_clips=1, frames=4)), 0, range(4)))
  fns = reenact._functions(FaceLatentModel(tiny_config().model), _FAST)
  p, s = jax.device_get(fns.metrics(frames, frames))
  np.testing.assert_allclose(p, reenact.PSNR_CAP_DB, rtol=1e-5)
  np.testing.assert_allclose(s, 1.0, atol=1e-5)
  off = np.clip(frames.astype(np.int32) + 3, 0, 255).astype(np.uint8)
  p2, _ = jax.device_get(fns.metrics(off, frames))
  assert np.all(p2 > 35) and np.all(p2 < p)


def test_driver_indices():
  assert reenact.driver_indices(10, 4) == [1, 4, 6, 9]
  assert reenact.driver_indices(10, 20) == list(range(1, 10))
  assert reenact.driver_indices(5, 1) == [2]
  assert reenact.driver_indices(1, 8) == []


# ----------------------------------------------------------------------------- checkpoint

def test_load_params_restores_the_runs_ema(run):
  config, workdir, _ = run
  ema = reenact.load_params(workdir, config)
  raw = reenact.load_params(workdir, config, use_ema=False)
  # Independent read of the saved state (no target tree): the EMA params, bit for bit.
  saved = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "1", "state"))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                         ema, saved["ema"])
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                         raw, saved["params"])
  # ...and it is the EMA of one step: decay * init + (1 - decay) * params.
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  init, _ = trainer.create_state(config, mesh, jax.random.key(config.seed, impl="unsafe_rbg"))
  d = config.ema_decay
  jax.tree_util.tree_map(
      lambda e, i, p: np.testing.assert_allclose(e, d * np.asarray(i) + (1 - d) * np.asarray(p),
                                                 rtol=1e-5, atol=1e-7),
      ema, init["params"], raw)
  moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), raw, init["params"]))
  assert max(moved) > 0


def test_load_params_without_checkpoint_or_with_another_config(run, tmp_path, caplog):
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    reenact.load_params(str(tmp_path), tiny_config())
  assert not os.path.exists(tmp_path / "checkpoints")
  config, workdir, _ = run
  other = tiny_config()
  other.model.dyn_dim = 4
  with pytest.raises(FileNotFoundError, match="does --config match"):
    reenact.load_params(workdir, other)
  assert "unreadable" not in caplog.text       # folded into the one-line error


def test_the_run_records_its_config_and_stage_2_reads_it(run, caplog):
  """A stage-1 run writes the config it trained with into its workdir; restoring it for stage
  2 (load_stage1, the latent motion source) reads that record, not a config spec: a spec for
  another model is ignored with a warning, and without a record a spec is required."""
  from vasa_jax import config_utils
  from vasa_jax.train import common
  from vasa_jax.train import motion_dit as md_trainer
  config, workdir, _ = run
  recorded = config_utils.run_config(workdir)
  assert recorded.model.to_dict() == json.loads(config.model.to_json_best_effort())
  cfg, params = common.load_stage1(None, workdir)
  assert cfg.model.dyn_dim == config.model.dyn_dim and jax.tree_util.tree_leaves(params)
  other = os.path.join(os.path.dirname(_CONFIG_PATH), "face_latent.py") + ":geo_tiny"
  cfg2, _ = common.load_stage1(other, workdir)         # another model: the record wins
  assert cfg2.model.to_dict() == recorded.model.to_dict()
  assert "using the config the run recorded" in caplog.text
  md = ml_collections.ConfigDict({"face_latent_config": "", "face_latent_checkpoint": workdir})
  assert md_trainer._face_latent_config(md).model.to_dict() == recorded.model.to_dict()
  with pytest.raises(config_utils.ConfigError, match="records no config"):
    config_utils.run_config(os.path.dirname(workdir))


# ----------------------------------------------------------------------------- reenactment

def test_self_reenactment_counts_and_finite(model_params):
  model, params = model_params
  # Frames of 48 px: resized to the model's 32 px on the way in.
  source = ListSource(make_fake_records(n_clips=3, frames=10, size=48, identities=3, seed=1))
  res = reenact.self_reenactment(model, params, source, frames_per_clip=5, max_clips=2, batch=4,
                                 compiler_options=_FAST)
  assert res["clips"] == 2 and res["frames"] == 10 and len(res["per_clip"]) == 2
  assert res["image_size"] == 32 and res["skipped_clips"] == 0
  for c in res["per_clip"]:
    assert c["frames"] == 5 and c["driver_indices"] == reenact.driver_indices(10, 5)
    assert np.isfinite(c["psnr"]) and -1.0 <= c["ssim"] <= 1.0
  assert np.isfinite(res["psnr"]) and 0.0 < res["psnr"] < reenact.PSNR_CAP_DB
  # the summary is the mean over frames (every clip has 5): the per-clip means' mean
  assert res["ssim"] == pytest.approx(np.mean([c["ssim"] for c in res["per_clip"]]), abs=1e-6)
  assert res["ssim"] < 1.0       # a 10-step toy model does not reproduce the driving frames
  assert res["per_clip"][0]["clip_id"] == "clip0" and res["per_clip"][1]["identity"] == "person1"
  # One compile per shape, not per clip (5 drivers = 2 padded batches of 4, 2 clips).
  fns = reenact._functions(model, _FAST)
  assert fns.render._cache_size() == 1 and fns.prepare._cache_size() == 1
  assert fns.motion._cache_size() == 1


def test_cross_reenactment_grid(model_params, run):
  model, params = model_params
  _, _, source = run
  s = model.config.image_size
  srcs = _frames(source, 0, [0]) + _frames(source, 1, [0])
  big = ListSource(make_fake_records(n_clips=1, frames=3, size=64))
  drvs = _frames(source, 2, [3, 7]) + _frames(big, 0, [2])
  grid = reenact.cross_reenactment_grid(model, params, srcs, drvs, batch=4,
                                        compiler_options=_FAST)
  assert grid.shape == ((1 + 2) * s, (1 + 3) * s, 3) and grid.dtype == np.uint8
  assert np.all(grid[:s, :s] == 255)
  np.testing.assert_array_equal(grid[:s, s:2 * s], drvs[0])
  np.testing.assert_array_equal(grid[2 * s:3 * s, :s], srcs[1])
  assert grid[s:2 * s, 3 * s:].shape == (s, s, 3)


def test_evaluate_writes_json_and_png(run, tmp_path):
  config, workdir, source = run
  out = tmp_path / "eval"
  rep = reenact.evaluate(workdir, config, ["fake/one:test", ("fake/two", "test")], None, str(out),
                         sources={"fake/one:test": source, "fake/two:test": source},
                         frames_per_clip=3, max_clips=2, batch=4, grid_sources=2, grid_drivers=3)
  saved = json.loads((out / "reenactment.json").read_text())
  assert saved["checkpoint"]["step"] == 1 and saved["checkpoint"]["params"] == "ema"
  assert set(saved["datasets"]) == {"fake/one:test", "fake/two:test"}
  assert saved["datasets"]["fake/one:test"]["frames"] == 6 and saved["overall"]["frames"] == 12
  assert rep["overall"]["psnr"] == pytest.approx(saved["datasets"]["fake/one:test"]["psnr"])
  png = records.decode_jpeg((out / "cross_reenactment.png").read_bytes())
  assert png.shape == (3 * 32, 4 * 32, 3)
  ids = [d["identity"] for d in saved["cross_reenactment"]["sources"] +
         saved["cross_reenactment"]["drivers"]]
  assert len(set(ids[:4])) == 4          # 4 identities in the data: all different


def test_cli_errors(run, tmp_path, capsys):
  _, workdir, _ = run
  cfg = os.path.abspath(_CONFIG_PATH) + ":tiny"
  rc = reenact.main(["--config", cfg, "--workdir", str(tmp_path / "none"),
                     "--dataset", "synthetic_talking_heads/tiny:test", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1 and "no checkpoint" in err
  rc = reenact.main(["--config", cfg, "--workdir", workdir, "--data-dir", str(tmp_path / "data"),
                     "--dataset", "synthetic_talking_heads/tiny:test", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1 and "synthetic_talking_heads/tiny" in err
  assert not (tmp_path / "o").exists()

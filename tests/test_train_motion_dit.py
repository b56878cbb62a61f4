"""Stage-2 trainer: sharded == single-device, loss goes down, exact resume, stats stored once."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ListSource, fast_tiny_config, make_fake_motion_records
from vasa_jax import sharding
from vasa_jax.data import motion as motion_lib
from vasa_jax.train import motion_dit as trainer



def tiny_config(**overrides):
  """Stage 2 at tiny size on stored geometry motion (6 + 44 dims) of an injected source."""
  return fast_tiny_config("motion_dit", {"motion_source": "dataset", "model.dyn_dim": 44,
                                         "data.stats_batches": 2}, overrides)


@pytest.fixture(scope="module")
def source():
  # frames <= 25: conftest's fake frames encode 10 t + 5 in uint8.
  return ListSource(make_fake_motion_records(n_clips=8, frames=25, motion_dim=50, identities=4))


def _scalars(workdir, tag):
  from tensorboard.backend.event_processing import event_accumulator
  ev = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                          size_guidance={"tensors": 0, "scalars": 0})
  ev.Reload()
  if tag in ev.Tags().get("scalars", []):
    return {e.step: e.value for e in ev.Scalars(tag)}
  return {e.step: float(np.asarray(jax.numpy.asarray(_tensor(e.tensor_proto))))
          for e in ev.Tensors(tag)}


def _tensor(proto):
  from tensorboard.util import tensor_util
  return tensor_util.make_ndarray(proto)


def test_normalization_stats_match_numpy():
  rng = np.random.default_rng(0)
  ms = [rng.normal(3.0, 0.01, size=(4, 5, 3)).astype(np.float32) for _ in range(3)]
  masks = [np.ones((4, 5), np.float32) for _ in range(3)]
  masks[1][:, 3:] = 0
  s = motion_lib.normalization_stats(zip(ms, masks), 3, min_std=1e-6)
  allm = np.concatenate([m[k > 0] for m, k in zip(ms, masks)], axis=0).astype(np.float64)
  np.testing.assert_allclose(s["mean"], allm.mean(0), rtol=1e-6)
  np.testing.assert_allclose(s["std"], allm.std(0), rtol=1e-3)
  x = rng.normal(size=(2, 5, 3))
  np.testing.assert_allclose(motion_lib.denormalize(motion_lib.normalize(x, s), s), x, atol=1e-5)
  # Constant dimensions are floored instead of dividing by zero.
  c = motion_lib.normalization_stats([np.zeros((2, 3, 2), np.float32)], 1)
  assert c["std"] == [1e-2, 1e-2]


def test_only_stored_motion_is_a_source(source):
  """Stage 2 trains on stored motion only: the retired sources are refused in one line, and
  without an injected source a motion dataset is required."""
  mesh = sharding.make_mesh()
  mfn, frames = trainer.make_motion_fn(tiny_config(), mesh)
  assert mfn is motion_lib.stored_motion and frames is False
  for retired in ("latent", "ground_truth"):
    with pytest.raises(trainer.ConfigError, match=f"motion_source='{retired}' is retired"):
      trainer.make_motion_fn(tiny_config(motion_source=retired), mesh)
  with pytest.raises(trainer.ConfigError, match="data.motion_dataset is empty"):
    trainer.make_source(tiny_config())


def test_sharded_step_equals_single_device(source):
  # Adam's first update is ~lr * sign(grad): where a gradient is 0 up to rounding (e.g. the
  # attention key biases, to which softmax is invariant) the sign is noise. A larger epsilon
  # keeps those updates at the size of the gradient, so the comparison is well conditioned.
  config = tiny_config(**{"optim.eps": 1e-3})
  loader = trainer.make_loader(config, source, 8, frames=False)
  local = next(iter(loader))
  mfn = motion_lib.stored_motion
  stats = motion_lib.normalization_stats([(mfn(local)[0], local["mask"])], 1)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(devices=devices)
    state, shardings = trainer.create_state(config, mesh, jax.random.key(0, impl="unsafe_rbg"))
    step = trainer.make_train_step(config, mesh, shardings, stats)
    batch = trainer.step_batch(sharding.to_global(local, mesh), mfn, mesh)
    state, metrics = step(state, batch)
    results.append((jax.device_get(state["params"]), jax.device_get(metrics)))
  assert len(jax.devices()) == 8
  (p1, m1), (p8, m8) = results
  for k in ("loss/loss", "loss/x0_mse", "loss/velocity", "norm/grad"):
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-4, err_msg=k)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5),
                         p1, p8)
  assert m1["norm/update"] > 0


def test_resume_exact_loss_decreases_stats_stored_once(source, tmp_path, monkeypatch):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  full = trainer.train_and_evaluate(tiny_config(steps=8, ckpt_every=4), a, source=source)
  stats_path = os.path.join(b, motion_lib.STATS_FILE)
  trainer.train_and_evaluate(tiny_config(steps=4, ckpt_every=4), b, source=source)
  with open(stats_path) as f:
    first_stats = f.read()
  mtime = os.stat(stats_path).st_mtime_ns
  stats = json.loads(first_stats)
  assert stats["motion_source"] == "dataset" and len(stats["mean"]) == 50

  # On restart the stored statistics are reused, never recomputed.
  def no_recompute(*a, **k):
    raise AssertionError("statistics recomputed on restart")
  monkeypatch.setattr(motion_lib, "normalization_stats", no_recompute)
  resumed = trainer.train_and_evaluate(tiny_config(steps=8, ckpt_every=4), b, source=source)
  for k in ("loss/loss", "loss/x0_mse", "norm/params", "norm/grad"):
    np.testing.assert_allclose(resumed[k], full[k], rtol=1e-4, err_msg=k)
  assert os.stat(stats_path).st_mtime_ns == mtime
  with open(stats_path) as f:
    assert f.read() == first_stats

  # Continue `a` to 15 steps: the loss comes down.
  trainer.train_and_evaluate(tiny_config(steps=15, ckpt_every=4), a, source=source)
  losses = _scalars(a, "loss/loss")
  assert sorted(losses) == list(range(1, 16))
  early = np.mean([losses[s] for s in (1, 2, 3)])
  late = np.mean([losses[s] for s in (13, 14, 15)])
  assert late < 0.7 * early, (early, late)


def test_injected_motion_fn(source, tmp_path):
  calls = []

  def mfn(batch):
    calls.append(1)
    m = jnp.concatenate([batch["pose"], batch["mouth"], batch["gaze"],
                         batch["blink"][..., None], batch["emotion_intensity"][..., None],
                         jnp.zeros(batch["pose"].shape[:2] + (1,))], axis=-1)
    return m, None             # no previous-window context
  out = trainer.train_and_evaluate(tiny_config(steps=2, ckpt_every=2, **{"model.dyn_dim": 8}),
                                   str(tmp_path / "inj"), source=source, motion_fn=mfn)
  assert np.isfinite(out["loss/loss"]) and len(calls) == 2 + 2   # 2 stats batches + 2 steps


def test_batch_with_non_finite_input_is_skipped_up_to_the_limit(source, tmp_path, monkeypatch):
  from conftest import (assert_skipped_step, checkpoint_states as _states,
                        corrupt_call as _corrupt_call)
  from vasa_jax.train import common
  wd = str(tmp_path / "skip")
  # to_global calls: 2 for the motion statistics (data.stats_batches), then one per step.
  calls = _corrupt_call(monkeypatch, 2 + 2, ("audio",))   # the batch of step 2
  out = trainer.train_and_evaluate(tiny_config(steps=3), wd, source=source)
  assert len(calls) == 2 + 3
  assert out[common.SKIPPED_BATCHES] == 1.0 and np.isfinite(out["loss/loss"])
  assert_skipped_step(_states(wd), 2)
  # More bad batches than max_skipped_batches: the data is broken, the run stops.
  _corrupt_call(monkeypatch, 2 + 1, ("control_distance",))
  with pytest.raises(common.TooManyBadBatchesError, match=r"max_skipped_batches=0"):
    trainer.train_and_evaluate(tiny_config(steps=2, max_skipped_batches=0),
                               str(tmp_path / "limit"), source=source)


def test_init_from_warm_starts_params_and_ema_only(source, tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  trainer.train_and_evaluate(tiny_config(steps=4, ckpt_every=4), a, source=source)
  cfg = tiny_config(steps=4, ckpt_every=4)
  from vasa_jax.train import common
  pa, _ = common.restore_params(a, cfg, trainer.init_state, key="params")
  # b has another seed: its own fresh init is far from a's params
  fresh, _ = trainer.create_state(cfg, sharding.make_mesh(-1, 1), jax.random.key(
      1, impl="unsafe_rbg"))
  out = trainer.train_and_evaluate(tiny_config(steps=1, ckpt_every=1, init_from=a, seed=1), b,
                                   source=source)
  pb, step = common.restore_params(b, cfg, trainer.init_state, key="params")
  assert step == 1 and np.isfinite(out["loss/loss"])
  # one step away from a's params, far from a fresh init
  d_a = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(
      jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)))
  d_fresh = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(
      jax.tree_util.tree_leaves(common.unbox(fresh["params"])), jax.tree_util.tree_leaves(pb)))
  assert d_a < 0.01 and d_fresh > 0.05, (d_a, d_fresh)
  with pytest.raises(common.CheckpointRestoreError):
    trainer.train_and_evaluate(tiny_config(steps=1, init_from=str(tmp_path / "nope")),
                               str(tmp_path / "c"), source=source)


def test_graft_grows_inputs_without_changing_what_the_old_ones_do():
  """Warm start from a bundle whose model had fewer audio inputs: the old kernel rows are
  copied and the new rows are zero, so on the old inputs the grown layer computes what the
  old one did; same-shape leaves are copied, incompatible ones stay fresh."""
  from vasa_jax.train import common
  rng = np.random.default_rng(0)
  old = {"stem": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=3)},
         "norm": {"scale": rng.normal(size=4)}, "head": {"kernel": rng.normal(size=(3, 2))}}
  fresh = {"stem": {"kernel": rng.normal(size=(6, 3)), "bias": rng.normal(size=3)},
           "norm": {"scale": np.ones(6)}, "head": {"kernel": rng.normal(size=(2, 2))},
           "new": {"kernel": np.ones((2, 2))}}
  tree, changed = common.graft(fresh, old)
  x = rng.normal(size=(5, 4))
  grown = np.concatenate([x, rng.normal(size=(5, 2))], 1)
  np.testing.assert_allclose(grown @ tree["stem"]["kernel"], x @ old["stem"]["kernel"])
  np.testing.assert_array_equal(tree["stem"]["bias"], old["stem"]["bias"])
  np.testing.assert_array_equal(tree["norm"]["scale"], np.r_[old["norm"]["scale"], 1, 1])
  np.testing.assert_array_equal(tree["head"]["kernel"], fresh["head"]["kernel"])  # shrank
  np.testing.assert_array_equal(tree["new"]["kernel"], fresh["new"]["kernel"])
  assert sorted(changed) == sorted(["['head']['kernel']", "['new']['kernel']",
                                    "['norm']['scale']", "['stem']['kernel']"])

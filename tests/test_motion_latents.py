"""motion_latents: stored latents equal encode_motion, stats, CLI, stage-2 training on them."""

import json
import os
import pathlib

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import FAST_COMPILE, load_stage_config, make_fake_records
from vasa_jax import cli
from vasa_jax.data import motion as motion_lib
from vasa_jax.data import motion_latents as ml
from vasa_jax.data import pipeline, records

REPO = pathlib.Path(__file__).resolve().parents[1]
FL_SPEC = f"{REPO}/configs/face_latent.py:tiny"
CLIPS = {"train": 5, "test": 2}
MAX_CLIPS = 4


class MotionTestClips(tfds.core.GeneratorBasedBuilder):
  """Fake clips in the shared clip schema (conftest.make_fake_records), at 32 px (the tiny
  stage-1 size) and 48 px (resized on device)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="r32"), tfds.core.BuilderConfig(name="r48")]

  def _size(self):
    return int(self.builder_config.name[1:])

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=records.features(self._size()))

  def _split_generators(self, dl_manager):
    recs = make_fake_records(n_clips=sum(CLIPS.values()), frames=12, size=self._size(),
                             identities=3, seed=self._size())
    return {"train": self._generate_examples(recs[:CLIPS["train"]]),
            "test": self._generate_examples(recs[CLIPS["train"]:])}

  def _generate_examples(self, recs):
    for r in recs:
      yield r["clip_id"], r


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Source clips, a fresh tiny stage-1 checkpoint (EMA != params) and motion_latents/t built
  through the CLI: (data_dir, source_dir, stage-1 config, EMA params, CLI json)."""
  from vasa_jax.train import common
  from vasa_jax.train import face_latent as stage1
  root = tmp_path_factory.mktemp("motion_latents")
  src_dir, data_dir, ckpt = str(root / "src"), str(root / "out"), str(root / "stage1")
  for cfg in ("r32", "r48"):
    MotionTestClips(config=cfg, data_dir=src_dir).download_and_prepare(
        file_format="array_record")
  fc = load_stage_config("face_latent").get_config("tiny")
  with fc.unlocked():
    fc.rng_impl = "unsafe_rbg"
  state = jax.jit(lambda k: common.unbox(stage1.init_state(fc, k)))(
      jax.random.key(0, impl="unsafe_rbg"))
  state["ema"] = jax.tree_util.tree_map(lambda x: x * 0.9, state["params"])
  saver = common.Checkpointer(ckpt, async_save=False)
  saver.save(1, state, force=True)
  saver.close()
  out = _cli(["data", "extract-motion", "--face-latent-checkpoint", ckpt, "--face-latent-config",
              FL_SPEC, "--datasets", "motion_test_clips/r32,motion_test_clips/r48",
              "--data-dir", data_dir, "--source-data-dir", src_dir, "--name", "t",
              "--max-clips", str(MAX_CLIPS), "--batch-size", "16", "--workers", "2"])
  assert out[0] == 0, out
  return data_dir, src_dir, ckpt, fc, jax.device_get(state["ema"]), json.loads(out[1])


def _cli(argv):
  import contextlib
  import io
  o, e = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
    rc = cli.main(argv)
  return rc, o.getvalue(), e.getvalue()


def test_stored_motion_is_encode_motion(built):
  from vasa_jax.models import face_latent as fl
  data_dir, src_dir, _, fc, ema, summary = built
  d = 6 + fc.model.dyn_dim
  assert summary["motion_dim"] == d
  assert {k: v["clips"] for k, v in summary["splits"].items()} == {
      "train": 2 * MAX_CLIPS, "test": 2 * CLIPS["test"]}
  model = fl.FaceLatentModel(fc.model)
  encode = jax.jit(lambda x: model.apply({"params": ema}, x,
                                         method=fl.FaceLatentModel.encode_motion))
  ids = {}
  for split, n in (("train", 2 * MAX_CLIPS), ("test", 2 * CLIPS["test"])):
    src = tfds.data_source("motion_latents/t", split=split, data_dir=data_dir)
    assert len(src) == n
    for i in range(n):
      ex = src[i]
      dataset, clip_id = ex["dataset"].decode(), ex["clip_id"].decode()
      clips = tfds.data_source(dataset, split=split, data_dir=src_dir)
      rec = next(clips[j] for j in range(len(clips)) if clips[j]["clip_id"].decode() == clip_id)
      frames = np.stack([records.decode_jpeg(f) for f in rec["frames"]])
      x = fl.images_to_float(frames)
      if frames.shape[1] != fc.model.image_size:
        x = jax.image.resize(x, (len(x), 32, 32, 3), method="linear", antialias=True)
      z = encode(x)
      ref = np.concatenate([z["z_pose"], z["z_dyn"]], axis=-1)
      assert ex["motion"].shape == (12, d) and ex["motion"].dtype == np.float32
      np.testing.assert_allclose(ex["motion"], ref, rtol=1e-4, atol=1e-5)
      assert int(ex["num_frames"]) == 12
      np.testing.assert_array_equal(ex["audio"], rec["audio"])
      for k in (*records.TRACKS, *records.LABEL_FLAGS, "control_gaze", "control_emotion",
                "has_control_gaze"):
        np.testing.assert_array_equal(ex[k], rec[k], err_msg=k)
      identity = f"{dataset}:{rec['identity'].decode()}"
      assert ex["identity"].decode() == identity
      ids[identity] = int(ex["identity_index"])
  # The same person label in two sources: two identities, two indices.
  assert len(set(ids.values())) == len(ids) == 6


def test_stats_file_and_cli_info(built):
  data_dir, _, ckpt, fc, _, summary = built
  src = tfds.data_source("motion_latents/t", split="train", data_dir=data_dir)
  allm = np.concatenate([src[i]["motion"] for i in range(len(src))]).astype(np.float64)
  stats = ml.load_dataset_stats(data_dir, "motion_latents/t")
  assert summary["stats"] == os.path.join(ml.dataset_dir(data_dir, "motion_latents/t"),
                                          "motion_stats.json")
  np.testing.assert_allclose(stats["mean"], allm.mean(0), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(stats["std"], np.maximum(allm.std(0), 1e-2), rtol=1e-5)
  assert stats["count"] == len(allm) == 2 * MAX_CLIPS * 12 and stats["split"] == "train"
  assert stats["face_latent_checkpoint"] == os.path.abspath(ckpt)
  rc, out, _ = _cli(["data", "info", "motion_latents/t", "--data-dir", data_dir])
  info = json.loads(out)
  assert rc == 0 and info["motion_dim"] == 6 + fc.model.dyn_dim
  assert info["splits"]["train"]["clips"] == 2 * MAX_CLIPS
  assert info["splits"]["train"]["identities"] == 6


def test_cli_errors(built, tmp_path):
  data_dir, src_dir, ckpt, *_ = built
  base = ["data", "extract-motion", "--face-latent-config", FL_SPEC, "--data-dir",
          str(tmp_path), "--source-data-dir", src_dir]
  for argv, msg in (
      (["--face-latent-checkpoint", str(tmp_path / "nope"), "--datasets", "motion_test_clips/r32"],
       "not a folder"),
      (["--face-latent-checkpoint", str(tmp_path), "--datasets", "motion_test_clips/r32"],
       "no checkpoint"),
      (["--face-latent-checkpoint", ckpt, "--datasets", "nope/r32"], "unknown source dataset"),
      (["--face-latent-checkpoint", ckpt, "--datasets", "synthetic_talking_heads/tiny"],
       "not built"),
      (["--face-latent-checkpoint", ckpt, "--datasets", "motion_test_clips/r32", "--data-dir",
        data_dir, "--name", "t"], "already exists"),
      (["--face-latent-checkpoint", ckpt, "--datasets", "motion_test_clips/r32",
        "--face-latent-config", FL_SPEC.replace(":tiny", ":demo")], "no readable checkpoint")):
    rc, out, err = _cli(base + argv)
    assert rc == 2 and out == "", (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vasa-jax: error: ") and msg in lines[0], \
        (argv, err)
  assert not (tmp_path / "motion_latents").exists()
  rc, _, err = _cli(["data", "info", "motion_latents/none", "--data-dir", data_dir])
  assert rc == 2 and "extract-motion" in err


def test_encode_stream_packs_fixed_batches():
  calls = []

  def encode(x):            # [1, N, S, S, 3] -> [1, N, 2]: (frame id, frame size)
    calls.append(x.shape)
    return np.stack([x[..., 0].mean(axis=(2, 3)), np.full(x.shape[:2], x.shape[2])], -1)

  lengths = [3, 7, 1, 5, 4]
  sizes = [8, 8, 8, 16, 16]    # a new frame size flushes the pending batch
  items, n = [], 0
  for i, (t, sz) in enumerate(zip(lengths, sizes)):
    f = np.zeros((t, sz, sz, 3), np.uint8)
    f[..., 0] = (n + np.arange(t))[:, None, None]
    n += t
    items.append((i, f))
  out = list(ml.encode_stream(items, encode, batch=4))
  assert [p for p, _ in out] == list(range(5))
  n = 0
  for (i, m), t, sz in zip(out, lengths, sizes):
    np.testing.assert_array_equal(m[:, 0], n + np.arange(t))
    np.testing.assert_array_equal(m[:, 1], sz)
    n += t
  assert all(c[:2] == (1, 4) for c in calls)
  assert len(calls) == 3 + 3      # 11 frames of size 8 -> 3 batches; 9 of size 16 -> 3


def test_stage2_window_slices_motion_like_tracks(built):
  data_dir = built[0]
  src = pipeline.open_source("motion_latents/t", "train", data_dir=data_dir)
  tr = pipeline.Stage2Transform(8, 3, with_motion=True)
  rng = np.random.default_rng(0)
  for i in range(4):
    rec = src[i]
    out = tr.random_map(rec, rng)
    t0 = int(out["start"])
    assert out["motion"].shape == (8, rec["motion"].shape[1])
    assert out["prev_motion"].shape == (3, rec["motion"].shape[1])
    np.testing.assert_array_equal(out["motion"], rec["motion"][t0:t0 + 8])
    for n, ti in enumerate(range(t0 - 3, t0)):
      want = rec["motion"][ti] if ti >= 0 else 0.0
      np.testing.assert_array_equal(out["prev_motion"][n], want)
      assert out["prev_mask"][n] == float(ti >= 0)
    np.testing.assert_array_equal(out["pose"], rec["pose"][t0:t0 + 8])


def _stage2_config(data_dir, **kw):
  c = load_stage_config("motion_dit").get_config("tiny")
  with c.unlocked():
    c.rng_impl = "unsafe_rbg"
    c.compiler_options = ml_collections.ConfigDict(FAST_COMPILE)
    c.batch_size = 8
    c.async_checkpoint = False
    c.data.data_dir = data_dir
    c.data.motion_dataset = "motion_latents/t"
    c.face_latent_checkpoint = ""     # not needed with a motion dataset
    for k, v in kw.items():
      node, leaf = (c, k) if "." not in k else (c[k.split(".")[0]], k.split(".")[1])
      node[leaf] = v
  return c


def test_train_motion_dit_on_stored_latents(built, tmp_path):
  from vasa_jax.train import motion_dit as trainer
  data_dir = built[0]
  workdir = str(tmp_path / "stage2")
  out = trainer.train_and_evaluate(_stage2_config(data_dir, steps=2), workdir)
  assert np.isfinite(out["loss/loss"])
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "2"))
  stats = motion_lib.load_stats(workdir)
  ds = ml.load_dataset_stats(data_dir, "motion_latents/t")
  assert stats["mean"] == ds["mean"] and stats["std"] == ds["std"]
  assert stats["motion_dataset"] == "motion_latents/t"
  # Resume (model and data iterator state) for one more step.
  out = trainer.train_and_evaluate(_stage2_config(data_dir, steps=3), workdir)
  assert np.isfinite(out["loss/loss"])
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
  # A model whose motion_dim differs from the dataset's: a clear error before any work.
  with pytest.raises(trainer.ConfigError, match="model.dyn_dim=8"):
    trainer.train_and_evaluate(_stage2_config(data_dir, **{"model.dyn_dim": 4}),
                               str(tmp_path / "bad"))


def test_open_sources_knows_the_clip_builders_in_a_fresh_process(tmp_path):
  """The clip builders register with TFDS when imported; open_sources must not depend on
  something else having imported them first (it did, once the data package became lazy)."""
  import subprocess
  import sys
  code = ("from vasa_jax.data import motion_latents as ml\n"
          "try:\n"
          f"  ml.open_sources(['talking_face_videos/r256'], {str(tmp_path)!r})\n"
          "except Exception as e:\n"
          "  print(type(e).__name__, e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300).stdout
  assert "unknown source dataset" not in out and out.strip(), out


def test_motion_mix_weights_the_sources_and_refuses_bad_specs(built, monkeypatch):
  from vasa_jax.train import motion_dit as trainer
  data_dir = built[0]
  n = len(pipeline.open_source("motion_latents/t", "train", data_dir=data_dir))
  mixed = trainer.make_source(_stage2_config(data_dir, **{"data.motion_mix":
                                                          "motion_latents/t:0.25"}))
  # the main dataset takes the rest (0.75): repeated 3x next to the mix's one copy
  assert isinstance(mixed, pipeline.ConcatSource) and len(mixed) == 4 * n
  assert [len(s) for s in mixed.sources] == [n, n]
  trainer.check_motion_dataset(_stage2_config(data_dir), mixed)
  for bad in ("motion_latents/t", "motion_latents/t:1.5", "motion_latents/t:0.6+x/y:0.5"):
    with pytest.raises(trainer.ConfigError, match="motion_mix"):
      trainer.make_source(_stage2_config(data_dir, **{"data.motion_mix": bad}))
  # geometry datasets in different face bases must not be mixed
  import types
  bases = {"a": types.SimpleNamespace(template=np.zeros((4, 3)), exp_basis=np.ones((2, 4, 3))),
           "b": types.SimpleNamespace(template=np.zeros((4, 3)), exp_basis=np.ones((2, 4, 3))),
           "c": types.SimpleNamespace(template=np.ones((4, 3)), exp_basis=np.ones((2, 4, 3)))}
  monkeypatch.setattr(ml, "load_dataset_basis", lambda d, name: bases[name])
  trainer._check_same_basis(data_dir, ["a", "b"])
  with pytest.raises(trainer.ConfigError, match="different face bases"):
    trainer._check_same_basis(data_dir, ["a", "c"])


def test_weighted_concat_and_parse_mix():
  a, b = list(range(10)), list(range(100, 130))
  mix = pipeline.weighted_concat([a, b], [0.5, 0.5])
  draws = [mix[i] for i in range(len(mix))]
  assert sum(x < 100 for x in draws) == sum(x >= 100 for x in draws) == 30
  assert pipeline.weighted_concat([a], [1.0]) is a
  assert pipeline.parse_mix("x/a:0.2+ y/b:0.1") == [("x/a", 0.2), ("y/b", 0.1)]
  assert pipeline.parse_mix("") == []
  with pytest.raises(ValueError, match="NAME:SHARE"):
    pipeline.parse_mix("x/a:0")

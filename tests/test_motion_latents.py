"""motion_latents: the stored motion is the tracked mesh's codes, stats, CLI, stage-2 training
on them. The face tracker is replaced by synthetic meshes here (fast, no face needed); the
real tracker end to end is tests/test_geometry_motion_dataset.py."""

import json
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import FAST_COMPILE, load_stage_config, make_fake_records
from vasa_jax import cli
from vasa_jax.data import motion as motion_lib
from vasa_jax.data import motion_latents as ml
from vasa_jax.data import pipeline, records

CLIPS = {"train": 5, "test": 2}
MAX_CLIPS = 4
MOTION_DIM = 50     # 6 + the shipped face basis's dyn_dim (40 expression + 2 lids + 2 gaze)


class MotionTestClips(tfds.core.GeneratorBasedBuilder):
  """Fake clips in the shared clip schema (conftest.make_fake_records), at 32 and 48 px."""

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


def _basis_path():
  from vasa_jax import bundle as bundle_lib
  return os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE)


def _fake_track_source(source, n=None, *, workers=1, decode=None):
  """tracking.track_source's output without a tracker: the shipped basis's template posed
  by a small head turn per frame, in pixels of the clip's frames (the first frame unmeasured)."""
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.geometry import tracking
  basis = codes_lib.FaceBasis.load(_basis_path())
  n = len(source) if n is None else min(n, len(source))
  for i in range(n):
    rec = source[i]
    t, size = int(rec["num_frames"]), int(rec["size"])
    ang = 0.05 * np.sin(0.7 * np.arange(t) + i)
    pose = np.zeros((t, 6))
    pose[:, 0], pose[:, 2], pose[:, 5] = ang, 0.5 * ang, 0.65
    canon = np.repeat(basis.template[None], t, 0)
    points = codes_lib.pose_mesh(canon, pose, size, basis).astype(np.float32)
    valid = np.ones(t, bool)
    valid[0] = False
    yield i, rec, tracking.Track(points=points, valid=valid, score=valid.astype(np.float32))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Source clips and motion_latents/t extracted from them through the CLI with the shipped
  face basis (synthetic meshes for the tracker): (data_dir, source_dir, CLI json)."""
  from vasa_jax.geometry import tracking
  root = tmp_path_factory.mktemp("motion_latents")
  src_dir, data_dir = str(root / "src"), str(root / "out")
  for cfg in ("r32", "r48"):
    MotionTestClips(config=cfg, data_dir=src_dir).download_and_prepare(
        file_format="array_record")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tracking, "track_source", _fake_track_source)
    out = _cli(["data", "extract-motion", "--face-basis", _basis_path(), "--datasets",
                "motion_test_clips/r32,motion_test_clips/r48", "--data-dir", data_dir,
                "--source-data-dir", src_dir, "--name", "t", "--max-clips", str(MAX_CLIPS),
                "--workers", "1"])
  assert out[0] == 0, out
  return data_dir, src_dir, json.loads(out[1])


def _cli(argv):
  import contextlib
  import io
  o, e = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
    rc = cli.main(argv)
  return rc, o.getvalue(), e.getvalue()


def test_stored_motion_is_the_tracked_mesh_codes_and_keeps_the_clip(built):
  from vasa_jax.geometry import codes as codes_lib
  data_dir, src_dir, summary = built
  basis = codes_lib.FaceBasis.load(summary["face_basis"])
  assert summary["motion_dim"] == 6 + basis.dyn_dim == MOTION_DIM
  assert {k: v["clips"] for k, v in summary["splits"].items()} == {
      "train": 2 * MAX_CLIPS, "test": 2 * CLIPS["test"]}
  ids = {}
  for split, n in (("train", 2 * MAX_CLIPS), ("test", 2 * CLIPS["test"])):
    src = tfds.data_source("motion_latents/t", split=split, data_dir=data_dir)
    assert len(src) == n
    for i in range(n):
      ex = src[i]
      dataset, clip_id = ex["dataset"].decode(), ex["clip_id"].decode()
      clips = tfds.data_source(dataset, split=split, data_dir=src_dir)
      rec = next(clips[j] for j in range(len(clips)) if clips[j]["clip_id"].decode() == clip_id)
      size = int(rec["size"])
      assert int(ex["size"]) == size
      pts = np.asarray(ex["landmarks"], np.float32).reshape(12, -1, 3)
      c = codes_lib.encode(pts, basis, size)
      assert ex["motion"].shape == (12, MOTION_DIM) and ex["motion"].dtype == np.float32
      np.testing.assert_allclose(ex["motion"], np.concatenate([c.pose, c.dyn], -1),
                                 atol=0.01)           # the landmarks are stored in float16
      np.testing.assert_array_equal(ex["landmarks_valid"], [0] + [1] * 11)
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
  data_dir, _, summary = built
  src = tfds.data_source("motion_latents/t", split="train", data_dir=data_dir)
  # statistics over the measured frames (landmarks_valid) of train
  allm = np.concatenate([src[i]["motion"][np.asarray(src[i]["landmarks_valid"]) > 0]
                         for i in range(len(src))]).astype(np.float64)
  stats = ml.load_dataset_stats(data_dir, "motion_latents/t")
  assert summary["stats"] == os.path.join(ml.dataset_dir(data_dir, "motion_latents/t"),
                                          "motion_stats.json")
  np.testing.assert_allclose(stats["mean"], allm.mean(0), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(stats["std"], np.maximum(allm.std(0), 1e-2), rtol=1e-5)
  assert stats["count"] == len(allm) == 2 * MAX_CLIPS * 11 and stats["split"] == "train"
  assert stats["motion_source"] == "geometry"
  assert ml.load_dataset_basis(data_dir, "motion_latents/t").dyn_dim == MOTION_DIM - 6
  rc, out, _ = _cli(["data", "info", "motion_latents/t", "--data-dir", data_dir])
  info = json.loads(out)
  assert rc == 0 and info["motion_dim"] == MOTION_DIM
  assert info["splits"]["train"]["clips"] == 2 * MAX_CLIPS
  assert info["splits"]["train"]["identities"] == 6


def test_cli_errors(built, tmp_path):
  data_dir, src_dir, _ = built
  base = ["data", "extract-motion", "--data-dir", str(tmp_path), "--source-data-dir", src_dir,
          "--face-basis", _basis_path()]
  for argv, msg in (
      (["--datasets", "motion_test_clips/r32", "--face-basis", str(tmp_path / "nope.npz")],
       "--face-basis"),
      (["--datasets", "motion_test_clips/r32", "--exp-dim", "0"], "--exp-dim"),
      (["--datasets", "motion_test_clips/r32", "--name", "a/b"], "--name"),
      (["--datasets", "motion_test_clips/r32", "--max-clips", "0"], "--max-clips"),
      (["--datasets", "nope/r32"], "unknown source dataset"),
      (["--datasets", "synthetic_talking_heads/tiny"], "not built"),
      (["--datasets", "motion_test_clips/r32", "--data-dir", data_dir, "--name", "t"],
       "already exists"),
      # the retired learned-flow options are gone
      (["--datasets", "motion_test_clips/r32", "--face-latent-checkpoint", data_dir],
       "unrecognised arguments")):
    rc, out, err = _cli(base + argv)
    assert rc == 2 and out == "", (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vasa-jax: error: ") and msg in lines[0], \
        (argv, err)
  assert not (tmp_path / "motion_latents").exists()
  rc, _, err = _cli(["data", "info", "motion_latents/none", "--data-dir", data_dir])
  assert rc == 2 and "extract-motion" in err


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
    c.model.dyn_dim = MOTION_DIM - 6
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
  with pytest.raises(trainer.ConfigError, match="model.dyn_dim=44"):
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

"""Both TFDS builders build array_record and are read through grain on 8 simulated devices."""

import os
import shutil
import subprocess

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vasa_jax.data import register_builders
from vasa_jax import media, sharding
from vasa_jax.data import pipeline, records


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  register_builders()
  builder = tfds.builder("synthetic_talking_heads/tiny", data_dir=data_dir, workers=2)
  builder.download_and_prepare(file_format="array_record")
  return data_dir


def test_synthetic_builder(synthetic_dir):
  train = tfds.data_source("synthetic_talking_heads/tiny", split="train", data_dir=synthetic_dir)
  test = tfds.data_source("synthetic_talking_heads/tiny", split="test", data_dir=synthetic_dir)
  assert len(train) + len(test) == 12 and len(test) > 0
  files = os.listdir(os.path.join(synthetic_dir, "synthetic_talking_heads", "tiny", "1.0.0"))
  assert any(f.endswith(tuple(f"-of-{i:05d}" for i in range(1, 99))) and "array_record" in f for f in files)
  ids_train = {train[i]["identity"] for i in range(len(train))}
  ids_test = {test[i]["identity"] for i in range(len(test))}
  assert ids_train and ids_test and not ids_train & ids_test
  rec = train[0]
  assert rec["num_frames"] == 50 and rec["frames"].shape == (50,)
  assert rec["audio"].shape == (50 * 640,) and rec["audio"].dtype == np.int16
  assert records.decode_jpeg(rec["frames"][0]).shape == (64, 64, 3)
  assert rec["pose"].shape == (50, 6) and rec["has_pose"] == 1 and rec["has_control_gaze"] == 1
  assert 0.45 < rec["control_distance"] < 0.95
  # Ground-truth mouth opening follows the speech energy.
  energy = np.sqrt(np.mean(records.audio_to_float(rec["audio"]).reshape(50, 640) ** 2, 1))
  assert np.corrcoef(energy, rec["mouth"][:, 0])[0, 1] > 0.3


def test_synthetic_through_grain_on_8_devices(synthetic_dir):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  src = pipeline.open_source("synthetic_talking_heads/tiny", "train", data_dir=synthetic_dir)
  bs = sharding.per_process_batch_size(8, mesh)
  b1 = sharding.to_global(next(iter(pipeline.stage2_loader(
      src, batch_size=bs, window=4, context=0, seed=0, with_frames=True))), mesh)
  assert b1["frames"].shape == (8, 4, 64, 64, 3)
  assert b1["frames"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  b2 = sharding.to_global(next(iter(pipeline.stage2_loader(src, batch_size=bs, window=20, context=5,
                                                           seed=0))), mesh)
  assert b2["audio"].shape == (8, 20 * 640) and b2["mouth"].shape == (8, 20, 3)
  assert b2["prev_pose"].shape == (8, 5, 6)


def _ffmpeg(*args):
  subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def real_build(tmp_path_factory, real_dir):
  manual = tmp_path_factory.mktemp("manual")
  vids = real_dir / "videos"
  # Nested VoxCeleb-like layout and a flat one, as they come.
  (manual / "id00001" / "ytA").mkdir(parents=True)
  shutil.copy(vids / "pcavs__Pose_Source_00067.mp4", manual / "id00001" / "ytA" / "00001.mp4")
  (manual / "flat").mkdir()
  shutil.copy(vids / "deepavsr__lrs2_00001.mp4", manual / "flat" / "lrs2_00001.mp4")
  shutil.copy(vids / "pcavs__Pose_Source_620900105.mp4", manual / "flat" / "vox_620900105.mp4")
  # Bad inputs the build must skip with a reason.
  (manual / "flat" / "not_a_video.mp4").write_bytes(b"this is text")
  data = (vids / "deepavsr__lrs2_00004.mp4").read_bytes()
  (manual / "flat" / "truncated.mp4").write_bytes(data[: len(data) // 3])
  _ffmpeg("-loop", "1", "-i", str(real_dir / "images" / sorted(os.listdir(real_dir / "images"))[0]),
          "-t", "3", "-r", "25", "-vf", "scale=256:256", "-pix_fmt", "yuv420p",
          str(manual / "flat" / "no_audio.mp4"))
  data_dir = str(tmp_path_factory.mktemp("tfds_real"))
  # Six files are too few for an identity split: one split with every identity.
  from vasa_jax.data import TalkingFaceVideos, VideosConfig
  cfg = VideosConfig(name="r64_all", size=64, min_seconds=1.0, test_fraction=0.0)
  builder = TalkingFaceVideos(config=cfg, data_dir=data_dir, workers=2)
  builder.download_and_prepare(
      file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder, data_dir


def test_real_builder_clips_and_skips(real_build):
  builder, data_dir = real_build
  n = sum(s.num_examples for s in builder.info.splits.values())
  assert n >= 3
  skipped = open(os.path.join(os.fspath(builder.data_path), "skipped.tsv")).read()
  for name in ("not_a_video", "truncated", "no_audio"):
    assert name in skipped
  assert "no_audio" in skipped and "audio" in skipped.split("no_audio")[1].splitlines()[0].lower()
  src = pipeline.ConcatSource([builder.as_data_source(split=s) for s in builder.info.splits
                               if builder.info.splits[s].num_examples])
  for i in range(len(src)):
    rec = src[i]
    assert rec["audio"].shape[0] == rec["num_frames"] * 640 and rec["size"] == 64
    assert rec["has_pose"] == 0 and rec["identity"]
  ids = {src[i]["identity"] for i in range(len(src))}
  assert b"id00001" in ids


def test_real_through_grain_on_8_devices(real_build):
  builder, _ = real_build
  src = pipeline.ConcatSource([builder.as_data_source(split=s) for s in builder.info.splits
                               if builder.info.splits[s].num_examples])
  mesh = sharding.make_mesh()
  b = sharding.to_global(next(iter(pipeline.stage2_loader(
      src, batch_size=8, window=4, context=0, seed=0, with_frames=True))), mesh)
  assert b["frames"].shape == (8, 4, 64, 64, 3)
  img = np.asarray(b["frames"]).astype(np.float32)
  assert img.std() > 10                                   # real content, not blank frames

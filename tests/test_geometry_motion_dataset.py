"""The motion dataset of the default pipeline, end to end: `vasa-jax data extract-motion
--geometry` tracks clips of a real face, stores mesh codes (pose ++ expression, lids, gaze)
with the landmarks they were measured from, writes the statistics and the face basis, and
stage 2 trains on it (config.data.motion_dataset)."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import fast_tiny_config
from vasa_jax import bundle as bundle_lib
from vasa_jax import cli
from vasa_jax import media
from vasa_jax.data import records

REPO = pathlib.Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "vasa_jax" / "assets" / "examples" / "portrait.jpg"
CLIPS = {"train": 3, "test": 1}
FRAMES = 12


def _face_records(n_clips: int, seed: int):
  """Clips in the shared clip schema: the example portrait turning its head a little and
  opening its mouth (a vertical stretch of the lower face), with a tone as audio."""
  import cv2
  photo = cv2.resize(media.load_image(str(PORTRAIT)), (128, 128), interpolation=cv2.INTER_AREA)
  recs = []
  for c in range(n_clips):
    frames = []
    for t in range(FRAMES):
      ang = 3.0 * np.sin(0.5 * t + c + seed)
      m = cv2.getRotationMatrix2D((64, 64), ang, 1.0)
      frames.append(cv2.warpAffine(photo, m, (128, 128), borderMode=cv2.BORDER_REPLICATE))
    t = np.arange(FRAMES * records.SAMPLES_PER_FRAME) / 16000
    audio = (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    recs.append(records.make_record(
        frames=np.stack(frames), audio=audio, clip_id=f"clip{seed}_{c}",
        identity=f"person{c}", source="test", tracks={},
        controls={"gaze": (0.0, 0.0), "distance": 0.65, "emotion": 0, "emotion_intensity": 0.0}))
  return recs


class FaceTestClips(tfds.core.GeneratorBasedBuilder):
  """A few clips of a real face (the example portrait) at 128 px."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="r128")]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=records.features(128))

  def _split_generators(self, dl_manager):
    recs = _face_records(sum(CLIPS.values()), seed=0)
    return {"train": self._generate_examples(recs[:CLIPS["train"]]),
            "test": self._generate_examples(recs[CLIPS["train"]:])}

  def _generate_examples(self, recs):
    for r in recs:
      yield r["clip_id"], r


def _cli(argv):
  import contextlib
  import io
  o, e = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
    rc = cli.main(argv)
  return rc, o.getvalue(), e.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """(data dir, CLI summary) of motion_latents/g extracted from face_test_clips/r128 with the
  shipped face basis."""
  root = tmp_path_factory.mktemp("geo_motion")
  src_dir, data_dir = str(root / "src"), str(root / "out")
  FaceTestClips(config="r128", data_dir=src_dir).download_and_prepare(file_format="array_record")
  basis = os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE)
  rc, out, err = _cli(["data", "extract-motion", "--geometry", "--face-basis", basis,
                       "--datasets", "face_test_clips/r128", "--data-dir", data_dir,
                       "--source-data-dir", src_dir, "--name", "g", "--workers", "1"])
  assert rc == 0, err
  return data_dir, json.loads(out)


def test_extract_motion_stores_mesh_codes_that_decode_to_the_tracked_landmarks(built):
  from vasa_jax.geometry import codes as codes_lib
  data_dir, summary = built
  basis = codes_lib.FaceBasis.load(summary["face_basis"])
  assert summary["motion_dim"] == 6 + basis.dyn_dim == 50
  assert {k: v["clips"] for k, v in summary["splits"].items()} == CLIPS
  assert summary["splits"]["train"]["tracked_frames"] == CLIPS["train"] * FRAMES
  stats = json.load(open(os.path.join(summary["data_dir"], "motion_stats.json")))
  assert len(stats["mean"]) == 50 and stats["motion_source"] == "geometry"
  src = tfds.data_source("motion_latents/g", split="train", data_dir=data_dir)
  assert len(src) == CLIPS["train"]
  ex = src[0]
  motion = np.asarray(ex["motion"])
  pts = np.asarray(ex["landmarks"], np.float32).reshape(FRAMES, -1, 3)
  assert motion.shape == (FRAMES, 50) and np.isfinite(motion).all()
  assert np.asarray(ex["landmarks_valid"]).all()
  # the stored codes are the tracked mesh: re-encoding the stored landmarks gives them back, and
  # the head's roll follows the clip's in-plane rotation (3 deg sin(t / 2 + c))
  again = codes_lib.encode(pts, basis, int(ex["size"]))
  np.testing.assert_allclose(np.concatenate([again.pose, again.dyn], -1), motion,
                             atol=0.01)           # the landmarks are stored in float16
  t = np.arange(FRAMES)
  roll = np.degrees(motion[:, 2])
  assert np.corrcoef(roll, np.sin(0.5 * t))[0, 1] ** 2 > 0.5 or \
      np.corrcoef(roll, -np.sin(0.5 * t))[0, 1] ** 2 > 0.5
  assert np.ptp(roll) > 2.0


def test_stage2_trains_on_the_extracted_motion(built, tmp_path):
  from vasa_jax.train import motion_dit as trainer
  data_dir, _ = built
  config = fast_tiny_config("motion_dit", {"model.dyn_dim": 44, "steps": 2, "ckpt_every": 2,
                                           "data.window": 8, "data.context": 2})
  with config.unlocked():
    config.data.motion_dataset = "motion_latents/g"
    config.data.data_dir = data_dir
  out = trainer.train_and_evaluate(config, str(tmp_path / "md"), data_dir=data_dir)
  assert np.isfinite(out["loss/loss"])
  stats = json.load(open(tmp_path / "md" / "motion_stats.json"))
  assert stats["motion_dataset"] == "motion_latents/g" and len(stats["mean"]) == 50


def test_a_volume_stage1_trained_through_the_cli_animates_through_the_same_call(
    built, geo_tiny_bundle, tmp_path):
  """Issue 28's promise: the volume renderer trains on the same motion dataset as the mesh
  renderer (through `vasa-jax train`), exports with a stage 2 into a bundle, and that bundle
  animates a portrait through the same Animator call as a mesh bundle."""
  from vasa_jax import animate as an
  data_dir, _ = built
  src_dir = os.path.join(os.path.dirname(data_dir), "src")
  wd, out = str(tmp_path / "vol"), str(tmp_path / "vol_bundle")
  rc, stdout, err = _cli(["train", "--config", f"{REPO}/configs/face_latent.py:volume_tiny",
                          "--workdir", wd, "--data-dir", data_dir,
                          "--config.data.geometry=motion_latents/g",
                          f"--config.data.source_data_dir={src_dir}", "--config.steps=2",
                          "--config.rng_impl=unsafe_rbg", "--config.async_checkpoint=False"])
  assert rc == 0, err
  assert np.isfinite(json.loads(stdout)["final"]["loss/total"])
  rc, stdout, err = _cli(["export", "--face-latent", wd, "--motion-dit", geo_tiny_bundle,
                          "--out", out])
  assert rc == 0, err
  b = bundle_lib.load(out)
  assert b.kind == "volume" and b.meta["face_latent"]["kind"] == "volume"
  assert b.part_bank is None and b.face_basis.dyn_dim == 44
  t = np.arange(16000) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
  results = {}
  for name, path in (("mesh", geo_tiny_bundle), ("volume", out)):
    anim = an.Animator(path, render_batch=4)
    results[name] = (anim, anim.animate(str(PORTRAIT), audio, steps=2, seed=0))
  (mesh_anim, mesh), (vol_anim, vol) = results["mesh"], results["volume"]
  assert mesh_anim.renderer.kind == "geometry" and vol_anim.renderer.kind == "volume"
  assert vol.frames.shape == mesh.frames.shape and len(vol) == 25
  photo = media.load_image(str(PORTRAIT))
  p = vol_anim.prepare_portrait(str(PORTRAIT))
  x0, y0, side = p.box
  inside = vol.frames[:, max(y0, 0) + side // 3:y0 + 2 * side // 3,
                      max(x0, 0) + side // 3:x0 + 2 * side // 3].astype(np.float32)
  # the decoder made the face (an untrained one: not the photo), the photo outside the crop
  assert np.abs(inside - photo[max(y0, 0) + side // 3:y0 + 2 * side // 3,
                               max(x0, 0) + side // 3:x0 + 2 * side // 3]).mean() > 5.0
  if y0 > 4:
    np.testing.assert_array_equal(vol.frames[:, :y0 - 1], np.repeat(photo[None, :y0 - 1], 25, 0))

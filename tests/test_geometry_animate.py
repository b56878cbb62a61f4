"""Geometry-grounded bundles end to end: Animator, reenactment, the CLI, the stage-1 trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_stage_config
from test_geometry import cartoon_dog
from vasa_jax import animate as an
from vasa_jax import bundle as bundle_lib
from vasa_jax import media
from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry import landmarks as lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(ROOT, "vasa_jax", "assets", "examples", "portrait.jpg")


def _basis():
  return codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))


@pytest.fixture(scope="module")
def geo_bundle(geo_tiny_bundle):
  return geo_tiny_bundle


@pytest.fixture(scope="module")
def anim(geo_bundle):
  return an.Animator(geo_bundle, render_batch=4)


@pytest.fixture(scope="module")
def driver_video(tmp_path_factory):
  """The example portrait sliding right by 2 px a frame for 16 frames."""
  import cv2
  photo = media.load_image(PORTRAIT)
  frames = [cv2.warpAffine(photo, np.float32([[1, 0, 2.0 * t], [0, 1, 0]]), (512, 512),
                           borderMode=cv2.BORDER_REPLICATE) for t in range(16)]
  path = str(tmp_path_factory.mktemp("drv") / "driver.mp4")
  media.write_video(path, frames, fps=25)
  return path


def test_geometry_bundle_round_trip(geo_bundle):
  b = bundle_lib.load(geo_bundle)
  assert b.meta["version"] == 3 and b.meta["face_latent"]["kind"] == "geometry"
  assert b.face_basis.dyn_dim == 44
  fl = b.face_latent_config
  with pytest.raises(bundle_lib.BundleError, match="face basis"):
    bundle_lib.save(geo_bundle + "_nobasis", face_latent_config=fl,
                    face_latent_params=b.face_latent_params,
                    motion_dit_config=b.motion_dit_config,
                    motion_dit_params=b.motion_dit_params, motion_stats=b.motion_stats)
  assert not os.path.exists(geo_bundle + "_nobasis")


def test_geometry_animator_renders_the_photo_at_its_resolution(anim):
  assert anim.kind == "geometry" and anim.renderer.kind == "geometry"
  portrait = anim.prepare_portrait(PORTRAIT)
  photo = media.load_image(PORTRAIT)
  still = np.repeat(portrait.motion[None], 4, axis=0)
  frames = np.concatenate(list(anim.render_motion(portrait, still)))
  assert frames.shape == (4,) + photo.shape
  # the portrait's own motion: the photo itself, but for the (untrained, faint) part patches
  assert np.abs(frames.astype(int) - photo[None]).mean() < 1.0
  moved = still.copy()
  moved[:, 0] += np.linspace(0.0, 0.3, 4)        # turn the head
  out = np.concatenate(list(anim.render_motion(portrait, moved)))
  change = np.abs(out.astype(int) - photo[None]).mean(axis=(1, 2, 3))
  assert change[0] < 1.0 and change[-1] > 3.0 and np.all(np.diff(change) > 0)
  # far from the face the photo is untouched (bit-exact), so the paste-back has no seam
  x0, y0, side = portrait.box
  assert np.array_equal(out[:, :, :max(x0, 1)], np.repeat(photo[None], 4, 0)[:, :, :max(x0, 1)])


def test_geometry_animate_and_stream(anim, tmp_path):
  t = np.arange(16000) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
      np.float32)
  res = anim.animate(PORTRAIT, (audio, 16000), steps=2, seed=0, crop_only=True)
  assert res.frames.shape[0] == 25 and res.frames.shape[1] == res.frames.shape[2]
  out = res.save(str(tmp_path / "a.mp4"))
  assert os.path.getsize(out) > 1000
  # streaming yields the same video batch by batch, and says when the first frames came
  stats: dict = {}
  batches = list(anim.stream(PORTRAIT, (audio, 16000), steps=2, seed=0, crop_only=True,
                             stats=stats))
  assert len(batches) > 1 and all(0 < len(b) <= anim.render_batch for b in batches)
  # within a window the short batch comes first: the stream's first frames come sooner
  portrait = anim.prepare_portrait(PORTRAIT, crop_only=True)
  sizes = [len(b) for b in anim.render_motion(portrait, np.repeat(portrait.motion[None], 10, 0))]
  assert sizes == [10 % anim.render_batch] + [anim.render_batch] * (10 // anim.render_batch)
  np.testing.assert_array_equal(np.concatenate(batches), res.frames)
  assert stats["frames"] == 25 and 0 < stats["first_frame_s"] < 60


def test_geometry_bundle_refuses_animals(geo_bundle, anim, tmp_path):
  with pytest.raises(TypeError, match="composite"):     # the option went with the old stage 1
    an.Animator(geo_bundle, composite="render")
  dog = str(tmp_path / "dog.png")
  import cv2
  cv2.imwrite(dog, cartoon_dog()[..., ::-1])
  with pytest.raises(an.AnimateError, match="human"):
    anim.prepare_portrait(dog)


def test_reenactment_follows_the_driver(anim, driver_video, tmp_path):
  res = anim.reenact(PORTRAIT, driver_video)
  assert res.frames.shape[0] == 16 and res.info["driver_faces"] == 16
  mesh = lm.get_mesh()
  x = [mesh.detect(res.frames[i]).points[1, 0] for i in (0, 15)]
  assert 15 < x[1] - x[0] < 45                    # the driver moved 30 px: so does the portrait
  out = anim.save_reenact(PORTRAIT, driver_video, str(tmp_path / "r.mp4"))
  from vasa_jax import provenance
  assert provenance.verify(out)[0].present


def test_one_reenactor_frames_each_driver_by_its_own_size(anim, driver_video, tmp_path):
  """A Reenactor used for a second, differently sized driving video crops it by its own size
  (nothing of the first video's is kept)."""
  import cv2
  frames = media.read_video(driver_video, fps=None)
  wide = [cv2.copyMakeBorder(f, 40, 40, 160, 0, cv2.BORDER_REPLICATE) for f in frames[:8]]
  path = str(tmp_path / "wide.mp4")
  media.write_video(path, wide, fps=25)
  portrait = anim.prepare_portrait(PORTRAIT, crop_only=True)
  used = an.Reenactor(anim)
  list(used.stream(portrait, driver_video))
  again = np.concatenate(list(used.stream(portrait, path)))
  fresh = np.concatenate(list(an.Reenactor(anim).stream(portrait, path)))
  np.testing.assert_array_equal(again, fresh)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "vasa_jax", *args], capture_output=True, text=True,
                        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_reenact(geo_bundle, driver_video, tmp_path):
  out = str(tmp_path / "o.mp4")
  r = _cli("reenact", "--image", PORTRAIT, "--video", driver_video, "--out", out,
           "--checkpoint", geo_bundle)
  assert r.returncode == 0, r.stderr
  assert json.loads(r.stdout)["frames"] == 16 and os.path.isfile(out)
  noise = str(tmp_path / "noise.mp4")
  rng = np.random.default_rng(0)
  media.write_video(noise, [rng.integers(0, 255, (64, 64, 3)).astype(np.uint8) for _ in range(5)])
  bad = str(tmp_path / "bad.mp4")
  for args, msg in (
      (("--video", noise, "--out", bad), "no face found in the driving video"),
      (("--video", str(tmp_path / "missing.mp4"), "--out", bad), "file not found"),
      (("--video", driver_video, "--out", str(tmp_path / "x.txt")), ".mp4"),
  ):
    r = _cli("reenact", "--image", PORTRAIT, "--checkpoint", geo_bundle, *args)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
  assert not os.path.exists(bad)


# ----------------------------------------------------------------------------- trainer

def _geo_records(n_clips=3, frames=10):
  """Clip records of the example portrait moving and opening its mouth a little (measured)."""
  import cv2

  from vasa_jax.data import records
  photo = cv2.resize(media.load_image(PORTRAIT), (128, 128), interpolation=cv2.INTER_AREA)
  mesh = lm.get_mesh()
  recs = []
  for c in range(n_clips):
    fr = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((64, 64), 2.0 * np.sin(t + c), 1.0),
                         (128, 128), borderMode=cv2.BORDER_REPLICATE) for t in range(frames)]
    pts = np.stack([g.points for g in mesh.track(fr)])
    recs.append({"frames": [records.encode_jpeg(f) for f in fr], "num_frames": np.int32(frames),
                 "size": np.int32(128), "landmarks": pts.reshape(frames, -1).astype(np.float16),
                 "landmarks_valid": np.ones(frames, np.int32), "clip_id": f"c{c}",
                 "identity": "portrait", "source": "test"})
  return recs


def test_geo_trainer_runs_resumes_and_logs_the_curve(tmp_path):
  from conftest import ListSource
  from vasa_jax.train import geo_decoder
  config = load_stage_config("face_latent").get_config("geo_tiny,batch_size=8,steps=2")
  source = ListSource(_geo_records())
  work = str(tmp_path / "run")
  m = geo_decoder.train_and_evaluate(config, work, source=source, basis=_basis())
  assert np.isfinite(m["loss/mouth_total"]) and m["loss/mouth_l1_warp"] > 0
  assert np.isfinite(m["disc/hinge"]) and np.isfinite(m["loss/mouth_feature_matching"])
  config.steps = 3
  geo_decoder.train_and_evaluate(config, work, source=source, basis=_basis())
  lines = [json.loads(x) for x in open(os.path.join(work, "curve.jsonl"))]
  assert [x["step"] for x in lines] == [1, 2, 3]
  assert os.path.isfile(os.path.join(work, codes_lib.BASIS_FILE))
  params, step = geo_decoder.restore_params(work, config)
  assert step == 3 and "mouth" in params


# ----------------------------------------------------------------------------- eval reenact

def test_reenact_mouth_gain_is_the_share_of_each_opening_the_output_realises():
  from vasa_jax.eval import geo_reenact
  rng = np.random.default_rng(0)
  t, s = 12, 64
  frames = rng.integers(0, 255, (t, s, s, 3), dtype=np.uint8)
  pts = np.tile(rng.uniform(20, 44, (1, 478, 3)).astype(np.float32), (t, 1, 1))
  pts[:, 33, :2], pts[:, 263, :2] = (20, 30), (44, 30)         # eye-corner distance 24 px
  pts[:, 13, 1] = 40.0
  open_px = 6.0 * np.abs(np.sin(np.arange(t)))
  pts[:, 14, 1] = 40.0 + open_px
  half = pts.copy()
  half[:, 14, 1] = 40.0 + 0.5 * open_px                        # opens half as far
  m = geo_reenact.clip_metrics(frames, pts, frames, half)
  assert m["mouth_gain"] == pytest.approx(0.5, abs=1e-4) and m["mouth_r"] == pytest.approx(1.0)
  assert geo_reenact.clip_metrics(frames, pts, frames, pts)["mouth_gain"] == pytest.approx(1.0)


def test_eval_reenact_follows_the_clip_and_beats_repeating_the_first_frame(anim, tmp_path):
  """vasa-jax eval reenact's core: the first frame driven by the clip's own measured motion
  lands the mesh nearer the true frames' than repeating the first frame, and the report and
  both contact sheets are written."""
  import cv2

  from conftest import ListSource
  from vasa_jax.data import records
  from vasa_jax.eval import geo_reenact
  basis = _basis()
  photo = cv2.resize(media.load_image(PORTRAIT), (256, 256), interpolation=cv2.INTER_AREA)
  mesh = lm.get_mesh()
  recs = []
  for c in range(2):
    fr = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((128, 128), 4.0 * t / 23 * (1 - 2 * c),
                                                        1.0), (256, 256),
                         borderMode=cv2.BORDER_REPLICATE) for t in range(24)]
    pts = np.stack([g.points for g in mesh.track(fr, smooth=False)])
    code = codes_lib.encode(pts, basis, 256)
    recs.append({"frames": [records.encode_jpeg(f) for f in fr],
                 "num_frames": np.int32(24), "landmarks": pts.reshape(24, -1),
                 "motion": np.concatenate([code.pose, code.dyn], 1).astype(np.float32),
                 "clip_id": f"c{c}", "identity": "portrait", "source": "test",
                 "dataset": "talking_face_videos/r256"})
  src = ListSource(recs)
  for r in src._recs:
    r["dataset"] = r["dataset"].encode()
  out = str(tmp_path / "eval")
  rep = geo_reenact.evaluate(anim, src, src, out_dir=out)
  m = rep["mean"]
  assert rep["clips"] == 2
  assert m["landmark_dist"] < 0.5 * m["baseline_landmark_dist"]
  assert m["face_found"] == 1.0 and 0 < m["ssim_face"] <= 1
  for name in ("geometry_reenact.json", "geometry_reenact_sheet.jpg",
               "geometry_reenact_closeups.png"):
    assert os.path.getsize(os.path.join(out, name)) > 1000


def test_head_motion_scales_the_generated_pose_about_the_portraits(anim):
  portrait = anim.prepare_portrait(PORTRAIT, crop_only=True)
  t = np.arange(16000) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 200 * t) * (t > 0.2)).astype(np.float32)

  def pose(scale):
    return np.concatenate([m for _, m in anim.motion_windows(
        portrait, audio, steps=2, seed=3, head_motion=scale)])[:, :an.POSE_DIM]

  ref = np.asarray(portrait.motion)[:an.POSE_DIM]
  natural, still, lively = pose(1.0), pose(0.0), pose(2.0)
  assert np.ptp(natural, axis=0).max() > 1e-4          # the tiny model does move the head
  np.testing.assert_allclose(still, np.broadcast_to(ref, still.shape), atol=1e-6)
  # positions scale exactly; rotations scale too but ease off towards the warp's limit
  np.testing.assert_allclose((lively - ref)[:, 3:], 2.0 * (natural - ref)[:, 3:], rtol=1e-4,
                             atol=1e-6)
  d1, d2 = (natural - ref)[:, :3], (lively - ref)[:, :3]
  lim = np.radians(an.MAX_TURN_DEG)
  assert (np.abs(d2) < lim).all() and (np.abs(d2) >= np.abs(d1) - 1e-7).all()
  big = np.abs(d1) > 1e-3
  assert big.any() and (np.sign(d2[big]) == np.sign(d1[big])).all()
  with pytest.raises(an.AnimateError, match="head_motion"):
    next(anim.motion_windows(portrait, audio, steps=2, head_motion=-1))


def test_without_a_distance_the_sampler_holds_the_portraits_own(anim):
  """No --distance: every window is conditioned on the portrait's head distance (so long clips
  keep their framing), exactly as if that distance had been asked."""
  portrait = anim.prepare_portrait(PORTRAIT, crop_only=True)
  audio = (0.3 * np.sin(2 * np.pi * 180 * np.arange(24000) / 16000)).astype(np.float32)

  def motion(**kw):
    return np.concatenate([m for _, m in anim.motion_windows(portrait, audio, steps=2, seed=2,
                                                             **kw)])
  own = float(np.clip(portrait.motion[5], 0.3, 1.5))
  free = motion()
  np.testing.assert_array_equal(free, motion(distance=own))
  assert np.abs(free - motion(distance=1.4)).max() > 1e-4


def test_emotion_is_an_offset_of_the_generated_codes(anim):
  from vasa_jax.geometry import emotion
  portrait = anim.prepare_portrait(PORTRAIT, crop_only=True)
  audio = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)

  def dyn(**kw):
    return np.concatenate([m for _, m in anim.motion_windows(portrait, audio, steps=2, seed=1,
                                                             **kw)])
  plain, happy = dyn(), dyn(emotion="happy", emotion_intensity=0.5)
  want = 0.5 * emotion.offsets(anim.basis)[emotion.EMOTIONS.index("happy")]
  np.testing.assert_allclose(happy[:, 6:] - plain[:, 6:], np.broadcast_to(want, plain[:, 6:].shape),
                             atol=1e-5)
  np.testing.assert_allclose(happy[:, :6], plain[:, :6], atol=1e-6)    # same speech motion
  with pytest.raises(an.AnimateError, match="emotion_intensity"):
    next(anim.motion_windows(portrait, audio, steps=2, emotion="sad", emotion_intensity=3))


def test_eval_motion_measures_output_and_footage_alike_and_the_controls_act(geo_bundle, tmp_path):
  """vasa-jax eval motion's core: generated and real rows from the same tracker, the control
  table (emotion measured on the output mesh), the report files; seam jumps are caught."""
  import cv2

  from conftest import ListSource
  from vasa_jax.data import records
  from vasa_jax.eval import motion as motion_eval
  basis = _basis()
  photo = cv2.resize(media.load_image(PORTRAIT), (256, 256), interpolation=cv2.INTER_AREA)
  fr = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((128, 128), 3.0 * np.sin(t / 4), 1.0),
                       (256, 256), borderMode=cv2.BORDER_REPLICATE) for t in range(30)]
  pts = np.stack([g.points for g in lm.get_mesh().track(fr, smooth=False)])
  code = codes_lib.encode(pts, basis, 256)
  t = np.arange(30 * 640) / 16000
  audio = (8000 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.int16)
  src = ListSource([{"frames": [records.encode_jpeg(f) for f in fr], "num_frames": np.int32(30),
                     "landmarks": pts.reshape(30, -1),
                     "motion": np.concatenate([code.pose, code.dyn], 1).astype(np.float32),
                     "audio": audio, "clip_id": "c0", "identity": "p", "source": "test",
                     "dataset": b"talking_face_videos/r256"}])
  # the untrained model's motion, de-normalised about this clip's codes (a face in frame)
  bundle = bundle_lib.load(geo_bundle)
  motion = np.concatenate([code.pose, code.dyn], 1)
  bundle.motion_stats = {"mean": motion.mean(0), "std": np.full(motion.shape[1], 0.01)}
  anim = an.Animator(bundle=bundle, render_batch=4)
  out = str(tmp_path / "motion")
  rep = motion_eval.evaluate(anim, src, src, max_clips=1, max_seconds=1.2, steps=2,
                             control_clips=1, out_dir=out, bilabial_sentences=1)
  real, gen = rep["mean"]["real"], rep["mean"]["generated"]
  assert gen["face_found"] == 1.0 and real["rot_std"] > 0.5      # the real clip rocks +-3 deg
  assert abs(real["rot_std_px"] / real["rot_std"] - 1.0) < 0.3    # ... and its pixels say so
  ctrl = {(r["control"], str(r["asked"])): r for r in rep["controls"]}
  assert ctrl[("emotion", "happy")]["d_corner_lift"] > 0.01
  assert ctrl[("emotion", "surprised")]["d_brow_height"] > 0.01
  assert ctrl[("emotion", "angry")]["d_brow_height"] < -0.005
  for name in ("motion_eval.json", "motion_eval.md", "motion_sheet.png"):
    assert os.path.getsize(os.path.join(out, name)) > 300
  # the sync evaluator scored both rows; the bilabial table measured its sentence
  for row in ("real", "generated"):      # a score where a face was tracked, not a placeholder
    m = rep["mean"][row]
    assert np.isfinite(m["sync_c"]) and m["sync_c"] >= 0.0
    # ... and so did the mesh lip-sync evaluator, on the tracked meshes of both rows
    assert np.isfinite(m["mesh_sync_c"]) and m["mesh_sync_c"] >= 0.0
  assert "mesh_in_sync" in open(os.path.join(out, "motion_eval.md")).read()
  assert -1.0 <= rep["mean"]["real"]["phonetic_open_r"] <= 1.0
  (bl,) = rep["bilabials"]["sentences"]
  assert bl["voice"] == "en-us" and bl["bilabials"] >= 8
  # an untrained model barely opens at vowels: the ratio is large, but measured
  assert np.isfinite(bl["closure_ratio"]) and bl["closure_ratio"] >= 0.0
  assert "Lip closure at bilabials" in open(os.path.join(out, "motion_eval.md")).read()
  # seams: a jump where a window starts is caught, a smooth track is not
  smooth = np.zeros((40, 50), np.float32)
  smooth[:, 0] = np.linspace(0, 0.2, 40)
  gap = np.linspace(0, 0.1, 40)
  assert motion_eval.seam_ratio(smooth, gap, [0, 20]) == pytest.approx(1.0, rel=1e-3)
  jump = smooth.copy()
  jump[20:, 0] += 0.05
  assert motion_eval.seam_ratio(jump, gap, [0, 20]) > 5


def test_bilabial_closure_figures():
  """Lips that shut on /p b m/ score a closure ratio near 0 and a closed share of 1; lips that
  follow loudness alone (as open on /m/ as on /a/) score near 1 and 0."""
  from vasa_jax.eval import motion as motion_eval
  phones = [(0.0, 0.2, "m"), (0.2, 0.5, "'a"), (0.5, 0.6, "p"), (0.6, 0.9, "a:"),
            (0.9, 1.0, "b"), (1.0, 1.2, "i")]
  t = (np.arange(30) + 0.5) / 25
  closing = np.where([any(a <= x < b and s in "mpb" for a, b, s in phones) for x in t], 0.0, 0.3)
  good = motion_eval.bilabial_figures(closing, phones)
  assert good["bilabials"] == 3 and good["closure_ratio"] < 0.05 and good["closed_share"] == 1.0
  flat = motion_eval.bilabial_figures(np.full(30, 0.3), phones)
  assert flat["closure_ratio"] == pytest.approx(1.0) and flat["closed_share"] == 0.0
  none = motion_eval.bilabial_figures(np.full(30, 0.3), [(0.0, 1.2, "a")])
  assert none["closure_ratio"] is None
  # the sync evaluator's offset decides "in sync": within +-1 frame
  class Fake:
    def __init__(self, off):
      self.off = off

    def score(self, frames, audio):
      return {"offset": self.off, "sync_c": 3.0}
  assert motion_eval.sync_figures(Fake(1), None, None)["in_sync"] == 1.0
  assert motion_eval.sync_figures(Fake(-3), None, None)["in_sync"] == 0.0
  assert motion_eval.sync_figures(None, None, None) == {}


def test_windows_join_without_a_jump():
  t = np.arange(60, dtype=np.float32)[:, None] * np.float32([0.01, -0.02])
  prev, new = t[:30], t[30:] + np.float32([0.3, 0.2])       # the new window jumps
  joined = an.join_seam(prev[-2:], new)
  step = np.abs(np.diff(np.concatenate([prev, joined]), axis=0)).max(0)
  assert (step < np.float32([0.3, 0.2]) / 4).all()          # the jump is spread over frames
  np.testing.assert_allclose(joined[-5:], new[-5:], atol=6e-3)   # its own motion is kept
  np.testing.assert_allclose(an.join_seam(prev[-2:], t[30:]), t[30:], atol=0.006)  # smooth: ~kept


def test_head_pose_smoothing_removes_jitter_and_carries_across_windows():
  rng = np.random.default_rng(0)
  t = np.arange(100, dtype=np.float32)
  slow = np.stack([0.1 * np.sin(t / 15)] * 6, -1).astype(np.float32)
  noisy = slow + rng.normal(0, 0.01, slow.shape).astype(np.float32)
  whole, _ = an.smooth_pose(noisy, None, 0.3)
  jit = lambda x: np.abs(np.diff(x, n=2, axis=0)).mean()
  assert jit(whole) < 0.4 * jit(noisy)
  assert (np.ptp(whole, axis=0) > 0.8 * np.ptp(slow, axis=0)).all()  # the slow nod stays
  a, state = an.smooth_pose(noisy[:50], None, 0.3)                   # two windows = one run
  b, _ = an.smooth_pose(noisy[50:], state, 0.3)
  np.testing.assert_allclose(np.concatenate([a, b]), whole, atol=1e-6)


def test_blink_rate_is_a_guided_condition_of_bundles_that_learned_it(anim):
  fl = load_stage_config("face_latent").get_config("geo_tiny")
  md = load_stage_config("motion_dit").get_config("tiny,model.dyn_dim=44,model.blink_control=True")
  d = int(md.model.motion_dim)
  blinky = an.Animator.from_configs(fl, md, face_basis=_basis(), render_batch=4, motion_stats={
      "mean": np.zeros(d, np.float32), "std": np.full(d, 0.05, np.float32)})
  portrait = blinky.prepare_portrait(PORTRAIT, crop_only=True)
  audio = (0.3 * np.sin(2 * np.pi * 200 * np.arange(8000) / 16000)).astype(np.float32)

  def motion(**kw):
    return np.concatenate([m for _, m in blinky.motion_windows(portrait, audio, steps=2, seed=0,
                                                               **kw)])
  free, few, many = motion(), motion(blink_rate=2), motion(blink_rate=50)
  assert np.abs(few - many).max() > 1e-4 and np.abs(free - few).max() > 1e-4
  with pytest.raises(an.AnimateError, match="blink"):          # 0-60 a minute
    motion(blink_rate=100)
  with pytest.raises(an.AnimateError, match="no blink-rate control"):
    next(anim.motion_windows(portrait, audio, steps=2, blink_rate=10))


def test_cli_animate_takes_the_new_controls_and_keeps_logs_quiet(geo_bundle, tmp_path):
  """The controls as a user types them (a negative gaze, head motion, emotion), and no progress
  bar when stderr is not a terminal (only the asked-for --stream latency line)."""
  t = np.arange(16000) / 16000
  wav = str(tmp_path / "s.wav")
  import soundfile
  soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
  out = str(tmp_path / "o.mp4")
  r = _cli("animate", "--image", PORTRAIT, "--audio", wav, "--out", out, "--checkpoint",
           geo_bundle, "--gaze", "-15,0", "--head-motion", "0", "--emotion", "happy",
           "--emotion-intensity", "0.5", "--steps", "2", "--crop-only", "--stream")
  assert r.returncode == 0, r.stderr
  assert json.loads(r.stdout)["frames"] == 25 and os.path.getsize(out) > 1000
  assert "first frames after" in r.stderr and "ETA" not in r.stderr
  r = _cli("animate", "--image", PORTRAIT, "--audio", wav, "--out", out, "--checkpoint",
           geo_bundle, "--head-motion", "5")
  assert r.returncode == 2 and "head_motion" in r.stderr


def test_gaze_steer_holds_the_asked_direction_and_keeps_fast_motion():
  """An asked gaze moves the slow main gaze (head + eyes) onto the target across windows,
  the eyes taking their share; glances faster than the time constant survive; seams stay
  smooth; a still head leaves the turn to the eyes."""
  from vasa_jax import engine
  rng = np.random.default_rng(0)
  t = np.arange(200, dtype=np.float32)
  m = np.zeros((200, 6 + 44), np.float32)
  m[:, 0] = 0.05 + 0.02 * np.sin(t / 3.0)            # the model looks right, with quick glances
  m[:, -2] = 0.01 * rng.standard_normal(200)
  target = np.float32([-0.25, 0.1])
  steer = engine.GazeSteer(target, np.zeros(2, np.float32))
  out = np.concatenate([steer(m[i:i + 50]) for i in range(0, 200, 50)])   # four windows
  gaze = np.stack([out[:, 0] + out[:, -2], out[:, 1] + out[:, -1]], -1)
  np.testing.assert_allclose(gaze[100:].mean(0), target, atol=0.02)
  # the eyes look half the asked way (not back at the camera), the head turns the rest
  np.testing.assert_allclose(out[100:, -2].mean(), engine.GAZE_EYE_SHARE * target[0], atol=0.02)
  assert out[100:, 0].mean() - m[100:, 0].mean() < -0.15
  fast = lambda x: (x - np.convolve(x, np.ones(9) / 9, mode="same"))[10:-10]
  assert np.corrcoef(fast(gaze[100:, 0]), fast(m[100:, 0] + m[100:, -2]))[0, 1] > 0.9
  assert np.abs(np.diff(gaze, axis=0)).max() < 0.05    # no jump at the window seams
  still = engine.GazeSteer(target, np.zeros(2, np.float32), move_head=False)
  out = np.concatenate([still(m[i:i + 50]) for i in range(0, 200, 50)])
  np.testing.assert_array_equal(out[:, :6], m[:, :6])  # the head is left alone
  np.testing.assert_allclose((out[:, 0] + out[:, -2])[100:].mean(), target[0], atol=0.02)
  far = engine.GazeSteer(np.float32([-0.8, 0.0]), np.zeros(2, np.float32), move_head=False)
  out = np.concatenate([far(m[i:i + 50]) for i in range(0, 200, 50)])
  assert out[:, -2].min() >= -np.radians(engine.GAZE_EYE_LIMIT_DEG) - 1e-6   # eyes stop there


def test_an_asked_gaze_is_steered_relative_to_where_the_data_looks(anim):
  """Through the Animator: --gaze -15,0 and 15,0 put the generated main gaze on either side,
  about the data's mean gaze (engine.gaze_zero), and a still head stays still."""
  from vasa_jax import engine
  portrait = anim.prepare_portrait(PORTRAIT, crop_only=True)
  audio = (0.3 * np.sin(2 * np.pi * 200 * np.arange(48000) / 16000)).astype(np.float32)

  def main_gaze(**kw):
    m = np.concatenate([m for _, m in anim.motion_windows(portrait, audio, steps=2, seed=0, **kw)])
    return np.degrees(np.stack([m[:, 0] + m[:, -2], m[:, 1] + m[:, -1]], -1)[25:].mean(0)), m
  zero = np.degrees(engine.gaze_zero(anim.engine.stats))
  left, _ = main_gaze(gaze=(-15, 0))
  right, _ = main_gaze(gaze=(15, 0))
  assert left[0] < zero[0] - 8 and right[0] > zero[0] + 8
  _, still = main_gaze(gaze=(15, 0), head_motion=0.0)
  np.testing.assert_allclose(still[:, :6], np.broadcast_to(portrait.motion[:6], still[:, :6].shape),
                             atol=1e-6)


def test_eval_controls_verdicts():
  from vasa_jax.eval import controls
  runs = {"none": {"mouth_audio_r": 0.40, "rot_std": 2.0},
          "gaze -15,0": {"gaze_deg": [-9.0, 0.0], "eye_deg": [-3.0, 0.0]},
          "gaze 15,0": {"gaze_deg": [8.0, 0.0], "eye_deg": [4.0, 0.0]},
          "distance 0.55": {"face_px": 90.0}, "distance 0.75": {"face_px": 70.0},
          "emotion happy": {"corner_lift": 0.03, "mouth_audio_r": 0.41},
          "emotion sad": {"corner_lift": 0.01, "mouth_audio_r": 0.38},
          "head_motion 0": {"rot_std": 0.6, "rot_std_px": 0.3}}   # the mesh's floor: px decides
  v = controls.verdicts(runs)
  assert v == {"gaze_theta": True, "iris_theta": True, "distance": True, "emotion": True,
               "emotion_sync_kept": True, "emotion_sync_within": True, "head_still": True}
  runs["emotion happy"]["mouth_audio_r"] = 0.50           # better sync than free: kept
  v = controls.verdicts(runs)
  assert v["emotion_sync_kept"] and not v["emotion_sync_within"]
  runs["gaze 15,0"]["gaze_deg"] = [-10.0, 0.0]
  runs["emotion sad"]["mouth_audio_r"] = 0.2              # the lips lost the speech
  runs["distance 0.75"]["face_px"] = 95.0
  runs["head_motion 0"]["rot_std_px"] = 0.8
  v = controls.verdicts(runs)
  assert not v["gaze_theta"] and not v["emotion_sync_kept"] and not v["distance"]
  assert not v["head_still"]


def test_long_audio_traces_pose_and_identity_over_time(geo_bundle, anim, tmp_path):
  """eval motion --long: per-frame pose and face-size traces, the seams, dlib identity distance
  every second, and the plot of them."""
  from vasa_jax.eval import identity
  from vasa_jax.eval import motion as motion_eval
  bundle = bundle_lib.load(geo_bundle)       # the untrained model's motion about the portrait's
  own = anim.prepare_portrait(PORTRAIT, crop_only=True).motion
  bundle.motion_stats = {"mean": own, "std": np.full(own.shape[0], 0.01, np.float32)}
  anim = an.Animator(bundle=bundle, render_batch=4)
  t = np.arange(3 * 16000) / 16000
  audio = (0.3 * np.sin(2 * np.pi * 190 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
  import soundfile
  wav = str(tmp_path / "a.wav")
  soundfile.write(wav, audio, 16000)
  lg = motion_eval.long_audio(anim, PORTRAIT, wav, motion_eval.Measurer(_basis()), steps=2,
                              seed=0, segment_s=1.0, embedder=identity.FaceEmbedder())
  tr = lg["traces"]
  assert len(tr["yaw_deg"]) == len(tr["face_px"]) == 75 and len(lg["segments"]) == 3
  assert tr["seams"][0] == 0 and len(tr["seams"]) >= 2          # windows of the tiny model
  assert tr["identity_frames"] == [25, 50] and len(tr["identity_dist"]) == 2
  assert 0.0 <= lg["identity"]["max"] < identity.SAME_PERSON    # the same person throughout
  svg = motion_eval.long_audio_svg(lg)
  assert svg.startswith("<svg") and svg.count("<polyline") == 7 and "identity distance" in svg
  assert svg.count("stroke=\"#ccc\"") == 2 * sum(1 for s in tr["seams"] if s > 0)   # seams marked
  md = motion_eval.markdown({"clips": 1, "dataset": "d", "settings": "s", "long": lg,
                             "mean": {"real": {}, "generated": {}}})
  assert "identity distance to the first frame" in md and "long_audio.svg" in md


def test_eval_controls_measures_each_ask_on_the_output(geo_bundle, anim, tmp_path):
  """vasa-jax eval controls' core on one portrait: each ask rendered, measured by the tracker,
  judged, and written as a video; the command refuses a bad count with one line."""
  import soundfile

  from vasa_jax.eval import controls
  bundle = bundle_lib.load(geo_bundle)
  own = anim.prepare_portrait(PORTRAIT, crop_only=True).motion
  bundle.motion_stats = {"mean": own, "std": np.full(own.shape[0], 0.01, np.float32)}
  tiny = an.Animator(bundle=bundle, render_batch=4)
  wav = str(tmp_path / "a.wav")
  soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 200 * np.arange(24000) / 16000)).astype(
      np.float32), 16000)
  asks = (("none", None), ("gaze", (-15.0, 0.0)), ("gaze", (15.0, 0.0)), ("head_motion", 0.0))
  rep = controls.evaluate(tiny, [PORTRAIT], [wav], seconds=1.2, steps=2, asks=asks,
                          video_dir=str(tmp_path / "v"))
  runs = rep["per_portrait"][0]["runs"]
  assert set(runs) == {"none", "gaze -15,0", "gaze 15,0", "head_motion 0"}
  assert all(r["face_found"] == 1.0 for r in runs.values())
  # the steered gaze shows on the output: measured left of free, free left of right
  left, free, right = (runs[k]["gaze_deg"][0] for k in ("gaze -15,0", "none", "gaze 15,0"))
  assert left < free - 3 < right - 6
  assert rep["passes"]["gaze_theta"] == "1/1" and rep["passes"]["iris_theta"] == "1/1"
  assert len(os.listdir(tmp_path / "v")) == 4
  still = runs["head_motion 0"]                 # read from the pixels as well as the mesh
  # --head-motion 0 holds the pose: the pixels read a still head, and the report passes it
  assert 0.0 <= still["rot_std_px"] < controls.STILL_DEG
  assert rep["per_portrait"][0]["pass"]["head_still"] is True
  assert rep["sheet"].shape == (controls.SHEET_TILE, 4 * controls.SHEET_TILE, 3)
  assert "| gaze_theta | 1/1 |" in controls.markdown(rep)
  r = subprocess.run([sys.executable, "-m", "vasa_jax", "eval", "controls", "--portraits", "0"],
                     capture_output=True, text=True, cwd=ROOT)
  assert r.returncode == 2 and "--portraits" in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_free_head_keeps_its_turns_but_not_a_lasting_drift():
  """No gaze asked: the recentring (GazeSteer from the portrait's own gaze, head only, slow)
  keeps a turn of a second or two and pulls back one that lasts; the eyes are untouched."""
  from vasa_jax import engine
  m = np.zeros((1500, 50), np.float32)                 # 60 s
  m[100:150, 0] = 0.2                                   # a 2-s glance to the side
  m[500:, 0] = 0.25                                     # then the head turns away and stays
  m[:, -2] = 0.03 * np.sin(np.arange(1500) / 7.0)
  st = engine.GazeSteer(np.zeros(2, np.float32), np.zeros(2, np.float32),
                        tau_s=engine.RECENTRE_TAU_S, move_eyes=False, start=np.zeros(2, np.float32))
  out = np.concatenate([st(m[i:i + 50]) for i in range(0, 1500, 50)])
  np.testing.assert_array_equal(out[:, -2:], m[:, -2:])
  assert out[100:150, 0].mean() > 0.15                  # the glance stays (most of it)
  assert out[510:530, 0].mean() > 0.15                  # the turn starts as the model made it
  assert abs(out[1200:, 0].mean()) < 0.02              # ... and is pulled back
  m[500:, -2] -= 0.2                                    # eyes looking back: the head still
  st = engine.GazeSteer(np.zeros(2, np.float32), np.zeros(2, np.float32),
                        tau_s=engine.RECENTRE_TAU_S, move_eyes=False, start=np.zeros(2, np.float32))
  out = np.concatenate([st(m[i:i + 50]) for i in range(0, 1500, 50)])
  assert abs(out[1200:, 0].mean()) < 0.02              # comes back

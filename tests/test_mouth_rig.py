"""Explicit mouth articulation (vasa_jax/mouth_rig.py), the named motion dims, and the wiring."""
import json
import os

import numpy as np
import pytest

from conftest import make_fake_records
from vasa_jax import mouth_rig as mr
from vasa_jax.data import motion_latents as ml

REF = (0.0, 0.0, 0.0, 0.0, 0.0, 0.65)


def face(size=160):
  """A skin-coloured frame with pink lips (a closed mouth line at y=100) and a textured chin."""
  img = np.zeros((size, size, 3), np.uint8)
  img[:] = (200, 160, 140)
  yy, xx = np.mgrid[:size, :size]
  lips = ((xx - 80) / 22.0) ** 2 + ((yy - 100) / 7.0) ** 2 < 1
  img[lips] = (190, 90, 100)
  img[(yy - 100 == 0) & lips] = (120, 50, 60)          # the line between the lips
  img[130:134, 60:100] = (90, 70, 60)                   # a chin mark the jaw carries down
  return img


def test_rest_leaves_the_frame_bit_exact():
  img = face()
  for named in ((0.0, 0.3, 0.2, 0.0), (0.05, 0.3, 0.2, 0.0), (-1.0, 0.3, 0.2, 0.0)):
    out = mr.articulate(img, 80.0, 100.0, 22.0, 0.0, named)
    assert np.array_equal(out, img)


def test_opening_darkens_the_mouth_grows_with_open_and_moves_the_chin_only_locally():
  img = face()
  gaps = []
  for o in (0.2, 0.5, 0.9):
    out = mr.articulate(img, 80.0, 100.0, 22.0, 0.0, (o, 0.3, 0.2, 0.0))
    assert out.shape == img.shape and out.dtype == np.uint8
    col = out[:, 80].astype(float).mean(-1)
    dark = col[95:130] < 80                              # the cavity at the centre column
    gaps.append(int(dark.sum()))
    # far from the mouth nothing moves
    assert np.array_equal(out[:60], img[:60])
    assert np.array_equal(out[:, :10], img[:, :10])
  assert 0 < gaps[0] < gaps[1] < gaps[2], gaps
  out = mr.articulate(img, 80.0, 100.0, 22.0, 0.0, (0.9, 0.3, 0.2, 0.0))
  # the chin mark went down by about the gap
  rows = np.flatnonzero(out[:, 80].astype(float).mean(-1) < 90)
  assert rows.max() > 133 + 10


def test_roll_rotates_the_opening():
  img = face()
  a = mr.articulate(img, 80.0, 100.0, 22.0, 0.0, (0.8, 0.3, 0.2, 0.0))
  b = mr.articulate(img, 80.0, 100.0, 22.0, np.pi / 2, (0.8, 0.3, 0.2, 0.0))
  da = (a.astype(int) - img).any(-1)
  db = (b.astype(int) - img).any(-1)
  ya, xa = np.nonzero(da)
  yb, xb = np.nonzero(db)
  # unrolled: the change is mostly below the mouth; rolled 90 degrees: mostly to the left
  # (v = "down" across the lips points to -x)
  assert ya.mean() > 100 + 5 and abs(xa.mean() - 80) < 5
  assert xb.mean() < 80 - 5


def test_track_follows_the_rigid_pose():
  anchor = mr.Anchor(128.0, 170.0, 24.0, 0.0)
  same = mr.track(anchor, REF, np.array([REF]), 256)
  np.testing.assert_allclose([same[0][0], same[1][0], same[2][0], same[3][0]],
                             [128.0, 170.0, 24.0, 0.0], atol=1e-6)
  poses = np.array([REF, (0.3, 0, 0, 0, 0, 0.65), (0, 0, 0, 0, 0, 0.9), (0, 0, 0.2, 0, 0, 0.65),
                    (0, 0, 0, 0.02, 0, 0.65)])
  cx, cy, hw, roll = mr.track(anchor, REF, poses, 256)
  assert cx[1] > cx[0] + 5           # yaw > 0 turns the face (and the mouth in front) right
  assert hw[1] < hw[0]               # ... and foreshortens it
  assert hw[2] < 0.8 * hw[0]         # farther away: smaller
  assert roll[3] == pytest.approx(0.2, abs=1e-6)
  assert cx[4] > cx[0] + 5           # tx > 0 shifts right


def test_anchor_from_keypoints_maps_into_the_crop():
  kp = np.array([[140, 100], [180, 100], [160, 125], [160, 150], [120, 105], [200, 105]],
                np.float32)
  a = mr.anchor_from_keypoints(kp, (100, 60, 128), 256)
  assert (a.x, a.y) == pytest.approx((120.0, 180.0))
  assert a.half_width == pytest.approx(0.4 * 80.0)
  assert a.roll == pytest.approx(0.0)


def test_rig_config_rejects_unknown_settings():
  assert mr.RigConfig.from_dict({"gain": 2}).gain == 2.0
  with pytest.raises(ValueError, match="unknown"):
    mr.RigConfig.from_dict({"gian": 2})


def test_named_dyn_ground_truth_or_pseudo_labels():
  recs = make_fake_records(n_clips=2, frames=6, size=16)
  motion = np.random.default_rng(0).normal(size=(6, 14)).astype(np.float32)
  out = ml.named_dyn("synth", recs[0], motion, {})
  np.testing.assert_array_equal(out[:, 6:9], recs[0]["mouth"])
  np.testing.assert_array_equal(out[:, 9], recs[0]["blink"])
  np.testing.assert_array_equal(out[:, :6], motion[:, :6])
  np.testing.assert_array_equal(out[:, 10:], motion[:, 10:])
  real = dict(recs[1], has_mouth=0, has_blink=0)
  labels = {"real:clip1": np.full((6, 4), 0.5, np.float32)}
  np.testing.assert_array_equal(ml.named_dyn("real", real, motion, labels)[:, 6:10], 0.5)
  with pytest.raises(ValueError, match="no ground-truth"):
    ml.named_dyn("other", real, motion, labels)
  with pytest.raises(ValueError, match="expected"):
    ml.named_dyn("real", real, motion, {"real:clip1": np.zeros((5, 4), np.float32)})


def test_bundle_round_trips_the_rig_and_the_animator_applies_it(tmp_path):
  from vasa_jax import animate, bundle, composites
  from conftest import load_stage_config
  fl_cfg = load_stage_config("face_latent").get_config("tiny")
  md_cfg = load_stage_config("motion_dit").get_config("tiny")
  base = animate.Animator.from_configs(fl_cfg, md_cfg)
  d = base.motion_dim
  stats = {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)}
  out = bundle.save(str(tmp_path / "b"), face_latent_config=fl_cfg,
                    face_latent_params=base.engine.fl_params, motion_dit_config=md_cfg,
                    motion_dit_params=base.engine.md_params, motion_stats=stats,
                    mouth_rig={"gain": 1.5})
  with open(os.path.join(out, "bundle.json")) as f:
    assert json.load(f)["mouth_rig"] == {"gain": 1.5}
  anim = animate.Animator(out)
  assert anim.rig == mr.RigConfig(gain=1.5) and base.rig is None
  crop = np.zeros((anim.size, anim.size, 3), np.uint8)
  crop[:] = 180
  portrait = anim.portrait_from_crop(crop)   # no face on a grey square: the template anchor
  assert portrait.mouth == mr.default_anchor(anim.size)
  # rest motion: closed mouth, open eyes in the named dims
  np.testing.assert_allclose(portrait.motion[6:10], (0.08, 0.3, 0.2, 0.0))
  motion = np.tile(portrait.motion[None], (3, 1))
  motion[1, 6] = 0.9
  frames = np.stack([crop] * 3)
  got = composites.articulate(anim.engine, portrait, frames, motion)
  assert np.array_equal(got[0], crop) and np.array_equal(got[2], crop)
  assert (got[1].astype(int) - crop).any()
  # the same motion without a rig: untouched
  assert np.array_equal(composites.articulate(base.engine, portrait, frames, motion), frames)
  # a bundle with unknown rig settings is refused with one line
  meta_path = os.path.join(out, "bundle.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["mouth_rig"] = {"bogus": 1}
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(animate.AnimateError, match="mouth_rig"):
    animate.Animator(out)


def test_refine_anchor_snaps_to_the_lip_line():
  img = face()
  for dy in (-6.0, 0.0, 5.0):      # a detector estimate a few pixels off
    a = mr.refine_anchor(img, mr.Anchor(80.0, 100.0 + dy, 22.0, 0.0))
    assert a.y == pytest.approx(100.0, abs=1.0) and a.x == pytest.approx(80.0, abs=1e-6)
  flat = np.full_like(img, 128)
  same = mr.Anchor(80.0, 97.0, 22.0, 0.0)
  assert mr.refine_anchor(flat, same) == same


def test_face_homographies_identity_and_motion():
  hs = mr.face_homographies(REF, np.array([REF, (0, 0, 0, 0.02, 0, 0.65),
                                           (0, 0, 0, 0, 0, 0.9)]), 256)
  np.testing.assert_allclose(hs[0], np.eye(3), atol=1e-6)
  def apply(h, p):
    q = h @ np.array([p[0], p[1], 1.0])
    return q[:2] / q[2]
  assert apply(hs[1], (128, 128))[0] > 128 + 5          # tx > 0: the face moves right
  c = apply(hs[2], (127.5, 127.5))
  far = apply(hs[2], (200, 127.5))
  assert abs(far[0] - c[0]) < 0.8 * (200 - 127.5)       # farther: smaller


def test_warp_composite_moves_the_photo_and_needs_a_rig(tmp_path):
  from vasa_jax import animate, bundle, composites
  from conftest import load_stage_config
  fl_cfg = load_stage_config("face_latent").get_config("tiny")
  md_cfg = load_stage_config("motion_dit").get_config("tiny")
  with pytest.raises(animate.AnimateError, match="mouth rig"):
    animate.Animator.from_configs(fl_cfg, md_cfg, composite="warp")
  base = animate.Animator.from_configs(fl_cfg, md_cfg)
  assert base.composite == "detail"
  d = base.motion_dim
  out = bundle.save(str(tmp_path / "b"), face_latent_config=fl_cfg,
                    face_latent_params=base.engine.fl_params, motion_dit_config=md_cfg,
                    motion_dit_params=base.engine.md_params,
                    motion_stats={"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)},
                    mouth_rig={})
  anim = animate.Animator(out)
  assert anim.composite == "warp"
  s = anim.size
  photo = np.zeros((64, 80, 3), np.uint8)
  photo[:, :, 0] = np.arange(80, dtype=np.uint8)[None, :] * 3      # a horizontal ramp
  portrait = animate.Portrait(image=photo, crop=photo[:s, :s], box=(10, 8, 48), prepared=None,
                              motion=anim.engine.rest(np.r_[REF, np.zeros(d - 6)]), faces_found=1,
                              mouth=None)
  motion = np.tile(portrait.motion[None], (2, 1))
  motion[1, 3] = 0.01                                                # tx: 1 cm to the right
  frames = list(anim.render_motion(portrait, motion))[0]
  assert frames.shape == (2, 64, 80, 3)
  assert np.array_equal(frames[0], photo)                            # own pose: the photo
  centre = (slice(28, 36), slice(30, 40), 0)
  # content moved right: the red ramp reads smaller values at the same pixels
  assert frames[1][centre].astype(float).mean() < photo[centre].astype(float).mean() - 3
  assert np.array_equal(frames[1][:, :8], photo[:, :8])              # outside the box: kept

"""Tests for the procedural 3D head renderer (vasa_jax.synth.head / render / raster)."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vasa_jax.synth import head as H  # noqa: E402
from vasa_jax.synth import render as R  # noqa: E402

SIZE = 96


@pytest.fixture(scope="module")
def rend():
  return R.HeadRenderer(H.sample_identity(np.random.default_rng(7)), size=SIZE)


def _f(im):
  return im.astype(np.float32)


def _box(c, r):
  x, y = int(round(c[0])), int(round(c[1]))
  return slice(max(y - r, 0), y + r + 1), slice(max(x - r, 0), x + r + 1)


def test_shape_dtype_and_batch(rend):
  im = rend.render(H.FrameParams())
  assert im.shape == (SIZE, SIZE, 3) and im.dtype == np.uint8
  assert im.std() > 10                       # not a blank frame
  b = R.render_batch(rend, [H.FrameParams(), H.FrameParams(yaw=0.2)])
  assert b.shape == (2, SIZE, SIZE, 3) and b.dtype == np.uint8
  np.testing.assert_array_equal(b[0], im)


def test_deterministic():
  idn = H.sample_identity(np.random.default_rng(3))
  assert H.sample_identity(np.random.default_rng(3)) == idn
  p = H.FrameParams(yaw=0.3, pitch=-0.1, mouth_open=0.6, blink=0.3, emotion=1, emotion_intensity=0.7)
  a = R.HeadRenderer(idn, size=64).render(p)
  b = R.HeadRenderer(pickle.loads(pickle.dumps(idn)), size=64).render(p)
  np.testing.assert_array_equal(a, b)


def test_identities_differ():
  ims = [R.HeadRenderer(H.sample_identity(np.random.default_rng(s)), size=64).render(H.FrameParams())
         for s in range(4)]
  for i in range(4):
    for j in range(i + 1, 4):
      assert np.abs(_f(ims[i]) - _f(ims[j])).mean() > 8


def test_face_layout_in_frame(rend):
  """At tz = 0.65 the face (eyes .. mouth) sits in the middle of the frame, eyes above the mouth."""
  lm = rend.landmarks(H.FrameParams())
  assert abs(lm["nose_tip"][0] - SIZE / 2) < 2
  assert lm["eye_right"][1] < lm["nose_tip"][1] < lm["mouth"][1]
  # x to the subject's left = image right: the subject's left eye (x > 0) is on the image right
  assert lm["eye_left"][0] > lm["eye_right"][0]
  assert 0.12 * SIZE < lm["mouth"][1] - lm["eye_right"][1] < 0.3 * SIZE


def test_mouth_open_changes_lower_face_only(rend):
  p0, p1 = H.FrameParams(), H.FrameParams(mouth_open=1.0)
  a, b = _f(rend.render(p0)), _f(rend.render(p1))
  d = np.abs(a - b).sum(-1)
  mouth = rend.landmarks(p0)["mouth"]
  assert d[_box(mouth, 6)].mean() > 30
  eye_y = rend.landmarks(p0)["eye_right"][1]
  assert d[: int(eye_y) - 3].max() == 0          # nothing above the eyes moves
  # a dark mouth interior appears below the lip line
  ref = np.median(a[_box(mouth, 8)].mean(-1))
  dark = lambda im: (im[_box(mouth + np.array([0, 3]), 5)].mean(-1) < 0.45 * ref).sum()
  assert dark(b) > dark(a) + 10


def test_blink_changes_eyes_only(rend):
  p0 = H.FrameParams()
  a, b = _f(rend.render(p0)), _f(rend.render(H.FrameParams(blink=1.0)))
  d = np.abs(a - b).sum(-1)
  lm = rend.landmarks(p0)
  for k in ("eye_left", "eye_right"):
    assert d[_box(lm[k], 3)].mean() > 40
  assert d[_box(lm["mouth"], 6)].max() == 0
  # closed eyes: no eyeball pixels left
  rend.render(H.FrameParams(blink=1.0))
  assert (rend.material_map() == H.PART_EYE).sum() == 0
  rend.render(p0)
  assert (rend.material_map() == H.PART_EYE).sum() > 20


def _centroid(mask):
  ys, xs = np.nonzero(mask)
  return np.array([xs.mean(), ys.mean()])


def test_yaw_turns_face_to_image_right(rend):
  cents = []
  for yaw in (-0.4, 0.0, 0.4):
    rend.render(H.FrameParams(yaw=yaw))
    cents.append(_centroid(rend.material_map() == H.PART_EYE)[0])
  assert cents[0] < cents[1] - 3 < cents[2] - 6
  # pitch > 0 (chin down) moves the eyes down, roll > 0 is clockwise
  rend.render(H.FrameParams(pitch=0.4))
  down = _centroid(rend.material_map() == H.PART_EYE)[1]
  rend.render(H.FrameParams(pitch=-0.4))
  up = _centroid(rend.material_map() == H.PART_EYE)[1]
  assert down > up + 5
  lm = rend.landmarks(H.FrameParams(roll=0.3))
  assert lm["eye_left"][1] > lm["eye_right"][1] + 2      # clockwise: the image-right eye goes down


def _iris_offset(rend, p):
  im = _f(rend.render(p)).mean(-1)
  mm = rend.material_map()
  import cv2
  lum = cv2.resize(im, mm.shape[::-1], interpolation=cv2.INTER_NEAREST)
  eye = mm == H.PART_EYE
  dark = eye & (lum < np.percentile(lum[eye], 35))
  return _centroid(dark) - _centroid(eye)


def test_gaze_moves_iris(rend):
  r = _iris_offset(rend, H.FrameParams(gaze_theta=0.4))
  l = _iris_offset(rend, H.FrameParams(gaze_theta=-0.4))
  assert r[0] > l[0] + 2                      # theta > 0 looks to image right
  d = _iris_offset(rend, H.FrameParams(gaze_phi=0.35))
  u = _iris_offset(rend, H.FrameParams(gaze_phi=-0.35))
  assert d[1] > u[1] + 1                      # phi > 0 looks down


def test_rendered_gaze_clamps(rend):
  th, ph = rend.rendered_gaze(H.FrameParams(gaze_theta=0.2, gaze_phi=-0.1))
  assert th == pytest.approx(0.2, abs=1e-6) and ph == pytest.approx(-0.1, abs=1e-6)
  th, _ = rend.rendered_gaze(H.FrameParams(gaze_theta=1.2))
  assert th == pytest.approx(H.EYE_YAW_LIMIT, abs=1e-6)
  # relative to the head: a head turned 0.3 right can look 0.3 + 35 deg right
  th, _ = rend.rendered_gaze(H.FrameParams(yaw=0.3, gaze_theta=1.2))
  assert th == pytest.approx(0.3 + H.EYE_YAW_LIMIT, abs=1e-3)


def test_distance_scales_face(rend):
  areas = []
  for tz in (0.55, 0.65, 0.85):
    rend.render(H.FrameParams(tz=tz))
    areas.append(((rend.material_map() == H.PART_SKIN)).sum())
  assert areas[0] > areas[1] * 1.15 > areas[2] * 1.15 * 1.3


def test_emotions_change_face(rend):
  a = _f(rend.render(H.FrameParams()))
  for e in range(1, len(H.EMOTIONS)):
    b = _f(rend.render(H.FrameParams(emotion=e, emotion_intensity=1.0)))
    assert np.abs(a - b).sum(-1).mean() > 1.0, H.EMOTIONS[e]
  # intensity 0 is the neutral face
  np.testing.assert_array_equal(rend.render(H.FrameParams(emotion=2, emotion_intensity=0.0)), a.astype(np.uint8))


def test_mouth_wide_and_round_change_mouth(rend):
  p0 = H.FrameParams()
  a = _f(rend.render(p0))
  mouth = rend.landmarks(p0)["mouth"]
  for p in (H.FrameParams(mouth_wide=1.0), H.FrameParams(mouth_round=1.0)):
    d = np.abs(a - _f(rend.render(p))).sum(-1)
    assert d[_box(mouth, 8)].mean() > 5
    assert d[: int(mouth[1]) - 20].max() == 0

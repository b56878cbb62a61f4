"""The frames -> factors regressor (vasa_jax.eval.factors): API, persistence, bundled weights."""

import json

import numpy as np
import pytest

from vasa_jax.eval import factors as F
from vasa_jax.synth import head as H
from vasa_jax.synth import render as R

KEYS = {"mouth": (3,), "pose": (6,), "gaze": (2,), "blink": (), "emotion_intensity": (),
        "emotion": (), "emotion_probs": (len(F.EMOTIONS),), "distance": ()}


def _tiny(seed=0):
  cfg = F.NetConfig(global_size=32, face_size=24, global_widths=(8, 16), global_hidden=16,
                    face_widths=(8, 16), face_hidden=16)
  params = F._init_params(cfg, seed)
  stats = {"mean": np.linspace(-0.5, 0.65, F.REG_DIM), "std": np.full(F.REG_DIM, 0.3)}
  return F.FactorRegressor(params, cfg, stats)


def _frames(t, s, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (t, s, s, 3), dtype=np.uint8)


def test_emotions_match_the_synthetic_classes():
  assert F.EMOTIONS == tuple(H.EMOTIONS) and F.EMOTIONS[0] == "neutral"


@pytest.mark.parametrize("t,s,bs", [(3, 20, 2), (5, 48, 64), (1, 32, 4)])
def test_predict_keys_shapes_dtypes(t, s, bs):
  out = _tiny().predict(_frames(t, s), batch_size=bs)
  assert set(out) == set(KEYS)
  for k, shape in KEYS.items():
    assert out[k].shape == (t, *shape), k
    assert out[k].dtype == (np.int32 if k == "emotion" else np.float32), k
  np.testing.assert_allclose(out["emotion_probs"].sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(out["emotion"], out["emotion_probs"].argmax(-1))
  np.testing.assert_array_equal(out["distance"], out["pose"][:, 5])
  for k in ("mouth", "blink", "emotion_intensity"):
    assert (out[k] >= 0).all() and (out[k] <= 1).all(), k


def test_predict_is_batch_independent_and_rejects_bad_input():
  reg = _tiny()
  x = _frames(5, 40)
  a, b = reg.predict(x, batch_size=2), reg.predict(x, batch_size=64)
  for k in KEYS:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5)
  one = reg.predict(x[3:4])
  np.testing.assert_allclose(one["pose"][0], a["pose"][3], rtol=1e-5, atol=1e-5)
  empty = reg.predict(x[:0])
  assert all(empty[k].shape == (0, *KEYS[k]) for k in KEYS)
  with pytest.raises(ValueError):
    reg.predict(x.astype(np.float32))
  with pytest.raises(ValueError):
    reg.predict(x[:, :, :30])


def test_save_load_round_trip(tmp_path):
  reg = _tiny(seed=3)
  F.save(str(tmp_path), reg, {"note": "test"})
  meta = json.loads((tmp_path / F.META_FILE).read_text())
  assert meta["emotions"] == list(F.EMOTIONS) and meta["note"] == "test"
  back = F.load(str(tmp_path))
  assert back.config == reg.config
  x = _frames(4, 36, seed=1)
  a, b = reg.predict(x), back.predict(x)
  for k in KEYS:
    np.testing.assert_array_equal(a[k], b[k])
  # a different network's predictions differ: the round trip is not vacuous
  assert np.abs(_tiny(seed=4).predict(x)["pose"] - a["pose"]).max() > 1e-4
  with pytest.raises(FileNotFoundError):
    F.load(str(tmp_path / "missing"))


def test_auc_and_pearson():
  assert F.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
  assert F.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
  assert F.auc([0.5, 0.5], [0, 1]) == 0.5
  assert F.auc([0.1, 0.2], [0, 0]) is None
  assert F.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_augment_flip_and_shift_move_labels_consistently():
  import jax
  import jax.numpy as jnp
  reg = jnp.tile(jnp.asarray([[0.5, 0.2, 0.1, 0.3, 0.1, -0.05, 0.01, 0.02, 0.65, 0.2, -0.1, 0.4]]),
                 (64, 1))
  g = jnp.full((64, 32, 32, 3), 0.5)
  f = jnp.full((64, 30, 30, 3), 0.5)
  g2, f2, out = F.augment(jax.random.PRNGKey(0), g, f, reg, max_shift=2, face_size=24)
  assert g2.shape == g.shape and f2.shape == (64, 24, 24, 3)
  out = np.asarray(out)
  flipped = out[:, F.I_POSE] < 0
  assert 10 < flipped.sum() < 54
  for j in (F.I_POSE, F.I_POSE + 2, F.I_GAZE):          # yaw, roll, gaze theta mirror
    np.testing.assert_allclose(np.abs(out[:, j]), abs(float(reg[0, j])), rtol=1e-6)
  for j in (0, 1, 2, F.I_POSE + 1, F.I_POSE + 5, F.I_GAZE + 1, F.I_EMO):   # unchanged
    np.testing.assert_allclose(out[:, j], float(reg[0, j]), rtol=1e-6)
  step = 0.65 / F.focal_px(32)                           # one pixel of shift, in metres
  dty = (out[:, F.I_POSE + 4] - 0.02) / step
  np.testing.assert_allclose(dty, np.round(dty), atol=1e-3)
  assert np.abs(dty).max() <= 2 + 1e-3 and np.abs(dty).max() >= 1


def test_face_crop_follows_the_rendered_face():
  """The crop template lands on the renderer's face: eyes near 0.21, mouth near 0.64 of the crop
  height and the face centred, whatever the pose, distance and frame size."""
  rend = R.HeadRenderer(H.sample_identity(np.random.default_rng(99)), size=128)
  for p in (H.FrameParams(), H.FrameParams(yaw=0.35, tx=0.02), H.FrameParams(pitch=-0.25, tz=0.5),
            H.FrameParams(roll=0.2, ty=-0.02, tz=0.88)):
    pose = np.array([[p.yaw, p.pitch, p.roll, p.tx, p.ty, p.tz]])
    (cx, cy), side = F.face_boxes(pose, 128)[0][0], F.face_boxes(pose, 128)[1][0]
    lm = rend.landmarks(p)
    rel = lambda k: (np.asarray(lm[k]) - [cx, cy]) / side + 0.5  # noqa: E731
    eyes = (rel("eye_left") + rel("eye_right")) / 2
    assert abs(eyes[1] - 0.21) < 0.08 and abs(rel("mouth")[1] - 0.64) < 0.08, p
    assert abs(eyes[0] - 0.5) < 0.08 and abs(rel("mouth")[0] - 0.5) < 0.08, p
    assert 0.2 < (rel("eye_left") - rel("eye_right"))[0] < 0.6
  # the same crop from a frame of another size (area-shrunk first): nearly the same pixels
  p = H.FrameParams(yaw=0.2, tz=0.55)
  pose = np.array([[p.yaw, p.pitch, p.roll, p.tx, p.ty, p.tz]])
  big = R.HeadRenderer(rend.identity, size=256).render(p)[None]
  a = F.crop_faces(big, pose, 48).astype(np.float32)
  b = F.crop_faces(rend.render(p)[None], pose, 48).astype(np.float32)
  assert np.abs(a - b).mean() < 6


# ----------------------------------------------------------------------------- bundled weights

@pytest.fixture(scope="module")
def bundled():
  return F.load()


@pytest.fixture(scope="module")
def held_out_renderer(bundled):
  # An identity drawn from a seed the corpus does not use: never seen in training.
  return R.HeadRenderer(H.sample_identity(np.random.default_rng(424242)), size=256)


def test_bundled_weights_are_small_and_documented(bundled):
  assert F._param_count(bundled.params) * 4 < 3 * 2**20
  assert bundled.meta["stats"]["std"] and "validation" in bundled.meta


def test_bundled_weights_recover_mouth_open_and_yaw(bundled, held_out_renderer):
  rend = held_out_renderer
  opens = np.linspace(0.0, 1.0, 5)
  yaws = np.linspace(-0.35, 0.35, 5)
  frames = [rend.render(H.FrameParams(mouth_open=float(m))) for m in opens]
  frames += [rend.render(H.FrameParams(yaw=float(y))) for y in yaws]
  frames += [rend.render(H.FrameParams(blink=1.0))]
  out = bundled.predict(np.stack(frames))
  assert F.pearson(out["mouth"][:5, 0], opens) > 0.8
  assert out["mouth"][4, 0] - out["mouth"][0, 0] > 0.3
  assert F.pearson(out["pose"][5:10, 0], yaws) > 0.8
  assert np.abs(out["pose"][5:10, 0] - yaws).max() < np.radians(10)
  assert out["blink"][10] > 0.5 > out["blink"][0]


def test_train_fits_through_the_training_loop():
  """factors.train (vasa_jax/train/loop.py underneath): on frames whose brightness is the
  mouth opening, the loss falls, the history is logged every log_every steps, and the time
  limit stops the fit early."""
  cfg = F.NetConfig(global_size=32, face_size=24, global_widths=(8, 16), global_hidden=16,
                    face_widths=(8, 16), face_hidden=16)
  rng = np.random.default_rng(0)
  n = 64
  level = rng.uniform(0, 1, n).astype(np.float32)
  patch = int(round(cfg.face_size * F.TRAIN_MARGIN))
  reg = np.zeros((n, F.REG_DIM), np.float32)
  reg[:, F.I_MOUTH] = level
  has = np.zeros((n, 5), np.float32)
  has[:, 0] = 1                                           # only the mouth is labelled
  data = {"global": np.repeat((level * 255).astype(np.uint8)[:, None, None, None], 32, 1)
                      .repeat(32, 2).repeat(3, 3),
          "face": np.repeat((level * 255).astype(np.uint8)[:, None, None, None], patch, 1)
                    .repeat(patch, 2).repeat(3, 3),
          "reg": reg, "has": has, "blink": np.zeros(n, np.float32),
          "emotion": np.full(n, -1, np.int32)}
  reg_model, info = F.train(data, cfg=cfg, steps=120, batch_size=16, seed=0, lr=3e-3,
                            max_shift=0, log_every=20)
  hist = info["history"]
  assert info["steps"] == 120 and [h["step"] for h in hist] == list(range(20, 121, 20))
  assert hist[-1]["loss"] < 0.5 * hist[0]["loss"], hist
  assert all(np.isfinite(h["face"]) for h in hist)
  _, short = F.train(data, cfg=cfg, steps=10_000, batch_size=16, seed=0, lr=3e-3,
                     max_shift=0, log_every=20, time_limit_s=0.5)
  assert short["steps"] < 10_000

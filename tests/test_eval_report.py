"""The evaluation report's measures, plots and orchestration (evaluators: tests/test_eval_*)."""

import json
import os

import numpy as np
import pytest

from vasa_jax.eval import metrics, report


def test_envelope_and_delay():
  a = np.zeros(10 * metrics.SPF, np.float32)
  a[3 * metrics.SPF:4 * metrics.SPF] = 0.5
  env = metrics.envelope(a, 10)
  assert env.shape == (10,) and env.argmax() == 3 and env[3] == pytest.approx(0.5)
  d = metrics.envelope(metrics.delay_audio(a, 2), 10)
  assert d.argmax() == 5 and len(metrics.delay_audio(a, 2)) == len(a)


def test_lagged_corr_finds_the_lag_and_its_sign():
  rng = np.random.default_rng(0)
  y = rng.normal(size=200)
  x = np.roll(y, 3)          # x[t + 3] = y[t]: the "mouth" moves 3 frames after the sound
  r, lag = metrics.lagged_corr(x, y)
  assert lag == 3 and r > 0.95
  r0, _ = metrics.lagged_corr(rng.normal(size=200), y)
  assert r0 < 0.4
  assert np.isnan(metrics.lagged_corr(np.ones(50), y[:50])[0])


def test_delta_p_and_jitter():
  t = np.arange(50, dtype=np.float64)
  line = np.stack([t, 2 * t, 0 * t], 1)          # constant velocity: 1, 2, 0 deg/frame
  assert metrics.delta_p(line) == pytest.approx(1.0)
  assert metrics.jitter(line) == pytest.approx(0.0)
  noisy = line + np.random.default_rng(1).normal(0, 0.5, line.shape)
  assert metrics.jitter(noisy) > 0.3


def test_summarize_skips_missing_and_nan():
  rows = [{"sync_c": 1.0, "mouth_r": float("nan")}, {"sync_c": 3.0, "mouth_r": 0.5,
                                                     "delta_p": 2.0}]
  s = report.summarize(rows)
  assert s["clips"] == 2 and s["sync_c"] == 2.0 and s["mouth_r"] == 0.5
  assert s["delta_p"] == 2.0 and "pose_jitter" not in s


def test_svg_panels_are_wellformed_and_scaled():
  import xml.etree.ElementTree as ET
  x = np.arange(100) / 25.0
  svg = metrics.svg_panels([{"title": "a < b & c", "xlabel": "s", "ylabel": "z",
                            "series": [("one", x, np.sin(x)), ("two", x, np.cos(x))]},
                           {"title": "flat", "series": [("c", x, np.zeros_like(x))]}])
  root = ET.fromstring(svg)
  lines = root.findall("{http://www.w3.org/2000/svg}polyline")
  assert len(lines) == 3
  pts = np.array([[float(v) for v in p.split(",")] for p in lines[0].get("points").split()])
  assert len(pts) == 100 and np.all(np.diff(pts[:, 0]) > 0)   # x increases left to right
  assert pts[:, 1].max() <= 200 and pts[:, 1].min() >= 0      # inside the first panel


def test_settings_from_args():
  args = report._parser().parse_args(["--ablate-cfg-audio", "0,1", "--ablate-steps", "10",
                                      "--ablate-no-prev", "--steps", "20"])
  st = report.settings_from_args(args)
  assert [s.name for s in st][0] == "generated" and len(st) == 5
  assert st[1].cfg_audio == 0.0 and st[3].steps == 10 and st[3].cfg_audio is None   # the bundle's
  assert st[4].carry_context is False and all(s.steps == 20 for s in st if s is not st[3])


def _clip(name, seed, renderer):
  """A 2-s synthetic clip whose mouth opening follows its audio's envelope exactly."""
  from vasa_jax.synth import head as H
  rng = np.random.default_rng(seed)
  t = 50
  env = np.clip(np.convolve(rng.uniform(0, 1, t), np.ones(4) / 4, mode="same"), 0, 1)
  env = (env - env.min()) / (env.max() - env.min())
  frames = np.stack([renderer.render(H.FrameParams(mouth_open=float(e))) for e in env])
  carrier = np.sin(2 * np.pi * 180 * np.arange(t * metrics.SPF) / 16000)
  audio = (0.4 * np.repeat(env, metrics.SPF) * carrier).astype(np.float32)
  return report.Clip(name=name, group="synthetic", frames=frames, audio=audio,
                     controls={"gaze": np.zeros(2), "distance": 0.65, "emotion": 0})


def test_pose_and_identity_are_read_from_the_frames():
  """The tracker's roll follows a rotated photo, and dlib calls it one person throughout."""
  import cv2
  from vasa_jax import media
  from vasa_jax.constants import EXAMPLES_DIR
  photo = cv2.resize(media.load_image(os.path.join(EXAMPLES_DIR, "portrait.jpg")), (256, 256), interpolation=cv2.INTER_AREA)
  frames = np.stack([cv2.warpAffine(photo, cv2.getRotationMatrix2D((128, 128), float(a), 1.0),
                                    (256, 256), borderMode=cv2.BORDER_REPLICATE)
                     for a in np.linspace(0, 12, 20)])
  ev = report.Evaluators(sync=None, animator=None)
  got = ev.measure(frames)
  roll = np.degrees(got["pose"][:, 2])
  assert got["face_found"] == 1.0 and abs(abs(roll[-1] - roll[0]) - 12) < 3
  assert 0.0 <= got["identity_dist"] < 0.3
  blank = np.full_like(frames[:5], 128)
  nothing = ev.measure(blank)
  assert nothing["pose"] is None and nothing["face_found"] == 0.0


def test_run_writes_the_report(tmp_path):
  """End to end with the bundled (geometry) animator and the bundled evaluators."""
  from vasa_jax import animate as an
  from vasa_jax.synth import head as H
  from vasa_jax.synth import render as R
  anim = an.Animator()
  rend = R.HeadRenderer(H.sample_identity(np.random.default_rng(7)), size=128)
  clips = [_clip("a", 1, rend), _clip("b", 2, rend)]
  settings = [report.Setting("generated", steps=2),
              report.Setting("generated, no previous-window conditioning", steps=2,
                             carry_context=False)]
  out = report.run(anim, {"synthetic": clips}, settings=settings, out_dir=str(tmp_path))
  rows = out["rows"]["synthetic"]
  assert set(rows) == {"footage", "footage, audio delayed 10 frames",
                       "footage, another clip's audio", *[s.name for s in settings]}
  foot = rows["footage"]
  # the mouth read from the frames follows the clip's own audio, not another clip's
  assert foot["mouth_r"] > 0.5 and foot["mouth_r"] > rows["footage, another clip's audio"]["mouth_r"]
  assert foot["clips"] == 2 and np.isfinite(foot["sync_d"]) and foot["face_found"] > 0.9
  # generated from the clip's first frame: dlib sees that frame's person throughout, and the
  # head moves (pose read by the mesh tracker)
  gen = rows["generated"]
  assert gen["face_found"] == 1.0 and 0.0 <= gen["identity_dist"] < 0.6
  assert np.isfinite(gen["delta_p"]) and gen["delta_p"] > 0
  # the bundle's own sampler defaults were used and recorded
  assert out["settings"]["cfg_audio"] == anim.engine.sampler.cfg_audio
  saved = json.loads((tmp_path / "report.json").read_text())
  assert saved["rows"]["synthetic"]["footage"]["mouth_r"] == pytest.approx(foot["mouth_r"])
  md_text = (tmp_path / "report.md").read_text()
  assert "| synthetic | footage |" in md_text and "no previous-window" in md_text
  assert "| synthetic | generated |" in md_text and out["timing"]["video_s"] == pytest.approx(8.0)

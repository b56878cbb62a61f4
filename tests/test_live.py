"""Live: motion block by block from audio as it arrives (vasa_jax/live.py), the session, the
`vasa-jax live` command, and the bundle that carries the live generator."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vasa_jax import animate as an
from vasa_jax import bundle as bundle_lib
from vasa_jax import live
from vasa_jax.constants import SAMPLES_PER_FRAME

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(REPO, "vasa_jax", "assets", "examples", "portrait.jpg")


@pytest.fixture(scope="module")
def tiny(geo_tiny_live_bundle):
  return an.Animator(geo_tiny_live_bundle)


def _speechlike(seconds, seed=0):
  """Noise bursts with pauses (loud and silent stretches, as speech has)."""
  rng = np.random.default_rng(seed)
  n = int(seconds * 16000)
  env = (np.sin(np.arange(n) / 16000 * 2 * np.pi * 1.7) > 0).astype(np.float32)
  return (rng.standard_normal(n) * 0.2 * env).astype(np.float32)


def test_live_motion_is_the_same_whatever_the_push_sizes(tiny):
  model = live.live_model(tiny.engine)
  ref = np.zeros(tiny.engine.motion_dim, np.float32)
  audio = _speechlike(1.3)
  whole = live.live_motion(model, ref, audio)
  assert whole.shape == (audio.size // SAMPLES_PER_FRAME, tiny.engine.motion_dim)
  assert np.all(np.isfinite(whole)) and np.ptp(whole, 0).max() > 0
  rng = np.random.default_rng(1)
  for chunks in ([320] * 70, [1] * 2000 + [7] * 100, [641, 1277, 3, 9973],
                 list(rng.integers(1, 4000, 20))):
    np.testing.assert_array_equal(live.live_motion(model, ref, audio, chunks=chunks), whole)
  # a different seed is different motion (the comparison above could not pass by accident)
  other = live.live_motion(model, ref, audio, opts=an.SampleOptions(seed=5))
  assert not np.array_equal(other, whole)


def test_a_block_runs_once_its_audio_is_in_and_hears_nothing_later(tiny):
  model = live.live_model(tiny.engine)
  ref = np.zeros(tiny.engine.motion_dim, np.float32)
  opts = an.SampleOptions(audio_lead=0.0)
  audio = _speechlike(1.0)
  lm = live.LiveMotion(model, ref, opts)
  need = lm.ready_at_sample(0)
  assert need == SAMPLES_PER_FRAME * model.window     # block + look-ahead frames, no more
  assert lm.push(audio[:need - 1]) == []
  (start, first), = lm.push(audio[need - 1:need])
  assert start == 0 and first.shape[0] == model.block
  # causality: audio after block 3's look-ahead changes nothing up to block 3
  cut = live.LiveMotion(model, ref, opts).ready_at_sample(3)
  changed = audio.copy()
  changed[cut:] = _speechlike(1.0, seed=9)[cut:]
  a = live.live_motion(model, ref, audio, opts)
  b = live.live_motion(model, ref, changed, opts)
  k = 4 * model.block
  np.testing.assert_array_equal(a[:k], b[:k])
  assert not np.array_equal(a[k:], b[k:])


def test_the_session_renders_every_frame_in_order_with_the_generators_motion(tiny):
  audio = _speechlike(1.1, seed=3)
  s = tiny.live(PORTRAIT, seed=2)
  assert s.compile_s > 0
  rng = np.random.default_rng(4)
  pos = 0
  while pos < audio.size:                       # pushes of any size, some at 48 kHz
    n = int(rng.integers(50, 3000))
    s.push(audio[pos:pos + n])
    pos += n
  s.close()
  frames = list(s.frames(timeout=120))
  n = audio.size // SAMPLES_PER_FRAME
  assert [f.index for f in frames] == list(range(n))
  assert all(f.audio_time_s == pytest.approx((f.index + 0.5) / 25) for f in frames)
  assert all(f.image.dtype == np.uint8 and f.image.shape == frames[0].image.shape
             for f in frames)
  assert all(f.due_at - f.arrived_at == pytest.approx(s.delay_s) for f in frames)
  opts = an.SampleOptions(seed=2, blink_rate=live.DEFAULT_BLINK_RATE)
  model = live.live_model(tiny.engine)
  ref_motion = live.live_motion(model, s.portrait.motion, audio, opts,
                                mouth_base=s.motion.post.mouth_base)
  np.testing.assert_array_equal(np.stack([f.motion for f in frames]), ref_motion)
  np.testing.assert_array_equal(s.audio(), audio)


def test_controls_change_mid_session_without_a_jump(tiny):
  model = live.live_model(tiny.engine)
  eng = tiny.engine
  ref = np.zeros(eng.motion_dim, np.float32)
  audio = _speechlike(2.0, seed=5)
  lm = live.LiveMotion(model, ref, an.SampleOptions())
  half = audio.size // 2
  before = np.concatenate([m for _, m in lm.push(audio[:half])])
  lm.set(emotion="happy")
  after = np.concatenate([m for _, m in lm.push(audio[half:])] + [m for _, m in lm.finish()])
  offset = eng.emotion_offsets[an.EMOTIONS.index("happy")]
  plain = live.live_motion(model, ref, audio)
  assert np.array_equal(before, plain[:len(before)])        # nothing changed before the set
  diff = (after - plain[len(before):])[:, 6:]
  # the offset eases in over EMOTION_RAMP frames, then holds: no step of more than 1/12
  from vasa_jax.engine import EMOTION_RAMP
  share = diff @ offset / (offset @ offset)
  assert share[0] == pytest.approx(1 / EMOTION_RAMP, abs=0.02)
  np.testing.assert_allclose(share[EMOTION_RAMP - 1:], 1.0, atol=0.02)
  assert np.max(np.diff(share)) <= 1 / EMOTION_RAMP + 0.02
  with pytest.raises(an.AnimateError, match="fixed"):
    lm.set(seed=3)
  with pytest.raises(an.AnimateError, match="emotion"):
    lm.set(emotion="bored")


def test_stream_resampler_is_the_same_whatever_the_chunks_and_keeps_the_pitch():
  t = np.arange(48000) / 48000
  tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  whole = live.StreamResampler(48000)(tone)
  rs = live.StreamResampler(48000)
  parts, pos, rng = [], 0, np.random.default_rng(0)
  while pos < tone.size:
    n = int(rng.integers(1, 2000))
    parts.append(rs(tone[pos:pos + n]))
    pos += n
  np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
  assert abs(whole.size - 16000) <= 1
  spec = np.abs(np.fft.rfft(whole[2000:14000]))
  assert np.argmax(spec) * 16000 / 12000 == pytest.approx(440, abs=3)
  assert np.max(np.abs(whole[2000:])) == pytest.approx(0.5, abs=0.03)
  # above 8 kHz is filtered out, not folded back into the speech band
  alias = live.StreamResampler(48000)((0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32))
  assert np.max(np.abs(alias[2000:])) < 0.02


def test_a_bundle_keeps_its_live_generator_and_one_without_is_one_line(
    tiny, geo_tiny_bundle, geo_tiny_live_bundle, tmp_path):
  from vasa_jax.train import export
  b = bundle_lib.load(geo_tiny_live_bundle)
  assert b.live_config is not None and int(b.live_config.live.block) == 2
  # export keeps the stage-2 bundle's live generator (stage 1 and its part bank: the demo's)
  out = export.export(bundle_lib.default_dir(), geo_tiny_live_bundle, str(tmp_path / "again"))
  again = bundle_lib.load(out["bundle"])
  for x, y in zip(*(bundle_lib.jax.tree_util.tree_leaves(p)
                    for p in (b.live_params, again.live_params))):
    np.testing.assert_array_equal(x, y)
  with pytest.raises(an.AnimateError, match="no live generator"):
    an.Animator(geo_tiny_bundle).live(PORTRAIT)
  bad = b.live_config.copy_and_resolve_references()
  with bad.unlocked():
    bad.live.block = bad.model.window
  with pytest.raises(bundle_lib.BundleError, match="live.block"):
    bundle_lib.check_live(b.motion_dit_config, bad, b.live_params)


def _run_cli(args, *, stdin=None, env=None, timeout=300):
  return subprocess.run([sys.executable, "-m", "vasa_jax", *args], input=stdin,
                        capture_output=True, timeout=timeout, env=env, cwd=REPO)


def test_live_from_stdin_writes_a_watermarked_mp4_with_every_frame(geo_tiny_live_bundle,
                                                                   tmp_path):
  from vasa_jax import media
  from vasa_jax import provenance
  audio = _speechlike(1.5, seed=7)
  pcm = (audio * 32767).astype("<i2").tobytes()
  out = tmp_path / "live.mp4"
  r = _run_cli(["live", "--image", PORTRAIT, "--audio", "-", "--out", str(out),
                "--checkpoint", geo_tiny_live_bundle], stdin=pcm)
  assert r.returncode == 0, r.stderr.decode()[-2000:]
  summary = json.loads(r.stdout)
  n = audio.size // SAMPLES_PER_FRAME
  assert summary["frames"] == n
  assert len(media.read_video(str(out))) == n
  detection, meta_ok, _ = provenance.verify(str(out))
  assert detection.present and meta_ok
  heard = media.load_audio(str(out))              # the session's audio is muxed in
  assert abs(heard.size - audio.size) < 0.05 * audio.size
  assert not [p for p in os.listdir(tmp_path) if p != "live.mp4"]     # no partials left


def _fake_sounddevice(folder, body):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "sounddevice.py"), "w") as f:
    f.write(body)


@pytest.mark.parametrize("body,line", [
    ("raise OSError('PortAudio library not found')\n", "needs PortAudio"),
    ("class PortAudioError(Exception):\n  pass\n"
     "def query_devices(device=None, kind=None):\n  raise PortAudioError('Error querying device -1')\n",
     "no audio input device found"),
])
def test_no_microphone_is_one_line(geo_tiny_live_bundle, tmp_path, body, line):
  fake = tmp_path / "fake"
  _fake_sounddevice(str(fake), body)
  env = dict(os.environ, PYTHONPATH=f"{fake}{os.pathsep}{REPO}")
  env.pop("DISPLAY", None)
  r = _run_cli(["live", "--image", PORTRAIT, "--out", str(tmp_path / "x.mp4"),
                "--checkpoint", geo_tiny_live_bundle], env=env)
  err = r.stderr.decode().strip().splitlines()
  assert r.returncode == 2 and len(err) == 1 and line in err[0], err
  assert not os.path.exists(tmp_path / "x.mp4")


def test_live_cli_refuses_what_it_cannot_do(geo_tiny_live_bundle, tmp_path):
  env = dict(os.environ)
  env.pop("DISPLAY", None)
  for args, line in (
      (["--pace"], "--pace plays a file"),
      (["--audio", PORTRAIT + ".nope", "--out", str(tmp_path / "a.mp4")], "file not found"),
      (["--audio", "-"], "nowhere to show"),
      (["--audio", "-", "--out", str(tmp_path / "a.mkv")], "must be an .mp4"),
      (["--audio", "-", "--show"], "needs a display")):
    r = _run_cli(["live", "--image", PORTRAIT, "--checkpoint", geo_tiny_live_bundle, *args],
                 stdin=b"", env=env)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and line in err[0], (args, err)


def test_the_live_generator_trains_on_windows_featurised_as_the_session_does(tmp_path):
  """Training batches carry the audio before the context (data.audio_left), and the window's
  and context's features come from one stretch [left | context | window], which is what a live
  block computes; a live-shaped tiny run trains."""
  import jax.numpy as jnp

  from conftest import ListSource, fast_tiny_config, make_fake_motion_records
  from vasa_jax import audio as audio_lib
  from vasa_jax.data import records
  from vasa_jax.models import motion_dit as md
  from vasa_jax.train import motion_dit as trainer
  recs = make_fake_motion_records(n_clips=4, frames=25, motion_dim=50, identities=2)
  source = ListSource(recs)
  config = fast_tiny_config("motion_dit", {
      "motion_source": "dataset", "model.dyn_dim": 44, "data.stats_batches": 2,
      "model.window": 3, "live.block": 2, "data.audio_left": 2, "steps": 2})
  batch = next(iter(trainer.make_loader(config, source, 4, frames=False)))
  k, w, left = 2, 3, 2
  for i in range(4):
    t0 = int(batch["start"][i])
    clip = next(r for r in recs if np.array_equal(
        records.audio_to_float(r["audio"])[t0 * 640:(t0 + w) * 640], batch["audio"][i]))
    a = records.audio_to_float(clip["audio"])
    lo = (t0 - k - left) * 640
    idx = lo + np.arange(left * 640)
    ok = (idx >= 0) & (idx < a.size)
    want = np.where(ok, a[np.clip(idx, 0, a.size - 1)], 0.0).astype(np.float32)
    np.testing.assert_array_equal(batch["left_audio"][i], want)
  feats = lambda x: audio_lib.log_mel(x)
  tb = md.batch_from_pipeline(
      batch, lambda b: (jnp.asarray(b["motion"]), jnp.asarray(b["prev_motion"])), feats)
  whole = feats(np.concatenate([batch["left_audio"], batch["prev_audio"], batch["audio"]], -1))
  np.testing.assert_array_equal(tb["audio"], whole[:, left + k:])
  np.testing.assert_array_equal(tb["prev_audio"], whole[:, left:left + k])
  out = trainer.train_and_evaluate(config, str(tmp_path / "live"), source=source)
  assert np.isfinite(out["loss/loss"])


@pytest.mark.parametrize("level", [0.0, 1e-3])
def test_silence_gives_a_listening_face(level):
  """The bundled live generator on 20 s of silence (digital zeros, and -60 dBFS noise): the eyes
  blink (vasa_jax.live.BlinkKeeper keeps them at the asked rate), the mouth stays near the
  portrait's own lips in 95% of frames (within a tenth of how far speech opens it), the head
  still moves a little."""
  from vasa_jax.data.pipeline import blink_onsets
  anim = an.Animator()
  if anim.engine.bundle.live_config is None:
    pytest.skip("the bundled weights carry no live generator")
  model = live.live_model(anim.engine)
  eng = anim.engine
  ref = anim.prepare_portrait(PORTRAIT).motion                 # the bundled portrait
  audio = (np.random.default_rng(0).standard_normal(16000 * 20) * level).astype(np.float32)
  opts = an.SampleOptions(blink_rate=live.DEFAULT_BLINK_RATE)
  motion = live.live_motion(model, ref, audio, opts)
  assert len(blink_onsets(motion)) >= 2
  basis = eng.basis
  k = basis.exp_dim
  a = basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1]      # inner-lip gap per code
  gap = motion[:, 6:6 + k] @ a
  speech = media_speech()
  talk = live.live_motion(model, ref, speech, opts)[:, 6:6 + k] @ a
  # the mouth during silence stays within a tenth of the speech's opening of the closed lips
  closed = ref[6:6 + k] @ a
  spread = np.percentile(talk, 90) - closed
  assert spread > 0
  assert np.mean(gap - closed <= 0.1 * spread + 1e-6) >= 0.95
  assert np.degrees(motion[:, :3]).std(0).max() > 0.2


def media_speech():
  from vasa_jax import media
  return media.load_audio(os.path.join(REPO, "vasa_jax", "assets", "examples", "speech.flac"))

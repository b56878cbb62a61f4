"""vasa_jax.Animator, bundles and `vasa-jax animate` with tiny (untrained) configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_stage_config
from vasa_jax import animate as an
from vasa_jax import bundle as bundle_lib
from vasa_jax import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(ROOT, "vasa_jax", "assets", "examples", "portrait.jpg")
SPEECH = os.path.join(ROOT, "vasa_jax", "assets", "examples", "speech.flac")


@pytest.fixture(scope="module")
def tiny_bundle(geo_tiny_bundle):
  return geo_tiny_bundle


@pytest.fixture(scope="module")
def animator(tiny_bundle):
  return an.Animator(tiny_bundle, render_batch=4)


def _speech(seconds=1.3, sr=22050):
  t = np.arange(int(seconds * sr)) / sr
  env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
  return (0.3 * env * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr


def test_bundle_roundtrip_float16(tmp_path, tiny_bundle):
  b = bundle_lib.load(tiny_bundle)
  assert b.meta["format"] == bundle_lib.FORMAT

  def save(name, dtype):
    return bundle_lib.save(str(tmp_path / name), face_latent_config=b.face_latent_config,
                           face_latent_params=b.face_latent_params,
                           motion_dit_config=b.motion_dit_config,
                           motion_dit_params=b.motion_dit_params, motion_stats=b.motion_stats,
                           face_basis=b.face_basis, dtype=dtype)
  full, half = save("full", "float32"), save("half", "float16")
  h = bundle_lib.load(half)
  a = np.concatenate([np.ravel(x) for x in __import__("jax").tree_util.tree_leaves(b.face_latent_params)])
  c = np.concatenate([np.ravel(x) for x in __import__("jax").tree_util.tree_leaves(h.face_latent_params)])
  assert c.dtype == np.float32 and np.allclose(a, c, atol=2e-3 * (1 + np.abs(a)).max())
  for f in (bundle_lib.FACE_FILE, bundle_lib.DIT_FILE):     # the weights: half the bytes
    assert os.path.getsize(os.path.join(half, f)) < 0.6 * os.path.getsize(os.path.join(full, f))


def test_animate_api(animator):
  audio, sr = _speech()
  res = animator.animate(PORTRAIT, (audio, sr), steps=2, seed=3)
  n = int(round(len(audio) / sr * 25))
  assert res.frames.dtype == np.uint8 and res.frames.shape[0] == n
  h, w = 512, 512   # pasted back into the (512 px) photo
  assert res.frames.shape[1:] == (h, w, 3) and res.fps == 25
  assert res.audio.shape[0] == int(round(len(audio) * 16000 / sr))
  # Outside the crop box the photo is untouched; inside it the render was blended in.
  from vasa_jax import media
  photo = media.load_image(PORTRAIT)
  x0, y0, side = animator.prepare_portrait(PORTRAIT).box
  mask = np.ones(photo.shape[:2], bool)
  mask[max(y0, 0):y0 + side, max(x0, 0):x0 + side] = False
  assert mask.any()
  np.testing.assert_array_equal(res.frames[0][mask], photo[mask])
  cy, cx = y0 + side // 2, x0 + side // 2
  assert np.abs(res.frames[0][cy - 5:cy + 5, cx - 5:cx + 5].astype(int)
                - photo[cy - 5:cy + 5, cx - 5:cx + 5]).mean() > 1
  # Deterministic for a seed; another seed gives other motion.
  again = animator.animate(PORTRAIT, (audio, sr), steps=2, seed=3)
  np.testing.assert_array_equal(again.frames, res.frames)
  crop = animator.animate(PORTRAIT, (audio, sr), steps=2, seed=3, crop_only=True)
  assert crop.frames.shape[1:] == (side, side, 3)          # the crop at the photo's resolution


def test_stream_matches_animate_and_reports_latency(animator):
  audio, sr = _speech(seconds=1.0)
  stats = {}
  chunks = list(animator.stream(PORTRAIT, (audio, sr), steps=2, seed=5, crop_only=True,
                                stats=stats))
  whole = animator.animate(PORTRAIT, (audio, sr), steps=2, seed=5, crop_only=True)
  np.testing.assert_array_equal(np.concatenate(chunks), whole.frames)
  assert len(chunks) > 1 and stats["frames"] == whole.frames.shape[0]
  assert 0 < stats["first_frame_s"]


def test_portrait_from_aligned_crop_skips_detection(animator):
  """An already aligned face crop is the output frame (no detection, no paste-back); a crop
  that is not square, or shows no face, is refused in one line."""
  from vasa_jax import media
  from vasa_jax.data.video import crop_square
  photo = media.load_image(PORTRAIT)
  box = animator.prepare_portrait(PORTRAIT).box
  crop = crop_square(photo, box, animator.size)
  p = animator.portrait_from_crop(crop)
  assert p.crop.shape == (animator.size, animator.size, 3) and p.image is None
  assert p.motion.shape == (animator.motion_dim,) and np.isfinite(p.motion).all()
  audio, sr = _speech(seconds=1.0)
  frames = animator.animate(p, (audio, sr), steps=2).frames
  assert frames.shape == (25, animator.size, animator.size, 3)
  with pytest.raises(an.AnimateError, match="square"):
    animator.portrait_from_crop(crop[:, :-5])
  noise = np.random.default_rng(0).integers(0, 255, crop.shape, np.uint8)
  with pytest.raises(an.AnimateError, match="face"):
    animator.portrait_from_crop(noise)


def test_controls_change_motion(animator):
  portrait = animator.prepare_portrait(PORTRAIT)
  audio = an._load_audio(_speech(seconds=0.5))

  def motion(**kw):
    return np.concatenate([m for _, m in animator.motion_windows(portrait, audio, steps=2,
                                                                 seed=0, **kw)])
  base = motion()
  assert base.shape == (int(round(0.5 * 25)), animator.motion_dim)
  assert not np.allclose(base, motion(emotion="happy"))
  assert not np.allclose(base, motion(gaze=(10, -5)))


@pytest.mark.parametrize("kw,msg", [
    (dict(emotion="furious"), "unknown emotion"),
    (dict(gaze=(90, 0)), "gaze"),
    (dict(distance=5.0), "distance"),
    (dict(steps=0), "steps"),
])
def test_bad_controls(animator, kw, msg):
  with pytest.raises(an.AnimateError, match=msg):
    animator.animate(PORTRAIT, _speech(0.3), **kw)


def test_bad_inputs(animator, tmp_path):
  with pytest.raises(an.AnimateError, match="silent"):
    animator.animate(PORTRAIT, (np.zeros(16000, np.float32), 16000))
  with pytest.raises(an.AnimateError, match="no face"):
    animator.animate(np.full((200, 200, 3), 128, np.uint8), _speech(0.3))
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  with pytest.raises(an.AnimateError, match="cannot read image"):
    animator.animate(str(bad), _speech(0.3))
  with pytest.raises(an.AnimateError, match="not found"):
    animator.animate(str(tmp_path / "missing.png"), _speech(0.3))
  short = an.Animator(bundle=bundle_lib.load(animator.checkpoint), max_seconds=0.2)
  with pytest.raises(an.AnimateError, match="limit"):
    short.animate(PORTRAIT, _speech(0.5))
  with pytest.raises(an.AnimateError, match="not found"):
    an.Animator(str(tmp_path / "nope"))
  with pytest.raises(an.AnimateError, match="not a vasa-jax bundle"):
    an.Animator(str(tmp_path))


def test_incompatible_bundle(tmp_path, tiny_bundle):
  b = bundle_lib.load(tiny_bundle)
  cfg = b.face_latent_config
  cfg.model.mouth.widths = tuple(2 * w for w in cfg.model.mouth.widths)   # params no longer fit
  path = bundle_lib.save(str(tmp_path / "bad"), face_latent_config=cfg,
                         face_latent_params=b.face_latent_params,
                         motion_dit_config=b.motion_dit_config,
                         motion_dit_params=b.motion_dit_params, motion_stats=b.motion_stats,
                         face_basis=b.face_basis)
  with pytest.raises(an.AnimateError, match="shape|do not match"):
    an.Animator(path)


def test_rgba_grey_exif_images(animator, tmp_path):
  from PIL import Image
  img = Image.open(PORTRAIT)
  rgba = img.convert("RGBA")
  rgba.save(tmp_path / "p.png")
  img.convert("L").save(tmp_path / "g.png")
  rot = img.rotate(90, expand=True)
  exif = Image.Exif()
  exif[0x0112] = 6    # "rotate 90 CW to view": undoes PIL's counter-clockwise rotation above
  rot.save(tmp_path / "r.jpg", exif=exif)
  boxes = [animator.prepare_portrait(str(tmp_path / n)).box for n in ("p.png", "g.png", "r.jpg")]
  ref = animator.prepare_portrait(PORTRAIT).box
  for b in boxes:
    tol = 0.1 * ref[2]   # the detector sees other pixels (grey, re-encoded): ~same box
    assert abs(b[0] - ref[0]) < tol and abs(b[1] - ref[1]) < tol and abs(b[2] - ref[2]) < tol, (b, ref)


def _cli(*args, env=None):
  return subprocess.run([sys.executable, "-m", "vasa_jax", *args], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=600)


def test_cli_animate_writes_watermarked_video(tmp_path, tiny_bundle):
  import soundfile as sf
  audio, sr = _speech(seconds=1.2, sr=44100)
  wav = tmp_path / "s.wav"
  sf.write(wav, np.stack([audio, audio], -1), sr)     # stereo 44.1 kHz in
  out = tmp_path / "o.mp4"
  r = _cli("animate", "--image", PORTRAIT, "--audio", str(wav), "--out", str(out),
           "--checkpoint", tiny_bundle, "--steps", "2", "--stream", "--emotion", "happy",
           "--gaze", "5,0", "--distance", "0.7")
  assert r.returncode == 0, r.stderr
  info = json.loads(r.stdout)
  # streamed: the first frames came out before the whole video was done
  assert info["frames"] == 30 and 0 < info["first_frame_s"] < info["wall_s"]
  from vasa_jax import media
  frames = media.read_video(str(out))
  assert frames.shape[0] == 30
  det, meta_ok, _ = provenance.verify(str(out))
  assert det.present and meta_ok
  # bad input: one line, exit 2, nothing written
  bad = tmp_path / "b.mp4"
  r = _cli("animate", "--image", str(tmp_path / "none.jpg"), "--audio", str(wav), "--out",
           str(bad), "--checkpoint", tiny_bundle)
  assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not found" in r.stderr
  silent = tmp_path / "silent.wav"
  sf.write(silent, np.zeros(8000, np.float32), 16000)
  r = _cli("animate", "--image", PORTRAIT, "--audio", str(silent), "--out", str(bad),
           "--checkpoint", tiny_bundle)
  assert r.returncode == 2 and "silent" in r.stderr and r.stderr.strip().count("\n") == 0
  assert not bad.exists() and not [p for p in os.listdir(tmp_path) if ".partial" in p]
  r = _cli("animate", "--image", PORTRAIT, "--audio", str(wav), "--out", str(bad),
           "--checkpoint", str(tmp_path))
  assert r.returncode == 2 and "bundle" in r.stderr


def test_batch_pairs():
  assert an.pairs(["a"], ["x", "y"]) == [("a", "x"), ("a", "y")]
  assert an.pairs(["a", "b"], ["x", "y"]) == [("a", "x"), ("b", "y")]
  with pytest.raises(an.AnimateError):
    an.pairs(["a", "b"], ["x", "y", "z"])


def test_feather_and_paste_back():
  m = an.feather_mask(40)
  assert m.shape == (40, 40) and m[20, 20] == 1 and m[0, 0] < 0.05 and np.all(np.diff(m[20, :20]) >= 0)
  img = np.zeros((30, 30, 3), np.uint8)
  crops = np.full((2, 8, 8, 3), 200, np.uint8)
  out = an.paste_back(img, crops, (-5, 20, 16), an.feather_mask(16))   # box leaves the image
  assert out.shape == (2, 30, 30, 3) and out[:, :20].max() == 0 and out[0, 27, 5].max() > 150


def test_a_learned_flow_bundle_is_refused_in_one_line(tmp_path, tiny_bundle):
  """The learned-flow stage 1 is retired: a bundle of it loads (its files are intact) but
  the engine refuses it with one line that says what to do."""
  b = bundle_lib.load(tiny_bundle)
  fl = load_stage_config("face_latent").get_config("geo_tiny")
  with fl.unlocked():
    del fl.model["kind"]                     # a config without a kind is a learned-flow one
  old = bundle_lib.Bundle(face_latent_config=fl, face_latent_params={},
                          motion_dit_config=b.motion_dit_config,
                          motion_dit_params=b.motion_dit_params, motion_stats=b.motion_stats,
                          path=str(tmp_path))
  with pytest.raises(an.AnimateError, match="learned-flow .* retired") as e:
    an.Animator(bundle=old)
  assert len(str(e.value).splitlines()) == 1


def test_bundled_demo_weights_animate():
  """The bundled demo bundle is the geometry-grounded one (face basis, 6 + 44 motion) and
  animates the bundled example: the mouth opens and closes on the output itself, measured by the
  face mesh, and the photo's own pixels outside the face stay as they are."""
  from vasa_jax.geometry import landmarks as lm
  assert os.path.isfile(os.path.join(bundle_lib.default_dir(), bundle_lib.META_FILE))
  assert os.path.isfile(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))
  anim = an.Animator()
  assert anim.kind == "geometry" and anim.motion_dim == 50
  audio = media_load(SPEECH)[:16000 * 2]         # 2 s
  res = anim.animate(PORTRAIT, (audio, 16000), steps=4, seed=0, crop_only=True)
  # crop-only output is the face crop at the photo's own resolution (at least the field size)
  t, h, w, _ = res.frames.shape
  assert t == 50 and h == w >= 256
  tracked = list(lm.FaceMesh().track(res.frames, smooth=False))
  assert sum(g is not None for g in tracked) >= 48
  p = np.stack([g.points for g in tracked if g is not None])
  iod = np.linalg.norm(p[:, 263, :2] - p[:, 33, :2], axis=-1)
  gap = (p[:, 14, 1] - p[:, 13, 1]) / iod
  assert gap.max() - gap.min() > 0.03            # the lips part and close with the speech
  corner = res.frames[:, :h // 12, :w // 12].astype(np.float32)
  assert np.abs(corner - corner[0]).mean() < 2.0  # the crop's corner (background) holds still


def media_load(path):
  from vasa_jax import media
  return media.load_audio(path)


def _with_stage2_overrides(tmp_path, tiny_bundle, overrides):
  """An Animator of the tiny bundle's weights with its stage-2 config trained as
  `vasa-jax train --config configs/motion_dit.py:tiny OVERRIDES` would record it."""
  from vasa_jax import config_utils
  md = config_utils.load_config(os.path.join(ROOT, "configs", "motion_dit.py") + ":tiny",
                                ["--config.model.dyn_dim=44"] + list(overrides))
  b = bundle_lib.load(tiny_bundle)
  path = str(tmp_path / "overridden")
  bundle_lib.save(path, face_latent_config=b.face_latent_config,
                  face_latent_params=b.face_latent_params, motion_dit_config=md,
                  motion_dit_params=b.motion_dit_params, motion_stats=b.motion_stats,
                  face_basis=b.face_basis)
  return an.Animator(path, render_batch=4)


def test_the_training_diffusion_schedule_reaches_the_sampler(tmp_path, tiny_bundle, animator):
  """`--config.diffusion.*` of a stage-2 run travels in its bundle and is what the Animator's
  sampler denoises along: the same weights and seed give other motion under another schedule."""
  from vasa_jax import diffusion
  b = bundle_lib.load(tiny_bundle)
  other = _with_stage2_overrides(tmp_path, tiny_bundle, ["--config.diffusion.logsnr_max=6.0",
                                                         "--config.diffusion.logsnr_min=-6.0"])
  assert other.schedule == diffusion.CosineSchedule(-6.0, 6.0)
  assert animator.schedule == diffusion.schedule_from_config(b.motion_dit_config)
  assert animator.schedule != other.schedule
  audio, sr = _speech(seconds=1.0)
  audio = np.interp(np.arange(16000) / 16000, np.arange(len(audio)) / sr, audio).astype(np.float32)

  def motion(anim):
    portrait = anim.prepare_portrait(PORTRAIT)
    return np.concatenate([m for _, m in anim.motion_windows(portrait, audio, steps=3, seed=0)])
  ours, theirs = motion(animator), motion(other)
  assert ours.shape == theirs.shape and np.abs(ours - theirs).max() > 1e-3
  np.testing.assert_allclose(motion(animator), ours, atol=1e-6)      # deterministic per seed


def test_the_bundles_sampler_defaults_are_what_a_call_leaves_out(tmp_path, tiny_bundle, animator):
  """A stage-2 run's `sampler` block travels in its bundle (Bundle.sampler) and is what
  inference uses for the settings a call does not give: steps from the bundle == the same
  steps given; an explicit value overrides the bundle's."""
  other = _with_stage2_overrides(tmp_path, tiny_bundle, ["--config.sampler.steps=2",
                                                         "--config.sampler.cfg_audio=1.5"])
  assert other.sampler == bundle_lib.SamplerDefaults(steps=2, eta=0.0, cfg_audio=1.5,
                                                     cfg_gaze=1.0)
  assert animator.sampler.steps == 25            # configs/motion_dit.py's default
  audio = np.interp(np.arange(16000) / 16000, *(lambda a, sr: (np.arange(len(a)) / sr, a))(
      *_speech(seconds=1.0))).astype(np.float32)
  portrait = other.prepare_portrait(PORTRAIT)

  def motion(**kw):
    return np.concatenate([m for _, m in other.motion_windows(portrait, audio, **kw)])
  default = motion()
  np.testing.assert_allclose(default, motion(steps=2, cfg_audio=1.5), atol=1e-6)
  assert np.abs(default - motion(steps=3, cfg_audio=1.5)).max() > 1e-3
  assert np.abs(default - motion(steps=2, cfg_audio=0.0)).max() > 1e-3


def test_the_engine_works_without_the_animator(tiny_bundle, animator):
  """The engine's functions (encode a portrait, sample motion, render frames) give what the
  Animator facade gives, and bad options are refused by name before any work."""
  from vasa_jax import engine, portrait as portrait_lib
  eng = engine.Engine(bundle_lib.load(tiny_bundle))
  faces = portrait_lib.FaceTools()
  p = portrait_lib.encode(eng, PORTRAIT, faces, crop_only=True)
  q = animator.prepare_portrait(PORTRAIT, crop_only=True)
  np.testing.assert_array_equal(p.crop, q.crop)
  np.testing.assert_allclose(p.motion, q.motion, atol=1e-6)
  audio = np.interp(np.arange(12000) / 16000, *(lambda a, sr: (np.arange(len(a)) / sr, a))(
      *_speech(seconds=1.0))).astype(np.float32)
  opts = engine.SampleOptions(steps=2, seed=4, gaze=(5.0, -3.0))
  ours = np.concatenate([m for _, m in engine.sample_motion(eng, p.motion, audio, opts)])
  theirs = np.concatenate([m for _, m in animator.motion_windows(q, audio, steps=2, seed=4,
                                                                 gaze=(5.0, -3.0))])
  np.testing.assert_allclose(ours, theirs, atol=1e-5)
  frames = np.concatenate(list(eng.renderer.render(p, ours[:5])))
  np.testing.assert_array_equal(frames, np.concatenate(list(animator.render_motion(q, ours[:5]))))
  assert frames.shape == (5,) + p.full_crop.shape if p.full_crop is not None else \
      (5,) + p.crop.shape
  for bad, match in ((dict(steps=0), "steps"), (dict(cfg_audio=11), "cfg_audio"),
                     (dict(head_motion=-1), "head_motion"), (dict(gaze=(90, 0)), "gaze"),
                     (dict(emotion="bored"), "emotion")):
    with pytest.raises(an.AnimateError, match=match):
      next(engine.sample_motion(eng, p.motion, audio, engine.SampleOptions(**bad)))
  with pytest.raises(TypeError, match="unexpected"):
    animator.animate(PORTRAIT, audio, stepz=2)


def test_audio_lead_conditions_each_frame_on_later_audio():
  """lead_audio(a, k) advances the audio by k frames (fractions in samples), keeping its
  length; the sampler refuses a lead outside 0-MAX_AUDIO_LEAD with one line."""
  from vasa_jax import engine as engine_lib
  a = np.arange(640 * 10, dtype=np.float32)
  led = engine_lib.lead_audio(a, 2)
  assert led.shape == a.shape and led[0] == 1280 and led[-1] == 0 and led[640 * 8 - 1] == a[-1]
  assert engine_lib.lead_audio(a, 0.5)[0] == 320
  np.testing.assert_array_equal(engine_lib.lead_audio(a, 0), a)
  defaults = bundle_lib.SamplerDefaults(audio_lead=0.5)
  assert engine_lib.SampleOptions().resolved(defaults).audio_lead == 0.5
  assert engine_lib.SampleOptions(audio_lead=1.0).resolved(defaults).audio_lead == 1.0
  for bad in (-1.0, engine_lib.MAX_AUDIO_LEAD + 1, float("nan")):
    with pytest.raises(engine_lib.AnimateError, match="audio_lead"):
      engine_lib.SampleOptions(audio_lead=bad).resolved(defaults)

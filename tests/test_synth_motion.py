"""Motion scripts: visemes, co-articulation, blinks, gaze, head pose."""

import numpy as np
import pytest

from vasa_jax.synth import motion, sentences, speech
from vasa_jax.synth.speech import Phone

FPS = 25
DEG = np.pi / 180


def _frames_in(phones, symbols, T, margin=0.0):
  """Frame indices whose centre lies inside a phone with a symbol in `symbols`."""
  tc = (np.arange(T) + 0.5) / FPS
  out = []
  for p in phones:
    if p.symbol.lstrip("',") in symbols:
      out += list(np.flatnonzero((tc >= p.start + margin) & (tc < p.end - margin)))
  return sorted(set(out))


def test_bilabials_close_the_mouth():
  s = speech.synthesize("map mom pop bob", rate=140)
  T = int(np.ceil(len(s.audio) / 640)) + 5
  m = motion.mouth_track(s.phones, T)
  assert m.shape == (T, 3) and m.dtype == np.float32
  closed = _frames_in(s.phones, {"p", "b", "m"}, T)
  vowels = _frames_in(s.phones, {"a", "0", "A:", "aa", "A"}, T, margin=0.03)
  assert len(closed) >= 6 and len(vowels) >= 4
  assert m[closed, 0].max() < 0.06, m[closed, 0]
  assert m[vowels, 0].mean() > 0.5
  assert np.all((m >= 0) & (m <= 1))


def test_synthetic_phones_visemes():
  ph = [Phone(0.2, 0.3, "m"), Phone(0.3, 0.5, "'a"), Phone(0.5, 0.6, "p"),
        Phone(0.6, 0.8, "i:"), Phone(0.8, 0.9, "w"), Phone(0.9, 1.1, "u:"), Phone(1.1, 2.0, "_:")]
  m = motion.mouth_track(ph, 60)
  f = lambda t: int(t * FPS)
  assert m[f(0.4), 0] > 0.6                       # open vowel
  assert m[f(0.7), 1] > 0.5 and m[f(0.7), 2] < 0.2  # ee: wide, not round
  assert m[f(1.0), 2] > 0.6 and m[f(1.0), 1] < 0.2  # oo: round
  assert m[f(1.6):, 0].max() < 0.02               # pause: closed
  # unknown / other-language mnemonics fall back sensibly
  for sym in ("E~", "a:", "l^", "**", "o@", "Y", "@-", "zz", "ts'"):
    seq = motion.viseme_sequence(sym)
    assert seq and abs(sum(f for _, f in seq) - 1) < 1e-6


def test_silence_keeps_mouth_closed():
  empty = speech.Speech(audio=np.zeros(16000, np.float32), phones=[], words=[], text="", voice="")
  tr = motion.make_tracks(empty, 25, motion.sample_controls(np.random.default_rng(0)),
                          np.random.default_rng(0))
  assert np.abs(tr["mouth"]).max() < 1e-3
  assert np.abs(tr["energy"]).max() == 0
  # frames after the end of speech are closed too
  s = speech.synthesize("Good.")
  T = int(len(s.audio) / 640) + 30
  m = motion.mouth_track(s.phones, T)
  assert m[-20:, 0].max() < 0.01


@pytest.fixture(scope="module")
def clip():
  rng = np.random.default_rng(7)
  s = speech.synthesize(sentences.make_script(rng, 10), **speech.random_voice(rng))
  T = int(len(s.audio) / 640) + 10
  c = motion.sample_controls(rng)
  return s, T, c, motion.make_tracks(s, T, c, np.random.default_rng(1))


def test_track_shapes_and_ranges(clip):
  s, T, c, tr = clip
  shapes = {"pose": (T, 6), "gaze": (T, 2), "mouth": (T, 3), "blink": (T,),
            "emotion_intensity": (T,), "energy": (T,)}
  for k, shp in shapes.items():
    assert tr[k].shape == shp and tr[k].dtype == np.float32, k
    assert np.all(np.isfinite(tr[k]))
  pose = tr["pose"]
  assert np.abs(pose[:, 0]).max() <= 30 * DEG + 1e-6
  assert np.abs(pose[:, 1]).max() <= 20 * DEG + 1e-6
  assert np.abs(pose[:, 2]).max() <= 15 * DEG + 1e-6
  assert np.abs(pose[:, 3:5]).max() < 0.1
  assert np.abs(pose[:, 5] - c.distance).max() < 0.1
  assert tr["blink"].min() >= 0 and tr["blink"].max() <= 1
  assert tr["emotion_intensity"].min() >= 0 and tr["emotion_intensity"].max() <= 1


def test_mouth_follows_energy(clip):
  _, _, _, tr = clip
  r = np.corrcoef(tr["mouth"][:, 0], tr["energy"])[0, 1]
  assert r > 0.5, r


def test_energy_is_frame_rms():
  a = np.zeros(16000, np.float32)
  a[640 * 3:640 * 4] = 0.5
  e = motion.frame_energy(a, 30)
  assert e.shape == (30,) and abs(e[3] - 0.5) < 1e-6 and e[2] == 0 and e[4] == 0 and e[-1] == 0


def test_blinks_realistic():
  T = 60 * FPS
  counts, lengths = [], []
  for seed in range(5):
    b = motion.blink_track(np.random.default_rng(seed), T) > 0.5
    d = np.diff(np.concatenate([[0], b.astype(int), [0]]))
    on, off = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    counts.append(len(on))
    lengths += list(off - on)
  assert all(8 <= n <= 32 for n in counts), counts   # 2-6 s apart, some doubles
  lengths = np.array(lengths)
  assert lengths.min() >= 1 and lengths.max() <= 6   # 150-300 ms blinks at 25 fps
  assert np.mean(lengths) <= 4


def test_gaze_mean_near_control():
  rng = np.random.default_rng(3)
  s = speech.Speech(audio=np.zeros(16000 * 20, np.float32), phones=[], words=[], text="", voice="")
  for i in range(5):
    c = motion.sample_controls(rng)
    g = motion.make_tracks(s, 500, c, np.random.default_rng(i))["gaze"]
    assert np.abs(g.mean(0) - np.array(c.gaze)).max() < 4 * DEG
    # saccades: some frame-to-frame jumps much larger than the drift
    assert np.abs(np.diff(g, axis=0)).max() > 1 * DEG


def test_head_moves_more_while_speaking():
  s = speech.synthesize(sentences.make_script(np.random.default_rng(0), 12))
  T = int(len(s.audio) / 640)
  quiet = speech.Speech(audio=np.zeros_like(s.audio), phones=[], words=[], text="", voice="")
  c = motion.ClipControls(gaze=(0.0, 0.0), distance=0.7, emotion=0, emotion_intensity=0.0)
  hf = lambda x: np.abs(np.diff(x[:, :3], axis=0)).mean()
  def motion_amount(sp):
    return np.mean([hf(motion.make_tracks(sp, T, c, np.random.default_rng(i))["pose"])
                    for i in range(6)])
  talk, still = motion_amount(s), motion_amount(quiet)
  assert talk > 1.2 * still, (talk, still)


def test_pose_statistics():
  s = speech.synthesize(sentences.make_script(np.random.default_rng(1), 10))
  T = int(len(s.audio) / 640)
  rng = np.random.default_rng(5)
  P = np.concatenate([motion.make_tracks(s, T, motion.sample_controls(rng), rng)["pose"]
                      for _ in range(12)])
  std = P[:, :3].std(0) / DEG
  assert 2.5 < std[0] < 10 and 1.5 < std[1] < 7 and 1 < std[2] < 5, std
  assert np.abs(P[:, :3].mean(0)).max() < 5 * DEG


def test_determinism_and_controls():
  s = speech.synthesize("Same seed, same motion.")
  T = 40
  c1 = motion.sample_controls(np.random.default_rng(11))
  c2 = motion.sample_controls(np.random.default_rng(11))
  assert c1 == c2
  a = motion.make_tracks(s, T, c1, np.random.default_rng(2))
  b = motion.make_tracks(s, T, c2, np.random.default_rng(2))
  for k in a:
    assert np.array_equal(a[k], b[k]), k
  cs = [motion.sample_controls(np.random.default_rng(i)) for i in range(400)]
  near = np.mean([np.hypot(*c.gaze) <= 5 * DEG for c in cs])
  assert 0.5 < near < 0.7
  assert max(np.abs(c.gaze).max() for c in cs) <= 25 * DEG + 1e-9
  neutral = np.mean([c.emotion == 0 for c in cs])
  assert 0.3 < neutral < 0.5
  assert all(0.5 <= c.distance <= 0.9 for c in cs)
  assert all(c.emotion_intensity == 0 for c in cs if c.emotion == 0)

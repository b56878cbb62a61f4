"""The trained evaluator SyncNet-style Sync-C / Sync-D (`vasa_jax.eval.syncnet`) and the
two-tower harness it shares (`vasa_jax.eval.contrastive`)."""

import pathlib

import numpy as np
import pytest

from vasa_jax.eval import contrastive, meshsync, syncnet

EXAMPLE = pathlib.Path(__file__).parent / "data" / "eval_example.npz"


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- syncnet

@pytest.mark.parametrize("lag", [4, -3, 0])
def test_offset_curve_sign(lag):
  """Video window t shows audio window t - lag (the video lags by `lag`): offset == lag."""
  rng = np.random.default_rng(0)
  a = _unit(rng.normal(size=(60, 16)))
  v = np.roll(a, lag, axis=0)              # v[t] = a[t - lag]
  offsets, dists = syncnet.offset_curve(v, a, max_offset=6)
  s = syncnet.sync_scores(offsets, dists)
  assert s["offset"] == lag
  assert s["sync_d"] < 1e-9
  assert s["sync_c"] > 1.0                   # random unit vectors are ~sqrt(2) apart
  assert s["offsets"] == list(range(-6, 7)) and len(s["dists"]) == 13
  with pytest.raises(ValueError, match="too short"):
    syncnet.offset_curve(v[:10], a[:10], max_offset=6)


def test_score_wiring_sign(monkeypatch):
  """score() pairs video frame t + k with audio frame t: a stub model that embeds a per-frame
  code finds a video delayed by 3 frames at offset +3 and audio delayed by 2 at offset -2."""
  rng = np.random.default_rng(1)
  t, d = 80, 64
  codes = rng.integers(0, d, size=t + 10)

  def make(video_lag, audio_lag):
    frames = np.zeros((t, 8, 8, 3), np.uint8)
    frames[:, 0, 0, 0] = codes[10 - video_lag:10 - video_lag + t]
    audio = np.repeat(codes[10 - audio_lag:10 - audio_lag + t], 640).astype(np.float32)
    return frames, audio

  ev = syncnet.SyncEvaluator({}, syncnet.Config())     # every model call is stubbed below
  onehot = lambda c: np.eye(d)[np.asarray(c, int)]  # noqa: E731
  monkeypatch.setattr(ev, "video_features", lambda f: np.asarray(f)[:, 0, 0, 0])
  monkeypatch.setattr(ev, "embed_video", lambda c: onehot(c[:len(c) - 4]))
  monkeypatch.setattr(syncnet, "audio_features", lambda a, cfg: np.asarray(a)[::640])
  monkeypatch.setattr(ev, "embed_audio", lambda c: onehot(c[:len(c) - 4]))
  assert ev.score(*make(3, 0), max_offset=5)["offset"] == 3
  assert ev.score(*make(0, 2), max_offset=5)["offset"] == -2
  assert ev.score(*make(0, 0), max_offset=5)["offset"] == 0


def test_log_mel_matches_audio_module():
  from vasa_jax import audio as audio_lib
  x = np.random.default_rng(2).normal(size=640 * 7 + 100).astype(np.float32) * 0.1
  ours = contrastive.log_mel(x, n_mels=40, per_frame=4)
  ref = np.asarray(audio_lib.log_mel(x, n_mels=40, frames_per_video_frame=4))
  assert ours.shape == (7, 4, 40)
  np.testing.assert_allclose(ours.reshape(7, 160), ref, atol=2e-3)


def test_syncnet_roundtrip_and_score(tmp_path):
  cfg = syncnet.Config()
  params = syncnet.init_params(cfg, seed=3)
  syncnet.save(str(tmp_path / "w"), params, cfg, {"training": {"steps": 0}})
  ev = syncnet.load(str(tmp_path / "w"))
  assert ev.cfg == cfg and ev.meta["training"]["steps"] == 0
  for a, b in zip(*(map(np.asarray, __import__("jax").tree_util.tree_leaves(p))
                    for p in (params, ev.params))):
    np.testing.assert_array_equal(a, b)
  rng = np.random.default_rng(3)
  frames = rng.integers(0, 255, size=(30, 96, 96, 3), dtype=np.uint8)   # any crop size
  audio = rng.normal(size=30 * 640).astype(np.float32) * 0.1
  s = ev.score(frames, audio, max_offset=4)
  assert set(s) >= {"sync_d", "sync_c", "offset", "offsets", "dists"}
  assert len(s["dists"]) == 9 and s["windows"] == 30 - 4 - 8
  assert np.all(np.isfinite(s["dists"])) and 0.0 <= s["sync_d"] <= 2.0
  assert s["sync_c"] >= 0.0 and -4 <= s["offset"] <= 4
  short = ev.score(frames[:12], audio, max_offset=15)      # searches the offsets it allows
  assert short["max_offset"] == 3 and len(short["dists"]) == 7
  with pytest.raises(ValueError, match="too short"):
    ev.score(frames[:6], audio)
  with pytest.raises(contrastive.EvaluatorError):
    meshsync.load(str(tmp_path / "w"))      # a syncnet folder is not a mesh-sync folder


def test_mouth_crops_any_size():
  cfg = syncnet.Config()
  for s in (64, 256):
    f = np.zeros((2, s, s, 3), np.uint8)
    f[:, int(0.7 * s), :] = 255               # a bright line through the mouth region
    c = syncnet.mouth_crops(f, cfg)
    assert c.shape == (2, cfg.crop[0] + 2 * cfg.margin, cfg.crop[1] + 2 * cfg.margin)
    assert c.max() > 30                       # the line falls inside the crop


# ----------------------------------------------------------------------------- bundled weights

@pytest.mark.skipif(not EXAMPLE.is_file(), reason="tests/data/eval_example.npz missing")
def test_bundled_syncnet_on_example():
  """The shipped weights: on a held-out synthetic clip (tests/data/README.md), in-sync audio is
  found at offset 0 and audio delayed by 10 frames at -10 (a regression check of the bundled
  weights and the feature path; population figures are in docs/evaluators/syncnet.json)."""
  ev = syncnet.load()
  z = np.load(EXAMPLE)
  video = syncnet.centre(syncnet.normalise_crops(z["mouth"]), ev.cfg)
  audio = z["audio"].astype(np.float32) / 32767.0
  v = ev.embed_video(video)
  delayed = np.concatenate([np.zeros(6400, np.float32), audio])[:len(audio)]
  m = syncnet.sync_scores(*syncnet.offset_curve(
      v, ev.embed_audio(syncnet.audio_features(audio, ev.cfg)), 15))
  s = syncnet.sync_scores(*syncnet.offset_curve(
      v, ev.embed_audio(syncnet.audio_features(delayed, ev.cfg)), 15))
  assert abs(m["offset"]) <= 1
  assert abs(s["offset"] + 10) <= 1
  assert m["dists"][15] < s["dists"][15]             # distance at offset 0


def test_syncnet_train_learns_toy_timing():
  """syncnet.train (vasa_jax/train/loop.py underneath): mouth crops whose brightness is the
  audio's loudness at the same frame. Within a clip's group of windows, the matching audio
  window is found far above chance after a short fit, and the time budget stops a long one."""
  cfg = syncnet.Config(embed_dim=16, video_widths=(8, 16), audio_widths=(8, 16), hidden=16,
                       n_mels=8)
  rng = np.random.default_rng(0)
  h, w, m = cfg.crop[0] + 2 * cfg.margin, cfg.crop[1] + 2 * cfg.margin, cfg.margin
  loud = (rng.random(2000) < 0.5).astype(np.float32)
  video = np.repeat(np.repeat(loud[:, None, None], h, 1), w, 2).astype(np.float16) * 2 - 1
  mel = np.repeat(np.repeat(loud[:, None, None], cfg.mel_per_frame, 1), cfg.n_mels, 2)
  mel = (mel * 2 - 1).astype(np.float16)
  starts = np.arange(0, 2001, 100)
  cs = syncnet.ClipSet(video=video, mel=mel, starts=starts, ids=[str(i) for i in range(20)])
  params, info = syncnet.train([cs], [1.0], cfg, steps=150, clips=4, group=6, lr=3e-3,
                               log_every=50)
  assert info["steps"] == 150 and [r["step"] for r in info["history"]] == [50, 100, 150]
  assert info["history"][-1]["acc"] > 0.6, info["history"]          # chance: 1/6
  assert info["history"][-1]["loss"] < info["history"][0]["loss"]
  _, short = syncnet.train([cs], [1.0], cfg, steps=10_000, clips=4, group=6, max_seconds=0.5)
  assert short["steps"] < 10_000


# ----------------------------------------------------------------------------- meshsync

def _speech_like(t_frames: int, seed: int):
  """(audio 16 kHz [t * 640], per-frame mouth opening [t]): syllable-rate bursts of noise at
  random times; the mouth opens while a burst sounds."""
  rng = np.random.default_rng(seed)
  on = np.zeros(t_frames)
  i = 0
  while i < t_frames:
    i += int(rng.integers(1, 6))
    n = int(rng.integers(2, 6))
    on[i:i + n] = rng.uniform(0.5, 1.0)
    i += n
  env = np.repeat(on, 640)
  audio = (env * rng.normal(0, 0.2, len(env)) * np.sin(np.arange(len(env)) * 0.3)).astype(np.float32)
  return audio, on


def _canonical_mouth(opening: np.ndarray, seed: int = 0) -> np.ndarray:
  """Canonical meshes [T, 478, 3] (eye corners 1 apart) whose jaw, lower lip and inner lower lip
  drop by `opening` x 0.08 (plus a little noise)."""
  from vasa_jax.eval import meshsync
  rng = np.random.default_rng(seed)
  t = len(opening)
  base = rng.normal(0, 0.3, (478, 3))
  base[33], base[263] = (-0.5, 0, 0), (0.5, 0, 0)
  p = np.tile(base, (t, 1, 1)) + rng.normal(0, 0.0003, (t, 478, 3))
  for i in meshsync.INNER_LIP[10:] + meshsync.OUTER_LIP[10:] + meshsync.CHIN:
    p[:, i, 1] += 0.08 * opening
  return p


def test_mesh_lip_features_measure_the_mouth_not_the_face():
  """A still mouth gives ~0 features whatever the face; an opening mouth moves the gap
  measures, and the features do not depend on the face's size."""
  from vasa_jax.eval import meshsync
  still = meshsync.lip_features(_canonical_mouth(np.zeros(30)))
  assert still.shape == (30, meshsync.NUM_MEASURES) and np.abs(still).max() < 0.5
  open_ = np.sin(np.arange(30) / 3) ** 2
  moving = meshsync.mouth_measures(_canonical_mouth(open_))
  assert np.corrcoef(moving[:, 0], open_)[0, 1] > 0.99          # inner gap follows the opening
  big = meshsync.lip_features(2.0 * _canonical_mouth(open_))
  np.testing.assert_allclose(big, meshsync.lip_features(_canonical_mouth(open_)), atol=1e-4)
  with pytest.raises(ValueError, match="canonical"):
    meshsync.lip_features(np.zeros((10, 20, 3)))


def test_meshsync_learns_timing_and_reads_the_offset_sign(tmp_path):
  """A small mesh sync model trained on mouths that open with the sound finds a held-out
  clip in sync at offset 0, and a mouth delayed by 4 frames at +4 (the mouth lags); saved
  and reloaded, it scores the same."""
  from vasa_jax.eval import meshsync
  cfg = meshsync.Config(window=5, mesh_widths=(32, 32), audio_widths=(32, 32), hidden=64,
                        embed_dim=32)
  mesh, mel, starts = [], [], [0]
  for s in range(24):
    audio, on = _speech_like(120, s)
    mesh.append(meshsync.lip_features(_canonical_mouth(on, s)))
    mel.append(meshsync.audio_features(audio, cfg))
    starts.append(starts[-1] + 120)
  cs = meshsync.ClipSet(np.concatenate(mesh), np.concatenate(mel), np.array(starts),
                        [str(i) for i in range(24)], [str(i) for i in range(24)])
  params, info = meshsync.train([cs], [1.0], cfg, steps=250, clips=8, lr=3e-3, seed=0)
  assert info["steps"] == 250
  meshsync.save(str(tmp_path / "w"), params, cfg, {"training": info})
  ev = meshsync.load(str(tmp_path / "w"))
  audio, on = _speech_like(150, 99)                            # a clip not trained on
  canon = _canonical_mouth(on, 99)
  late = _canonical_mouth(np.concatenate([np.zeros(4), on[:-4]]), 99)
  s0, s4 = ev.score(canon, audio, max_offset=8), ev.score(late, audio, max_offset=8)
  # (the untrained model reads -1 and 3, with a confidence of 0.03)
  assert s0["offset"] == 0 and s4["offset"] == 4 and min(s0["sync_c"], s4["sync_c"]) > 0.3
  with pytest.raises(ValueError, match="too short"):
    ev.score(canon[:6], audio)

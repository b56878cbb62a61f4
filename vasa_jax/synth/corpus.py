"""Synthetic talking-head clips: identity + espeak-ng speech + motion script -> rendered frames.

A clip is fully determined by (corpus seed, clip index, clips per identity, seconds, size).
Everything here is NumPy/numba on the CPU and never imports JAX, so it can run in worker
processes next to a training job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Iterator

import numpy as np

from vasa_jax.synth import head as head_lib
from vasa_jax.synth import motion as motion_lib
from vasa_jax.synth import render as render_lib
from vasa_jax.synth import sentences as sentences_lib
from vasa_jax.synth import speech as speech_lib
from vasa_jax.workers import default_workers, pool

from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402
from vasa_jax.errors import InputError


@dataclasses.dataclass
class SynthClip:
  frames: np.ndarray            # uint8 [T, S, S, 3]
  audio: np.ndarray             # float32 [T * 640], 16 kHz mono
  tracks: dict[str, np.ndarray]  # per-frame ground truth (docs/conventions.md)
  controls: dict                # clip-level controls: gaze, distance, emotion, emotion_intensity
  identity: str
  clip_id: str
  meta: dict                    # text, voice, phones, seeds


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """Where one clip comes from: enough to re-create it bit for bit."""
  corpus_seed: int
  index: int
  clips_per_identity: int = 1

  @property
  def identity_number(self) -> int:
    return self.index // self.clips_per_identity

  @property
  def identity(self) -> str:
    return f"synth-s{self.corpus_seed}-id{self.identity_number:06d}"

  @property
  def clip_id(self) -> str:
    return f"synth-s{self.corpus_seed}-c{self.index:06d}"

  def identity_rng(self) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([self.corpus_seed, self.identity_number, 1]))

  def clip_rng(self) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([self.corpus_seed, self.index, 2]))


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
  audio = np.asarray(audio, np.float32)[:n]
  return np.pad(audio, (0, n - audio.shape[0]))


def make_clip(spec: ClipSpec, *, seconds: float, size: int) -> SynthClip:
  """Renders one clip. Same spec, seconds and size -> identical output."""
  id_rng = spec.identity_rng()
  identity = head_lib.sample_identity(id_rng)
  voice = speech_lib.random_voice(id_rng)           # a person keeps one voice
  rng = spec.clip_rng()
  t = int(round(seconds * FPS))
  n = t * SAMPLES_PER_FRAME
  text = sentences_lib.make_script(rng, seconds)
  speech = speech_lib.synthesize(text, **voice)
  # Leave a short lead-in of silence some of the time, as real clips have.
  lead = int(rng.integers(0, 8)) * SAMPLES_PER_FRAME if rng.random() < 0.5 else 0
  if lead:
    speech = dataclasses.replace(
        speech, audio=np.concatenate([np.zeros(lead, np.float32), speech.audio]),
        phones=[dataclasses.replace(p, start=p.start + lead / SAMPLE_RATE, end=p.end + lead / SAMPLE_RATE)
                for p in speech.phones],
        words=[(a + lead / SAMPLE_RATE, b + lead / SAMPLE_RATE, w) for a, b, w in speech.words])
  speech = dataclasses.replace(speech, audio=_fit_length(speech.audio, n))
  controls = motion_lib.sample_controls(rng)
  tracks = motion_lib.make_tracks(speech, t, controls, rng, fps=FPS)

  renderer = render_lib.HeadRenderer(identity, size=size)
  frames = np.empty((t, size, size, 3), np.uint8)
  rendered_gaze = np.empty((t, 2), np.float32)
  for i in range(t):
    yaw, pitch, roll, tx, ty, tz = (float(v) for v in tracks["pose"][i])
    p = head_lib.FrameParams(
        yaw=yaw, pitch=pitch, roll=roll, tx=tx, ty=ty, tz=tz,
        gaze_theta=float(tracks["gaze"][i, 0]), gaze_phi=float(tracks["gaze"][i, 1]),
        mouth_open=float(tracks["mouth"][i, 0]), mouth_wide=float(tracks["mouth"][i, 1]),
        mouth_round=float(tracks["mouth"][i, 2]), blink=float(tracks["blink"][i]),
        emotion=int(controls.emotion), emotion_intensity=float(tracks["emotion_intensity"][i]))
    frames[i] = renderer.render(p)
    rendered_gaze[i] = renderer.rendered_gaze(p)
  tracks = {k: np.asarray(v, np.float32) for k, v in tracks.items()}
  tracks["gaze"] = rendered_gaze
  ctrl = {
      "gaze": tuple(float(g) for g in controls.gaze),
      "distance": float(controls.distance),
      "emotion": int(controls.emotion),
      "emotion_name": head_lib.EMOTIONS[int(controls.emotion)],
      "emotion_intensity": float(controls.emotion_intensity),
  }
  meta = {
      "text": speech.text, "voice": voice, "corpus_seed": spec.corpus_seed, "index": spec.index,
      "clips_per_identity": spec.clips_per_identity, "seconds": seconds, "size": size,
      "phones": [(round(p.start, 4), round(p.end, 4), p.symbol) for p in speech.phones],
      "words": [(round(a, 4), round(b, 4), w) for a, b, w in speech.words],
  }
  return SynthClip(frames=frames, audio=speech.audio, tracks=tracks, controls=ctrl,
                   identity=spec.identity, clip_id=spec.clip_id, meta=meta)


# ----------------------------------------------------------------------------- writing

def write_clip(clip: SynthClip, out_dir: str, name: str | None = None) -> dict[str, str]:
  """Writes <name>.mp4 (H.264 25 fps + AAC), <name>.npz (ground truth) and <name>.json."""
  from vasa_jax import media
  name = name or clip.clip_id
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f"{name}.{k}") for k in ("mp4", "npz", "json")}
  media.write_video(paths["mp4"], clip.frames, fps=FPS, audio=clip.audio, sample_rate=SAMPLE_RATE,
                    metadata={"comment": "synthetic: vasa-jax procedural talking head"})
  with media.atomic_output(paths["npz"]) as tmp:
    with open(tmp, "wb") as f:
      np.savez_compressed(
          f, **clip.tracks, control_gaze=np.asarray(clip.controls["gaze"], np.float32),
          control_distance=np.float32(clip.controls["distance"]),
          control_emotion=np.int32(clip.controls["emotion"]),
          control_emotion_intensity=np.float32(clip.controls["emotion_intensity"]))
  with media.atomic_output(paths["json"]) as tmp:
    with open(tmp, "w") as f:
      json.dump({"clip_id": clip.clip_id, "identity": clip.identity, "controls": clip.controls,
                 "fps": FPS, "num_frames": int(clip.frames.shape[0]),
                 "tracks": {k: list(v.shape) for k, v in clip.tracks.items()}, **clip.meta}, f, indent=1)
  return paths


def _make_and_write(args) -> dict:
  spec, seconds, size, out_dir = args
  t0 = time.perf_counter()
  clip = make_clip(spec, seconds=seconds, size=size)
  paths = write_clip(clip, out_dir, name=f"clip_{spec.index:05d}")
  mouth_corr = _mouth_energy_corr(clip)
  return {"index": spec.index, "clip_id": clip.clip_id, "identity": clip.identity, **paths,
          "seconds": time.perf_counter() - t0, "mouth_energy_corr": mouth_corr}


def _mouth_energy_corr(clip: SynthClip) -> float:
  energy = np.sqrt(np.mean(clip.audio.reshape(-1, SAMPLES_PER_FRAME) ** 2, axis=1))
  m = clip.tracks["mouth"][:, 0]
  if energy.std() < 1e-8 or m.std() < 1e-8:
    return float("nan")
  return float(np.corrcoef(energy, m)[0, 1])


def build_corpus(out_dir: str, *, clips: int, seconds: float, size: int, seed: int = 0,
                 clips_per_identity: int = 1, workers: int | None = None,
                 progress: Callable[[dict], None] | None = None) -> list[dict]:
  """Writes `clips` clips to out_dir using all cores; returns one summary dict per clip."""
  if clips < 1:
    raise InputError("--clips must be at least 1")
  if seconds <= 0:
    raise InputError("--seconds must be positive")
  if size < 32 or size > 2048:
    raise InputError("--size must be between 32 and 2048 pixels")
  os.makedirs(out_dir, exist_ok=True)
  specs = [ClipSpec(seed, i, clips_per_identity) for i in range(clips)]
  jobs = [(s, seconds, size, out_dir) for s in specs]
  workers = workers or default_workers()
  results = []
  if workers == 1:
    it: Iterator[dict] = map(_make_and_write, jobs)
    for r in it:
      results.append(r)
      if progress:
        progress(r)
  else:
    with pool(workers) as ex:
      for r in ex.map(_make_and_write, jobs, chunksize=1):
        results.append(r)
        if progress:
          progress(r)
  from vasa_jax import media
  with media.atomic_output(os.path.join(out_dir, "index.json")) as tmp:
    with open(tmp, "w") as f:
      json.dump({"seed": seed, "seconds": seconds, "size": size, "fps": FPS,
                 "clips_per_identity": clips_per_identity, "clips": results}, f, indent=1)
  return results

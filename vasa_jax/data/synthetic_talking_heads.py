"""TFDS builder `synthetic_talking_heads`: procedurally rendered talking heads with ground truth.

Every clip is a new rendering of vasa_jax.synth (3D head, espeak-ng speech, motion script), so
the dataset is built from nothing but a seed. Splits are identity-disjoint. Written as
array_record; read with `tfds.data_source` (no TensorFlow needed) and grain.

    vasa_jax.data.register_builders()
    b = tfds.builder("synthetic_talking_heads/r256_n1000", data_dir=DIR)   # or:
    b = SyntheticTalkingHeads(config=SyntheticConfig(name="mine", size=128, clips=64), data_dir=DIR)
    b.download_and_prepare()
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from vasa_jax.data import records
from vasa_jax.workers import default_workers, pool
from vasa_jax.errors import InputError


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  size: int = 256             # frame side in pixels
  clips: int = 1000           # clips in both splits together
  seconds: float = 4.0        # clip length
  seed: int = 0               # corpus seed: identities, voices, text, motion
  clips_per_identity: int = 2  # several clips of one person (other speech, controls, motion)
  test_fraction: float = 0.1  # fraction of identities held out for `test`
  jpeg_quality: int = 92


def _config(size, clips, seconds=4.0, **kw):
  return SyntheticConfig(
      name=f"r{size}_n{clips}", size=size, clips=clips, seconds=seconds,
      description=f"{clips} clips of {seconds:g} s at {size}x{size}", **kw)


class SyntheticTalkingHeads(tfds.core.GeneratorBasedBuilder):
  """Synthetic talking-head clips with per-frame pose, gaze, mouth, blink and emotion labels."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      SyntheticConfig(name="tiny", size=64, clips=12, seconds=2.0, clips_per_identity=2,
                      test_fraction=0.34, description="12 clips of 2 s at 64x64 (tests)"),
      _config(128, 200),
      _config(128, 1000),
      _config(256, 1000),
      _config(256, 10000),
      _config(512, 1000),
  ]
  DEFAULT_CONFIG_NAME = "r256_n1000"

  def __init__(self, *, workers: int | None = None, **kwargs):
    self._workers = workers
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=records.features(self.builder_config.size),
        homepage="https://github.com/vasa-jax/vasa-jax",
    )

  def _split_generators(self, dl_manager):
    from vasa_jax.synth import corpus
    cfg = self.builder_config
    specs = [corpus.ClipSpec(cfg.seed, i, cfg.clips_per_identity) for i in range(cfg.clips)]
    test = [s for s in specs if records.is_test_number(s.identity_number, cfg.test_fraction)]
    train = [s for s in specs if not records.is_test_number(s.identity_number, cfg.test_fraction)]
    if not train or not test:
      raise InputError(
          f"config {cfg.name}: {cfg.clips} clips give an empty split (train {len(train)}, "
          f"test {len(test)}); use more clips or another test_fraction")
    return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

  def _generate_examples(self, specs):
    from vasa_jax.synth import corpus
    cfg = self.builder_config
    workers = self._workers or default_workers()
    jobs = [(s, cfg.seconds, cfg.size, cfg.jpeg_quality) for s in specs]
    if workers == 1:
      for key, rec in map(_make_record, jobs):
        yield key, rec
      return
    with pool(workers) as ex:
      for key, rec in ex.map(_make_record, jobs, chunksize=1):
        yield key, rec


def _make_record(job):
  from vasa_jax.synth import corpus
  spec, seconds, size, quality = job
  clip = corpus.make_clip(spec, seconds=seconds, size=size)
  controls = {k: clip.controls[k] for k in ("gaze", "distance", "emotion", "emotion_intensity")}
  tracks = {k: v for k, v in clip.tracks.items() if k in records.TRACKS}
  rec = records.make_record(frames=clip.frames, audio=clip.audio, clip_id=clip.clip_id,
                            identity=clip.identity, source="synthetic", tracks=tracks,
                            controls=controls, jpeg_quality=quality)
  return clip.clip_id, rec

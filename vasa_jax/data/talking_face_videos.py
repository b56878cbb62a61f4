"""TFDS builder `talking_face_videos`: a folder of real talking-head videos, as they come.

Point `manual_dir` at a VoxCeleb2 / HDTF / CelebV-HQ style folder (nested or flat, any
resolution, fps or codec, audio in the container or in a sibling file with the same stem).
Each video is resampled to 25 fps and 16 kHz mono, the face is detected and tracked, every
continuous single-face segment gets one stable square crop, and segments are cut into clips.
Videos or segments that cannot be used are skipped with a reason: the build logs each skip and
writes them all to `skipped.tsv` in the dataset folder. Identities come from a table with file and
identity columns (`identity_map=` / `--identity-map`, or `identities.tsv`, `identities.csv` or
`INVENTORY.tsv` found in manual_dir), else from the folder layout; the same table may pair silent
videos with a separate audio file (`audio` column or `paired audio: ...` notes). Splits are
identity-disjoint.

    vasa-jax data build talking_face_videos/r256 --manual-dir /data/voxceleb2/dev/mp4 --data-dir DIR
"""

from __future__ import annotations

import dataclasses
import logging
import os

import tensorflow_datasets as tfds

from vasa_jax.data import records
from vasa_jax.workers import default_workers, pool
from vasa_jax.errors import InputError

log = logging.getLogger(__name__)

IDENTITY_FILES = ("identities.tsv", "identities.csv", "INVENTORY.tsv")


@dataclasses.dataclass
class VideosConfig(tfds.core.BuilderConfig):
  size: int = 256
  min_seconds: float = 2.0
  max_seconds: float = 10.0
  crop_scale: float = 1.8
  test_fraction: float = 0.1   # 0: everything goes to `train` (no `test` split)
  jpeg_quality: int = 92


class TalkingFaceVideos(tfds.core.GeneratorBasedBuilder):
  """Real talking-face clips cropped to a stable square around the face."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the videos (any nesting; VoxCeleb2 id*/video/*.mp4, HDTF or CelebV-HQ flat folders) "
      "in manual_dir. Optional identities.tsv with columns file, identity.")
  BUILDER_CONFIGS = [
      VideosConfig(name="r64", size=64, min_seconds=1.0, description="64x64 crops (tests)"),
      VideosConfig(name="r128", size=128, description="128x128 crops"),
      VideosConfig(name="r256", size=256, description="256x256 crops"),
      VideosConfig(name="r512", size=512, description="512x512 crops"),
  ]
  DEFAULT_CONFIG_NAME = "r256"

  def __init__(self, *, workers: int | None = None, identity_map: str | None = None,
               max_videos: int | None = None, **kwargs):
    self._workers = workers
    self._identity_map_path = identity_map
    self._max_videos = max_videos
    self.skipped: list[tuple[str, str]] = []
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, features=records.features(self.builder_config.size))

  def _split_generators(self, dl_manager):
    from vasa_jax.data import video
    root = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"manual_dir is not a readable folder: {root}")
    identity_map = audio_map = None
    path = self._identity_map_path
    if path is None:
      for name in IDENTITY_FILES:
        if os.path.isfile(os.path.join(root, name)):
          path = os.path.join(root, name)
          break
    if path is not None:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"identity map not found: {path}")
      identity_map = video.read_identity_map(path)
      # The same table may pair silent videos with a separate speech file (audio column, or
      # INVENTORY.tsv's "paired audio: ..." notes).
      audio_map = video.read_audio_map(path) or None
    files = video.find_videos(root, identity_map=identity_map, audio_map=audio_map)
    if self._max_videos:
      files = files[: self._max_videos]
    if not files:
      raise InputError(f"no video files found under {root}")
    cfg = self.builder_config
    test = [f for f in files if records.is_test_identity(f.identity, cfg.test_fraction)]
    train = [f for f in files if not records.is_test_identity(f.identity, cfg.test_fraction)]
    log.info("talking_face_videos: %d videos, %d identities (%d train videos, %d test videos)",
             len(files), len({f.identity for f in files}), len(train), len(test))
    splits = {"train": self._generate_examples(train, "train")}
    if cfg.test_fraction > 0:
      if not test or not train:
        raise InputError(
            f"{len(files)} videos of {len({f.identity for f in files})} identities cannot be split "
            f"identity-disjointly with test_fraction={cfg.test_fraction} (train {len(train)}, "
            f"test {len(test)} videos); add videos or use a config with test_fraction=0")
      splits["test"] = self._generate_examples(test, "test")
    return splits

  def _generate_examples(self, files, split):
    cfg = self.builder_config
    jobs = [(f, cfg) for f in files]
    workers = self._workers or default_workers()
    kept = 0
    if workers == 1 or len(jobs) <= 1:
      results = map(_process, jobs)
      for out in results:
        kept += yield from self._emit(out)
    else:
      with pool(workers) as ex:
        for out in ex.map(_process, jobs, chunksize=1):
          kept += yield from self._emit(out)
    self._write_skips()
    log.info("talking_face_videos[%s]: %d clips from %d videos, %d skips", split, kept,
             len(files), len(self.skipped))
    if kept == 0:
      raise InputError(f"split {split!r}: none of its {len(files)} videos gave a usable clip "
                       f"(reasons in {os.fspath(self.data_path)}/skipped.tsv)")

  def _emit(self, out):
    recs, skips = out
    for key, reason in skips:
      log.warning("skipped %s: %s", key, reason)
      self.skipped.append((key, reason))
    for key, rec in recs:
      yield key, rec
    return len(recs)

  def _write_skips(self):
    folder = os.fspath(self.data_path)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "skipped.tsv"), "w") as f:
      f.write("source\treason\n")
      for key, reason in self.skipped:
        f.write(f"{key}\t{reason}\n")


def _process(job):
  """Worker: one video file -> (records, skips). Never raises for bad media."""
  from vasa_jax.data import video
  vf, cfg = job
  skips = []
  try:
    clips = video.process_video(
        vf, size=cfg.size, clip_seconds=(cfg.min_seconds, cfg.max_seconds),
        crop_scale=cfg.crop_scale, on_skip=lambda v, reason: skips.append((v.key, reason)))
  except video.SkipClip as e:
    return [], skips + [(vf.key, getattr(e, "reason", str(e)))]
  except Exception as e:  # a broken file must never stop a build of thousands
    return [], skips + [(vf.key, f"unexpected error: {type(e).__name__}: {e}")]
  recs = []
  for i, clip in enumerate(clips):
    clip_id = f"{vf.key}#{i:03d}"
    recs.append((clip_id, records.make_record(
        frames=clip.frames, audio=clip.audio, clip_id=clip_id, identity=vf.identity,
        source=vf.key, jpeg_quality=cfg.jpeg_quality)))
  return recs, skips

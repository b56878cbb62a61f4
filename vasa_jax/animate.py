"""Portrait + speech -> talking video: `vasa_jax.Animator` and the `vasa-jax animate` command.

    from vasa_jax import Animator
    anim = Animator()                                   # the bundled demo weights
    result = anim.animate("portrait.jpg", "speech.wav", gaze=(0, 0), emotion="happy")
    result.save("out.mp4")                              # H.264 + AAC, watermarked
    for frames in anim.stream("portrait.jpg", "speech.wav"):
        ...                                             # uint8 [n, H, W, 3] as soon as ready

`Animator` is a facade over the inference engine; each step is a function of its own module:
  1. portrait (vasa_jax/portrait.py, once per photo): the face is found and cropped the way
     the training data was, and measured: the face mesh, its codes, warp topology; the
     renderer prepares what it keeps per photo.
  2. motion (vasa_jax/engine.py `sample_motion`): 16 kHz mono audio -> log-mel at 25 fps ->
     MotionDiT windows of W frames, each conditioned on the last K generated frames (the first
     on the portrait's own motion), multi-condition CFG, one jitted DDIM loop per window along
     the bundle's diffusion schedule; de-normalised with the bundle's statistics.
  3. frames (vasa_jax/renderers): each window rendered in fixed-size batches by the bundle's
     renderer (mesh or volume, the same motion for both) into the photo (or the crop only),
     yielded as ready.

Controls: gaze (theta, phi) in DEGREES (camera frame: +theta looks to the image's right... as in
docs/conventions.md), distance in metres (head to camera; 0.65 is the training average), emotion
one of configs/motion_dit.EMOTIONS. A control left as None is a dropped condition (the model
chooses). Every video written goes through `vasa_jax.provenance` (invisible watermark + metadata);
there is deliberately no switch to turn that off.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Iterator, Sequence

import numpy as np

from vasa_jax import audio as audio_lib
from vasa_jax import bundle as bundle_lib
from vasa_jax import engine as engine_lib
from vasa_jax import portrait as portrait_lib
from vasa_jax.renderers.volume import feather_mask, paste_back  # noqa: F401  (public)
from vasa_jax.constants import FPS, SAMPLE_RATE
from vasa_jax.engine import (  # noqa: F401  (public here too)
    BLINK_CFG, MAX_TURN_DEG, POSE_DIM, POSE_SMOOTHING, SEAM_TAU, SILENCE_PEAK, AnimateError,
    Engine, SampleOptions, join_seam, smooth_pose)
from vasa_jax.geometry.emotion import EMOTIONS  # noqa: F401  (= configs/motion_dit.EMOTIONS)
from vasa_jax.portrait import CROP_SCALE, CROP_SHIFT_UP, Portrait, crop_box  # noqa: F401

__all__ = ["Animator", "AnimationResult", "AnimateError", "Reenactor", "Portrait",
           "SampleOptions", "Engine", "pairs", "crop_box", "join_seam", "smooth_pose",
           "feather_mask", "paste_back", "EMOTIONS", "POSE_DIM", "MAX_TURN_DEG",
           "SEAM_TAU", "BLINK_CFG", "POSE_SMOOTHING", "SILENCE_PEAK", "CROP_SCALE",
           "CROP_SHIFT_UP"]

_load_audio = engine_lib.load_audio


@dataclasses.dataclass
class AnimationResult:
  """frames uint8 [T,H,W,3] at `fps`, the 16 kHz mono `audio` they were made for."""
  frames: np.ndarray
  fps: int
  audio: np.ndarray
  sample_rate: int = SAMPLE_RATE
  info: dict = dataclasses.field(default_factory=dict)

  def save(self, path: str) -> str:
    """H.264 mp4 at `fps` with the audio muxed (AAC), watermarked; written atomically."""
    from vasa_jax import provenance
    return provenance.write_watermarked_video(path, iter(self.frames), fps=self.fps,
                                              audio=self.audio, sample_rate=self.sample_rate)

  def __len__(self) -> int:
    return int(self.frames.shape[0])


def _driver_audio(video: str, frames: int | None):
  """The driving video's audio (16 kHz mono), cut to `frames` video frames; None if silent
  or absent."""
  from vasa_jax import media
  try:
    a = media.load_audio(video, SAMPLE_RATE)
  except media.MediaError:
    return None
  if frames is not None:
    n = frames * (SAMPLE_RATE // FPS)
    a = np.pad(a[:n], (0, max(0, n - a.shape[0])))
  return a if np.max(np.abs(a)) > SILENCE_PEAK else None


_SAMPLE_KEYS = tuple(f.name for f in dataclasses.fields(SampleOptions))


class Animator:
  """A facade over the inference engine (vasa_jax/engine.py, portrait.py, renderers/):
  loads a bundle (default: the bundled demo weights) and animates portraits with speech.

  The engine's networks are compiled once per Animator and reused across calls, so batch use
  over many portraits / audios pays the compilation once.

  max_seconds: longest audio accepted (longer audio is an error: split it). Frames are always
  produced window by window, so memory in `stream` / `save_stream` does not grow with length.
  max_output_side: pasted-back videos are downscaled so the longer side is at most this.
  Sampling settings a call leaves out (steps, cfg_audio, cfg_gaze, cfg_expression,
  audio_lead) are the bundle's sampler defaults (its stage-2 config's `sampler` block).
  """

  def __init__(self, checkpoint: str | None = None, *, bundle: "bundle_lib.Bundle | None" = None,
               max_seconds: float = 3600.0, max_output_side: int = 1280,
               render_batch: int = 8, face_detector=None):
    if bundle is None:
      try:
        bundle = bundle_lib.load(checkpoint)
      except bundle_lib.BundleError as e:
        raise AnimateError(str(e)) from None
    self.checkpoint = checkpoint or bundle.path or bundle_lib.default_dir()
    if bundle.path is None:
      bundle = dataclasses.replace(bundle, path=self.checkpoint)
    self.engine = Engine(bundle, render_batch=render_batch)
    self.max_seconds = float(max_seconds)
    self.max_output_side = int(max_output_side)
    self.faces = portrait_lib.FaceTools(face_detector)
    self.pose_smoothing = POSE_SMOOTHING
    self.blink_cfg = BLINK_CFG

  # -- what the bundle is: read-only views of the engine's fields
  _ENGINE_VIEWS = frozenset({"kind", "size", "window", "context", "motion_dim", "render_batch",
                             "fl_config", "md_config", "schedule", "sampler", "basis"})

  def __getattr__(self, name):
    if name in Animator._ENGINE_VIEWS and "engine" in self.__dict__:
      return getattr(self.engine, name)
    raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

  @property
  def renderer(self):
    """The bundle's renderer (vasa_jax.renderers): motion -> frames."""
    return self.engine.renderer

  @property
  def mesh(self):
    """The face mesh + iris landmark models (geometry bundles, reenactment)."""
    return self.faces.mesh

  @property
  def detector(self):
    return self.faces.detector

  @classmethod
  def from_configs(cls, face_latent_config, motion_dit_config, *, seed: int = 0,
                   motion_stats: dict | None = None, **kw) -> "Animator":
    """An Animator with freshly initialised (untrained) parameters of either stage-1 kind
    (tests, smoke runs); face_basis= is required."""
    import jax
    from flax import linen as nn

    from vasa_jax import renderers
    from vasa_jax.models import motion_dit as md
    rng = jax.random.PRNGKey(seed)
    kind = renderers.kind_of(face_latent_config.model)
    try:
      flp = renderers.renderer_class(kind).init_params(face_latent_config.model, rng)
    except renderers.RendererError as e:
      raise AnimateError(str(e)) from None
    basis = kw.pop("face_basis")
    mdp = nn.meta.unbox(md.MotionDiT(motion_dit_config.model).init(
        rng, *md.dummy_inputs(motion_dit_config.model, 1)))["params"]
    d = int(motion_dit_config.model.motion_dim)
    stats = motion_stats or {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)}
    return cls(bundle=bundle_lib.Bundle(
        face_latent_config=face_latent_config, face_latent_params=flp,
        motion_dit_config=motion_dit_config, motion_dit_params=mdp, motion_stats=stats,
        face_basis=basis, path="(untrained)"), **kw)

  # -- portrait
  def prepare_portrait(self, image, *, crop_only: bool = False) -> Portrait:
    """Detect, crop and encode a portrait (path, array or PIL image)."""
    return portrait_lib.encode(self.engine, image, self.faces, crop_only=crop_only,
                               max_output_side=self.max_output_side)

  def portrait_from_landmarks(self, crop: np.ndarray, points: np.ndarray) -> Portrait:
    """A crop-only Portrait of a geometry bundle from an aligned crop and its already measured
    landmarks (crop pixels), e.g. the first frame of a dataset clip (evaluation)."""
    return portrait_lib.from_landmarks(self.engine, crop, points)

  def portrait_from_crop(self, crop) -> Portrait:
    """A Portrait from an already aligned face crop (no detection; the output is the crop)."""
    return portrait_lib.from_crop(self.engine, crop, self.faces)

  # -- motion and frames
  def motion_windows(self, portrait: Portrait, audio_16k: np.ndarray, **options
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (start frame, de-normalised motion [n, 6 + dyn_dim]) window by window
    (engine.sample_motion; the options are SampleOptions' fields)."""
    opts = self._options(options)
    yield from engine_lib.sample_motion(self.engine, portrait.motion, audio_16k, opts,
                                        pose_smoothing=self.pose_smoothing,
                                        blink_cfg=self.blink_cfg,
                                        mouth_base=_mouth_base(portrait))

  def render_motion(self, portrait: Portrait, motion: np.ndarray) -> Iterator[np.ndarray]:
    """Frames (uint8 [n,H,W,3], pasted back unless crop-only) for motion [T, 6+dyn], in
    fixed-size batches (the last one padded) so the renderer compiles once."""
    yield from self.engine.renderer.render(portrait, np.asarray(motion, np.float32))

  @staticmethod
  def _options(options: dict) -> SampleOptions:
    unknown = set(options) - set(_SAMPLE_KEYS)
    if unknown:
      raise TypeError(f"unexpected arguments {sorted(unknown)}")
    return SampleOptions(**options)

  # -- public API
  def stream(self, image, audio, *, crop_only: bool = False, stats: dict | None = None,
             **options) -> Iterator[np.ndarray]:
    """Yields uint8 frame batches [n,H,W,3] as soon as each is rendered (25 fps overall).

    options: gaze, distance, emotion, cfg_audio, cfg_gaze, cfg_expression, audio_lead, steps,
    seed, head_motion, emotion_intensity, blink_rate (SampleOptions). If `stats` is a dict it receives
    first_frame_s (time from the call to the first yielded frames), frames, seconds, and
    faces_found and turned_deg (the quarter turns that stood the photo upright)."""
    yield from self._stream(image, engine_lib.load_audio(audio), crop_only=crop_only,
                            stats=stats, opts=self._options(options))

  def _stream(self, image, a: np.ndarray, *, crop_only: bool, stats: dict | None,
              opts: SampleOptions) -> Iterator[np.ndarray]:
    t0 = time.perf_counter()
    seconds = a.shape[0] / SAMPLE_RATE
    if seconds > self.max_seconds:
      raise AnimateError(f"the audio is {seconds:.0f} s long, more than the limit of "
                         f"{self.max_seconds:.0f} s (max_seconds / --max-seconds)")
    opts = opts.resolved(self.engine.sampler)      # bad options fail before any face work
    portrait = image if isinstance(image, Portrait) else self.prepare_portrait(
        image, crop_only=crop_only)
    self.engine.renderer.reset(portrait)     # a new video: its own choices over time
    if stats is not None:
      stats.update(faces_found=portrait.faces_found, turned_deg=portrait.turned,
                   seconds=seconds, frames=0)
    for _, motion in engine_lib.sample_motion(self.engine, portrait.motion, a, opts,
                                              pose_smoothing=self.pose_smoothing,
                                              blink_cfg=self.blink_cfg,
                                              mouth_base=_mouth_base(portrait)):
      for frames in self.render_motion(portrait, motion):
        if stats is not None:
          if not stats["frames"]:
            stats["first_frame_s"] = time.perf_counter() - t0
          stats["frames"] += frames.shape[0]
        yield frames

  def live(self, image, *, delay_s: float | None = None, crop_only: bool = False,
           max_side: int = 512, drop_late: bool = False, **options):
    """A live session (vasa_jax.live.LiveSession): push audio as it arrives, pull frames as
    they are drawn, change controls mid-session. Needs a bundle with a live generator (the
    bundled demo has one). options: SampleOptions' fields (seed and steps fixed for the
    session); delay_s: how long after a sample arrives the frame showing it is due (default:
    the generator's look-ahead wait plus one block's compute); max_side: the longer side of
    the frames (the photo is downscaled to it, so that frames keep up in real time);
    drop_late: skip drawing frames already past their slot (a live display)."""
    from vasa_jax import live
    return live.LiveSession(self, image, delay_s=delay_s, crop_only=crop_only,
                            max_side=max_side, drop_late=drop_late, **options)

  def animate(self, image, audio, *, crop_only: bool = False, **options) -> AnimationResult:
    """The whole video in memory: AnimationResult(frames, fps, audio).save(path)."""
    a = engine_lib.load_audio(audio)
    info: dict = {}
    frames = list(self._stream(image, a, crop_only=crop_only, stats=info,
                               opts=self._options(options)))
    return AnimationResult(frames=np.concatenate(frames, axis=0), fps=FPS, audio=a, info=info)

  def reenact(self, image, video: str, *, crop_only: bool = False) -> AnimationResult:
    """Video-driven reenactment (see `Reenactor`): the whole video in memory, with the
    driving video's audio when it has one."""
    info: dict = {}
    frames = np.concatenate(list(Reenactor(self).stream(image, video, crop_only=crop_only,
                                                        stats=info)), axis=0)
    return AnimationResult(frames=frames, fps=FPS, audio=_driver_audio(video, len(frames)),
                           info=info)

  def save_reenact(self, image, video: str, out: str, *, crop_only: bool = False,
                   progress=None, stats: dict | None = None) -> str:
    """Streams a reenactment into a watermarked mp4 (driver's audio muxed when present)."""
    from vasa_jax import provenance
    info = stats if stats is not None else {}

    def frames():
      for batch in Reenactor(self).stream(image, video, crop_only=crop_only, stats=info):
        yield from batch
        if progress is not None:
          progress(info["frames"], None)
    it = frames()
    first = list(itertools.islice(it, 1))     # errors (no face, bad video) before any output
    audio = _driver_audio(video, None)
    return provenance.write_watermarked_video(out, itertools.chain(first, it), fps=FPS,
                                              audio=audio, sample_rate=SAMPLE_RATE)

  def save_stream(self, image, audio, out: str, *, progress=None, stats: dict | None = None,
                  crop_only: bool = False, **options) -> str:
    """Streams frames straight into a watermarked mp4 (bounded memory for long audio).
    `progress(frames_done, frames_total)` is called after each batch."""
    from vasa_jax import provenance
    a = engine_lib.load_audio(audio)
    total = audio_lib.num_video_frames(a.shape[0])
    info = {} if stats is None else stats
    opts = self._options(options)

    def frames():
      done = 0
      for batch in self._stream(image, a, crop_only=crop_only, stats=info, opts=opts):
        for f in batch:
          yield f
        done += batch.shape[0]
        if progress is not None:
          progress(done, total)
    return provenance.write_watermarked_video(out, frames(), fps=FPS, audio=a,
                                              sample_rate=SAMPLE_RATE)


# ----------------------------------------------------------------------------- reenactment

class Reenactor:
  """Video-driven reenactment with a geometry-grounded Animator: the portrait performs the
  driving video's head motion, expression, blinks and gaze, relative to the driver's first
  tracked frame (`vasa_jax.geometry.codes.transfer`).

  The driver is tracked with the face mesh (ROI from the previous frame, BlazeFace when lost;
  a frame where the face is lost repeats the last motion). Its codes are measured in the
  training-style crop around its first face, so pose and distance mean what they mean for
  the portrait."""

  def __init__(self, anim: "Animator"):
    self.anim = anim

  def motion(self, frames: Iterator[np.ndarray], portrait: Portrait, stats: dict | None = None
             ) -> Iterator[np.ndarray]:
    """Per driver frame, the portrait's motion [6 + dyn_dim] (batches of render_batch)."""
    from vasa_jax.geometry import codes as codes_lib
    anim = self.anim
    box = ref = last = None
    batch: list = []
    found = total = 0
    shape: list = []           # (width, height) of the driving frames

    def seen(it):
      for f in it:
        if not shape:
          shape.append((f.shape[1], f.shape[0]))
        yield f

    for g in anim.mesh.track(seen(frames)):
      total += 1
      if g is not None:
        found += 1
        if box is None:
          b = g.box if g.box is not None else _box_from_points(g.points)
          box = crop_box(b, *shape[0])
        x0, y0, side = box
        pts = g.points.copy()
        pts[:, :2] -= (x0, y0)
        c = codes_lib.encode(pts[None], anim.basis, side)
        m = np.concatenate([c.pose[0], c.dyn[0]])
        if ref is None:
          ref = m
        last = codes_lib.transfer(portrait.motion, m[None], ref, anim.basis.exp_dim)[0]
      if last is None:
        continue            # no face yet: frames before the first face are dropped
      batch.append(last)
      if len(batch) == anim.render_batch:
        yield np.stack(batch)
        batch = []
    if stats is not None:
      stats.update(driver_frames=total, driver_faces=found)
    if total < 2:
      raise AnimateError(f"the driver has {total} frame{'s' * (total != 1)}: reenactment "
                         "needs a video (a still image gives no motion)")
    if ref is None:
      raise AnimateError("no face found in the driving video")
    if batch:
      yield np.stack(batch)

  def stream(self, image, video: str, *, crop_only: bool = False, stats: dict | None = None,
             max_seconds: float | None = None) -> Iterator[np.ndarray]:
    from vasa_jax import media
    anim = self.anim
    t0 = time.perf_counter()
    portrait = image if isinstance(image, Portrait) else anim.prepare_portrait(
        image, crop_only=crop_only)
    anim.renderer.reset(portrait)
    limit = int(round((max_seconds or anim.max_seconds) * FPS))

    def frames():
      for i, f in enumerate(media.iter_video(video, fps=FPS, max_side=1280)):
        if i >= limit:
          raise AnimateError(f"the driving video is longer than the limit of "
                             f"{limit / FPS:.0f} s (max_seconds / --max-seconds)")
        yield f

    info = stats if stats is not None else {}
    info.update(frames=0, faces_found=portrait.faces_found)
    comp = anim.renderer
    try:
      for motion in self.motion(frames(), portrait, info):
        out = comp.frames_for(portrait, motion)
        if not info["frames"]:
          info["first_frame_s"] = time.perf_counter() - t0
        info["frames"] += out.shape[0]
        yield out
    except media.MediaError as e:
      raise AnimateError(str(e)) from None
    info["seconds"] = info["frames"] / FPS


def _mouth_base(portrait: Portrait) -> float:
  """The portrait's own canonical inner-lip gap."""
  from vasa_jax.geometry import codes as codes_lib
  return float(codes_lib.inner_gap(portrait.geometry.codes.canonical[0]))


def _box_from_points(points: np.ndarray) -> np.ndarray:
  """A BlazeFace-like face box from landmarks (used when a track has no detection box)."""
  p = points[:468, :2]
  lo, hi = p.min(0), p.max(0)
  c = (lo + hi) / 2
  side = float(max(hi - lo)) * 0.9
  return np.array([c[0] - side / 2, c[1] - side / 2 + 0.05 * side, c[0] + side / 2,
                   c[1] + side / 2 + 0.05 * side], np.float32)


def pairs(images: Sequence[str], audios: Sequence[str]) -> list[tuple[str, str]]:
  """Batch mode pairing: one image x many audios, many images x one audio, or zip equal lists."""
  if len(images) == 1 or len(audios) == 1:
    return [(i, a) for i in images for a in audios]
  if len(images) == len(audios):
    return list(zip(images, audios))
  raise AnimateError(f"{len(images)} images and {len(audios)} audios: give one of either, or "
                     "the same number of each")

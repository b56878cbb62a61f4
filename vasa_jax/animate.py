"""Portrait + speech -> talking video: `vasa_jax.Animator` and the `vasa-jax animate` command.

    from vasa_jax import Animator
    anim = Animator()                                   # the bundled demo weights
    result = anim.animate("portrait.jpg", "speech.wav", gaze=(0, 0), emotion="happy")
    result.save("out.mp4")                              # H.264 + AAC, watermarked
    for frames in anim.stream("portrait.jpg", "speech.wav"):
        ...                                             # uint8 [n, H, W, 3] as soon as ready

Pipeline (everything that depends only on the portrait runs once):
  1. face: BlazeFace on the photo; the largest face is cropped the way the training data was
     cropped (square, crop_scale x the face box, centred slightly above it; edge-padded where it
     leaves the photo) and resized to the model's resolution.
  2. stage 1: encode the crop (appearance volume, identity, pose, dynamics), `prepare` the
     canonical volume once.
  3. audio: any format/rate/channels -> 16 kHz mono -> log-mel features at 25 fps.
  4. stage 2: MotionDiT windows of W frames, each conditioned on the last K generated frames (the
     first window on the portrait's own motion), multi-condition CFG (audio, gaze), one jitted
     DDIM loop per window; motion is de-normalised with the bundle's statistics.
  5. render each window's frames in fixed-size batches, paste them back into the photo with a
     feathered edge (or return the crop only), and yield them.

Controls: gaze (theta, phi) in DEGREES (camera frame: +theta looks to the image's right... as in
docs/conventions.md), distance in metres (head to camera; 0.65 is the training average), emotion
one of configs/motion_dit.EMOTIONS. A control left as None is a dropped condition (the model
chooses). Every video written goes through `vasa_jax.provenance` (invisible watermark + metadata);
there is deliberately no switch to turn that off.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import os
import time
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import audio as audio_lib
from vasa_jax import bundle as bundle_lib
from vasa_jax.composites import feather_mask, paste_back  # noqa: F401  (public here too)
from vasa_jax import media
from vasa_jax import mouth_rig
from vasa_jax import sampling
from vasa_jax.geometry.emotion import EMOTIONS   # = configs/motion_dit.EMOTIONS

log = logging.getLogger(__name__)

from vasa_jax.constants import FPS, SAMPLE_RATE  # noqa: E402
CROP_SCALE = 1.8          # = talking_face_videos crop: side / BlazeFace box side
CROP_SHIFT_UP = 0.1       # crop centre above the box centre, in face sides
COMPOSITES = ("render", "detail", "warp", "geometry")
SILENCE_PEAK = 1e-3       # peak |sample| below this (-60 dBFS) is silence
POSE_DIM = 6              # motion = pose (yaw, pitch, roll, tx, ty, tz) ++ dynamics
MAX_TURN_DEG = (18.0, 15.0, 12.0)   # soft limit of yaw, pitch, roll away from the portrait's


class AnimateError(ValueError):
  """Bad input to the animator (one human-readable line)."""


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


@dataclasses.dataclass
class Portrait:
  """A photo prepared for animation (reusable across audios)."""
  image: np.ndarray          # the photo (uint8 RGB, possibly downscaled for output)
  crop: np.ndarray           # the model-size face crop
  box: tuple                 # (x0, y0, side) of the crop in `image` pixels
  prepared: Any              # FaceLatentModel.prepare output (batch 1)
  motion: np.ndarray         # the portrait's own motion latent [6 + dyn_dim]
  faces_found: int
  mouth: Any = None          # mouth_rig.Anchor on the crop (used when the bundle has a rig)
  geometry: Any = None       # geometry.render.PortraitGeometry (geometry-grounded bundles)
  full_crop: Any = None      # the crop at the photo's resolution when it is larger than the
                             # render size (the warp is applied to it at full resolution)


# ----------------------------------------------------------------------------- face crop

def crop_box(face_box, width: int, height: int, *, scale: float = CROP_SCALE,
             shift_up: float = CROP_SHIFT_UP) -> tuple[int, int, int]:
  """(x0, y0, side) of the training-style square crop around a BlazeFace box."""
  from vasa_jax.data.video import _crop_box
  x0, y0, x1, y1 = [float(v) for v in face_box]
  side = max(x1 - x0, y1 - y0)
  c = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
  return _crop_box(c, side, scale, shift_up, width, height)


# ----------------------------------------------------------------------------- inputs

def _load_audio(audio) -> np.ndarray:
  try:
    a = media.as_audio(audio, SAMPLE_RATE)
  except media.MediaError as e:
    raise AnimateError(str(e)) from None
  except (ValueError, TypeError) as e:
    raise AnimateError(f"cannot use the audio: {e}") from None
  a = np.asarray(a, np.float32).reshape(-1)
  if a.size == 0:
    raise AnimateError("the audio is empty")
  if not np.all(np.isfinite(a)):
    raise AnimateError("the audio contains non-finite samples")
  peak = float(np.max(np.abs(a)))
  if peak < SILENCE_PEAK:
    raise AnimateError(f"the audio is silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} "
                       "dBFS); there is no speech to animate")
  return a


def _load_image(image) -> np.ndarray:
  try:
    return media.load_image(image)
  except media.MediaError as e:
    raise AnimateError(str(e)) from None
  except (ValueError, TypeError) as e:
    raise AnimateError(f"cannot use the image: {e}") from None


def _gaze_radians(gaze):
  if gaze is None:
    return None
  g = np.asarray(gaze, np.float32).reshape(-1)
  if g.shape != (2,) or not np.all(np.isfinite(g)):
    raise AnimateError(f"gaze must be two finite angles (theta, phi) in degrees, got {gaze!r}")
  if np.any(np.abs(g) > 60):
    raise AnimateError(f"gaze angles must be within +-60 degrees, got {tuple(g.tolist())}")
  return np.deg2rad(g)


def _emotion_index(emotion):
  if emotion is None:
    return None
  if isinstance(emotion, (int, np.integer)):
    if not 0 <= int(emotion) < len(EMOTIONS):
      raise AnimateError(f"emotion index must be in [0, {len(EMOTIONS)}), got {emotion}")
    return int(emotion)
  name = str(emotion).strip().lower()
  if name not in EMOTIONS:
    raise AnimateError(f"unknown emotion {emotion!r}; use one of {', '.join(EMOTIONS)}")
  return EMOTIONS.index(name)


def _distance(distance):
  if distance is None:
    return None
  d = float(distance)
  if not (0.3 <= d <= 1.5):
    raise AnimateError(f"distance must be between 0.3 and 1.5 metres, got {distance}")
  return d


# ----------------------------------------------------------------------------- the animator

SEAM_TAU = 6.0            # frames: how fast a window's start eases from the previous window's


def join_seam(tail: np.ndarray, window: np.ndarray, tau: float = SEAM_TAU) -> np.ndarray:
  """A new window [n, D] that starts where the previous one's last two frames `tail` [2, D]
  were heading: the gap between its first frame and the previous motion extrapolated one
  frame is removed at the seam and faded out over a few frames (exp(-i / tau)), so windows
  join without a jump and the new window's own motion is kept after that."""
  tail, window = np.asarray(tail, np.float32), np.asarray(window, np.float32)
  if len(tail) < 2 or not len(window):
    return window
  expected = tail[-1] + np.clip(tail[-1] - tail[-2], -0.5, 0.5)
  gap = window[0] - expected
  fade = np.exp(-np.arange(len(window), dtype=np.float32) / float(tau))[:, None]
  return window - fade * gap[None]


BLINK_CFG = 2.0           # guidance scale of an asked blink rate (docs/motion_eval)
POSE_SMOOTHING = 0.3      # EMA weight of a new frame's head pose (1: no smoothing)


def smooth_pose(pose: np.ndarray, state, alpha: float):
  """Causal exponential smoothing of head poses [n, 6] across windows: (smoothed, state).
  The sampled head motion has more frame-to-frame jitter than real footage; the EMA keeps its
  slow turns and nods (alpha 0.3: a time constant of about 3 frames, 110 ms). With it the
  measured angular speed and jitter match real footage's (docs/motion_eval)."""
  out = np.empty_like(pose)
  s = pose[0] if state is None else state
  for i, x in enumerate(pose):
    s = s + alpha * (x - s)
    out[i] = s
  return out, s


def _blink_rate(rate):
  if rate is None:
    return None
  r = float(rate)
  if not (math.isfinite(r) and 0.0 <= r <= 60.0):
    raise AnimateError(f"blink_rate must be between 0 and 60 blinks a minute, got {rate}")
  return r


def _emotion_intensity(value) -> float:
  v = float(value)
  if not (math.isfinite(v) and 0.0 <= v <= 1.5):
    raise AnimateError(f"emotion_intensity must be between 0 and 1.5, got {value}")
  return v


def _head_motion(scale) -> float:
  s = float(scale)
  if not (math.isfinite(s) and 0.0 <= s <= 3.0):
    raise AnimateError(f"head_motion must be between 0 (still head) and 3, got {scale}")
  return s


def _driver_audio(video: str, frames: int | None):
  """The driving video's audio (16 kHz mono), cut to `frames` video frames; None if silent
  or absent."""
  try:
    a = media.load_audio(video, SAMPLE_RATE)
  except media.MediaError:
    return None
  if frames is not None:
    n = frames * (SAMPLE_RATE // FPS)
    a = np.pad(a[:n], (0, max(0, n - a.shape[0])))
  return a if np.max(np.abs(a)) > SILENCE_PEAK else None


class Animator:
  """Loads a bundle (default: the bundled demo weights) and animates portraits with speech.

  Compiled functions (encode, prepare, render, the windowed sampler) are built once per
  Animator and reused across calls, so batch use over many portraits / audios pays the
  compilation once.

  max_seconds: longest audio accepted (longer audio is an error: split it). Frames are always
  produced window by window, so memory in `stream` / `save_stream` does not grow with length.
  max_output_side: pasted-back videos are downscaled so the longer side is at most this.
  composite: "detail" (default: the photo keeps its pixels and the change between each frame's
  render and the render of the portrait's own motion is added; sharp wherever the model is
  blurry, at the price of ghosting under large head motion) or "render" (the render replaces
  the face region: the method as published, right for a well-trained model). With the bundled
  CPU-trained weights, MediaPipe Face Mesh finds the face in 100% of "detail" frames and 13%
  of "render" frames (see the issue notes). "warp": no decoder render at all; the photo's face
  region follows the generated head pose by the homography of its face plane
  (mouth_rig.face_homographies) and the mouth rig articulates the mouth: sharp and ghost-free,
  but a 2.5D puppet (no learned expression change). Only for bundles with a mouth rig, and
  their default (composite=None): the bundled CPU-trained decoder blurs and ghosts under head
  motion. None picks "warp" for a bundle with a mouth rig, else "detail".
  """

  def __init__(self, checkpoint: str | None = None, *, bundle: dict | None = None,
               max_seconds: float = 3600.0, max_output_side: int = 1280,
               render_batch: int = 8, face_detector=None, composite: str | None = None):
    if bundle is None:
      try:
        bundle = bundle_lib.load(checkpoint)
      except bundle_lib.BundleError as e:
        raise AnimateError(str(e)) from None
    from vasa_jax import composites
    from vasa_jax.models import motion_dit as md
    self.checkpoint = checkpoint or bundle_lib.default_dir()
    self.fl_config = bundle["face_latent_config"]
    self.md_config = bundle["motion_dit_config"]
    self.stats = {k: np.asarray(bundle["motion_stats"][k], np.float32) for k in ("mean", "std")}
    mc, dc = self.fl_config.model, self.md_config.model
    # "geometry": motion grounded in measured face meshes (vasa_jax.geometry + the part
    # decoder); "learned": the learned-flow FaceLatentModel.
    self.kind = "geometry" if mc.get("kind", "learned_flow") == "geometry" else "learned"
    rig = (bundle.get("meta") or {}).get("mouth_rig", bundle.get("mouth_rig"))
    try:
      self.rig = None if rig is None else mouth_rig.RigConfig.from_dict(rig)
    except (TypeError, ValueError) as e:
      raise AnimateError(f"{checkpoint or bundle_lib.default_dir()}: bad mouth_rig: {e}") from None
    self.max_seconds = float(max_seconds)
    self.max_output_side = int(max_output_side)
    self.render_batch = int(render_batch)
    allowed = composites.GEOMETRY if self.kind == "geometry" else composites.LEARNED
    if composite is None:
      composite = ("geometry" if self.kind == "geometry"
                   else "warp" if self.rig is not None else "detail")
    if composite not in COMPOSITES:
      raise AnimateError(f"composite must be one of {COMPOSITES}, got {composite!r}")
    if composite not in allowed:
      raise AnimateError(f"composite {composite!r} is not available for this bundle (a "
                         f"{self.kind} stage 1); use one of {', '.join(allowed)}")
    if composite == "warp" and self.rig is None:
      raise AnimateError("composite 'warp' needs a bundle with a mouth rig (it renders no "
                         "mouth motion otherwise)")
    self.composite = composite
    self.pose_smoothing = POSE_SMOOTHING
    self.blink_cfg = BLINK_CFG
    self._detector = face_detector
    self._mesh = None
    self.window, self.context = int(dc.window), int(dc.context)
    self.motion_dim = int(dc.motion_dim)
    if self.motion_dim != 6 + int(mc.dyn_dim):
      raise AnimateError(f"{self.checkpoint}: motion_dit motion_dim {self.motion_dim} does not "
                         f"match the face model's 6 + dyn_dim {6 + int(mc.dyn_dim)}")
    self.dit = md.MotionDiT(dc)
    # The noise schedule the stage-2 run trained with (its config's `diffusion` block) and its
    # sampler settings: inference denoises along the same schedule.
    from vasa_jax import diffusion
    self.schedule = diffusion.schedule_from_config(self.md_config)
    self.eta = float((self.md_config.get("sampler", None) or {}).get("eta", 0.0))
    if self.kind == "geometry":
      self._init_geometry(bundle)
    else:
      self._init_learned(bundle)
    self.md_params = jax.device_put(bundle["motion_dit_params"])
    self._composite = composites.make(composite, self)
    n_mels = int(dc.get("n_mels", 80))
    self._features = jax.jit(functools.partial(
        audio_lib.log_mel, n_mels=n_mels,
        frames_per_video_frame=int(dc.audio_in_dim) // n_mels))
    dit = self.dit

    def denoise(params, x_t, t, cond, drop):
      return dit.apply({"params": params}, x_t, t, cond, drop)
    self._denoise = denoise

  def _init_learned(self, bundle):
    from vasa_jax.models import face_latent as fl
    mc = self.fl_config.model
    self.size = int(mc.image_size)
    self.face_model = fl.FaceLatentModel(mc)
    try:
      self._check(bundle)
    except bundle_lib.BundleError as e:
      raise AnimateError(f"{self.checkpoint}: {e}") from None
    self.fl_params = jax.device_put(bundle["face_latent_params"])
    model = self.face_model
    self._encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=fl.FaceLatentModel.encode))
    self._prepare = jax.jit(lambda p, e: model.apply(
        {"params": p}, e["v_app"], e["z_id"], e["z_pose"], e["z_dyn"],
        method=fl.FaceLatentModel.prepare))
    self._render = jax.jit(lambda p, prep, pose, dyn: fl.float_to_images(model.apply(
        {"params": p}, prep, pose, dyn, method=fl.FaceLatentModel.render)))

  def _init_geometry(self, bundle):
    from flax import linen as nn

    from vasa_jax.models import geo_decoder as gd
    mc = self.fl_config.model
    basis = bundle.get("face_basis")
    if basis is None:
      raise AnimateError(f"{self.checkpoint}: a geometry bundle needs its face basis "
                         f"({bundle_lib.BASIS_FILE})")
    if basis.dyn_dim != int(mc.dyn_dim):
      raise AnimateError(f"{self.checkpoint}: the face basis has {basis.dyn_dim} dynamics "
                         f"dims, the face model's config {mc.dyn_dim}")
    self.basis = basis
    from vasa_jax.geometry import emotion as emotion_lib
    self.emotion_offsets = emotion_lib.offsets(basis)     # [5, dyn_dim]
    self.size = int(mc.get("field_size", 256))   # field / patch crop side (<= the photo's)
    self.part_res = {"mouth": int(mc.mouth.res), "eye_a": int(mc.eye.res),
                     "eye_b": int(mc.eye.res)}
    self.decoder = gd.GeometryDecoder(mc)
    try:
      ref = jax.eval_shape(self.decoder.init, jax.random.PRNGKey(0),
                           *gd.dummy_inputs(mc, 1))["params"]
      bundle_lib.check_params(bundle["face_latent_params"], nn.meta.unbox(ref), "face_latent")
      self._check_dit(bundle)
    except bundle_lib.BundleError as e:
      raise AnimateError(f"{self.checkpoint}: {e}") from None
    self.fl_params = jax.device_put(bundle["face_latent_params"])
    dec = self.decoder

    def decode(params, mouth, eyes):
      out = dec.apply({"params": params}, mouth, eyes)
      return (out["mouth"]["rgb"], out["mouth"]["alpha"], out["eye"]["rgb"],
              out["eye"]["alpha"])
    jitted = jax.jit(decode)
    self._decode_parts = lambda mouth, eyes: jitted(self.fl_params, mouth, eyes)

  @property
  def mesh(self):
    """The face mesh + iris landmark models (geometry-grounded bundles, reenactment)."""
    if self._mesh is None:
      from vasa_jax.geometry import landmarks
      self._mesh = landmarks.FaceMesh(detector=self._detector)
    return self._mesh

  @classmethod
  def from_configs(cls, face_latent_config, motion_dit_config, *, seed: int = 0,
                   motion_stats: dict | None = None, **kw) -> "Animator":
    """An Animator with freshly initialised (untrained) parameters: tests, smoke runs."""
    from vasa_jax.models import face_latent as fl
    from vasa_jax.models import motion_dit as md
    from flax import linen as nn
    rng = jax.random.PRNGKey(seed)
    extra = {}
    if face_latent_config.model.get("kind", "") == "geometry":
      from vasa_jax.models import geo_decoder as gd
      flp = nn.meta.unbox(gd.GeometryDecoder(face_latent_config.model).init(
          rng, *gd.dummy_inputs(face_latent_config.model, 1)))["params"]
      extra["face_basis"] = kw.pop("face_basis")
    else:
      s = int(face_latent_config.model.image_size)
      img = jnp.zeros((1, s, s, 3), jnp.float32)
      flp = nn.meta.unbox(fl.FaceLatentModel(face_latent_config.model).init(rng, img, img))["params"]
    mdp = nn.meta.unbox(md.MotionDiT(motion_dit_config.model).init(
        rng, *md.dummy_inputs(motion_dit_config.model, 1)))["params"]
    d = int(motion_dit_config.model.motion_dim)
    stats = motion_stats or {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)}
    return cls(bundle={"face_latent_config": face_latent_config, "face_latent_params": flp,
                       "motion_dit_config": motion_dit_config, "motion_dit_params": mdp,
                       "motion_stats": stats, **extra}, **kw)

  def _check(self, bundle):
    from vasa_jax.models import motion_dit as md
    s = self.size
    img = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
    try:
      ref_fl = jax.eval_shape(self.face_model.init, jax.random.PRNGKey(0), img, img)["params"]
      ref_md = jax.eval_shape(self.dit.init, jax.random.PRNGKey(0),
                              *md.dummy_inputs(self.md_config.model, 1))["params"]
    except Exception as e:   # a config the code cannot build
      raise AnimateError(f"{self.checkpoint}: incompatible model config: {e}") from None
    from flax import linen as nn
    bundle_lib.check_params(bundle["face_latent_params"], nn.meta.unbox(ref_fl), "face_latent")
    bundle_lib.check_params(bundle["motion_dit_params"], nn.meta.unbox(ref_md), "motion_dit")
    if len(bundle["motion_stats"]["mean"]) != self.motion_dim:
      raise AnimateError(f"{self.checkpoint}: motion statistics do not match motion_dim")

  def _check_dit(self, bundle):
    from flax import linen as nn

    from vasa_jax.models import motion_dit as md
    try:
      ref_md = jax.eval_shape(self.dit.init, jax.random.PRNGKey(0),
                              *md.dummy_inputs(self.md_config.model, 1))["params"]
    except Exception as e:   # a config the code cannot build
      raise AnimateError(f"{self.checkpoint}: incompatible model config: {e}") from None
    bundle_lib.check_params(bundle["motion_dit_params"], nn.meta.unbox(ref_md), "motion_dit")
    if len(bundle["motion_stats"]["mean"]) != self.motion_dim:
      raise AnimateError(f"{self.checkpoint}: motion statistics do not match motion_dim")

  # -- portrait
  @property
  def detector(self):
    if self._detector is None:
      from vasa_jax.faces import get_detector
      self._detector = get_detector()
    return self._detector

  def prepare_portrait(self, image, *, crop_only: bool = False) -> Portrait:
    """Detect, crop and encode a portrait (path, array or PIL image)."""
    import cv2

    from vasa_jax.data.video import crop_square
    rgb = _load_image(image)
    h, w = rgb.shape[:2]
    if min(h, w) < 16:
      raise AnimateError(f"the image is too small ({w}x{h})")
    # Detection on a copy no larger than 1280 px (BlazeFace sees 128 px anyway).
    s = min(1.0, 1280.0 / max(h, w))
    small = rgb if s >= 1.0 else cv2.resize(rgb, (int(round(w * s)), int(round(h * s))),
                                            interpolation=cv2.INTER_AREA)
    # Output frame: the photo, downscaled so its longer side is at most max_output_side.
    so = min(1.0, self.max_output_side / max(h, w))
    out_img = rgb if so >= 1.0 else cv2.resize(rgb, (int(round(w * so)) // 2 * 2,
                                                     int(round(h * so)) // 2 * 2),
                                               interpolation=cv2.INTER_AREA)
    if self.kind == "geometry":
      return self._prepare_geometry(out_img, crop_only=crop_only)
    faces = self.detector.detect(small)
    if not faces:
      raise AnimateError("no face found in the image")
    if len(faces) > 1:
      log.warning("found %d faces; animating the largest", len(faces))
    face = faces[0].scaled(1.0 / s) if s < 1.0 else faces[0]
    if so < 1.0:
      face = face.scaled(out_img.shape[1] / w)
    box = crop_box(face.box, out_img.shape[1], out_img.shape[0])
    crop = crop_square(out_img, box, self.size)
    enc = self._encode(self.fl_params, jnp.asarray(crop[None]))
    prepared = self._prepare(self.fl_params, enc)
    motion = np.concatenate([np.asarray(enc["z_pose"][0]), np.asarray(enc["z_dyn"][0])])
    mouth = mouth_rig.refine_anchor(
        crop, mouth_rig.anchor_from_keypoints(face.keypoints, box, self.size))
    return Portrait(image=None if crop_only else out_img, crop=crop, box=box,
                    prepared=prepared, motion=self._rest(motion), faces_found=len(faces),
                    mouth=mouth)

  def _prepare_geometry(self, img: np.ndarray, *, crop_only: bool = False,
                        points: np.ndarray | None = None) -> Portrait:
    """Geometry-grounded portrait: face mesh (refusing non-faces), the training-style crop
    around its BlazeFace box, the crop measured again at render size, its codes and warp
    topology. points: the face's landmarks in `img` when already known (an aligned crop)."""
    import cv2

    from vasa_jax.data.video import crop_square
    from vasa_jax.geometry import landmarks, render
    ih, iw = img.shape[:2]
    if points is None:
      try:
        face = self.mesh.detect(img, human=True)
      except landmarks.NoFaceError as e:
        raise AnimateError(str(e)) from None
      box = crop_box(face.box, iw, ih)
      roi = face.roi
    else:
      box, roi = (0, 0, iw), landmarks.roi_from_points(points)
    x0, y0, side = box
    r = min(side, self.size)
    crop = crop_square(img, box, r)
    k = r / side
    cx, cy, rs, ang = roi
    try:
      g = self.mesh.refit(crop, ((cx - x0) * k, (cy - y0) * k, rs * k, ang))
    except landmarks.NoFaceError as e:
      raise AnimateError(str(e)) from None
    ok, why = landmarks.plausibility(g.points)
    if not ok:
      raise AnimateError(f"no human face found in the image ({why})")
    pg = render.PortraitGeometry.from_crop(crop, g.points, self.basis, self.part_res)
    full = crop_square(img, box, side) if side > r else None
    return Portrait(image=None if crop_only else img, crop=crop, box=box, prepared=None,
                    motion=pg.motion, faces_found=1, geometry=pg, full_crop=full)

  def portrait_from_landmarks(self, crop: np.ndarray, points: np.ndarray) -> Portrait:
    """A crop-only Portrait of a geometry bundle from an aligned crop and its already measured
    landmarks (crop pixels), e.g. the first frame of a dataset clip (evaluation)."""
    from vasa_jax.geometry import render
    if self.kind != "geometry":
      raise AnimateError("portrait_from_landmarks needs a geometry-grounded bundle")
    crop = np.ascontiguousarray(np.asarray(crop, np.uint8)[..., :3])
    pg = render.PortraitGeometry.from_crop(crop, np.asarray(points, np.float32), self.basis,
                                           self.part_res)
    return Portrait(image=None, crop=crop, box=(0, 0, crop.shape[0]), prepared=None,
                    motion=pg.motion, faces_found=1, geometry=pg)

  def portrait_from_crop(self, crop) -> Portrait:
    """A Portrait from an already aligned face crop (as the datasets store them: no detection;
    resized to the model's size if needed). The output is the crop (no paste-back)."""
    import cv2
    crop = _load_image(crop)
    if crop.shape[0] != crop.shape[1]:
      raise AnimateError(f"an aligned crop must be square, got {crop.shape[1]}x{crop.shape[0]}")
    if self.kind == "geometry":
      from vasa_jax.geometry import landmarks
      try:
        g = self.mesh.detect(crop)
      except landmarks.NoFaceError as e:
        raise AnimateError(str(e)) from None
      p = self._prepare_geometry(crop, crop_only=True, points=g.points)
      return p
    if crop.shape[0] != self.size:
      interp = cv2.INTER_AREA if crop.shape[0] > self.size else cv2.INTER_LINEAR
      crop = cv2.resize(crop, (self.size, self.size), interpolation=interp)
    enc = self._encode(self.fl_params, jnp.asarray(crop[None]))
    prepared = self._prepare(self.fl_params, enc)
    motion = np.concatenate([np.asarray(enc["z_pose"][0]), np.asarray(enc["z_dyn"][0])])
    mouth = None
    if self.rig is not None:
      faces = self.detector.detect(crop)
      mouth = (mouth_rig.refine_anchor(crop, mouth_rig.anchor_from_keypoints(
          faces[0].keypoints, (0, 0, self.size), self.size))
               if faces else mouth_rig.default_anchor(self.size))
    return Portrait(image=None, crop=crop, box=(0, 0, self.size), prepared=prepared,
                    motion=self._rest(motion), faces_found=1, mouth=mouth)

  def _rest(self, motion: np.ndarray) -> np.ndarray:
    """The portrait's motion latent; with a mouth rig its named dims (mouth open / wide /
    round, blink) are set to rest -- a closed mouth, open eyes -- since this decoder's encoder
    does not read them, and the rig animates relative to that rest."""
    motion = np.asarray(motion, np.float32).copy()
    if self.rig is not None:
      motion[mouth_rig.NAMED_SLICE] = (self.rig.open_rest, self.rig.wide_rest,
                                       self.rig.round_rest, 0.0)
    return motion

  # -- motion
  def _controls(self, gaze, distance, emotion, blink_rate=None) -> dict:
    """Unbatched controls for sampling.stream; missing ones are dropped conditions. A
    geometry bundle's model has no emotion condition (no labels in real footage): emotion
    acts as an offset of the codes instead (`motion_windows`)."""
    g, d, e = _gaze_radians(gaze), _distance(distance), _emotion_index(emotion)
    if self.kind == "geometry":
      e = None
    r = _blink_rate(blink_rate)
    if r is not None and not self.md_config.model.get("blink_control", False):
      raise AnimateError("this bundle's motion model has no blink-rate control (a geometry "
                         "bundle trained with model.blink_control=True has)")
    mean_d = float(self.md_config.model.distance_mean)
    out = {
        "gaze": np.zeros(2, np.float32) if g is None else g.astype(np.float32),
        "distance": np.float32(mean_d if d is None else d),
        "emotion": np.int32(0 if e is None else e),
        "drop": {"gaze": np.float32(g is None), "distance": np.float32(d is None),
                 "emotion": np.float32(e is None)},
    }
    if self.md_config.model.get("blink_control", False):
      out["blink_rate"] = np.float32(0.0 if r is None else r)
      out["drop"]["blink_rate"] = np.float32(r is None)
    return out

  def _normalize(self, m):
    return (np.asarray(m, np.float32) - self.stats["mean"]) / self.stats["std"]

  def _denormalize(self, x):
    return np.asarray(x, np.float32) * self.stats["std"] + self.stats["mean"]

  def motion_windows(self, portrait: Portrait, audio_16k: np.ndarray, *, gaze=None,
                     distance=None, emotion=None, cfg_audio: float = 0.5, cfg_gaze: float = 1.0,
                     steps: int = 25, seed: int = 0, carry_context: bool = True,
                     head_motion: float = 1.0, emotion_intensity: float = 1.0,
                     blink_rate: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (start frame, de-normalised motion [n, 6 + dyn_dim]) window by window.

    emotion (geometry bundles): the emotion's offset of the expression and lid codes
    (vasa_jax.geometry.emotion), times emotion_intensity in [0, 1.5], is added to every
    generated frame, so brows, lip corners and lids change while the lips keep syncing.
    head_motion: scales the generated head motion (rotation and position) about the
    portrait's own pose: 0 keeps the head still, 1 is the model's motion, above 1 livelier.
    The model's next window is still conditioned on its own, unscaled output.
    blink_rate: blinks a minute the speaker should have (a condition of bundles trained with
    model.blink_control; None lets the model choose, as in the footage it learned from).
    carry_context=False: every window is conditioned on the portrait's motion only, not on the
    window before it (an ablation; consecutive windows then need not join smoothly)."""
    if int(steps) < 1:
      raise AnimateError(f"steps must be >= 1, got {steps}")
    head_motion = _head_motion(head_motion)
    ei = _emotion_intensity(emotion_intensity)
    e = _emotion_index(emotion)
    offset = (self.emotion_offsets[e] * ei if self.kind == "geometry" and e is not None
              else None)
    tail, pose_state = None, None
    for name, v in (("cfg_audio", cfg_audio), ("cfg_gaze", cfg_gaze)):
      if not (math.isfinite(float(v)) and 0.0 <= float(v) <= 10.0):
        raise AnimateError(f"{name} must be between 0 and 10, got {v}")
    feats = self._features(jnp.asarray(audio_16k))
    ctrl = self._controls(gaze, distance, emotion, blink_rate)
    cfg = {"audio": float(cfg_audio), "gaze": float(cfg_gaze) if gaze is not None else 0.0}
    if blink_rate is not None and self.blink_cfg:
      cfg["blink_rate"] = float(self.blink_cfg)
    k = self.context
    first = None
    if k:
      silence = self._features(jnp.zeros(k * (SAMPLE_RATE // FPS), jnp.float32))
      first = {"motion": np.tile(self._normalize(portrait.motion)[None], (k, 1)),
               "audio": np.asarray(silence)}
    for start, m in sampling.stream(
        self._denoise, feats, ctrl, window=self.window, context=k, steps=int(steps), cfg=cfg,
        rng=jax.random.PRNGKey(int(seed)), first_prev=first, motion_dim=self.motion_dim,
        params=self.md_params, carry_context=carry_context, schedule=self.schedule,
        eta=self.eta):
      m = self._denormalize(m)
      if tail is not None:
        m = join_seam(tail, m)
      tail = m[-2:].copy()
      if self.kind == "geometry" and self.pose_smoothing < 1.0:
        m[:, :POSE_DIM], pose_state = smooth_pose(m[:, :POSE_DIM], pose_state,
                                                  self.pose_smoothing)
      if offset is not None:
        m[:, POSE_DIM:] += offset
      ref = np.asarray(portrait.motion, np.float32)[:POSE_DIM]
      if head_motion != 1.0:
        m[:, :POSE_DIM] = ref + head_motion * (m[:, :POSE_DIM] - ref)
      if self.kind == "geometry":
        # The warp only shows what the photo shows: turns far from the portrait's own pose
        # would reveal unseen sides of the head, so rotations ease off smoothly past
        # MAX_TURN_DEG of it (real talking heads stay well inside: about 4 degrees std).
        lim = np.radians(np.asarray(MAX_TURN_DEG, np.float32))
        m[:, :3] = ref[:3] + lim * np.tanh((m[:, :3] - ref[:3]) / lim)
      yield start, m

  def render_motion(self, portrait: Portrait, motion: np.ndarray) -> Iterator[np.ndarray]:
    """Frames (uint8 [n,H,W,3], pasted back unless crop-only) for motion [T, 6+dyn], in
    fixed-size batches (the last one padded) so the renderer compiles once."""
    yield from self._composite.render(portrait, np.asarray(motion, np.float32))

  def _geometry(self):
    return dict(ref_distance=float(self.fl_config.model.ref_distance),
                fov_deg=float(self.fl_config.model.fov_deg))

  def _warp_frames(self, portrait: Portrait, poses: np.ndarray, mask) -> np.ndarray:
    """The "warp" composite: the photo (or crop) with its face region moved by the rigid pose
    change from the portrait's pose to each of poses [n, 6]."""
    import cv2
    hs = mouth_rig.face_homographies(portrait.motion[:6], poses, self.size, self.rig,
                                     **self._geometry())
    if portrait.image is None:
      return np.stack([cv2.warpPerspective(portrait.crop, h, (self.size, self.size),
                                           flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REPLICATE) for h in hs])
    img = portrait.image
    ih, iw = img.shape[:2]
    x0, y0, side = portrait.box
    k = side / float(self.size)
    # crop pixel centres -> photo pixel centres: p = k (c + 0.5) - 0.5 + (x0, y0)
    a = np.array([[k, 0, x0 + 0.5 * k - 0.5], [0, k, y0 + 0.5 * k - 0.5], [0, 0, 1]])
    a_inv = np.linalg.inv(a)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, iw), min(y0 + side, ih)
    out = np.repeat(img[None], len(hs), axis=0)
    if xb <= xa or yb <= ya:
      return out
    # The displacement fades out with the feathered mask (rather than blending the warped
    # and the still photo, which doubles edges): one remap per frame, no seams.
    m = mask[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float64)
    gx, gy = np.meshgrid(np.arange(xa, xb, dtype=np.float64), np.arange(ya, yb, dtype=np.float64))
    for i, h in enumerate(hs):
      inv = np.linalg.inv(a @ h @ a_inv)     # output photo pixel -> source photo pixel
      den = inv[2, 0] * gx + inv[2, 1] * gy + inv[2, 2]
      sx = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) / den
      sy = (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]) / den
      mx = (gx + m * (sx - gx)).astype(np.float32)
      my = (gy + m * (sy - gy)).astype(np.float32)
      out[i, ya:yb, xa:xb] = cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)
    return out

  def _articulate(self, portrait: Portrait, frames: np.ndarray, motion: np.ndarray):
    """The bundle's mouth rig (if any) on output frames [n,H,W,3] for their motion [n,D]."""
    if self.rig is None or portrait.mouth is None:
      return frames
    cx, cy, hw, roll = mouth_rig.track(
        portrait.mouth, portrait.motion[:6], motion[:, :6], self.size, self.rig,
        **self._geometry())
    x0, y0, side = portrait.box
    k = side / float(self.size)   # crop pixels -> output pixels (1 for crop-only output)
    return np.stack([mouth_rig.articulate(f, x0 + k * (x + 0.5) - 0.5, y0 + k * (y + 0.5) - 0.5,
                                          k * h, r, m[mouth_rig.NAMED_SLICE], self.rig)
                     for f, x, y, h, r, m in zip(frames, cx, cy, hw, roll, motion)])

  # -- public API
  def stream(self, image, audio, *, gaze=None, distance=None, emotion=None,
             cfg_audio: float = 0.5, cfg_gaze: float = 1.0, steps: int = 25, seed: int = 0,
             crop_only: bool = False, stats: dict | None = None, head_motion: float = 1.0,
             emotion_intensity: float = 1.0, blink_rate: float | None = None
             ) -> Iterator[np.ndarray]:
    """Yields uint8 frame batches [n,H,W,3] as soon as each is rendered (25 fps overall).

    If `stats` is a dict it receives first_frame_s (time from the call to the first yielded
    frames), frames, seconds, and faces_found."""
    yield from self._stream(image, _load_audio(audio), gaze=gaze, distance=distance,
                            emotion=emotion, cfg_audio=cfg_audio, cfg_gaze=cfg_gaze, steps=steps,
                            seed=seed, crop_only=crop_only, stats=stats, head_motion=head_motion,
                            emotion_intensity=emotion_intensity, blink_rate=blink_rate)

  def _stream(self, image, a: np.ndarray, *, gaze, distance, emotion, cfg_audio, cfg_gaze,
              steps, seed, crop_only, stats, head_motion=1.0,
              emotion_intensity=1.0, blink_rate=None) -> Iterator[np.ndarray]:
    t0 = time.perf_counter()
    seconds = a.shape[0] / SAMPLE_RATE
    if seconds > self.max_seconds:
      raise AnimateError(f"the audio is {seconds:.0f} s long, more than the limit of "
                         f"{self.max_seconds:.0f} s (max_seconds / --max-seconds)")
    portrait = image if isinstance(image, Portrait) else self.prepare_portrait(image,
                                                                               crop_only=crop_only)
    if stats is not None:
      stats.update(faces_found=portrait.faces_found, seconds=seconds, frames=0)
    for _, motion in self.motion_windows(portrait, a, gaze=gaze, distance=distance,
                                         emotion=emotion, cfg_audio=cfg_audio,
                                         cfg_gaze=cfg_gaze, steps=steps, seed=seed,
                                         head_motion=head_motion,
                                         emotion_intensity=emotion_intensity, blink_rate=blink_rate):
      for frames in self.render_motion(portrait, motion):
        if stats is not None:
          if not stats["frames"]:
            stats["first_frame_s"] = time.perf_counter() - t0
          stats["frames"] += frames.shape[0]
        yield frames

  def animate(self, image, audio, *, gaze=None, distance=None, emotion=None,
              cfg_audio: float = 0.5, cfg_gaze: float = 1.0, steps: int = 25, seed: int = 0,
              crop_only: bool = False, head_motion: float = 1.0,
              emotion_intensity: float = 1.0, blink_rate: float | None = None
              ) -> AnimationResult:
    """The whole video in memory: AnimationResult(frames, fps, audio).save(path)."""
    a = _load_audio(audio)
    info: dict = {}
    frames = list(self._stream(image, a, gaze=gaze, distance=distance,
                              emotion=emotion, cfg_audio=cfg_audio, cfg_gaze=cfg_gaze,
                              steps=steps, seed=seed, crop_only=crop_only, stats=info,
                              head_motion=head_motion, emotion_intensity=emotion_intensity,
                              blink_rate=blink_rate))
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
                  **kw) -> str:
    """Streams frames straight into a watermarked mp4 (bounded memory for long audio).
    `progress(frames_done, frames_total)` is called after each batch."""
    from vasa_jax import provenance
    a = _load_audio(audio)
    total = audio_lib.num_video_frames(a.shape[0])
    info = {} if stats is None else stats
    opts = dict(gaze=None, distance=None, emotion=None, cfg_audio=0.5, cfg_gaze=1.0, steps=25,
                seed=0, crop_only=False, head_motion=1.0, emotion_intensity=1.0,
                blink_rate=None)
    unknown = set(kw) - set(opts)
    if unknown:
      raise TypeError(f"unexpected arguments {sorted(unknown)}")
    opts.update(kw)

    def frames():
      done = 0
      for batch in self._stream(image, a, stats=info, **opts):
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
    if anim.kind != "geometry":
      raise AnimateError("reenactment needs a geometry-grounded bundle (face mesh codes)")
    self.anim = anim

  def motion(self, frames: Iterator[np.ndarray], portrait: Portrait, stats: dict | None = None
             ) -> Iterator[np.ndarray]:
    """Per driver frame, the portrait's motion [6 + dyn_dim] (batches of render_batch)."""
    from vasa_jax.geometry import codes as codes_lib
    anim = self.anim
    box = ref = last = None
    batch: list = []
    found = total = 0
    for g in anim.mesh.track(frames):
      total += 1
      if g is not None:
        found += 1
        if box is None:
          b = g.box if g.box is not None else _box_from_points(g.points)
          box = crop_box(b, *self._shape)
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
    if batch:
      yield np.stack(batch)
    if stats is not None:
      stats.update(driver_frames=total, driver_faces=found)
    if ref is None:
      raise AnimateError("no face found in the driving video")

  _shape = None      # (width, height) of the driving frames, set by `stream`

  def stream(self, image, video: str, *, crop_only: bool = False, stats: dict | None = None,
             max_seconds: float | None = None) -> Iterator[np.ndarray]:
    from vasa_jax import media
    anim = self.anim
    t0 = time.perf_counter()
    portrait = image if isinstance(image, Portrait) else anim.prepare_portrait(
        image, crop_only=crop_only)
    limit = int(round((max_seconds or anim.max_seconds) * FPS))

    def frames():
      for i, f in enumerate(media.iter_video(video, fps=FPS, max_side=1280)):
        if i >= limit:
          raise AnimateError(f"the driving video is longer than the limit of "
                             f"{limit / FPS:.0f} s (max_seconds / --max-seconds)")
        if self._shape is None:
          self._shape = (f.shape[1], f.shape[0])
        yield f

    info = stats if stats is not None else {}
    info.update(frames=0, faces_found=portrait.faces_found)
    comp = anim._composite
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

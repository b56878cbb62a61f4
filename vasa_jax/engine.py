"""The inference engine: a bundle's networks compiled once, and the pure functions of the
three inference steps around them.

    eng = engine.Engine(bundle_lib.load(path))
    portrait = portrait_lib.encode(eng, image, faces)                    # vasa_jax.portrait
    for start, motion in engine.sample_motion(eng, portrait.motion, audio_16k, opts):
        for frames in eng.renderer.render(portrait, motion):             # vasa_jax.renderers
            ...

`Engine` holds no per-call state: it is the bundle (configs, parameters on the device, motion
statistics, face basis, diffusion schedule, sampler defaults), the jitted functions that apply
its motion model (`features`, `denoise`) and its stage 1's renderer (`renderer`, chosen by the
bundle's kind; the part bank is the mesh renderer's). `sample_motion` is a
function of an engine, the portrait's own motion, the audio and `SampleOptions`; it yields
de-normalised motion window by window. `vasa_jax.animate.Animator` is the facade over these.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import bundle as bundle_lib
from vasa_jax import renderers
from vasa_jax import sampling
from vasa_jax.config_utils import InputError
from vasa_jax.constants import FPS, SAMPLE_RATE
from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry.emotion import EMOTIONS   # = configs/motion_dit.EMOTIONS

POSE_DIM = 6              # motion = pose (yaw, pitch, roll, tx, ty, tz) ++ dynamics
MAX_TURN_DEG = (18.0, 15.0, 12.0)   # soft limit of yaw, pitch, roll away from the portrait's
MAX_LID_OPEN = 1.15                 # soft limit of the lid openness, x the portrait's own
EMOTION_RAMP = 12         # frames over which a live session's new emotion eases in
SEAM_TAU = 6.0            # frames: how fast a window's start eases from the previous window's
BLINK_CFG = 2.0           # guidance scale of an asked blink rate (docs/motion_eval)
MAX_AUDIO_LEAD = 5.0      # frames: the largest audio lead a call may ask (200 ms)
POSE_SMOOTHING = 0.3      # EMA weight of a new frame's head pose (1: no smoothing)
GAZE_TAU_S = 2.0          # seconds: the slow gaze that an asked gaze steers (faster motion kept)
GAZE_EYE_SHARE = 0.5      # of a gaze correction the eyes take this share, the head the rest
GAZE_EYE_LIMIT_DEG = 20.0  # eye-in-head rotation kept within this of the data's mean
RECENTRE_TAU_S = 6.0      # seconds: no gaze asked, the head drifts back to the portrait's own
DISTANCE_RANGE = (0.3, 1.5)  # the portrait's own head distance held (no distance asked) within
MAX_STEPS = 50            # DDIM steps a call may ask (the page's slider; the bundles use 10-25)
MAX_SEED = 2 ** 32 - 1    # seeds are 32-bit (jax.random.PRNGKey)
MIN_AUDIO_S = 0.2         # shorter audio gives fewer than 5 frames: refused


class AnimateError(InputError):
  """Bad input to the animator (one human-readable line)."""


# ----------------------------------------------------------------------------- inputs

SILENCE_PEAK = 1e-3       # peak |sample| below this (-60 dBFS) is silence


def load_audio(audio) -> np.ndarray:
  """Any audio the media layer reads (path, (samples, rate), array at 16 kHz) -> 16 kHz mono
  float32; AnimateError if it cannot be read, is empty, non-finite or silent."""
  from vasa_jax import media
  try:
    a = media.as_audio(audio, SAMPLE_RATE)
  except media.MediaError as e:
    raise AnimateError(str(e)) from None
  except (ValueError, TypeError) as e:
    raise AnimateError(f"cannot use the audio: {e}") from None
  a = np.asarray(a, np.float32).reshape(-1)
  if a.size == 0:
    raise AnimateError("the audio is empty")
  if a.size < MIN_AUDIO_S * SAMPLE_RATE:
    raise AnimateError(f"the audio is {a.size / SAMPLE_RATE:.2f} s long; at least "
                       f"{MIN_AUDIO_S:.1f} s is needed")
  if not np.all(np.isfinite(a)):
    raise AnimateError("the audio contains non-finite samples")
  peak = float(np.max(np.abs(a)))
  if peak < SILENCE_PEAK:
    raise AnimateError(f"the audio is silent (peak {20 * math.log10(max(peak, 1e-12)):.0f} "
                       "dBFS); there is no speech to animate")
  return a


def load_image(image) -> np.ndarray:
  """A path, array or PIL image -> uint8 RGB; AnimateError if it cannot be read."""
  from vasa_jax import media
  try:
    return media.load_image(image)
  except media.MediaError as e:
    raise AnimateError(str(e)) from None
  except (ValueError, TypeError) as e:
    raise AnimateError(f"cannot use the image: {e}") from None


# ----------------------------------------------------------------------------- controls

def gaze_radians(gaze):
  if gaze is None:
    return None
  g = np.asarray(gaze, np.float32).reshape(-1)
  if g.shape != (2,) or not np.all(np.isfinite(g)):
    raise AnimateError(f"gaze must be two finite angles (theta, phi) in degrees, got {gaze!r}")
  if np.any(np.abs(g) > 60):
    raise AnimateError(f"gaze angles must be within +-60 degrees, got {tuple(g.tolist())}")
  return np.deg2rad(g)


def emotion_index(emotion):
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


def distance_metres(distance):
  if distance is None:
    return None
  d = float(distance)
  if not (0.3 <= d <= 1.5):
    raise AnimateError(f"distance must be between 0.3 and 1.5 metres, got {distance}")
  return d


def blink_per_minute(rate):
  if rate is None:
    return None
  r = float(rate)
  if not (math.isfinite(r) and 0.0 <= r <= 60.0):
    raise AnimateError(f"blink_rate must be between 0 and 60 blinks a minute, got {rate}")
  return r


def _in_range(name: str, value, lo: float, hi: float, what: str = "") -> float:
  v = float(value)
  if not (math.isfinite(v) and lo <= v <= hi):
    raise AnimateError(f"{name} must be between {lo:g}{what} and {hi:g}, got {value}")
  return v


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """One call's sampling settings. gaze (theta, phi) in degrees, distance in metres, emotion
  a name of EMOTIONS or its index, blink_rate in blinks a minute: None is a dropped condition
  (the model chooses), except distance on a geometry bundle: None holds the portrait's own
  head distance (`sample_motion`). steps / cfg_audio / cfg_gaze / cfg_expression / audio_lead
  None: the bundle's sampler defaults (cfg_expression: the audio guidance of the expression
  codes, None = cfg_audio; audio_lead: frames by which the motion hears the audio ahead).
  head_motion scales the generated head motion about the portrait's pose (0 still, 1 the
  model's, above 1 livelier); emotion_intensity scales the emotion's expression offset;
  mouth_gain scales every generated mouth opening (None: the bundle's, set against footage).
  carry_context=False: every window is conditioned on the portrait's motion only (an
  ablation; windows then need not join smoothly)."""
  gaze: tuple | None = None
  distance: float | None = None
  emotion: str | int | None = None
  cfg_audio: float | None = None
  cfg_gaze: float | None = None
  cfg_expression: float | None = None
  audio_lead: float | None = None
  steps: int | None = None
  seed: int = 0
  head_motion: float = 1.0
  emotion_intensity: float = 1.0
  blink_rate: float | None = None
  mouth_gain: float | None = None
  carry_context: bool = True

  def resolved(self, defaults: "bundle_lib.SamplerDefaults") -> "SampleOptions":
    """These options with the bundle's defaults filled in, every value checked (AnimateError
    names the first bad one)."""
    steps = defaults.steps if self.steps is None else self.steps
    if isinstance(steps, bool) or int(steps) != steps or not 1 <= int(steps) <= MAX_STEPS:
      raise AnimateError(f"steps must be a whole number in [1, {MAX_STEPS}], got {self.steps}")
    steps = int(steps)
    try:
      seed_ok = int(self.seed) == self.seed and 0 <= int(self.seed) <= MAX_SEED
    except (TypeError, ValueError, OverflowError):
      seed_ok = False
    if isinstance(self.seed, bool) or not seed_ok:
      raise AnimateError(f"seed must be a whole number in [0, {MAX_SEED}], got {self.seed}")
    cfg_audio = defaults.cfg_audio if self.cfg_audio is None else self.cfg_audio
    cfg_gaze = defaults.cfg_gaze if self.cfg_gaze is None else self.cfg_gaze
    for name, v in (("cfg_audio", cfg_audio), ("cfg_gaze", cfg_gaze)):
      _in_range(name, v, 0.0, 10.0)
    cfg_expr = defaults.cfg_expression if self.cfg_expression is None else self.cfg_expression
    if cfg_expr is not None:
      _in_range("cfg_expression", cfg_expr, 0.0, 10.0)
    lead = defaults.audio_lead if self.audio_lead is None else self.audio_lead
    _in_range("audio_lead", lead, 0.0, MAX_AUDIO_LEAD)
    gain = defaults.mouth_gain if self.mouth_gain is None else self.mouth_gain
    _in_range("mouth_gain", gain, 0.5, 2.5)
    gaze_radians(self.gaze)
    distance_metres(self.distance)
    emotion_index(self.emotion)
    blink_per_minute(self.blink_rate)
    return dataclasses.replace(
        self, steps=steps, seed=int(self.seed), cfg_audio=float(cfg_audio), cfg_gaze=float(cfg_gaze),
        audio_lead=float(lead), cfg_expression=None if cfg_expr is None else float(cfg_expr),
        mouth_gain=float(gain),
        head_motion=_in_range("head_motion", self.head_motion, 0.0, 3.0, " (still head)"),
        emotion_intensity=_in_range("emotion_intensity", self.emotion_intensity, 0.0, 1.5))


# ----------------------------------------------------------------------------- the engine

class Engine:
  """A bundle's networks, compiled once (see the module docstring). Raises AnimateError for
  a bundle whose parameters do not fit its configs."""

  def __init__(self, bundle: "bundle_lib.Bundle", *, render_batch: int = 8):
    from vasa_jax.models import motion_dit as md
    self.bundle = bundle
    self.where = bundle.label
    self.fl_config, self.md_config = bundle.face_latent_config, bundle.motion_dit_config
    self.kind = bundle.kind
    self.stats = {k: np.asarray(bundle.motion_stats[k], np.float32) for k in ("mean", "std")}
    self.schedule = bundle.schedule
    self.sampler = bundle.sampler
    self.render_batch = int(render_batch)
    mc, dc = self.fl_config.model, self.md_config.model
    try:
      renderer_cls = renderers.renderer_class(self.kind)
    except renderers.RendererError as e:
      raise AnimateError(f"{self.where}: {e}") from None
    self.window, self.context = int(dc.window), int(dc.context)
    self.motion_dim = int(dc.motion_dim)
    if self.motion_dim != POSE_DIM + int(mc.dyn_dim):
      raise AnimateError(f"{self.where}: motion_dit motion_dim {self.motion_dim} does not "
                         f"match the face model's 6 + dyn_dim {POSE_DIM + int(mc.dyn_dim)}")
    self.dit = md.MotionDiT(dc)
    try:
      self._check_params(bundle, renderer_cls)
      bank = bundle.part_bank if renderer_cls.uses_part_bank else None
    except bundle_lib.BundleError as e:
      raise AnimateError(f"{self.where}: {e}") from None
    from vasa_jax.geometry import emotion as emotion_lib
    self.basis = bundle.face_basis
    self.emotion_offsets = emotion_lib.offsets(self.basis)     # [5, dyn_dim]
    self.fl_params = jax.device_put(bundle.face_latent_params)
    self.md_params = jax.device_put(bundle.motion_dit_params)
    self.renderer = renderer_cls(mc, self.fl_params, basis=self.basis, bank=bank,
                                 render_batch=self.render_batch)
    self.size = self.renderer.size          # the side a portrait's mesh is measured at
    from vasa_jax.models import phonetic
    try:
      self.features = jax.jit(phonetic.audio_source(dc, bundle.phonetic_dir))
    except (ValueError, FileNotFoundError) as e:
      raise AnimateError(f"{self.where}: {e}") from None
    dit = self.dit

    def denoise(params, x_t, t, cond, drop):
      return dit.apply({"params": params}, x_t, t, cond, drop)
    self.denoise = denoise

  # -- construction
  def _check_params(self, bundle, renderer_cls):
    from flax import linen as nn

    from vasa_jax.models import motion_dit as md
    basis = bundle.face_basis
    if basis is None:
      raise bundle_lib.BundleError(f"the bundle needs its face basis ({bundle_lib.BASIS_FILE})")
    if basis.dyn_dim != int(self.fl_config.model.dyn_dim):
      raise bundle_lib.BundleError(f"the face basis has {basis.dyn_dim} dynamics dims, the "
                                   f"face model's config {self.fl_config.model.dyn_dim}")
    try:          # the parameter shapes the configs imply (no allocation)
      ref_fl = renderer_cls.reference_params(self.fl_config.model)
      ref_md = nn.meta.unbox(jax.eval_shape(self.dit.init, jax.random.PRNGKey(0),
                                            *md.dummy_inputs(self.md_config.model, 1))["params"])
    except Exception as e:   # a config the code cannot build
      raise bundle_lib.BundleError(f"incompatible model config: {e}") from None
    bundle_lib.check_params(bundle.face_latent_params, ref_fl, "face_latent")
    bundle_lib.check_params(bundle.motion_dit_params, ref_md, "motion_dit")
    if len(bundle.motion_stats["mean"]) != self.motion_dim:
      raise bundle_lib.BundleError("motion statistics do not match motion_dim")

  # -- motion space
  def normalize(self, motion) -> np.ndarray:
    return (np.asarray(motion, np.float32) - self.stats["mean"]) / self.stats["std"]

  def denormalize(self, x) -> np.ndarray:
    return np.asarray(x, np.float32) * self.stats["std"] + self.stats["mean"]

  def controls(self, opts: SampleOptions, model_config=None) -> dict:
    """Unbatched controls for sampling.stream; missing ones are dropped conditions. The
    model has no emotion condition (no labels in real footage): emotion acts as an offset of
    the codes instead (`MotionPost`). model_config: the motion model's (default the offline
    MotionDiT's; the live generator passes its own)."""
    mcfg = self.md_config.model if model_config is None else model_config
    g, d = gaze_radians(opts.gaze), distance_metres(opts.distance)
    emotion_index(opts.emotion)                 # checked here; applied by MotionPost
    e = None
    r = blink_per_minute(opts.blink_rate)
    blink_control = bool(mcfg.get("blink_control", False))
    if r is not None and not blink_control:
      raise AnimateError("this bundle's motion model has no blink-rate control (a geometry "
                         "bundle trained with model.blink_control=True has)")
    mean_d = float(mcfg.distance_mean)
    out = {
        "gaze": np.zeros(2, np.float32) if g is None else g.astype(np.float32),
        "distance": np.float32(mean_d if d is None else d),
        "emotion": np.int32(0 if e is None else e),
        "drop": {"gaze": np.float32(g is None), "distance": np.float32(d is None),
                 "emotion": np.float32(e is None)},
    }
    if blink_control:
      out["blink_rate"] = np.float32(0.0 if r is None else r)
      out["drop"]["blink_rate"] = np.float32(r is None)
    return out


# ----------------------------------------------------------------------------- motion

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


def smooth_pose(pose: np.ndarray, state, alpha: float):
  """Causal exponential smoothing of head poses [n, 6] (or any track [n, k]) across windows:
  (smoothed, state); state None starts at the first frame.
  The sampled head motion has more frame-to-frame jitter than real footage; the EMA keeps its
  slow turns and nods (alpha 0.3: a time constant of about 3 frames, 110 ms). With it the
  measured angular speed and jitter match real footage's (docs/motion_eval)."""
  out = np.empty_like(pose)
  s = pose[0] if state is None else state
  for i, x in enumerate(pose):
    s = s + alpha * (x - s)
    out[i] = s
  return out, s


def gaze_zero(stats: dict) -> np.ndarray:
  """The main gaze (head + eye-in-head rotation, radians) that the gaze control calls (0, 0):
  where the training footage's speakers look on average -- near the camera. The iris measure
  has a per-person offset (the eye corners' midpoint is not the pupil's rest), so the raw
  measured zero is not the camera; the data's mean is."""
  m = np.asarray(stats["mean"], np.float32)
  return np.asarray([m[0] + m[-2], m[1] + m[-1]], np.float32)


class GazeSteer:
  """Steers generated motion windows [n, 6 + dyn] toward an asked main gaze `target` (head +
  eye-in-head rotation, radians, as the data measures it). The slow parts (causal EMAs with time
  constant GAZE_TAU_S, carried across windows so seams stay smooth) of the main gaze and of
  the eye-in-head rotation are moved: the eyes onto `eye_share` of the asked turn away from
  `zero` (the data's mean gaze, `gaze_zero`) about the data's mean eye rotation `eye_mean`
  (within GAZE_EYE_LIMIT_DEG of it), the head onto the rest of the way to the target. Glances,
  nods and saccades faster than that are kept. The model's own gaze condition pulls the same
  way; this makes the asked direction hold whatever the portrait and the audio, with eyes that
  look the asked way rather than back at the camera. move_head=False (a still head): the eyes
  alone take the whole turn; move_eyes=False: the head's own yaw and pitch are steered onto
  `target`, the eyes untouched (`sample_motion` recentres a free head so: only its slow drift,
  over RECENTRE_TAU_S, is pulled back)."""

  def __init__(self, target: np.ndarray, eye_mean: np.ndarray, zero: np.ndarray | None = None,
               *, eye_share: float = GAZE_EYE_SHARE, tau_s: float = GAZE_TAU_S,
               move_head: bool = True, move_eyes: bool = True,
               start: np.ndarray | None = None):
    self.target = np.asarray(target, np.float32)
    self.eye_mean = np.asarray(eye_mean, np.float32)
    zero = np.zeros(2, np.float32) if zero is None else np.asarray(zero, np.float32)
    self.lim = np.float32(np.radians(GAZE_EYE_LIMIT_DEG))
    self.eye_target = np.clip(self.eye_mean + float(eye_share) * (self.target - zero),
                              self.eye_mean - self.lim, self.eye_mean + self.lim)
    self.move_head, self.move_eyes = bool(move_head), bool(move_eyes)
    self.alpha = 1.0 / max(tau_s * FPS, 1.0)
    # where the slow main gaze starts: the first window's mean (an asked gaze acts at once),
    # or `start` (the recentring starts at the portrait's own gaze, so the model's early turns
    # pass and only a lasting one is pulled back)
    self.slow = None if start is None else np.asarray(start, np.float32)
    self.slow_eye = None

  def __call__(self, m: np.ndarray) -> np.ndarray:
    m = np.array(m, np.float32, copy=True)
    eye = m[:, -2:].copy()
    # the steered direction: the main gaze (head + eyes), or with the eyes left alone the head
    # itself (a head turned away while the eyes look back is still turned away)
    g = m[:, :2] + eye if self.move_eyes else m[:, :2].copy()
    slow, self.slow = smooth_pose(g, g.mean(0) if self.slow is None else self.slow, self.alpha)
    corr = self.target - slow
    if not self.move_eyes:
      new_eye = eye                         # the head turns the whole way
    else:
      if not self.move_head:
        eye_corr = corr                     # the eyes turn the whole way
      else:
        slow_eye, self.slow_eye = smooth_pose(
            eye, eye.mean(0) if self.slow_eye is None else self.slow_eye, self.alpha)
        eye_corr = self.eye_target - slow_eye
      new_eye = np.clip(eye + eye_corr, self.eye_mean - self.lim, self.eye_mean + self.lim)
      m[:, -2:] = new_eye
    if self.move_head:
      m[:, :2] += corr - (new_eye - eye)    # the head turns the rest of the way
    return m


def lead_audio(audio_16k, frames: float) -> np.ndarray:
  """The audio advanced by `frames` video frames (a fraction is fine): sample i becomes sample
  i + frames * 640, the end padded with silence, so frame t's motion is conditioned on what is
  said at t + frames. The stage-2 targets were measured by the tracker's causal smoothing
  filter, which delays the lips by 0.4 frames; the bundle's `audio_lead` undoes that delay
  (chosen on the train split, where the mesh lip-sync evaluator reads the footage at offset 0:
  docs/motion_eval/audio_lead.md)."""
  a = np.asarray(audio_16k, np.float32).reshape(-1)
  n = int(round(float(frames) * (SAMPLE_RATE // FPS)))
  if n <= 0:
    return a
  return np.concatenate([a[n:], np.zeros(min(n, len(a)), np.float32)])


def open_limit(lids: np.ndarray, own: np.ndarray, limit: float = MAX_LID_OPEN) -> np.ndarray:
  """Lid openness [T, 2] eased off above `limit` x the portrait's own `own` [2] (a soft knee
  over the last third below the limit): a lid opened wider than the photo's shows sclera and
  lid the photo does not; closing is untouched."""
  own = np.maximum(np.asarray(own, np.float32), 1e-3)
  knee = own * (1.0 + (limit - 1.0) / 3.0)
  room = own * limit - knee
  over = np.maximum(lids - knee, 0.0)
  return np.where(lids > knee, knee + room * np.tanh(over / np.maximum(room, 1e-6)), lids
                  ).astype(lids.dtype)


class MotionPost:
  """The host-side steps that follow the sampler, window by window, in this order, with the
  state they carry across windows (so a stream's windows join as one run):

  1. seam: a window starts where the previous one was heading (`join_seam`);
  2. pose EMA: a geometry bundle's head pose is smoothed (`smooth_pose`, `pose_smoothing`);
  3. mouth gain: openings scaled about closed lips (`codes.open_mouth`, opts.mouth_gain;
     `mouth_base` the portrait's own canonical inner-lip gap);
  4. emotion: the emotion's offset of the expression and lid codes, times
     opts.emotion_intensity (brows, lip corners and lids change, the lips keep syncing);
  5. recentring: no gaze asked, the head's slow drift (slower than RECENTRE_TAU_S) is pulled
     back to the portrait's own head pose (`GazeSteer`, head only);
  6. head motion: opts.head_motion scales the head motion about the portrait's pose;
  7. gaze: an asked gaze is steered (`GazeSteer` about `gaze_zero`; head_motion 0 leaves it
     to the eyes);
  8. limits: rotations ease off past MAX_TURN_DEG of the portrait's and lids past
     MAX_LID_OPEN x its openness (the warp only shows what the photo shows).

  The model's next window is conditioned on its own output, before these steps."""

  def __init__(self, engine: Engine, portrait_motion: np.ndarray, opts: SampleOptions, *,
               pose_smoothing: float = POSE_SMOOTHING, mouth_base: float = 0.0):
    self.ref = np.asarray(portrait_motion, np.float32)
    self.basis = engine.basis
    self.opts = opts
    self.pose_smoothing = float(pose_smoothing)
    self.mouth_base = float(mouth_base)
    e = emotion_index(opts.emotion)
    self.offset = (engine.emotion_offsets[e] * opts.emotion_intensity
                   if e is not None else None)
    self.steer = self.recentre = None
    if opts.gaze is not None:
      zero = gaze_zero(engine.stats)
      self.steer = GazeSteer(gaze_radians(opts.gaze) + zero, engine.stats["mean"][-2:], zero,
                             move_head=opts.head_motion > 0)
    else:
      own = np.asarray(self.ref[:2], np.float32)          # the portrait's head yaw, pitch
      self.recentre = GazeSteer(own, engine.stats["mean"][-2:], tau_s=RECENTRE_TAU_S,
                                move_eyes=False, start=own)
    k_exp = engine.basis.exp_dim
    self.lid_dims = slice(POSE_DIM + k_exp, POSE_DIM + k_exp + 2)
    self.tail = None
    self.pose_state = None
    self.offset_from, self.ramp_done = None, 0      # an emotion offset being eased in
    self._engine, self._kw = engine, dict(pose_smoothing=pose_smoothing, mouth_base=mouth_base)

  def retarget(self, opts: SampleOptions) -> "MotionPost":
    """The steps for new options mid-stream (a live session's controls), carrying this one's
    state: the seam, the pose EMA and the slow gaze, so nothing jumps; a new emotion offset
    eases in over EMOTION_RAMP frames."""
    new = MotionPost(self._engine, self.ref, opts, **self._kw)
    new.tail, new.pose_state = self.tail, self.pose_state
    old = self.steer or self.recentre
    for tgt in (new.steer, new.recentre):
      if tgt is not None and old is not None:
        tgt.slow = old.slow
        if tgt.move_eyes and old.move_eyes:
          tgt.slow_eye = old.slow_eye
    now = self._offset_now()
    if not (now is None and new.offset is None):
      dim = self._engine.motion_dim - POSE_DIM
      new.offset_from = np.zeros(dim, np.float32) if now is None else now
      if new.offset is None:
        new.offset = np.zeros(dim, np.float32)
    return new

  def _offset_now(self):
    """The emotion offset applied to the last frame."""
    if self.offset_from is None:
      return self.offset
    w = min(self.ramp_done / EMOTION_RAMP, 1.0)
    return self.offset_from + w * (self.offset - self.offset_from)

  def __call__(self, m: np.ndarray) -> np.ndarray:
    """De-normalised motion [n, D] of the next window -> the motion shown."""
    m = np.array(m, np.float32, copy=True)
    ref, opts = self.ref, self.opts
    if self.tail is not None:
      m = join_seam(self.tail, m)
    self.tail = m[-2:].copy()
    if self.pose_smoothing < 1.0:
      m[:, :POSE_DIM], self.pose_state = smooth_pose(m[:, :POSE_DIM], self.pose_state,
                                                     self.pose_smoothing)
    if opts.mouth_gain != 1.0:
      m[:, POSE_DIM:] = codes_lib.open_mouth(m[:, POSE_DIM:], ref[POSE_DIM:], self.mouth_base,
                                             self.basis, opts.mouth_gain)
    if self.offset_from is not None:          # easing into a new emotion (retarget)
      w = np.minimum((self.ramp_done + 1 + np.arange(len(m))) / EMOTION_RAMP, 1.0)[:, None]
      m[:, POSE_DIM:] += self.offset_from + w * (self.offset - self.offset_from)
      self.ramp_done += len(m)
    elif self.offset is not None:
      m[:, POSE_DIM:] += self.offset
    if self.recentre is not None:
      m = self.recentre(m)
    if opts.head_motion != 1.0:
      m[:, :POSE_DIM] = ref[:POSE_DIM] + opts.head_motion * (m[:, :POSE_DIM] - ref[:POSE_DIM])
    if self.steer is not None:
      m = self.steer(m)
    lim = np.radians(np.asarray(MAX_TURN_DEG, np.float32))
    m[:, :3] = ref[:3] + lim * np.tanh((m[:, :3] - ref[:3]) / lim)
    m[:, self.lid_dims] = open_limit(m[:, self.lid_dims], ref[self.lid_dims])
    return m


def sample_motion(engine: Engine, portrait_motion: np.ndarray, audio_16k: np.ndarray,
                  opts: SampleOptions = SampleOptions(), *,
                  pose_smoothing: float = POSE_SMOOTHING, blink_cfg: float = BLINK_CFG,
                  mouth_base: float = 0.0) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (start frame, de-normalised motion [n, 6 + dyn_dim]) window by window.

  Each window of the bundle's MotionDiT is conditioned on the last `context` generated frames
  (the first on the portrait's own motion), with multi-condition CFG (audio, gaze, and the
  blink rate where asked), along the bundle's diffusion schedule; an asked gaze is a condition
  of the model. No distance asked: a geometry bundle holds the portrait's own framing (each
  window is conditioned on the portrait's head distance, so a long clip does not slowly zoom
  in or out as windows follow each other). Then `MotionPost` (seam, pose smoothing, mouth
  gain, emotion, recentring, head motion, gaze steer, limits) gives the motion shown."""
  opts = opts.resolved(engine.sampler)
  feats = engine.features(jnp.asarray(lead_audio(audio_16k, opts.audio_lead)))
  ctrl = engine.controls(opts)
  ref = np.asarray(portrait_motion, np.float32)
  if opts.gaze is not None:
    ctrl["gaze"] = (ctrl["gaze"] + gaze_zero(engine.stats)).astype(np.float32)
  if opts.distance is None:
    ctrl["distance"] = np.float32(np.clip(ref[5], *DISTANCE_RANGE))
    ctrl["drop"]["distance"] = np.float32(0.0)
  cfg = {"audio": opts.cfg_audio, "gaze": opts.cfg_gaze if opts.gaze is not None else 0.0}
  if opts.cfg_expression is not None and opts.cfg_expression != opts.cfg_audio:
    # the expression codes (lips, jaw, cheeks, brows) get their own audio guidance; head pose,
    # lids and gaze keep cfg_audio
    k_exp = engine.basis.exp_dim
    cfg["audio"] = tuple([opts.cfg_audio] * POSE_DIM + [opts.cfg_expression] * k_exp
                         + [opts.cfg_audio] * (engine.motion_dim - POSE_DIM - k_exp))
  if opts.blink_rate is not None and blink_cfg:
    cfg["blink_rate"] = float(blink_cfg)
  post = MotionPost(engine, ref, opts, pose_smoothing=pose_smoothing, mouth_base=mouth_base)
  k = engine.context
  first = None
  if k:
    silence = engine.features(jnp.zeros(k * (SAMPLE_RATE // FPS), jnp.float32))
    first = {"motion": np.tile(engine.normalize(ref)[None], (k, 1)),
             "audio": np.asarray(silence)}
  for start, m in sampling.stream(
      engine.denoise, feats, ctrl, window=engine.window, context=k, steps=opts.steps, cfg=cfg,
      rng=jax.random.PRNGKey(int(opts.seed)), first_prev=first, motion_dim=engine.motion_dim,
      params=engine.md_params, carry_context=opts.carry_context, schedule=engine.schedule,
      eta=engine.sampler.eta):
    yield start, post(engine.denormalize(m))

"""Live: the portrait talks as the audio arrives (a microphone, a speech synthesiser, a call).

    session = Animator().live("portrait.jpg")          # compiles, prepares the photo
    session.push(samples, rate=48000)                  # any length, as it arrives
    for frame in session.frames(timeout=0.1):          # LiveFrame(index, audio_time_s, image, ..)
        show(frame.image)
    session.set(gaze=(10, 0), emotion="happy")         # controls change mid-session
    session.close(); session.stats()

The offline sampler hears each window's whole 2 s of audio and more; live motion cannot wait
for the future. The bundle's live generator (configs/motion_dit.py:live, stored beside the
offline MotionDiT) is the same network over short windows: each window of W = block + ahead
frames is conditioned on the last K frames shown and keeps its first `block` frames; the
`ahead` frames are only audio look-ahead. Its audio features are computed over a fixed stretch
[audio_left | K | W] frames ending at the window, so they need no audio past it (training
computes them the same way, `data.audio_left`).

So block b (frames 4b..4b+3 with the defaults) runs as soon as the audio through frame 4b+4
has arrived: frame 4b waits 4.5 frames (180 ms) of audio, then one block's sampling and one
frame's render. The motion depends only on the audio samples, the controls and the seed, never
on how the audio was cut into pushes or how fast the machine is (`LiveMotion`); the display
clock (`Pacer`) alone drops or repeats frames.

Frame t shows the audio at its centre, `audio_time_s = (t + 0.5) / 25`. Its latency is the
wall time from that sample's arrival to the frame being shown.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import bundle as bundle_lib
from vasa_jax import engine as engine_lib
from vasa_jax import sampling
from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from vasa_jax.engine import AnimateError, SampleOptions

QUIET_DBFS = -45.0        # a frame quieter than this (RMS) is a pause ...
QUIET_HANGOVER = 5        # ... once this many such frames follow the last voiced one (200 ms)
CLOSE_FRAMES = 3          # then the lips ease to the portrait's own over this many frames
DELAY_MARGIN_S = 0.06     # the pacer's delay past the look-ahead wait: one block's compute
DEFAULT_BLINK_RATE = 18.0  # blinks a minute asked of a live face unless a call says otherwise


class NoLiveModel(AnimateError):
  """The bundle has no live generator."""


# ----------------------------------------------------------------------------- the model

class LiveModel:
  """A bundle's live generator, compiled: its MotionDiT, window shape, sampler defaults and
  the jitted block sampler (one compile per set of guidance branches; the scales, controls and
  audio are traced, so changing them mid-session does not recompile)."""

  def __init__(self, engine: engine_lib.Engine):
    from flax import linen as nn

    from vasa_jax.models import motion_dit as md
    b = engine.bundle
    if b.live_config is None:
      raise NoLiveModel(f"{engine.where} has no live generator; export one with `vasa-jax "
                        "export ... --live-motion-dit WORKDIR` (configs/motion_dit.py:live)")
    cfg = b.live_config
    try:
      bundle_lib.check_live(engine.md_config, cfg, b.live_params)
      ref = nn.meta.unbox(jax.eval_shape(md.MotionDiT(cfg.model).init, jax.random.PRNGKey(0),
                                         *md.dummy_inputs(cfg.model, 1))["params"])
      bundle_lib.check_params(b.live_params, ref, "live_motion_dit")
    except bundle_lib.BundleError as e:
      raise AnimateError(f"{engine.where}: {e}") from None
    self.engine, self.config = engine, cfg
    self.block = int(cfg.live.block)
    self.window = int(cfg.model.window)
    self.ahead = self.window - self.block
    self.context = int(cfg.model.context)
    self.left = int(cfg.data.get("audio_left", 0))
    self.span = self.left + self.context + self.window       # frames featurised per block
    own = bundle_lib.SamplerDefaults.from_config(cfg)
    off = engine.sampler                                       # mouth gain: set on footage
    self.sampler = dataclasses.replace(own, mouth_gain=off.mouth_gain,
                                       cfg_expression=off.cfg_expression)
    # Set against the offline sampler on clips the evaluation does not use
    # (tools/live_calibrate.py): 4-step 5-frame windows give 0.64 of its head-rotation spread
    # and, after the offline pose EMA, 0.31 of its speed; x1.6 without the EMA: 0.93-1.0 and
    # 0.75.
    self.head_gain = float(cfg.sampler.get("head_gain", 1.0))
    self.pose_smoothing = float(cfg.sampler.get("pose_smoothing", engine_lib.POSE_SMOOTHING))
    self.params = jax.device_put(b.live_params)
    self.schedule = engine.schedule
    dit = md.MotionDiT(cfg.model)
    self.denoise = lambda p, x_t, t, cond, drop: dit.apply({"params": p}, x_t, t, cond, drop)
    self._samplers: dict = {}
    self._lock = threading.Lock()

  def sampler_for(self, branches: tuple, steps: int):
    """jit(params, cond, rng, scales) -> x0 [1, W, D] for guidance on `branches`."""
    key = (branches, int(steps))
    with self._lock:
      if key not in self._samplers:
        shape = (1, self.window, self.engine.motion_dim)
        denoise, schedule, eta = self.denoise, self.schedule, self.sampler.eta

        def fn(params, cond, rng, scales):
          cfg = {name: scales[name] for name in branches}
          return sampling.sample(lambda *a: denoise(params, *a), cond, shape=shape, rng=rng,
                                 steps=steps, schedule=schedule, cfg=cfg, eta=eta)
        self._samplers[key] = jax.jit(fn)
      return self._samplers[key]


def live_model(engine: engine_lib.Engine) -> LiveModel:
  """The engine's live generator, compiled on first use and kept with the engine;
  NoLiveModel if its bundle has none."""
  if engine.__dict__.get("_live") is None:
    engine.__dict__["_live"] = LiveModel(engine)
  return engine.__dict__["_live"]


def live_renderer(engine: engine_lib.Engine):
  """A second renderer of the engine's bundle at one frame a call (a live frame is shown as
  soon as it is drawn), kept with the engine."""
  if engine.__dict__.get("_live_renderer") is None:
    cls = type(engine.renderer)
    bank = engine.bundle.part_bank if cls.uses_part_bank else None
    engine.__dict__["_live_renderer"] = cls(engine.fl_config.model, engine.fl_params,
                                            basis=engine.basis, bank=bank, render_batch=1)
  return engine.__dict__["_live_renderer"]


# ----------------------------------------------------------------------------- blinks

BLINK_PROFILE = np.asarray([0.6, 0.2, 0.06, 0.12, 0.4, 0.75, 0.93], np.float32)  # x open lids
MIN_BLINK_GAP_S = 1.2


class BlinkKeeper:
  """Keeps a live face blinking at `rate` a minute. A window of a few frames rarely starts a
  blink on its own (a blink spans two or three blocks), so when the generated lids have not
  closed for the next interval (drawn, seeded, from an exponential law over a 1.2 s floor, as
  real blink intervals are), a blink is played on the lids: the shown openness times
  BLINK_PROFILE over 7 frames (280 ms: close, shut, reopen). A blink the model makes itself
  (lids under half the portrait's openness) restarts the clock. Causal and deterministic."""

  def __init__(self, rate: float, own_lids: np.ndarray, lid_dims: slice, seed: int):
    self.rate = float(rate)
    self.open = float(np.mean(own_lids))
    self.dims = lid_dims
    self.rng = np.random.default_rng([int(seed), 7919])
    self.since = 0
    self.phase = -1                    # index into BLINK_PROFILE while a blink plays
    self.next_gap = self._draw()

  def _draw(self) -> int:
    if self.rate <= 0:
      return 1 << 30
    mean = 60.0 / self.rate - MIN_BLINK_GAP_S
    return int(round(FPS * (MIN_BLINK_GAP_S + self.rng.exponential(max(mean, 0.1)))))

  def __call__(self, m: np.ndarray) -> np.ndarray:
    m = np.array(m, np.float32, copy=True)
    for i in range(len(m)):
      if self.phase < 0:
        if m[i, self.dims].mean() < 0.5 * self.open:        # the model blinked
          self.since, self.next_gap = 0, self._draw()
          continue
        self.since += 1
        if self.since >= self.next_gap:
          self.phase = 0
      if self.phase >= 0:
        m[i, self.dims] *= BLINK_PROFILE[self.phase]
        self.phase += 1
        if self.phase == len(BLINK_PROFILE):
          self.phase, self.since, self.next_gap = -1, 0, self._draw()
    return m


# ----------------------------------------------------------------------------- motion

class LiveMotion:
  """Motion block by block from audio pushed as it arrives.

  `push(samples)` (16 kHz float) returns the blocks that became computable, each (start frame,
  de-normalised motion [block, D]) after `MotionPost`; `finish()` ends the audio (silence
  fills the last look-ahead) and returns the rest, cut to the whole frames received. The output
  depends only on the samples, the options and the seed, not on the push sizes."""

  def __init__(self, model: LiveModel, portrait_motion: np.ndarray, opts: SampleOptions, *,
               mouth_base: float = 0.0, pose_smoothing: float | None = None,
               blink_cfg: float = engine_lib.BLINK_CFG):
    self.model, self.engine = model, model.engine
    self.ref = np.asarray(portrait_motion, np.float32)
    self.blink_cfg = float(blink_cfg)
    self._buf = np.zeros(SAMPLE_RATE * 4, np.float32)
    self.received = 0                       # samples pushed
    self.block_index = 0                    # the next block to compute
    self.ended = False
    self.quiet, self.mouth_gain = QUIET_HANGOVER, 0.0     # before any audio: at rest
    k = model.context
    self.prev = np.tile(self.engine.normalize(self.ref)[None], (k, 1)).astype(np.float32)
    self.post = None
    self._apply(opts, mouth_base=mouth_base, first=True,
                pose_smoothing=model.pose_smoothing if pose_smoothing is None else pose_smoothing)

  # -- options
  def _apply(self, opts: SampleOptions, *, first: bool = False, **kw) -> None:
    eng = self.engine
    opts = opts.resolved(self.model.sampler)
    ctrl = eng.controls(opts, self.model.config.model)
    if opts.gaze is not None:
      ctrl["gaze"] = (ctrl["gaze"] + engine_lib.gaze_zero(eng.stats)).astype(np.float32)
    if opts.distance is None:
      ctrl["distance"] = np.float32(np.clip(self.ref[5], *engine_lib.DISTANCE_RANGE))
      ctrl["drop"]["distance"] = np.float32(0.0)
    audio = np.full(eng.motion_dim, opts.cfg_audio, np.float32)
    if opts.cfg_expression is not None:
      k_exp = eng.basis.exp_dim
      audio[engine_lib.POSE_DIM:engine_lib.POSE_DIM + k_exp] = opts.cfg_expression
    scales = {"audio": audio, "gaze": np.float32(opts.cfg_gaze),
              "blink_rate": np.float32(self.blink_cfg)}
    branches = ["audio"]
    if opts.gaze is not None and opts.cfg_gaze:
      branches.append("gaze")
    if opts.blink_rate is not None and self.blink_cfg and "blink_rate" in ctrl:
      branches.append("blink_rate")
    # the head motion the short windows under-disperse, scaled back (model.head_gain)
    shown = dataclasses.replace(opts, head_motion=opts.head_motion * self.model.head_gain)
    if first:
      self.post = engine_lib.MotionPost(eng, self.ref, shown, **kw)
    else:
      self.post = self.post.retarget(shown)
    rate = opts.blink_rate if opts.blink_rate is not None else DEFAULT_BLINK_RATE
    if first or self.blinks.rate != rate:
      old = None if first else self.blinks
      self.blinks = BlinkKeeper(rate, self.ref[self.post.lid_dims], self.post.lid_dims,
                                opts.seed)
      if old is not None:                   # a blink under way finishes
        self.blinks.since, self.blinks.phase = old.since, old.phase
    # the controls with their batch axis, once per change (not per block)
    self.opts, self.ctrl = opts, jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], ctrl)
    self.scales = {n: jnp.asarray(scales[n]) for n in branches}
    self.sample = self.model.sampler_for(tuple(branches), opts.steps)
    self.lead = int(round(opts.audio_lead * SAMPLES_PER_FRAME))

  def set(self, **changes) -> None:
    """New controls (SampleOptions fields) from the next block on; AnimateError for a bad
    value (the old ones stay)."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(SampleOptions)}
    if unknown:
      raise TypeError(f"unexpected arguments {sorted(unknown)}")
    if {"seed", "steps"} & set(changes):
      raise AnimateError("seed and steps are fixed for a live session")
    self._apply(dataclasses.replace(self.opts, **changes))

  # -- audio
  def push(self, samples) -> list[tuple[int, np.ndarray]]:
    if self.ended:
      raise AnimateError("the live session's audio has ended")
    a = np.asarray(samples, np.float32).reshape(-1)
    if a.size and not np.all(np.isfinite(a)):
      raise AnimateError("the audio contains non-finite samples")
    need = self.received + a.size
    if need > self._buf.size:
      grown = np.zeros(max(need, 2 * self._buf.size), np.float32)
      grown[:self.received] = self._buf[:self.received]
      self._buf = grown
    self._buf[self.received:need] = a
    self.received = need
    return self._run(self.received)

  def audio(self) -> np.ndarray:
    """The samples pushed so far (16 kHz)."""
    return self._buf[:self.received].copy()

  def finish(self) -> list[tuple[int, np.ndarray]]:
    """Ends the audio: the blocks left, up to the last whole frame received."""
    frames = self.received // SAMPLES_PER_FRAME
    out = self._run(None, until_frame=frames)
    self.ended = True
    return [(s, m[:max(0, min(len(m), frames - s))]) for s, m in out if s < frames]

  def ready_at_sample(self, b: int) -> int:
    """Samples that must have arrived before block b can run."""
    m = self.model
    return SAMPLES_PER_FRAME * (m.block * b + m.window) + self.lead

  def _run(self, have, until_frame: int | None = None):
    out = []
    while True:
      b = self.block_index
      if until_frame is not None:
        if b * self.model.block >= until_frame:
          break
      elif self.ready_at_sample(b) > have:
        break
      out.append((b * self.model.block, self._block(b)))
      self.block_index += 1
    return out

  def _window_audio(self, b: int) -> np.ndarray:
    """The samples of block b's feature stretch (zeros before the start and past the end)."""
    m = self.model
    lo = SAMPLES_PER_FRAME * (m.block * b - m.context - m.left) + self.lead
    n = SAMPLES_PER_FRAME * m.span
    out = np.zeros(n, np.float32)
    a0, a1 = max(lo, 0), min(lo + n, self.received)
    if a1 > a0:
      out[a0 - lo:a1 - lo] = self._buf[a0:a1]
    return out

  def _block(self, b: int) -> np.ndarray:
    m, eng = self.model, self.engine
    feats = eng.features(jnp.asarray(self._window_audio(b))[None])      # [1, span, A]
    cond = dict(self.ctrl)
    cond.update(audio=feats[:, m.left + m.context:], audio_mask=jnp.ones((1, m.window)),
                prev_audio=feats[:, m.left:m.left + m.context],
                prev_motion=jnp.asarray(self.prev)[None], prev_mask=jnp.ones((1, m.context)))
    rng = jax.random.fold_in(jax.random.PRNGKey(self.opts.seed), b)
    x0 = np.asarray(self.sample(m.params, cond, rng, self.scales))[0]   # [W, D]
    kept = x0[:m.block]
    self.prev = np.concatenate([self.prev, kept])[-m.context:]
    shown = self.post(eng.denormalize(kept))
    return self.blinks(self._rest_mouth(b, shown))

  def _rest_mouth(self, b: int, m: np.ndarray) -> np.ndarray:
    """In a pause (QUIET_DBFS for QUIET_HANGOVER frames) the lips ease to the portrait's own
    over CLOSE_FRAMES frames; they open again with the first voiced frame. A model trained
    on talking footage rests with its lips a little apart; a listening face closes them."""
    from vasa_jax.geometry import codes as codes_lib
    m = np.array(m, np.float32, copy=True)
    n0 = SAMPLES_PER_FRAME * self.model.block * b + self.lead
    for i in range(len(m)):
      lo = n0 + SAMPLES_PER_FRAME * i
      x = self._buf[max(lo, 0):max(min(lo + SAMPLES_PER_FRAME, self.received), 0)]
      rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
      voiced = 20 * np.log10(max(rms, 1e-9)) > QUIET_DBFS
      self.quiet = 0 if voiced else self.quiet + 1
      target = 1.0 if self.quiet < QUIET_HANGOVER else 0.0
      self.mouth_gain = target if target > self.mouth_gain else max(
          target, self.mouth_gain - 1.0 / CLOSE_FRAMES)
      if self.mouth_gain < 1.0:
        base = self.post.mouth_base
        m[i:i + 1, engine_lib.POSE_DIM:] = codes_lib.open_mouth(
            m[i:i + 1, engine_lib.POSE_DIM:], self.ref[engine_lib.POSE_DIM:], base,
            self.engine.basis, self.mouth_gain, about=base)
    return m


def live_motion(model: LiveModel, portrait_motion, audio_16k, opts=SampleOptions(), *,
                chunks=None, **kw) -> np.ndarray:
  """The whole live motion [T, D] of a clip pushed in `chunks` (sizes; default one push)."""
  lm = LiveMotion(model, portrait_motion, opts, **kw)
  a = np.asarray(audio_16k, np.float32).reshape(-1)
  parts, pos = [], 0
  for n in (chunks or [a.size]):
    parts += lm.push(a[pos:pos + n])
    pos += n
  if pos < a.size:
    parts += lm.push(a[pos:])
  parts += lm.finish()
  return np.concatenate([m for _, m in parts if len(m)], 0)


# ----------------------------------------------------------------------------- resampling

class StreamResampler:
  """Any input rate -> 16 kHz, chunk by chunk, the same whatever the chunking: a stateful
  low-pass (8th-order Butterworth below 7.6 kHz) then linear interpolation on a running
  clock."""

  def __init__(self, rate: int):
    self.rate = int(rate)
    if self.rate < 8000 or self.rate > 384000:
      raise AnimateError(f"unsupported audio rate {rate} Hz (8000-384000)")
    self.step = self.rate / SAMPLE_RATE
    self.sos = self.zi = None
    if self.rate > SAMPLE_RATE:
      from scipy import signal
      self.sos = signal.butter(8, 7600, fs=self.rate, output="sos")
      self.zi = np.zeros((self.sos.shape[0], 2))
    self.t = 0.0             # the next output sample's position on the input clock
    self.offset = 0          # input samples consumed before `tail`
    self.tail = np.zeros(0, np.float32)

  def __call__(self, x) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(-1)
    if self.rate == SAMPLE_RATE:
      return x.astype(np.float32)
    if self.sos is not None and x.size:
      from scipy import signal
      x, self.zi = signal.sosfilt(self.sos, x, zi=self.zi)
    buf = np.concatenate([self.tail, x])
    end = self.offset + buf.size - 1         # the last input position we can interpolate to
    n = max(0, int(np.floor((end - self.t) / self.step)) + 1) if end >= self.t else 0
    pos = self.t + self.step * np.arange(n)
    i = np.floor(pos).astype(np.int64) - self.offset
    frac = pos - np.floor(pos)
    hi = np.minimum(i + 1, buf.size - 1)
    out = buf[i] * (1 - frac) + buf[hi] * frac if n else np.zeros(0)
    self.t += self.step * n
    keep = int(np.floor(self.t)) - self.offset
    keep = min(max(keep, 0), buf.size)
    self.tail, self.offset = buf[keep:], self.offset + keep
    return out.astype(np.float32)


def as_mono_float(samples, fmt: str | None = None) -> np.ndarray:
  """int16 / int32 / float samples, mono [n] or [n, channels] -> float32 mono in [-1, 1]."""
  a = np.asarray(samples)
  if a.dtype == np.int16:
    a = a.astype(np.float32) / 32768.0
  elif a.dtype == np.int32:
    a = a.astype(np.float32) / 2147483648.0
  else:
    a = a.astype(np.float32)
  if a.ndim == 2:
    a = a.mean(-1)
  return a.reshape(-1)


# ----------------------------------------------------------------------------- session

@dataclasses.dataclass
class LiveFrame:
  """One frame of a live session. audio_time_s: the audio instant it shows (its centre);
  arrived_at: wall time (time.perf_counter) that audio sample arrived; ready_at: when the
  frame was rendered; due_at: when the pacer should show it (arrived_at + the delay)."""
  index: int
  audio_time_s: float
  image: np.ndarray
  motion: np.ndarray
  arrived_at: float
  ready_at: float
  due_at: float


class LiveSession:
  """A portrait that talks as audio is pushed (see the module docstring). Two workers run
  beside the caller: motion (blocks, as soon as their audio is in) and render (frame by
  frame). `frames()` yields rendered frames in order, pasted back into the photo downscaled
  to `max_side` (512: a frame is drawn in about 25 ms on a 2-core CPU). Silence pushed gives
  a listening face: the generator's own idle motion, blinks (BlinkKeeper, 18 a minute unless
  set) and lips at rest (`LiveMotion._rest_mouth`). drop_late (a display that cannot wait,
  e.g. WebRTC): a frame already past its slot is not drawn while a newer one waits, so a slow
  machine keeps the latency and shows fewer frames; otherwise (recording, evaluation) every
  frame is drawn."""

  def __init__(self, anim, image, *, delay_s: float | None = None, crop_only: bool = False,
               max_side: int = 512, drop_late: bool = False, **options):
    eng = anim.engine
    self.model = live_model(eng)
    opts = anim._options(options)
    if opts.blink_rate is None and self.model.config.model.get("blink_control", False):
      opts = dataclasses.replace(opts, blink_rate=DEFAULT_BLINK_RATE)
    opts.resolved(self.model.sampler)                     # bad options before the photo
    from vasa_jax import portrait as portrait_lib
    portrait = image if hasattr(image, "motion") else portrait_lib.encode(
        eng, image, anim.faces, crop_only=crop_only, max_output_side=int(max_side))
    self.portrait = portrait
    self.renderer = live_renderer(eng)
    self.renderer.reset(portrait)
    from vasa_jax.geometry import codes as codes_lib
    mouth_base = float(codes_lib.inner_gap(portrait.geometry.codes.canonical[0]))
    self.motion = LiveMotion(self.model, portrait.motion, opts, mouth_base=mouth_base,
                             blink_cfg=anim.blink_cfg)
    m = self.model
    self.delay_s = float(delay_s) if delay_s is not None else (
        (m.window - 0.5) * SAMPLES_PER_FRAME / SAMPLE_RATE + self.motion.lead / SAMPLE_RATE
        + DELAY_MARGIN_S)
    self._resamplers: dict = {}
    self._arrivals: collections.deque = collections.deque()   # (samples after push, wall)
    self._arr_lock = threading.Lock()
    self._audio_q: queue.Queue = queue.Queue()
    self._render_q: queue.Queue = queue.Queue()
    self._out_q: queue.Queue = queue.Queue()
    self._error: BaseException | None = None
    self._closed = False
    self.started_at = None
    self.times = {"block_s": [], "render_s": []}
    self.rendered = 0
    self.skipped = 0                 # frames not drawn because they were late (drop_late)
    self.drop_late = bool(drop_late)
    self._warm()
    self._workers = [threading.Thread(target=self._motion_worker, daemon=True, name="live-motion"),
                     threading.Thread(target=self._render_worker, daemon=True, name="live-render")]
    for w in self._workers:
      w.start()

  def _warm(self) -> None:
    """Compiles the block sampler and the renderer before the first push."""
    t0 = time.perf_counter()
    probe = LiveMotion(self.model, self.portrait.motion, self.motion.opts)
    blocks = probe.push(np.zeros(probe.ready_at_sample(0), np.float32))
    for _ in self.renderer.render(self.portrait, blocks[0][1][:1]):
      pass
    self.renderer.reset(self.portrait)
    self.compile_s = time.perf_counter() - t0

  # -- input
  def push(self, samples, rate: int = SAMPLE_RATE) -> None:
    """Audio as it arrives: any length, int16 / float, mono [n] or [n, channels], at `rate`."""
    if self._closed:
      raise AnimateError("the live session is closed")
    self._raise_worker_error()
    now = time.perf_counter()
    if self.started_at is None:
      self.started_at = now
    a = as_mono_float(samples)
    if rate != SAMPLE_RATE:
      rs = self._resamplers.get(rate)
      if rs is None:
        rs = self._resamplers[rate] = StreamResampler(rate)
      a = rs(a)
    self._audio_q.put(("audio", a, now))

  def set(self, **changes) -> None:
    """New controls (gaze, emotion, emotion_intensity, head_motion, blink_rate, distance,
    mouth_gain, cfg_*), from the next block on."""
    probe = dataclasses.replace(self.motion.opts, **{
        k: v for k, v in changes.items() if k not in ("seed", "steps")})
    probe.resolved(self.model.sampler)                     # bad values raise here, at once
    self._audio_q.put(("set", changes, None))

  def close(self) -> None:
    """Ends the audio; the frames left are still rendered (frames() then ends)."""
    if not self._closed:
      self._closed = True
      self._audio_q.put(("end", None, None))

  # -- output
  def frames(self, timeout: float | None = None) -> Iterator[LiveFrame]:
    """Rendered frames in order, as they come. timeout: stop when none comes within it
    (None: wait until the session ends)."""
    while True:
      try:
        f = self._out_q.get(timeout=timeout)
      except queue.Empty:
        self._raise_worker_error()
        return
      if f is None:
        self._out_q.put(None)                 # later calls end at once too
        self._raise_worker_error()
        return
      yield f

  def audio(self) -> np.ndarray:
    """The 16 kHz audio the session has taken in so far."""
    return self.motion.audio()

  def arrival(self, sample: int) -> float:
    """Wall time at which audio sample `sample` (16 kHz count) arrived."""
    with self._arr_lock:
      for count, t in self._arrivals:
        if count > sample:
          return t
      return self._arrivals[-1][1] if self._arrivals else float("nan")

  # -- workers
  def _raise_worker_error(self):
    if self._error is not None:
      err, self._error = self._error, None
      raise err

  def _motion_worker(self):
    try:
      while True:
        kind, value, when = self._audio_q.get()
        if kind == "set":
          self.motion.set(**value)
          continue
        if kind == "end":
          blocks = self.motion.finish()
        else:
          with self._arr_lock:
            self._arrivals.append((self.motion.received + value.size, when))
            while len(self._arrivals) > 4096:
              self._arrivals.popleft()
          t0 = time.perf_counter()
          blocks = self.motion.push(value)
          if blocks:
            self.times["block_s"].append((time.perf_counter() - t0) / len(blocks))
        for start, m in blocks:
          self._render_q.put((start, m))
        if kind == "end":
          self._render_q.put(None)
          return
    except BaseException as e:         # surfaced to the caller by push / frames
      self._error = e
      self._render_q.put(None)

  def _render_worker(self):
    try:
      while True:
        item = self._render_q.get()
        if item is None:
          break
        start, motion = item
        for i in range(len(motion)):
          t = start + i
          if self.drop_late and (i + 1 < len(motion) or not self._render_q.empty()):
            # a display that cannot wait: a frame already a frame past its slot is skipped
            # while a newer one waits, so a slow machine shows fewer frames, not later ones
            due = self.arrival(int((t + 0.5) * SAMPLES_PER_FRAME)) + self.delay_s
            if time.perf_counter() > due + 1.0 / FPS:
              self.skipped += 1
              continue
          t0 = time.perf_counter()
          img = next(iter(self.renderer.render(self.portrait, motion[i:i + 1])))[0]
          now = time.perf_counter()
          self.times["render_s"].append(now - t0)
          arrived = self.arrival(int((t + 0.5) * SAMPLES_PER_FRAME))
          self._out_q.put(LiveFrame(index=t, audio_time_s=(t + 0.5) / FPS, image=img,
                                    motion=motion[i], arrived_at=arrived, ready_at=now,
                                    due_at=arrived + self.delay_s))
          self.rendered += 1
    except BaseException as e:
      self._error = e
    finally:
      self._out_q.put(None)

  def stats(self) -> dict:
    def pct(x, q):
      return round(float(np.percentile(x, q)) * 1000, 1) if len(x) else None
    return {"frames_rendered": self.rendered, "frames_skipped_late": self.skipped,
            "blocks": self.motion.block_index,
            "block_ms_p50": pct(self.times["block_s"], 50),
            "block_ms_p95": pct(self.times["block_s"], 95),
            "render_ms_p50": pct(self.times["render_s"], 50),
            "render_ms_p95": pct(self.times["render_s"], 95),
            "delay_ms": round(self.delay_s * 1000, 1), "compile_s": round(self.compile_s, 2)}


# ----------------------------------------------------------------------------- display clock

class Pacer:
  """Shows a live session's frames on a 25 fps clock: frame t at its due time (its audio's
  arrival + the session's delay), or when it is ready if later. A frame still unshown when a
  later one is due is dropped; a tick with no new frame repeats the last (both counted)."""

  def __init__(self):
    self.shown: list = []          # (index, shown_at, latency_s)
    self.dropped = 0
    self.repeated = 0
    self._last_index = None

  def show(self, frame: LiveFrame, now: float | None = None) -> float:
    """Records `frame` shown at `now` (default: its due time, or when it became ready if that
    is later: the last frame then stays up for an extra tick, a repeat); returns the time.
    A gap of indices since the last shown frame counts as drops."""
    t = max(frame.due_at, frame.ready_at) if now is None else now
    if self._last_index is not None and frame.index > self._last_index + 1:
      self.dropped += frame.index - self._last_index - 1
    if t - frame.due_at > 0.5 / FPS:
      self.repeated += 1
    self._last_index = frame.index
    self.shown.append((frame.index, t, t - frame.arrived_at))
    return t

  def summary(self) -> dict:
    if not self.shown:
      return {"frames_shown": 0}
    idx, at, lat = (np.asarray(x) for x in zip(*self.shown))
    span = at[-1] - at[0]
    # drift: how the latency moves over the run (end minus the first 5 s's median)
    head = lat[at - at[0] <= 5.0]
    tail = lat[at - at[0] >= span - 5.0]
    return {"frames_shown": int(len(idx)),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)) * 1000, 1),
                           "p95": round(float(np.percentile(lat, 95)) * 1000, 1),
                           "max": round(float(lat.max()) * 1000, 1)},
            "fps_delivered": round(float((len(idx) - 1) / span), 2) if span > 0 else None,
            "dropped": int(self.dropped), "repeated": int(self.repeated),
            "drift_ms": round(float(np.median(tail) - np.median(head)) * 1000, 1)}

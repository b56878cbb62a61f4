"""Stage-2 motion sampling: DDIM under one jax.jit, multi-condition CFG, long audio, streaming.

The sampler is model-agnostic. It takes a denoiser with the MotionDiT contract

  denoise(x_t [B,W,D], t [B] in [0,1], cond: dict of arrays with leading batch B,
          drop: dict name -> float [B] (1 = condition dropped)) -> x0_pred [B,W,D]

(in practice a closure over the model's params, or pass ``with_params=True`` to
``make_sampler`` and the denoiser is called as ``denoise(params, x_t, t, cond, drop)``).
Names missing from ``drop`` are not dropped.

Maths (google-research/vdm style: one step is a function of (i, z_t, cond, rng) with
``rng = fold_in(rng, i)``; the loop is ``lax.fori_loop`` under jit):

  time grid      t_i = 1 - i/N, i = 0..N; step i goes from t = t_i to s = t_{i+1}
  prediction     x0 = H(z_t, t, C)                               (the net predicts clean X0)
                 eps = (z_t - alpha_t x0) / sigma_t
  DDIM update    z_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c * noise,
                 c = eta * (sigma_s / sigma_t) * sqrt(1 - alpha_t^2 / alpha_s^2)
                 (eta = 0: deterministic DDIM; eta = 1: ancestral / DDPM-like)
  last step      s = 0 is taken as exactly clean (alpha=1, sigma=0): the result is the final
                 x0 prediction, so a denoiser that always returns X returns X for any N.

Multi-condition classifier-free guidance (docs/DESIGN.md, Stage 2 "Sampling"):

  X0 = (1 + sum_c l_c) H(z_t, t, C) - sum_c l_c H(z_t, t, C without c)

with every branch in ONE batched forward pass: z_t, t and cond are tiled (1 + n_c) times
along the batch; branch 0 drops only what the caller's ``cond["drop"]`` already drops,
branch k additionally drops condition c_k. Conditions whose scale is 0 get no branch, so
all-zero scales give plain conditional sampling (a single forward of batch B).

Long audio: ``sample_long`` / ``stream`` cut the audio into windows of W frames (the last
padded, ``audio_mask`` marks valid frames); window n is conditioned on the last K frames
generated so far and their audio (``prev_motion`` / ``prev_audio`` / ``prev_mask``), uses
``fold_in(rng, n)``, and every window runs the same compiled sampler.
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax import diffusion

Denoiser = Callable[..., jax.Array]

from vasa_jax.constants import FPS  # noqa: E402
from vasa_jax.errors import InputError
DEFAULT_CFG = {"audio": 0.5, "gaze": 1.0}     # DESIGN.md defaults (l_audio, l_gaze)


# ----------------------------------------------------------------------------- schedule

def default_schedule():
  """The training default (vasa_jax.diffusion.CosineSchedule); a bundle's own schedule comes
  from its config (diffusion.schedule_from_config), which `Animator` passes in."""
  return diffusion.CosineSchedule()


def alpha_sigma(schedule, t) -> Tuple[jax.Array, jax.Array]:
  """(alpha_t, sigma_t) from a schedule: alpha_sigma(t), log_snr(t) / logsnr(t), or vdm
  gamma(t) = -logSNR."""
  if hasattr(schedule, "alpha_sigma"):
    a, s = schedule.alpha_sigma(t)
    return jnp.asarray(a, jnp.float32), jnp.asarray(s, jnp.float32)
  if hasattr(schedule, "log_snr") or hasattr(schedule, "logsnr"):
    fn = getattr(schedule, "log_snr", None) or schedule.logsnr
    lsnr = jnp.asarray(fn(t), jnp.float32)
  elif hasattr(schedule, "gamma"):
    lsnr = -jnp.asarray(schedule.gamma(t), jnp.float32)
  else:
    raise TypeError(f"schedule {schedule!r} has no alpha_sigma / log_snr / gamma")
  return jnp.sqrt(jax.nn.sigmoid(lsnr)), jnp.sqrt(jax.nn.sigmoid(-lsnr))


# ----------------------------------------------------------------------------- guidance

def active_guidance(cfg: Optional[Mapping[str, Any]]) -> Tuple[Tuple[str, Any], ...]:
  """The (name, scale) pairs that get a branch: every scale that is not a static zero."""
  out = []
  for name, scale in (cfg or {}).items():
    try:
      if float(scale) == 0.0:
        continue
    except (TypeError, jax.errors.ConcretizationTypeError):
      pass                                    # a traced scale: keep its branch
    out.append((name, scale))
  return tuple(out)


def _split_cond(cond: Mapping[str, Any]):
  cond = dict(cond)
  base_drop = dict(cond.pop("drop", None) or {})
  return cond, base_drop


def guided_denoise(denoise: Denoiser, x_t, t, cond: Mapping[str, Any],
                   cfg: Optional[Mapping[str, Any]] = None):
  """CFG-combined x0 prediction with all branches in one batched call of ``denoise``.

  x_t [B,W,D]; t scalar or [B]; cond: dict with leading batch B, optionally cond["drop"]
  (name -> [B] or scalar) for conditions the caller drops in every branch.
  """
  b = x_t.shape[0]
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
  cond, base_drop = _split_cond(cond)
  base_drop = {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,))
               for k, v in base_drop.items()}
  guided = active_guidance(cfg)
  if not guided:
    return denoise(x_t, t, cond, base_drop)

  nb = 1 + len(guided)
  names = list(base_drop) + [n for n, _ in guided if n not in base_drop]
  drop = {}
  for name in names:
    base = base_drop.get(name, jnp.zeros((b,), jnp.float32))
    per_branch = [base] + [jnp.ones_like(base) if g == name else base for g, _ in guided]
    drop[name] = jnp.concatenate(per_branch, axis=0)
  tile = lambda a: jnp.concatenate([a] * nb, axis=0)
  out = denoise(tile(x_t), tile(t), jax.tree_util.tree_map(tile, cond), drop)
  out = out.reshape((nb, b) + out.shape[1:])
  # a scale is a number, or a tuple / array with one entry per motion dimension
  guided = [(n, jnp.asarray(s, jnp.float32) if isinstance(s, (tuple, list)) else s)
            for n, s in guided]
  total = sum(scale for _, scale in guided)
  x0 = (1.0 + total) * out[0]
  for k, (_, scale) in enumerate(guided):
    x0 = x0 - scale * out[k + 1]
  return x0


# ----------------------------------------------------------------------------- DDIM

def make_step(denoise: Denoiser, *, steps: int, schedule=None, cfg=None, eta: float = 0.0):
  """One DDIM step ``step(i, z_t, cond, rng) -> z_s`` (t = 1 - i/steps, s = 1 - (i+1)/steps).

  ``rng`` is the loop's key; the step uses ``fold_in(rng, i)`` for its noise (eta > 0).
  """
  steps = int(steps)
  if steps < 1:
    raise InputError(f"steps must be >= 1, got {steps}")
  schedule = default_schedule() if schedule is None else schedule

  def step(i, z_t, cond, rng):
    i = jnp.asarray(i, jnp.int32)
    t = 1.0 - i.astype(jnp.float32) / steps
    s = 1.0 - (i + 1).astype(jnp.float32) / steps
    alpha_t, sigma_t = alpha_sigma(schedule, t)
    alpha_s, sigma_s = alpha_sigma(schedule, s)
    last = i >= steps - 1                     # s = 0: exactly clean
    alpha_s = jnp.where(last, 1.0, alpha_s)
    sigma_s = jnp.where(last, 0.0, sigma_s)

    x0 = guided_denoise(denoise, z_t, t, cond, cfg).astype(z_t.dtype)
    eps = (z_t - alpha_t * x0) / sigma_t
    if not eta:
      return alpha_s * x0 + sigma_s * eps
    ratio = jnp.clip(1.0 - (alpha_t / alpha_s) ** 2, 0.0, None)
    c = jnp.minimum(eta * (sigma_s / sigma_t) * jnp.sqrt(ratio), sigma_s)
    noise = jax.random.normal(jax.random.fold_in(rng, i), z_t.shape, z_t.dtype)
    return alpha_s * x0 + jnp.sqrt(jnp.clip(sigma_s ** 2 - c ** 2, 0.0, None)) * eps + c * noise

  return step


def split_rng(rng):
  """(key for the initial noise z_1, key the steps fold their index into)."""
  k_init, k_steps = jax.random.split(rng)
  return k_init, k_steps


def sample(denoise: Denoiser, cond: Mapping[str, Any], *, shape, rng, steps: int = 50,
           schedule=None, cfg=None, eta: float = 0.0, dtype=jnp.float32):
  """DDIM sampling of x0 [B,W,D] = shape. Pure: call it inside jax.jit (or use make_sampler).

  The loop is a lax.fori_loop over ``make_step``; z_1 ~ N(0, I) from split_rng(rng)[0].
  """
  step = make_step(denoise, steps=steps, schedule=schedule, cfg=cfg, eta=eta)
  k_init, k_steps = split_rng(rng)
  z = jax.random.normal(k_init, tuple(shape), dtype)
  return jax.lax.fori_loop(0, int(steps), lambda i, z: step(i, z, cond, k_steps), z)


def make_sampler(denoise: Denoiser, *, shape, steps: int, cfg=None, schedule=None,
                 eta: float = 0.0, compiler_options=None, with_params: bool = False):
  """A jitted ``fn(cond, rng) -> x0`` (``fn(params, cond, rng)`` with with_params=True,
  where the denoiser is then called as ``denoise(params, x_t, t, cond, drop)``, so large
  parameters are arguments instead of compile-time constants)."""
  schedule = default_schedule() if schedule is None else schedule
  kw = dict(shape=tuple(shape), steps=int(steps), schedule=schedule, cfg=cfg, eta=eta)
  if with_params:
    def fn(params, cond, rng):
      return sample(lambda *a: denoise(params, *a), cond, rng=rng, **kw)
  else:
    def fn(cond, rng):
      return sample(denoise, cond, rng=rng, **kw)
  return jax.jit(fn, compiler_options=compiler_options)


# ----------------------------------------------------------------------------- long audio

_SAMPLERS: "weakref.WeakKeyDictionary[Any, Dict[Any, Callable]]" = weakref.WeakKeyDictionary()


def _freeze(x):
  if isinstance(x, Mapping):
    return tuple(sorted((k, _freeze(v)) for k, v in x.items()))
  if isinstance(x, (list, tuple)):
    return tuple(_freeze(v) for v in x)
  try:
    hash(x)
    return x
  except TypeError:
    return id(x)


def _cached_sampler(denoise_fn, **kw):
  """make_sampler, memoised per denoiser object so repeated calls reuse one compile."""
  key = _freeze(kw)
  try:
    per_fn = _SAMPLERS.setdefault(denoise_fn, {})
  except TypeError:                           # not weak-referenceable: no cache
    return make_sampler(denoise_fn, **kw)
  if key not in per_fn:
    per_fn[key] = make_sampler(denoise_fn, **kw)
  return per_fn[key]


def _batch_controls(controls: Optional[Mapping[str, Any]], b: int, batched: bool):
  """Controls broadcast to a leading batch b. Unbatched audio: every value gets an axis;
  batched audio: values whose leading dim is b are taken as batched, others broadcast."""
  def one(v):
    v = jnp.asarray(v)
    if batched and v.ndim >= 1 and v.shape[0] == b:
      return v
    return jnp.broadcast_to(v[None], (b,) + v.shape)
  out = {}
  for k, v in (controls or {}).items():
    out[k] = {n: one(x) for n, x in v.items()} if isinstance(v, Mapping) else one(v)
  return out


def _first_prev(first_prev, b, k, d, a, batched):
  """(motion [B,K,D], audio [B,K,A], mask [B,K]) for window 0; a shorter given context is
  right-aligned with mask 0 in front."""
  motion = jnp.zeros((b, k, d), jnp.float32)
  audio = jnp.zeros((b, k, a), jnp.float32)
  mask = jnp.zeros((b, k), jnp.float32)
  if first_prev is None or k == 0:
    return motion, audio, mask
  if isinstance(first_prev, Mapping):
    pm, pa = first_prev["motion"], first_prev.get("audio")
  else:
    pm, pa = first_prev, None
  pm = jnp.asarray(pm, jnp.float32)
  if not batched:
    pm = pm[None]
  pm = jnp.broadcast_to(pm, (b,) + pm.shape[1:])[:, -k:]
  n = pm.shape[1]
  motion = motion.at[:, k - n:].set(pm)
  mask = mask.at[:, k - n:].set(1.0)
  if pa is not None:
    pa = jnp.asarray(pa, jnp.float32)
    if not batched:
      pa = pa[None]
    pa = jnp.broadcast_to(pa, (b,) + pa.shape[1:])[:, -n:]
    audio = audio.at[:, k - pa.shape[1]:].set(pa)
  return motion, audio, mask


def stream(denoise_fn: Denoiser, audio_feats, controls=None, *, window: int, context: int,
           steps: int = 50, cfg=None, rng=None, first_prev=None, motion_dim: Optional[int] = None,
           schedule=None, eta: float = 0.0, compiler_options=None, params=None,
           carry_context: bool = True) -> Iterator[Tuple[int, np.ndarray]]:
  """Yield ``(start_frame, motion)`` window by window as soon as each is sampled.

  audio_feats [T,A] (motion [<=W, D] per item) or [B,T,A] (motion [B, <=W, D]); controls:
  dict passed through to the denoiser's cond, broadcast to the batch (it may hold a "drop"
  dict of conditions dropped in every CFG branch). cfg=None: no guidance (DEFAULT_CFG
  holds DESIGN.md's defaults). ``motion_dim`` D is required unless
  ``first_prev`` (motion [K',D] / [B,K',D], or {"motion": ..., "audio": ...}) shows it.
  With ``params`` given, the denoiser is called as ``denoise_fn(params, x_t, t, cond, drop)``
  and the params are an argument of the compiled sampler (not baked-in constants).
  ``carry_context=False`` is the "no previous-window conditioning" ablation: every window sees
  ``first_prev`` (or nothing) instead of the frames generated before it.
  """
  audio = jnp.asarray(audio_feats, jnp.float32)
  batched = audio.ndim == 3
  if not batched:
    audio = audio[None]
  b, t_total, a = audio.shape
  w, k = int(window), int(context)
  if w < 1 or k < 0:
    raise ValueError(f"bad window {w} / context {k}")
  if motion_dim is None:
    if first_prev is None:
      raise ValueError("motion_dim is required when first_prev is not given")
    fp = first_prev["motion"] if isinstance(first_prev, Mapping) else first_prev
    motion_dim = int(np.shape(fp)[-1])
  d = int(motion_dim)
  rng = jax.random.PRNGKey(0) if rng is None else rng

  sampler = _cached_sampler(denoise_fn, shape=(b, w, d), steps=int(steps), cfg=dict(cfg or {}),
                            schedule=schedule, eta=eta, compiler_options=compiler_options,
                            with_params=params is not None)
  if params is not None:
    sampler = functools.partial(sampler, params)
  ctrl = _batch_controls(controls, b, batched)
  n_win = max(1, math.ceil(t_total / w))
  pad = n_win * w - t_total
  audio_p = jnp.pad(audio, ((0, 0), (0, pad), (0, 0)))
  valid = jnp.pad(jnp.ones((b, t_total), jnp.float32), ((0, 0), (0, pad)))
  prev_m, prev_a, prev_mask = _first_prev(first_prev, b, k, d, a, batched)

  for n in range(n_win):
    lo, hi = n * w, (n + 1) * w
    cond = dict(ctrl)
    cond.update(audio=audio_p[:, lo:hi], audio_mask=valid[:, lo:hi], prev_motion=prev_m,
                prev_audio=prev_a, prev_mask=prev_mask)
    motion = sampler(cond, jax.random.fold_in(rng, n))            # [B,W,D]
    # The next window's context: the last K frames generated so far (n < last: all valid).
    if k and carry_context:
      hist_m = jnp.concatenate([prev_m, motion], axis=1)[:, -k:]
      hist_a = jnp.concatenate([prev_a, audio_p[:, lo:hi]], axis=1)[:, -k:]
      hist_mask = jnp.concatenate([prev_mask, jnp.ones((b, w), jnp.float32)], axis=1)[:, -k:]
      prev_m, prev_a, prev_mask = hist_m, hist_a, hist_mask
    n_valid = min(hi, t_total) - lo
    out = np.asarray(motion[:, :n_valid])
    yield lo, (out if batched else out[0])


def sample_long(denoise_fn: Denoiser, audio_feats, controls=None, **kw):
  """Motion for the whole audio: [T,D] (or [B,T,D] for batched audio). Same keyword
  arguments as ``stream`` (window, context, steps, cfg, rng, first_prev, motion_dim, ...)."""
  parts = [m for _, m in stream(denoise_fn, audio_feats, controls, **kw)]
  return np.concatenate(parts, axis=-2)

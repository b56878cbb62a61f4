"""vasa_jax.sampling: DDIM loop under one jit, multi-condition CFG, sliding windows, stream.

Every denoiser here is a small analytic function of (x_t, t, cond, drop), so the tests are
independent of MotionDiT and cheap; compiles use a low XLA optimisation level.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax import diffusion, sampling

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
B, W, D, A, K = 2, 8, 3, 4, 3
PROJ = np.asarray(np.random.default_rng(0).normal(size=(A, D)), np.float32)
SCHED = diffusion.CosineSchedule()


def _drop(drop, name, b):
  return drop.get(name, jnp.zeros((b,), jnp.float32))[:, None, None]


def analytic_denoiser(x, t, cond, drop):
  """x0 depends on x, t, audio (unless dropped) and gaze (unless dropped), all known."""
  b = x.shape[0]
  audio_term = (1.0 - _drop(drop, "audio", b)) * (cond["audio"] @ PROJ)
  gaze_term = (1.0 - _drop(drop, "gaze", b)) * cond["gaze"].sum(-1)[:, None, None]
  return 0.4 * jnp.tanh(x) + 0.2 * t[:, None, None] + audio_term + 0.5 * gaze_term


def _cond(seed=1):
  r = np.random.default_rng(seed)
  return {"audio": jnp.asarray(r.normal(size=(B, W, A)), jnp.float32),
          "gaze": jnp.asarray(r.normal(size=(B, 2)), jnp.float32)}


class Recorder:
  """Wraps a denoiser: trace-time input shapes and a run-time call log (jax.debug.callback)."""

  def __init__(self, fn=analytic_denoiser, keys=()):
    self.fn, self.keys = fn, tuple(keys)
    self.traced_batches, self.calls = [], []

  def __call__(self, x, t, cond, drop):
    self.traced_batches.append(x.shape[0])
    self.traced_cond_shapes = {k: v.shape for k, v in cond.items()}

    def log(*vals):
      self.calls.append({k: np.asarray(v) for k, v in zip(self.keys, vals)})
    jax.debug.callback(log, *[cond[k] for k in self.keys], ordered=True)
    return self.fn(x, t, cond, drop)


# ----------------------------------------------------------------------------- DDIM loop

@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_jitted_loop_matches_python_loop(eta):
  cond, rng, steps = _cond(), jax.random.PRNGKey(3), 6
  fast = sampling.make_sampler(analytic_denoiser, shape=(B, W, D), steps=steps, cfg=None,
                               schedule=SCHED, eta=eta, compiler_options=FAST)(cond, rng)
  step = sampling.make_step(analytic_denoiser, steps=steps, schedule=SCHED, eta=eta)
  k_init, k_steps = sampling.split_rng(rng)
  z = jax.random.normal(k_init, (B, W, D))
  for i in range(steps):
    z = step(i, z, cond, k_steps)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(z), atol=1e-5, rtol=1e-5)
  # eta > 0 is stochastic: another seed gives another sample; eta = 0 too (the initial noise).
  other = sampling.sample(analytic_denoiser, cond, shape=(B, W, D), rng=jax.random.PRNGKey(4),
                          steps=steps, schedule=SCHED, eta=eta)
  assert not np.allclose(np.asarray(other), np.asarray(fast))


@pytest.mark.parametrize("steps", [1, 10, 50])
def test_fixed_target_denoiser_returns_target(steps):
  target = jnp.asarray(np.random.default_rng(5).normal(size=(B, W, D)), jnp.float32)
  denoise = lambda x, t, cond, drop: jnp.broadcast_to(target, x.shape)
  for eta in (0.0, 1.0):
    out = sampling.make_sampler(denoise, shape=(B, W, D), steps=steps, cfg=None, eta=eta,
                                compiler_options=FAST)({}, jax.random.PRNGKey(steps))
    np.testing.assert_allclose(np.asarray(out), np.asarray(target), atol=1e-5)


def test_schedule_protocols():
  t = jnp.asarray([0.0, 0.3, 1.0])
  a, s = sampling.alpha_sigma(SCHED, t)
  np.testing.assert_allclose(np.asarray(a ** 2 + s ** 2), 1.0, atol=1e-6)
  assert float(a[0]) > 0.9999 and float(s[-1]) > 0.9999 and float(a[-1]) > 0

  class LogSNR:   # a vdm-style schedule given as log-SNR works the same
    def log_snr(self, t):
      a, s = SCHED.alpha_sigma(t)
      return 2 * (jnp.log(a) - jnp.log(s))
  a2, s2 = sampling.alpha_sigma(LogSNR(), t)
  np.testing.assert_allclose(np.asarray(a2), np.asarray(a), atol=1e-5)
  np.testing.assert_allclose(np.asarray(s2), np.asarray(s), atol=1e-5)


# ----------------------------------------------------------------------------- guidance

def test_cfg_all_zero_is_conditional_sampling():
  cond, rng = _cond(), jax.random.PRNGKey(0)
  rec = Recorder()
  plain = sampling.make_sampler(analytic_denoiser, shape=(B, W, D), steps=5, cfg=None,
                                compiler_options=FAST)(cond, rng)
  zero = sampling.make_sampler(rec, shape=(B, W, D), steps=5, cfg={"audio": 0.0, "gaze": 0},
                               compiler_options=FAST)(cond, rng)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(zero))
  assert rec.traced_batches == [B]           # no extra branch for zero scales


def _ddim_reference(denoise_x0, z, steps):
  """Plain numpy DDIM (eta=0) given a function (z, t) -> x0."""
  for i in range(steps):
    t, s = 1 - i / steps, 1 - (i + 1) / steps
    at, st = (np.asarray(v, np.float64) for v in SCHED.alpha_sigma(t))
    a_s, s_s = (np.asarray(v, np.float64) for v in SCHED.alpha_sigma(s))
    if i == steps - 1:
      a_s, s_s = 1.0, 0.0
    x0 = np.asarray(denoise_x0(z, t), np.float64)
    eps = (z - at * x0) / st
    z = a_s * x0 + s_s * eps
  return z


@pytest.mark.parametrize("cfg,caller_drop", [
    ({"audio": 0.8, "gaze": 0.0}, None),
    ({"audio": 0.5, "gaze": 1.0}, {"gaze": np.array([1.0, 0.0], np.float32)}),
])
def test_cfg_combination_and_one_batched_call(cfg, caller_drop):
  cond, rng, steps = _cond(), jax.random.PRNGKey(2), 7
  if caller_drop is not None:
    cond = dict(cond, drop={k: jnp.asarray(v) for k, v in caller_drop.items()})
  rec = Recorder(keys=("audio",))
  out = sampling.make_sampler(rec, shape=(B, W, D), steps=steps, cfg=cfg, schedule=SCHED,
                              compiler_options=FAST)(cond, rng)
  active = [(n, l) for n, l in cfg.items() if l]
  # one traced call per step body, with every branch stacked along the batch ...
  assert rec.traced_batches == [B * (1 + len(active))]
  # ... and one run-time call per step.
  assert len(rec.calls) == steps

  base = {k: jnp.asarray(v) for k, v in (caller_drop or {}).items()}
  plain = {k: v for k, v in cond.items() if k != "drop"}

  def h(z, t, drop):
    return np.asarray(analytic_denoiser(jnp.asarray(z, jnp.float32),
                                        jnp.full((B,), t, jnp.float32), plain, drop))

  def guided(z, t):
    x0 = (1 + sum(l for _, l in active)) * h(z, t, base)
    for name, l in active:
      x0 = x0 - l * h(z, t, dict(base, **{name: jnp.ones((B,), jnp.float32)}))
    return x0

  k_init, _ = sampling.split_rng(rng)
  z1 = np.asarray(jax.random.normal(k_init, (B, W, D)), np.float64)
  ref = _ddim_reference(guided, z1, steps)
  np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5, rtol=2e-5)
  # guidance changes the result
  cond_only = _ddim_reference(lambda z, t: h(z, t, base), z1, steps)
  assert np.abs(ref - cond_only).max() > 1e-2


def test_cfg_scale_per_motion_dimension():
  """A guidance scale given per motion dimension (a tuple, as the engine's expression guidance
  passes it) guides each dimension by its own scale: dimension d of the result equals the
  sampler run with that scale for every dimension."""
  cond, rng, steps = _cond(), jax.random.PRNGKey(4), 5
  per_dim = (0.0, 1.0, 3.0)
  run = lambda scale: np.asarray(sampling.make_sampler(  # noqa: E731
      analytic_denoiser, shape=(B, W, D), steps=steps, cfg={"audio": scale},
      schedule=SCHED, compiler_options=FAST)(cond, rng))
  mixed = run(per_dim)
  for d, scale in enumerate(per_dim):
    # the analytic denoiser's dimensions do not interact, so each one's trajectory is its own
    np.testing.assert_allclose(mixed[..., d], run(float(scale) or 1e-9)[..., d], atol=2e-5)
  assert np.abs(mixed[..., 2] - run(1.0)[..., 2]).max() > 1e-2


# ----------------------------------------------------------------------------- long audio

def _long_inputs(t_frames=19, seed=0, batch=None):
  r = np.random.default_rng(seed)
  shape = (t_frames, A) if batch is None else (batch, t_frames, A)
  return jnp.asarray(r.normal(size=shape), jnp.float32)


def context_denoiser(x, t, cond, drop):
  """Output depends on audio and on the previous-window context, so both must flow."""
  ctx = (cond["prev_motion"] * cond["prev_mask"][..., None]).mean(1, keepdims=True)
  return 0.3 * jnp.tanh(x) + (cond["audio"] @ PROJ) * cond["audio_mask"][..., None] + 0.5 * ctx


LONG = dict(window=W, context=K, steps=3, motion_dim=D, cfg={"audio": 0.5, "gaze": 1.0},
            compiler_options=FAST)
CONTROLS = {"gaze": np.array([0.1, -0.2], np.float32), "distance": 0.6,
            "emotion": np.int32(2)}


def test_sample_long_windows_and_context():
  audio = _long_inputs()
  rec = Recorder(fn=context_denoiser, keys=("prev_motion", "prev_mask", "audio_mask", "audio"))
  out = sampling.sample_long(rec, audio, CONTROLS, rng=jax.random.PRNGKey(0), **LONG)
  t_frames, steps = audio.shape[0], LONG["steps"]
  n_win = math.ceil(t_frames / W)
  assert out.shape == (t_frames, D) and np.isfinite(out).all()
  assert len(rec.calls) == n_win * steps
  cs = rec.traced_cond_shapes
  nb = 3   # B=1, two guided conditions -> 3 branches
  assert cs["gaze"] == (nb, 2) and cs["distance"] == (nb,) and cs["emotion"] == (nb,)
  assert cs["prev_motion"] == (nb, K, D) and cs["prev_audio"] == (nb, K, A)
  for n in range(n_win):
    call = rec.calls[n * steps]                      # the first step of window n, branch 0
    if n == 0:
      np.testing.assert_array_equal(call["prev_mask"][0], 0.0)
    else:
      np.testing.assert_array_equal(call["prev_mask"][0], 1.0)
      np.testing.assert_allclose(call["prev_motion"][0], out[n * W - K:n * W], atol=1e-6)
    valid = min(W, t_frames - n * W)
    np.testing.assert_array_equal(call["audio_mask"][0], [1.0] * valid + [0.0] * (W - valid))
    np.testing.assert_array_equal(call["audio"][0, :valid], np.asarray(audio[n * W:n * W + valid]))
    # the context is constant over the steps of one window
    np.testing.assert_array_equal(rec.calls[n * steps + steps - 1]["prev_motion"],
                                  call["prev_motion"])

  again = sampling.sample_long(context_denoiser, audio, CONTROLS, rng=jax.random.PRNGKey(0),
                               **LONG)
  np.testing.assert_allclose(again, out, atol=1e-6)
  other = sampling.sample_long(context_denoiser, audio, CONTROLS, rng=jax.random.PRNGKey(1),
                               **LONG)
  assert np.abs(other - out).max() > 1e-3


def test_sample_long_first_prev_and_batch():
  audio = _long_inputs(t_frames=11, batch=2)
  prev = np.asarray(np.random.default_rng(3).normal(size=(2, K, D)), np.float32)
  rec = Recorder(fn=context_denoiser, keys=("prev_motion", "prev_mask"))
  kw = dict(LONG, cfg=None)
  out = sampling.sample_long(rec, audio, {"gaze": np.zeros((2, 2), np.float32)},
                             rng=jax.random.PRNGKey(0), first_prev=prev, **kw)
  assert out.shape == (2, 11, D)
  np.testing.assert_array_equal(rec.calls[0]["prev_mask"], 1.0)
  np.testing.assert_allclose(rec.calls[0]["prev_motion"], prev)
  # a shorter given context is right-aligned, the rest masked out
  rec2 = Recorder(fn=context_denoiser, keys=("prev_motion", "prev_mask"))
  sampling.sample_long(rec2, audio[0], None, rng=jax.random.PRNGKey(0),
                       first_prev={"motion": prev[0, -1:], "audio": np.ones((1, A))}, **kw)
  np.testing.assert_array_equal(rec2.calls[0]["prev_mask"][0], [0.0] * (K - 1) + [1.0])
  np.testing.assert_allclose(rec2.calls[0]["prev_motion"][0, -1], prev[0, -1])


def test_no_context_carry_ablation_keeps_the_first_context():
  audio = _long_inputs(t_frames=19)
  prev = np.asarray(np.random.default_rng(4).normal(size=(K, D)), np.float32)
  rec = Recorder(fn=context_denoiser, keys=("prev_motion", "prev_mask"))
  kw = dict(LONG, cfg=None)
  out = sampling.sample_long(rec, audio, None, rng=jax.random.PRNGKey(0), first_prev=prev,
                             carry_context=False, **kw)
  steps = kw["steps"]
  for n in range(math.ceil(19 / W)):
    np.testing.assert_allclose(rec.calls[n * steps]["prev_motion"][0], prev, atol=1e-6)
  carried = sampling.sample_long(context_denoiser, audio, None, rng=jax.random.PRNGKey(0),
                                 first_prev=prev, **kw)
  np.testing.assert_allclose(carried[:W], out[:W], atol=1e-6)   # window 0 is the same
  assert np.abs(carried[W:] - out[W:]).max() > 1e-3               # later windows differ


def test_stream_matches_sample_long_and_yields_early():
  audio = _long_inputs(t_frames=21)
  rng = jax.random.PRNGKey(7)
  full = sampling.sample_long(context_denoiser, audio, CONTROLS, rng=rng, **LONG)
  rec = Recorder(fn=context_denoiser)
  gen = sampling.stream(rec, audio, CONTROLS, rng=rng, **LONG)
  start, first = next(gen)
  calls_at_first_yield = len(rec.calls)
  items = [(start, first)] + list(gen)
  steps, n_win = LONG["steps"], math.ceil(21 / W)
  assert calls_at_first_yield == steps               # only window 0 was computed
  assert len(rec.calls) == n_win * steps
  assert [s for s, _ in items] == [n * W for n in range(n_win)]
  assert [m.shape[0] for _, m in items] == [W] * (n_win - 1) + [21 - (n_win - 1) * W]
  np.testing.assert_allclose(np.concatenate([m for _, m in items]), full, atol=1e-6)


def test_sampler_benchmark_quick():
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "sampler.py"),
                         "--quick", "--mlp"], env=env, capture_output=True, text=True,
                        timeout=120, cwd=root)
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout)
  assert out["denoiser"]["kind"] == "mlp" and len(out["results"]) == 4
  for r in out["results"]:
    assert r["rtf"] > 0 and r["python_over_jit"] > 0 and r["branches"] in (1, 3)


def test_sample_long_with_motion_dit_tiny():
  """Integration with the real denoiser contract (the stage-2 model, its tiny config)."""
  import flax.linen as nn
  from conftest import load_stage_config

  from vasa_jax.models import motion_dit as md
  cfg_mod = load_stage_config("motion_dit")
  mc = cfg_mod.get_config("tiny").model
  model = md.MotionDiT(config=mc)
  variables = nn.meta.unbox(model.init(jax.random.PRNGKey(0), *md.dummy_inputs(mc, 1)))
  denoise = lambda x, t, cond, drop: model.apply(variables, x, t, cond, drop)
  audio = _long_inputs(t_frames=int(mc.window) + 3)
  audio = jnp.pad(audio, ((0, 0), (0, int(mc.audio_in_dim) - A)))
  controls = {"gaze": np.zeros(2, np.float32), "distance": np.float32(mc.distance_mean),
              "emotion": np.int32(mc.num_emotions)}
  kw = dict(window=int(mc.window), context=int(mc.context), steps=2,
            motion_dim=int(mc.motion_dim), cfg={"audio": 0.5, "gaze": 1.0},
            compiler_options=FAST)
  out = sampling.sample_long(denoise, audio, controls, rng=jax.random.PRNGKey(0), **kw)
  assert out.shape == (audio.shape[0], int(mc.motion_dim)) and np.isfinite(out).all()
  apply = lambda v, x, t, cond, drop: model.apply(v, x, t, cond, drop)
  parts = list(sampling.stream(apply, audio, controls, rng=jax.random.PRNGKey(0),
                               params=variables, **kw))
  np.testing.assert_allclose(np.concatenate([m for _, m in parts]), out, atol=1e-5)

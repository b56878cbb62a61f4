"""Stage-2 motion model: audio features, diffusion maths, MotionDiT shapes / conditioning, loss."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from conftest import FAST_COMPILE, fast_key, load_stage_config
from vasa_jax import audio as audio_lib
from vasa_jax import diffusion
from vasa_jax.models import motion_dit as md


cfg_lib = load_stage_config("motion_dit")

# Cheap CPU compiles (see tests/test_face_latent.py).
_FAST = FAST_COMPILE
_key = fast_key


def _compile(fn, *args):
  """jax.jit(fn) compiled once for these argument shapes, with cheap CPU options if accepted."""
  lowered = jax.jit(fn).lower(*args)
  try:
    return lowered.compile(_FAST)
  except Exception:   # an option this XLA does not know: compile normally
    return lowered.compile()


# ----------------------------------------------------------------------------- config

def test_config_variants_and_overrides():
  for v in cfg_lib.VARIANTS:
    c = cfg_lib.get_config(v)
    assert c.model.motion_dim == 6 + c.model.dyn_dim
    assert c.model.width % c.model.heads == 0
    assert c.data.window == c.model.window and c.data.context == c.model.context
    if v.startswith("live"):     # short windows that always have their context
      assert 0 < c.live.block < c.model.window and c.data.audio_left > 0
      assert c.train.p_drop == 0.1 and c.train.p_drop_prev == 0.05 and c.train.p_mask_tail == 0
      continue
    assert c.live.block == 0 and c.data.audio_left == 0
    assert c.train.p_drop == 0.1 and c.train.p_drop_prev == 0.5
    assert c.sampler.steps == 25 and c.sampler.cfg_audio == 0.5 and c.sampler.cfg_gaze == 1.0
  assert cfg_lib.get_config("tiny").model.motion_dim == 14
  assert cfg_lib.get_config("demo").model.motion_dim == 70
  assert cfg_lib.get_config("paper").model.motion_dim == 262
  live = cfg_lib.get_config("live")
  assert (live.model.window, live.live.block, live.data.audio_left, live.sampler.steps) == \
      (5, 4, 16, 4)
  c = cfg_lib.get_config("demo,batch_size=4,model.dtype=bfloat16,model.dyn_dim=64,optim.lr=1")
  assert c.batch_size == 4 and c.model.dtype == "bfloat16" and c.optim.lr == 1.0
  assert c.model.motion_dim == 70
  with pytest.raises(KeyError):
    cfg_lib.get_config("tiny,model.nope=1")


# ----------------------------------------------------------------------------- audio

def test_mel_filterbank_matches_librosa():
  librosa = pytest.importorskip("librosa")
  ours = audio_lib.mel_filterbank(80)
  ref = librosa.filters.mel(sr=16000, n_fft=audio_lib.N_FFT, n_mels=80, fmin=0.0, fmax=8000.0)
  assert ours.shape == ref.shape == (80, audio_lib.N_FFT // 2 + 1)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_log_mel_alignment():
  for n in (0, 639, 640, 641, 640 * 7 + 300):
    f = audio_lib.log_mel(np.zeros(n, np.float32))
    assert f.shape == (n // 640, 160)
  # A 1 kHz tone burst exactly in video frames 10-12: energy there, nowhere else.
  x = np.zeros(640 * 20 + 123, np.float32)
  s0, s1 = 640 * 10, 640 * 13
  x[s0:s1] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(s1 - s0) / 16000)
  f = np.asarray(audio_lib.log_mel(x))
  assert f.shape == (20, 160)
  floor = np.log(audio_lib.LOG_EPS)
  peak = f.max(-1)
  halves = f.reshape(20, 2, 80).max(-1)
  assert np.all(halves[10:13] > 2.0), halves[10:13]              # both mel frames of 10..12
  # Frames 9 and 13 only see the 40-sample window overhang (Hann taper < 0.1): far weaker.
  assert peak[9] < peak[10] - 8 and peak[13] < peak[12] - 8
  assert halves[9, 0] < floor + 1e-3 and halves[13, 1] < floor + 1e-3
  others = np.r_[0:9, 14:20]
  np.testing.assert_allclose(peak[others], floor, atol=1e-3)
  # Batched input gives the same features per row.
  fb = np.asarray(audio_lib.log_mel(np.stack([x, np.zeros_like(x)])))
  assert fb.shape == (2, 20, 160)
  np.testing.assert_allclose(fb[0], f, atol=1e-4)


def test_resample_features():
  feats = jnp.arange(8, dtype=jnp.float32)[None, :, None] * jnp.ones((2, 1, 3))  # 50 Hz ramp
  out = audio_lib.resample_features(feats, 4)                                     # -> 25 fps
  assert out.shape == (2, 4, 3)
  np.testing.assert_allclose(out[0, :, 0], [0.5, 2.5, 4.5, 6.5], atol=1e-6)
  same = audio_lib.resample_features(feats, 8)
  np.testing.assert_allclose(same, feats, atol=1e-6)
  src = audio_lib.LogMelSource()
  assert src(np.zeros((2, 640 * 3 + 5), np.float32)).shape == (2, 3, src.dim)


# ----------------------------------------------------------------------------- diffusion

def test_schedule_and_q_sample():
  sch = diffusion.CosineSchedule()
  t = jnp.linspace(0.0, 1.0, 101)
  a, s = sch.alpha_sigma(t)
  np.testing.assert_allclose(a ** 2 + s ** 2, 1.0, atol=1e-6)
  lsnr = np.asarray(sch.logsnr(t))
  assert np.all(np.diff(lsnr) < 0)
  np.testing.assert_allclose(lsnr[[0, -1]], [sch.logsnr_max, sch.logsnr_min], atol=1e-3)
  np.testing.assert_allclose(sch.t_from_logsnr(lsnr), t, atol=1e-4)
  x0 = jax.random.normal(_key(0), (3, 5, 4))
  noise = jax.random.normal(_key(1), (3, 5, 4))
  np.testing.assert_allclose(diffusion.q_sample(x0, jnp.zeros(3), noise, sch), x0, atol=3e-4)
  xt = diffusion.q_sample(x0, jnp.ones(3), noise, sch)
  np.testing.assert_allclose(xt, noise, atol=1e-3)
  tm = jnp.full((3,), 0.4)
  np.testing.assert_allclose(
      diffusion.eps_from_x0(diffusion.q_sample(x0, tm, noise, sch), x0, tm, sch), noise,
      atol=1e-4)
  mask = jnp.array([[1, 1, 0, 0, 0]] * 3, jnp.float32)
  pred = x0.at[:, 2:].add(100.0)                     # errors only on masked frames
  assert float(diffusion.x0_loss(pred, x0, mask)) == 0.0
  assert float(diffusion.x0_loss(x0 + 1.0, x0, mask)) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- model

def test_shapes_every_variant():
  for v in cfg_lib.VARIANTS:
    for dtype in ("float32", "bfloat16"):
      c = cfg_lib.get_config(f"{v},model.dtype={dtype}").model
      m = md.MotionDiT(c)
      inp = md.dummy_inputs(c, 2)
      variables = jax.eval_shape(lambda k, m=m, inp=inp: m.init(k, *inp), _key(0))
      params = nn.meta.unbox(variables)["params"]
      out = jax.eval_shape(lambda p, m=m, inp=inp: m.apply({"params": p}, *inp), params)
      assert out.shape == (2, c.window, c.motion_dim) and out.dtype == jnp.float32
      for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.dtype == jnp.float32
      # Every parameter carries logical axis names.
      specs = nn.get_partition_spec(variables)["params"]
      is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
      spec_leaves = jax.tree_util.tree_leaves(specs, is_leaf=is_spec)
      assert len(spec_leaves) == len(jax.tree_util.tree_leaves(params))
      for leaf, spec in zip(jax.tree_util.tree_leaves(params), spec_leaves):
        assert is_spec(spec) and len(spec) == leaf.ndim
  n = {v: md.param_count(nn.meta.unbox(jax.eval_shape(
      lambda k, v=v: md.MotionDiT(cfg_lib.get_config(v).model).init(
          k, *md.dummy_inputs(cfg_lib.get_config(v).model, 1)), _key(0)))["params"])
      for v in ("demo", "paper")}
  assert 1e6 < n["demo"] < 6e6 and 25e6 < n["paper"] < 60e6, n


@pytest.fixture(scope="module")
def tiny():
  c = cfg_lib.get_config("tiny,model.blink_control=True").model
  model = md.MotionDiT(c)
  b, w, k, d = 2, c.window, c.context, c.motion_dim
  x_t, t, cond, drop = md.dummy_inputs(c, b)
  rng = np.random.default_rng(0)
  x_t = jnp.asarray(rng.normal(size=x_t.shape), jnp.float32)
  t = jnp.array([0.3, 0.7], jnp.float32)
  cond = dict(cond)
  cond["audio"] = jnp.asarray(rng.normal(size=(b, w, c.audio_in_dim)), jnp.float32)
  cond["prev_motion"] = jnp.asarray(rng.normal(size=(b, k, d)), jnp.float32)
  cond["prev_audio"] = jnp.asarray(rng.normal(size=(b, k, c.audio_in_dim)), jnp.float32)
  cond["gaze"] = jnp.array([[0.2, -0.1], [-0.3, 0.1]], jnp.float32)
  cond["distance"] = jnp.array([0.6, 0.8], jnp.float32)
  cond["emotion"] = jnp.array([1, 3], jnp.int32)
  cond["blink_rate"] = jnp.array([5.0, 30.0], jnp.float32)
  params = nn.meta.unbox(_compile(model.init, _key(3), x_t, t, cond, drop)(
      _key(3), x_t, t, cond, drop))["params"]

  def fwd(p, x_t, t, cond, drop):
    return model.apply({"params": p}, x_t, t, cond, drop)

  compiled = _compile(fwd, params, x_t, t, cond, drop)

  def run(params=params, cond=cond, drop=drop, x=x_t):
    return np.asarray(compiled(params, x, t, cond, drop))

  return c, params, cond, drop, run


def test_tiny_forward(tiny):
  c, params, cond, drop, run = tiny
  out = run()
  assert out.shape == (2, c.window, c.motion_dim) and np.all(np.isfinite(out))
  assert np.std(out) > 1e-3


def test_dropping_conditions_uses_learned_null_embeddings(tiny):
  c, params, cond, drop, run = tiny
  base = run()
  ones = jnp.ones((2,), bool)
  for name in md.DROP_KEYS:
    out = run(drop={**drop, name: ones})
    assert np.abs(out - base).max() > 1e-4, name
  # A dropped condition is a parameter, not zeros: dropping audio differs from zero features...
  zero_audio = run(cond={**cond, "audio": jnp.zeros_like(cond["audio"])})
  dropped_audio = run(drop={**drop, "audio": ones})
  assert np.abs(zero_audio - dropped_audio).max() > 1e-4
  # ... and the dropped output moves with the null parameter (and ignores the audio values).
  # (A random change: a constant shift of every feature would vanish in the LayerNorms.)
  moved = dict(params, null_audio=params["null_audio"] + jax.random.normal(_key(5), (c.width,)))
  assert np.abs(run(params=moved, drop={**drop, "audio": ones}) - dropped_audio).max() > 1e-4
  np.testing.assert_allclose(
      run(cond={**cond, "audio": cond["audio"] * 3.0}, drop={**drop, "audio": ones}),
      dropped_audio, atol=1e-5)
  for name in ("null_audio", "null_gaze", "null_distance", "null_prev"):
    assert params[name].shape == (c.width,)
  assert params["emotion"]["embedding"].shape == (c.num_emotions + 1, c.width)
  # The blink rate is a fourth control token: its value matters unless it is dropped.
  assert params["null_blink_rate"].shape == (c.width,)
  assert params["pos_control"].shape == (md.NUM_CONTROL_TOKENS + 1, c.width)
  assert np.abs(run(cond={**cond, "blink_rate": cond["blink_rate"] + 20}) - base).max() > 1e-4
  np.testing.assert_allclose(run(cond={**cond, "blink_rate": cond["blink_rate"] + 20},
                                 drop={**drop, "blink_rate": ones}),
                             run(drop={**drop, "blink_rate": ones}), atol=1e-5)
  # Dropping gaze ignores the gaze value; masking all audio equals dropping audio.
  g = run(cond={**cond, "gaze": -cond["gaze"]}, drop={**drop, "gaze": ones})
  np.testing.assert_allclose(g, run(drop={**drop, "gaze": ones}), atol=1e-5)
  masked = run(cond={**cond, "audio_mask": jnp.zeros_like(cond["audio_mask"])})
  np.testing.assert_allclose(masked, dropped_audio, atol=1e-5)
  # Dropped emotion is the learned 'empty' index.
  np.testing.assert_allclose(run(drop={**drop, "emotion": ones}),
                             run(cond={**cond, "emotion": jnp.full((2,), c.num_emotions,
                                                                   jnp.int32)}), atol=1e-5)
  # Drops are per example: dropping only example 1 leaves example 0 unchanged.
  half = run(drop={**drop, "audio": jnp.array([False, True])})
  np.testing.assert_allclose(half[0], base[0], atol=1e-5)
  assert np.abs(half[1] - base[1]).max() > 1e-4


def test_prev_mask_zero_ignores_previous_frames(tiny):
  c, params, cond, drop, run = tiny
  other = {**cond, "prev_motion": cond["prev_motion"] * -5.0 + 1.0,
           "prev_audio": cond["prev_audio"] + 2.0}
  # With previous frames present, they matter.
  assert np.abs(run(cond=other) - run()).max() > 1e-4
  none = jnp.zeros_like(cond["prev_mask"])
  np.testing.assert_allclose(run(cond={**other, "prev_mask": none}),
                             run(cond={**cond, "prev_mask": none}), atol=1e-5)
  # Partly missing: frame 0 missing, its values do not matter.
  part = jnp.array([[0.0, 1.0], [0.0, 1.0]])
  first = {**cond, "prev_mask": part,
           "prev_motion": cond["prev_motion"].at[:, 0].set(9.0)}
  np.testing.assert_allclose(run(cond=first), run(cond={**cond, "prev_mask": part}), atol=1e-5)
  # prev_mask 0 everywhere == dropping the previous-window context.
  np.testing.assert_allclose(run(cond={**cond, "prev_mask": none}),
                             run(drop={**drop, "prev": jnp.ones((2,), bool)}), atol=1e-5)


# ----------------------------------------------------------------------------- training

def _pipeline_batch(window, context):
  """Two Stage2Transform examples from fake records, stacked (as grain.Batch does)."""
  from conftest import make_fake_records
  from vasa_jax.data.pipeline import Stage2Transform
  recs = make_fake_records(n_clips=2, frames=12)
  tr = Stage2Transform(window, context)
  exs = [tr.random_map(r, np.random.default_rng(i + 1)) for i, r in enumerate(recs)]
  batch = {k: np.stack([e[k] for e in exs]) for k in exs[0]}
  batch["has_control_gaze"] = np.array([1, 0], np.int32)   # clip 1 has no gaze control
  return batch


def _tracks_motion(dim):
  def fn(pb):
    def cat(prefix):
      parts = [pb[prefix + "pose"], pb[prefix + "gaze"], pb[prefix + "mouth"],
               pb[prefix + "blink"][..., None], pb[prefix + "emotion_intensity"][..., None]]
      x = np.concatenate(parts, -1).astype(np.float32)
      return np.pad(x, [(0, 0), (0, 0), (0, dim - x.shape[-1])])
    return cat(""), cat("prev_")
  return fn


def test_batch_from_pipeline_and_training_lowers_loss():
  config = cfg_lib.get_config("tiny")
  c = config.model
  pb = _pipeline_batch(c.window, c.context)
  batch = md.batch_from_pipeline(pb, _tracks_motion(c.motion_dim), audio_lib.LogMelSource())
  assert batch["motion"].shape == (2, c.window, c.motion_dim)
  assert batch["prev_motion"].shape == (2, c.context, c.motion_dim)
  assert batch["audio"].shape == (2, c.window, c.audio_in_dim)
  assert batch["prev_audio"].shape == (2, c.context, c.audio_in_dim)
  assert batch["mask"].shape == batch["audio_mask"].shape == (2, c.window)
  np.testing.assert_array_equal(batch["drop"]["gaze"], [False, True])
  np.testing.assert_array_equal(batch["drop"]["emotion"], [False, False])

  model = md.MotionDiT(c)
  inputs = md.dummy_inputs(c, 2)
  params = nn.meta.unbox(_compile(model.init, _key(0), *inputs)(_key(0), *inputs))["params"]
  tx = optax.adam(3e-3)
  opt = tx.init(params)
  rng = _key(7)   # fixed: the same t, noise and drops every step, so losses compare

  def step(params, opt, batch):
    (loss, metrics), grads = jax.value_and_grad(md.training_loss, has_aux=True)(
        params, model, batch, rng, config)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss, metrics

  compiled = _compile(step, params, opt, batch)
  losses = []
  for _ in range(10):
    params, opt, loss, metrics = compiled(params, opt, batch)
    losses.append(float(loss))
  assert set(metrics) >= {"loss", "x0_mse", "velocity", "pose_mse", "dyn_mse"}
  assert all(np.isfinite(losses))
  assert losses[-1] < 0.7 * losses[0], losses

"""Stage 2: the motion diffusion transformer (MotionDiT) and its training loss.

The model denoises a window of W frames of motion latents X = [z_pose (6), z_dyn] given
conditions, and predicts the clean window X0 directly (VASA-1).

Token sequence (concatenated along time, one learned positional embedding per slot):

  [ gaze | distance | emotion | prev_1 .. prev_K | cur_1 .. cur_W ]

  control tokens   gaze (theta, phi) and distance through small MLPs; emotion through an
                   embedding of 5 emotions + 1 'empty' index (5).
  previous tokens  the previous window's last K clean motion frames (projected) plus their
                   audio features (shared AudioEncoder, projected).
  current tokens   the noisy motion x_t (projected) plus the window's audio features.

Timestep conditioning: sinusoidal(t * time_scale) -> MLP, added to every token and modulating
every LayerNorm (adaLN shift/scale, zero-initialised so a fresh model starts as plain pre-LN).
A pre-LN transformer encoder (multi-head self-attention + MLP) runs over all tokens; the W
current tokens go through a final modulated LayerNorm and a linear layer to X0 [B, W, D].

Classifier-free guidance: each condition can be dropped per example (`drop[name]` [B], 1 =
drop), replacing it with a LEARNED null embedding (a parameter, not zeros):
  "audio"    every current audio token -> null_audio (also where cond["audio_mask"] == 0)
  "gaze", "distance"  the control token -> null_gaze / null_distance
  "emotion"  the emotion index -> 5 ('empty' row of the embedding)
  "prev"     every previous token -> null_prev (also where cond["prev_mask"] == 0), so the
             output does not depend on the values of missing previous frames.
Missing `drop` keys mean "not dropped"; a missing condition in `cond` counts as dropped
(missing prev_motion: no previous frames).

Parameters carry logical axis names ("embed", "mlp", "heads", "kv", "vocab", "norm",
"out_small", ...) mapped to the mesh by the config's `logical_axis_rules`; activations are
constrained to ("batch", "length", "embed"). Parameters are float32; computation runs in
`config.dtype` with LayerNorm and softmax in float32.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vasa_jax.constants import SAMPLES_PER_FRAME
from vasa_jax.models import audio_encoder
from vasa_jax import diffusion
from vasa_jax.models import layers

NUM_CONTROL_TOKENS = 3           # gaze, distance, emotion (+ blink rate: model.blink_control)
DROP_KEYS = ("audio", "gaze", "distance", "emotion", "prev", "blink_rate")
COND_KEYS = ("audio", "prev_motion", "prev_audio", "prev_mask", "gaze", "distance", "emotion",
             "audio_mask", "blink_rate")
BLINK_RATE_SCALE = 20.0          # blinks per minute -> unit scale for the blink-rate MLP



# ----------------------------------------------------------------------------- helpers

def _dense(features: int, axes: tuple, name: str, dtype, zero: bool = False,
           scale: float = 1.0) -> nn.Dense:
  init = (nn.initializers.zeros_init() if zero
          else nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal"))
  return nn.Dense(
      features, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(init, axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)),
      name=name)


def _layer_norm(name: str, use_scale: bool = True) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=1e-6, dtype=jnp.float32, param_dtype=jnp.float32, use_bias=use_scale,
      use_scale=use_scale,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
      name=name)


def _constrain(x):
  return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding [B] -> [B, dim] (float32)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def _drop_flag(drop: Mapping | None, name: str, batch: int):
  """drop[name] (bool/float [B] or scalar) -> bool [B]; missing = not dropped."""
  if not drop or drop.get(name) is None:
    return jnp.zeros((batch,), bool)
  v = jnp.asarray(drop[name])
  v = v > 0.5 if v.dtype != jnp.bool_ else v
  return jnp.broadcast_to(v, (batch,))


# ----------------------------------------------------------------------------- modules

class Attention(nn.Module):
  """Multi-head self-attention with logical axis names; softmax in float32."""
  width: int
  heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if self.width % self.heads:
      raise ValueError(f"width {self.width} not divisible by heads {self.heads}")
    hd = self.width // self.heads
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")

    def proj(name):
      return nn.DenseGeneral(
          (self.heads, hd), dtype=self.dtype, param_dtype=jnp.float32,
          kernel_init=nn.with_logical_partitioning(init, ("embed", "heads", "kv")),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("heads", "kv")),
          name=name)(x)

    q, k, v = proj("query"), proj("key"), proj("value")          # [B, L, H, hd]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits / math.sqrt(hd), axis=-1)
    if self.dropout > 0 and not deterministic:
      weights = nn.Dropout(self.dropout)(weights, deterministic=False)
    o = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v)
    return nn.DenseGeneral(
        self.width, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(init, ("heads", "kv", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name="out")(o)


class Block(nn.Module):
  """Pre-LN transformer block with adaLN (shift, scale) from the timestep embedding."""
  width: int
  heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb, deterministic: bool = True):
    c = self.width
    mod = _dense(4 * c, ("embed", "mlp"), "ada", jnp.float32, zero=True)(nn.silu(temb))
    shift1, scale1, shift2, scale2 = jnp.split(mod[:, None, :], 4, axis=-1)

    h = _layer_norm("ln1", use_scale=False)(x) * (1 + scale1) + shift1
    h = Attention(c, self.heads, self.dropout, self.dtype, name="attn")(
        h.astype(self.dtype), deterministic)
    if self.dropout > 0:
      h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    x = _constrain(x + h)

    h = _layer_norm("ln2", use_scale=False)(x) * (1 + scale2) + shift2
    h = _dense(int(self.mlp_ratio * c), ("embed", "mlp"), "mlp_in", self.dtype)(
        h.astype(self.dtype))
    h = nn.gelu(h)
    h = _dense(c, ("mlp", "embed"), "mlp_out", self.dtype)(h)
    if self.dropout > 0:
      h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    return _constrain(x + h)


class MotionDiT(nn.Module):
  """x_t [B,W,D], t [B] in [0,1], cond, drop -> x0 prediction [B,W,D] (float32)."""
  config: Any    # the `model` sub-config (configs/motion_dit.py)

  @nn.compact
  def __call__(self, x_t, t, cond: Mapping, drop: Mapping | None = None, *,
               deterministic: bool = True):
    c = self.config
    dt = layers.get_dtype(c.dtype)
    width = c.width
    b, w, d = x_t.shape
    k = int(c.context)
    if d != c.motion_dim:
      raise ValueError(f"motion dim {d} != config.motion_dim {c.motion_dim}")
    if w > c.window:
      raise ValueError(f"window {w} longer than config.window {c.window}")
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))

    def null(name):
      return self.param(name, nn.with_logical_partitioning(
          nn.initializers.normal(1.0), ("embed",)), (width,), jnp.float32).astype(dt)

    def pos(name, n):
      return self.param(name, nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, "embed")), (n, width), jnp.float32).astype(dt)

    def mlp(x, name):
      h = nn.silu(_dense(width, ("embed", "mlp"), f"{name}_in", dt)(x.astype(dt)))
      return _dense(width, ("mlp", "embed"), f"{name}_out", dt)(h)

    # --- timestep
    temb = timestep_embedding(t * c.time_scale, width)
    temb = nn.silu(_dense(width, ("embed", "mlp"), "time_in", jnp.float32)(temb))
    temb = _dense(width, ("mlp", "embed"), "time_out", jnp.float32)(temb)   # [B, C] float32

    encoder = audio_encoder.AudioEncoder(
        features=c.audio_dim, hidden=c.audio_hidden, num_layers=c.audio_layers,
        kernel=c.audio_kernel, dtype=dt, name="audio_encoder")
    audio_proj = _dense(width, ("mlp", "embed"), "audio_proj", dt)

    # --- control tokens
    def control_missing(name):
      return _drop_flag(drop, name, b) | (cond.get(name) is None)

    gaze = cond.get("gaze")
    gaze = jnp.zeros((b, 2), jnp.float32) if gaze is None else jnp.asarray(gaze, jnp.float32)
    g_tok = mlp(gaze.reshape(b, 2) / c.gaze_scale, "gaze")
    g_tok = jnp.where(control_missing("gaze")[:, None], null("null_gaze")[None], g_tok)

    dist = cond.get("distance")
    dist = jnp.full((b,), c.distance_mean, jnp.float32) if dist is None else jnp.asarray(
        dist, jnp.float32)
    d_tok = mlp(((dist.reshape(b) - c.distance_mean) / c.distance_scale)[:, None], "distance")
    d_tok = jnp.where(control_missing("distance")[:, None], null("null_distance")[None], d_tok)

    emo = cond.get("emotion")
    emo = jnp.zeros((b,), jnp.int32) if emo is None else jnp.asarray(emo, jnp.int32).reshape(b)
    emo = jnp.where(control_missing("emotion"), c.num_emotions, jnp.clip(emo, 0, c.num_emotions))
    e_tok = nn.Embed(
        c.num_emotions + 1, width, dtype=dt, param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(1.0), ("vocab", "embed")), name="emotion")(emo)
    tokens = [g_tok, d_tok, e_tok.astype(dt)]
    if c.get("blink_control", False):
      rate = cond.get("blink_rate")
      rate = jnp.zeros((b,), jnp.float32) if rate is None else jnp.asarray(rate, jnp.float32)
      r_tok = mlp((rate.reshape(b) / BLINK_RATE_SCALE)[:, None], "blink_rate")
      tokens.append(jnp.where(control_missing("blink_rate")[:, None],
                              null("null_blink_rate")[None], r_tok))
    ctrl = jnp.stack(tokens, axis=1) + pos("pos_control", len(tokens))

    # --- current tokens
    a_in = jnp.asarray(cond["audio"], jnp.float32) if cond.get("audio") is not None else \
        jnp.zeros((b, w, c.audio_in_dim), jnp.float32)
    if a_in.shape[1] != w:
      raise ValueError(f"audio features cover {a_in.shape[1]} frames, the window {w}")
    a_tok = audio_proj(encoder(a_in))
    keep_audio = ~control_missing("audio")[:, None]
    if cond.get("audio_mask") is not None:
      keep_audio = keep_audio & (jnp.asarray(cond["audio_mask"]).reshape(b, w) > 0.5)
    a_tok = jnp.where(keep_audio[..., None], a_tok, null("null_audio"))
    cur = _dense(width, ("embed", "mlp"), "motion_in", dt)(x_t.astype(dt))
    cur = _dense(width, ("mlp", "embed"), "motion_proj", dt)(nn.silu(cur)) + a_tok
    cur = cur + pos("pos_current", c.window)[:w]

    # --- previous-window tokens
    parts = [ctrl]
    if k > 0:
      pm = cond.get("prev_motion")
      if pm is None:
        pm = jnp.zeros((b, k, d), jnp.float32)
        prev_mask = jnp.zeros((b, k), jnp.float32)
      else:
        prev_mask = cond.get("prev_mask")
        prev_mask = jnp.ones((b, k), jnp.float32) if prev_mask is None else prev_mask
      pm = jnp.asarray(pm, jnp.float32)
      if pm.shape[1] != k:
        raise ValueError(f"prev_motion has {pm.shape[1]} frames, config.context is {k}")
      pa = cond.get("prev_audio")
      pa = jnp.zeros((b, k, c.audio_in_dim), jnp.float32) if pa is None else jnp.asarray(
          pa, jnp.float32)
      p_tok = _dense(width, ("embed", "mlp"), "prev_motion_in", dt)(pm.astype(dt))
      p_tok = _dense(width, ("mlp", "embed"), "prev_motion_proj", dt)(nn.silu(p_tok))
      p_tok = p_tok + audio_proj(encoder(pa))
      keep_prev = (~_drop_flag(drop, "prev", b))[:, None] & (
          jnp.asarray(prev_mask).reshape(b, k) > 0.5)
      p_tok = jnp.where(keep_prev[..., None], p_tok, null("null_prev"))
      parts.append(p_tok + pos("pos_prev", k))
    parts.append(cur)

    # --- transformer
    x = jnp.concatenate([p.astype(dt) for p in parts], axis=1)
    x = _constrain(x + temb[:, None, :].astype(dt))
    for i in range(c.layers):
      x = Block(width, c.heads, c.mlp_ratio, c.dropout, dt, name=f"block{i}")(
          x, temb, deterministic)

    x = x[:, -w:]
    mod = _dense(2 * width, ("embed", "mlp"), "final_ada", jnp.float32, zero=True)(nn.silu(temb))
    shift, scale = jnp.split(mod[:, None, :], 2, axis=-1)
    x = _layer_norm("final_ln", use_scale=False)(x) * (1 + scale) + shift
    out = _dense(d, ("embed", "out_small"), "out", jnp.float32)(x.astype(jnp.float32))
    return out.astype(jnp.float32)


# ----------------------------------------------------------------------------- utilities

def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def dummy_inputs(model_config, batch_size: int = 1, window: int | None = None):
  """Zero inputs of the right shapes: (x_t, t, cond, drop) for init / eval_shape."""
  c = model_config
  b, w, k = batch_size, window or c.window, c.context
  x_t = jnp.zeros((b, w, c.motion_dim), jnp.float32)
  t = jnp.zeros((b,), jnp.float32)
  cond = {
      "audio": jnp.zeros((b, w, c.audio_in_dim), jnp.float32),
      "audio_mask": jnp.ones((b, w), jnp.float32),
      "prev_motion": jnp.zeros((b, k, c.motion_dim), jnp.float32),
      "prev_audio": jnp.zeros((b, k, c.audio_in_dim), jnp.float32),
      "prev_mask": jnp.ones((b, k), jnp.float32),
      "gaze": jnp.zeros((b, 2), jnp.float32),
      "distance": jnp.full((b,), c.distance_mean, jnp.float32),
      "emotion": jnp.zeros((b,), jnp.int32),
  }
  if c.get("blink_control", False):
    cond["blink_rate"] = jnp.zeros((b,), jnp.float32)
  drop = {name: jnp.zeros((b,), bool) for name in DROP_KEYS}
  return x_t, t, cond, drop


# ----------------------------------------------------------------------------- training

def training_loss(params, model: MotionDiT, batch: Mapping, rng, config):
  """VASA-1 stage-2 objective. Returns (loss, metrics).

  batch: "motion" [B,W,D] (normalised), "mask" [B,W] (1 valid frame), the cond keys
  (COND_KEYS) and optionally "drop": {name: [B]} forced drops (e.g. a control the clip does
  not have). Per example: t ~ U(0,1), x_t = q_sample(x0, t, eps); audio / gaze / distance /
  emotion each dropped with p = train.p_drop, the previous-window context with
  p = train.p_drop_prev; with p = train.p_mask_tail the last U[1, W/2] frames of audio are
  masked. Loss = masked x0 MSE + train.velocity_weight * masked MSE of the frame-to-frame
  differences.
  """
  tc = config.train
  schedule = diffusion.schedule_from_config(config)
  x0 = jnp.asarray(batch["motion"], jnp.float32)
  b, w, d = x0.shape
  mask = jnp.asarray(batch["mask"], jnp.float32) if "mask" in batch else jnp.ones((b, w))
  k_t, k_n, k_drop, k_tail, k_len, k_do = jax.random.split(rng, 6)

  t = jax.random.uniform(k_t, (b,), jnp.float32)
  noise = jax.random.normal(k_n, x0.shape, jnp.float32)
  x_t = diffusion.q_sample(x0, t, noise, schedule)

  forced = batch.get("drop") or {}
  drop = {}
  for name, key in zip(DROP_KEYS, jax.random.split(k_drop, len(DROP_KEYS))):
    p = tc.p_drop_prev if name == "prev" else tc.p_drop
    dn = jax.random.bernoulli(key, p, (b,))
    if forced.get(name) is not None:
      dn = dn | (jnp.broadcast_to(jnp.asarray(forced[name]), (b,)) > 0.5)
    drop[name] = dn

  audio_mask = (jnp.asarray(batch["audio_mask"], jnp.float32) if batch.get("audio_mask")
                is not None else jnp.ones((b, w), jnp.float32))
  do_tail = jax.random.bernoulli(k_tail, tc.p_mask_tail, (b,))
  n_tail = jax.random.randint(k_len, (b,), 1, max(w // 2, 1) + 1)
  tail = do_tail[:, None] & (jnp.arange(w)[None, :] >= (w - n_tail)[:, None])
  audio_mask = audio_mask * (1.0 - tail.astype(jnp.float32))

  cond = {key: batch[key] for key in COND_KEYS if batch.get(key) is not None}
  cond["audio_mask"] = audio_mask
  pred = model.apply({"params": params}, x_t, t, cond, drop, deterministic=False,
                     rngs={"dropout": k_do})

  x0_mse = diffusion.x0_loss(pred, x0, mask)
  vel_mask = mask[:, 1:] * mask[:, :-1]
  velocity = diffusion.x0_loss(pred[:, 1:] - pred[:, :-1], x0[:, 1:] - x0[:, :-1], vel_mask)
  loss = x0_mse + tc.velocity_weight * velocity
  pose_dim = model.config.pose_dim
  metrics = {
      "loss": loss,
      "x0_mse": x0_mse,
      "velocity": velocity,
      "pose_mse": diffusion.x0_loss(pred[..., :pose_dim], x0[..., :pose_dim], mask),
      "dyn_mse": diffusion.x0_loss(pred[..., pose_dim:], x0[..., pose_dim:], mask),
      "audio_tail_masked": jnp.mean(1.0 - audio_mask),
  }
  return loss, metrics


# ----------------------------------------------------------------------------- input pipeline

def contiguous_features(audio_features_fn: Callable, left, prev, window):
  """Raw audio [B, L*640], [B, K*640], [B, W*640] of consecutive frames -> the features of
  the window [B, W, A] and of the previous K frames [B, K, A], computed over the whole
  stretch at once (the left frames only give the front end its context)."""
  spf = SAMPLES_PER_FRAME
  left, prev, window = (jnp.asarray(a, jnp.float32) for a in (left, prev, window))
  n_l, n_k = left.shape[-1] // spf, prev.shape[-1] // spf
  f = jnp.asarray(audio_features_fn(jnp.concatenate([left, prev, window], -1)), jnp.float32)
  return f[:, n_l + n_k:], f[:, n_l:n_l + n_k]


def batch_from_pipeline(pipeline_batch: Mapping, motion_key_fn: Callable,
                        audio_features_fn: Callable) -> dict:
  """A Stage2Transform batch (vasa_jax/data/pipeline.py) -> a `training_loss` batch.

  motion_key_fn(pipeline_batch) -> (motion [B,W,D], prev_motion [B,K,D]) (or a dict with those
    keys): the motion latents of the window and of the previous K frames, normalised, e.g.
    stage-1 pose + dynamics codes of the frames, or ground-truth tracks for synthetic data.
  audio_features_fn(audio [B, N]) -> [B, N // 640, A]: a `audio.FeatureSource` (log-mel by
    default), applied to the window's and the previous frames' raw audio.

  Clips without a control (has_control_* == 0) get that condition force-dropped ("drop"), so
  the model only ever sees real control values or the null embedding. A control emotion with
  intensity 0 is neutral (index 0). Frames past the end of the clip (mask 0) carry no audio,
  so audio_mask = mask.
  """
  out = motion_key_fn(pipeline_batch)
  if isinstance(out, Mapping):
    motion, prev_motion = out["motion"], out.get("prev_motion")
  else:
    motion, prev_motion = out
  mask = jnp.asarray(pipeline_batch["mask"], jnp.float32)
  b, w = mask.shape
  prev_mask = jnp.asarray(pipeline_batch["prev_mask"], jnp.float32)
  k = prev_mask.shape[1]
  if pipeline_batch.get("left_audio") is not None:
    # [left | prev | window] featurised as one stretch (the live generator's features)
    audio, prev_audio = contiguous_features(
        audio_features_fn, pipeline_batch["left_audio"], pipeline_batch["prev_audio"],
        pipeline_batch["audio"])
  else:
    audio = jnp.asarray(audio_features_fn(pipeline_batch["audio"]), jnp.float32)
    if k > 0:
      prev_audio = jnp.asarray(audio_features_fn(pipeline_batch["prev_audio"]), jnp.float32)
    else:
      prev_audio = jnp.zeros((b, 0, audio.shape[-1]), jnp.float32)
  if audio.shape[1] != w:
    raise ValueError(f"audio_features_fn gave {audio.shape[1]} frames for a window of {w}")
  if prev_motion is None:
    prev_motion = jnp.zeros((b, k, motion.shape[-1]), jnp.float32)
    prev_mask = jnp.zeros_like(prev_mask)
  emotion = jnp.asarray(pipeline_batch["control_emotion"], jnp.int32).reshape(b)
  if "control_emotion_intensity" in pipeline_batch:
    intensity = jnp.asarray(pipeline_batch["control_emotion_intensity"], jnp.float32).reshape(b)
    emotion = jnp.where(intensity > 0, emotion, 0)

  def missing(flag):
    if flag not in pipeline_batch:
      return jnp.zeros((b,), bool)
    return jnp.asarray(pipeline_batch[flag]).reshape(b) == 0

  out = {
      "motion": jnp.asarray(motion, jnp.float32),
      "mask": mask,
      "audio": audio,
      "audio_mask": mask,
      "prev_motion": jnp.asarray(prev_motion, jnp.float32),
      "prev_audio": prev_audio,
      "prev_mask": prev_mask,
      "gaze": jnp.asarray(pipeline_batch["control_gaze"], jnp.float32).reshape(b, 2),
      "distance": jnp.asarray(pipeline_batch["control_distance"], jnp.float32).reshape(b),
      "emotion": emotion,
      "drop": {"gaze": missing("has_control_gaze"),
               "distance": missing("has_control_distance"),
               "emotion": missing("has_control_emotion")},
  }
  if "control_blink_rate" in pipeline_batch:
    out["blink_rate"] = jnp.asarray(pipeline_batch["control_blink_rate"], jnp.float32).reshape(b)
    out["drop"]["blink_rate"] = missing("has_control_blink_rate")
  return out

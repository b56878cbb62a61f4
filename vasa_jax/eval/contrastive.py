"""Shared pieces of the trained two-tower evaluators (`syncnet`, `meshsync`): audio features, the
symmetric contrastive loss, and the weights folder format.

A weights folder holds

    DIR/<name>.json      format, version, model config, feature config, statistics, provenance
    DIR/<name>.msgpack   the model parameters (flax.serialization, float32)

so an evaluator loads without orbax or optimizer state, on any device.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from vasa_jax import audio as audio_lib
from vasa_jax.errors import InputError

FORMAT = "vasa-jax-evaluator"
VERSION = 1


class EvaluatorError(InputError):
  """A weights folder is missing, incomplete or of another evaluator (one readable line)."""


def assets_dir(name: str) -> str:
  """Where the package bundles the trained weights of evaluator `name`."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "assets", "evaluators", name)


def trained_info(meta: dict, weights: str | None, name: str) -> dict:
  """A loaded evaluator's recorded training summary, and where its weights were read from
  (--eval-only reports)."""
  return {**meta.get("training", {}), "weights": os.path.relpath(weights or assets_dir(name))}


# ----------------------------------------------------------------------------- audio features

def log_mel(audio_16k: np.ndarray, *, n_mels: int, per_frame: int) -> np.ndarray:
  """16 kHz mono audio [N] -> log-mel [T, per_frame, n_mels], T = N // 640 (NumPy).

  The same framing as `vasa_jax.audio.log_mel` (a 400-sample Hann window every
  640 / per_frame samples, mel frame j centred on hop * j + hop / 2, so video frame t owns mel
  frames per_frame * t ... per_frame * t + per_frame - 1), computed in NumPy so clips of any
  length cost no compilation.
  """
  if audio_lib.SAMPLES_PER_FRAME % per_frame:
    raise ValueError("per_frame must divide 640")
  x = np.asarray(audio_16k, np.float32).reshape(-1)
  hop = audio_lib.SAMPLES_PER_FRAME // per_frame
  t = x.shape[0] // audio_lib.SAMPLES_PER_FRAME
  m = t * per_frame
  if m == 0:
    return np.zeros((0, per_frame, n_mels), np.float32)
  left = audio_lib.WIN // 2 - hop // 2
  x = np.pad(x[: t * audio_lib.SAMPLES_PER_FRAME], (left, max(0, audio_lib.WIN - hop - left)))
  idx = hop * np.arange(m)[:, None] + np.arange(audio_lib.WIN)[None, :]
  frames = x[idx] * audio_lib._hann(audio_lib.WIN)
  spec = np.fft.rfft(frames, n=audio_lib.N_FFT, axis=-1)
  power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
  fb = audio_lib.mel_filterbank(n_mels, fmax=audio_lib.SAMPLE_RATE / 2)
  feats = np.log(power @ fb.T + audio_lib.LOG_EPS)
  return feats.reshape(t, per_frame, n_mels).astype(np.float32)


def normalise_log_mel(feats: np.ndarray, floor_nats: float = 9.0) -> np.ndarray:
  """Per-clip normalisation of log-mel [T, ..., n_mels]: levels below the clip's peak minus
  `floor_nats` (~39 dB) are raised to that floor (digital silence and recording noise floors
  look alike), then each mel band loses its clip mean and the whole is divided by the clip's
  standard deviation. Loudness and microphone colour drop out; timing and spectrum remain."""
  f = np.asarray(feats, np.float32)
  if f.size == 0:
    return f
  f = np.maximum(f, f.max() - floor_nats)
  axes = tuple(range(f.ndim - 1))
  f = f - f.mean(axis=axes, keepdims=True)
  return (f / (f.std() + 1e-3)).astype(np.float32)


# ----------------------------------------------------------------------------- loss

def clip_loss(x: jax.Array, y: jax.Array, logit_scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE over L2-normalised embeddings x, y [N, D]: row i of x matches row i of
  y and every other row is a negative. Returns (loss, accuracy of x -> y retrieval)."""
  logits = logit_scale * (x @ y.T)
  labels = jnp.arange(x.shape[0])
  lx = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[labels, labels])
  ly = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[labels, labels])
  acc = jnp.mean(jnp.argmax(logits, axis=1) == labels)
  return 0.5 * (lx + ly), acc


def l2_normalise(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


# ----------------------------------------------------------------------------- weights folder

def count_params(params) -> int:
  from vasa_jax import artifacts
  return artifacts.count_params(params)


def save(out_dir: str, name: str, params, meta: dict[str, Any]) -> str:
  """Writes DIR/<name>.msgpack and DIR/<name>.json atomically (vasa_jax.artifacts). `meta` must
  be JSON-serialisable; format, version and the parameter count are added."""
  from vasa_jax import artifacts
  host = artifacts.to_host(params)
  full = {"format": FORMAT, "version": VERSION, "evaluator": name,
          "params": artifacts.count_params(host), **meta}
  return artifacts.write_weights_folder(out_dir, weights={f"{name}.msgpack": host},
                                        documents={f"{name}.json": full}, prefix=f".{name}.")


def run_chunked(fn, params, x: np.ndarray, chunk: int, out_dim: int) -> np.ndarray:
  """fn(params, x[i:i+chunk]) over fixed-size chunks (the last one zero-padded), so every
  input length reuses one compiled function; [N, out_dim]."""
  out = []
  for i in range(0, len(x), chunk):
    part = np.asarray(x[i:i + chunk])
    pad = chunk - len(part)
    part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
    out.append(np.asarray(fn(params, jnp.asarray(part)))[:chunk - pad])
  return np.concatenate(out) if out else np.zeros((0, out_dim), np.float32)



class TwoTowerEvaluator:
  """Base of the trained two-tower evaluators (syncnet.SyncEvaluator, meshsync's):
  holds the params, jits the model's two embedding methods once, and runs them over window
  batches in padded chunks of CHUNK (one compile for every clip length)."""

  CHUNK = 64

  def __init__(self, model, method_a, method_b, params, cfg, meta: dict | None = None):
    self.cfg = cfg
    self.params = jax.tree_util.tree_map(jnp.asarray, params)
    self.meta = meta or {}
    self._embed_a = jax.jit(lambda p, x: model.apply({"params": p}, x, method=method_a))
    self._embed_b = jax.jit(lambda p, x: model.apply({"params": p}, x, method=method_b))

  def _run(self, fn, x: np.ndarray) -> np.ndarray:
    return run_chunked(fn, self.params, np.asarray(x, np.float32), self.CHUNK,
                       self.cfg.embed_dim)

def load(path: str | None, name: str) -> tuple[dict, dict]:
  """(params, meta) from a folder written by `save` (default: the bundled weights)."""
  path = os.path.abspath(os.fspath(path or assets_dir(name)))
  meta_path = os.path.join(path, f"{name}.json")
  weights_path = os.path.join(path, f"{name}.msgpack")
  if not os.path.isfile(meta_path) or not os.path.isfile(weights_path):
    raise EvaluatorError(f"{path} holds no {name} evaluator weights ({name}.json and "
                         f"{name}.msgpack); train them with `vasa-jax eval {name} --out DIR`")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT or meta.get("evaluator") != name:
    raise EvaluatorError(f"{meta_path} is not a {name} evaluator")
  if int(meta.get("version", 0)) > VERSION:
    raise EvaluatorError(f"{meta_path} has format version {meta.get('version')}; this code "
                         f"reads up to {VERSION}")
  with open(weights_path, "rb") as f:
    params = serialization.msgpack_restore(f.read())
  params = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float32), params)
  return params, meta


def write_json(path: str, obj: Any) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".partial"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)

"""A phonetic audio front end: log-mel -> per-frame features that carry what the lips do.

No pretrained speech encoder can be downloaded here, so this one is trained
(vasa_jax/train/phonetic.py) on espeak-ng speech in many voices and languages, whose phoneme
timings are exact, with noise, reverberation, gain and speed/pitch augmentation so that it
holds on real voices. Its objectives, per 25-fps video frame: the viseme class of the phone
sounding at the frame (VISEMES) and the mouth shape (open, wide, round) that coarticulated
visemes give there (vasa_jax.synth.motion.mouth_track).

`PhoneticSource` is an `audio.FeatureSource`: audio_16k [B, N] -> [B, N // 640, dim], the
encoder's embedding (features whose distances are phonetic, not loudness) followed by the
predicted mouth shape and viseme probabilities. A Wav2Vec2-class encoder, where one is
available, drops in through the same interface.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import serialization

from vasa_jax import artifacts
from vasa_jax import audio as audio_lib

# Viseme classes (by what the lips and jaw do, as in the MPEG-4 / Preston Blair groups).
VISEMES = ("silence", "bilabial", "labiodental", "dental", "alveolar", "postalveolar",
           "velar", "r", "w", "open", "mid", "close_front", "rounded")
N_MELS, MEL_PER_FRAME = 80, 2
WEIGHTS = "phonetic.msgpack"
META = "phonetic.json"


@dataclasses.dataclass(frozen=True)
class Config(artifacts.JsonConfig):
  hidden: int = 128
  embed: int = 32
  dilations: tuple = (1, 2, 4, 8, 1)
  kernel: int = 3


class PhoneticEncoder(nn.Module):
  """Log-mel [B, T, 160] -> (embedding [B, T, embed], viseme logits [B, T, V],
  mouth (open, wide, round) [B, T, 3] in [0, 1]). Dilated residual 1D convolutions over time
  (SAME padding): frame t hears about +-(kernel // 2) * sum(dilations) frames around it
  (0.64 s with the defaults), enough for coarticulation on either side."""
  cfg: Config = Config()

  @nn.compact
  def __call__(self, x):
    c = self.cfg
    x = nn.LayerNorm(name="in_norm")(x)
    h = nn.Dense(c.hidden, name="stem")(x)
    for i, d in enumerate(c.dilations):
      y = nn.gelu(nn.LayerNorm(name=f"norm{i}")(h))
      y = nn.Conv(c.hidden, (c.kernel,), kernel_dilation=(d,), padding="SAME",
                  name=f"conv{i}")(y)
      y = nn.Dense(c.hidden, name=f"mix{i}")(nn.gelu(y))
      h = h + y
    h = nn.gelu(nn.LayerNorm(name="norm_out")(h))
    emb = nn.Dense(c.embed, name="embed")(h)
    logits = nn.Dense(len(VISEMES), name="viseme")(nn.gelu(emb))
    mouth = nn.sigmoid(nn.Dense(3, name="mouth")(nn.gelu(emb)))
    return emb, logits, mouth


def features(audio_16k) -> jax.Array:
  """The encoder's input: log-mel at two mel frames per video frame, [B, N // 640, 160]."""
  return audio_lib.log_mel(audio_16k, n_mels=N_MELS, frames_per_video_frame=MEL_PER_FRAME)


def init_params(cfg: Config = Config(), seed: int = 0):
  x = jnp.zeros((1, 8, N_MELS * MEL_PER_FRAME), jnp.float32)
  return PhoneticEncoder(cfg).init(jax.random.PRNGKey(seed), x)["params"]


def default_dir() -> str:
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                      "phonetic")


class PhoneticSource:
  """The FeatureSource of a trained PhoneticEncoder: audio [B, N] -> [B, N // 640, dim] =
  embedding ++ mouth (open, wide, round) ++ viseme probabilities. `predict` gives the heads
  alone (for evaluation)."""

  def __init__(self, params, cfg: Config = Config(), meta: dict | None = None):
    self.params, self.cfg, self.meta = params, cfg, dict(meta or {})
    self.dim = cfg.embed + 3 + len(VISEMES)
    model = PhoneticEncoder(cfg)

    def run(p, audio):
      emb, logits, mouth = model.apply({"params": p}, features(audio))
      return emb, jax.nn.softmax(logits, -1), mouth
    self._run = jax.jit(run)

  def __call__(self, audio_16k):
    emb, probs, mouth = self._run(self.params, jnp.asarray(audio_16k, jnp.float32))
    return jnp.concatenate([emb, mouth, probs], -1)

  def predict(self, audio_16k: np.ndarray) -> dict:
    """One clip of 16 kHz audio [N] -> {"viseme": int [T], "probs": [T, V], "mouth": [T, 3]}."""
    a = np.asarray(audio_16k, np.float32).reshape(1, -1)
    _, probs, mouth = (np.asarray(x)[0] for x in self._run(self.params, jnp.asarray(a)))
    return {"viseme": probs.argmax(-1), "probs": probs, "mouth": mouth}


def save(out_dir: str, params, cfg: Config, meta: dict | None = None) -> str:
  return artifacts.write_weights_folder(
      out_dir, weights={WEIGHTS: artifacts.to_host(params)},
      documents={META: {"config": cfg.to_json(), "visemes": list(VISEMES),
                        "params": artifacts.count_params(params), **(meta or {})}},
      prefix=".phonetic.")


def load(path: str | None = None) -> PhoneticSource:
  path = path or default_dir()
  try:
    with open(os.path.join(path, META)) as f:
      meta = json.load(f)
    with open(os.path.join(path, WEIGHTS), "rb") as f:
      params = serialization.msgpack_restore(f.read())
  except (OSError, ValueError) as e:
    raise FileNotFoundError(f"no phonetic encoder weights in {path}: {e}") from None
  if tuple(meta.get("visemes", ())) != VISEMES:
    raise ValueError(f"{path}: the weights were trained for other viseme classes")
  return PhoneticSource(params, Config.from_json(meta["config"]), meta)


# ----------------------------------------------------------------------------- stage 2

AUDIO_FEATURES = ("log_mel", "log_mel+phonetic")


def feature_dim(kind: str, n_mels: int = N_MELS, phonetic_dim: int | None = None) -> int:
  """Per-frame width of a motion model's audio features `kind` (model.audio_features)."""
  if kind not in AUDIO_FEATURES:
    raise ValueError(f"model.audio_features must be one of {AUDIO_FEATURES}, got {kind!r}")
  base = 2 * n_mels
  if kind == "log_mel":
    return base
  return base + (phonetic_dim if phonetic_dim is not None else
                 Config().embed + 3 + len(VISEMES))


def audio_source(model_config, phonetic_dir: str | None = None):
  """The FeatureSource a motion model's config names: log-mel (model.audio_features
  "log_mel"), or log-mel followed by the frozen phonetic front end's features
  ("log_mel+phonetic"; its weights from phonetic_dir, default the package's). Checks that
  the width is model.audio_in_dim."""
  kind = model_config.get("audio_features", "log_mel")
  n_mels = int(model_config.get("n_mels", N_MELS))
  want = int(model_config.audio_in_dim)
  if kind == "log_mel":
    fpv = want // n_mels
    if fpv * n_mels != want:
      raise ValueError(f"model.audio_in_dim={want} is not a multiple of n_mels={n_mels}")

    def mel(audio):
      return audio_lib.log_mel(audio, n_mels=n_mels, frames_per_video_frame=fpv)
    return mel
  src = load(phonetic_dir)
  have = feature_dim(kind, n_mels, src.dim)
  if have != want:
    raise ValueError(f"model.audio_in_dim={want}, but log-mel + the phonetic features are "
                     f"{have} wide")

  def both(audio):
    return jnp.concatenate([audio_lib.log_mel(audio, n_mels=n_mels, frames_per_video_frame=2),
                            src(audio)], -1)
  return both

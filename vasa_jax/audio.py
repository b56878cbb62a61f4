"""Audio features for the motion model, aligned to 25 fps video frames.

Frame t of a video covers the audio samples [640 t, 640 (t + 1)) at 16 kHz
(docs/conventions.md). Everything here keeps that alignment exact:

* `log_mel` is pure JAX (jnp.fft): a 400-sample (25 ms) Hann window every 320 samples (20 ms),
  i.e. two mel frames per video frame. Mel frame j is centred on sample 320 j + 160, so video
  frame t owns mel frames 2t and 2t+1 (centres 640t + 160 and 640t + 480), whose windows reach
  only 40 samples (2.5 ms, where the Hann taper is below 0.1) into the neighbouring video frames.
  The two mel frames are stacked, giving [T, 2 * n_mels] with T = len(audio) // 640 (a partial
  last video frame is dropped; the window overhang past either end reads zeros).
* `AudioEncoder` (learned, part of the motion model) maps these per-frame features to the
  model's audio feature width with a few 1D convolutions over time and an MLP.
* `FeatureSource` is the interface of any per-frame audio feature extractor. A pretrained speech
  encoder (Wav2Vec2-style, 50 Hz features) plugs in by resampling its features to 25 fps with
  `resample_features`; `LogMelSource` is the default.
"""

from __future__ import annotations

import functools
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

HOP = 320                                # 20 ms
WIN = 400                                # 25 ms
N_FFT = 512                              # window zero-padded to the next power of two
LOG_EPS = 1e-5


# ----------------------------------------------------------------------------- mel filterbank

def _hz_to_mel(f):
  """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
  f = np.asarray(f, np.float64)
  f_sp = 200.0 / 3
  mels = f / f_sp
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = np.log(6.4) / 27.0
  return np.where(f >= min_log_hz,
                  min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m):
  m = np.asarray(m, np.float64)
  f_sp = 200.0 / 3
  freqs = f_sp * m
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = np.log(6.4) / 27.0
  return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int = 80, *, sr: int = SAMPLE_RATE, n_fft: int = N_FFT,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
  """Slaney-style triangular mel filters [n_mels, n_fft // 2 + 1], area-normalised.

  Matches `librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)`
  (htk=False, norm="slaney").
  """
  fmax = sr / 2 if fmax is None else fmax
  fft_freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
  mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
  fdiff = np.diff(mel_f)
  ramps = mel_f[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / fdiff[:-1, None]
  upper = ramps[2:] / fdiff[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
  weights.setflags(write=False)
  return weights.astype(np.float32)


def _hann(n: int) -> np.ndarray:
  """Periodic Hann window (scipy.signal.get_window('hann', n), librosa's default)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


# ----------------------------------------------------------------------------- log-mel

def num_video_frames(num_samples: int) -> int:
  return int(num_samples) // SAMPLES_PER_FRAME


def log_mel(audio_16k, *, n_mels: int = 80, frames_per_video_frame: int = 2) -> jax.Array:
  """16 kHz mono audio [..., N] -> per-video-frame log-mel features [..., T, fpv * n_mels].

  T = N // 640. Leading batch axes are kept. See the module docstring for the alignment.
  """
  if SAMPLES_PER_FRAME % frames_per_video_frame:
    raise ValueError("frames_per_video_frame must divide 640")
  hop = SAMPLES_PER_FRAME // frames_per_video_frame
  x = jnp.asarray(audio_16k, jnp.float32)
  n = x.shape[-1]
  t = num_video_frames(n)
  lead = x.shape[:-1]
  m = t * frames_per_video_frame                       # mel frames
  # Mel frame j is centred on hop * j + hop / 2: its window starts at hop * j + hop/2 - WIN/2.
  left = WIN // 2 - hop // 2
  if left < 0:
    raise ValueError("hop longer than the window")
  x = x[..., : t * SAMPLES_PER_FRAME]
  pad = [(0, 0)] * len(lead) + [(left, max(0, WIN - hop - left))]
  x = jnp.pad(x, pad)
  if m == 0:
    return jnp.zeros((*lead, 0, frames_per_video_frame * n_mels), jnp.float32)
  idx = hop * np.arange(m)[:, None] + np.arange(WIN)[None, :]      # [m, WIN], static
  frames = x[..., idx] * _hann(WIN)                                # [..., m, WIN]
  spec = jnp.fft.rfft(frames, n=N_FFT, axis=-1)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2                # [..., m, N_FFT/2+1]
  fb = jnp.asarray(mel_filterbank(n_mels, fmax=SAMPLE_RATE / 2))
  mel = jnp.einsum("...mf,kf->...mk", power, fb, precision=jax.lax.Precision.HIGHEST)
  feats = jnp.log(mel + LOG_EPS)
  return feats.reshape(*lead, t, frames_per_video_frame * n_mels)


def feature_dim(n_mels: int = 80, frames_per_video_frame: int = 2) -> int:
  return n_mels * frames_per_video_frame


# ----------------------------------------------------------------------------- sources

class FeatureSource(Protocol):
  """Per-video-frame audio features: audio_16k [B, N] -> [B, N // 640, A].

  Any extractor satisfying this drops into the stage-2 pipeline (`batch_from_pipeline`'s
  `audio_features_fn`) and the sampler. A pretrained speech encoder such as Wav2Vec2 produces
  features at 50 Hz (one per 320 samples, roughly); wrap it as

    feats = encoder(audio)                                     # [B, T', A]
    return resample_features(feats, audio.shape[-1] // 640)    # [B, T, A]

  The motion model's `audio_in_dim` must then be set to A.
  """

  def __call__(self, audio_16k: jax.Array) -> jax.Array:
    ...


class LogMelSource:
  """The default FeatureSource: `log_mel`, [B, N] -> [B, N // 640, 2 * n_mels]."""

  def __init__(self, n_mels: int = 80, frames_per_video_frame: int = 2):
    self.n_mels, self.fpv = n_mels, frames_per_video_frame
    self.dim = n_mels * frames_per_video_frame

  def __call__(self, audio_16k):
    return log_mel(audio_16k, n_mels=self.n_mels, frames_per_video_frame=self.fpv)


def resample_features(feats, num_frames: int) -> jax.Array:
  """Linear interpolation in time, [B, T', A] -> [B, T, A], aligning the two grids' centres.

  Feature i of T' spans [i, i + 1) * (duration / T'); output frame t samples the source at its
  centre (t + 0.5) * T' / T - 0.5 (clamped to the ends), which is exact alignment for encoders
  whose features tile the audio evenly (e.g. 50 Hz -> 25 fps averages pairs of neighbours).
  """
  feats = jnp.asarray(feats)
  src = feats.shape[-2]
  if src == 0 or num_frames == 0:
    return jnp.zeros((*feats.shape[:-2], num_frames, feats.shape[-1]), feats.dtype)
  pos = (np.arange(num_frames) + 0.5) * (src / num_frames) - 0.5
  pos = np.clip(pos, 0.0, src - 1)
  lo = np.floor(pos).astype(np.int32)
  hi = np.minimum(lo + 1, src - 1)
  w = jnp.asarray((pos - lo)[:, None], feats.dtype)
  return feats[..., lo, :] * (1 - w) + feats[..., hi, :] * w

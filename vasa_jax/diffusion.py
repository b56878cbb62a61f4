"""Diffusion maths for the motion model (VDM style: continuous time, small swappable schedules).

Continuous time t in [0, 1]: t = 0 is clean data, t = 1 is (almost) pure noise.

  x_t = alpha(t) x0 + sigma(t) eps,   alpha^2 + sigma^2 = 1 (variance preserving),
  logsnr(t) = log(alpha^2 / sigma^2).

A schedule is any object with `alpha_sigma(t) -> (alpha, sigma)` and `logsnr(t)`;
`CosineSchedule` (the cosine schedule of Nichol & Dhariwal, written in log-SNR and clipped to
[logsnr_min, logsnr_max] so both ends are finite) is the default. The model predicts x0
directly (VASA-1), so the training loss is an x0 regression; `vasa_jax.sampling` runs DDIM
with the same schedule objects (a bundle's own, from `schedule_from_config`).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
  """alpha = cos(a t + b), sigma = sin(a t + b), with a, b set by the log-SNR clip.

  logsnr(t) = -2 log tan(a t + b): logsnr(0) = logsnr_max, logsnr(1) = logsnr_min.
  """
  logsnr_min: float = -20.0
  logsnr_max: float = 20.0

  @property
  def _ab(self):
    b = math.atan(math.exp(-0.5 * self.logsnr_max))
    a = math.atan(math.exp(-0.5 * self.logsnr_min)) - b
    return a, b

  def _angles(self, t):
    """(a t + b, pi/2 - (a t + b)), the second computed directly so both ends stay precise."""
    a, b = self._ab
    c = math.atan(math.exp(0.5 * self.logsnr_min))     # = pi/2 - a - b
    t = jnp.asarray(t, jnp.float32)
    return a * t + b, a * (1.0 - t) + c

  def alpha_sigma(self, t):
    ang, comp = self._angles(t)
    return jnp.sin(comp), jnp.sin(ang)

  def logsnr(self, t):
    ang, comp = self._angles(t)
    return 2.0 * (jnp.log(jnp.sin(comp)) - jnp.log(jnp.sin(ang)))

  def t_from_logsnr(self, logsnr):
    a, b = self._ab
    return (jnp.arctan(jnp.exp(-0.5 * jnp.asarray(logsnr, jnp.float32))) - b) / a


def schedule_from_config(config) -> CosineSchedule:
  """The schedule named by a config's `diffusion` block (or the default without one)."""
  d = config.get("diffusion", None) if hasattr(config, "get") else None
  if d is None:
    return CosineSchedule()
  if d.get("schedule", "cosine") != "cosine":
    raise ValueError(f"unknown diffusion schedule {d.schedule!r}")
  return CosineSchedule(float(d.logsnr_min), float(d.logsnr_max))


def _bcast(v, x):
  """[B] -> [B, 1, ..., 1] to broadcast against x [B, ...]."""
  v = jnp.asarray(v, jnp.float32)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def q_sample(x0, t, noise, schedule=CosineSchedule()):
  """x_t = alpha(t) x0 + sigma(t) noise, t [B] (or a scalar)."""
  alpha, sigma = schedule.alpha_sigma(t)
  return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


def eps_from_x0(x_t, x0, t, schedule=CosineSchedule()):
  """The noise implied by an x0 prediction: eps = (x_t - alpha x0) / sigma."""
  alpha, sigma = schedule.alpha_sigma(t)
  return (x_t - _bcast(alpha, x_t) * x0) / jnp.maximum(_bcast(sigma, x_t), 1e-8)


def masked_mean(err, mask):
  """Mean of err [B, W, ...] over the valid frames of mask [B, W] (and all trailing axes)."""
  err = err.astype(jnp.float32)
  per_frame = err.reshape(err.shape[:2] + (-1,)).mean(-1)
  mask = jnp.asarray(mask, jnp.float32)
  return jnp.sum(per_frame * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def x0_loss(pred_x0, x0, mask):
  """Masked mean squared error of the x0 prediction over valid frames (mask [B, W])."""
  return masked_mean(jnp.square(pred_x0.astype(jnp.float32) - x0.astype(jnp.float32)), mask)

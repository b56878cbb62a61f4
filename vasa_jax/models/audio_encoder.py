"""The learned per-frame audio encoder of stage 2 (features from `vasa_jax.audio`)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from vasa_jax.models import layers


class AudioEncoder(nn.Module):
  """Learned per-frame audio encoder: features [B, T, F] -> [B, T, features].

  LayerNorm of the raw features (log-mel values are far from unit scale), a linear stem, then
  `num_layers` residual 1D convolutions over time (kernel `kernel`, SAME padding, so frame t
  sees frames t +- num_layers * (kernel // 2)) and an MLP head.
  """
  features: int
  hidden: int = 128
  num_layers: int = 2
  kernel: int = 3
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _layer_norm(x, jnp.float32, "in_norm")
    h = layers.Dense(self.hidden, dtype=self.dtype, name="stem")(x.astype(self.dtype))
    for i in range(self.num_layers):
      y = layers.act(_layer_norm(h, self.dtype, f"norm{i}"))
      y = layers.Conv(self.hidden, (self.kernel,), init_scale=0.5, dtype=self.dtype,
                      name=f"conv{i}")(y)
      h = h + y
    h = layers.act(_layer_norm(h, self.dtype, "norm_out"))
    h = layers.act(layers.Dense(self.hidden, dtype=self.dtype, name="mlp1")(h))
    return layers.Dense(self.features, dtype=self.dtype, name="mlp2")(h)


def _layer_norm(x, dtype, name):
  y = nn.LayerNorm(dtype=jnp.float32, param_dtype=jnp.float32,
                   scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                   name=name)(x.astype(jnp.float32))
  return y.astype(dtype)

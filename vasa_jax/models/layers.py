"""Building blocks shared by the stage-1 networks (2D and 3D alike).

Every parameter is annotated with logical axis names (`nn.with_logical_partitioning`) so the
trainer can shard it through the config's `logical_axis_rules` (e.g. conv output channels over
`fsdp`):

  conv kernels  [k..., Cin, Cout]  (None..., "conv_in", "conv_out")
  dense kernels [Din, Dout]         ("embed", "mlp")
  biases / norm scales              ("conv_out",) / ("mlp",) / ("norm",)
  small outputs (RGB, flow xyz, logits, pose) use "out_small" for the output axis, which the
  rules leave replicated (3 or 6 channels do not split over a mesh axis).

Parameters are float32; computation runs in the module's `dtype` (float32 or bfloat16).
GroupNorm statistics are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from flax import linen as nn

Dtype = Any

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def get_dtype(name) -> Dtype:
  """'float32' | 'bfloat16' (or a dtype) -> jnp dtype."""
  if isinstance(name, str):
    if name not in _DTYPES:
      raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]
  return name


def num_groups(channels: int, groups: int) -> int:
  """The largest group count <= `groups` that divides `channels`."""
  g = max(1, min(groups, channels))
  while channels % g:
    g -= 1
  return g


def _kernel_init(ndim: int, out_axis: str, zero: bool = False, scale: float = 1.0):
  names = (None,) * ndim + ("conv_in", out_axis)
  if zero:
    init = nn.initializers.zeros_init()
  else:
    init = nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")
  return nn.with_logical_partitioning(init, names)


def act(x):
  return nn.silu(x)


def lrelu(x):
  return nn.leaky_relu(x, 0.2)


class Conv(nn.Module):
  """N-d convolution (2D on [B,H,W,C], 3D on [B,D,H,W,C]) with logical axis names."""
  features: int
  kernel: Sequence[int] = (3, 3)
  strides: Sequence[int] | int = 1
  padding: Any = "SAME"
  use_bias: bool = True
  zero_init: bool = False
  init_scale: float = 1.0
  out_axis: str = "conv_out"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = tuple(self.kernel)
    return nn.Conv(
        self.features, kernel, strides=self.strides, padding=self.padding,
        use_bias=self.use_bias, dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=_kernel_init(len(kernel), self.out_axis, self.zero_init, self.init_scale),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.out_axis,)),
        name="conv")(x)


class Dense(nn.Module):
  features: int
  zero_init: bool = False
  out_axis: str = "mlp"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = (nn.initializers.zeros_init() if self.zero_init
            else nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"))
    return nn.Dense(
        self.features, dtype=self.dtype, param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(init, ("embed", self.out_axis)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.out_axis,)),
        name="dense")(x)


class GroupNorm(nn.Module):
  groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    g = num_groups(x.shape[-1], self.groups)
    y = nn.GroupNorm(
        num_groups=g, epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
        name="gn")(x.astype(jnp.float32))
    return y.astype(self.dtype)


class ResBlock(nn.Module):
  """Pre-activation residual block: GN-SiLU-conv-GN-SiLU-conv (+ 1x1 skip if widths differ).

  `ndim` = 2 or 3 selects 3x3 or 3x3x3 kernels. The second conv starts small (scale 0.1), so a
  fresh stack of blocks is close to the identity.
  """
  features: int
  ndim: int = 2
  groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = (3,) * self.ndim
    h = act(GroupNorm(self.groups, self.dtype, name="norm1")(x))
    h = Conv(self.features, k, dtype=self.dtype, name="conv1")(h)
    h = act(GroupNorm(self.groups, self.dtype, name="norm2")(h))
    h = Conv(self.features, k, init_scale=0.1, dtype=self.dtype, name="conv2")(h)
    if x.shape[-1] != self.features:
      x = Conv(self.features, (1,) * self.ndim, dtype=self.dtype, name="skip")(x)
    return (x + h).astype(self.dtype)


def upsample_nearest(x, factors: Sequence[int]):
  """Nearest-neighbour upsampling of the spatial axes of [B, *spatial, C] by integer factors."""
  for axis, f in enumerate(factors, start=1):
    if f != 1:
      x = jnp.repeat(x, f, axis=axis)
  return x


def per_stage(value, n: int, what: str) -> tuple[int, ...]:
  """An int (same for every stage) or a sequence of n ints -> tuple of n ints."""
  if isinstance(value, int):
    return (value,) * n
  value = tuple(int(v) for v in value)
  if len(value) != n:
    raise ValueError(f"{what} needs {n} entries (one per stage), got {len(value)}")
  return value

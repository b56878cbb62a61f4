"""The renderer interface: what every stage-1 kind provides to the engine.

    r = renderer_class(kind)(model_config, params, basis=..., bank=..., render_batch=8)
    r.prepare(portrait)                    # once per photo: its per-portrait state
    r.reset(portrait)                      # a new video of the same portrait
    for frames in r.render(portrait, motion):   # motion [T, 6 + dyn_dim], de-normalised
        ...                                # uint8 [n, H, W, 3]: the photo, or the crop only

Measuring motion from frames (reenactment, evaluation) is the same for every renderer: the face
mesh tracker and `vasa_jax.geometry.codes.encode`, since the motion space is the meshes'.
Frames are made in fixed-size batches of `render_batch` (the short one first, so a stream's
first frames come sooner) so the jitted networks compile once.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Iterator

import jax
import numpy as np
from flax import linen as nn

if TYPE_CHECKING:   # pragma: no cover
  from vasa_jax.portrait import Portrait

__all__ = ["Renderer", "pad_batch"]


def pad_batch(x: np.ndarray, n: int) -> np.ndarray:
  """x [m, ...] with its last row repeated up to n rows (m <= n)."""
  if x.shape[0] >= n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)])


class Renderer(abc.ABC):
  """Motion -> frames for the portraits of one bundle's stage 1."""
  kind = ""
  uses_part_bank = False     # renders with the bundle's real mouths and lids (banks.PartBank)

  def __init__(self, model_config, params, *, basis, bank=None, render_batch: int = 8):
    self.config = model_config
    self.params = params
    self.basis = basis
    self.bank = bank
    self.render_batch = int(render_batch)

  # -- what a bundle of this kind holds
  @classmethod
  @abc.abstractmethod
  def init_params(cls, model_config, rng):
    """Freshly initialised (untrained) parameters of the network (unboxed)."""

  @classmethod
  def reference_params(cls, model_config):
    """The parameter shapes the config implies (no allocation)."""
    return jax.eval_shape(lambda r: cls.init_params(model_config, r), jax.random.PRNGKey(0))

  @staticmethod
  def _unboxed(variables):
    return nn.meta.unbox(variables)["params"]

  # -- per portrait
  @property
  def size(self) -> int:
    """Side of the crop the portrait's mesh is measured on (at most the photo's crop)."""
    return int(self.config.get("field_size", 256))

  @property
  def part_res(self) -> dict:
    """Patch sides of the parts the renderer cuts from each frame (render.PortraitGeometry)."""
    return {}

  def prepare(self, portrait: "Portrait") -> None:
    """Computes the per-portrait state (once per photo)."""

  def reset(self, portrait: "Portrait") -> None:
    """Forgets what one video chose over time (a new video of the same portrait)."""

  # -- per frame
  @abc.abstractmethod
  def frames_for(self, portrait: "Portrait", motion: np.ndarray,
                 meshes: np.ndarray | None = None) -> np.ndarray:
    """uint8 [n, H, W, 3] for motion [n, 6 + dyn] (n <= render_batch); `meshes` [n, 478, 3]
    overrides the driving landmarks the motion decodes to (crop pixels at `size`)."""

  def render(self, portrait: "Portrait", motion: np.ndarray) -> Iterator[np.ndarray]:
    """Frame batches for motion [T, 6 + dyn]: the short batch (T mod render_batch) first,
    then full ones."""
    motion = np.asarray(motion, np.float32)
    bsz = self.render_batch
    lo = motion.shape[0] % bsz
    if lo:
      yield self.frames_for(portrait, motion[:lo])
    for hi in range(lo, motion.shape[0], bsz):
      yield self.frames_for(portrait, motion[hi:hi + bsz])

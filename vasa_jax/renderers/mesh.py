"""The mesh renderer (stage-1 kind "geometry", the default).

The photo is warped at its own resolution by the dense field that the portrait's and the
driving face meshes imply (vasa_jax.geometry.flow); the eyes come from the eye layer and the
closed-lid cross-fade (render.PartState.warp); the donor mouth reference chosen for each window
(smoothed over time) is put into the opening by the mouth compositor network
(vasa_jax.models.geo_decoder), so teeth, tongue and the inside of the mouth are real content.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.renderers.base import Renderer, pad_batch

__all__ = ["MeshRenderer", "RENDERER"]


class MeshRenderer(Renderer):
  kind = "geometry"
  uses_part_bank = True

  def __init__(self, model_config, params, **kw):
    from vasa_jax.models import geo_decoder as gd
    super().__init__(model_config, params, **kw)
    mc = model_config
    dec = gd.GeometryDecoder(mc)

    def decode(params, mouth):
      out = dec.apply({"params": params}, mouth)["mouth"]
      return {k: out[k] for k in ("alpha", "flow", "shade", "residual")}
    # a copy compositor (zero head) gives its fields without the U-Net (8 ms a frame on a CPU)
    self.copy_compositor = gd.is_copy(params)
    grow = int(mc.mouth.get("grow", 2))
    self._decode = (jax.jit(lambda params, mouth: gd.copy_fields(mouth, grow))
                    if self.copy_compositor else jax.jit(decode))

  @classmethod
  def init_params(cls, model_config, rng):
    from vasa_jax.models import geo_decoder as gd
    return cls._unboxed(gd.GeometryDecoder(model_config).init(
        rng, *gd.dummy_inputs(model_config, 1)))

  @classmethod
  def copy_params(cls, model_config):
    """The copy compositor: the network with its output head at zero, so the donor reference
    is pasted onto the driving opening whatever the seed (no learned flow, shade or residual;
    alpha = the reference's coverage)."""
    return cls.init_params(model_config, jax.random.PRNGKey(0))

  @property
  def part_res(self) -> dict:
    return {"mouth": int(self.config.mouth.res)}

  def prepare(self, portrait) -> None:
    from vasa_jax.geometry import render
    portrait.parts = render.PartState.build(portrait.geometry, self.bank, portrait.full_crop)

  def reset(self, portrait) -> None:
    portrait.parts.reset()       # a new video: its own choice of donor entries over time

  def decode_parts(self, mouth) -> dict:
    """The mouth compositor on inputs [n, r, r, IN_CHANNELS] -> numpy fields {"alpha",
    "flow", "shade", "residual"} (render.PartState.compose)."""
    return {k: np.asarray(v) for k, v in self._decode(self.params, jnp.asarray(mouth)).items()}

  def frames_for(self, portrait, motion, meshes=None):
    """Per frame: the dense warp of the photo with the eye layer and the closed-lid
    cross-fade, then the donor mouth reference composited by the mouth compositor."""
    pg, parts = portrait.geometry, portrait.parts
    frs = [pg.frame(m[:6], m[6:], mesh=None if meshes is None else meshes[k])
           for k, m in enumerate(motion)]
    idx = parts.select(frs)
    pick = [None if idx is None else int(idx[k]) for k in range(len(frs))]
    mouth = pad_batch(np.stack([parts.mouth_inputs(fr, pick[k]) for k, fr in enumerate(frs)]),
                      self.render_batch)
    out = self.decode_parts(mouth)
    crops = np.stack([parts.compose(fr, pick[k], {key: v[k] for key, v in out.items()})
                      for k, fr in enumerate(frs)])
    if portrait.image is None:
      return crops
    return _paste(portrait.image, crops, portrait.box)


def _paste(image: np.ndarray, crops: np.ndarray, box) -> np.ndarray:
  """Crops [n, side, side, 3] written into copies of image at box (x0, y0, side), clipped to
  the image (the geometric warp is exactly zero at the crop border: no feathering needed)."""
  import cv2
  x0, y0, side = box
  h, w = image.shape[:2]
  if crops.shape[1] != side:
    crops = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_CUBIC) for c in crops])
  xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
  out = np.repeat(image[None], crops.shape[0], axis=0)
  if xb > xa and yb > ya:
    out[:, ya:yb, xa:xb] = crops[:, ya - y0:yb - y0, xa - x0:xb - x0]
  return out


RENDERER = MeshRenderer

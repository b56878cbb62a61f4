"""The volume renderer (stage-1 kind "volume"): VASA-1's appearance volume and warping decoder
(vasa_jax.models.volume), driven by the face-mesh motion every renderer shares.

Per portrait: the aligned crop at the model's size is encoded to its appearance volume and
un-posed with the portrait's measured head pose (once). Per frame: the driving canonical mesh
is decoded from the portrait's codes and the frame's motion (codes.decode_canonical, as the
trainer builds its targets), the network renders the crop, and the crop is pasted back into
the photo through a feathered mask (the decoder makes the whole crop, the photo keeps what
lies outside it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.renderers.base import Renderer, pad_batch

__all__ = ["VolumeRenderer", "RENDERER", "feather_mask", "paste_back"]


def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
  """[side, side] float32 weights: 1 inside, a cosine ramp to 0 over `feather` of the side."""
  from vasa_jax.geometry.render import feather_window
  return feather_window(side, feather)


def paste_back(image: np.ndarray, crops: np.ndarray, box, mask: np.ndarray) -> np.ndarray:
  """Model-size crops [n,s,s,3], upscaled to the box, blended into copies of `image` at box
  (x0, y0, side) inside the feathered mask [side, side] (clipped to the image)."""
  import cv2
  x0, y0, side = box
  h, w = image.shape[:2]
  xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
  out = np.repeat(image[None], crops.shape[0], axis=0)
  if xb <= xa or yb <= ya:
    return out
  m = mask[ya - y0:yb - y0, xa - x0:xb - x0, None]
  base = image[ya:yb, xa:xb].astype(np.float32)
  for i, crop in enumerate(crops):
    interp = cv2.INTER_CUBIC if side > crop.shape[0] else cv2.INTER_AREA
    big = cv2.resize(crop, (side, side), interpolation=interp)
    patch = big[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    out[i, ya:yb, xa:xb] = np.clip(m * patch + (1.0 - m) * base + 0.5, 0, 255).astype(np.uint8)
  return out


class VolumeRenderer(Renderer):
  kind = "volume"

  def __init__(self, model_config, params, **kw):
    from vasa_jax.models import volume as vm
    super().__init__(model_config, params, **kw)
    model = vm.VolumeDecoder(model_config)
    self.image_size = int(model_config.image_size)
    self._scale = 2.0 * float(self.basis.s_ref)      # template units -> volume units

    def prepare(params, image, pose):
      v = model.apply({"params": params}, image, method=vm.VolumeDecoder.encode)
      return model.apply({"params": params}, v, pose, method=vm.VolumeDecoder.prepare)

    def render(params, canonical, pose, verts_s, verts_d):
      out = model.apply({"params": params}, canonical, pose, verts_s, verts_d,
                        method=vm.VolumeDecoder.render)
      return vm.float_to_images(out)
    self._prepare, self._render = jax.jit(prepare), jax.jit(render)

  @classmethod
  def init_params(cls, model_config, rng):
    from vasa_jax.models import volume as vm
    return cls._unboxed(vm.VolumeDecoder(model_config).init(
        rng, *vm.dummy_inputs(model_config, 1)))

  @property
  def size(self) -> int:
    # the mesh is measured at 256 at least (the face mesh model's own input is 192)
    return max(int(self.config.image_size), 256)

  def prepare(self, portrait) -> None:
    import cv2
    s = self.image_size
    crop = portrait.crop
    if crop.shape[0] != s:
      crop = cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA if crop.shape[0] > s
                        else cv2.INTER_CUBIC)
    pose = jnp.asarray(portrait.motion[None, :6], jnp.float32)
    canonical = self._prepare(self.params, jnp.asarray(crop[None]), pose)
    verts = self._scale * portrait.geometry.codes.canonical[:1]
    portrait.prepared = {"canonical": canonical, "verts_s": jnp.asarray(verts, jnp.float32)}

  def frames_for(self, portrait, motion, meshes=None):
    from vasa_jax.geometry import codes as codes_lib
    motion = np.asarray(motion, np.float32)
    n = motion.shape[0]
    if meshes is None:
      pose = motion[:, :6]
      canon = codes_lib.decode_canonical(portrait.geometry.codes, pose, motion[:, 6:],
                                         self.basis)
    else:               # measured driving landmarks: their own pose and canonical mesh
      c = codes_lib.encode(np.asarray(meshes, np.float32), self.basis, portrait.crop.shape[0])
      pose, canon = c.pose, c.canonical
    pose = pad_batch(np.asarray(pose, np.float32), self.render_batch)
    verts = pad_batch(np.asarray(self._scale * canon, np.float32), self.render_batch)
    st = portrait.prepared
    crops = np.asarray(self._render(self.params, st["canonical"], jnp.asarray(pose),
                                    st["verts_s"], jnp.asarray(verts)))[:n]
    side = portrait.box[2]
    if portrait.image is None:          # the crop only, at the crop's side in the photo
      if side == crops.shape[1]:
        return crops
      import cv2
      return np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_CUBIC)
                       for c in crops])
    return paste_back(portrait.image, crops, portrait.box, feather_mask(side))


RENDERER = VolumeRenderer

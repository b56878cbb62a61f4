"""How an Animator turns motion into output frames.

    comp = composites.make(None, engine)           # a vasa_jax.engine.Engine
    for frames in comp.render(portrait, motion):   # motion [T, 6 + dyn_dim], de-normalised
        ...                                         # uint8 [n, H, W, 3] (photo, or crop only)

  geometry  the photo warped at its own resolution by the dense field the portrait's and the
            driving face meshes imply, the eyes from the eye layer, the donor mouth blended in
            by the mouth compositor (teeth, tongue, the inside of the mouth, closed lids).

The learned-flow composites (render, detail, warp with the mouth rig) were retired with that
stage 1 (docs/DESIGN.md names the last commit that has them). `paste_back` and
`feather_mask` stay for a renderer that makes a crop at model size (the volume decoder).

It renders in fixed-size batches (the last one padded) so its jitted networks compile once.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Iterator

import numpy as np

from vasa_jax.errors import InputError

if TYPE_CHECKING:   # pragma: no cover
  from vasa_jax.engine import Engine
  from vasa_jax.portrait import Portrait

__all__ = ["Composite", "GeometryComposite", "make", "default_for", "COMPOSITES", "feather_mask",
           "paste_back"]

COMPOSITES = ("geometry",)


# ----------------------------------------------------------------------------- paste-back

def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
  """[side, side] float32 weights: 1 inside, a cosine ramp to 0 over `feather` of the side."""
  from vasa_jax.geometry.render import feather_window
  return feather_window(side, feather)


def paste_back(image: np.ndarray, crops: np.ndarray, box, mask: np.ndarray, *,
               reference: np.ndarray | None = None) -> np.ndarray:
  """Blend model-size crops [n,s,s,3] into copies of `image` at box (x0, y0, side).

  reference=None ("render" compositing): the upscaled render replaces the photo inside the
  feathered mask. reference = the render of the portrait's own motion [s,s,3] ("detail"
  compositing): the photo keeps its pixels and only the change (render - reference), upscaled,
  is added, so detail the model cannot reproduce survives where nothing moves.
  """
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
    if reference is None:
      interp = cv2.INTER_CUBIC if side > crop.shape[0] else cv2.INTER_AREA
      big = cv2.resize(crop, (side, side), interpolation=interp)
      patch = big[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float32)
    else:
      delta = crop.astype(np.float32) - reference.astype(np.float32)
      big = cv2.resize(delta, (side, side), interpolation=cv2.INTER_LINEAR)
      patch = base + big[ya - y0:yb - y0, xa - x0:xb - x0]
    out[i, ya:yb, xa:xb] = np.clip(m * patch + (1.0 - m) * base + 0.5, 0, 255).astype(np.uint8)
  return out



class Composite(abc.ABC):
  """Motion -> frames for one portrait. Subclasses set `name` and implement `render`."""
  name = ""

  def __init__(self, engine: "Engine"):
    self.engine = engine

  @abc.abstractmethod
  def render(self, portrait: "Portrait", motion: np.ndarray) -> Iterator[np.ndarray]:
    """Yields uint8 frame batches [n, H, W, 3] for motion [T, 6 + dyn]."""

  def _batches(self, motion: np.ndarray):
    bsz = self.engine.render_batch
    for lo in range(0, motion.shape[0], bsz):
      yield motion[lo:lo + bsz]


def _pad(x: np.ndarray, n: int) -> np.ndarray:
  if x.shape[0] >= n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)])


# ----------------------------------------------------------------------------- geometry

class GeometryComposite(Composite):
  name = "geometry"

  def frames_for(self, portrait: "Portrait", motion: np.ndarray, meshes=None) -> np.ndarray:
    """uint8 [n, H, W, 3] for motion [n, D] (n <= render_batch); `meshes` [n, 478, 3]
    overrides the driving landmarks decoded from the motion (crop pixels at render size).

    Per frame: the dense warp of the photo at its own resolution with the eye layer and the
    closed-lid cross-fade (render.PartState.warp), then the donor mouth reference chosen for
    this window (smoothed over time) composited by the mouth compositor."""
    eng, pg, parts = self.engine, portrait.geometry, portrait.parts
    frs = [pg.frame(m[:6], m[6:], mesh=None if meshes is None else meshes[k])
           for k, m in enumerate(motion)]
    idx = parts.select(frs)
    pick = [None if idx is None else int(idx[k]) for k in range(len(frs))]
    mouth = _pad(np.stack([parts.mouth_inputs(fr, pick[k]) for k, fr in enumerate(frs)]),
                 eng.render_batch)
    out = eng.decode_parts(mouth)
    crops = np.stack([parts.compose(fr, pick[k], {key: v[k] for key, v in out.items()})
                      for k, fr in enumerate(frs)])
    if portrait.image is None:
      return crops
    return _paste(portrait.image, crops, portrait.box)

  def render(self, portrait, motion):
    # the short batch (T mod render_batch) goes first: the same number of batches as putting
    # it last, and the stream's first frames come sooner
    bsz = self.engine.render_batch
    lo = motion.shape[0] % bsz
    if lo:
      yield self.frames_for(portrait, motion[:lo])
    for hi in range(lo, motion.shape[0], bsz):
      yield self.frames_for(portrait, motion[hi:hi + bsz])


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


_CLASSES = {c.name: c for c in (GeometryComposite,)}


def default_for(engine: "Engine") -> str:
  """A bundle's default composite (the only one: "geometry")."""
  return "geometry"


def make(name: str | None, engine: "Engine") -> Composite:
  """The composite `name` (None: the bundle's default) for an engine; InputError with one
  line where the name is unknown."""
  name = default_for(engine) if name is None else name
  if name not in _CLASSES:
    raise InputError(f"composite must be one of {COMPOSITES}, got {name!r}")
  return _CLASSES[name](engine)

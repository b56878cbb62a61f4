"""How an Animator turns motion into output frames: one small interface, one class per way.

    comp = composites.make(name, engine)           # a vasa_jax.engine.Engine
    for frames in comp.render(portrait, motion):   # motion [T, 6 + dyn_dim], de-normalised
        ...                                         # uint8 [n, H, W, 3] (photo, or crop only)

  geometry  (geometry-grounded bundles, their only composite) the photo warped at its own
            resolution by the dense field the portrait's and the driving face meshes imply,
            with the learned decoder's mouth and eye patches blended in (teeth, tongue, the
            inside of the mouth, closed lids).
  render    (learned-flow bundles) the stage-1 render replaces the face region.
  detail    (learned-flow bundles) the photo keeps its pixels; the rendered change from the
            portrait's own motion is added.
  warp      (old bundles with a mouth rig) the photo's face plane follows the head pose by a
            homography and the parametric mouth rig opens the lips: a 2.5D puppet, kept so
            that old bundles still animate.

Each composite renders in fixed-size batches (the last one padded) so its jitted networks
compile once.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Iterator

import numpy as np

from vasa_jax import mouth_rig
from vasa_jax.errors import InputError

if TYPE_CHECKING:   # pragma: no cover
  from vasa_jax.engine import Engine
  from vasa_jax.portrait import Portrait

__all__ = ["Composite", "GeometryComposite", "RenderComposite", "DetailComposite",
           "RigComposite", "make", "default_for", "COMPOSITES", "LEARNED", "GEOMETRY",
           "feather_mask", "paste_back", "warp_frames", "articulate"]

LEARNED = ("render", "detail", "warp")
GEOMETRY = ("geometry",)


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


# ----------------------------------------------------------------------------- learned flow

class RenderComposite(Composite):
  """The stage-1 render replaces the face region (feathered paste-back)."""
  name = "render"
  reference = False

  def _render(self, portrait, part):
    n = part.shape[0]
    return self.engine.render(portrait.prepared, _pad(part, self.engine.render_batch))[:n]

  def render(self, portrait, motion):
    mask = None if portrait.image is None else feather_mask(portrait.box[2])
    reference = self._render(portrait, portrait.motion[None])[0] if self.reference else None
    for part in self._batches(motion):
      crops = self._render(portrait, part)
      if portrait.image is not None:
        out = paste_back(portrait.image, crops, portrait.box, mask, reference=reference)
      elif reference is not None:
        delta = crops.astype(np.float32) - reference.astype(np.float32)
        out = np.clip(portrait.crop.astype(np.float32) + delta + 0.5, 0, 255).astype(np.uint8)
      else:
        out = crops
      yield articulate(self.engine, portrait, out, part)


class DetailComposite(RenderComposite):
  """The photo keeps its pixels; the render's change from the portrait's own motion is added."""
  name = "detail"
  reference = True


class RigComposite(Composite):
  """The photo's face plane follows the head pose (homography); the mouth rig opens the lips."""
  name = "warp"

  def render(self, portrait, motion):
    mask = None if portrait.image is None else feather_mask(portrait.box[2])
    for part in self._batches(motion):
      yield articulate(self.engine, portrait, warp_frames(self.engine, portrait, part[:, :6],
                                                          mask), part)


def _camera(engine: "Engine") -> dict:
  m = engine.fl_config.model
  return dict(ref_distance=float(m.ref_distance), fov_deg=float(m.fov_deg))


def warp_frames(engine: "Engine", portrait: "Portrait", poses: np.ndarray, mask) -> np.ndarray:
  """The "warp" composite: the photo (or crop) with its face region moved by the rigid pose
  change from the portrait's pose to each of poses [n, 6]."""
  import cv2
  size = engine.size
  hs = mouth_rig.face_homographies(portrait.motion[:6], poses, size, engine.rig,
                                   **_camera(engine))
  if portrait.image is None:
    return np.stack([cv2.warpPerspective(portrait.crop, h, (size, size), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE) for h in hs])
  img = portrait.image
  ih, iw = img.shape[:2]
  x0, y0, side = portrait.box
  k = side / float(size)
  # crop pixel centres -> photo pixel centres: p = k (c + 0.5) - 0.5 + (x0, y0)
  a = np.array([[k, 0, x0 + 0.5 * k - 0.5], [0, k, y0 + 0.5 * k - 0.5], [0, 0, 1]])
  a_inv = np.linalg.inv(a)
  xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, iw), min(y0 + side, ih)
  out = np.repeat(img[None], len(hs), axis=0)
  if xb <= xa or yb <= ya:
    return out
  # The displacement fades out with the feathered mask (rather than blending the warped
  # and the still photo, which doubles edges): one remap per frame, no seams.
  m = mask[ya - y0:yb - y0, xa - x0:xb - x0].astype(np.float64)
  gx, gy = np.meshgrid(np.arange(xa, xb, dtype=np.float64), np.arange(ya, yb, dtype=np.float64))
  for i, h in enumerate(hs):
    inv = np.linalg.inv(a @ h @ a_inv)     # output photo pixel -> source photo pixel
    den = inv[2, 0] * gx + inv[2, 1] * gy + inv[2, 2]
    sx = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]) / den
    sy = (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]) / den
    mx = (gx + m * (sx - gx)).astype(np.float32)
    my = (gy + m * (sy - gy)).astype(np.float32)
    out[i, ya:yb, xa:xb] = cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
  return out


def articulate(engine: "Engine", portrait: "Portrait", frames: np.ndarray,
               motion: np.ndarray) -> np.ndarray:
  """The bundle's mouth rig (if any) on output frames [n,H,W,3] for their motion [n,D]."""
  if engine.rig is None or portrait.mouth is None:
    return frames
  cx, cy, hw, roll = mouth_rig.track(portrait.mouth, portrait.motion[:6], motion[:, :6],
                                     engine.size, engine.rig, **_camera(engine))
  x0, y0, side = portrait.box
  k = side / float(engine.size)   # crop pixels -> output pixels (1 for crop-only output)
  return np.stack([mouth_rig.articulate(f, x0 + k * (x + 0.5) - 0.5, y0 + k * (y + 0.5) - 0.5,
                                        k * h, r, m[mouth_rig.NAMED_SLICE], engine.rig)
                   for f, x, y, h, r, m in zip(frames, cx, cy, hw, roll, motion)])


_CLASSES = {c.name: c for c in (GeometryComposite, RenderComposite, DetailComposite, RigComposite)}


COMPOSITES = ("render", "detail", "warp", "geometry")


def default_for(engine: "Engine") -> str:
  """A bundle's default composite: "geometry" for a geometry-grounded stage 1; else "warp"
  with a mouth rig, "detail" without."""
  if engine.kind == "geometry":
    return "geometry"
  return "warp" if engine.rig is not None else "detail"


def make(name: str | None, engine: "Engine") -> Composite:
  """The composite `name` (None: the bundle's default) for an engine; ValueError with one
  line where the name is unknown or does not fit the bundle."""
  name = default_for(engine) if name is None else name
  if name not in _CLASSES:
    raise InputError(f"composite must be one of {COMPOSITES}, got {name!r}")
  allowed = GEOMETRY if engine.kind == "geometry" else LEARNED
  if name not in allowed:
    raise InputError(f"composite {name!r} is not available for this bundle (a {engine.kind} "
                     f"stage 1); use one of {', '.join(allowed)}")
  if name == "warp" and engine.rig is None:
    raise InputError("composite 'warp' needs a bundle with a mouth rig (it renders no mouth "
                     "motion otherwise)")
  return _CLASSES[name](engine)

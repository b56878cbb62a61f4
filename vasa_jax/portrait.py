"""Portrait encoding, the first inference step: a photo -> `Portrait` (crop, codes, and the
renderer's per-portrait state), for an `vasa_jax.engine.Engine`.

    faces = portrait.FaceTools()                     # BlazeFace + the face mesh, made lazily
    p = portrait.encode(engine, "photo.jpg", faces)  # detect, crop, encode (once per photo)

The face is cropped the way the training data was (square, CROP_SCALE x the BlazeFace box,
centred slightly above it; edge-padded where it leaves the photo), and the face mesh is
measured on it (refusing a non-human face): its codes, warp topology and parts.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from vasa_jax.engine import AnimateError, Engine, load_image

log = logging.getLogger(__name__)

CROP_SCALE = 1.8          # = talking_face_videos crop: side / BlazeFace box side
CROP_SHIFT_UP = 0.1       # crop centre above the box centre, in face sides


@dataclasses.dataclass
class Portrait:
  """A photo prepared for animation (reusable across audios)."""
  image: np.ndarray          # the photo (uint8 RGB, possibly downscaled for output)
  crop: np.ndarray           # the model-size face crop
  box: tuple                 # (x0, y0, side) of the crop in `image` pixels
  motion: np.ndarray         # the portrait's own motion [6 + dyn_dim]
  geometry: Any              # geometry.render.PortraitGeometry: its mesh, codes, warp topology
  faces_found: int = 1       # faces the detector saw in the photo (the largest is animated)
  full_crop: Any = None      # the crop at the photo's resolution when it is larger than the
                             # render size (the mesh renderer warps it at full resolution)
  parts: Any = None          # the mesh renderer's render.PartState: eyes, donor mouth, lids
  prepared: Any = None       # the volume renderer's state: canonical volume, portrait mesh
  turned: int = 0            # degrees the photo was turned (counter-clockwise) to stand upright


class FaceTools:
  """The face detector and the face mesh + iris models, each made on first use."""

  def __init__(self, detector=None):
    self._detector, self._mesh = detector, None

  @property
  def detector(self):
    if self._detector is None:
      from vasa_jax.faces import get_detector
      self._detector = get_detector()
    return self._detector

  @property
  def mesh(self):
    if self._mesh is None:
      from vasa_jax.geometry import landmarks
      self._mesh = landmarks.FaceMesh(detector=self._detector)
    return self._mesh


def crop_box(face_box, width: int, height: int, *, scale: float = CROP_SCALE,
             shift_up: float = CROP_SHIFT_UP) -> tuple[int, int, int]:
  """(x0, y0, side) of the training-style square crop around a BlazeFace box."""
  from vasa_jax.data.video import crop_box_at
  x0, y0, x1, y1 = [float(v) for v in face_box]
  side = max(x1 - x0, y1 - y0)
  c = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
  return crop_box_at(c, side, scale, shift_up, width, height)


def _resized(img: np.ndarray, scale: float, even: bool = False) -> np.ndarray:
  import cv2
  if scale >= 1.0:
    return img
  h, w = img.shape[:2]
  size = ((int(round(w * scale)) // 2 * 2, int(round(h * scale)) // 2 * 2) if even
          else (int(round(w * scale)), int(round(h * scale))))
  return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def encode(engine: Engine, image, faces: FaceTools, *, crop_only: bool = False,
           max_output_side: int = 1280) -> Portrait:
  """Detect, crop and encode a portrait (path, array or PIL image). The output frame is the
  photo downscaled so that its longer side is at most max_output_side (crop_only: the crop)."""
  rgb = load_image(image)
  h, w = rgb.shape[:2]
  if min(h, w) < 16:
    raise AnimateError(f"the image is too small ({w}x{h})")
  out_img = _resized(rgb, min(1.0, max_output_side / max(h, w)), even=True)
  return _geometry(engine, out_img, faces, crop_only=crop_only)


def _geometry(engine: Engine, img: np.ndarray, faces: FaceTools, *, crop_only: bool = False,
              points: np.ndarray | None = None) -> Portrait:
  """Geometry-grounded portrait: face mesh (refusing non-faces), the training-style crop
  around its BlazeFace box, the crop measured again at render size, its codes and warp
  topology. points: the face's landmarks in `img` when already known (an aligned crop)."""
  from vasa_jax.data.video import crop_square
  from vasa_jax.geometry import landmarks, render
  ih, iw = img.shape[:2]
  turned = 0
  if points is None:
    img, face, turned = upright(img, faces)
    ih, iw = img.shape[:2]
    box = crop_box(face.box, iw, ih)
    roi, found = face.roi, face.faces
  else:
    box, roi, found = (0, 0, iw), landmarks.roi_from_points(points), 1
  x0, y0, side = box
  r = min(side, engine.size)
  crop = crop_square(img, box, r)
  k = r / side
  cx, cy, rs, ang = roi
  try:
    g = faces.mesh.refit(crop, ((cx - x0) * k, (cy - y0) * k, rs * k, ang))
  except landmarks.NoFaceError as e:
    raise AnimateError(str(e)) from None
  ok, why = landmarks.plausibility(g.points)
  if not ok:
    raise AnimateError(f"no human face found in the image ({why})")
  pg = render.PortraitGeometry.from_crop(crop, g.points, engine.basis,
                                         engine.renderer.part_res)
  full = crop_square(img, box, side) if side > r else None
  return _prepared(engine, Portrait(image=None if crop_only else img, crop=crop, box=box,
                                    motion=pg.motion, geometry=pg, full_crop=full,
                                    faces_found=found, turned=turned))


def _roll_deg(points: np.ndarray) -> float:
  """In-plane angle of a face (degrees; 0 upright): of the line from the subject's right outer
  eye corner (image left on an upright face) to the left one."""
  d = points[263, :2] - points[33, :2]
  return float(np.degrees(np.arctan2(d[1], d[0])))


def upright(img: np.ndarray, faces: FaceTools):
  """(image, face, degrees turned): the photo turned by a multiple of 90 degrees so that its
  face stands upright (a phone photo saved on its side), its face found there. The photo as
  it is when its face is clearly upright; otherwise the quarter turn whose upright face (within
  45 degrees) the face mesh is surest of. AnimateError when no turn shows a face."""
  from vasa_jax.geometry import landmarks
  first = best = None
  try:
    face = faces.mesh.detect(img, human=True)
    roll = abs(_roll_deg(face.points))
    if roll <= 20.0 and face.score >= 0.9:       # clearly upright: the common case, one look
      return img, face, 0
    if roll <= 45.0:
      best = (img, face, 0)
  except landmarks.NoFaceError as e:
    first = e
  for k in (1, 2, 3):                     # np.rot90: k x 90 degrees counter-clockwise
    turned = np.ascontiguousarray(np.rot90(img, k))
    try:
      face = faces.mesh.detect(turned, human=True)
    except landmarks.NoFaceError:
      continue
    if abs(_roll_deg(face.points)) <= 45.0 and (best is None or face.score > best[1].score):
      best = (turned, face, 90 * k)
  if best is not None and best[2]:
    log.info("the face is on its side: the photo is turned %d degrees to stand it upright",
             best[2])
  if best is not None:
    return best
  if first is not None:
    raise AnimateError(str(first)) from None
  raise AnimateError("the face in the image is upside down or on its side, and no quarter "
                     "turn stands it upright")


def _prepared(engine: Engine, p: Portrait) -> Portrait:
  engine.renderer.prepare(p)
  return p


def from_landmarks(engine: Engine, crop: np.ndarray, points: np.ndarray) -> Portrait:
  """A crop-only Portrait of a geometry bundle from an aligned crop and its already measured
  landmarks (crop pixels), e.g. the first frame of a dataset clip (evaluation)."""
  from vasa_jax.geometry import render
  crop = np.ascontiguousarray(np.asarray(crop, np.uint8)[..., :3])
  pg = render.PortraitGeometry.from_crop(crop, np.asarray(points, np.float32), engine.basis,
                                         engine.renderer.part_res)
  return _prepared(engine, Portrait(image=None, crop=crop, box=(0, 0, crop.shape[0]),
                                    motion=pg.motion, geometry=pg))


def from_crop(engine: Engine, crop, faces: FaceTools) -> Portrait:
  """A Portrait from an already aligned face crop (as the datasets store them: the mesh is
  measured on the whole crop, no detection). The output is the crop (no paste-back)."""
  from vasa_jax.geometry import landmarks
  crop = load_image(crop)
  if crop.shape[0] != crop.shape[1]:
    raise AnimateError(f"an aligned crop must be square, got {crop.shape[1]}x{crop.shape[0]}")
  try:
    g = faces.mesh.detect(crop)
  except landmarks.NoFaceError as e:
    raise AnimateError(str(e)) from None
  return _geometry(engine, crop, faces, crop_only=True, points=g.points)

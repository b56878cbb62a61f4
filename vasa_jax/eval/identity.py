"""Identity similarity with dlib's face-recognition network (an instrument the project does not
train): 128-d embeddings of faces, Euclidean distance; dlib's own threshold for "same person" is
0.6, and real footage of one person sits around 0.3-0.45.

    emb = FaceEmbedder()
    d = emb.distance(image_a, points_a, image_b, points_b)   # points: our 478 landmarks

Faces are located by our landmarks (a box around the mesh), aligned by dlib's 5-point model and
embedded by its ResNet. The model files come with the face-recognition-models wheel.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["FaceEmbedder", "SAME_PERSON"]

SAME_PERSON = 0.6


class FaceEmbedder:
  def __init__(self):
    import dlib

    from vasa_jax.geometry.landmarks import dlib_model_dir
    d = dlib_model_dir()
    self._dlib = dlib
    self._shape = dlib.shape_predictor(os.path.join(d, "shape_predictor_5_face_landmarks.dat"))
    self._net = dlib.face_recognition_model_v1(
        os.path.join(d, "dlib_face_recognition_resnet_model_v1.dat"))
    self._lock = threading.Lock()

  def embed(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """128-d embedding of the face whose landmarks (pixels of rgb) are `points`."""
    p = np.asarray(points)[:468, :2]
    lo, hi = p.min(0), p.max(0)
    rect = self._dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
    img = np.ascontiguousarray(rgb[..., :3])
    with self._lock:
      shape = self._shape(img, rect)
      return np.asarray(self._net.compute_face_descriptor(img, shape), np.float32)

  def distance(self, a: np.ndarray, pa: np.ndarray, b: np.ndarray, pb: np.ndarray) -> float:
    return float(np.linalg.norm(self.embed(a, pa) - self.embed(b, pb)))

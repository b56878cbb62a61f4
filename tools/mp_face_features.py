"""Per-frame mouth / eye measurements with MediaPipe Face Mesh (run in the mediapipe venv).

  /work/tools/mp-venv/bin/python tools/mp_face_features.py IN_DIR OUT_DIR

IN_DIR holds uint8 frame stacks NAME.npy [T, S, S, 3] (RGB, one clip each); OUT_DIR receives
NAME.npy float32 [T, 5]: inner-lip gap, mouth width (corner to corner), mean eye opening
(lid gap / eye width), face height (forehead to chin, for scale) -- the first two divided by
the face height -- and a detected flag (0: no face, the other columns NaN). mediapipe pins
protobuf<5, so it runs outside the project's venv.
"""

import glob
import os
import sys

import numpy as np

# Face Mesh landmark indices: inner lips, mouth corners, eyelids and eye corners, face top/chin.
UPPER_LIP, LOWER_LIP, CORNER_R, CORNER_L = 13, 14, 61, 291
EYES = ((159, 145, 33, 133), (386, 374, 362, 263))     # upper lid, lower lid, corner, corner
TOP, CHIN = 10, 152


def features(mesh, frames: np.ndarray) -> np.ndarray:
  out = np.full((len(frames), 5), np.nan, np.float32)
  out[:, 4] = 0.0
  for i, img in enumerate(frames):
    r = mesh.process(np.ascontiguousarray(img))
    if not r.multi_face_landmarks:
      continue
    p = np.array([(l.x, l.y) for l in r.multi_face_landmarks[0].landmark], np.float32)
    d = lambda a, b: float(np.linalg.norm(p[a] - p[b]))   # noqa: E731
    fh = max(d(TOP, CHIN), 1e-6)
    eye = np.mean([d(u, l) / max(d(c0, c1), 1e-6) for u, l, c0, c1 in EYES])
    out[i] = (d(UPPER_LIP, LOWER_LIP) / fh, d(CORNER_R, CORNER_L) / fh, eye, fh, 1.0)
  return out


def main(argv=None):
  in_dir, out_dir = (argv or sys.argv[1:])[:2]
  import mediapipe as mp
  os.makedirs(out_dir, exist_ok=True)
  for path in sorted(glob.glob(os.path.join(in_dir, "*.npy"))):
    frames = np.load(path)
    # Tracking mode within a clip (faster, steadier); a fresh tracker per clip.
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                         refine_landmarks=False,
                                         min_detection_confidence=0.5) as mesh:
      feats = features(mesh, frames)
    np.save(os.path.join(out_dir, os.path.basename(path)), feats)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Face-landmark detectability check for rendered frames (run with a mediapipe venv).

  /work/tools/mp-venv/bin/python tools/face_check.py FOLDER_OR_MP4 [--detector mesh|detection|both]

Prints JSON {"frames", "detected", "rate", ...}. mediapipe pins protobuf<5, so it lives in its
own virtualenv outside the project's (see the module docstring of vasa_jax/synth/render.py).
"""

import argparse
import glob
import json
import os
import sys

import numpy as np


def _frames(path):
  if os.path.isdir(path):
    import cv2
    files = sorted(glob.glob(os.path.join(path, "*.png")) + glob.glob(os.path.join(path, "*.jpg")))
    for f in files:
      img = cv2.imread(f, cv2.IMREAD_COLOR)
      if img is not None:
        yield os.path.basename(f), cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
  else:
    import cv2
    cap = cv2.VideoCapture(path)
    i = 0
    while True:
      ok, img = cap.read()
      if not ok:
        break
      yield f"{i:06d}", cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
      i += 1


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("path")
  ap.add_argument("--detector", default="mesh", choices=("mesh", "detection", "both"))
  ap.add_argument("--upscale", type=int, default=0, help="resize frames to this size first (0: as is)")
  ap.add_argument("--list-missed", action="store_true")
  ap.add_argument("--mouth-out", default=None,
                  help="write per-frame mouth opening (inner-lip gap / face height, NaN where no "
                       "face) to this .npy (face mesh only)")
  args = ap.parse_args(argv)
  import cv2
  import mediapipe as mp
  mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         min_detection_confidence=0.5) if args.detector != "detection" else None
  det = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) \
      if args.detector != "mesh" else None
  n = hit_mesh = hit_det = 0
  missed = []
  mouth = []
  for name, img in _frames(args.path):
    if args.upscale:
      img = cv2.resize(img, (args.upscale, args.upscale), interpolation=cv2.INTER_CUBIC)
    n += 1
    ok = True
    if mesh is not None:
      r = mesh.process(img)
      m = bool(r.multi_face_landmarks)
      if m:
        lm = r.multi_face_landmarks[0].landmark
        # 13/14: inner upper/lower lip; 10/152: forehead top/chin (face height)
        gap = abs(lm[14].y - lm[13].y)
        height = abs(lm[152].y - lm[10].y)
        mouth.append(gap / max(height, 1e-6))
      else:
        mouth.append(float("nan"))
      hit_mesh += m
      ok &= m
    if det is not None:
      r = det.process(img)
      d = bool(r.detections)
      hit_det += d
      ok &= d
    if not ok:
      missed.append(name)
  main_hits = hit_mesh if mesh is not None else hit_det
  out = {"frames": n, "detected": int(main_hits), "rate": round(main_hits / max(n, 1), 4),
         "detector": args.detector}
  if args.detector == "both":
    out["detected_face_detection"] = int(hit_det)
    out["rate_face_detection"] = round(hit_det / max(n, 1), 4)
  if args.list_missed:
    out["missed"] = missed
  if args.mouth_out:
    np.save(args.mouth_out, np.asarray(mouth, np.float32))
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Mouth (open, wide, round) and blink pseudo-labels for clips without ground truth.

  .venv/bin/python tools/label_mouth.py --data-dir DATA --out LABELS.npz \
      [--datasets talking_face_videos/r256] [--calibrate synthetic_talking_heads/r256_n1000] \
      [--mp-python /work/tools/mp-venv/bin/python]

MediaPipe Face Mesh (tools/mp_face_features.py, in its own venv) measures the inner-lip gap,
mouth width and eye opening in every frame. A linear map from those measurements to the
synthetic corpus's ground-truth factors (mouth open / wide / round in [0, 1], blink 0 open ..
1 closed) is fitted on `--calibrate` clips (held-out clips report the fit's correlation), then
applied to every clip of `--datasets`. Frames without a face are interpolated from their
neighbours. Output: an .npz with one float32 [T, 4] array per "dataset:clip_id" and a
"__calibration__" JSON string; `vasa-jax data extract-motion --dyn-labels LABELS.npz` writes
them into z_dyn[0:4] of the motion latents (the named dims, see losses.dyn_label_loss).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.abspath(__file__))


def _frames(rec) -> np.ndarray:
  from vasa_jax.data import records
  return np.stack([records.decode_jpeg(f) for f in rec["frames"]])


def _measure(clips: dict, mp_python: str) -> dict:
  """{key: uint8 frames} -> {key: float32 [T, 5]} via the mediapipe venv."""
  with tempfile.TemporaryDirectory() as tmp:
    names = {}
    for i, (key, frames) in enumerate(clips.items()):
      names[f"c{i:05d}"] = key
      np.save(os.path.join(tmp, f"c{i:05d}.npy"), frames)
    out = os.path.join(tmp, "out")
    r = subprocess.run([mp_python, os.path.join(HERE, "mp_face_features.py"), tmp, out],
                       capture_output=True, text=True)
    if r.returncode:
      raise SystemExit(f"mp_face_features failed: {r.stderr.strip().splitlines()[-1:]}")
    return {key: np.load(os.path.join(out, n + ".npy")) for n, key in names.items()}


def design(f: np.ndarray) -> np.ndarray:
  """[T, 5] measurements -> [T, 5] regressors (NaN rows stay NaN)."""
  gap, width, eye = f[:, 0], f[:, 1], f[:, 2]
  return np.stack([np.ones_like(gap), gap, width, gap / np.maximum(width, 1e-6), eye], -1)


def fill(x: np.ndarray) -> np.ndarray:
  """Linear interpolation over NaN rows (all-NaN columns become 0)."""
  x = x.copy()
  t = np.arange(len(x))
  for k in range(x.shape[1]):
    ok = np.isfinite(x[:, k])
    x[:, k] = np.interp(t, t[ok], x[ok, k]) if ok.any() else 0.0
  return x


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data-dir", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--datasets", default="talking_face_videos/r256")
  ap.add_argument("--calibrate", default="synthetic_talking_heads/r256_n1000")
  ap.add_argument("--calibration-clips", type=int, default=120)
  ap.add_argument("--mp-python", default="/work/tools/mp-venv/bin/python")
  args = ap.parse_args(argv)
  import tensorflow_datasets as tfds

  # 1. calibration on synthetic clips (every other clip fits, the rest validate)
  src = tfds.data_source(args.calibrate, split="train", data_dir=args.data_dir)
  idx = np.linspace(0, len(src) - 1, args.calibration_clips).astype(int)
  recs = [src[int(i)] for i in idx]
  feats = _measure({str(i): _frames(r)[::2] for i, r in zip(idx, recs)}, args.mp_python)
  xs, ys = [], []
  for i, r in zip(idx, recs):
    f = feats[str(i)]
    y = np.c_[np.asarray(r["mouth"]), np.asarray(r["blink"]).reshape(-1, 1)][::2]
    ok = f[:, 4] > 0
    xs.append(design(f)[ok])
    ys.append(y[ok])
  fit = np.arange(len(xs)) % 2 == 0
  xf, yf = np.concatenate([x for x, k in zip(xs, fit) if k]), np.concatenate(
      [y for y, k in zip(ys, fit) if k])
  xv, yv = np.concatenate([x for x, k in zip(xs, fit) if not k]), np.concatenate(
      [y for y, k in zip(ys, fit) if not k])
  w = np.linalg.solve(xf.T @ xf + 1e-4 * np.eye(xf.shape[1]), xf.T @ yf)
  pv = xv @ w
  names = ("open", "wide", "round", "blink")
  calib = {"weights": w.tolist(), "frames_fit": int(len(xf)), "frames_validate": int(len(xv)),
           "validation_r": {n: round(float(np.corrcoef(pv[:, k], yv[:, k])[0, 1]), 3)
                            for k, n in enumerate(names)},
           "detected_rate": round(float(np.mean([f[:, 4].mean() for f in feats.values()])), 4)}
  print(json.dumps({"calibration": calib}), flush=True)

  # 2. labels for every clip of the target datasets
  out = {}
  for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
    from vasa_jax.data import register_builders
    register_builders()
    builder = tfds.builder(name, data_dir=args.data_dir)
    for split in builder.info.splits:
      src = builder.as_data_source(split=split)
      clips = {}
      for i in range(len(src)):
        r = src[i]
        cid = r["clip_id"].decode() if isinstance(r["clip_id"], bytes) else str(r["clip_id"])
        clips[f"{name}:{cid}"] = _frames(r)
      for key, f in _measure(clips, args.mp_python).items():
        x = design(f)
        x[f[:, 4] == 0] = np.nan
        out[key] = np.clip(fill(x @ w), 0.0, 1.0).astype(np.float32)
        calib.setdefault("clips", {})[key] = round(float(f[:, 4].mean()), 3)
      print(json.dumps({"dataset": name, "split": split, "clips": len(clips)}), flush=True)
  tmp = args.out + ".tmp.npz"
  np.savez_compressed(tmp, __calibration__=np.array(json.dumps(calib)), **out)
  os.replace(tmp, args.out)
  print(json.dumps({"out": args.out, "clips": len(out)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())

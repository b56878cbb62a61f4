"""Exports random frames of a built synthetic_talking_heads dataset as PNGs named by pose.

  .venv/bin/python tools/export_corpus_frames.py synthetic_talking_heads/r256_n1000 OUT \
      [--data-dir DIR] [--frames 400] [--seed 0]
  tools/.mp-venv/bin/python tools/face_check.py OUT --list-missed > result.json
  .venv/bin/python tools/export_corpus_frames.py --summarise OUT result.json  # by pose

File names carry the frame's yaw/pitch (degrees), so detection can be broken down by pose.
"""

import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export(name, out, data_dir, frames, seed):
  import tensorflow_datasets as tfds

  import vasa_jax.data  # noqa: F401
  from vasa_jax.data import records
  from PIL import Image
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(seed)
  srcs = [tfds.data_source(name, split=s, data_dir=data_dir) for s in ("train", "test")]
  for n in range(frames):
    src = srcs[int(rng.integers(2))]
    i = int(rng.integers(len(src)))
    rec = src[i]
    t = int(rng.integers(int(rec["num_frames"])))
    yaw, pitch = np.degrees(rec["pose"][t, :2])
    img = records.decode_jpeg(rec["frames"][t])
    fname = f"f{n:05d}_c{i:05d}_t{t:03d}_y{yaw:+06.1f}_p{pitch:+06.1f}_b{rec['blink'][t]:.2f}.png"
    Image.fromarray(img).save(os.path.join(out, fname))


def summarise(out, result):
  res = json.load(open(result))
  missed = set(res.get("missed", []))
  rows = []
  for f in sorted(os.listdir(out)):
    m = re.search(r"_y([+-][\d.]+)_p([+-][\d.]+)_b(\d+\.\d+)", f)
    if m:
      rows.append((abs(float(m.group(1))), abs(float(m.group(2))), float(m.group(3)), f in missed))
  rows = np.array(rows, dtype=float)
  summary = {"frames": len(rows), "detected": int(len(rows) - rows[:, 3].sum()),
             "rate": round(1 - rows[:, 3].mean(), 4)}
  mx = np.maximum(rows[:, 0], rows[:, 1])
  for lo, hi in ((0, 10), (10, 20), (20, 30), (30, 90)):
    sel = (mx >= lo) & (mx < hi)
    if sel.any():
      summary[f"rate_maxangle_{lo}_{hi}deg"] = {"frames": int(sel.sum()),
                                                "rate": round(1 - rows[sel, 3].mean(), 4)}
  print(json.dumps(summary, indent=1))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("name", nargs="?", help="dataset, e.g. synthetic_talking_heads/r256_n1000")
  ap.add_argument("out", nargs="?", help="folder for the PNGs")
  ap.add_argument("--data-dir", default=None)
  ap.add_argument("--frames", type=int, default=400)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--summarise", nargs=2, metavar=("FOLDER", "RESULT_JSON"))
  a = ap.parse_args()
  if a.summarise:
    summarise(*a.summarise)
  elif a.name and a.out:
    export(a.name, a.out, a.data_dir, a.frames, a.seed)
  else:
    ap.error("give NAME OUT, or --summarise FOLDER RESULT_JSON")


if __name__ == "__main__":
  main()

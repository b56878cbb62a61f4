"""Held-out check of a volume-renderer run: reconstructions of the test split's clip pairs.

    python tools/volume_check.py --workdir RUN --data-dir DATA [--geometry motion_latents/geo] \
        [--pairs 48] --out DIR

For each pair (frame i of a held-out clip drives to frame j of the same clip, as in training)
it renders frame j from frame i with the run's EMA weights and measures the L1 (0-255) over
the crop and inside the driving mouth and eye boxes, next to the source frame as it is (no
warp: what the renderer has to beat). Writes DIR/volume_check.json and a contact sheet
DIR/volume_sheet.png (rows: source | true driving frame | render, with mouth and eye
close-ups of the last two at the same size).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--data-dir", required=True)
  ap.add_argument("--geometry", default="motion_latents/geo")
  ap.add_argument("--pairs", type=int, default=48)
  ap.add_argument("--rows", type=int, default=6)
  ap.add_argument("--out", required=True)
  a = ap.parse_args(argv)
  import cv2
  import jax

  from vasa_jax import config_utils
  from vasa_jax.data import geometry_pairs
  from vasa_jax.models import volume as vm
  from vasa_jax.train import common
  from vasa_jax.train import volume as trainer
  config = config_utils.run_config(a.workdir)
  with config.unlocked():
    config.data.geometry = a.geometry
    config.data.flip, config.data.color = 0.0, 0.0
  params, step = trainer.restore_params(a.workdir, config)
  source, basis = common.open_geometry_data(config, a.data_dir, split="test")
  tr = geometry_pairs.VolumePairTransform(basis, int(config.model.image_size), min_gap=8,
                                          hard_pairs=0.5, flip=0.0, color=0.0)
  model = vm.VolumeDecoder(config.model)
  render = jax.jit(lambda p, *x: vm.float_to_images(model.apply({"params": p}, *x)))
  rng = np.random.default_rng(0)
  rows, tiles = [], []
  s = int(config.model.image_size)
  for k in range(a.pairs):
    ex = tr.random_map(source[int(rng.integers(len(source)))], rng)
    out = np.asarray(render(params, ex["source"][None], ex["pose_s"][None], ex["pose_d"][None],
                            ex["verts_s"][None], ex["verts_d"][None]))[0]
    tgt, src = ex["driving"].astype(np.float32), ex["source"].astype(np.float32)
    boxes = (ex["regions"] * s).round().astype(int)      # y0, x0, y1, x1

    def l1(x, b=None):
      if b is None:
        return float(np.abs(x - tgt).mean())
      y0, x0, y1, x1 = b
      return float(np.abs(x[y0:y1, x0:x1] - tgt[y0:y1, x0:x1]).mean())
    rows.append({"l1": l1(out.astype(np.float32)), "l1_source": l1(src),
                 "mouth_l1": l1(out.astype(np.float32), boxes[0]),
                 "mouth_l1_source": l1(src, boxes[0]),
                 "eye_l1": np.mean([l1(out.astype(np.float32), b) for b in boxes[1:]]),
                 "eye_l1_source": np.mean([l1(src, b) for b in boxes[1:]])})
    if len(tiles) < a.rows:
      side = 128

      def up(x):
        return cv2.resize(np.asarray(x, np.uint8), (side, side), interpolation=cv2.INTER_CUBIC)

      def crop(x, b):
        y0, x0, y1, x1 = b
        return up(x[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)])
      tiles.append(np.concatenate([up(ex["source"]), up(ex["driving"]), up(out),
                                   crop(ex["driving"], boxes[0]), crop(out, boxes[0]),
                                   crop(ex["driving"], boxes[1]), crop(out, boxes[1])], 1))
  os.makedirs(a.out, exist_ok=True)
  summary = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}
  rep = {"workdir": os.path.abspath(a.workdir), "step": step, "pairs": len(rows),
         "image_size": s, "split": "test", "summary": summary,
         "columns": "source | true driving | render | true mouth | render mouth | true eye | "
                    "render eye"}
  with open(os.path.join(a.out, "volume_check.json"), "w") as f:
    json.dump(rep, f, indent=1)
  cv2.imwrite(os.path.join(a.out, "volume_sheet.png"),
              cv2.cvtColor(np.concatenate(tiles, 0), cv2.COLOR_RGB2BGR))
  print(json.dumps(rep, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

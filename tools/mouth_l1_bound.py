"""How low can the mouth-region L1 of `vasa-jax eval reenact` go? Its parts, and what an
oracle would reach.

  python tools/mouth_l1_bound.py --data-dir DATA [--checkpoint BUNDLE] [--max-clips 20]
                                 [--out docs/stage1_eval]

For each held-out clip (the same clips, in the same order, as `vasa-jax eval reenact`), the first
frame drives nothing but itself and the clip's measured motion drives the portrait. In the true
frame's mouth box (geo_reenact's), the absolute error is split into the part inside the true
inner-lip contour (the opening: teeth, tongue, cavity) and the rest (lips, skin), each as a
share of the box, so that the two add up to mouth_l1. Rows:

  output           the bundle's render from the codes (what eval reenact reports)
  true_mesh        the same renderer driven by the true frame's tracked mesh instead of the codes
  warp             the plain mesh warp from the codes (no parts)
  baseline         the first frame repeated
  oracle           true_mesh with the true frame's own opening pasted in (inside error = 0):
                   the best a renderer with this geometry could do knowing the unseen interior
  oracle_codes     output with the true opening pasted in
  adjacent         the previous true frame (how much the mouth box changes in 1/25 s)

Means over frames per clip, then over clips; ratios to the baseline. Writes mouth_l1_bound.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
  import cv2

  from vasa_jax.eval import geo_reenact as G
  from vasa_jax.geometry import banks
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  G.add_clip_args(p)
  p.add_argument("--max-clips", type=int, default=20)
  p.add_argument("--out", default=None, help="folder for mouth_l1_bound.json")
  args = p.parse_args(argv)
  anim, geo, clips = G.open_clips(args)
  picks = G.picks(geo, args.only, args.max_clips)
  comp, bsz = anim._composite, anim.render_batch
  per_clip: dict = {}
  for n, i in enumerate(picks):
    rec = clips[i]
    frames, pts, motion = G.clip_arrays(rec)
    t = len(frames)
    portrait = anim.portrait_from_landmarks(frames[0], pts[0])
    out = np.concatenate(list(anim.render_motion(portrait, motion)))
    portrait.parts.reset()
    true_mesh = np.concatenate([comp.frames_for(portrait, motion[k:k + bsz], meshes=pts[k:k + bsz])
                                for k in range(0, t, bsz)])
    pg = portrait.geometry
    warp = np.stack([pg.frame(m[:6], m[6:]).warped for m in motion])
    s = frames.shape[1]
    acc: dict = {}
    for k in range(1, t):
      gt = frames[k].astype(np.float32)
      x0, y0, x1, y1 = G._mouth_box(pts[k], s)
      inner = np.zeros((s, s), np.uint8)
      cv2.fillPoly(inner, [pts[k][list(banks.INNER), :2].round().astype(np.int32)], 1)
      inside = inner[y0:y1, x0:x1].astype(bool)
      for name, img in (("output", out[k]), ("true_mesh", true_mesh[k]), ("warp", warp[k]),
                        ("baseline", frames[0]), ("adjacent", frames[k - 1])):
        d = np.abs(img[y0:y1, x0:x1].astype(np.float32) - gt[y0:y1, x0:x1]).mean(-1)
        rows = {name: d.mean(), f"{name}_inside": d[inside].sum() / d.size,
                f"{name}_rest": d[~inside].sum() / d.size}
        if name in ("output", "true_mesh"):
          rows["oracle" if name == "true_mesh" else "oracle_codes"] = d[~inside].sum() / d.size
        for key, v in rows.items():
          acc.setdefault(key, []).append(float(v))
    for key, v in acc.items():
      per_clip.setdefault(key, []).append(float(np.mean(v)))
    print(f"[{n + 1}/{len(picks)}] {G._text(rec['clip_id'])}: output "
          f"{np.mean(acc['output']):.2f}, baseline {np.mean(acc['baseline']):.2f}", file=sys.stderr)
  mean = {k: float(np.mean(v)) for k, v in per_clip.items()}
  base = mean["baseline"]
  report = {"clips": len(picks), "dataset": args.dataset, "mean": mean,
            "ratio_to_baseline": {k: v / base for k, v in mean.items()
                                  if not k.endswith(("_inside", "_rest"))}}
  print(json.dumps(report, indent=1))
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mouth_l1_bound.json"), "w") as f:
      json.dump(report, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())

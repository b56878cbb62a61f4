"""Sets the live generator's head-motion gain and pose smoothing against the offline sampler,
in the motion codes (no renderer, no judge), on portraits and speech that tools/live_eval.py
does not use (part_eval.second_set() portraits; every 9th file of ../shared/real/audio not in
part_eval.EVAL_AUDIO).

    python tools/live_calibrate.py [--n 6]

Prints, per setting, the medians over clips of the head rotation spread (deg, yaw/pitch/roll),
its frame-to-frame speed (deg/frame), and their ratios to the offline sampler's.
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import part_eval  # noqa: E402


def stats(m):
  d = np.degrees(np.asarray(m)[:, :3])
  return np.r_[d.std(0), np.median(np.linalg.norm(np.diff(d, axis=0), axis=1))]


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=6)
  ap.add_argument("--gains", default="1.0,1.3,1.5")
  ap.add_argument("--smoothing", default="0.3,0.6,1.0")
  args = ap.parse_args()
  from vasa_jax import animate as an
  from vasa_jax import engine as E
  from vasa_jax import live
  from vasa_jax import media
  from vasa_jax.geometry import codes as C
  anim = an.Animator()
  eng, model = anim.engine, live.live_model(anim.engine)
  used = {a for a, _ in part_eval.EVAL_AUDIO}
  audio = [a for a in sorted(os.listdir(os.path.join(part_eval.REAL, "audio")))
           if a not in used][::9][:args.n]
  rows = {}
  for img, aud in zip(part_eval.second_set()[:args.n], audio):
    a = media.load_audio(os.path.join(part_eval.REAL, "audio", aud))[:160000]
    p = anim.prepare_portrait(os.path.join(part_eval.REAL, "images", img))
    mb = float(C.inner_gap(p.geometry.codes.canonical[0]))
    off = stats(np.concatenate([m for _, m in E.sample_motion(eng, p.motion, a,
                                                              E.SampleOptions(), mouth_base=mb)]))
    for g in map(float, args.gains.split(",")):
      for ps in map(float, args.smoothing.split(",")):
        m = live.live_motion(model, p.motion, a, E.SampleOptions(head_motion=g),
                             mouth_base=mb, pose_smoothing=ps)
        rows.setdefault((g, ps), []).append(stats(m) / np.maximum(off, 1e-6))
    rows.setdefault("offline", []).append(off)
    print(f"{img} + {aud}", file=sys.stderr, flush=True)
  print("setting: median yaw, pitch, roll spread, speed (offline: degrees; others: / offline)")
  for k, v in rows.items():
    print(k, np.round(np.median(np.asarray(v), 0), 3))


if __name__ == "__main__":
  main()

"""Lip-sync of the bundled sampler on unseen real voices, outside the test split
(docs/motion_eval/audio_lead.md).

These voices have no footage, so the offsets read here are relative to the evaluator's zero,
and that zero sits 0.4-1 frame positive on real footage it has not seen. A lead that centres
these offsets on 0 over-corrects (1.5 did, against 0.5 set on the footage of the train split).
Use it to compare variants, not to place the lead.

Twelve speech files of ../shared/real/audio (every 14th from the 8th, so not eval controls'
picks) are spoken by twelve portraits of ../shared/real/images (every 17th from the 4th), first
8 s, 10 DDIM steps. Each output's face crop is measured by the face-mesh tracker (as `vasa-jax
eval motion` measures) and scored by the mesh lip-sync evaluator (vasa_jax/eval/meshsync.py).
Each argument is one variant, a JSON dict of sampling options:

    python tools/lipsync_tuning.py '{}' '{"audio_lead": 1.5}' [--seed 1] [--real ../shared/real]

prints per pair the best offsets and, per variant, the in-sync share (|offset| <= 1 frame),
the mean Sync-C and the mouth-gap spread.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("variants", nargs="+", help="JSON dicts of sampling options")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--real", default="../shared/real")
  args = p.parse_args(argv)
  from vasa_jax import animate as an
  from vasa_jax.engine import load_audio
  from vasa_jax.eval import meshsync
  from vasa_jax.eval import motion as me
  variants = [json.loads(v) for v in args.variants]
  auds = sorted(os.listdir(os.path.join(args.real, "audio")))[7::14][:12]
  ims = sorted(f for f in os.listdir(os.path.join(args.real, "images"))
               if f.endswith((".jpg", ".png")))[3::17][:12]
  anim = an.Animator(None)
  ev = meshsync.load()
  measure = me.Measurer(anim.basis)
  res = [[] for _ in variants]
  for im, au in zip(ims, auds):
    portrait = anim.prepare_portrait(os.path.join(args.real, "images", im), crop_only=True)
    audio = load_audio(os.path.join(args.real, "audio", au))[:8 * 16000]
    for r, v in zip(res, variants):
      frames, _ = me.generate(anim, portrait, audio, steps=10, seed=args.seed, **v)
      _, canonical, _ = measure(frames)
      s = ev.score(canonical, audio)
      r.append((s["offset"], s["sync_c"], 100 * me.mouth_gap(canonical).std()))
    print(im, au, [r[-1][0] for r in res], flush=True)
  for r, v in zip(res, variants):
    off = np.array([x[0] for x in r])
    print(json.dumps({"variant": v, "seed": args.seed,
                      "in_sync": round(float(np.mean(np.abs(off) <= 1)), 3),
                      "sync_c": round(float(np.mean([x[1] for x in r])), 4),
                      "mouth_std": round(float(np.mean([x[2] for x in r])), 2),
                      "offsets": off.tolist()}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

"""Compute time of one motion block of W frames with a bundle's MotionDiT on this machine: the
figure the live plan (docs/plans/live_microphone.md) budgets before a live model is trained.

    python tools/block_time.py [--checkpoint BUNDLE] [--windows 4,8,50] [--steps 10]

Each block is sampled as `engine.sample_motion` samples a window (K frames of context, audio
CFG at the bundle's scale, the given DDIM steps), from the call to the motion on the host.
Prints JSON: per window size, the first call (compilation) and the median of three warm calls.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--checkpoint", default=None)
  ap.add_argument("--windows", default="4,8,50")
  ap.add_argument("--steps", type=int, default=10)
  a = ap.parse_args(argv)
  import jax
  import numpy as np

  from vasa_jax import animate as an
  from vasa_jax import engine as engine_lib
  from vasa_jax import sampling
  eng = an.Animator(a.checkpoint).engine
  opts = engine_lib.SampleOptions(steps=a.steps).resolved(eng.sampler)
  audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 4).astype(np.float32)
  feats = np.asarray(eng.features(audio))
  out = {"device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
         "steps": a.steps, "context": eng.context, "cfg_audio": opts.cfg_audio, "blocks": {}}
  for w in (int(x) for x in a.windows.split(",")):
    times = []
    for rep in range(4):
      t0 = time.perf_counter()
      _, m = next(sampling.stream(eng.denoise, feats[:w], eng.controls(opts), window=w,
                                  context=eng.context, steps=a.steps,
                                  cfg={"audio": opts.cfg_audio}, rng=jax.random.PRNGKey(rep),
                                  motion_dim=eng.motion_dim, schedule=eng.schedule,
                                  params=eng.md_params))
      np.asarray(m)
      times.append(time.perf_counter() - t0)
    out["blocks"][w] = {"first_s": round(times[0], 3),
                        "warm_ms": round(1000 * float(np.median(times[1:])), 1)}
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

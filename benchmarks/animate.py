"""End-to-end animation speed: portrait + speech -> frames, with the Animator.

  python benchmarks/animate.py [--checkpoint DIR] [--seconds 8] [--steps 10,25] [--repeats 2]
  python benchmarks/animate.py --tiny      # untrained tiny configs (smoke test)
  python benchmarks/animate.py --stage1 volume   # another renderer: the bundle's stage 2 with
                                          # an untrained stage 1 of configs/face_latent.py:VARIANT
                                          # (speed does not depend on training)

Prints ONE JSON object. For each DDIM step count, after one warm-up call (compilation):
  first_frame_s        streaming latency: call -> first rendered frames (face detection, encode,
                       prepare, one motion window, one render batch)
  seconds_per_second   wall seconds per second of 25 fps video for the whole clip (pasted back
                       into the photo, not written to disk); < 1 is faster than real time
  fps                  frames per second overall
plus a breakdown from single timed pieces: portrait preparation (detect + encode + prepare),
one motion window (W frames) and rendering of one batch of frames (per frame).
Audio: the bundled example speech, tiled to --seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vasa_jax import animate as an  # noqa: E402
from vasa_jax import media  # noqa: E402

EXAMPLES = os.path.join(ROOT, "vasa_jax", "assets", "examples")


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--checkpoint", default=None)
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--seconds", type=float, default=8.0)
  ap.add_argument("--steps", default="10,25")
  ap.add_argument("--repeats", type=int, default=2)
  ap.add_argument("--image", default=os.path.join(EXAMPLES, "portrait.jpg"))
  ap.add_argument("--stage1", default=None,
                  help="a configs/face_latent.py variant rendered with untrained weights")
  args = ap.parse_args(argv)
  t0 = time.perf_counter()
  if args.tiny:
    from vasa_jax.config_utils import load_config_module
    from vasa_jax import bundle as bundle_lib
    from vasa_jax.geometry import codes as codes_lib
    fl = load_config_module(os.path.join(ROOT, "configs", "face_latent.py")).get_config("geo_tiny")
    md = load_config_module(os.path.join(ROOT, "configs", "motion_dit.py")).get_config(
        "tiny,model.dyn_dim=44")
    basis = codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))
    anim = an.Animator.from_configs(fl, md, face_basis=basis)
  elif args.stage1:
    import dataclasses

    from vasa_jax import bundle as bundle_lib
    from vasa_jax import renderers
    from vasa_jax.config_utils import load_config_module
    fl = load_config_module(os.path.join(ROOT, "configs", "face_latent.py")).get_config(
        args.stage1)
    b = bundle_lib.load(args.checkpoint)
    params = renderers.renderer_class(renderers.kind_of(fl.model)).init_params(
        fl.model, jax.random.PRNGKey(0))
    anim = an.Animator(bundle=dataclasses.replace(b, face_latent_config=fl,
                                                  face_latent_params=params))
  else:
    anim = an.Animator(args.checkpoint)
  load_s = time.perf_counter() - t0
  speech = media.load_audio(os.path.join(EXAMPLES, "speech.flac"))
  n = int(args.seconds * 16000)
  audio = np.tile(speech, int(np.ceil(n / len(speech))))[:n]
  out = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
         "cpu_count": os.cpu_count(), "machine": platform.machine(),
         "checkpoint": "tiny (random)" if args.tiny else (args.checkpoint or "bundled demo"),
         "stage1": args.stage1 or "the bundle's",
         "image_size": anim.size, "window": anim.window, "seconds_of_audio": args.seconds,
         "renderer": anim.kind,
         "load_s": round(load_s, 3), "loadavg_start": os.getloadavg(), "steps": {}}

  # pieces
  t = time.perf_counter()
  portrait = anim.prepare_portrait(args.image)
  out["prepare_portrait_first_s"] = round(time.perf_counter() - t, 3)
  t = time.perf_counter()
  portrait = anim.prepare_portrait(args.image)
  out["prepare_portrait_s"] = round(time.perf_counter() - t, 3)
  motion = next(anim.motion_windows(portrait, audio[:anim.window * 640], steps=10))[1]
  full = motion[:anim.render_batch]      # one full batch (a window's short batch comes first)
  frames = next(anim.render_motion(portrait, full))
  t = time.perf_counter()
  frames = next(anim.render_motion(portrait, full))
  out["render_batch_ms_per_frame"] = round((time.perf_counter() - t) * 1000 / len(frames), 2)

  for steps in [int(s) for s in args.steps.split(",")]:
    runs = []
    for r in range(args.repeats + 1):       # the first run compiles
      stats = {}
      t = time.perf_counter()
      total = 0
      for fr in anim.stream(args.image, (audio, 16000), steps=steps, seed=r, stats=stats):
        total += len(fr)
      wall = time.perf_counter() - t
      if r:
        runs.append((wall, stats["first_frame_s"], total))
    wall = statistics.median(x[0] for x in runs)
    first = statistics.median(x[1] for x in runs)
    frames_n = runs[0][2]
    t = time.perf_counter()
    next(anim.motion_windows(portrait, audio, steps=steps))
    window_s = time.perf_counter() - t
    out["steps"][str(steps)] = {
        "first_frame_s": round(first, 3), "wall_s": round(wall, 3), "frames": frames_n,
        "seconds_per_second": round(wall / args.seconds, 3),
        "fps": round(frames_n / wall, 2), "motion_window_s": round(window_s, 3)}
  out["loadavg_end"] = os.getloadavg()
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

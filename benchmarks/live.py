"""Live latency: real speech pushed at real-time pace in 20 ms chunks into `Animator.live`.

  python benchmarks/live.py [--checkpoint DIR] [--audio FILE] [--seconds 60] [--image P]
  python benchmarks/live.py --quick        # 4 s with the bundled weights (smoke test)

Prints ONE JSON object:
  live      a live session on a virtual 25 fps display (vasa_jax.live.Pacer): frame t is shown
            at its due time (its audio's arrival + the session's delay) or when it is ready if
            later.
              latency_ms       p50 / p95 / max of (shown - arrival of the audio sample at the
                               frame's centre)
              ready_latency_ms the same to when the frame was rendered
              fps_delivered    frames shown per second of display time
              dropped          frames never shown; repeated: ticks a late frame left the last
                               frame up
              drift_ms         latency at the end minus at the start (median of the last and
                               first 5 s)
              first_frame_s    first push -> first frame ready
              block_ms, render_ms  per block of motion / per rendered frame (p50, p95)
              compile_s        session start: compiling the block sampler and the renderer
  stream    the window-by-window `Animator.stream` baseline on the same audio, which needs the
            whole clip first: the clip arrives at real-time pace (simulated), then streams.
            latency_ms of frame t = (clip length - t's centre) + the time stream took to yield it.
Audio: ../shared/real/audio/musetalk__eng.flac (60 s of English) when present, else the bundled
example speech tiled to --seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from vasa_jax import animate as an  # noqa: E402
from vasa_jax import live  # noqa: E402
from vasa_jax import media  # noqa: E402
from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402

EXAMPLES = os.path.join(ROOT, "vasa_jax", "assets", "examples")
REAL = os.path.join(os.path.dirname(ROOT), "shared", "real", "audio", "musetalk__eng.flac")
CHUNK = SAMPLE_RATE // 50          # 20 ms


def _pct(x, scale=1000.0):
  x = np.asarray(x, np.float64)
  if not x.size:
    return None
  return {"p50": round(float(np.percentile(x, 50)) * scale, 1),
          "p95": round(float(np.percentile(x, 95)) * scale, 1),
          "max": round(float(x.max()) * scale, 1)}


def run_live(anim, image, audio, *, steps=None, lead=None, delay=None):
  s = anim.live(image, steps=steps, audio_lead=lead, delay_s=delay)
  pacer = live.Pacer()
  ready_lat, t_first = [], []
  t0 = time.perf_counter() + 0.05

  def pusher():
    for k, i in enumerate(range(0, audio.size, CHUNK)):
      delay = t0 + (k + 1) * CHUNK / SAMPLE_RATE - time.perf_counter()
      if delay > 0:
        time.sleep(delay)
      s.push(audio[i:i + CHUNK])
    s.close()
  th = threading.Thread(target=pusher, daemon=True)
  cpu0 = time.process_time()
  th.start()
  for f in s.frames():
    if not t_first:
      t_first.append(f.ready_at - t0)
    ready_lat.append(f.ready_at - f.arrived_at)
    pacer.show(f)
  th.join()
  wall = time.perf_counter() - t0
  stats = s.stats()
  out = pacer.summary()
  out.update(ready_latency_ms=_pct(ready_lat), first_frame_s=round(t_first[0], 3),
             block_ms={"p50": stats["block_ms_p50"], "p95": stats["block_ms_p95"]},
             render_ms={"p50": stats["render_ms_p50"], "p95": stats["render_ms_p95"]},
             compile_s=stats["compile_s"], delay_ms=stats["delay_ms"],
             frames_expected=int(audio.size // SAMPLES_PER_FRAME),
             cpu_share=round((time.process_time() - cpu0) / wall / (os.cpu_count() or 1), 3),
             block=s.model.block, lookahead_frames=s.model.ahead,
             steps=s.motion.opts.steps, output_side=int(f.image.shape[0]) if ready_lat else None)
  return out


def run_stream(anim, image, audio, *, steps=None):
  """The offline stream on the same clip: it can only start once the whole clip is in."""
  for _ in anim.stream(image, audio[:SAMPLE_RATE * 2], steps=steps):   # warm-up (compiles)
    pass
  duration = audio.size / SAMPLE_RATE
  lat, t0, n = [], time.perf_counter(), 0
  first = None
  for batch in anim.stream(image, audio, steps=steps):
    now = time.perf_counter() - t0
    first = now if first is None else first
    for _ in range(batch.shape[0]):
      lat.append(duration - (n + 0.5) / FPS + now)
      n += 1
  return {"latency_ms": _pct(lat), "first_frame_after_clip_s": round(first, 3),
          "frames": n, "wall_s": round(time.perf_counter() - t0, 2),
          "note": "starts when the whole clip has arrived"}


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--checkpoint", default=None)
  ap.add_argument("--audio", default=None)
  ap.add_argument("--image", default=os.path.join(EXAMPLES, "portrait.jpg"))
  ap.add_argument("--seconds", type=float, default=60.0)
  ap.add_argument("--steps", type=int, default=None, help="DDIM steps per live block")
  ap.add_argument("--lead", type=float, default=None, help="audio lead in frames (default: "
                  "the live generator's)")
  ap.add_argument("--delay", type=float, default=None, help="display delay in s (default: "
                  "the session's)")
  ap.add_argument("--no-baseline", action="store_true")
  ap.add_argument("--quick", action="store_true")
  args = ap.parse_args(argv)
  if args.quick:
    args.seconds, args.no_baseline = 4.0, True
  path = args.audio or (REAL if os.path.isfile(REAL) else os.path.join(EXAMPLES, "speech.flac"))
  audio = media.load_audio(path)
  n = int(args.seconds * SAMPLE_RATE)
  audio = np.resize(audio, n).astype(np.float32) if audio.size < n else audio[:n]
  t0 = time.perf_counter()
  anim = an.Animator(args.checkpoint)
  load_s = time.perf_counter() - t0
  out = {"benchmark": "live", "quick": bool(args.quick), "audio": os.path.basename(path),
         "seconds": round(audio.size / SAMPLE_RATE, 2), "load_s": round(load_s, 2),
         "cpu_count": os.cpu_count(), "machine": platform.machine()}
  out["live"] = run_live(anim, args.image, audio, steps=args.steps, lead=args.lead,
                         delay=args.delay)
  if not args.no_baseline:
    out["stream"] = run_stream(anim, args.image, audio, steps=args.steps)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

"""Provenance watermark benchmark: detection rate, false-positive rate, PSNR. Prints JSON.

  python benchmarks/watermark.py --clips 10

Watermarked side: synthetic clips (several identities, vasa_jax.synth.corpus) written with
write_watermarked_video (H.264 crf 18), then re-encoded at crf 28, and scaled to half size
(crf 23). Unwatermarked side: every real clip in /work/shared/real/videos (first ~75 frames at
25 fps), where any detection is a false positive.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vasa_jax import media, provenance  # noqa: E402


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--clips", type=int, default=10)
  ap.add_argument("--seconds", type=float, default=3.0)
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--seed", type=int, default=11)
  ap.add_argument("--real", default="/work/shared/real/videos")
  ap.add_argument("--real-frames", type=int, default=75)
  args = ap.parse_args()
  from vasa_jax.synth import corpus
  ff = media.ffmpeg_exe()
  t0 = time.time()
  scores = {"h264_crf18": [], "reencode_crf28": [], "half_size": []}
  psnrs, payload_ok = [], 0
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(args.clips):
      clip = corpus.make_clip(corpus.ClipSpec(args.seed, i), seconds=args.seconds, size=args.size)
      psnrs.append(psnr(provenance.embed(clip.frames), clip.frames))
      src = os.path.join(tmp, f"c{i}.mp4")
      provenance.write_watermarked_video(src, clip.frames, audio=clip.audio)
      v28, vhalf = os.path.join(tmp, f"c{i}_28.mp4"), os.path.join(tmp, f"c{i}_half.mp4")
      subprocess.run([ff, "-nostdin", "-v", "error", "-y", "-i", src, "-c:v", "libx264", "-crf", "28",
                      "-pix_fmt", "yuv420p", v28], check=True)
      subprocess.run([ff, "-nostdin", "-v", "error", "-y", "-i", src, "-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2",
                      "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", vhalf], check=True)
      for name, p in [("h264_crf18", src), ("reencode_crf28", v28), ("half_size", vhalf)]:
        d = provenance.detect(p)
        scores[name].append(d.score)
        payload_ok += name == "h264_crf18" and d.payload_ok
    t_wm = time.time() - t0
    real_scores, real_errors = {}, {}
    for p in sorted(glob.glob(os.path.join(args.real, "*"))):
      if not p.lower().endswith((".mp4", ".mpg", ".mpeg", ".mov", ".avi", ".mkv")):
        continue
      try:
        real_scores[os.path.basename(p)] = provenance.detect(p, fps=25, max_frames=args.real_frames).score
      except (media.MediaError, ValueError) as e:
        real_errors[os.path.basename(p)] = str(e)[:200]
  rs = np.array(list(real_scores.values()))
  thr = provenance.THRESHOLD
  out = {
      "threshold": thr,
      "watermarked_clips": args.clips, "size": args.size, "seconds": args.seconds,
      "psnr_db_mean": round(float(np.mean(psnrs)), 2), "psnr_db_min": round(float(np.min(psnrs)), 2),
      "detection_rate": {k: float(np.mean(np.array(v) >= thr)) for k, v in scores.items()},
      "score_min": {k: round(float(np.min(v)), 2) for k, v in scores.items()},
      "score_mean": {k: round(float(np.mean(v)), 2) for k, v in scores.items()},
      "payload_ok_rate_crf18": payload_ok / max(args.clips, 1),
      "real_videos": int(rs.size), "real_unreadable": real_errors,
      "false_positive_rate": float(np.mean(rs >= thr)) if rs.size else None,
      "real_score_mean": round(float(rs.mean()), 3) if rs.size else None,
      "real_score_std": round(float(rs.std()), 3) if rs.size else None,
      "real_score_max": round(float(rs.max()), 3) if rs.size else None,
      "real_score_min": round(float(rs.min()), 3) if rs.size else None,
      "seconds_watermarked_side": round(t_wm, 1), "seconds_total": round(time.time() - t0, 1),
  }
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

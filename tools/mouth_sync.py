"""Does the mouth follow the speech? An off-the-shelf landmark detector's view of a video.

  .venv/bin/python tools/mouth_sync.py VIDEO [VIDEO ...] [--mp-python /work/tools/mp-venv/bin/python]

For each video: MediaPipe Face Mesh (run in its own venv by tools/face_check.py) finds the face in
every frame and measures the mouth opening (inner-lip gap / face height); the audio track's RMS
envelope is computed per 25 fps frame. Prints JSON per video: face detection rate, and the
Pearson correlation between mouth opening and audio envelope at the best lag in [-5, 5] frames
(plus the lag and the zero-lag value). Run it on real footage too: that is the reference the
generated videos are compared with.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vasa_jax import media  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def envelope(audio: np.ndarray, n: int, sr: int = 16000, fps: int = 25) -> np.ndarray:
  spf = sr // fps
  audio = np.pad(audio, (0, max(0, n * spf - len(audio))))
  frames = audio[:n * spf].reshape(n, spf)
  return np.sqrt((frames.astype(np.float64) ** 2).mean(1))


def best_lag(x, y, max_lag=5):
  ok = np.isfinite(x) & np.isfinite(y)
  best = (-2.0, 0)
  zero = float("nan")
  for lag in range(-max_lag, max_lag + 1):
    if lag >= 0:
      a, b, m = x[lag:], y[:len(y) - lag], ok[lag:] & ok[:len(ok) - lag]
    else:
      a, b, m = x[:lag], y[-lag:], ok[:lag] & ok[-lag:]
    if m.sum() < 20:
      continue
    c = float(np.corrcoef(a[m], b[m])[0, 1])
    if lag == 0:
      zero = c
    if c > best[0]:
      best = (c, lag)
  return best[0], best[1], zero


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("videos", nargs="+")
  ap.add_argument("--mp-python", default="/work/tools/mp-venv/bin/python")
  args = ap.parse_args(argv)
  out = []
  for v in args.videos:
    try:
      audio = media.load_audio(v)
    except media.MediaError as e:
      out.append({"video": v, "skipped": str(e)})
      continue
    with tempfile.TemporaryDirectory() as tmp:
      npy = os.path.join(tmp, "m.npy")
      r = subprocess.run([args.mp_python, os.path.join(HERE, "face_check.py"), v,
                          "--mouth-out", npy], capture_output=True, text=True)
      if r.returncode:
        raise SystemExit(f"face_check failed on {v}: {r.stderr.strip().splitlines()[-1:]}")
      det = json.loads(r.stdout.strip().splitlines()[-1])
      mouth = np.load(npy).astype(np.float64)
    frames = media.read_video(v)   # resampled to 25 fps
    if len(frames) != len(mouth):  # face_check reads native fps; resample its track to 25 fps
      mouth = np.interp(np.linspace(0, len(mouth) - 1, len(frames)), np.arange(len(mouth)), mouth)
    env = envelope(audio, len(mouth))
    c, lag, c0 = best_lag(mouth, env)
    out.append({"video": v, "frames": len(mouth), "face_rate": det["rate"],
                "mouth_audio_r": round(c, 3), "lag": lag, "mouth_audio_r_lag0": round(c0, 3),
                "mouth_std": round(float(np.nanstd(mouth)), 4)})
  done = [o for o in out if "skipped" not in o]
  if len(done) > 1:
    rs = np.array([o["mouth_audio_r"] for o in done])
    out.append({"summary": {"videos": len(done), "mouth_audio_r_mean": round(float(rs.mean()), 3),
                            "mouth_audio_r_median": round(float(np.median(rs)), 3),
                            "face_rate_mean": round(float(np.mean([o["face_rate"] for o in done])), 4)}})
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

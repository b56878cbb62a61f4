"""Live vs offline, measured the same way: the portraits and speech of tools/part_eval.py
animated by `Animator.animate` (offline) and by a live session (`Animator.live`, audio pushed
in 20 ms chunks; the motion depends only on the samples, so this is the motion a real-time
session shows), each measured by ../shared/tools/judge (avjudge.py: head rotation spread and
speed, blinks, mouth opening vs audio; bilabial.py: lip closure at /p b m/ on English speech).

    python tools/live_eval.py --out docs/motion_eval/live [--checkpoint BUNDLE] [--grid]

Writes OUT/live_eval.json (per video and medians), OUT/live.md, and OUT/live_vs_offline.png
(frames of both side by side: mouth and eye close-ups of the same moments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import part_eval  # noqa: E402

KEYS = ("yaw_std", "pitch_std", "roll_std", "rot_speed", "blinks_per_min", "mouthcorr",
        "jitter", "id_dist")
MOUTH = ("gap_p90", "open_share")


def render_live(anim, image: str, audio: np.ndarray, out: str) -> dict:
  """A live session fed the whole clip in 20 ms chunks (as fast as it takes them), its frames
  written as every output is (watermarked, audio muxed)."""
  from vasa_jax import provenance
  t0 = time.perf_counter()
  s = anim.live(image)
  for i in range(0, audio.size, 320):
    s.push(audio[i:i + 320])
  s.close()
  frames = [f.image for f in s.frames()]
  provenance.write_watermarked_video(out, iter(frames), fps=25, audio=audio, sample_rate=16000)
  return {"wall_s": round(time.perf_counter() - t0, 2), **s.stats()}


def make_videos(anim, pairs, work: str, max_seconds: float) -> list[dict]:
  from vasa_jax import media
  rows = []
  for img, aud, en in pairs:
    stem = f"{part_eval._stem(img)}__{part_eval._stem(aud)}"
    a = media.load_audio(os.path.join(part_eval.REAL, "audio", aud))[:int(max_seconds * 16000)]
    image = os.path.join(part_eval.REAL, "images", img)
    for mode in ("offline", "live"):
      path = os.path.join(work, mode, stem + ".mp4")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      if not os.path.isfile(path):
        if mode == "offline":
          anim.save_stream(image, (a, 16000), path)
        else:
          render_live(anim, image, a, path)
        print(f"{mode} {stem}", file=sys.stderr, flush=True)
      rows.append({"video": path, "mode": mode, "portrait": img, "audio": aud, "english": en})
  return rows


def summary(rows) -> dict:
  out = {}
  for mode in ("offline", "live"):
    av = [r["av"] for r in rows if r["mode"] == mode and "error" not in r.get("av", {"error": 1})]
    bil = [r["bilabial"] for r in rows
           if r["mode"] == mode and "error" not in r.get("bilabial", {"error": 1})]
    mouth = [r["mouth"] for r in rows
             if r["mode"] == mode and "error" not in r.get("mouth", {"error": 1})]
    out[mode] = {k: part_eval._med(av, k) for k in KEYS}
    out[mode].update({k: part_eval._med(mouth, k) for k in MOUTH})
    out[mode]["closure"] = part_eval._med(bil, "closure")
    out[mode]["vowel_gap"] = part_eval._med(bil, "vowel_gap")
    out[mode]["videos"] = len(av)
  ratio = {}
  for k in KEYS + MOUTH + ("closure", "vowel_gap"):
    a, b = out["offline"].get(k), out["live"].get(k)
    ratio[k] = round(b / a, 3) if a and b is not None else None
  out["live / offline"] = ratio
  # the inside of the mouth and the blinks of each, next to the judges' real-clip references
  out["vs_real"] = {mode: part_eval.summary([r for r in rows if r["mode"] == mode])
                    for mode in ("offline", "live")}
  rot = {k: ratio[k] for k in ("yaw_std", "pitch_std", "roll_std", "rot_speed",
                               "blinks_per_min", "gap_p90")}
  out["criteria"] = {
      **{f"{k} within 20% of offline": v is not None and abs(v - 1) <= 0.2
         for k, v in rot.items()},
      "closure no worse than offline by more than 0.1":
          out["live"]["closure"] is not None and out["offline"]["closure"] is not None
          and out["live"]["closure"] - out["offline"]["closure"] <= 0.1}
  return out


def sheet(rows, out_png: str, n: int = 4) -> None:
  """For n pairs: the offline video's close-up rows above the live one's, then real
  footage's (part_eval.REAL_CLIPS), all at the same tile size."""
  import cv2
  body = []
  pairs = sorted({(r["portrait"], r["audio"]) for r in rows})[:n]
  for p, a in pairs:
    for mode in ("offline", "live"):
      r = next(x for x in rows if (x["portrait"], x["audio"], x["mode"]) == (p, a, mode))
      got = part_eval.closeup_rows(r["video"], f"{mode} {part_eval._stem(p)[:10]}")
      if got is not None:
        body.append(np.concatenate(got, 1))
    if body:
      body.append(np.full((6, body[-1].shape[1], 3), 255, np.uint8))
  for clip in part_eval.REAL_CLIPS:        # real footage's close-ups at the same tile size
    got = part_eval.closeup_rows(os.path.join(part_eval.REAL, clip),
                                 "REAL " + part_eval._stem(clip)[:9])
    if got is not None:
      body.append(np.concatenate(got, 1))
  if body:
    width = max(b.shape[1] for b in body)
    body = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
            for b in body]
    cv2.imwrite(out_png, np.concatenate(body, 0)[..., ::-1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--out", default="docs/motion_eval/live")
  p.add_argument("--work", default="/tmp/vasa-live-eval")
  p.add_argument("--checkpoint", default=None)
  p.add_argument("--grid", action="store_true", help="every portrait x every audio (100)")
  p.add_argument("--max-seconds", type=float, default=10.0)
  p.add_argument("--judge", default=os.path.expanduser("~/.cache/vasa-judge-venv/bin/python"))
  args = p.parse_args(argv)
  from vasa_jax import animate as an
  anim = an.Animator(args.checkpoint)
  os.makedirs(args.out, exist_ok=True)
  rows = make_videos(anim, part_eval.pairs(args.grid), args.work, args.max_seconds)
  rows = part_eval.judge_all(rows, args.judge, os.path.join(args.work, "judge.jsonl"))
  s = summary(rows)
  with open(os.path.join(args.out, "live_eval.json"), "w") as f:
    json.dump({"summary": s, "videos": rows}, f, indent=1)
  sheet(rows, os.path.join(args.out, "live_vs_offline.png"))
  lines = [f"# Live vs offline ({s['offline']['videos']} videos each; tools/live_eval.py)", "",
           "| figure | offline | live | live / offline |", "|---|---|---|---|"]
  for k in KEYS + MOUTH + ("closure", "vowel_gap"):
    fmt = lambda v: "-" if v is None else f"{v:.4g}"
    lines.append(f"| {k} | {fmt(s['offline'].get(k))} | {fmt(s['live'].get(k))} | "
                 f"{fmt(s['live / offline'].get(k))} |")
  real = s["vs_real"]["live"]["real"]
  lines += ["", "Inside the mouth and blinks next to the judges' real clips (mouthjudge.py and "
            "its mouth_reference.jsonl; avjudge.py):", "",
            "| figure | offline | live | real p25 | real median |", "|---|---|---|---|---|"]
  for k in ("open_share", "gap_p90", "dark", "contrast", "grad", "teeth"):
    g = lambda mode: s["vs_real"][mode]["generated"].get(k)
    fmt = lambda v: "-" if v is None else f"{v:.4g}"
    lines.append(f"| {k} | {fmt(g('offline'))} | {fmt(g('live'))} | "
                 f"{fmt(real.get(k + '_p25'))} | {fmt(real.get(k + '_median'))} |")
  lines.append(f"| blinks in 5-45/min | {s['vs_real']['offline']['generated']['blinks_in_5_45']}"
               f" | {s['vs_real']['live']['generated']['blinks_in_5_45']} | | |")
  lines += ["", "| criterion | holds |", "|---|---|"] + [
      f"| {k} | {'yes' if v else 'no'} |" for k, v in s["criteria"].items()]
  with open(os.path.join(args.out, "live.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print(json.dumps(s, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

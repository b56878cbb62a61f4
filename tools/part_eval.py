"""Mouths and eyes on unseen portraits and speech, measured like real footage (issue 27).

    python tools/part_eval.py --out docs/part_eval [--checkpoint BUNDLE] [--grid] [--judge PY]

1. Animates EVAL_PORTRAITS x EVAL_AUDIO from ../shared/real (photos, a painting; closed and
   open mouths; speech in English, German, Chinese and others; none of these people or voices
   is in the training data or the part bank) with the bundle's default settings, writing
   WORK/*.mp4 (--work, default OUT/videos; watermarked, as `vasa-jax animate` does). --grid: every portrait with
   every speech file (100 videos); default: the ten diagonal pairs. A video already there is
   kept (the run resumes).
2. Measures every video with ../shared/tools/judge (its own environment, --judge): mouthjudge.py
   (open share, opening, dark cavity, teeth, contrast, edges, teeth flicker), avjudge.py
   (blinks, identity, head motion) and, for English speech, bilabial.py (lips shut at
   /p b m/), next to the judges' own reference figures on real clips.
3. Writes OUT/part_eval.json and OUT/part_eval.md (medians against the criteria) and contact
   sheets: OUT/closeups_mouth.png and OUT/closeups_eyes.png (six portraits: open mouth,
   mid-speech, blink, gaze left, gaze right), each row beside real-footage close-ups of the
   same kind at the same size (OUT/closeups_real_*.png, from held-out clips).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
REAL = os.path.join(SHARED, "real")
JUDGE = os.path.join(SHARED, "tools", "judge")

EVAL_PORTRAITS = ("hallo__7.jpg", "facerec__alex-lacamoire.png", "facerec__lin-manuel-miranda.png",
                  "facerec__img2.jpg", "aniportrait__lyl.jpg", "dreamtalk__male_face.png",
                  "anitalker__sad.jpg", "anitalker__monalisa.jpg", "anitalker__Einstein.png",
                  "aniportrait__Aragaki.png")
# (file, English?) none of them is a voice of the training clips, or in tools/mouth_gain.py
EVAL_AUDIO = (("echomimic__walden.flac", True), ("edtalk__11.flac", True),
              ("edtalk__demo_EDTalk_A.flac", True), ("atvgnet__audio_sample.flac", True),
              ("echomimic__jane.wav", True), ("dreamtalk__German1.flac", False),
              ("musetalk__yongen.flac", False), ("echomimicv3__demo_ch_woman_04.flac", False),
              ("hallo__1.flac", False), ("geneface__zozo.flac", False))
# real footage for the side-by-side close-ups: held-out (test split) clips, large faces
REAL_CLIPS = ("videos/real3dportrait__May_5s.mp4", "videos/latentsync__demo3_video.mp4",
              "videos/hellomeme__tndtc.mp4")


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def second_set(n: int = 10) -> tuple:
  """A second portrait set, disjoint from EVAL_PORTRAITS and chosen by a rule before anything
  was measured on it (every 19th image of ../shared/real/images in name order, from the 8th):
  a check that choices made while looking at the first set hold on faces they were not made on."""
  names = sorted(os.listdir(os.path.join(REAL, "images")))
  return tuple([x for x in names[7::19] if x not in EVAL_PORTRAITS][:n])


def pairs(grid: bool, portraits: tuple = EVAL_PORTRAITS):
  out = []
  for i, img in enumerate(portraits):
    for j, (aud, en) in enumerate(EVAL_AUDIO):
      if grid or i == j:
        out.append((img, aud, en))
  return out


def animate_all(anim, pairs_, vids: str, max_seconds: float) -> list[dict]:
  from vasa_jax import media
  os.makedirs(vids, exist_ok=True)
  rows = []
  for img, aud, en in pairs_:
    path = os.path.join(vids, f"{_stem(img)}__{_stem(aud)}.mp4")
    row = {"video": path, "portrait": img, "audio": aud, "english": en}
    if not os.path.isfile(path):
      a = media.load_audio(os.path.join(REAL, "audio", aud))[:int(max_seconds * 16000)]
      stats: dict = {}
      t0 = time.perf_counter()
      anim.save_stream(os.path.join(REAL, "images", img), (a, 16000), path, stats=stats)
      row["seconds_per_second"] = (time.perf_counter() - t0) / (len(a) / 16000)
      print(f"{os.path.basename(path)}: {row['seconds_per_second']:.2f} s per s of video",
            file=sys.stderr, flush=True)
    rows.append(row)
  return rows


def _judge(py: str, script: str, args: list[str]) -> dict:
  r = subprocess.run([py, os.path.join(JUDGE, script), *args], capture_output=True, text=True)
  lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
  if r.returncode or not lines:
    return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
  return json.loads(lines[-1])


def judge_all(rows, py: str, cache: str) -> list[dict]:
  """Every row's video measured by mouthjudge, avjudge and (English speech) bilabial, each
  video once: results are kept in the JSON-lines `cache` and read back on a rerun."""
  done = {}
  if os.path.isfile(cache):
    for line in open(cache):
      d = json.loads(line)
      done[d["video"]] = d
  with open(cache, "a") as f:
    for row in rows:
      if row["video"] in done:
        row.update({k: v for k, v in done[row["video"]].items() if k not in row})
        continue
      row["mouth"] = _judge(py, "mouthjudge.py", [row["video"]])
      row["av"] = _judge(py, "avjudge.py", [row["video"], "--portrait",
                                            os.path.join(REAL, "images", row["portrait"])])
      if row["english"]:
        row["bilabial"] = _judge(py, "bilabial.py", [row["video"]])
      f.write(json.dumps(row) + "\n")
      f.flush()
      print(f"judged {os.path.basename(row['video'])}", file=sys.stderr, flush=True)
  return rows


def _reference(name: str) -> list[dict]:
  return [json.loads(x) for x in open(os.path.join(JUDGE, name)) if x.strip()]


def _med(rows, key):
  v = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
  return float(np.median(v)) if v else None


def summary(rows) -> dict:
  mref, bref = _reference("mouth_reference.jsonl"), _reference("bilabial_reference.jsonl")
  mouth = [r["mouth"] for r in rows if "error" not in r.get("mouth", {"error": 1})]
  bil = [r["bilabial"] for r in rows if "error" not in r.get("bilabial", {"error": 1})]
  av = [r["av"] for r in rows if "error" not in r.get("av", {"error": 1})]
  q = lambda key, p: float(np.percentile([x[key] for x in mref if key in x], p))
  out = {"videos": len(rows), "criteria": {}, "generated": {}, "real": {}}
  for key in ("open_share", "gap_p90", "dark", "contrast", "grad"):
    g, ref = _med(mouth, key), q(key, 25)
    out["generated"][key], out["real"][f"{key}_p25"] = g, ref
    out["real"][f"{key}_median"] = q(key, 50)
    out["criteria"][f"{key} >= real p25"] = g is not None and g >= ref
  g, ref = _med(mouth, "teeth"), q("teeth", 50)
  out["generated"]["teeth"], out["real"]["teeth_median"] = g, ref
  out["criteria"]["teeth >= real median"] = g is not None and g >= ref
  ratio = lambda xs: [x["teeth_flicker"] / x["teeth"] for x in xs
                      if x.get("teeth", 0) > 0 and "teeth_flicker" in x]
  gr, rr = ratio(mouth), ratio(mref)
  out["generated"]["teeth_flicker_ratio"] = float(np.median(gr)) if gr else None
  out["real"]["teeth_flicker_ratio_median"] = float(np.median(rr))
  out["criteria"]["teeth_flicker/teeth <= 1.5 x real"] = bool(gr) and float(np.median(gr)) <= \
      1.5 * float(np.median(rr))
  out["generated"]["closure"], out["real"]["closure_median"] = _med(bil, "closure"), \
      _med(bref, "closure")
  out["generated"]["vowel_gap"], out["real"]["vowel_gap_median"] = _med(bil, "vowel_gap"), \
      _med(bref, "vowel_gap")
  if bil:
    out["criteria"]["closure <= real median"] = out["generated"]["closure"] <= \
        out["real"]["closure_median"]
    out["criteria"]["vowel_gap >= 0.8 x real"] = out["generated"]["vowel_gap"] >= \
        0.8 * out["real"]["vowel_gap_median"]
  blinks = [x.get("blinks_per_min") for x in av if x.get("blinks_per_min") is not None]
  ok = [5 <= b <= 45 for b in blinks]
  out["generated"]["blinks_per_min_median"] = float(np.median(blinks)) if blinks else None
  out["generated"]["blinks_in_5_45"] = f"{sum(ok)}/{len(ok)}"
  out["criteria"]["blinks 5-45/min in >= 80% of videos"] = bool(ok) and sum(ok) >= 0.8 * len(ok)
  out["generated"]["id_dist_median"] = _med(av, "id_dist")
  out["generated"]["per_portrait_teeth"] = {
      p: _med([r["mouth"] for r in rows if r["portrait"] == p and "mouth" in r], "teeth")
      for p in sorted({r["portrait"] for r in rows})}
  return out


def markdown(s: dict, args) -> str:
  g, r = s["generated"], s["real"]
  f = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
  lines = ["# Mouths and eyes on unseen portraits and speech", "",
           f"{s['videos']} videos: {len(EVAL_PORTRAITS)} portraits"
           f"{' (the second set, tools/part_eval.py:second_set)' if args.portraits == 'second' else ''}"
           f" x {len(EVAL_AUDIO)} speech files of ../shared/real ({'every pair' if args.grid else 'diagonal pairs'}), first "
           f"{args.max_seconds:g} s, bundle defaults. Measured by ../shared/tools/judge "
           "(mediapipe, dlib, pocketsphinx) beside its reference figures on real clips.", "",
           "| figure | generated (median) | real clips | criterion | met |", "|---|---|---|---|---|"]
  rows = [("open_share", "open_share", "open_share_p25", ">= real p25"),
          ("gap_p90", "gap_p90", "gap_p90_p25", ">= real p25"),
          ("dark", "dark", "dark_p25", ">= real p25"),
          ("contrast", "contrast", "contrast_p25", ">= real p25"),
          ("grad", "grad", "grad_p25", ">= real p25"),
          ("teeth", "teeth", "teeth_median", ">= real median"),
          ("teeth_flicker / teeth", "teeth_flicker_ratio", "teeth_flicker_ratio_median",
           "<= 1.5 x real median"),
          ("bilabial closure (English)", "closure", "closure_median", "<= real median"),
          ("vowel gap (English)", "vowel_gap", "vowel_gap_median", ">= 0.8 x real median")]
  crit = list(s["criteria"].values())
  for (name, gk, rk, c), ok in zip(rows, crit[:len(rows)]):
    lines.append(f"| {name} | {f(g.get(gk))} | {f(r.get(rk))} | {c} | {'yes' if ok else 'NO'} |")
  lines.append(f"| blinks / min in 5-45 | {g['blinks_in_5_45']} (median "
               f"{f(g['blinks_per_min_median'])}) | 16-42 at 400 px and up | >= 8 of 10 | "
               f"{'yes' if crit[-1] else 'NO'} |")
  lines += ["", f"Identity distance to the portrait (dlib, median): {f(g['id_dist_median'])}.", "",
            "Teeth share per portrait (median over its videos): " + ", ".join(
                f"{k} {f(v)}" for k, v in g["per_portrait_teeth"].items()) + "."]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- close-ups

def _track(frames):
  from vasa_jax.geometry import landmarks as lm
  mesh = lm.FaceMesh()
  pts = []
  for g in mesh.track(frames, smooth=False):
    pts.append(None if g is None else g.points)
  return pts


def _picks(pts):
  """Frame indices: open mouth, mid-speech, blink, gaze left, gaze right (None if missing)."""
  from vasa_jax.geometry import eyes as eyes_lib
  ok = [i for i, p in enumerate(pts) if p is not None]
  if len(ok) < 10:
    return None
  p = np.stack([pts[i] for i in ok])
  iod = np.linalg.norm(p[:, 263, :2] - p[:, 33, :2], axis=1)
  gap = (p[:, 14, 1] - p[:, 13, 1]) / iod
  lid = eyes_lib.lid_gap(p).mean(1)
  gx = ((p[:, 468, 0] - (p[:, 33, 0] + p[:, 133, 0]) / 2)
        + (p[:, 473, 0] - (p[:, 362, 0] + p[:, 263, 0]) / 2)) / iod
  order = np.argsort(gap)
  return [ok[int(np.argmax(gap))], ok[int(order[len(order) // 2])], ok[int(np.argmin(lid))],
          ok[int(np.argmin(gx))], ok[int(np.argmax(gx))]]


def _tile(frame, p, kind: str, size=(176, 112)):
  import cv2
  iod = float(np.linalg.norm(p[263, :2] - p[33, :2]))
  if kind == "mouth":
    c = (p[13, :2] + p[14, :2]) / 2
    hw, hh = 0.42 * iod, 0.42 * iod * size[1] / size[0]
  else:
    c = p[468, :2] if kind == "eye_a" else p[473, :2]
    hw, hh = 0.24 * iod, 0.24 * iod * size[1] / size[0]
  m = np.float32([[size[0] / (2 * hw), 0, size[0] / 2 - c[0] * size[0] / (2 * hw)],
                  [0, size[1] / (2 * hh), size[1] / 2 - c[1] * size[1] / (2 * hh)]])
  return cv2.warpAffine(frame, m, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _label(img, text):
  import cv2
  img = img.copy()
  cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
  return img


def closeup_rows(video: str, title: str):
  """(mouth row, eyes row) of a video: open mouth, mid-speech, blink, gaze left, gaze right."""
  from vasa_jax import media
  frames = media.read_video(video)
  pts = _track(frames)
  pick = _picks(pts)
  if pick is None:
    return None
  names = ("open", "mid-speech", "blink", "gaze left", "gaze right")
  mouth = [_label(_tile(frames[i], pts[i], "mouth"), f"{title} {n}") for i, n in zip(pick, names)]
  eye = [_label(np.concatenate([_tile(frames[i], pts[i], "eye_a", (88, 112)),
                                _tile(frames[i], pts[i], "eye_b", (88, 112))], 1), n)
         for i, n in zip(pick, names)]
  return np.concatenate(mouth, 1), np.concatenate(eye, 1)


def sheets(rows, out_dir: str) -> None:
  import cv2
  seen, gen = set(), []
  for r in rows:
    if r["portrait"] in seen or len(gen) >= 6:
      continue
    out = closeup_rows(r["video"], _stem(r["portrait"])[:14])
    if out is not None:
      seen.add(r["portrait"])
      gen.append(out)
  real = [x for x in (closeup_rows(os.path.join(REAL, v), "REAL " + _stem(v)[:9])
                      for v in REAL_CLIPS) if x is not None]
  for k, name in ((0, "mouth"), (1, "eyes")):
    # generated rows, then the real-footage rows at the same tile size
    body = [g[k] for g in gen] + [np.full((6, gen[0][k].shape[1], 3), 255, np.uint8)] + \
        [x[k] for x in real]
    cv2.imwrite(os.path.join(out_dir, f"closeups_{name}.png"),
                np.concatenate(body, 0)[..., ::-1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--checkpoint", default=None)
  p.add_argument("--grid", action="store_true", help="every portrait x every speech file")
  p.add_argument("--max-seconds", type=float, default=10.0)
  p.add_argument("--judge", default=os.path.expanduser("~/.cache/vasa-judge-venv/bin/python"),
                 help="the judge environment's python (../shared/tools/judge/setup.sh)")
  p.add_argument("--work", default=None,
                 help="where the videos go (default OUT/videos; keep them out of git)")
  p.add_argument("--no-sheets", action="store_true")
  p.add_argument("--limit", type=int, default=None, help="only the first N pairs (smoke runs)")
  p.add_argument("--portraits", choices=("first", "second"), default="first",
                 help="first: EVAL_PORTRAITS; second: `second_set()`, disjoint from them")
  args = p.parse_args(argv)
  from vasa_jax import animate as an
  anim = an.Animator(args.checkpoint)
  os.makedirs(args.out, exist_ok=True)
  work = args.work or os.path.join(args.out, "videos")
  portraits = second_set() if args.portraits == "second" else EVAL_PORTRAITS
  rows = animate_all(anim, pairs(args.grid, portraits)[:args.limit], work, args.max_seconds)
  rows = judge_all(rows, args.judge, os.path.join(work, "judge.jsonl"))
  s = summary(rows)
  s["speed_s_per_s"] = _med(rows, "seconds_per_second")
  with open(os.path.join(args.out, "part_eval.json"), "w") as f:
    json.dump({"summary": s, "videos": rows}, f, indent=1)
  with open(os.path.join(args.out, "part_eval.md"), "w") as f:
    f.write(markdown(s, args))
  if not args.no_sheets:
    sheets(rows, args.out)
  print(json.dumps(s, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

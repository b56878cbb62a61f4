r"""Do the controls act? Each control asked on many portraits, measured on the output.

    vasa-jax eval controls [--checkpoint BUNDLE] [--real ../shared/real] [--portraits N]
        [--seconds 6] [--steps 10] [--seed 0] [--out docs/motion_eval/controls] [--videos DIR]

Every portrait (a photo, painting, statue or drawing of ../shared/real/images) speaks a
different real speech file (../shared/real/audio) once freely and once per asked control. The
output is measured by the tracker that measured the real footage (vasa_jax.eval.motion.Measurer:
face mesh + iris, the bundle's face basis), and each asked run is compared with the same
portrait and seed asked nothing (or asked the opposite):

  gaze        --gaze -15,0 vs --gaze 15,0 (and 0,-10 vs 0,10): the measured main gaze (head
              rotation + eye-in-head rotation from the irises; data.pipeline.window_controls) and
              the eye-in-head rotation alone, degrees. Pass: theta(-15) < theta(+15).
  distance    --distance 0.55 vs 0.75 m: the face's size in the frame (outer eye-corner distance,
              px) and the head distance measured from it. Pass: the near face is bigger.
  emotion     happy vs sad: lip-corner lift and brow height on the canonical mesh (eye-corner
              distances, + = up); lip-sync kept: the mouth gap's correlation with the audio
              envelope and its spread, next to the free run's, and the correlation of the
              mouth-gap track with the free run's (mouth_vs_free_r: the same seed samples the
              same speech motion, so 1 means the emotion left the lips' motion as it was).
              Pass: the corners are higher for happy than for sad by at least EMOTION_MIN,
              and neither run's mouth-audio r is more than 10% below the free run's (absolute
              0.03 where the free r is small). A higher r is lip-sync kept, not lost; the
              symmetric count (within 10% either way) is reported beside it
              (emotion_sync_within).
  head_motion --head-motion 0 and 1: head-rotation spread (std of yaw, pitch, roll, mean of
              the three, degrees), read two ways: from the face mesh (rot_std, as for the
              footage) and from the pixels (rot_std_px: the skull points followed by optical
              flow, a rigid body fitted; geometry.tracking.pixel_rotation). The mesh network
              reads about 0.6 degrees of rotation on a talking face whose upper face does not
              move at all (docs/motion_eval/still_head.md), so the pass uses the pixels.
              Pass for 0: rot_std_px under 0.5 degrees.

Writes OUT/controls.json (per portrait, the asks, the pass counts), OUT/controls.md and
OUT/controls_sheet.png (a row per portrait: each ask's frame at 2.5 s, labelled).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from vasa_jax.constants import FPS, SAMPLE_RATE

# Ten portraits of different kinds (photos, painting, statue, drawing, AI faces).
PORTRAITS = ("aaai22osf__AdamSchiff_0.jpg", "aniportrait__lyl.jpg", "aaai22osf__monalisa.jpg",
             "anitalker__Einstein.png", "aaai22osf__s2.jpg", "aniportrait__Aragaki.png",
             "anitalker__aiface1.jpg", "aaai22osf__d1.jpg", "anitalker__girl.png",
             "aaai22osf__o1.jpg")
ASKS = (("none", None), ("gaze", (-15.0, 0.0)), ("gaze", (15.0, 0.0)),
        ("gaze", (0.0, -10.0)), ("gaze", (0.0, 10.0)),
        ("distance", 0.55), ("distance", 0.75),
        ("emotion", "happy"), ("emotion", "sad"),
        ("head_motion", 0.0))
EMOTION_MIN = 0.005           # eye-corner distances: a corner-lift difference one can measure
SYNC_TOLERANCE = 0.10         # emotion keeps lip-sync: r at most 10% below the free run's
SYNC_FLOOR = 0.03             # ... or within this absolute margin when the free r is small
STILL_DEG = 0.5               # --head-motion 0: head-rotation spread under this
SHEET_AT_S = 2.5              # the contact sheet shows each output's frame at this time
SHEET_TILE = 160


def _tile(frame: np.ndarray, label: str) -> np.ndarray:
  import cv2
  t = cv2.resize(np.ascontiguousarray(frame), (SHEET_TILE, SHEET_TILE),
                 interpolation=cv2.INTER_AREA)
  cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
  return t


def measure_run(measure, frames: np.ndarray, audio: np.ndarray) -> dict:
  """The figures of one output (frames uint8 [T, S, S, 3]) with its audio."""
  from vasa_jax.data import pipeline
  from vasa_jax.eval import motion as motion_eval
  from vasa_jax.eval import metrics
  codes, canon, found = measure(frames)
  if codes is None:
    return {"face_found": 0.0}
  gaze, dist = pipeline.window_controls(codes)
  gap = metrics.mouth_gap(canon)
  r, _ = metrics.lagged_corr(gap, metrics.envelope(audio, len(gap)))
  ang = np.degrees(codes[:, :3].astype(np.float64))
  return {"face_found": found, "_gap": gap,
          "gaze_deg": [float(x) for x in np.degrees(gaze)],
          "eye_deg": [float(x) for x in np.degrees(codes[:, -2:].mean(0))],
          "distance": float(dist),
          "face_px": float(metrics.eye_corner_distance(measure.points).mean()),
          "rot_std": float(ang.std(0).mean()),
          "rot_std_px": motion_eval.pixel_rot_std(frames, measure.points[0]),
          "mouth_std": float(100 * gap.std()),
          "mouth_audio_r": float(r) if np.isfinite(r) else None,
          **motion_eval.expression_measures(canon)}


def _key(name, value) -> str:
  if value is None:
    return name
  if isinstance(value, tuple):
    return f"{name} {value[0]:g},{value[1]:g}"
  return f"{name} {value}" if isinstance(value, str) else f"{name} {value:g}"


def verdicts(runs: dict) -> dict:
  """Pass / fail of each control for one portrait's runs {key: figures}."""
  def get(k, f):
    return runs.get(k, {}).get(f)
  out = {}
  a, b = get("gaze -15,0", "gaze_deg"), get("gaze 15,0", "gaze_deg")
  if a and b:
    out["gaze_theta"] = bool(a[0] < b[0])
    ea, eb = get("gaze -15,0", "eye_deg"), get("gaze 15,0", "eye_deg")
    out["iris_theta"] = bool(ea[0] < eb[0])
  a, b = get("gaze 0,-10", "gaze_deg"), get("gaze 0,10", "gaze_deg")
  if a and b:
    out["gaze_phi"] = bool(a[1] < b[1])
  a, b = get("distance 0.55", "face_px"), get("distance 0.75", "face_px")
  if a and b:
    out["distance"] = bool(a > b)
  h, s, n = get("emotion happy", "corner_lift"), get("emotion sad", "corner_lift"), \
      get("none", "mouth_audio_r")
  if h is not None and s is not None and n is not None:
    tol = max(SYNC_TOLERANCE * abs(n), SYNC_FLOOR)
    rs = [get(k, "mouth_audio_r") for k in ("emotion happy", "emotion sad")]
    sync_ok = all(r is not None and r >= n - tol for r in rs)
    out["emotion_sync_within"] = bool(all(r is not None and abs(r - n) <= tol for r in rs))
    out["emotion"] = bool(h - s >= EMOTION_MIN)
    out["emotion_sync_kept"] = bool(sync_ok)
  still = get("head_motion 0", "rot_std_px")
  if still is not None:
    out["head_still"] = bool(still < STILL_DEG)
  return out


def evaluate(anim, portraits, audios, *, seconds: float = 6.0, steps: int = 10, seed: int = 0,
             asks=ASKS, progress=None, video_dir: str | None = None) -> dict:
  """video_dir: also write every output there (PORTRAIT__ASK.mp4, with its audio), e.g. for
  ../shared/tools/judge."""
  from vasa_jax import media
  from vasa_jax.eval import motion as motion_eval
  measure = motion_eval.Measurer(anim.basis)
  rows, sheet = [], []
  t0 = time.perf_counter()
  for n, (image, audio_path) in enumerate(zip(portraits, audios)):
    audio = np.asarray(media.as_audio(audio_path, SAMPLE_RATE), np.float32).reshape(-1)
    audio = audio[:int(seconds * SAMPLE_RATE)]
    portrait = anim.prepare_portrait(image, crop_only=True)
    runs, tiles = {}, []
    for name, value in asks:
      kw = {} if value is None else {name: value}
      frames, _ = motion_eval.generate(anim, portrait, audio, steps=steps, seed=seed, **kw)
      frames = frames[:int(len(audio) * FPS / SAMPLE_RATE)]
      runs[_key(name, value)] = measure_run(measure, frames, audio)
      tiles.append(_tile(frames[int(SHEET_AT_S * FPS) % len(frames)], _key(name, value)))
      if video_dir:
        os.makedirs(video_dir, exist_ok=True)
        tag = _key(name, value).replace(" ", "_").replace(",", "_")
        media.write_video(os.path.join(video_dir, f"{os.path.splitext(os.path.basename(image))[0]}"
                                                  f"__{tag}.mp4"), frames, audio=audio)
    free_gap = runs.get("none", {}).get("_gap")
    for key, run in runs.items():
      gap = run.pop("_gap", None)
      if key.startswith("emotion") and gap is not None and free_gap is not None:
        n = min(len(gap), len(free_gap))
        run["mouth_vs_free_r"] = float(np.corrcoef(gap[:n], free_gap[:n])[0, 1])
    rows.append({"portrait": os.path.basename(image), "audio": os.path.basename(audio_path),
                 "runs": runs, "pass": verdicts(runs)})
    sheet.append(np.concatenate(tiles, 1))
    if progress is not None:
      progress(n + 1, len(portraits))
  names = sorted({k for r in rows for k in r["pass"]})
  counts = {k: f"{sum(r['pass'].get(k, False) for r in rows)}/"
               f"{sum(k in r['pass'] for r in rows)}" for k in names}
  def mean_of(key, fig):
    v = [r["runs"].get(key, {}).get(fig) for r in rows]
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None
  return {"portraits": len(rows), "seconds": seconds, "steps": steps, "seed": seed,
          "passes": counts,
          "rot_std_still": mean_of("head_motion 0", "rot_std"),
          "rot_std_free": mean_of("none", "rot_std"),
          "rot_std_px_still": mean_of("head_motion 0", "rot_std_px"),
          "rot_std_px_free": mean_of("none", "rot_std_px"),
          "elapsed_s": round(time.perf_counter() - t0, 1), "per_portrait": rows,
          "sheet": np.concatenate(sheet, 0) if sheet else None}


def markdown(rep: dict) -> str:
  def f(v, nd=1):
    if v is None:
      return "-"
    if isinstance(v, (list, tuple)):
      return "(" + ", ".join(f"{x:.{nd}f}" for x in v) + ")"
    return f"{v:.{nd}f}"
  lines = [f"# Controls on {rep['portraits']} portraits",
           "",
           f"{rep['seconds']:g} s of a different real speech file per portrait, {rep['steps']} "
           f"DDIM steps, seed {rep['seed']}; measured on the output by the face mesh + iris "
           "tracker (vasa_jax/eval/controls.py).",
           "",
           "| control | passes |", "|---|---|"]
  lines += [f"| {k} | {v} |" for k, v in rep["passes"].items()]
  lines += ["", f"Head-rotation spread from the pixels: {f(rep.get('rot_std_px_free'), 2)} deg "
                f"free, {f(rep.get('rot_std_px_still'), 2)} deg with --head-motion 0 (from the "
                f"face mesh: {f(rep['rot_std_free'], 2)} and {f(rep['rot_std_still'], 2)}; what "
                "each reader gives a talking face whose upper face is still is measured by "
                "tools/still_head.py, docs/motion_eval/still_head.md).", ""]
  sync = sync_summary(rep)
  track = [r["runs"][k].get("mouth_vs_free_r") for r in rep["per_portrait"]
           for k in ("emotion happy", "emotion sad") if k in r["runs"]]
  track = [t for t in track if t is not None]
  if track:
    lines += [f"Mouth-gap track under happy / sad vs the free run (same speech motion): r mean "
              f"{np.mean(track):.3f}, min {np.min(track):.3f}.", ""]
  if sync:
    lines += ["Lip-sync under an emotion, means over the portraits: " + "; ".join(
        f"{k}: mouth-audio r {v['mouth_audio_r']:.3f}, mouth std {v['mouth_std']:.2f}"
        for k, v in sync.items()), ""]
  lines += [
            "| portrait | ask | main gaze (deg) | eye-in-head (deg) | face (px) | distance (m) "
            "| corner lift | brow height | mouth std | mouth-audio r | rot std mesh | rot std px |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rep["per_portrait"]:
    for k, m in r["runs"].items():
      lines.append(f"| {r['portrait'][:24]} | {k} | {f(m.get('gaze_deg'))} | "
                   f"{f(m.get('eye_deg'))} | {f(m.get('face_px'))} | {f(m.get('distance'), 3)} | "
                   f"{f(m.get('corner_lift'), 3)} | {f(m.get('brow_height'), 3)} | "
                   f"{f(m.get('mouth_std'), 2)} | {f(m.get('mouth_audio_r'), 2)} | "
                   f"{f(m.get('rot_std'), 2)} | {f(m.get('rot_std_px'), 2)} |")
  return "\n".join(lines) + "\n"


def sync_summary(rep: dict) -> dict:
  """Mean mouth-audio r and mouth spread of the free, happy and sad runs over the portraits."""
  out = {}
  for key in ("none", "emotion happy", "emotion sad"):
    rows = [r["runs"][key] for r in rep["per_portrait"] if r["runs"].get(key, {}).get(
        "mouth_audio_r") is not None]
    if rows:
      out[key] = {f: float(np.mean([x[f] for x in rows])) for f in ("mouth_audio_r", "mouth_std")}
  return out


def default_inputs(real: str, n: int):
  """n portraits of PORTRAITS and n speech files spread over REAL/audio (sorted names)."""
  images = [os.path.join(real, "images", p) for p in PORTRAITS[:n]]
  auds = sorted(os.listdir(os.path.join(real, "audio")))
  auds = [os.path.join(real, "audio", a) for a in auds[::max(1, len(auds) // n)][:n]]
  missing = [p for p in images + auds if not os.path.exists(p)]
  if missing or len(images) < n or len(auds) < n:
    raise FileNotFoundError(f"missing inputs under {real}: {missing[:1] or 'too few files'}")
  return images, auds


def _parser():
  p = argparse.ArgumentParser(prog="vasa-jax eval controls",
                              description="Gaze, distance, emotion and head-motion controls "
                                          "asked on many portraits and measured on the output "
                                          "(see vasa_jax/eval/controls.py).")
  p.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  p.add_argument("--real", default=os.path.join("..", "shared", "real"),
                 help="folder with images/ and audio/ (default ../shared/real)")
  p.add_argument("--portraits", type=int, default=10, help=f"how many (1-{len(PORTRAITS)})")
  p.add_argument("--seconds", type=float, default=6.0)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=os.path.join("docs", "motion_eval", "controls"))
  p.add_argument("--videos", default=None, help="also write every output video into this folder")
  return p


def main(argv=None) -> int:
  from vasa_jax import animate as an
  from vasa_jax import config_utils
  args = _parser().parse_args(argv)
  try:
    if not 1 <= args.portraits <= len(PORTRAITS) or args.seconds <= 0 or args.steps < 1:
      raise config_utils.InputError(f"--portraits must be in 1-{len(PORTRAITS)}, --seconds > 0, "
                                    "--steps >= 1")
    images, auds = default_inputs(args.real, args.portraits)
    anim = an.Animator(args.checkpoint)
    from vasa_jax.progress import Bar
    rep = evaluate(anim, images, auds, seconds=args.seconds, steps=args.steps, seed=args.seed,
                   progress=Bar(None, "portraits"), video_dir=args.videos)
  except (config_utils.InputError, an.AnimateError, FileNotFoundError, ValueError) as e:
    print(f"vasa-jax eval: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  sheet = rep.pop("sheet")
  if sheet is not None:
    import cv2
    cv2.imwrite(os.path.join(args.out, "controls_sheet.png"),
                cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
  with open(os.path.join(args.out, "controls.json"), "w") as f:
    json.dump(rep, f, indent=1)
  with open(os.path.join(args.out, "controls.md"), "w") as f:
    f.write(markdown(rep))
  print(json.dumps({k: rep[k] for k in ("portraits", "passes", "rot_std_px_free", "rot_std_px_still",
                                        "rot_std_free", "rot_std_still",
                                        "elapsed_s")}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())

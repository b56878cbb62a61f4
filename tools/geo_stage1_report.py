"""Figures and contact sheets of the geometry-grounded stage 1 (docs/stage1_eval).

    python tools/geo_stage1_report.py curve --workdir RUN/face_geo --out docs/stage1_eval
    python tools/geo_stage1_report.py cross --bundle vasa_jax/assets/demo --out docs/stage1_eval
    python tools/geo_stage1_report.py audio --bundle vasa_jax/assets/demo --out OUT_DIR

curve  the training curve of a mouth-compositor run (RUN/curve.jsonl): loss, critic hinge, and
       the L1 inside the opening and over the patch, compositor vs the donor reference pasted
       as it is vs the geometry-only warp; PNG + JSON.
cross  cross-reenactment grid: portraits (photos, a painting, a statue) x driving clips of the
       real test split, three moments each; one row per portrait, with the driver on top.
audio  audio-driven: N portraits x N speech files through Animator.save_stream (mp4s into
       OUT_DIR/videos), a frame sheet and a mouth / eye close-up sheet, and the share of frames
       where a face is found on the output (our face mesh).
compare medians of ../shared/tools/judge/avjudge.py figures of generated videos next to its
       real_reference.jsonl (real clips measured the same way).

No matplotlib here: the plot is drawn with OpenCV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "real")

# Portraits of the cross-reenactment grid and of the audio-driven runs (../shared/real/images).
CROSS_PORTRAITS = ("aaai22osf__AdamSchiff_0.jpg", "aniportrait__lyl.jpg",
                   "aaai22osf__monalisa.jpg", "anitalker__Einstein.png", "aaai22osf__s2.jpg")
AUDIO_PORTRAITS = ("aaai22osf__AdamSchiff_0.jpg", "aniportrait__lyl.jpg",
                   "aaai22osf__monalisa.jpg", "anitalker__Einstein.png", "aaai22osf__s2.jpg",
                   "aniportrait__Aragaki.png", "anitalker__aiface1.jpg", "aaai22osf__d1.jpg",
                   "anitalker__girl.png", "aaai22osf__o1.jpg")


def _cv2():
  import cv2
  return cv2


def _label(img, text, scale=0.45):
  cv2 = _cv2()
  img = np.ascontiguousarray(img)
  cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
  cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
              cv2.LINE_AA)
  return img


def _tile(img, side):
  cv2 = _cv2()
  h, w = img.shape[:2]
  s = side / max(h, w)
  img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
  out = np.full((side, side, 3), 255, np.uint8)
  y, x = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
  out[y:y + img.shape[0], x:x + img.shape[1]] = img
  return out


def _write(path, rgb):
  cv2 = _cv2()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  if path.endswith(".png"):
    cv2.imwrite(path, rgb[..., ::-1])
  else:
    cv2.imwrite(path, rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
  print(path)


# ----------------------------------------------------------------------------- curve

def _plot(series, title, w=640, h=300, ylabel=""):
  """series: [(label, xs, ys, bgr)] -> an RGB line plot."""
  cv2 = _cv2()
  img = np.full((h, w, 3), 255, np.uint8)
  l, r, t, b = 60, 150, 24, 34
  xs = np.concatenate([s[1] for s in series])
  ys = np.concatenate([s[2] for s in series])
  x0, x1 = float(xs.min()), float(xs.max()) or 1.0
  y0, y1 = float(np.percentile(ys, 1)), float(np.percentile(ys, 99.5))
  pad = (y1 - y0) * 0.05 or 1e-3
  y0, y1 = y0 - pad, y1 + pad

  def px(x, y):
    return (int(l + (x - x0) / max(x1 - x0, 1e-9) * (w - l - r)),
            int(t + (1 - (y - y0) / (y1 - y0)) * (h - t - b)))
  cv2.rectangle(img, (l, t), (w - r, h - b), (0, 0, 0), 1)
  for k in range(5):
    yv = y0 + (y1 - y0) * k / 4
    p = px(x0, yv)
    cv2.putText(img, f"{yv:.3g}", (4, p[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    xv = x0 + (x1 - x0) * k / 4
    q = px(xv, y0)
    cv2.putText(img, f"{xv:.0f}", (q[0] - 16, h - b + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (0, 0, 0), 1)
  for n, (name, sx, sy, col) in enumerate(series):
    pts = np.array([px(a, c) for a, c in zip(sx, np.clip(sy, y0, y1))], np.int32)
    cv2.polylines(img, [pts], False, col, 1, cv2.LINE_AA)
    cv2.line(img, (w - r + 8, t + 12 + 16 * n), (w - r + 24, t + 12 + 16 * n), col, 2)
    cv2.putText(img, name, (w - r + 28, t + 16 + 16 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                (0, 0, 0), 1)
  cv2.putText(img, title, (l, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
  cv2.putText(img, "step", (w // 2 - 40, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
  return img[..., ::-1].copy()


def _smooth(y, k=9):
  if len(y) < k:
    return y
  pad = np.pad(y, (k // 2, k - 1 - k // 2), mode="edge")
  return np.convolve(pad, np.ones(k) / k, mode="valid")


def curve(args):
  rows = [json.loads(s) for s in open(os.path.join(args.workdir, "curve.jsonl"))]
  seen = {}
  for r in rows:                       # a resumed run may repeat steps: keep the last
    seen[r["step"]] = r
  rows = [seen[k] for k in sorted(seen)]
  step = np.array([r["step"] for r in rows], float)

  def col(k):
    return np.array([r.get(k, np.nan) for r in rows], float)
  a = _plot([("total", step, _smooth(col("loss/mouth_total")), (200, 60, 20)),
             ("critic hinge", step, _smooth(col("disc/hinge")), (60, 60, 200))],
            "mouth compositor: training loss, and the patch critic's hinge")
  b = _plot([("composite", step, _smooth(col("loss/mouth_interior")), (200, 60, 20)),
             ("pasted ref", step, _smooth(col("loss/mouth_interior_paste")), (60, 60, 200))],
            "L1 inside the mouth opening (-1..1 units): compositor vs reference pasted as is")
  c = _plot([("composite", step, _smooth(col("loss/mouth_l1")), (200, 60, 20)),
             ("pasted ref", step, _smooth(col("loss/mouth_l1_paste")), (60, 60, 200)),
             ("warp only", step, _smooth(col("loss/mouth_l1_warp")), (40, 160, 40))],
            "L1 over the mouth patch")
  _write(os.path.join(args.out, "geo_convergence.png"), np.concatenate([a, b, c], 0))
  keep = ("loss/mouth_total", "loss/mouth_l1", "loss/mouth_l1_paste", "loss/mouth_l1_warp",
          "loss/mouth_interior", "loss/mouth_interior_paste", "loss/mouth_ssim",
          "loss/mouth_gan", "loss/mouth_feature_matching", "disc/hinge")
  every = max(1, len(rows) // 40)
  table = [{"step": int(r["step"]), **{k: r.get(k) for k in keep}} for r in rows[::every]]
  if rows and table[-1]["step"] != rows[-1]["step"]:
    table.append({"step": int(rows[-1]["step"]), **{k: rows[-1].get(k) for k in keep}})
  path = os.path.join(args.out, "geo_convergence.json")
  with open(path, "w") as f:
    json.dump({"workdir_curve": "curve.jsonl of the run behind the bundle "
               "(tools/train_demo_weights.sh)", "rows": table}, f, indent=1)
  print(path)


# ----------------------------------------------------------------------------- cross

def _test_videos(n):
  """The first n clips of ../shared/real/videos whose identity the real builder puts in the
  identity-disjoint test split (INVENTORY.tsv identities, test_fraction 0.1)."""
  from vasa_jax.data import records, video
  ids = video.read_identity_map(os.path.join(REAL, "INVENTORY.tsv"))
  vids = sorted(os.listdir(os.path.join(REAL, "videos")))
  picks = []
  for v in vids:
    ident = ids.get(v) or ids.get("videos/" + v) or ids.get(os.path.splitext(v)[0])
    if ident is not None and records.is_test_identity(ident, 0.1):
      picks.append(os.path.join(REAL, "videos", v))
  return picks[:n]


def cross(args):
  from vasa_jax import animate as an
  from vasa_jax import media
  anim = an.Animator(args.bundle)
  drivers = args.drivers.split(",") if args.drivers else _test_videos(4)
  drivers = [d if os.path.isabs(d) or os.path.exists(d) else os.path.join(REAL, "videos", d)
             for d in drivers]
  side = 160
  moments = (0.3, 0.55, 0.8)
  rows = []
  head = [_label(np.full((side, side, 3), 255, np.uint8), "portrait")]
  sel = []
  import tempfile
  tmp = tempfile.mkdtemp(prefix="geo_cross_")
  cut = []
  for d in drivers:
    frames = [f for i, f in zip(range(int(args.seconds * an.FPS)), media.iter_video(d, fps=an.FPS))]
    idx = [int(m * (len(frames) - 1)) for m in moments]
    sel.append(idx)
    cut.append(os.path.join(tmp, os.path.basename(d)))      # the first `seconds` of the driver
    media.write_video(cut[-1], frames, fps=an.FPS)
    head += [_label(_tile(frames[k], side), f"{os.path.basename(d)[:18]} {k}") for k in idx]
  rows.append(np.concatenate(head, 1))
  for p in args.portraits.split(","):
    path = p if os.path.exists(p) else os.path.join(REAL, "images", p)
    portrait = anim.prepare_portrait(path, crop_only=True)
    row = [_label(_tile(portrait.image if portrait.image is not None else portrait.crop, side), os.path.basename(path)[:18])]
    for d, idx in zip(cut, sel):
      out = anim.reenact(portrait, d).frames
      row += [_tile(out[min(k, len(out) - 1)], side) for k in idx]
    rows.append(np.concatenate(row, 1))
    print(path, file=sys.stderr)
  _write(os.path.join(args.out, "geo_cross_reenactment.jpg"), np.concatenate(rows, 0))


# ----------------------------------------------------------------------------- audio

def _head(path, seconds):
  """The first `seconds` of an audio file, 16 kHz mono float32."""
  from vasa_jax import media
  return np.asarray(media.as_audio(path, 16000), np.float32).reshape(-1)[:int(seconds * 16000)]


def audio(args):
  from vasa_jax import animate as an
  from vasa_jax import media
  from vasa_jax.geometry import landmarks as lm
  anim = an.Animator(args.bundle)
  mesh = lm.FaceMesh()
  portraits = [os.path.join(REAL, "images", p) for p in AUDIO_PORTRAITS[:args.n]]
  auds = sorted(os.listdir(os.path.join(REAL, "audio")))
  auds = [os.path.join(REAL, "audio", a) for a in auds[::max(1, len(auds) // args.n)][:args.n]]
  os.makedirs(os.path.join(args.out, "videos"), exist_ok=True)
  rows, close, summary = [], [], []
  for n, (p, a) in enumerate(zip(portraits, auds)):
    out = os.path.join(args.out, "videos", f"{n:02d}_{os.path.splitext(os.path.basename(p))[0]}.mp4")
    stats: dict = {}
    anim.save_stream(p, _head(a, args.seconds), out, stats=stats)
    frames = np.stack(list(media.iter_video(out, fps=an.FPS)))[:int(args.seconds * an.FPS)]
    tracked = list(mesh.track(frames, smooth=False))
    found = np.array([g is not None for g in tracked])
    gaps = np.array([(g.points[14, 1] - g.points[13, 1]) /
                     np.linalg.norm(g.points[263, :2] - g.points[33, :2]) if g is not None
                     else np.nan for g in tracked])
    summary.append({"portrait": os.path.basename(p), "audio": os.path.basename(a),
                    "video": out, "frames": int(len(frames)), "face_found": float(found.mean()),
                    "mouth_gap_std": float(np.nanstd(gaps)),
                    "mouth_gap_max": float(np.nanmax(gaps)) if found.any() else None,
                    "first_frame_s": stats.get("first_frame_s")})
    k = np.linspace(0, len(frames) - 1, 6).astype(int)
    rows.append(np.concatenate([_label(_tile(frames[k[0]], 160), os.path.basename(p)[:18])]
                               + [_tile(frames[i], 160) for i in k[1:]], 1))
    # close-ups: mouth and left eye of 8 frames with the widest / narrowest mouth
    ok = np.where(found)[0]
    if len(ok):
      order = ok[np.argsort(gaps[ok])]
      pick = np.concatenate([order[:3], order[len(order) // 2:len(order) // 2 + 2], order[-3:]])
      tiles = []
      for i in pick:
        pts = tracked[i].points
        for idx, grow in ((lm.MOUTH_IDX if hasattr(lm, "MOUTH_IDX") else
                           (61, 291, 0, 17, 13, 14), 0.5), ((33, 133, 159, 145), 0.8)):
          q = pts[list(idx), :2]
          c = q.mean(0)
          half = max(np.ptp(q[:, 0]), np.ptp(q[:, 1])) * (0.5 + grow)
          x0, y0 = np.clip((c - half).astype(int), 0, None)
          x1, y1 = (c + half).astype(int)
          tiles.append(_tile(frames[i][y0:y1, x0:x1], 96))
      close.append(np.concatenate(tiles, 1))
    print(json.dumps(summary[-1]), file=sys.stderr)
  _write(os.path.join(args.out, "audio_frames.jpg"), np.concatenate(rows, 0))
  if close:
    _write(os.path.join(args.out, "audio_closeups.jpg"), np.concatenate(close, 0))
  with open(os.path.join(args.out, "audio_summary.json"), "w") as f:
    json.dump({"face_found_mean": float(np.mean([s["face_found"] for s in summary])),
               "runs": summary}, f, indent=1)
  print(json.dumps({"face_found_mean": float(np.mean([s["face_found"] for s in summary])),
                    "mouth_gap_std_mean": float(np.mean([s["mouth_gap_std"] for s in summary]))}))


# ----------------------------------------------------------------------------- compare

JUDGE_KEYS = ("detect", "id_dist", "mouthcorr", "yaw_std", "pitch_std", "rot_speed",
              "blinks_per_min", "brow_std", "jitter")


def compare(args):
  """Medians of ../shared/tools/judge figures: generated videos next to the real reference."""
  def load(path):
    return [json.loads(s) for s in open(path) if s.strip()]
  gen, real = load(args.generated), load(args.real)
  out = {}
  for k in JUDGE_KEYS:
    g = [r[k] for r in gen if isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
    q = [r[k] for r in real if isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
    out[k] = {"generated_median": round(float(np.median(g)), 4) if g else None,
              "real_median": round(float(np.median(q)), 4) if q else None,
              "real_range": [round(float(np.min(q)), 4), round(float(np.max(q)), 4)] if q else None}
  out["videos"] = {"generated": len(gen), "real": len(real)}
  print(json.dumps(out, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=1)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="what", required=True)
  c = sub.add_parser("curve")
  c.add_argument("--workdir", required=True)
  c.add_argument("--out", default="docs/stage1_eval")
  x = sub.add_parser("cross")
  x.add_argument("--bundle", default=None)
  x.add_argument("--portraits", default=",".join(CROSS_PORTRAITS))
  x.add_argument("--drivers", default="")
  x.add_argument("--seconds", type=float, default=4.0)
  x.add_argument("--out", default="docs/stage1_eval")
  a = sub.add_parser("audio")
  a.add_argument("--bundle", default=None)
  a.add_argument("--n", type=int, default=10)
  a.add_argument("--seconds", type=float, default=8.0)
  a.add_argument("--out", required=True)
  m = sub.add_parser("compare")
  m.add_argument("--generated", required=True, help="avjudge.py output (JSON lines)")
  m.add_argument("--real", default=os.path.join(REAL, "..", "tools", "judge",
                                               "real_reference.jsonl"))
  m.add_argument("--out", default="")
  args = p.parse_args(argv)
  {"curve": curve, "cross": cross, "audio": audio, "compare": compare}[args.what](args)


if __name__ == "__main__":
  main()

"""Stage-1 evaluation of a geometry-grounded bundle: self-reenactment on held-out clips.

    vasa-jax eval reenact --checkpoint BUNDLE --data-dir DATA --dataset motion_latents/geo:test \\
        [--only talking_face_videos] [--max-clips N] [--out docs/stage1_eval]

For every clip of the split, its first frame is the portrait and the clip's own measured motion
(pose + dynamics codes per frame) drives it; the output is compared with the true frames:

  psnr, ssim            over the whole aligned crop, and over the face (the true frame's mesh
                        box) -- "face crop" in the tables
  mouth_l1              mean absolute error (0-255) in the mouth box of the true frame
  eye_l1                the same in the boxes of both eyes (lids and brows' lower edge)
  landmark_dist         mean distance of the 468 mesh points measured on the output (the same
                        face mesh, no smoothing) to those of the true frame, % of the eye-corner
                        distance
  mouth_r               correlation over the clip of the output's mouth opening with the true
                        frame's (both measured by the mesh); clips whose mouth barely moves
                        (std < 1% of the eye-corner distance) are left out of it
  mouth_gain            slope of the output's mouth opening regressed on the true frame's over
                        the clip (same clips): 1 when the output opens as far as the driver,
                        below 1 when it realises only part of each opening
  render_gain           the same slope against the driving mesh the renderer was asked for
                        (decoded from the codes): what the renderer realises of each asked
                        opening, apart from what the codes themselves lose (asked_gain: the
                        driving mesh's opening against the true frame's)
  identity_dist         dlib face-recognition distance of output frames to the portrait
                        (< 0.6: same person; vasa_jax.eval.identity)

Each figure is also given for the baseline "repeat the first frame" (baseline_*) and for the
plain mesh warp of the photo with no part renderer (no eye layer, no closed lids, no mouth
reference or compositor: warp_*), measured the same way.
Writes geometry_reenact.json (per clip and means), geometry_reenact_sheet.jpg (true over
output frames of a few clips) and geometry_reenact_closeups.png (per clip, six frames from
closed to open mouth: true | output mouth over true | output eye) into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from vasa_jax.data.records import text as _text
from vasa_jax.eval.metrics import mouth_gap
from vasa_jax.errors import InputError

log = logging.getLogger(__name__)



def _box(points, size, grow=0.1, idx=None):
  p = np.asarray(points)[:468 if idx is None else None, :2]
  p = p if idx is None else np.asarray(points)[list(idx), :2]
  lo, hi = p.min(0), p.max(0)
  pad = (hi - lo) * grow
  lo = np.clip(np.floor(lo - pad), 0, size - 1).astype(int)
  hi = np.clip(np.ceil(hi + pad), 1, size).astype(int)
  return lo[0], lo[1], hi[0], hi[1]


def _mouth_box(points, size):
  from vasa_jax.geometry.flow import OUTER_LIPS
  x0, y0, x1, y1 = _box(points, size, grow=0.25, idx=OUTER_LIPS)
  return x0, y0, max(x1, x0 + 8), max(y1, y0 + 8)


def _eye_boxes(points, size):
  from vasa_jax.geometry.landmarks import EYE_A_CONTOUR, EYE_B_CONTOUR
  return [_box(points, size, grow=0.35, idx=idx) for idx in (EYE_A_CONTOUR, EYE_B_CONTOUR)]


def closeup_tiles(true, out, points, side: int = 72):
  """[true mouth | output mouth] over [true eye | output eye] tiles (the true frame's boxes)."""
  import cv2
  from vasa_jax.geometry.flow import OUTER_LIPS
  s = true.shape[0]
  tiles = []
  for idx, grow in ((OUTER_LIPS, 1.4), ((33, 133, 159, 145, 160, 144), 1.6)):
    q = np.asarray(points)[list(idx), :2]
    c = (q.min(0) + q.max(0)) / 2
    half = max(np.ptp(q[:, 0]), np.ptp(q[:, 1]), 8.0) * grow / 2
    x0, y0 = (int(np.clip(np.floor(v - half), 0, s - 2)) for v in c)
    x1, y1 = (int(np.clip(np.ceil(v + half), lo + 2, s)) for v, lo in zip(c, (x0, y0)))
    tiles.append(np.concatenate([cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (side, side),
                                            interpolation=cv2.INTER_CUBIC) for img in (true, out)],
                                1))
  return np.concatenate(tiles, 0)


def clip_metrics(frames, true_pts, out, out_pts, embedder=None, id_stride: int = 5,
                 warp=None, asked_pts=None) -> dict:
  """Figures of one clip: frames / out uint8 [T, S, S, 3]; true_pts / out_pts [T, 478, 3];
  warp: the plain mesh warp's frames (warp_* figures; its landmarks are not measured)."""
  from vasa_jax.eval import metrics
  t = len(frames)
  s = frames.shape[1]
  res = {k: [] for k in ("psnr", "ssim", "psnr_face", "ssim_face", "mouth_l1", "eye_l1",
                         "landmark_dist")}
  base = {k: [] for k in res}
  plain = {k: [] for k in res}
  first = frames[0]
  iod = np.linalg.norm(true_pts[:, 263, :2] - true_pts[:, 33, :2], axis=-1)
  for i in range(1, t):
    gt = frames[i]
    fx0, fy0, fx1, fy1 = _box(true_pts[i], s)
    mx0, my0, mx1, my1 = _mouth_box(true_pts[i], s)
    eyes = _eye_boxes(true_pts[i], s)
    runs = [(res, out[i], out_pts[i]), (base, first, true_pts[0])]
    if warp is not None:
      runs.append((plain, warp[i], None))
    for d, img, pts in runs:
      d["eye_l1"].append(float(np.mean([np.abs(img[y0:y1, x0:x1].astype(np.float32)
                                               - gt[y0:y1, x0:x1].astype(np.float32)).mean()
                                        for x0, y0, x1, y1 in eyes])))
      if pts is None:
        pts = true_pts[i]
      d["psnr"].append(metrics.psnr_image(img, gt))
      d["ssim"].append(metrics.ssim_image(img, gt))
      d["psnr_face"].append(metrics.psnr_image(img[fy0:fy1, fx0:fx1], gt[fy0:fy1, fx0:fx1]))
      d["ssim_face"].append(metrics.ssim_image(img[fy0:fy1, fx0:fx1], gt[fy0:fy1, fx0:fx1]))
      d["mouth_l1"].append(float(np.abs(img[my0:my1, mx0:mx1].astype(np.float32)
                                        - gt[my0:my1, mx0:mx1].astype(np.float32)).mean()))
      d["landmark_dist"].append(float(np.linalg.norm(pts[:468, :2] - true_pts[i, :468, :2],
                                                     axis=-1).mean() / iod[i] * 100))
  m = {k: float(np.mean(v)) for k, v in res.items()}
  m.update({f"baseline_{k}": float(np.mean(v)) for k, v in base.items()})
  if warp is not None:
    m.update({f"warp_{k}": float(np.mean(v)) for k, v in plain.items() if k != "landmark_dist"})
  g_true, g_out = mouth_gap(true_pts), mouth_gap(out_pts)
  m["mouth_std"] = float(g_true.std())
  moving = g_true.std() > 0.01 and g_out.std() > 1e-6
  m["mouth_r"] = float(np.corrcoef(g_true, g_out)[0, 1]) if moving else None
  m["mouth_gain"] = (float(np.cov(g_true, g_out)[0, 1] / g_true.var(ddof=1)) if moving
                     else None)
  if asked_pts is not None:
    g_ask = mouth_gap(asked_pts)
    m["render_gain"] = (float(np.cov(g_ask, g_out)[0, 1] / g_ask.var(ddof=1)) if moving
                        and g_ask.std() > 1e-6 else None)
    m["asked_gain"] = (float(np.cov(g_true, g_ask)[0, 1] / g_true.var(ddof=1)) if moving
                       else None)
  if embedder is not None:
    ref = embedder.embed(first, true_pts[0])
    ids = [float(np.linalg.norm(embedder.embed(out[i], out_pts[i]) - ref))
           for i in range(1, t, id_stride)]
    bid = [float(np.linalg.norm(embedder.embed(frames[i], true_pts[i]) - ref))
           for i in range(1, t, id_stride)]
    m["identity_dist"] = float(np.median(ids))
    m["true_identity_dist"] = float(np.median(bid))   # the real frames vs their own first frame
  return m


def picks(geo_source, only: str = "", max_clips: int | None = None) -> list[int]:
  """Indices of the clips `evaluate` measures: those of datasets whose name starts with
  `only`, the first max_clips of them."""
  out = [i for i in range(len(geo_source)) if _text(geo_source[i]["dataset"]).startswith(only)]
  return out[:max_clips] if max_clips else out


def clip_arrays(rec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(frames uint8 [T, S, S, 3], landmarks [T, 478, 3], motion [T, D]) of a GeometryClips
  record."""
  from vasa_jax.data import records
  t = int(rec["num_frames"])
  frames = np.stack([records.decode_jpeg(bytes(f)) for f in rec["frames"]])
  pts = np.asarray(rec["landmarks"], np.float32).reshape(t, -1, 3)
  return frames, pts, np.asarray(rec["motion"], np.float32)


def evaluate(anim, geo_source, clip_index, *, max_clips=None, only="", out_dir=None,
             embedder=None, progress=None) -> dict:
  """anim: a geometry Animator; geo_source: a geometry motion_latents split (with landmarks);
  clip_index: vasa_jax.data.geometry_pairs.GeometryClips over it, without repeats (for the
  frames)."""
  from vasa_jax.geometry import landmarks as lm
  mesh = lm.FaceMesh()
  rows, sheet, closeups = [], [], []
  chosen = picks(geo_source, only, max_clips)
  t0 = time.perf_counter()
  for n, i in enumerate(chosen):
    rec = clip_index[i]
    t = int(rec["num_frames"])
    frames, pts, motion = clip_arrays(rec)
    portrait = anim.portrait_from_landmarks(frames[0], pts[0])
    out = np.concatenate(list(anim.render_motion(portrait, motion)))
    pg = portrait.geometry
    warp = np.stack([pg.frame(mo[:6], mo[6:]).warped for mo in motion])
    asked = pg.driving_mesh(motion[:, :6], motion[:, 6:])
    tracked = list(mesh.track(out, smooth=False))
    out_pts = np.stack([g.points if g is not None else np.full_like(pts[0], np.nan)
                        for g in tracked])
    found = np.isfinite(out_pts[:, 0, 0])
    out_pts = np.where(found[:, None, None], out_pts, pts[0][None])
    m = clip_metrics(frames, pts, out, out_pts, embedder, warp=warp, asked_pts=asked)
    m.update(clip_id=_text(rec["clip_id"]), dataset=_text(rec["dataset"]), frames=t,
             face_found=float(found.mean()))
    rows.append(m)
    if len(sheet) < 6 and t > 20:
      k = [t // 4, t // 2, 3 * t // 4]
      sheet.append((frames[k], out[k]))
      # mouth and eye close-ups of the 6 frames whose true mouth is the most / least open
      g = mouth_gap(pts)
      order = np.argsort(g[1:]) + 1
      pick = np.concatenate([order[:2], order[len(order) // 2:len(order) // 2 + 1], order[-3:]])
      closeups.append(np.concatenate([closeup_tiles(frames[i], out[i], pts[i]) for i in pick], 1))
    if progress is not None:
      progress(n + 1, len(chosen))
  if not rows:
    raise InputError("no clip to evaluate")
  keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
  mean = {k: float(np.nanmean([r[k] for r in rows if r.get(k) is not None])) for k in keys}
  rs = [r["mouth_r"] for r in rows if r.get("mouth_r") is not None]
  mean["mouth_r"] = float(np.mean(rs)) if rs else None
  for key in ("mouth_gain", "render_gain", "asked_gain"):
    gs = [r[key] for r in rows if r.get(key) is not None]
    mean[key] = float(np.mean(gs)) if gs else None
  mean["mouth_r_clips"] = len(rs)
  report = {"clips": len(rows), "seconds": round(time.perf_counter() - t0, 1), "mean": mean,
            "per_clip": rows}
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "geometry_reenact.json"), "w") as f:
      json.dump(report, f, indent=1)
    if sheet:
      import cv2
      tiles = []
      for gt, ou in sheet:
        tiles.append(np.concatenate([np.concatenate(list(gt), 1), np.concatenate(list(ou), 1)],
                                    0))
      img = np.concatenate([cv2.resize(x, (tiles[0].shape[1], tiles[0].shape[0])) for x in tiles], 1)
      cv2.imwrite(os.path.join(out_dir, "geometry_reenact_sheet.jpg"), img[..., ::-1],
                  [cv2.IMWRITE_JPEG_QUALITY, 88])
      cv2.imwrite(os.path.join(out_dir, "geometry_reenact_closeups.png"),
                  np.concatenate(closeups, 0)[..., ::-1])
  return report


def add_clip_args(p: argparse.ArgumentParser) -> None:
  """The bundle and held-out clip options shared by the geometry evaluators."""
  p.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  p.add_argument("--dataset", default="motion_latents/geo:test",
                 help="a geometry motion_latents dataset and split")
  p.add_argument("--data-dir", default=None, help="TFDS data dir")
  p.add_argument("--source-data-dir", default=None, help="where its clip datasets are")
  p.add_argument("--only", default="talking_face_videos",
                 help="clips of datasets whose name starts with this ('' = all)")


def open_clips(args):
  """(geometry Animator, geometry split, its clips with frames) from `add_clip_args` options."""
  from vasa_jax import animate as an
  from vasa_jax import config_utils
  from vasa_jax.data import geometry_pairs, pipeline
  name, _, split = args.dataset.partition(":")
  data_dir = args.data_dir or config_utils.DEFAULT_DATA_DIR
  geo = pipeline.open_source(name, split or "test", data_dir)
  clips = geometry_pairs.GeometryClips(geo, args.source_data_dir or data_dir)
  anim = an.Animator(args.checkpoint)
  return anim, geo, clips


def _parser():
  p = argparse.ArgumentParser(prog="vasa-jax eval reenact",
                              description="Self-reenactment of a geometry-grounded bundle on "
                                          "held-out clips (see vasa_jax/eval/geo_reenact.py).")
  add_clip_args(p)
  p.add_argument("--max-clips", type=int, default=None)
  p.add_argument("--no-identity", action="store_true", help="skip dlib identity distances")
  p.add_argument("--out", default="docs/stage1_eval")
  return p


def main(argv=None) -> int:
  from vasa_jax import animate as an
  from vasa_jax import config_utils
  args = _parser().parse_args(argv)
  try:
    anim, geo, clips = open_clips(args)
    emb = None
    if not args.no_identity:
      from vasa_jax.eval.identity import FaceEmbedder
      emb = FaceEmbedder()

    from vasa_jax.progress import Bar
    progress = Bar(None, "clips")     # on a terminal only
    report = evaluate(anim, geo, clips, max_clips=args.max_clips, only=args.only,
                      out_dir=args.out, embedder=emb, progress=progress)
  except (config_utils.InputError, an.AnimateError, FileNotFoundError, ValueError) as e:
    print(f"vasa-jax eval: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
    return 2
  print(json.dumps({"clips": report["clips"], "mean": report["mean"]}, indent=1))
  return 0

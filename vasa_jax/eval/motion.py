r"""Natural motion from speech: a geometry bundle's audio-driven output next to real footage.

    vasa-jax eval motion [--checkpoint BUNDLE] --data-dir DATA [--dataset motion_latents/geo:test]
        [--max-clips 12] [--max-seconds 8] [--steps 10] [--control-clips 3] \
        [--long IMAGE AUDIO] [--out docs/motion_eval]

For every held-out clip (identity-disjoint from training) the clip's FIRST frame is animated
with the clip's OWN audio, and the output video is measured with the same tool that measured
the real clip: the face mesh tracker (vasa_jax.geometry.tracking, smoothed as for the motion
dataset) and the bundle's face basis (vasa_jax.geometry.codes.encode). Per clip, generated and
real side by side:

  rot_std          spread of yaw / pitch / roll over the clip, degrees (mean of the three)
  rot_std_px       the same spread read from the pixels (the skull points followed by optical
                   flow, a rigid body fitted: vasa_jax.geometry.tracking.pixel_rotation). The
                   mesh network reads about 0.6 degrees on a talking face whose upper face is
                   still; the pixels do not (docs/motion_eval/still_head.md)
  yaw_std          spread of yaw alone, degrees
  ang_speed        mean angular speed of the head, degrees per second (norm of the frame-to-frame
                   change of yaw, pitch, roll)
  blink_rate       blinks per minute (vasa_jax.data.pipeline.blink_onsets on the lid codes)
  mouth_std        spread of the inner-lip gap, % of the eye-corner distance
  mouth_audio_r    correlation of that gap with the audio's RMS envelope at the best lag in
                   +-5 frames (vasa_jax.eval.metrics.lagged_corr): the lips move with the speech
  phonetic_open_r  the same correlation with the mouth opening that the phonetic front end
                   (vasa_jax/models/phonetic.py) hears in the audio: on the footage row, how
                   well the front end, trained on espeak-ng speech only, transfers to real
                   voices (compare mouth_audio_r, loudness)
  jitter           mean |second difference| of yaw / pitch / roll, degrees per frame^2
  seam_ratio       mean |frame-to-frame change| of pose and mouth at the generated windows'
                   seams over that at all other frames (1: no jump at a seam; the real row
                   uses the same frame indices)
  sync_c           the SyncNet-style sync evaluator's confidence (vasa_jax.eval.syncnet,
                   bundled weights) of video and audio at the best offset
  in_sync          1 when that best offset is within +-1 frame (40 ms) of 0, else 0; its mean
                   over clips is the in-sync share
  mesh_sync_c      the same read-out of the mesh lip-sync evaluator (vasa_jax.eval.meshsync,
                   bundled weights): it sees the lips and chin of the tracked, frontalised mesh,
                   so identity, lighting and render blur do not count (validated on the test
                   split: docs/evaluators/meshsync.json)
  mesh_in_sync     1 when its best offset is within +-1 frame of 0: the in-sync share this
                   report judges lip-sync by (the pixel SyncNet's is kept for comparison)
  face_found       share of output frames where the tracker finds the face

Bilabials (--bilabial-sentences N, synthetic speech whose phoneme timings espeak-ng gives):
each sentence, rich in /p b m/, in one of several languages and voices, is spoken to the
portraits of the first clips (the control clips, at least three), and the inner-lip gap of
the output is read at each phone:

  closure_ratio    mean gap over bilabial frames / mean gap over open-vowel frames (0: the
                   lips shut on every /p b m/; 1: bilabials no more closed than /a/)
  closed_share     share of bilabial phones whose smallest gap (the phone +-1 frame) is under
                   a third of the sentence's median open-vowel gap

Control table (the first --control-clips clips, their first 4 s): each control asked through
the Animator and measured on the output by the same tracker:

  gaze       asked (theta, phi) vs the measured main gaze (head rotation + eye rotation,
             vasa_jax.data.pipeline.window_controls), degrees; "free" = no gaze asked
  distance   asked metres vs the measured head-camera distance tz (from the face's size)
  emotion    asked vs lip-corner lift, brow height and lid openness measured on the mesh,
             each relative to the same clip rendered without an emotion
  blink      asked blinks per minute vs measured
  head       --head-motion scale vs the measured yaw spread

Long audio (--long IMAGE AUDIO): the output of a minute or more, cut into 10-s segments; each
segment's mean head distance, yaw, pitch and face size, and their spread across segments
(drift), with the seam ratio over the whole; OUT/long_audio.svg plots the head rotation, face
size (window seams marked) and dlib identity distance to the first frame over time.

Writes OUT/motion_eval.json (settings, means, per clip, control table), OUT/motion_eval.md and
OUT/motion_sheet.png (per clip: real | generated frames, and mouth / eye close-ups).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from vasa_jax.constants import FPS
from vasa_jax.data.records import text as _text
from vasa_jax.eval import metrics
from vasa_jax.eval.metrics import EYE_CORNERS, eye_corner_distance, mouth_gap
from vasa_jax.errors import InputError

CONTROL_SECONDS = 4.0
CORNERS = (61, 291)
LIP_CENTRE = (0, 17)
BROWS = (105, 334, 107, 336, 66, 296)



def expression_measures(points) -> dict:
  """Clip means of lip-corner lift, brow height (both / eye-corner distance, + = up) of
  canonical meshes [T, N, 3]."""
  p = np.asarray(points, np.float64)
  iod = eye_corner_distance(p)
  corner = (p[..., LIP_CENTRE, 1].mean(-1) - p[..., CORNERS, 1].mean(-1)) / iod
  brow = (p[..., EYE_CORNERS, 1].mean(-1) - p[..., BROWS, 1].mean(-1)) / iod
  return {"corner_lift": float(np.mean(corner)), "brow_height": float(np.mean(brow))}


def seam_ratio(motion: np.ndarray, gap: np.ndarray, seams) -> float | None:
  """Mean frame-to-frame change (pose angles in degrees + mouth gap in %) at `seams` (frame
  indices where a new window starts) over the mean elsewhere."""
  d = np.concatenate([np.degrees(np.abs(np.diff(motion[:, :3], axis=0))),
                      100 * np.abs(np.diff(gap))[:, None]], -1).sum(-1)
  idx = np.asarray([s - 1 for s in seams if 1 <= s < len(gap)], int)   # change s-1 -> s
  if not len(idx):
    return None
  rest = np.setdiff1d(np.arange(len(d)), idx)
  return float(d[idx].mean() / max(d[rest].mean(), 1e-9))


def motion_figures(motion: np.ndarray, points: np.ndarray, audio: np.ndarray, seams,
                   open_pred: np.ndarray | None = None) -> dict:
  """The per-clip figures (see the module docstring) of measured codes [T, D] and mesh points;
  open_pred: the phonetic front end's mouth opening for the audio, per frame."""
  from vasa_jax.data import pipeline
  ang = np.degrees(np.asarray(motion[:, :3], np.float64))
  gap = mouth_gap(points)
  env = metrics.envelope(audio, len(gap))
  r, lag = metrics.lagged_corr(gap, env)
  extra = {}
  if open_pred is not None:
    n = min(len(gap), len(open_pred))
    rp, _ = metrics.lagged_corr(gap[:n], np.asarray(open_pred, np.float64)[:n])
    extra["phonetic_open_r"] = None if not math.isfinite(rp) else float(rp)
  return {**extra,
      "rot_std": float(ang.std(0).mean()),
      "yaw_std": float(ang[:, 0].std()),
      "ang_speed": float(np.linalg.norm(np.diff(ang, axis=0), axis=-1).mean() * FPS)
      if len(ang) > 1 else 0.0,
      "blink_rate": float(pipeline.blink_rate(motion, FPS)),
      "mouth_std": float(100 * gap.std()),
      "mouth_audio_r": None if not math.isfinite(r) else float(r),
      "mouth_audio_lag": int(lag),
      "jitter": metrics.jitter(ang),
      "seam_ratio": seam_ratio(motion, gap, seams),
  }


class Measurer:
  """Output frames -> (codes [T, D], points [T, N, 3], face-found share), as the motion
  dataset measured the real clips (tracking.track_frames, smoothed; codes.encode)."""

  def __init__(self, basis):
    from vasa_jax.geometry import landmarks as lm
    self.basis, self.mesh = basis, lm.FaceMesh()

  def __call__(self, frames: np.ndarray):
    from vasa_jax.geometry import codes as codes_lib
    from vasa_jax.geometry import tracking
    tr = tracking.track_frames(frames, self.mesh, smooth=True)
    self.points = tr.points            # image-space mesh of the last call (close-ups)
    if not tr.valid.any():
      return None, None, 0.0
    c = codes_lib.encode(tr.points, self.basis, frames.shape[1])
    return (np.concatenate([c.pose, c.dyn], -1).astype(np.float32), c.canonical,
            float(tr.valid.mean()))

  def canonical(self, points: np.ndarray, size: int) -> np.ndarray:
    from vasa_jax.geometry import codes as codes_lib
    return codes_lib.encode(points, self.basis, size).canonical


def pixel_rot_std(frames: np.ndarray, points0: np.ndarray) -> float:
  """rot_std read from the pixels (tracking.pixel_rotation from the first frame's mesh)."""
  from vasa_jax.geometry import tracking
  ang, _ = tracking.pixel_rotation(frames, points0)
  return float(np.degrees(ang).std(0).mean())


def generate(anim, portrait, audio: np.ndarray, *, steps: int, seed: int, **controls):
  """(frames uint8 [T,S,S,3], seams) for the audio; seams = frames where a window starts.
  controls: SampleOptions fields (gaze, cfg_audio, ...)."""
  seams, frames = [], []
  for start, m in anim.motion_windows(portrait, audio, steps=steps, seed=seed, **controls):
    seams.append(int(start))
    frames.extend(anim.render_motion(portrait, m))
  return np.concatenate(frames), seams


def _summary(rows, keys):
  out = {}
  for k in keys:
    v = [r[k] for r in rows if r.get(k) is not None]
    out[k] = float(np.mean(v)) if v else None
  return out


FIGURES = ("rot_std", "rot_std_px", "yaw_std", "ang_speed", "blink_rate", "mouth_std",
           "mouth_audio_r", "phonetic_open_r", "jitter", "seam_ratio", "sync_c", "in_sync",
           "mesh_sync_c", "mesh_in_sync")
IN_SYNC_FRAMES = 1                # |best offset| <= this many frames counts as in sync


def sync_figures(sync_eval, video, audio: np.ndarray, prefix: str = "") -> dict:
  """A sync evaluator's best offset, confidence and in-sync flag for a clip's video (aligned
  face crops for the pixel SyncNet, canonical meshes for the mesh one) and its audio, each
  key prefixed by `prefix`; empty without an evaluator or for a clip too short to score."""
  if sync_eval is None:
    return {}
  try:
    s = sync_eval.score(video, audio)
  except ValueError:
    return {}
  return {f"{prefix}sync_offset": int(s["offset"]), f"{prefix}sync_c": float(s["sync_c"]),
          f"{prefix}in_sync": float(abs(int(s["offset"])) <= IN_SYNC_FRAMES)}


# Sentences dense in /p b m/ in the languages of ../shared/real (espeak-ng voices).
BILABIAL_SENTENCES = (
    ("en-us", "Bob bought a big bag of maple bread for my mum."),
    ("de", "Papa baut mit Mama eine breite Brücke am Bach."),
    ("es", "Mamá bebe mucho vino blanco en la playa bonita."),
    ("fr", "Le bébé mange une pomme bien mûre avec maman."),
    ("en-gb", "Please pass me the purple pen and the map, Pam."),
    ("it", "Il bambino beve molto latte prima di mangiare la pappa."),
)
BILABIAL_PHONES = frozenset({"p", "b", "m", "p:", "b:", "m:"})   # stops and /m/ (not the
# Spanish approximant "B", where the lips need not meet)
OPEN_VOWELS = frozenset({"a", "a#", "aa", "A", "A:", "A@", "&", "a:", "0", "O", "O:", "V",
                         "aI", "aU", "a2", "E", "e@"})


def phone_frames(phones, n: int):
  """(bilabial frame mask [n], open-vowel frame mask [n], bilabial phone frame spans) of
  espeak phones [(start s, end s, symbol)] on n frames at FPS (frame t covers the instant
  (t + 0.5) / FPS)."""
  t = (np.arange(n) + 0.5) / FPS
  bil, vow, spans = np.zeros(n, bool), np.zeros(n, bool), []
  for start, end, sym in phones:
    sym = sym.lstrip("',")             # espeak's stress marks
    inside = (t >= start) & (t < end)
    if sym in BILABIAL_PHONES:
      bil |= inside
      lo, hi = int(math.floor(start * FPS)), int(math.ceil(end * FPS))
      spans.append((max(lo - 1, 0), min(hi + 1, n)))
    elif sym in OPEN_VOWELS:
      vow |= inside
  return bil, vow, spans


def bilabial_figures(gap: np.ndarray, phones) -> dict:
  """closure_ratio and closed_share (see the module docstring) of an inner-lip gap trace [T]
  and the speech's phones [(start s, end s, symbol)]."""
  gap = np.asarray(gap, np.float64)
  bil, vow, spans = phone_frames(phones, len(gap))
  if not bil.any() or not vow.any():
    return {"bilabials": len(spans), "closure_ratio": None, "closed_share": None}
  open_gap = float(np.median(gap[vow]))
  base = max(float(np.mean(gap[vow])), 1e-6)
  mins = [float(gap[a:b].min()) for a, b in spans if b > a]
  return {"bilabials": len(spans), "closure_ratio": float(np.mean(gap[bil]) / base),
          "closed_share": float(np.mean([m < open_gap / 3 for m in mins])) if mins else None}


def bilabial_table(anim, portraits, measure, *, steps: int, seed: int,
                   sentences=BILABIAL_SENTENCES, options: dict | None = None) -> list[dict]:
  """One row a sentence: spoken by espeak-ng (vasa_jax.synth.speech), animated on the next
  of `portraits`, its output's inner-lip gap (canonical mesh) read at the phones."""
  from vasa_jax.synth import speech as speech_lib
  rows = []
  for k, (voice, text) in enumerate(sentences):
    sp = speech_lib.synthesize(text, voice=voice, seed=k)
    portrait = portraits[k % len(portraits)]
    frames, _ = generate(anim, portrait, sp.audio, steps=steps, seed=seed, **(options or {}))
    codes, canon, found = measure(frames)
    row = {"voice": voice, "text": text, "face_found": found}
    if codes is not None:
      phones = [(p.start, p.end, p.symbol) for p in sp.phones]
      row.update(bilabial_figures(mouth_gap(canon), phones))
    rows.append(row)
  return rows


def control_table(anim, clips, measure, *, steps: int, seed: int,
                  options: dict | None = None) -> list[dict]:
  """The control rows (see the module docstring) over `clips` [(portrait, audio)]."""
  from vasa_jax.data import pipeline
  asks = [("gaze", (-15.0, 0.0)), ("gaze", (15.0, 0.0)), ("gaze", (0.0, 10.0)),
          ("distance", 0.55), ("distance", 0.75),
          ("emotion", "happy"), ("emotion", "sad"), ("emotion", "angry"),
          ("emotion", "surprised"), ("blink_rate", 5.0), ("blink_rate", 35.0),
          ("head_motion", 0.0), ("head_motion", 2.0)]
  rows = []
  neutral = {}
  for ci, (portrait, audio) in enumerate(clips):
    for name, value in [("none", None)] + asks:
      if name == "blink_rate" and not anim.md_config.model.get("blink_control", False):
        continue
      kw = dict(options or {})
      if name != "none" and value is not None:
        kw[name] = value
      frames, _ = generate(anim, portrait, audio, steps=steps, seed=seed, **kw)
      codes, pts, found = measure(frames)
      if codes is None:
        rows.append({"clip": ci, "control": name, "asked": value, "face_found": 0.0})
        continue
      gaze, dist = pipeline.window_controls(codes)
      row = {"clip": ci, "control": name, "asked": value, "face_found": found,
             "gaze_deg": [float(x) for x in np.degrees(gaze)], "distance": float(dist),
             "blink_rate": float(pipeline.blink_rate(codes, FPS)),
             "yaw_std": float(np.degrees(codes[:, 0]).std()),
             "lids": float(codes[:, -4:-2].mean()), **expression_measures(pts)}
      if name == "none":
        neutral[ci] = row
      elif ci in neutral:
        for k in ("corner_lift", "brow_height", "lids"):
          row[f"d_{k}"] = row[k] - neutral[ci][k]
      rows.append(row)
  return rows


def long_audio(anim, image: str, audio: str, measure, *, steps: int, seed: int,
               segment_s: float = 10.0, options: dict | None = None, embedder=None,
               id_every_s: float = 1.0) -> dict:
  """Drift over a long clip: per `segment_s` segment of the output, the measured mean head
  distance tz, yaw, pitch, the face size (eye-corner distance, px) and the mouth spread; the
  seam ratio over the whole output; and, for the plot (`long_audio_svg`), per-frame traces of
  the measured head rotation and face size, the window seams, and the identity distance
  (dlib, vasa_jax.eval.identity) of an output frame every `id_every_s` to the first one."""
  from vasa_jax import media
  a = media.load_audio(audio, 16000)
  portrait = anim.prepare_portrait(image, crop_only=True)
  frames, seams = generate(anim, portrait, a, steps=steps, seed=seed, **(options or {}))
  codes, canon, found = measure(frames)
  if codes is None:
    return {"image": image, "audio": audio, "face_found": 0.0}
  pts = measure.points
  n = int(segment_s * FPS)
  segs = []
  for lo in range(0, len(codes), n):
    c, p = codes[lo:lo + n], pts[lo:lo + n]
    segs.append({"start_s": lo / FPS, "tz": float(c[:, 5].mean()),
                 "yaw_deg": float(np.degrees(c[:, 0]).mean()),
                 "pitch_deg": float(np.degrees(c[:, 1]).mean()),
                 "face_px": float(eye_corner_distance(p).mean()),
                 "mouth_std": float(100 * mouth_gap(canon[lo:lo + n]).std())})
  spread = lambda k: float(np.ptp([s[k] for s in segs]))
  ang = np.degrees(codes[:, :3].astype(np.float64))
  traces = {"yaw_deg": ang[:, 0].round(2).tolist(), "pitch_deg": ang[:, 1].round(2).tolist(),
            "roll_deg": ang[:, 2].round(2).tolist(),
            "face_px": eye_corner_distance(pts).round(2).tolist(),
            "seams": [int(x) for x in seams]}
  if embedder is not None:
    step = max(1, int(id_every_s * FPS))
    ref = embedder.embed(frames[0], pts[0])
    idx = list(range(step, len(frames), step))
    traces["identity_frames"] = idx
    traces["identity_dist"] = [round(float(np.linalg.norm(embedder.embed(frames[i], pts[i])
                                                          - ref)), 4) for i in idx]
  out = {"image": image, "audio": audio, "seconds": len(frames) / FPS, "face_found": found,
         "seam_ratio": seam_ratio(codes, mouth_gap(canon), seams), "segments": segs,
         "drift": {k: spread(k) for k in ("tz", "yaw_deg", "pitch_deg", "face_px")},
         "traces": traces}
  if traces.get("identity_dist"):
    d = np.asarray(traces["identity_dist"])
    out["identity"] = {"mean": float(d.mean()), "max": float(d.max()),
                       "first_10s": float(d[:10].mean()), "last_10s": float(d[-10:].mean())}
  return out


def long_audio_svg(lg: dict) -> str:
  """Pose, face size and identity distance over the long clip, window seams marked."""
  tr = lg["traces"]
  t = np.arange(len(tr["yaw_deg"])) / FPS
  seam_t = np.asarray([s / FPS for s in tr["seams"] if s > 0])
  face = np.asarray(tr["face_px"])
  panels = [
      {"title": "head rotation measured on the output (degrees); grey: window seams",
       "xlabel": "seconds", "ylabel": "deg", "vlines": seam_t,
       "series": [(k.split("_")[0], t, np.asarray(tr[k]))
                  for k in ("yaw_deg", "pitch_deg", "roll_deg")]},
      {"title": "face size (eye-corner distance, px); grey: window seams", "xlabel": "seconds",
       "ylabel": "px", "vlines": seam_t, "series": [("face size", t, face)]},
  ]
  if tr.get("identity_dist"):
    ti = np.asarray(tr["identity_frames"]) / FPS
    panels.append({"title": "identity distance to the first frame (dlib; < 0.6 same person)",
                   "xlabel": "seconds", "ylabel": "distance",
                   "series": [("identity distance", ti, np.asarray(tr["identity_dist"])),
                              ("0.6 threshold", ti[[0, -1]], np.asarray([0.6, 0.6])),
                              ("0", ti[[0, -1]], np.zeros(2))]})
  return metrics.svg_panels(panels, width=900, panel_height=190)


def _fmt(v, nd=2):
  if v is None:
    return "-"
  if isinstance(v, (list, tuple)):
    return "(" + ", ".join(_fmt(x, nd) for x in v) + ")"
  return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def markdown(rep: dict) -> str:
  lines = ["# Natural motion from speech: generated vs real footage", "",
           f"{rep['clips']} held-out clips of {rep['dataset']}, {rep['settings']}. "
           "Both rows measured by the same face-mesh tracker and face basis "
           "(vasa_jax/eval/motion.py).", "",
           "| row | " + " | ".join(FIGURES) + " | face found |",
           "|---|" + "---|" * (len(FIGURES) + 1)]
  for row in ("real", "generated"):
    m = rep["mean"][row]
    lines.append(f"| {row} | " + " | ".join(_fmt(m.get(k)) for k in FIGURES)
                 + f" | {_fmt(m.get('face_found'))} |")
  if rep.get("long"):
    lg = rep["long"]
    lines += ["", f"## Long audio ({lg.get('seconds', 0):.0f} s, {os.path.basename(lg['audio'])} "
              f"on {os.path.basename(lg['image'])})", "",
              f"face found {_fmt(lg.get('face_found'))}, seam ratio "
              f"{_fmt(lg.get('seam_ratio'))}; spread of the segment means: "
              + ", ".join(f"{k} {_fmt(v, 3)}" for k, v in lg.get("drift", {}).items())
              + (f"; identity distance to the first frame (dlib, every second): mean "
                 f"{_fmt(lg['identity']['mean'], 3)}, max {_fmt(lg['identity']['max'], 3)}, "
                 f"first 10 s {_fmt(lg['identity']['first_10s'], 3)}, last 10 s "
                 f"{_fmt(lg['identity']['last_10s'], 3)}" if lg.get("identity") else "")
              + " (plot: long_audio.svg)", "",
              "| from (s) | tz (m) | yaw | pitch | face (px) | mouth std |", "|---" * 6 + "|"]
    for g in lg.get("segments", []):
      lines.append(f"| {g['start_s']:.0f} | {g['tz']:.3f} | {g['yaw_deg']:.1f} | "
                   f"{g['pitch_deg']:.1f} | {g['face_px']:.1f} | {g['mouth_std']:.2f} |")
  if rep.get("bilabials"):
    bm = rep["bilabials"]["mean"]
    lines += ["", "## Lip closure at bilabials (espeak-ng speech, phoneme timings known)", "",
              f"mean closure ratio {_fmt(bm.get('closure_ratio'))} (0: shut on every /p b m/, "
              f"1: no more closed than /a/), closed share {_fmt(bm.get('closed_share'))}", "",
              "| voice | sentence | bilabials | closure ratio | closed share |",
              "|---" * 5 + "|"]
    for r in rep["bilabials"]["sentences"]:
      lines.append(f"| {r['voice']} | {r['text']} | {r.get('bilabials', '-')} | "
                   f"{_fmt(r.get('closure_ratio'))} | {_fmt(r.get('closed_share'))} |")
  if rep.get("controls"):
    lines += ["", "## Controls (asked vs measured on the output)", "",
              "| clip | control | asked | gaze (deg) | distance (m) | blinks/min | yaw std | "
              "d corner lift | d brow height | d lids |", "|---" * 10 + "|"]
    for r in rep["controls"]:
      lines.append(f"| {r['clip']} | {r['control']} | {_fmt(r['asked'])} | "
                   f"{_fmt(r.get('gaze_deg'), 1)} | {_fmt(r.get('distance'), 3)} | "
                   f"{_fmt(r.get('blink_rate'), 1)} | {_fmt(r.get('yaw_std'))} | "
                   f"{_fmt(r.get('d_corner_lift'), 3)} | {_fmt(r.get('d_brow_height'), 3)} | "
                   f"{_fmt(r.get('d_lids'), 3)} |")
  return "\n".join(lines) + "\n"


def _sheet(items, path):
  """items: [(real frames, generated frames, gen image-space points)] -> a PNG contact sheet:
  per clip 5 frames real over generated, then mouth and eye close-ups."""
  import cv2
  from vasa_jax.eval.geo_reenact import closeup_tiles
  blocks = []
  for real, gen, gp in items:
    n = min(len(real), len(gen))
    ks = np.linspace(0, n - 1, 5).astype(int)
    side = 160
    row = lambda fr: np.concatenate([cv2.resize(fr[k], (side, side)) for k in ks], 1)
    gap = mouth_gap(gp[:n])
    order = np.argsort(gap)
    pick = np.concatenate([order[:2], order[len(order) // 2:len(order) // 2 + 1], order[-3:]])
    # close-ups of the generated frames (true = real frame at the same time, for reference)
    cl = np.concatenate([closeup_tiles(real[i], gen[i], gp[i]) for i in pick], 1)
    cl = cv2.resize(cl, (5 * side, int(cl.shape[0] * 5 * side / cl.shape[1])))
    blocks.append(np.concatenate([row(real), row(gen), cl], 0))
  img = np.concatenate(blocks, 0)
  cv2.imwrite(path, img[..., ::-1])


def evaluate(anim, geo_source, clip_index, *, max_clips: int = 12, max_seconds: float = 8.0,
             steps: int = 10, seed: int = 0, control_clips: int = 3, only: str = "",
             out_dir: str | None = None, progress=None, long: tuple | None = None,
             bilabial_sentences: int = 0, sync_eval="bundled", mesh_sync_eval="bundled",
             options: dict | None = None) -> dict:
  """long: (image, audio) of a long-audio drift check (`long_audio`), or None.
  options: sampler settings for every generated clip (SampleOptions fields: cfg_audio,
  cfg_gaze, ...; the bundle's defaults where left out).
  bilabial_sentences: how many of BILABIAL_SENTENCES to animate (on the control clips'
  portraits). sync_eval: a syncnet.SyncEvaluator, "bundled" (the package's weights) or None
  (no sync figures); mesh_sync_eval: a meshsync.MeshSyncEvaluator, "bundled" or None."""
  from vasa_jax.data import records
  if isinstance(sync_eval, str):
    from vasa_jax.eval import syncnet
    sync_eval = syncnet.load()
  if isinstance(mesh_sync_eval, str):
    from vasa_jax.eval import meshsync
    mesh_sync_eval = meshsync.load()
  from vasa_jax.models import phonetic
  try:
    front_end = phonetic.load()
  except (FileNotFoundError, ValueError):
    front_end = None
  options = dict(options or {})
  measure = Measurer(anim.basis)
  picks = [i for i in range(len(geo_source)) if _text(geo_source[i]["dataset"]).startswith(only)]
  picks = picks[:max_clips]
  rows, sheet, ctrl_clips = [], [], []
  t0 = time.perf_counter()
  for n, i in enumerate(picks):
    rec = clip_index[i]
    t = min(int(rec["num_frames"]), int(max_seconds * FPS))
    frames = np.stack([records.decode_jpeg(bytes(f)) for f in rec["frames"][:t]])
    pts = np.asarray(rec["landmarks"], np.float32).reshape(int(rec["num_frames"]), -1, 3)[:t]
    real_motion = np.asarray(rec["motion"], np.float32)[:t]
    audio = records.audio_to_float(rec["audio"])[:t * (16000 // FPS)]
    portrait = anim.portrait_from_landmarks(frames[0], pts[0])
    gen, seams = generate(anim, portrait, audio, steps=steps, seed=seed, **options)
    gen = gen[:t]
    codes, gpts, found = measure(gen)
    gen_points = measure.points
    opened = None if front_end is None else front_end.predict(audio)["mouth"][:, 0]
    real_canon = measure.canonical(pts, frames.shape[1])
    row = {"clip_id": _text(rec["clip_id"]), "dataset": _text(rec["dataset"]), "frames": t,
           "real": {**motion_figures(real_motion, real_canon, audio, seams, opened),
                    "rot_std_px": pixel_rot_std(frames, pts[0]),
                    **sync_figures(sync_eval, frames, audio),
                    **sync_figures(mesh_sync_eval, real_canon, audio, "mesh_")}}
    if codes is not None:
      row["generated"] = {**motion_figures(codes, gpts, audio, seams, opened),
                          "rot_std_px": pixel_rot_std(gen, gen_points[0]),
                          **sync_figures(sync_eval, gen, audio),
                          **sync_figures(mesh_sync_eval, gpts, audio, "mesh_")}
      row["generated"]["face_found"] = found
      if len(sheet) < 4:
        sheet.append((frames, gen, gen_points))
    else:
      row["generated"] = {"face_found": 0.0}
    row["real"]["face_found"] = 1.0
    rows.append(row)
    if len(ctrl_clips) < max(control_clips, 3 if bilabial_sentences else 0):
      ctrl_clips.append((portrait, audio[:int(CONTROL_SECONDS * 16000)]))
    if progress is not None:
      progress(n + 1, len(picks))
  if not rows:
    raise InputError("no clip to evaluate")
  keys = FIGURES + ("face_found",)
  # the audio guidance in effect: the asked scale, else the bundle's default
  sd = anim.engine.sampler
  shown = {"cfg_audio": sd.cfg_audio, "audio_lead": sd.audio_lead,
           **({"cfg_expression": sd.cfg_expression} if sd.cfg_expression is not None else {}),
           **options}
  rep = {"dataset": _text(rows[0]["dataset"]), "clips": len(rows),
         "settings": f"{steps} DDIM steps, seed {seed}, first {max_seconds:g} s of each clip"
                     + "".join(f", {k} {v:g}" if isinstance(v, float) else f", {k} {v}"
                               for k, v in sorted(shown.items())),
         "options": options,
         "mean": {g: _summary([r[g] for r in rows], keys) for g in ("real", "generated")},
         "per_clip": rows}
  if control_clips:
    rep["controls"] = control_table(anim, ctrl_clips[:control_clips], measure, steps=steps, seed=seed,
                                    options=options)
  if bilabial_sentences and ctrl_clips:
    bl = bilabial_table(anim, [p for p, _ in ctrl_clips], measure, steps=steps, seed=seed,
                        sentences=BILABIAL_SENTENCES[:bilabial_sentences], options=options)
    rep["bilabials"] = {"sentences": bl, "mean": _summary(bl, ("closure_ratio", "closed_share"))}
  if long:
    from vasa_jax.eval import identity
    rep["long"] = long_audio(anim, long[0], long[1], measure, steps=steps, seed=seed,
                             options=options, embedder=identity.FaceEmbedder())
  rep["seconds"] = round(time.perf_counter() - t0, 1)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "motion_eval.json"), "w") as f:
      json.dump(rep, f, indent=1)
    with open(os.path.join(out_dir, "motion_eval.md"), "w") as f:
      f.write(markdown(rep))
    if sheet:
      _sheet(sheet, os.path.join(out_dir, "motion_sheet.png"))
    if rep.get("long", {}).get("traces"):
      with open(os.path.join(out_dir, "long_audio.svg"), "w") as f:
        f.write(long_audio_svg(rep["long"]))
  return rep


def _parser():
  from vasa_jax.eval import geo_reenact
  p = argparse.ArgumentParser(prog="vasa-jax eval motion",
                              description="Audio-driven motion of a geometry bundle on held-out "
                                          "clips, next to the real footage (see "
                                          "vasa_jax/eval/motion.py).")
  geo_reenact.add_clip_args(p)
  p.add_argument("--max-clips", type=int, default=12)
  p.add_argument("--max-seconds", type=float, default=8.0)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--control-clips", type=int, default=3, help="clips of the control table")
  p.add_argument("--bilabial-sentences", type=int, default=len(BILABIAL_SENTENCES),
                 help="espeak-ng sentences rich in /p b m/ for the lip-closure table "
                      f"(0-{len(BILABIAL_SENTENCES)}; on the first clips' portraits)")
  p.add_argument("--long", nargs=2, metavar=("IMAGE", "AUDIO"), default=None,
                 help="also animate IMAGE with a long AUDIO (60 s and more) and report drift "
                      "per 10-s segment")
  p.add_argument("--cfg-audio", type=float, default=None,
                 help="audio guidance scale (default: the bundle's sampler setting)")
  p.add_argument("--cfg-gaze", type=float, default=None,
                 help="gaze guidance scale (default: the bundle's)")
  p.add_argument("--audio-lead", type=float, default=None,
                 help="audio lead in frames (default: the bundle's)")
  p.add_argument("--cfg-expression", type=float, default=None,
                 help="audio guidance of the expression codes (default: the bundle's)")
  p.add_argument("--out", default="docs/motion_eval")
  return p


def main(argv=None) -> int:
  from vasa_jax import animate as an
  from vasa_jax import config_utils
  from vasa_jax.eval import geo_reenact
  args = _parser().parse_args(argv)
  try:
    if args.max_clips < 1 or args.max_seconds <= 0 or args.steps < 1 or args.control_clips < 0:
      raise config_utils.InputError("--max-clips and --steps must be >= 1, --max-seconds > 0, "
                           "--control-clips >= 0")
    anim, geo, clips = geo_reenact.open_clips(args)

    from vasa_jax.progress import Bar
    progress = Bar(None, "clips")     # on a terminal only
    rep = evaluate(anim, geo, clips, max_clips=args.max_clips, max_seconds=args.max_seconds,
                   steps=args.steps, seed=args.seed, control_clips=args.control_clips,
                   only=args.only, out_dir=args.out, progress=progress, long=args.long,
                   bilabial_sentences=args.bilabial_sentences,
                   options={k: v for k, v in (("cfg_audio", args.cfg_audio),
                                              ("cfg_gaze", args.cfg_gaze),
                                              ("audio_lead", args.audio_lead),
                                              ("cfg_expression", args.cfg_expression))
                            if v is not None})
  except (config_utils.InputError, an.AnimateError, FileNotFoundError, ValueError) as e:
    print(f"vasa-jax eval: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
    return 2
  print(json.dumps({"clips": rep["clips"], "mean": rep["mean"]}, indent=1))
  return 0

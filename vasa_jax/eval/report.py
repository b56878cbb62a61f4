r"""The evaluation suite: generated video next to real footage, with the project's own evaluators.

  vasa-jax eval report [--checkpoint BUNDLE] --data-dir D \
      [--real talking_face_videos/r256:test] [--synthetic synthetic_talking_heads/r256_n1000:test] \
      [--max-clips 12] [--max-seconds 6] [--steps N] [--cfg-audio X] [--cfg-gaze X] \
      [--reenact motion_latents/geo:test] \
      [--ablate-cfg-audio 0,1.0] [--ablate-steps 10,50] [--ablate-no-prev] [--out docs/eval]

For every held-out clip (real footage and unseen synthetic identities) the clip's FIRST frame is
animated with the clip's OWN audio (and, for synthetic clips, its own gaze / distance / emotion
controls), and the same measurements are taken on the generated video and on the real clip.
How well asked controls are followed is `vasa-jax eval controls` (many portraits, each control
asked, the output measured by the same tracker):

  Sync-C, Sync-D  the project's SyncNet-style model (vasa_jax/eval/syncnet.py; trained here, as
                  no pretrained SyncNet can be downloaded): mean embedding distance between
                  0.2 s mouth-crop windows and audio windows at offsets -15..15 frames. Sync-D
                  is the minimum over offsets (lower is better), Sync-C the median minus the
                  minimum (higher is better); "in sync" is the share of clips whose best offset
                  is within +-1 frame. Our scale, not the published SyncNet's: compare rows
                  within this report only.
  mouth r, lag    Pearson correlation between the mouth opening the face-mesh tracker reads
                  from the frames (inner-lip gap / eye-corner distance on the frontalised mesh,
                  metrics.mouth_gap) and the audio RMS envelope, at the best lag in +-5 frames
                  (lag > 0: the mouth moves after the sound).
  delta-P         mean absolute frame-to-frame change of yaw / pitch / roll, degrees per frame
                  (how much the head moves). Pose is read from the frames by the face-mesh
                  tracker (as the motion dataset measures real clips), for every bundle and for
                  footage. No audio-pose alignment score (VASA-1's CAPP) is reported: the one
                  trained here on the real clips we have stayed at chance on held-out clips
                  (8-way retrieval 0.14-0.17 against 0.125) and was removed.
  jitter          mean absolute second difference (acceleration) of yaw / pitch / roll in
                  degrees per frame^2, and of the mouth opening (temporal noise).
  identity dist   median dlib face-recognition distance of every 5th frame to the first
                  (vasa_jax/eval/identity.py; < 0.6 is one person to dlib; real footage of one
                  person sits around 0.3-0.45). face_found: share of frames with a face.
  PSNR, SSIM      stage-1 self-reenactment: frame 0 driven by each frame's own measured motion,
                  against the real frame; for a geometry bundle on the clips of --reenact
                  (vasa_jax/eval/geo_reenact.py, the figures of `vasa-jax eval reenact`: also
                  over the face, and the mouth and eye L1 in 0-255).

Reference rows on the real footage show that the evaluators mean something: the same clips with
their audio delayed by 10 frames ("shifted": the best offset moves to ~10, in-sync falls) and
with another clip's audio ("mismatched": Sync-C and mouth r fall to chance).
FVD is not reported: it needs a pretrained video network (I3D) that cannot be downloaded here.

Writes OUT/report.json (settings, per-row means, per-clip values), OUT/report.md (tables and the
metric definitions above) and SVG plots (mouth opening vs audio energy, head-pose traces, sync
offset curves) that the markdown shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

from vasa_jax.constants import FPS, SAMPLES_PER_FRAME as SPF  # noqa: E402
from vasa_jax.data.records import text as _text  # noqa: E402
from vasa_jax.eval.metrics import (delay_audio, delta_p, envelope, jitter,  # noqa: E402
                                   lagged_corr, mouth_gap, svg_panels)
SHIFT_FRAMES = 10


# ----------------------------------------------------------------------------- evaluators

@dataclasses.dataclass
class Evaluators:
  """The trained evaluators, and the instruments that read head pose and identity from frames:
  the face-mesh tracker (pose, as the motion dataset measures real clips) and dlib's
  face-recognition network (identity). Neither is a stage-1 model, so the report measures
  every bundle, and real footage, the same way."""
  sync: Any
  animator: Any

  @functools.cached_property
  def _measurer(self):
    from vasa_jax.eval.motion import Measurer
    basis = getattr(getattr(self.animator, "engine", None), "basis", None)
    if basis is None:                        # a bundle without a face basis: the bundled one
      from vasa_jax import bundle as bundle_lib
      from vasa_jax.geometry import codes as codes_lib
      basis = codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(),
                                                    bundle_lib.BASIS_FILE))
    return Measurer(basis)

  @functools.cached_property
  def _embedder(self):
    from vasa_jax.eval.identity import FaceEmbedder
    return FaceEmbedder()

  def measure(self, frames: np.ndarray, *, id_stride: int = 5) -> dict:
    """{"pose": [T, 6] (yaw, pitch, roll in radians, then translation) or None where no face
    is found, "mouth": [T] mouth gap of the frontalised mesh (None without a face),
    "identity_dist": median dlib distance of every id_stride-th frame to the first (NaN
    without a face), "face_found": share of frames with a face}."""
    codes, canon, found = self._measurer(np.asarray(frames))
    if codes is None:
      return {"pose": None, "mouth": None, "identity_dist": float("nan"), "face_found": 0.0}
    pts = self._measurer.points
    ref = self._embedder.embed(frames[0], pts[0])
    d = [float(np.linalg.norm(self._embedder.embed(frames[i], pts[i]) - ref))
         for i in range(id_stride, len(frames), id_stride)]
    return {"pose": np.asarray(codes[:, :6], np.float64), "mouth": mouth_gap(canon),
            "identity_dist": float(np.median(d)) if d else float("nan"), "face_found": found}


def load_evaluators(animator, *, sync_path=None) -> Evaluators:
  from vasa_jax.eval import syncnet
  return Evaluators(sync=syncnet.load(sync_path), animator=animator)


def video_metrics(ev: Evaluators, frames: np.ndarray, audio: np.ndarray, *,
                  keep_traces: bool = False) -> dict:
  """Every per-video measure of the module docstring for aligned crops [T,S,S,3] + 16 kHz audio."""
  t = len(frames)
  audio = np.asarray(audio, np.float32)[:t * SPF]
  out: dict[str, Any] = {"frames": t}
  s = ev.sync.score(frames, audio)
  out.update(sync_c=float(s["sync_c"]), sync_d=float(s["sync_d"]), sync_offset=int(s["offset"]),
             in_sync=float(abs(int(s["offset"])) <= 1))
  env = envelope(audio, t)
  got = ev.measure(frames)
  pose = got["pose"]
  out.update(identity_dist=got["identity_dist"], face_found=got["face_found"])
  if pose is None:
    angles, mouth = np.full((t, 3), np.nan), np.full(t, np.nan)
    out.update(delta_p=float("nan"), pose_jitter=float("nan"), mouth_r=float("nan"),
               mouth_lag=0, mouth_std=float("nan"), mouth_jitter=float("nan"))
  else:
    angles, mouth = np.degrees(pose[:, :3]), np.asarray(got["mouth"], np.float64)
    r, lag = lagged_corr(mouth, env)
    out.update(delta_p=delta_p(angles), pose_jitter=jitter(angles), mouth_r=r,
               mouth_lag=int(lag), mouth_std=float(np.std(mouth)), mouth_jitter=jitter(mouth))
  if keep_traces:
    out["_traces"] = {"envelope": env, "mouth": mouth, "angles": angles,
                      "sync_offsets": list(s["offsets"]), "sync_dists": list(s["dists"])}
  return out


# ----------------------------------------------------------------------------- clips

@dataclasses.dataclass
class Clip:
  name: str
  group: str          # "real" | "synthetic"
  frames: np.ndarray  # uint8 [T,S,S,3] aligned crops
  audio: np.ndarray   # float32 16 kHz, T * 640 samples
  controls: dict      # {"gaze": rad [2] | None, "distance": m | None, "emotion": int | None}
  record: Any = None  # the dataset record (for self-reenactment)


def load_clips(dataset: str, group: str, *, data_dir: str | None, max_clips: int,
               max_seconds: float) -> list[Clip]:
  from vasa_jax.data import records
  from vasa_jax.eval import metrics
  name, split = metrics.parse_dataset(dataset)
  src = metrics.open_dataset(name, split, data_dir)
  clips = []
  n_max = int(max_seconds * FPS)
  for i in range(min(len(src), int(max_clips))):
    rec = src[i]
    t = min(int(rec["num_frames"]), n_max)
    frames = np.stack([records.decode_jpeg(b) for b in rec["frames"][:t]])
    audio = records.audio_to_float(np.asarray(rec["audio"]))[:t * SPF]
    ctrl = {"gaze": None, "distance": None, "emotion": None}
    if int(rec.get("has_control_gaze", 0)):
      ctrl["gaze"] = np.asarray(rec["control_gaze"], np.float64)
    if int(rec.get("has_control_distance", 0)):
      ctrl["distance"] = float(rec["control_distance"])
    if int(rec.get("has_control_emotion", 0)):
      ctrl["emotion"] = int(rec["control_emotion"])
    clips.append(Clip(name=_text(rec["clip_id"]), group=group, frames=frames, audio=audio,
                      controls=ctrl, record=rec))
  return clips


# ----------------------------------------------------------------------------- generation

@dataclasses.dataclass(frozen=True)
class Setting:
  """One generated row. None takes the bundle's own sampler default (its tuned guidance and
  step count), as `vasa-jax animate` does."""
  name: str
  cfg_audio: float | None = None
  cfg_gaze: float | None = None
  steps: int | None = None
  carry_context: bool = True
  use_controls: bool = True


def generate(animator, clip: Clip, setting: Setting, *, seed: int = 0) -> tuple[np.ndarray, float]:
  """(frames uint8 [T,S,S,3], seconds) animating the clip's first frame with its own audio."""
  t0 = time.perf_counter()
  portrait = animator.portrait_from_crop(clip.frames[0])
  c = clip.controls if setting.use_controls else {}
  gaze = None if c.get("gaze") is None else np.degrees(c["gaze"])
  parts = []
  for _, motion in animator.motion_windows(
      portrait, clip.audio, gaze=gaze, distance=c.get("distance"), emotion=c.get("emotion"),
      cfg_audio=setting.cfg_audio, cfg_gaze=setting.cfg_gaze, steps=setting.steps, seed=seed,
      carry_context=setting.carry_context):
    parts.extend(animator.render_motion(portrait, motion))
  frames = np.concatenate(parts)[:len(clip.frames)]
  if frames.shape[1] != clip.frames.shape[1]:
    import cv2
    s = clip.frames.shape[1]
    frames = np.stack([cv2.resize(f, (s, s), interpolation=cv2.INTER_LINEAR) for f in frames])
  return frames, time.perf_counter() - t0


# ----------------------------------------------------------------------------- aggregation

METRICS = ("sync_c", "sync_d", "in_sync", "sync_offset", "mouth_r", "mouth_lag", "mouth_std",
           "delta_p", "pose_jitter", "mouth_jitter", "identity_dist", "face_found")


def summarize(rows: Sequence[dict]) -> dict:
  out: dict[str, Any] = {"clips": len(rows)}
  for k in METRICS:
    v = np.asarray([r[k] for r in rows if k in r and np.isfinite(r[k])], np.float64)
    if v.size:
      out[k] = float(np.mean(v))
      if k in ("sync_c", "sync_d", "mouth_r"):
        out[k + "_median"] = float(np.median(v))
  return out


# ----------------------------------------------------------------------------- plots (SVG)

def _z(x):
  x = np.asarray(x, np.float64)
  return (x - x.mean()) / (x.std() + 1e-9)


def plots(traces: dict) -> dict[str, str]:
  """{file name: svg} from the traces of the first real clip (real / generated) and the
  per-row mean sync offset curves."""
  out = {}
  real, gen = traces.get("real"), traces.get("generated")
  if real is not None and gen is not None:
    t = np.arange(len(real["envelope"])) / FPS
    tg = np.arange(len(gen["mouth"])) / FPS
    out["mouth_vs_audio.svg"] = svg_panels([
        {"title": "real footage: mouth opening vs audio energy (z-scored)", "xlabel": "seconds",
         "ylabel": "z", "series": [("audio RMS", t, _z(real["envelope"])),
                                   ("mouth (real)", t, _z(real["mouth"]))]},
        {"title": "generated from the first frame + the same audio", "xlabel": "seconds",
         "ylabel": "z", "series": [("audio RMS", t, _z(real["envelope"])),
                                   ("mouth (generated)", tg, _z(gen["mouth"]))]},
    ])
    out["pose_traces.svg"] = svg_panels([
        {"title": f"{name} (degrees)", "xlabel": "seconds", "ylabel": "deg",
         "series": [("real", t, real["angles"][:, i]), ("generated", tg, gen["angles"][:, i])]}
        for i, name in enumerate(("yaw", "pitch", "roll"))], panel_height=170)
  curves = traces.get("offset_curves") or {}
  if curves:
    series = [(label, np.asarray(c[0]), np.asarray(c[1])) for label, c in curves.items()]
    out["sync_offsets.svg"] = svg_panels([
        {"title": "SyncNet distance vs audio offset (mean over real clips; min = best offset)",
         "xlabel": "offset (frames)", "ylabel": "distance", "series": series}], panel_height=260)
  return out


# ----------------------------------------------------------------------------- report

def _fmt(v, nd=3):
  if v is None or (isinstance(v, float) and not np.isfinite(v)):
    return "–"
  return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
  lines = ["# vasa-jax evaluation report", ""]
  s = report["settings"]
  lines += [f"Checkpoint: `{s['checkpoint']}`. Clips: up to {s['max_clips']} per set, first "
            f"{s['max_seconds']:g} s. Default sampling: {s['steps']} steps, CFG audio "
            f"{s['cfg_audio']:g}, gaze {s['cfg_gaze']:g}. Generated on {s['device']} in "
            f"{report['timing']['generate_s']:.0f} s ({report['timing']['s_per_s']:.2f} s of "
            f"compute per second of video, compilation included; warm figures: "
            f"benchmarks/animate.py). Rows \"footage\" measure the held-out clips themselves: "
            f"the reference every generated row is compared with.", ""]
  head = ("| set | row | clips | Sync-C ↑ | Sync-D ↓ | in sync | mouth r (lag) | "
          "ΔP °/f | pose jitter | identity dist ↓ |")
  lines += ["## Lip-sync and head motion", "", head, "|" + "---|" * 10]
  for group, rows in report["rows"].items():
    for row, m in rows.items():
      lag = f" ({m['mouth_lag']:+.1f})" if "mouth_lag" in m else ""
      lines.append(
          f"| {group} | {row} | {m['clips']} | {_fmt(m.get('sync_c'))} | {_fmt(m.get('sync_d'))} "
          f"| {_fmt(m.get('in_sync'), 2)} | {_fmt(m.get('mouth_r'))}{lag} "
          f"| {_fmt(m.get('delta_p'), 2)} | {_fmt(m.get('pose_jitter'), 2)} "
          f"| {_fmt(m.get('identity_dist'))} |")
  lines += ["", "## Self-reenactment (stage 1)", "",
            "| set | clips | PSNR dB | SSIM | face PSNR dB | face SSIM | mouth L1 | eye L1 |",
            "|---|---|---|---|---|---|---|---|"]
  for group, r in report.get("reenactment", {}).items():
    lines.append(f"| {group} | {r['clips']} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'], 3)} "
                 f"| {_fmt(r.get('psnr_face'), 2)} | {_fmt(r.get('ssim_face'), 3)} "
                 f"| {_fmt(r.get('mouth_l1'), 2)} | {_fmt(r.get('eye_l1'), 2)} |")
  if not report.get("reenactment"):
    lines.append("| (none: no geometry motion dataset, see --reenact) | | | | | | | |")
  lines += [""]
  for name, title in (("mouth_vs_audio.svg", "Mouth opening vs audio energy"),
                      ("pose_traces.svg", "Head pose traces"),
                      ("sync_offsets.svg", "Sync offset curves")):
    if name in report.get("plots", []):
      lines += [f"### {title}", "", f"![{title}]({name})", ""]
  if report.get("evaluators"):
    lines += ["## Are the evaluators meaningful?", "",
              "Validation of each evaluator on held-out clips (docs/evaluators/*.json):", "",
              "```json", json.dumps(report["evaluators"], indent=1)[:6000], "```", ""]
  doc = (__doc__ or "").split("\n\n", 2)
  lines += ["## What each number means", "", "```", doc[2].strip() if len(doc) > 2 else "",
            "```", ""]
  return "\n".join(lines)


def _evaluator_summaries() -> dict:
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__)))), "docs", "evaluators")
  out = {}
  for name in ("syncnet", "meshsync"):
    p = os.path.join(here, f"{name}.json")
    if os.path.exists(p):
      with open(p) as f:
        d = json.load(f)
      out[name] = d.get("summary", d)
  return out


def resolved(animator, setting: Setting) -> Setting:
  """The setting with the bundle's sampler defaults filled in (what was actually sampled)."""
  d = animator.engine.sampler
  return dataclasses.replace(
      setting, cfg_audio=d.cfg_audio if setting.cfg_audio is None else float(setting.cfg_audio),
      cfg_gaze=d.cfg_gaze if setting.cfg_gaze is None else float(setting.cfg_gaze),
      steps=d.steps if setting.steps is None else int(setting.steps))


def run(animator, clips_by_group: dict[str, list[Clip]], *, settings: Sequence[Setting],
        out_dir: str, ev: Evaluators | None = None, seed: int = 0, reenact_frames: int = 8,
        reenactment: dict | None = None, progress=None) -> dict:
  """Measures every clip (real, shifted, mismatched) and every generation setting; writes the
  JSON, the markdown and the plots into out_dir; returns the report dict. reenactment: the
  self-reenactment rows of a geometry bundle (`geometry_reenactment`), by set name; a
  learned-flow bundle measures its own on the clips."""
  import jax

  from vasa_jax.media import atomic_output
  ev = ev or load_evaluators(animator)
  settings = [resolved(animator, st) for st in settings]
  rows: dict[str, dict] = {}
  per_clip: dict[str, dict] = {}
  traces: dict[str, Any] = {}
  curves: dict[str, list] = {}
  gen_s, video_s = 0.0, 0.0
  reen = dict(reenactment or {})
  for group, clips in clips_by_group.items():
    if not clips:
      continue
    acc: dict[str, list] = {}

    def add(row, clip, m, _acc=acc, _group=group):
      tr = m.pop("_traces", None)
      if tr is not None and _group == "real":
        curves.setdefault(row, []).append((tr["sync_offsets"], tr["sync_dists"]))
        if clip is clips[0] and row in ("footage", settings[0].name):
          traces["real" if row == "footage" else "generated"] = tr
      _acc.setdefault(row, []).append(m)
      per_clip.setdefault(group, {}).setdefault(row, []).append({"clip": clip.name, **m})

    for i, clip in enumerate(clips):
      other = clips[(i + 1) % len(clips)]
      add("footage", clip, video_metrics(ev, clip.frames, clip.audio,
                                              keep_traces=True))
      add(f"footage, audio delayed {SHIFT_FRAMES} frames", clip,
          video_metrics(ev, clip.frames, delay_audio(clip.audio, SHIFT_FRAMES), keep_traces=True))
      if len(clips) > 1:
        n = min(len(clip.frames), len(other.frames))
        add("footage, another clip's audio", clip,
            video_metrics(ev, clip.frames[:n], other.audio[:n * SPF], keep_traces=True))
      for st in settings:
        frames, secs = generate(animator, clip, st, seed=seed)
        gen_s += secs
        video_s += len(frames) / FPS
        add(st.name, clip, video_metrics(ev, frames, clip.audio, keep_traces=True))
      if progress:
        progress(group, i + 1, len(clips))
    rows[group] = {row: summarize(ms) for row, ms in acc.items()}
  if curves:
    traces["offset_curves"] = {row: (np.asarray(c[0][0]), np.mean([d for _, d in c], axis=0))
                               for row, c in curves.items()}
  figs = plots(traces)
  report = {
      "settings": {"checkpoint": _display_path(animator.checkpoint), "device": jax.devices()[0].platform,
                   "settings": [dataclasses.asdict(s) for s in settings],
                   "steps": settings[0].steps, "cfg_audio": settings[0].cfg_audio,
                   "cfg_gaze": settings[0].cfg_gaze, "seed": seed,
                   "max_clips": max(len(c) for c in clips_by_group.values()),
                   "max_seconds": max((len(c.frames) for cs in clips_by_group.values()
                                       for c in cs), default=0) / FPS},
      "timing": {"generate_s": gen_s, "video_s": video_s,
                 "s_per_s": gen_s / video_s if video_s else float("nan")},
      "rows": rows, "reenactment": reen, "plots": sorted(figs),
      "evaluators": _evaluator_summaries(), "per_clip": per_clip,
  }
  os.makedirs(out_dir, exist_ok=True)
  for name, svg in figs.items():
    with atomic_output(os.path.join(out_dir, name)) as tmp, open(tmp, "w") as f:
      f.write(svg)
  with atomic_output(os.path.join(out_dir, "report.json")) as tmp, open(tmp, "w") as f:
    json.dump(report, f, indent=1, default=_json_default)
  with atomic_output(os.path.join(out_dir, "report.md")) as tmp, open(tmp, "w") as f:
    f.write(markdown(report))
  return report


def geometry_reenactment(animator, dataset: str, *, data_dir: str | None, max_clips: int,
                         embedder=None) -> dict:
  """{dataset: self-reenactment means} of a geometry bundle on the held-out clips of a geometry
  motion dataset (NAME:SPLIT), measured by vasa_jax/eval/geo_reenact.py (the same figures as
  `vasa-jax eval reenact`). FileNotFoundError when the dataset is not there."""
  from vasa_jax import config_utils
  from vasa_jax.data import geometry_pairs
  from vasa_jax.eval import geo_reenact, metrics
  name, split = metrics.parse_dataset(dataset)
  data_dir = data_dir or config_utils.DEFAULT_DATA_DIR
  geo = metrics.open_dataset(name, split, data_dir)
  clips = geometry_pairs.GeometryClips(geo, data_dir)
  r = geo_reenact.evaluate(animator, geo, clips, max_clips=max_clips, embedder=embedder)
  keys = ("psnr", "ssim", "psnr_face", "ssim_face", "mouth_l1", "eye_l1", "mouth_gain",
          "baseline_psnr_face", "baseline_mouth_l1")
  return {dataset: {"clips": r["clips"], **{k: r["mean"].get(k) for k in keys}}}


def _display_path(path: str) -> str:
  """A path relative to the working directory when it lies under it (portable reports)."""
  rel = os.path.relpath(os.path.abspath(path))
  return path if rel.startswith("..") else rel


def _json_default(o):
  if isinstance(o, np.generic):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  return str(o)


# ----------------------------------------------------------------------------- CLI

def _floats(text: str) -> list[float]:
  return [float(x) for x in text.split(",") if x.strip()] if text else []


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="vasa-jax eval report", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", default=None, help="bundle folder (default: the bundled demo)")
  p.add_argument("--data-dir", default=None, help="TFDS data dir holding the evaluation sets")
  p.add_argument("--real", default="talking_face_videos/r256:test",
                 help="held-out real footage, NAME:SPLIT ('' to skip)")
  p.add_argument("--synthetic", default="",
                 help="held-out synthetic identities too, NAME:SPLIT (e.g. "
                      "synthetic_talking_heads/r256_n1000:test; default: none)")
  p.add_argument("--max-clips", type=int, default=12, help="clips per set")
  p.add_argument("--max-seconds", type=float, default=6.0, help="first seconds of each clip")
  p.add_argument("--steps", type=int, default=None, help="default: the bundle's")
  p.add_argument("--cfg-audio", type=float, default=None, help="default: the bundle's")
  p.add_argument("--cfg-gaze", type=float, default=None, help="default: the bundle's")
  p.add_argument("--reenact", default="motion_latents/geo:test",
                 help="geometry motion dataset NAME:SPLIT for the self-reenactment rows of a "
                      "geometry bundle (vasa_jax/eval/geo_reenact.py; '' to skip)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--ablate-cfg-audio", default="", help="extra rows: comma-separated CFG scales")
  p.add_argument("--ablate-steps", default="", help="extra rows: comma-separated step counts")
  p.add_argument("--ablate-no-prev", action="store_true",
                 help="extra row: no previous-window conditioning")
  p.add_argument("--out", default="docs/eval")
  return p


def settings_from_args(args) -> list[Setting]:
  base = Setting(name="generated", cfg_audio=args.cfg_audio, cfg_gaze=args.cfg_gaze,
                 steps=args.steps)
  out = [base]
  for x in _floats(args.ablate_cfg_audio):
    out.append(dataclasses.replace(base, name=f"generated, CFG audio {x:g}", cfg_audio=x))
  for n in _floats(args.ablate_steps):
    out.append(dataclasses.replace(base, name=f"generated, {int(n)} steps", steps=int(n)))
  if args.ablate_no_prev:
    out.append(dataclasses.replace(base, name="generated, no previous-window conditioning",
                                   carry_context=False))
  return out


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  from vasa_jax.animate import AnimateError, Animator
  try:
    animator = Animator(args.checkpoint)
    ev = load_evaluators(animator)
  except (AnimateError, FileNotFoundError, ValueError) as e:
    print(f"vasa-jax eval report: {e}", file=sys.stderr)
    return 2
  groups = {}
  try:
    for group, ds in (("real", args.real), ("synthetic", args.synthetic)):
      if ds:
        groups[group] = load_clips(ds, group, data_dir=args.data_dir, max_clips=args.max_clips,
                                   max_seconds=args.max_seconds)
  except FileNotFoundError as e:
    print(f"vasa-jax eval report: {e}", file=sys.stderr)
    return 2
  if not any(groups.values()):
    print("vasa-jax eval report: no clips to evaluate (--real / --synthetic)", file=sys.stderr)
    return 2

  from vasa_jax.progress import Bar
  bars: dict = {}

  def progress(group, i, n):     # one line per group, on a terminal only
    bars.setdefault(group, Bar(n, f"{group} clips"))(i, n)

  reen = None
  if args.reenact:
    try:
      reen = geometry_reenactment(animator, args.reenact, data_dir=args.data_dir,
                                  max_clips=args.max_clips)
    except (FileNotFoundError, ValueError) as e:
      log.warning("self-reenactment skipped (%s): %s", args.reenact, str(e).splitlines()[0])
  report = run(animator, groups, settings=settings_from_args(args), out_dir=args.out, ev=ev,
               seed=args.seed, reenactment=reen, progress=progress)
  print(json.dumps({"out": os.path.abspath(args.out), "rows": report["rows"],
                    "reenactment": report["reenactment"], "timing": report["timing"]},
                   indent=1, default=_json_default))
  return 0


if __name__ == "__main__":
  sys.exit(main())

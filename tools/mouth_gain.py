"""How far stage 2 opens the mouth for voices it never heard, against how far real speakers do:
the mouth gain of a bundle (`vasa-jax export --mouth-gain`), set on the TRAIN split only.

    python tools/mouth_gain.py --data-dir DATA [--checkpoint BUNDLE] [--out docs/motion_eval]

Footage: every talking_face_videos clip of motion_latents/geo:train, its measured canonical
inner-lip gap (points 13 / 14, template units) over its first --seconds; per clip the 90th
percentile and the share of frames open past OPEN (the median over clips is the target).
Generated: the bundle's stage 2 on speech files of ../shared/real/audio that no clip of the
data speaks and that the held-out evaluation (tools/part_eval.py) does not use (TUNE_AUDIO),
each driving the first frame of a train clip; the same figures on the codes it asks for (the
portrait's canonical mesh plus the expression change, `codes.inner_gap`), with a mouth gain
of 1. The gain is the footage's median 90th percentile over the generated one.

The held-out check is separate: --heldout reports the asked openings against the footage's on
the test split's clips (their own audio, medians over identities), with the bundle's gain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REAL = os.path.join(os.path.dirname(ROOT), "shared", "real")
OPEN = 0.06          # canonical inner-lip gap (eye-corner distances) counted as open
# Speech of people no clip shows, in five languages; none is in part_eval.EVAL_AUDIO.
TUNE_AUDIO = ("echomimic__echomimic_en.flac", "atvgnet__test.flac", "echomimicv3__01.flac",
              "echomimicv3__2025-07-14-1036.flac", "dreamtalk__German2.flac",
              "echomimic__chunnuanhuakai.flac", "hallo__3.flac", "multitalk__single_1.flac",
              "musetalk__sun.flac", "atvgnet__mocle_cut.flac",
              "echomimicv2__echomimicv2_woman.flac", "dreamtalk__German3.flac")


def gap_figures(gap: np.ndarray) -> dict:
  return {"p90": float(np.percentile(gap, 90)), "open": float((gap > OPEN).mean()),
          "std": float(gap.std())}


def footage(data_dir: str, split: str, seconds: float) -> list[dict]:
  from vasa_jax.data import pipeline
  from vasa_jax.geometry import banks
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.bundle import default_dir
  basis = codes_lib.FaceBasis.load(os.path.join(default_dir(), codes_lib.BASIS_FILE))
  geo = pipeline.open_source("motion_latents/geo", split, data_dir)
  rows = []
  for i in range(len(geo)):
    rec = geo[i]
    ds = rec["dataset"].decode() if isinstance(rec["dataset"], bytes) else str(rec["dataset"])
    if not ds.startswith("talking_face_videos"):
      continue
    t = int(rec["num_frames"])
    pts = np.asarray(rec["landmarks"], np.float32).reshape(t, -1, 3)[:int(seconds * 25)]
    valid = np.asarray(rec["landmarks_valid"], bool)[:len(pts)]
    _, _, can = banks.skull(pts[valid], basis.template)
    rows.append(gap_figures(codes_lib.inner_gap(can)))
  return rows


def generated(anim, data_dir: str, audio_files, seconds: float, steps: int, seed: int,
              mouth_gain: float = 1.0) -> list[dict]:
  from vasa_jax import media
  from vasa_jax.data import geometry_pairs, pipeline, records
  from vasa_jax.geometry import codes as codes_lib
  geo = pipeline.open_source("motion_latents/geo", "train", data_dir)
  clips = geometry_pairs.GeometryClips(geo, data_dir)
  seen, portraits = set(), []
  for i in range(len(geo)):
    rec = clips[i]
    ident = rec["identity"].decode() if isinstance(rec["identity"], bytes) else str(rec["identity"])
    if ident in seen or "talking_face_videos" not in ident:
      continue
    seen.add(ident)
    pts = np.asarray(rec["landmarks"], np.float32).reshape(int(rec["num_frames"]), -1, 3)
    portraits.append((records.decode_jpeg(bytes(rec["frames"][0])), pts[0]))
  rows = []
  for n, name in enumerate(audio_files):
    frame, pts = portraits[(7 * n) % len(portraits)]
    p = anim.portrait_from_landmarks(frame, pts)
    pg = p.geometry
    a = media.load_audio(os.path.join(REAL, "audio", name))[:int(seconds * 16000)]
    m = np.concatenate([x for _, x in anim.motion_windows(p, a, steps=steps, seed=seed,
                                                          mouth_gain=mouth_gain)])
    k = pg.basis.exp_dim
    a_vec = pg.basis.exp_basis[:, 14, 1] - pg.basis.exp_basis[:, 13, 1]
    gap = codes_lib.inner_gap(pg.codes.canonical[0]) + (m[:, 6:6 + k] - pg.codes.dyn[0, :k]) @ a_vec
    rows.append({"audio": name, **gap_figures(gap)})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def heldout(anim, data_dir: str, seconds: float, steps: int, seed: int,
            max_clips_per_identity: int = 3) -> dict:
  """The held-out check: on the test split's clips (identities never trained on), the mouth
  openings stage 2 asks for from each clip's own audio, decoded on its first frame, next to the
  openings the footage shows; medians over identities (one identity holds most clips)."""
  from vasa_jax.data import geometry_pairs, pipeline, records
  from vasa_jax.geometry import banks
  from vasa_jax.geometry import codes as codes_lib
  geo = pipeline.open_source("motion_latents/geo", "test", data_dir)
  clips = geometry_pairs.GeometryClips(geo, data_dir)
  per: dict = {}
  for i in range(len(geo)):
    rec = clips[i]
    ident = rec["identity"].decode() if isinstance(rec["identity"], bytes) else str(rec["identity"])
    if "talking_face_videos" not in ident or len(per.get(ident, [])) >= max_clips_per_identity:
      continue
    t = min(int(rec["num_frames"]), int(seconds * 25))
    pts = np.asarray(rec["landmarks"], np.float32).reshape(int(rec["num_frames"]), -1, 3)
    p = anim.portrait_from_landmarks(records.decode_jpeg(bytes(rec["frames"][0])), pts[0])
    pg = p.geometry
    audio = records.audio_to_float(rec["audio"])[:t * 640]
    m = np.concatenate([x for _, x in anim.motion_windows(p, audio, steps=steps, seed=seed)])[:t]
    k = pg.basis.exp_dim
    a_vec = pg.basis.exp_basis[:, 14, 1] - pg.basis.exp_basis[:, 13, 1]
    gen = codes_lib.inner_gap(pg.codes.canonical[0]) + (m[:, 6:6 + k] - pg.codes.dyn[0, :k]) @ a_vec
    _, _, can = banks.skull(pts[:t], pg.basis.template)
    real = codes_lib.inner_gap(can)
    per.setdefault(ident, []).append((gap_figures(real), gap_figures(gen)))
  rows = {k: {"footage": {f: float(np.median([r[f] for r, _ in v])) for f in ("p90", "open")},
              "asked": {f: float(np.median([g[f] for _, g in v])) for f in ("p90", "open")},
              "clips": len(v)} for k, v in per.items()}
  med = lambda side, f: float(np.median([r[side][f] for r in rows.values()]))
  return {"split": "test", "identities": len(rows),
          "footage": {f: med("footage", f) for f in ("p90", "open")},
          "asked": {f: med("asked", f) for f in ("p90", "open")},
          "asked_over_footage_p90": med("asked", "p90") / max(med("footage", "p90"), 1e-9),
          "per_identity": rows}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data-dir", required=True)
  p.add_argument("--checkpoint", default=None, help="bundle (default: the bundled demo)")
  p.add_argument("--seconds", type=float, default=8.0)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None, help="folder for mouth_gain.json")
  p.add_argument("--heldout", action="store_true",
                 help="report the asked openings against the test split's footage instead "
                      "(the bundle's gain in effect; nothing is tuned)")
  args = p.parse_args(argv)
  from vasa_jax import animate as an
  anim = an.Animator(args.checkpoint)
  if args.heldout:
    rep = heldout(anim, args.data_dir, args.seconds, args.steps, args.seed)
    rep["mouth_gain"] = anim.engine.sampler.mouth_gain
    print(json.dumps({k: v for k, v in rep.items() if k != "per_identity"}, indent=1))
    if args.out:
      os.makedirs(args.out, exist_ok=True)
      with open(os.path.join(args.out, "mouth_heldout.json"), "w") as f:
        json.dump(rep, f, indent=1)
    return 0
  real = footage(args.data_dir, "train", args.seconds)
  gen = generated(anim, args.data_dir, TUNE_AUDIO, args.seconds, args.steps, args.seed)
  med = lambda rows, k: float(np.median([r[k] for r in rows]))
  gain = med(real, "p90") / max(med(gen, "p90"), 1e-6)
  out = {"split": "train", "footage_clips": len(real), "tune_audio": list(TUNE_AUDIO),
         "footage": {k: med(real, k) for k in ("p90", "open", "std")},
         "generated_gain_1": {k: med(gen, k) for k in ("p90", "open", "std")},
         "mouth_gain": round(float(np.clip(gain, 1.0, 2.0)), 2), "per_audio": gen}
  print(json.dumps({k: v for k, v in out.items() if k != "per_audio"}, indent=1))
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mouth_gain.json"), "w") as f:
      json.dump(out, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

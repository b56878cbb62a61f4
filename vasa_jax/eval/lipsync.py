"""Stage-2 lip-sync of sampled motion on held-out clips with a ground-truth mouth track.

    vasa-jax eval lipsync --checkpoint BUNDLE --dataset motion_latents/demo:test \
        --data-dir DIR [--max-clips 32] [--steps N] [--cfg-audio X] [--out docs/stage2_eval]

The motion latents are not mouth measurements, so a linear read-out ("mouth probe") is fitted
first: ridge regression from the stage-1 motion latent m_t = [z_pose, z_dyn] to the synthetic
mouth-opening label, on the TRAIN split of the motion dataset (frames of clips with has_mouth).
Then, for every held-out clip with a mouth track:

  sampled    MotionDiT motion generated from the clip's own audio (first window conditioned on
             the clip's first-frame latent, as `Animator` does with a portrait), read out by
             the probe, correlated (Pearson, over time) with the ground-truth mouth opening;
  lag        the shift in frames (|lag| <= 5) that maximises that correlation (0 = in sync;
             positive = the generated mouth lags the audio);
  encoded    the same correlation for the probe applied to the clip's own encoded latents:
             the ceiling the probe allows (how much mouth the latent space carries);
  mismatched motion generated from ANOTHER held-out clip's audio against this clip's mouth
             track: the chance level (should be ~0); sampled >> mismatched means the motion
             follows the audio.

Writes OUT/lipsync.json (summary + per clip) and prints the summary.
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
from vasa_jax.errors import InputError

MAX_LAG = 5


def _corr(a: np.ndarray, b: np.ndarray) -> float:
  a = np.asarray(a, np.float64) - np.mean(a)
  b = np.asarray(b, np.float64) - np.mean(b)
  den = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / den) if den > 1e-12 else 0.0


def lagged_corr(pred: np.ndarray, gt: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, int]:
  """(best correlation, lag): pred[t + lag] vs gt[t]."""
  best = (-2.0, 0)
  n = min(len(pred), len(gt))
  for lag in range(-max_lag, max_lag + 1):
    if lag >= 0:
      p, g = pred[lag:n], gt[:n - lag]
    else:
      p, g = pred[:n + lag], gt[-lag:n]
    if len(p) > 10:
      c = _corr(p, g)
      if c > best[0]:
        best = (c, lag)
  return best



class MouthProbe:
  """Ridge regression motion latent [D] -> mouth opening (standardised inputs)."""

  def __init__(self, alpha: float = 1.0):
    self.alpha = alpha

  def fit(self, x: np.ndarray, y: np.ndarray) -> "MouthProbe":
    x = np.asarray(x, np.float64)
    self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
    z = (x - self.mu) / self.sd
    self.ym = float(np.mean(y))
    a = z.T @ z + self.alpha * len(z) * 1e-3 * np.eye(z.shape[1])
    self.w = np.linalg.solve(a, z.T @ (np.asarray(y, np.float64) - self.ym))
    return self

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float64) - self.mu) / self.sd) @ self.w + self.ym


def _records(name: str, split: str, data_dir: str | None, limit: int | None):
  from vasa_jax.data import pipeline
  src = pipeline.open_source(name, split, data_dir=data_dir)
  out = []
  for i in range(len(src)):
    rec = src[i]
    if int(rec["has_mouth"]):
      out.append(rec)
      if limit and len(out) >= limit:
        break
  return out


def evaluate(animator, dataset: str, *, data_dir: str | None = None, split: str = "test",
             max_clips: int = 32, probe_clips: int = 300, steps: int | None = None,
             cfg_audio: float | None = None, seed: int = 0) -> dict:
  """steps / cfg_audio None: the bundle's own sampler defaults (recorded as used)."""
  from vasa_jax import animate as an
  from vasa_jax.data import records
  t0 = time.perf_counter()
  defaults = animator.engine.sampler
  steps = defaults.steps if steps is None else int(steps)
  cfg_audio = defaults.cfg_audio if cfg_audio is None else float(cfg_audio)
  train = _records(dataset, "train", data_dir, probe_clips)
  if not train:
    raise InputError(f"{dataset}: no train clips with a mouth track to fit the probe on")
  x = np.concatenate([np.asarray(r["motion"], np.float32)[:int(r["num_frames"])] for r in train])
  y = np.concatenate([np.asarray(r["mouth"], np.float32)[:int(r["num_frames"]), 0] for r in train])
  probe = MouthProbe().fit(x, y)
  fit_r = _corr(probe(x), y)
  test = _records(dataset, split, data_dir, max_clips)
  if len(test) < 2:
    raise InputError(f"{dataset}:{split}: need at least 2 clips with a mouth track, found {len(test)}")

  def sample(first_motion, audio):
    portrait = an.Portrait(image=None, crop=None, box=None, prepared=None,
                           motion=np.asarray(first_motion, np.float32), faces_found=1)
    return np.concatenate([m for _, m in animator.motion_windows(
        portrait, audio, steps=steps, cfg_audio=cfg_audio, cfg_gaze=0.0, seed=seed)])

  clips = []
  audios = [records.audio_to_float(r["audio"]) for r in test]
  for i, rec in enumerate(test):
    n = int(rec["num_frames"])
    gt = np.asarray(rec["mouth"], np.float32)[:n, 0]
    motion = np.asarray(rec["motion"], np.float32)[:n]
    gen = sample(motion[0], audios[i])[:n]
    other = audios[(i + 1) % len(test)]
    need = len(audios[i])
    other = np.tile(other, int(np.ceil(need / len(other))))[:need]
    mis = sample(motion[0], other)[:n]
    c, lag = lagged_corr(probe(gen), gt)
    clips.append({
        "clip": _text(rec.get("clip_id", str(i))),
        "frames": n,
        "sampled_r": round(_corr(probe(gen), gt), 4),
        "sampled_best_r": round(c, 4), "sampled_lag": lag,
        "encoded_r": round(_corr(probe(motion), gt), 4),
        "mismatched_r": round(_corr(probe(mis), gt), 4),
        "sampled_mouth_std": round(float(np.std(probe(gen))), 4),
        "gt_mouth_std": round(float(np.std(gt)), 4),
    })

  def stat(k):
    v = np.array([c[k] for c in clips], np.float64)
    return {"mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4)}
  lags = np.array([c["sampled_lag"] for c in clips])
  return {
      "dataset": f"{dataset}:{split}", "clips": len(clips), "steps": steps,
      "cfg_audio": cfg_audio, "probe": {"train_clips": len(train), "train_frames": int(len(x)),
                                        "fit_r": round(fit_r, 4)},
      "sampled_r": stat("sampled_r"), "sampled_best_r": stat("sampled_best_r"),
      "sampled_lag": {"median": float(np.median(lags)), "mean_abs": round(float(np.abs(lags).mean()), 2)},
      "encoded_r": stat("encoded_r"), "mismatched_r": stat("mismatched_r"),
      "seconds": round(time.perf_counter() - t0, 1),
      "per_clip": clips,
  }


def _parser():
  p = argparse.ArgumentParser(prog="vasa-jax eval lipsync", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  p.add_argument("--dataset", required=True, help="motion_latents/NAME:SPLIT")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--max-clips", type=int, default=32)
  p.add_argument("--probe-clips", type=int, default=300)
  p.add_argument("--steps", type=int, default=None, help="default: the bundle's")
  p.add_argument("--cfg-audio", type=float, default=None, help="default: the bundle's")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="docs/stage2_eval")
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  args = _parser().parse_args(argv)
  from vasa_jax import animate as an
  name, _, split = args.dataset.partition(":")
  try:
    anim = an.Animator(args.checkpoint)
    rep = evaluate(anim, name, data_dir=args.data_dir, split=split or "test",
                   max_clips=args.max_clips, probe_clips=args.probe_clips, steps=args.steps,
                   cfg_audio=args.cfg_audio, seed=args.seed)
  except (an.AnimateError, ValueError, FileNotFoundError) as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "lipsync.json")
  tmp = path + ".partial"
  with open(tmp, "w") as f:
    json.dump(rep, f, indent=1)
  os.replace(tmp, path)
  print(json.dumps({k: v for k, v in rep.items() if k != "per_clip"}, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

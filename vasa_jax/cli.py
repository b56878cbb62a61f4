"""The `vasa-jax` command line (also `python -m vasa_jax`).

  vasa-jax synth --out DIR --clips N --seconds S --size PX --seed K
  vasa-jax data build NAME [--data-dir DIR] [--manual-dir DIR]
  vasa-jax data info NAME [--data-dir DIR]
  vasa-jax train --config configs/face_latent.py:demo --workdir DIR [--config.key=value ...]
  vasa-jax eval reenact --config configs/face_latent.py:demo --workdir DIR --dataset NAME:SPLIT
  vasa-jax demo [--out DIR]

Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

DEFAULT_DATA_DIR = os.environ.get("VASA_JAX_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


class UsageError(Exception):
  """Bad input from the user: reported in one line, exit status 2."""


def _progress(total: int, label: str):
  start = time.perf_counter()
  done = [0]

  def update(_=None):
    done[0] += 1
    el = time.perf_counter() - start
    eta = el / done[0] * (total - done[0])
    end = "\n" if done[0] == total else ""
    print(f"\r{label}: {done[0]}/{total} [{el:6.1f}s elapsed, ETA {eta:6.1f}s]", end=end,
          file=sys.stderr, flush=True)

  return update


# ----------------------------------------------------------------------------- synth

def cmd_synth(args) -> int:
  from vasa_jax.synth import corpus
  if args.clips < 1 or args.seconds <= 0 or not 32 <= args.size <= 2048:
    raise UsageError("need --clips >= 1, --seconds > 0 and 32 <= --size <= 2048")
  t0 = time.perf_counter()
  results = corpus.build_corpus(
      args.out, clips=args.clips, seconds=args.seconds, size=args.size, seed=args.seed,
      clips_per_identity=args.clips_per_identity, workers=args.workers,
      progress=_progress(args.clips, "rendering clips"))
  dt = time.perf_counter() - t0
  frames = int(round(args.seconds * 25)) * len(results)
  print(json.dumps({"out": os.path.abspath(args.out), "clips": len(results), "frames": frames,
                    "seconds": round(dt, 2), "frames_per_second": round(frames / dt, 1)}))
  return 0


# ----------------------------------------------------------------------------- data

def _builder(args):
  import tensorflow_datasets as tfds

  import vasa_jax.data  # noqa: F401  (registers the builders)
  kwargs = {}
  if args.workers:
    kwargs["workers"] = args.workers
  if getattr(args, "identity_map", None):
    kwargs["identity_map"] = args.identity_map
  if getattr(args, "max_videos", None):
    kwargs["max_videos"] = args.max_videos
  name = args.name
  if name.split("/")[0] not in ("synthetic_talking_heads", "talking_face_videos"):
    raise UsageError(f"unknown dataset {name!r}: use synthetic_talking_heads/<config> or "
                     "talking_face_videos/<config>")
  try:
    return tfds.builder(name, data_dir=args.data_dir, **kwargs)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise UsageError(str(e).splitlines()[0]) from None


def cmd_data_build(args) -> int:
  import tensorflow_datasets as tfds
  builder = _builder(args)
  dl_config = None
  if args.manual_dir:
    if not os.path.isdir(args.manual_dir):
      raise UsageError(f"--manual-dir is not a folder: {args.manual_dir}")
    dl_config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
  elif builder.name == "talking_face_videos":
    raise UsageError("talking_face_videos needs --manual-dir pointing at a folder of videos")
  t0 = time.perf_counter()
  builder.download_and_prepare(download_config=dl_config, file_format="array_record")
  info = {"dataset": builder.info.full_name, "data_dir": os.fspath(builder.data_path),
          "splits": {k: v.num_examples for k, v in builder.info.splits.items()},
          "seconds": round(time.perf_counter() - t0, 1)}
  skipped = getattr(builder, "skipped", None)
  if skipped is not None:
    reasons = {}
    for _, r in skipped:
      reasons[r.split(":")[0]] = reasons.get(r.split(":")[0], 0) + 1
    info["skipped"] = reasons
  print(json.dumps(info, indent=1))
  return 0


def cmd_data_info(args) -> int:
  builder = _builder(args)
  if not builder.is_prepared():
    raise UsageError(f"{args.name} is not built in {args.data_dir}; run `vasa-jax data build {args.name}`")
  out = {"dataset": builder.info.full_name, "data_dir": os.fspath(builder.data_path), "splits": {}}
  for split, si in builder.info.splits.items():
    src = builder.as_data_source(split=split)
    ids = set()
    frames = 0
    for i in range(len(src)):
      rec = src[i]
      ids.add(rec["identity"])
      frames += int(rec["num_frames"])
    out["splits"][split] = {"clips": len(src), "identities": len(ids), "frames": frames,
                            "hours": round(frames / 25 / 3600, 3), "bytes": si.num_bytes}
  print(json.dumps(out, indent=1))
  return 0


# ----------------------------------------------------------------------------- train

TRAINERS = {"face_latent": "vasa_jax.train.face_latent", "motion_dit": "vasa_jax.train.motion_dit"}


def load_config(spec: str, overrides=()):
  """`configs/face_latent.py:demo` (+ `--config.a.b=value` overrides) -> ConfigDict."""
  from vasa_jax import config_utils
  path, _, arg = spec.partition(":")
  try:
    module = config_utils.load_config_module(path)
  except FileNotFoundError as e:
    raise UsageError(str(e)) from None
  try:
    config = module.get_config(arg or None)
  except (ValueError, KeyError) as e:
    raise UsageError(f"{spec}: {e}") from None
  for item in overrides:
    key, eq, _ = item.partition("=")
    if not key.startswith("--config.") or not eq:
      raise UsageError(f"unrecognised argument {item!r} (overrides look like --config.a.b=value)")
    try:
      config_utils.apply_override(config, item[len("--config."):])
    except KeyError:
      raise UsageError(f"{key}: no such config field") from None
  return config


def cmd_train(args, extra) -> int:
  import importlib
  config = load_config(args.config, extra)
  stage = config.get("stage")
  if stage not in TRAINERS:
    raise UsageError(f"config has stage={stage!r}; trainers exist for {sorted(TRAINERS)}")
  logging.getLogger().setLevel(logging.INFO)
  from vasa_jax import distributed
  distributed.initialize()  # multi-process (TPU pod / SLURM / VASA_* env); no-op otherwise
  trainer = importlib.import_module(TRAINERS[stage])
  from vasa_jax.train.common import CheckpointRestoreError, NonFiniteError
  try:
    metrics = trainer.train_and_evaluate(config, args.workdir, data_dir=args.data_dir)
  except NonFiniteError as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 3
  except CheckpointRestoreError as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 2
  if metrics.get("preempted"):
    print(f"vasa-jax: preempted: checkpoint saved at step {int(metrics['preempted_step'])} in "
          f"{os.path.abspath(args.workdir)}; rerun the same command to resume", file=sys.stderr)
  print(json.dumps({"workdir": os.path.abspath(args.workdir), "steps": config.steps,
                    "final": {k: round(v, 5) for k, v in metrics.items()}}, indent=1))
  return 0


def cmd_eval(args, extra) -> int:
  from vasa_jax.eval import reenact
  return reenact.main(extra)


# ----------------------------------------------------------------------------- demo

def cmd_demo(args) -> int:
  from vasa_jax.synth import corpus
  os.makedirs(args.out, exist_ok=True)
  print("Rendering a synthetic talking head (espeak-ng speech, 3D head, ground truth)...",
        file=sys.stderr)
  clip = corpus.make_clip(corpus.ClipSpec(args.seed, 0), seconds=args.seconds, size=args.size)
  paths = corpus.write_clip(clip, args.out, name="synthetic_demo")
  print(json.dumps({"video": os.path.abspath(paths["mp4"]), "ground_truth": os.path.abspath(paths["npz"]),
                    "text": clip.meta["text"], "voice": clip.meta["voice"]}, indent=1))
  return 0


# ----------------------------------------------------------------------------- verify

def cmd_verify(args) -> int:
  from vasa_jax import provenance
  det, _, line = provenance.verify(args.video)
  print(line)
  return 0 if det.present else 1


# ----------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="vasa-jax", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)

  s = sub.add_parser("synth", help="render a synthetic talking-head corpus (mp4 + ground truth)")
  s.add_argument("--out", required=True, help="output folder")
  s.add_argument("--clips", type=int, default=4)
  s.add_argument("--seconds", type=float, default=4.0)
  s.add_argument("--size", type=int, default=256)
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--clips-per-identity", type=int, default=1)
  s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
  s.set_defaults(func=cmd_synth)

  d = sub.add_parser("data", help="build or inspect the TFDS datasets")
  dsub = d.add_subparsers(dest="data_command", required=True)
  b = dsub.add_parser("build", help="build a dataset as array_record")
  b.add_argument("name", help="synthetic_talking_heads/<config> or talking_face_videos/<config>")
  b.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
  b.add_argument("--manual-dir", default=None, help="folder of real videos (talking_face_videos)")
  b.add_argument("--identity-map", default=None, help="tsv/csv with file and identity columns")
  b.add_argument("--max-videos", type=int, default=None)
  b.add_argument("--workers", type=int, default=None)
  b.set_defaults(func=cmd_data_build)
  i = dsub.add_parser("info", help="clip/identity/frame counts of a built dataset")
  i.add_argument("name")
  i.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
  i.add_argument("--workers", type=int, default=None)
  i.set_defaults(func=cmd_data_info)

  t = sub.add_parser("train", help="train a stage: --config configs/<stage>.py:<variant>")
  t.add_argument("--config", required=True, help="configs/face_latent.py:demo (plus --config.x=y)")
  t.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs")
  t.add_argument("--data-dir", default=None, help="TFDS data dir (default: config or ~/tensorflow_datasets)")
  t.set_defaults(func=cmd_train, wants_extra=True)

  e = sub.add_parser("eval", help="evaluate a checkpoint: `vasa-jax eval reenact --help`",
                     add_help=False)
  e.add_argument("what", choices=("reenact",), help="reenact: stage-1 self/cross reenactment")
  e.set_defaults(func=cmd_eval, wants_extra=True)

  m = sub.add_parser("demo", help="what `make demo` runs")
  m.add_argument("--out", default="out")
  m.add_argument("--seconds", type=float, default=6.0)
  m.add_argument("--size", type=int, default=256)
  m.add_argument("--seed", type=int, default=7)
  m.set_defaults(func=cmd_demo)

  v = sub.add_parser("verify", help="check a video for the vasa-jax provenance watermark")
  v.add_argument("video", help="video file (exit 0: watermark present, 1: absent, 2: unreadable)")
  v.set_defaults(func=cmd_verify)
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:  # TFDS/absl chatter (e.g. "variant folder not found") is not for users
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass
  args, extra = build_parser().parse_known_args(argv)
  try:
    if getattr(args, "wants_extra", False):
      return args.func(args, extra)
    if extra:
      raise UsageError(f"unrecognised arguments: {' '.join(extra)}")
    return args.func(args)
  except UsageError as e:
    print(f"vasa-jax: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("vasa-jax: interrupted", file=sys.stderr)
    return 130
  except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as e:
    # MediaError and bad arguments deep inside are ValueErrors: one line, no traceback.
    print(f"vasa-jax: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
  raise SystemExit(main())

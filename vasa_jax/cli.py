"""The `vasa-jax` command line (also `python -m vasa_jax`).

  vasa-jax synth --out DIR --clips N --seconds S --size PX --seed K
  vasa-jax data build NAME [--data-dir DIR] [--manual-dir DIR]
  vasa-jax data info NAME [--data-dir DIR]
  vasa-jax data extract-motion --datasets NAME,NAME [--face-basis BASIS.npz] [--data-dir DIR]
      [--source-data-dir DIR] [--name NAME]
  vasa-jax train --config configs/face_latent.py:geo --workdir DIR [--config.key=value ...]
  vasa-jax eval reenact --checkpoint BUNDLE --data-dir DIR [--dataset NAME:SPLIT]
  vasa-jax eval report [--checkpoint DIR] --data-dir DIR [--max-clips N] [--ablate-...] [--out D]
  vasa-jax eval motion|controls|syncnet|meshsync ...   (each: --help)
  vasa-jax animate --image IMG --audio AUDIO --out OUT.mp4 [--checkpoint DIR] [--gaze T,P]
      [--distance D] [--emotion NAME] [--cfg-audio X] [--cfg-gaze X] [--steps N] [--seed S]
      [--stream] [--crop-only]
  vasa-jax reenact --image IMG --video DRIVER.mp4 --out OUT.mp4 [--checkpoint DIR]
  vasa-jax export --face-latent DIR --motion-dit DIR --out BUNDLE
  vasa-jax verify VIDEO
  vasa-jax demo [--out DIR]
  vasa-jax serve [--host 127.0.0.1] [--port 7860] [--checkpoint DIR]   (web demo, Gradio)

Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time

from vasa_jax.config_utils import DEFAULT_DATA_DIR, InputError, load_config  # noqa: F401

UsageError = InputError    # bad input from the user: reported in one line, exit status 2


def _progress(total: int, label: str):
  from vasa_jax.progress import Bar
  return Bar(total, label)     # on a terminal only


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

  from vasa_jax.data import register_builders
  register_builders()
  kwargs = {}
  if args.workers:
    kwargs["workers"] = args.workers
  if getattr(args, "identity_map", None):
    kwargs["identity_map"] = args.identity_map
  if getattr(args, "max_videos", None):
    kwargs["max_videos"] = args.max_videos
  name = args.name
  if name.split("/")[0] not in ("synthetic_talking_heads", "talking_face_videos",
                                "motion_latents"):
    raise UsageError(f"unknown dataset {name!r}: use synthetic_talking_heads/<config>, "
                     "talking_face_videos/<config> or motion_latents/<name>")
  if name.split("/")[0] == "motion_latents":
    if not getattr(args, "reading", False):
      raise UsageError("motion_latents is built with `vasa-jax data extract-motion`")
    kwargs = {}   # read from its files: custom names are not registered configs
  try:
    return tfds.builder(name, data_dir=args.data_dir, **kwargs)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    if name.split("/")[0] == "motion_latents":
      raise UsageError(f"{name} is not built in {args.data_dir}; run `vasa-jax data "
                       "extract-motion`") from None
    raise UsageError(str(e).splitlines()[0]) from None


def _tfds_progress() -> None:
  """TFDS draws its own progress bars: on a terminal only."""
  if not sys.stderr.isatty():
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()


def cmd_data_build(args) -> int:
  import tensorflow_datasets as tfds
  _tfds_progress()
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
  from vasa_jax.data import pipeline
  args.reading = True
  builder = _builder(args)
  if not builder.is_prepared():
    raise UsageError(f"{args.name} is not built in {args.data_dir}; run "
                     f"`{pipeline.build_hint(args.name)}`")
  out = {"dataset": builder.info.full_name, "data_dir": os.fspath(builder.data_path), "splits": {}}
  stats = os.path.join(os.fspath(builder.data_path), "motion_stats.json")
  if os.path.isfile(stats):
    with open(stats) as f:
      out["motion_dim"] = len(json.load(f)["mean"])
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


def cmd_data_build_part_bank(args) -> int:
  """Real mouth interiors and closed lids for the part renderer (vasa_jax/geometry/banks.py),
  from the clips of an inventory whose licence allows bundling, train identities only."""
  import csv

  from vasa_jax.data import records
  from vasa_jax.geometry import banks
  from vasa_jax.geometry import codes as codes_lib
  if not os.path.isfile(args.inventory):
    raise UsageError(f"--inventory: no such file: {args.inventory}")
  if not os.path.isdir(args.manual_dir):
    raise UsageError(f"--manual-dir is not a folder: {args.manual_dir}")
  try:
    basis = codes_lib.FaceBasis.load(args.face_basis)
  except (OSError, ValueError) as e:
    raise UsageError(f"--face-basis: {e}") from None
  with open(args.inventory, newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t"))
  need = {"file", "kind", "source_repo", "source_path", "license", "identity"}
  if not rows or not need <= set(rows[0]):
    raise UsageError(f"--inventory needs the columns {sorted(need)}")
  videos, refused = [], {}
  for r in rows:
    if r["kind"] != "video":
      continue
    lic = r["license"].split(" (")[0].strip()
    why = None
    if lic not in banks.BUNDLE_LICENCES:
      why = "licence"
    elif records.is_test_identity(r["identity"], args.test_fraction):
      why = "test identity"
    path = os.path.join(args.manual_dir, os.path.basename(r["file"]))
    if why is None and not os.path.isfile(path):
      why = "missing"
    if why:
      refused[why] = refused.get(why, 0) + 1
      continue
    videos.append({"path": path, "name": r["identity"], "file": r["file"],
                   "source_repo": r["source_repo"], "source_path": r["source_path"],
                   "license": lic})
  if args.max_videos:
    videos = videos[:args.max_videos]
  if not videos:
    raise UsageError("no video of the inventory may go into a bundled bank")

  def progress(n, name, mouths, shut):
    print(f"[{n}/{len(videos)}] {name}: {mouths} open-mouth frames, {shut} shut-lid frames",
          file=sys.stderr, flush=True)
  t0 = time.perf_counter()
  bank = banks.build(videos, basis.template, mouth_per_donor=args.mouth_per_donor,
                     lids_per_donor=args.lids_per_donor, progress=progress)
  path = bank.save(args.out)
  print(json.dumps({"bank": path, "donors": len(bank.donors), "mouth_entries": len(bank),
                    "lid_entries": bank.num_lids, "bytes": os.path.getsize(path),
                    "videos": len(videos), "left_out": refused,
                    "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
  return 0


def cmd_data_extract_motion(args) -> int:
  """Mesh codes of clip datasets -> the motion_latents/<name> dataset: landmarks of every
  frame, a face basis (fitted on the train split unless --face-basis), codes."""
  _tfds_progress()
  from vasa_jax.data import motion_latents as ml
  datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
  if args.max_clips is not None and args.max_clips < 1:
    raise UsageError("need --max-clips >= 1")
  name = args.name or "geo"
  if "/" in name or not name.replace("_", "").replace("-", "").isalnum():
    raise UsageError(f"--name {name!r}: use letters, digits, '_' and '-'")
  if args.face_basis and not os.path.isfile(args.face_basis):
    raise UsageError(f"--face-basis: no such file: {args.face_basis}")
  if not 1 <= args.exp_dim <= 200:
    raise UsageError("--exp-dim must be between 1 and 200")
  src_dir, total = _source_clips(args, datasets)
  config = ml.make_config(name, datasets, args.max_clips or 0,
                          face_basis=os.path.abspath(args.face_basis) if args.face_basis else "",
                          exp_dim=int(args.exp_dim))
  builder = ml.MotionLatents(config=config, data_dir=args.data_dir)
  if builder.is_prepared():
    raise UsageError(f"{ml.NAME}/{name} already exists in {os.fspath(builder.data_path)}; "
                     "choose another --name or delete that folder")
  from vasa_jax.workers import default_workers
  builder = ml.MotionLatents(config=config, data_dir=args.data_dir, source_data_dir=src_dir,
                             track_workers=args.workers or default_workers(),
                             progress=_progress(total, "tracking clips"))
  t0 = time.perf_counter()
  with contextlib.redirect_stdout(sys.stderr):   # TFDS's progress lines; stdout is the summary
    builder.download_and_prepare(file_format="array_record")
  from vasa_jax.geometry import codes as codes_lib
  print(json.dumps({
      "dataset": f"{ml.NAME}/{name}", "data_dir": os.fspath(builder.data_path),
      "sources": datasets, "motion_dim": builder.summary.get("motion_dim"),
      "splits": builder.summary.get("splits", {}), "basis": builder.summary.get("basis", {}),
      "face_basis": os.path.join(os.fspath(builder.data_path), codes_lib.BASIS_FILE),
      "stats": os.path.join(os.fspath(builder.data_path), ml.STATS_FILE),
      "seconds": round(time.perf_counter() - t0, 1),
      "train_with": f"--data-dir {args.data_dir} --config.data.geometry={ml.NAME}/{name}",
  }, indent=1))
  return 0


def _source_clips(args, datasets) -> tuple[str, int]:
  """(the source data dir, how many clips extract-motion will read from the datasets)."""
  from vasa_jax.data import motion_latents as ml
  src_dir = args.source_data_dir or args.data_dir
  try:
    sources = ml.open_sources(datasets, src_dir)
  except (ValueError, FileNotFoundError) as e:
    raise UsageError(str(e).strip().splitlines()[0]) from None
  total = sum(min(si.num_examples, args.max_clips) if args.max_clips else si.num_examples
              for _, b in sources for si in b.info.splits.values())
  return src_dir, total


# ----------------------------------------------------------------------------- train

from vasa_jax.train import TRAINERS, trainer_module  # noqa: E402  ((stage, kind) -> trainer)


def cmd_train(args, extra) -> int:
  import importlib
  config = load_config(args.config, extra)
  module = trainer_module(config)
  if module is None:
    raise UsageError(f"config has stage={config.get('stage')!r}; trainers exist for "
                     f"{sorted({s for s, _ in TRAINERS})}")
  logging.getLogger().setLevel(logging.INFO)
  from vasa_jax import distributed
  distributed.initialize()  # multi-process (TPU pod / SLURM / VASA_* env); no-op otherwise
  trainer = importlib.import_module(module)
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


_EVAL_MODULES = {"reenact": "geo_reenact"}


def cmd_eval(args, extra) -> int:
  import importlib
  if args.what is None:
    if any(a in ("-h", "--help") for a in extra):
      print(args.eval_help)
      return 0
    raise UsageError("eval needs what to evaluate: report, reenact, motion, controls, "
                     "syncnet or meshsync (vasa-jax eval --help)")
  # `eval reenact` is the geometry self-reenactment evaluator (eval/geo_reenact.py)
  module = importlib.import_module(f"vasa_jax.eval.{_EVAL_MODULES.get(args.what, args.what)}")
  return module.main(extra)


# ----------------------------------------------------------------------------- animate

def _pair(text: str, what: str) -> tuple[float, float]:
  try:
    t, p = (float(x) for x in text.split(","))
  except ValueError:
    raise UsageError(f"{what} must look like THETA,PHI (degrees), got {text!r}") from None
  return t, p


def _animate_one(anim, image, audio, out, args) -> dict:
  from vasa_jax import animate as an
  kw = dict(gaze=_pair(args.gaze, "--gaze") if args.gaze else None, distance=args.distance,
            emotion=args.emotion, cfg_audio=args.cfg_audio, cfg_gaze=args.cfg_gaze,
            steps=args.steps, seed=args.seed, crop_only=args.crop_only,
            head_motion=args.head_motion, emotion_intensity=args.emotion_intensity,
            blink_rate=args.blink_rate, mouth_gain=getattr(args, "mouth_gain", None))
  stats: dict = {}
  t0 = time.perf_counter()
  label = os.path.basename(out)
  from vasa_jax.progress import Bar
  bar = Bar(None, label, unit="frame ")     # on a terminal only; logs get the result
  said = []

  def progress(done, total):
    if args.stream and done and "first_frame_s" in stats and not said:
      said.append(True)           # asked for with --stream: always reported
      print(f"{chr(10) if bar.enabled and bar.done else ''}{label}: first frames after "
            f"{stats['first_frame_s']:.2f} s", file=sys.stderr)
    bar(done, total)

  try:
    anim.save_stream(image, audio, out, progress=progress, stats=stats, **kw)
  except an.AnimateError as e:
    raise UsageError(str(e)) from None
  finally:
    bar.close()
  wall = time.perf_counter() - t0
  return {"out": os.path.abspath(out), "image": str(image), "audio": str(audio),
          "frames": stats.get("frames"), "seconds_of_video": round(stats.get("seconds", 0.0), 3),
          "wall_s": round(wall, 2),
          "seconds_per_second": round(wall / max(stats.get("seconds", 1e-9), 1e-9), 3),
          "first_frame_s": round(stats.get("first_frame_s", float("nan")), 3),
          "faces_found": stats.get("faces_found"), "turned_deg": stats.get("turned_deg", 0)}


def _check_paths(inputs, outs, max_seconds: float) -> None:
  """What can be checked before a model is loaded: the inputs are files, the outputs can be
  written and overwrite no input, --max-seconds is positive (UsageError, one line)."""
  from vasa_jax import media
  if not max_seconds > 0:
    raise UsageError(f"--max-seconds must be > 0, got {max_seconds}")
  for path in inputs:
    if os.path.isdir(path):
      raise UsageError(f"{path} is a folder, not a file")
    if not os.path.isfile(path):
      raise UsageError(f"file not found: {path}")
  given = {os.path.realpath(p): p for p in inputs}
  for out in outs:
    if os.path.realpath(out) in given:
      raise UsageError(f"--out {out} would overwrite the input {given[os.path.realpath(out)]}")
    try:
      media.check_writable(out)
    except media.MediaError as e:
      raise UsageError(str(e)) from None


def cmd_animate(args) -> int:
  from vasa_jax import animate as an
  images, audios = list(args.image), list(args.audio)
  try:
    jobs = an.pairs(images, audios)
  except an.AnimateError as e:
    raise UsageError(str(e)) from None
  if len(jobs) > 1:
    if args.out.lower().endswith(".mp4"):
      raise UsageError(f"{len(jobs)} videos to write: --out must be a folder, not {args.out}")
    outs = [os.path.join(args.out, f"{os.path.splitext(os.path.basename(i))[0]}__"
                                   f"{os.path.splitext(os.path.basename(a))[0]}.mp4") for i, a in jobs]
  else:
    outs = [args.out if args.out.lower().endswith(".mp4") else os.path.join(args.out, "out.mp4")]
  if not args.out.lower().endswith(".mp4") and not os.path.isdir(args.out) and \
      os.path.splitext(args.out.rstrip("/"))[1]:
    raise UsageError(f"--out {args.out}: give an .mp4 file or a folder")
  _check_paths(images + audios, outs, args.max_seconds)
  if args.emotion is not None and args.emotion.lower() not in an.EMOTIONS:
    raise UsageError(f"unknown emotion {args.emotion!r}; use one of {', '.join(an.EMOTIONS)}")
  try:
    anim = an.Animator(args.checkpoint, max_seconds=args.max_seconds)
  except an.AnimateError as e:
    raise UsageError(str(e)) from None
  if len(jobs) == 1:
    print(json.dumps(_animate_one(anim, *jobs[0], outs[0], args), indent=1))
    return 0
  results, failed = [], []     # batch mode: a bad pair is named, and the others are made
  for (image, audio), out in zip(jobs, outs):
    try:
      results.append(_animate_one(anim, image, audio, out, args))
    except UsageError as e:
      results.append({"image": str(image), "audio": str(audio), "error": str(e)})
      failed.append(f"{os.path.basename(image)} + {os.path.basename(audio)}: {e}")
  print(json.dumps(results, indent=1))
  for line in failed:
    print(f"vasa-jax: error: {line}", file=sys.stderr)
  return 2 if failed else 0


def cmd_live(args) -> int:
  """Live: audio from the microphone, stdin or a file; frames to a window and/or an mp4."""
  import threading

  from vasa_jax import animate as an
  from vasa_jax import live as live_lib
  from vasa_jax import live_io
  if args.out and not args.out.lower().endswith(".mp4"):
    raise UsageError(f"--out must be an .mp4 file, got {args.out}")
  if args.pace and args.audio in (None, "-"):
    raise UsageError("--pace plays a file at real-time pace: give --audio FILE")
  if not args.seconds > 0:
    raise UsageError(f"--seconds must be > 0, got {args.seconds}")
  if not 128 <= args.max_side <= 4096:
    raise UsageError(f"--max-side must be 128-4096, got {args.max_side}")
  inputs = [args.image] + ([args.audio] if args.audio not in (None, "-") else [])
  _check_paths(inputs, [args.out] if args.out else [], 3600.0)
  show = args.show or (not args.out and bool(os.environ.get("DISPLAY")))
  if not show and not args.out:
    raise UsageError("nowhere to show the frames: give --out OUT.mp4 (no display for --show)")
  try:
    if args.audio == "-":
      if sys.stdin.isatty():
        raise UsageError("--audio - reads raw PCM from stdin; pipe audio in (e.g. "
                         "`ffmpeg -i speech.wav -f s16le -ac 1 -ar 16000 - | vasa-jax live "
                         "--audio - ...`)")
      source = live_io.RawPCM(sys.stdin.buffer, rate=args.rate, fmt=args.format,
                              channels=args.channels)
    elif args.audio:
      source = live_io.PacedFile(args.audio, args.pace)
    else:
      source = live_io.Microphone(args.device)
    window = live_io.Window() if show else None
    anim = an.Animator(args.checkpoint)
    kw = dict(gaze=_pair(args.gaze, "--gaze") if args.gaze else None, distance=args.distance,
              emotion=args.emotion, head_motion=args.head_motion,
              emotion_intensity=args.emotion_intensity, blink_rate=args.blink_rate,
              mouth_gain=args.mouth_gain, seed=args.seed, steps=args.steps)
    session = anim.live(args.image, crop_only=args.crop_only, max_side=args.max_side, **kw)
  except an.AnimateError as e:
    raise UsageError(str(e)) from None
  recorder = live_io.Recorder(args.out) if args.out else None
  realtime = args.audio is None or args.pace
  stop = threading.Event()
  failure: list = []

  def feed():
    try:
      source.run(session, stop, args.seconds)
    except BaseException as e:       # reported by the main thread
      failure.append(e)
    finally:
      session.close()
  feeder = threading.Thread(target=feed, daemon=True, name="live-source")
  pacer = live_lib.Pacer()
  interrupted = False
  feeder.start()
  try:
    for frame in session.frames():
      if recorder is not None:
        recorder.add(frame.image)
      if window is not None:
        wait = frame.due_at - time.perf_counter()
        if realtime and wait > 0:
          time.sleep(wait)
        window.show(frame.image)
      if realtime:
        pacer.show(frame, now=time.perf_counter() if window is not None else None)
  except (KeyboardInterrupt, Terminated):
    interrupted = True               # Ctrl-C ends the session; what was made is kept
    stop.set()
  finally:
    stop.set()
    feeder.join(timeout=5)
    if window is not None:
      window.close()
  out = None
  if recorder is not None:
    recorder.add_audio(session.audio())   # the audio the session heard, at 16 kHz
    try:
      out = recorder.close(keep=True)
    except an.AnimateError as e:
      raise UsageError(str(e)) from None
  if failure and not interrupted:
    e = failure[0]
    if isinstance(e, an.AnimateError):
      raise UsageError(str(e)) from None
    raise e
  summary = {"out": os.path.abspath(out) if out else None,
             "frames": session.rendered,
             "seconds_of_audio": round(session.motion.received / 16000, 3),
             "interrupted": interrupted, **session.stats()}
  if realtime:
    summary["shown"] = pacer.summary()
  print(json.dumps(summary, indent=1))
  return 0


def cmd_reenact(args) -> int:
  """Video-driven reenactment: the portrait performs the driving video's motion."""
  from vasa_jax import animate as an
  if not args.out.lower().endswith(".mp4"):
    raise UsageError(f"--out must be an .mp4 file, got {args.out}")
  _check_paths([args.image, args.video], [args.out], args.max_seconds)
  try:
    anim = an.Animator(args.checkpoint, max_seconds=args.max_seconds)
  except an.AnimateError as e:
    raise UsageError(str(e)) from None
  stats: dict = {}
  t0 = time.perf_counter()
  from vasa_jax.progress import Bar
  bar = Bar(None, os.path.basename(args.out), unit="frame ")   # on a terminal only
  try:
    anim.save_reenact(args.image, args.video, args.out, crop_only=args.crop_only,
                      progress=bar, stats=stats)
  except an.AnimateError as e:
    raise UsageError(str(e)) from None
  finally:
    bar.close()
  wall = time.perf_counter() - t0
  print(json.dumps({"out": os.path.abspath(args.out), "image": args.image, "video": args.video,
                    "frames": stats.get("frames"), "driver_frames": stats.get("driver_frames"),
                    "driver_faces": stats.get("driver_faces"), "wall_s": round(wall, 2),
                    "frames_per_second": round(stats.get("frames", 0) / max(wall, 1e-9), 2),
                    "first_frame_s": round(stats.get("first_frame_s", float("nan")), 3)},
                   indent=1))
  return 0


def cmd_export(args) -> int:
  from vasa_jax.train import export as export_lib
  tuned = {k: getattr(args, k) for k in ("cfg_audio", "cfg_gaze", "cfg_expression", "audio_lead",
                                         "mouth_gain")
           if getattr(args, k, None) is not None}
  out = export_lib.export(args.face_latent, args.motion_dit, args.out,
                          face_latent_config=args.face_latent_config,
                          motion_dit_config=args.motion_dit_config, weights=args.weights,
                          dtype=args.dtype, part_bank=args.part_bank,
                          copy_compositor=args.copy_compositor,
                          tuned=tuned, live_motion_dit=args.live_motion_dit)
  print(json.dumps(out, indent=1))
  return 0


# ----------------------------------------------------------------------------- demo

from vasa_jax.constants import EXAMPLES_DIR as EXAMPLES  # noqa: E402


def cmd_demo(args) -> int:
  out = os.path.join(args.out, "demo.mp4")
  image = os.path.join(EXAMPLES, "portrait.jpg")
  audio = os.path.join(EXAMPLES, "speech.flac")
  print(f"Animating {os.path.relpath(image)} with {os.path.relpath(audio)} "
        "(bundled demo weights; media licences in vasa_jax/assets/examples/ATTRIBUTION.md)",
        file=sys.stderr)
  ns = argparse.Namespace(image=[image], audio=[audio], out=out, checkpoint=args.checkpoint,
                          gaze=None, distance=None, emotion=None, cfg_audio=None, cfg_gaze=None,
                          steps=args.steps, seed=args.seed, stream=True, crop_only=False,
                          max_seconds=3600.0, head_motion=1.0,
                          emotion_intensity=1.0, blink_rate=None, mouth_gain=None)
  return cmd_animate(ns)


# ----------------------------------------------------------------------------- serve

def cmd_serve(args) -> int:
  """The web demo: one compiled Animator behind Gradio's queue (vasa_jax/serve.py)."""
  from vasa_jax import animate as an
  from vasa_jax import serve
  if not 0 < args.port < 65536:
    raise UsageError(f"--port must be 1-65535, got {args.port}")
  limits = serve.Limits(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                        max_pixels=int(args.max_megapixels * 1e6),
                        job_timeout_s=args.job_timeout, max_output_side=args.max_output_side,
                        live_time_limit_s=args.live_time_limit)
  try:
    limits.check()
    if args.workdir and os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
      raise UsageError(f"--workdir {args.workdir} is not a folder")
    anim = an.Animator(args.checkpoint, max_seconds=args.max_seconds,
                       max_output_side=args.max_output_side)
    app = serve.build_app(anim, limits=limits, workdir=args.workdir,
                          concurrency=args.concurrency, queue_size=args.queue_size)
  except (serve.ServeError, an.AnimateError) as e:
    raise UsageError(str(e)) from None
  import signal
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # `kill` also removes the work folder
  print(f"vasa-jax serve: files in {app.workdir}", file=sys.stderr, flush=True)
  try:
    if not args.no_warmup:
      print("vasa-jax serve: compiling (one second of the bundled example)...", file=sys.stderr,
            flush=True)
      print(f"vasa-jax serve: ready after {serve.warm_up(anim):.1f} s", file=sys.stderr,
            flush=True)
    try:
      serve.launch(app, host=args.host, port=args.port, limits=limits, block=False)
    except OSError as e:
      raise UsageError(f"cannot listen on {args.host}:{args.port}: "
                       f"{str(e).splitlines()[0]}") from None
    print(f"vasa-jax serve: http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    while True:
      time.sleep(3600)
  finally:
    app.close()


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
  x = dsub.add_parser("extract-motion",
                      help="track clip datasets' faces into mesh codes: motion_latents/NAME")
  x.add_argument("--geometry", action="store_true",
                 help="accepted for old scripts; codes of the measured face mesh are the only "
                      "mode")
  x.add_argument("--face-basis", default=None,
                 help="a face_basis.npz to use (default: fit one on the train split)")
  x.add_argument("--exp-dim", type=int, default=40,
                 help="expression components of the fitted basis")
  x.add_argument("--datasets", required=True,
                 help="comma-separated clip datasets, e.g. synthetic_talking_heads/r256_n1000,"
                      "talking_face_videos/r256")
  x.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                 help="where motion_latents/NAME is written")
  x.add_argument("--source-data-dir", default=None,
                 help="where the clip datasets are (default: --data-dir)")
  x.add_argument("--name", default=None, help="dataset config name (default: geo)")
  x.add_argument("--max-clips", type=int, default=None,
                 help="at most N clips per split of each dataset")
  x.add_argument("--workers", type=int, default=None, help="tracking processes")
  x.set_defaults(func=cmd_data_extract_motion)

  pb = dsub.add_parser("build-part-bank",
                       help="cut real mouth interiors and closed lids from clips whose licence "
                            "allows bundling (train identities only) into part_bank.npz")
  pb.add_argument("--manual-dir", required=True, help="folder of the inventory's videos")
  pb.add_argument("--inventory", required=True,
                  help="tsv with file, kind, source_repo, source_path, license, identity")
  pb.add_argument("--face-basis", default=os.path.join(os.path.dirname(__file__), "assets",
                                                       "demo", "face_basis.npz"))
  pb.add_argument("--out", required=True, help="folder (a bundle) to write the bank into")
  pb.add_argument("--test-fraction", type=float, default=0.1,
                  help="identities of the datasets' test split are left out (same hash)")
  pb.add_argument("--mouth-per-donor", type=int, default=32)
  pb.add_argument("--lids-per-donor", type=int, default=6)
  pb.add_argument("--max-videos", type=int, default=None)
  pb.set_defaults(func=cmd_data_build_part_bank)

  t = sub.add_parser("train", help="train a stage: --config configs/<stage>.py:<variant>")
  t.add_argument("--config", required=True, help="configs/face_latent.py:geo (plus --config.x=y)")
  t.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs")
  t.add_argument("--data-dir", default=None, help="TFDS data dir (default: config or ~/tensorflow_datasets)")
  t.set_defaults(func=cmd_train, wants_extra=True)

  e = sub.add_parser("eval", help="evaluate: `vasa-jax eval report|reenact|motion|controls|"
                     "syncnet|meshsync --help`", add_help=False)
  e.add_argument("what", nargs="?", choices=("report", "reenact", "motion", "controls",
                                             "syncnet", "meshsync"),
                 help="report: the evaluation suite (generated vs real footage); reenact: "
                      "stage-1 self-reenactment of held-out clips; motion: audio-driven head, blink and "
                      "mouth motion and the controls vs real footage (geometry bundles); "
                      "controls: gaze, distance, emotion and head-motion asked on many "
                      "portraits and measured on the output; "
                      "syncnet / meshsync: train and validate that evaluator")
  e.set_defaults(func=cmd_eval, wants_extra=True, eval_help=e.format_help())

  an = sub.add_parser("animate", help="portrait + speech -> talking video (watermarked mp4)")
  an.add_argument("--image", required=True, nargs="+", help="portrait photo(s)")
  an.add_argument("--audio", required=True, nargs="+", help="speech file(s), any common format")
  an.add_argument("--out", required=True, help="OUT.mp4, or a folder in batch mode")
  an.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  an.add_argument("--gaze", default=None, help="main gaze THETA,PHI in degrees (default: free)")
  an.add_argument("--distance", type=float, default=None, help="head-camera distance in metres")
  an.add_argument("--emotion", default=None, help="neutral|happy|sad|angry|surprised")
  an.add_argument("--emotion-intensity", type=float, default=1.0,
                  help="strength of --emotion, 0-1.5 (default 1)")
  an.add_argument("--blink-rate", type=float, default=None,
                  help="blinks a minute, 0-60 (default: as the model learned from footage)")
  an.add_argument("--head-motion", type=float, default=1.0,
                  help="head-motion scale: 0 still head, 1 natural (default), above 1 livelier")
  an.add_argument("--mouth-gain", type=float, default=None,
                  help="scales every mouth opening, 0.5-2.5 (default: the bundle's, set against "
                       "real footage)")
  an.add_argument("--cfg-audio", type=float, default=None,
                  help="audio guidance scale (default: the bundle's, 1.5 for the bundled one)")
  an.add_argument("--cfg-gaze", type=float, default=None,
                  help="gaze guidance scale (default: the bundle's, 1.0 for the bundled one)")
  an.add_argument("--steps", type=int, default=None,
                  help="DDIM steps (default: the bundle's, 25 for the bundled one; 10 is usable)")
  an.add_argument("--seed", type=int, default=0)
  an.add_argument("--stream", action="store_true", help="report first-frame latency per video")
  an.add_argument("--crop-only", action="store_true", help="output the face crop, no paste-back")
  an.add_argument("--max-seconds", type=float, default=3600.0, help="longest audio accepted")
  an.set_defaults(func=cmd_animate)

  lv = sub.add_parser("live", help="live: speak (or pipe audio) and the portrait talks, in "
                      "real time; a window and/or a watermarked mp4")
  lv.add_argument("--image", required=True, help="portrait photo")
  lv.add_argument("--audio", default=None,
                  help="'-': raw PCM on stdin (see --rate/--format/--channels); FILE: an audio "
                       "file (with --pace at real-time pace); default: the microphone")
  lv.add_argument("--pace", action="store_true", help="play --audio FILE at real-time pace")
  lv.add_argument("--rate", type=int, default=16000, help="stdin PCM sample rate (16000)")
  lv.add_argument("--format", default="s16le", choices=("s16le", "f32le"),
                  help="stdin PCM sample format")
  lv.add_argument("--channels", type=int, default=1, help="stdin PCM channels (1)")
  lv.add_argument("--device", default=None, help="microphone: a device index or name")
  lv.add_argument("--out", default=None, help="OUT.mp4: record the session (watermarked)")
  lv.add_argument("--show", action="store_true",
                  help="show the frames in a window (default when there is a display and no "
                       "--out)")
  lv.add_argument("--seconds", type=float, default=600.0, help="stop after this long (600)")
  lv.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  lv.add_argument("--gaze", default=None, help="main gaze THETA,PHI in degrees (default: free)")
  lv.add_argument("--distance", type=float, default=None, help="head-camera distance in metres")
  lv.add_argument("--emotion", default=None, help="neutral|happy|sad|angry|surprised")
  lv.add_argument("--emotion-intensity", type=float, default=1.0)
  lv.add_argument("--blink-rate", type=float, default=None,
                  help="blinks a minute, 0-60 (default 15)")
  lv.add_argument("--head-motion", type=float, default=1.0)
  lv.add_argument("--mouth-gain", type=float, default=None)
  lv.add_argument("--steps", type=int, default=None,
                  help="DDIM steps per block (default: the live generator's)")
  lv.add_argument("--seed", type=int, default=0)
  lv.add_argument("--crop-only", action="store_true", help="the face crop, no paste-back")
  lv.add_argument("--max-side", type=int, default=512,
                  help="longer side of the frames (512; larger photos are downscaled)")
  lv.set_defaults(func=cmd_live)

  re_ = sub.add_parser("reenact", help="portrait + driving video -> the portrait performs the "
                       "video's head motion, expression, blinks and gaze (watermarked mp4)")
  re_.add_argument("--image", required=True, help="portrait photo")
  re_.add_argument("--video", required=True, help="driving video (its audio is kept)")
  re_.add_argument("--out", required=True, help="OUT.mp4")
  re_.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  re_.add_argument("--crop-only", action="store_true", help="output the face crop")
  re_.add_argument("--max-seconds", type=float, default=3600.0, help="longest video accepted")
  re_.set_defaults(func=cmd_reenact)

  ex = sub.add_parser("export", help="pack two training workdirs into an inference bundle")
  ex.add_argument("--face-latent", required=True,
                  help="stage-1 workdir, or a bundle whose stage 1 is kept")
  ex.add_argument("--face-latent-config", default=None,
                  help="the stage-1 run's config, e.g. configs/face_latent.py:geo (default: "
                       "the workdir's config.json)")
  ex.add_argument("--motion-dit", required=True,
                  help="stage-2 workdir, or a bundle whose stage 2 is kept")
  ex.add_argument("--motion-dit-config", default=None,
                  help="the stage-2 run's config (default: the workdir's config.json, else "
                       "configs/motion_dit.py:demo)")
  ex.add_argument("--out", required=True, help="bundle folder to write")
  ex.add_argument("--dtype", default="float32", choices=("float32", "float16"))
  ex.add_argument("--cfg-audio", type=float, default=None,
                  help="the bundle's default audio guidance scale, when tuned after training "
                       "(default: the stage-2 config's sampler.cfg_audio)")
  ex.add_argument("--cfg-gaze", type=float, default=None,
                  help="the bundle's default gaze guidance scale (default: sampler.cfg_gaze)")
  ex.add_argument("--cfg-expression", type=float, default=None,
                  help="the bundle's default audio guidance of the expression codes (lips, "
                       "jaw, cheeks, brows; head pose, lids and gaze keep --cfg-audio) "
                       "(default: sampler.cfg_expression, else the same as cfg_audio)")
  ex.add_argument("--audio-lead", type=float, default=None,
                  help="the bundle's default audio lead in frames: each frame's motion is "
                       "conditioned on the audio this much later, undoing the lag of "
                       "smoothed training targets (default: sampler.audio_lead, else 0)")
  ex.add_argument("--mouth-gain", type=float, default=None,
                  help="the bundle's default mouth gain: every generated opening x this, set "
                       "against real footage (tools/mouth_gain.py) (default: sampler.mouth_gain, "
                       "else 1)")
  ex.add_argument("--part-bank", default=None,
                  help="geometry bundles: the folder of the part bank (real mouths and lids, "
                       "with attribution) to ship (default: the stage-1 bundle's, else the "
                       "stage-1 run's config.data.part_bank)")
  ex.add_argument("--copy-compositor", action="store_true",
                  help="geometry bundles: ship the mouth compositor at its initialisation, which "
                       "pastes the donor's real interior onto the driving opening as it is "
                       "(no learned flow, shade or residual), instead of the trained one")
  ex.add_argument("--live-motion-dit", default=None,
                  help="the live generator (`vasa-jax live`): its training workdir "
                       "(configs/motion_dit.py:live) or a bundle holding one (default: the "
                       "--motion-dit bundle's, if it has one)")
  ex.add_argument("--weights", default="ema", choices=("ema", "raw"),
                  help="EMA parameters (default) or the raw ones (short runs, where the EMA "
                       "still remembers the initialisation)")
  ex.set_defaults(func=cmd_export)

  m = sub.add_parser("demo", help="what `make demo` runs: bundled portrait + speech -> OUT/demo.mp4")
  m.add_argument("--out", default="out")
  m.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  m.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the bundle's)")
  m.add_argument("--seed", type=int, default=0)
  m.set_defaults(func=cmd_demo)

  v = sub.add_parser("verify", help="check a video for the vasa-jax provenance watermark")
  v.add_argument("video", help="video file (exit 0: watermark present, 1: absent, 2: unreadable)")
  v.set_defaults(func=cmd_verify)

  sv = sub.add_parser("serve", help="web demo (Gradio): portrait + speech in the browser, the "
                      "video streamed as it renders")
  sv.add_argument("--host", default="127.0.0.1",
                  help="address to bind (default 127.0.0.1: this machine only)")
  sv.add_argument("--port", type=int, default=7860)
  sv.add_argument("--checkpoint", default=None, help="bundle folder (default: bundled demo)")
  sv.add_argument("--workdir", default=None,
                  help="folder for uploads and outputs (default: a temporary one, removed on "
                       "exit)")
  sv.add_argument("--concurrency", type=int, default=1,
                  help="jobs rendering at once (default 1; the rest wait in the queue)")
  sv.add_argument("--queue-size", type=int, default=16, help="jobs waiting at most")
  sv.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload")
  sv.add_argument("--max-seconds", type=float, default=60.0, help="longest audio accepted")
  sv.add_argument("--max-megapixels", type=float, default=25.0, help="largest portrait")
  sv.add_argument("--max-output-side", type=int, default=1024,
                  help="pasted-back video is downscaled to this longer side")
  sv.add_argument("--live-time-limit", type=float, default=120.0,
                  help="seconds one live session (the Live tab) may last (120)")
  sv.add_argument("--job-timeout", type=float, default=600.0,
                  help="seconds one job may render")
  sv.add_argument("--no-warmup", action="store_true",
                  help="skip compiling at start (the first job then pays for it)")
  sv.set_defaults(func=cmd_serve)
  return p


_NEGATIVE_VALUE = re.compile(r"^-\d[\d.]*(,-?\d[\d.]*)*$")


def join_negative_values(argv: list[str]) -> list[str]:
  """`--gaze -15,0` -> `--gaze=-15,0`: argparse takes a dash-led "-15,0" for an option."""
  out: list[str] = []
  for tok in argv:
    if (out and _NEGATIVE_VALUE.match(tok) and out[-1].startswith("--") and "=" not in out[-1]):
      out[-1] = f"{out[-1]}={tok}"
    else:
      out.append(tok)
  return out


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  import warnings
  # ffmpeg runs as a subprocess (fork + exec) next to JAX's threads: harmless, not for users.
  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:  # TFDS/absl chatter (e.g. "variant folder not found") is not for users
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass
  argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
  args, extra = build_parser().parse_known_args(argv)
  old_term = _on_sigterm()
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
  except Terminated:
    print("vasa-jax: terminated", file=sys.stderr)
    return 143
  except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
    # a path the user gave that is not there or not readable: one line, no traceback (any
    # other exception, a ValueError from numpy included, is a bug and keeps its traceback)
    print(f"vasa-jax: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
          file=sys.stderr)
    return 2
  finally:
    if old_term is not None:
      import signal
      signal.signal(signal.SIGTERM, old_term)


class Terminated(BaseException):
  """SIGTERM (what timeout, systemd and Docker send) as an exception: the outputs' atomic
  writers and temporary folders clean up on the way out, as for Ctrl-C."""


def _on_sigterm():
  """Installs the SIGTERM -> Terminated handler (main thread only); returns the old one."""
  import signal
  import threading
  if threading.current_thread() is not threading.main_thread():
    return None

  def handler(signum, frame):
    raise Terminated()
  return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
  raise SystemExit(main())

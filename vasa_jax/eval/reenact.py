r"""Stage-1 evaluation: self-reenactment metrics and a cross-reenactment grid.

  python -m vasa_jax.eval.reenact --config configs/face_latent.py:demo --workdir DIR \
      --dataset synthetic_talking_heads/r256_n1000:test --dataset talking_face_videos/r256:test \
      --data-dir D --out docs/stage1_eval [--frames-per-clip 8] [--max-clips N] [--raw-params]

Self-reenactment (per clip): frame 0 is the source portrait; `frames_per_clip` evenly spaced
other frames of the same clip are the drivers. Each driver is re-rendered from the source's
appearance (`prepare`, once per clip) and the driver's own encoded motion (`encode_motion` +
`render`, in fixed-size batches) and compared with the real driver frame:

  PSNR  dB on [0, 255]: the render is quantised to uint8 (what a saved video holds), the
        real frame is the decoded uint8 frame; per frame 10 log10(255^2 / MSE), capped at
        PSNR_CAP_DB (identical frames) so that means stay finite.
  SSIM  on [0, 1] images (x / 255, max_val 1), gaussian window 11 / sigma 1.5 as in
        `vasa_jax.losses.ssim` (the same value as SSIM on [-1, 1] with max_val 2), per frame.

Reported means are over frames (every evaluated driver frame counts once); per-clip means are
listed too. Frames whose size differs from the model's are resized (area when shrinking,
bilinear when enlarging) before they enter the model; metrics are computed at `image_size`
(default: the model's size; the render is resized on device when it differs).

Cross-reenactment: cell (i, j) of the grid is source portrait i animated with driver frame j's
pose and dynamics codes; the top row shows the drivers, the left column the sources.

`evaluate` writes out_dir/reenactment.json and out_dir/cross_reenactment.png. Model calls are
jitted once per input shape and reused across clips (and across calls with the same model
config): each clip's drivers are padded to a fixed batch.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.data import records
from vasa_jax.models import face_latent as fl

log = logging.getLogger(__name__)

__all__ = ["PSNR_CAP_DB", "CheckpointNotFoundError", "psnr", "ssim", "driver_indices",
           "load_params", "self_reenactment", "cross_reenactment_grid", "evaluate", "main"]

from vasa_jax.eval.metrics import (PSNR_CAP_DB, SSIM_RANGE, open_dataset as _open_dataset,  # noqa: E402,F401
                                   parse_dataset as _parse_dataset, psnr, psnr_image, ssim,
                                   ssim_image)


from vasa_jax.train.common import CheckpointNotFoundError  # noqa: E402  (re-exported)
from vasa_jax.data.records import text as _text  # noqa: E402
from vasa_jax.errors import InputError


# ----------------------------------------------------------------------------- drivers

def driver_indices(num_frames: int, frames_per_clip: int) -> list[int]:
  """`frames_per_clip` evenly spaced frames among 1..num_frames-1 (frame 0 is the source)."""
  others = int(num_frames) - 1
  k = min(int(frames_per_clip), others)
  if k <= 0:
    return []
  if k == 1:
    return [max(1, int(num_frames) // 2)]
  idx = np.unique(np.round(np.linspace(1, others, k)).astype(int))
  return [int(i) for i in idx]


# ----------------------------------------------------------------------------- images

def _decode(frame) -> np.ndarray:
  if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3:
    return frame
  return records.decode_jpeg(bytes(frame))


def _fit(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3] (centre crop to square, then area / bilinear resize)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
  h, w = image.shape[:2]
  if h != w:
    m = min(h, w)
    image = image[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
  if image.shape[0] == size:
    return np.ascontiguousarray(image)
  import cv2
  interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
  return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


def _pad(x, n: int):
  """Pads axis 0 to n by repeating the last entry (fixed shapes: one compile per shape)."""
  x = np.asarray(x)
  if x.shape[0] == n:
    return x
  return np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)], axis=0)



# ----------------------------------------------------------------------------- jitted calls

class _Functions:
  """The model's prepare / encode_motion / render and the metrics, each jitted once."""

  def __init__(self, model, compiler_options: dict | None):
    M = fl.FaceLatentModel
    jit = functools.partial(jax.jit, compiler_options=compiler_options or None)

    def prepare(params, image):
      enc = model.apply({"params": params}, image, method=M.encode)
      return model.apply({"params": params}, enc["v_app"], enc["z_id"], enc["z_pose"],
                         enc["z_dyn"], method=M.prepare)

    def motion(params, images):
      return model.apply({"params": params}, images, method=M.encode_motion)

    def render(params, prepared, z_pose, z_dyn, out_size):
      x = model.apply({"params": params}, prepared, z_pose, z_dyn, method=M.render)
      if x.shape[1] != out_size or x.shape[2] != out_size:
        x = jax.image.resize(x, (x.shape[0], out_size, out_size, x.shape[-1]), "linear",
                             antialias=True)
      return fl.float_to_images(x)

    def metrics(pred, target):
      return psnr(pred, target), ssim(pred, target)

    self.prepare = jit(prepare)
    self.motion = jit(motion)
    self.render = jit(render, static_argnums=(4,))
    self.metrics = jit(metrics)


_FUNCTIONS: dict = {}


def _functions(model, compiler_options=None) -> _Functions:
  try:
    cfg = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
  except Exception:   # not a ConfigDict: cache per model object
    cfg = f"id:{id(model)}"
  opts = tuple(sorted((compiler_options or {}).items()))
  key = (type(model).__name__, cfg, opts)
  if key not in _FUNCTIONS:
    _FUNCTIONS[key] = (model, _Functions(model, dict(opts)))
  return _FUNCTIONS[key][1]


# ----------------------------------------------------------------------------- checkpoints

def _restore(workdir, config, *, use_ema: bool = True):
  """(generator params, step) from the newest readable checkpoint of workdir."""
  from vasa_jax.train import common
  return common.restore_params(workdir, config, key="ema" if use_ema else "params")


def load_params(workdir, config, *, use_ema: bool = True):
  """Generator params (EMA by default, else the raw ones) of workdir's newest checkpoint.

  The abstract train state is built from `config` (jax.eval_shape of the trainer's init_state),
  so the caller needs no optimizer shapes. Arrays land on the first local device. Raises
  CheckpointNotFoundError (a FileNotFoundError) if there is no readable checkpoint.
  """
  return _restore(workdir, config, use_ema=use_ema)[0]


# ----------------------------------------------------------------------------- self reenactment

def self_reenactment(model, params, source, *, frames_per_clip: int = 8,
                     max_clips: int | None = None, image_size: int | None = None,
                     batch: int = 8, compiler_options: dict | None = None,
                     progress: Callable[[int, int], Any] | None = None) -> dict:
  """Self-reenactment PSNR / SSIM over the clips of a random-access `source` (module docstring).

  Returns {"psnr", "ssim" (means over frames; None without frames), "clips", "frames",
  "skipped_clips" (clips with < 2 frames), "image_size", "per_clip": [{clip_id, identity,
  frames, driver_indices, psnr, ssim}]}.
  """
  if batch < 1 or frames_per_clip < 1:
    raise ValueError("batch and frames_per_clip must be >= 1")
  size = int(model.config.image_size)
  out_size = int(image_size or size)
  fns = _functions(model, compiler_options)
  n = len(source) if max_clips is None else min(len(source), int(max_clips))
  per_clip, all_p, all_s, skipped = [], [], [], 0
  for c in range(n):
    rec = source[c]
    idx = driver_indices(int(rec["num_frames"]), frames_per_clip)
    if not idx:
      skipped += 1
      continue
    frames = rec["frames"]
    prepared = fns.prepare(params, _fit(_decode(frames[0]), size)[None])
    native = [_decode(frames[t]) for t in idx]
    model_in = np.stack([_fit(f, size) for f in native])
    targets = model_in if out_size == size else np.stack([_fit(f, out_size) for f in native])
    ps, ss = [], []
    for a in range(0, len(idx), batch):
      k = min(batch, len(idx) - a)
      mot = fns.motion(params, _pad(model_in[a:a + k], batch))
      pred = fns.render(params, prepared, mot["z_pose"], mot["z_dyn"], out_size)
      p, s = jax.device_get(fns.metrics(pred, _pad(targets[a:a + k], batch)))
      ps.append(np.asarray(p)[:k])
      ss.append(np.asarray(s)[:k])
    ps, ss = np.concatenate(ps), np.concatenate(ss)
    all_p.append(ps)
    all_s.append(ss)
    per_clip.append({"clip_id": _text(rec["clip_id"]) if "clip_id" in rec else str(c),
                     "identity": _text(rec["identity"]) if "identity" in rec else "",
                     "frames": len(idx), "driver_indices": idx,
                     "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))})
    if progress is not None:
      progress(c + 1, n)
  frames_p = np.concatenate(all_p) if all_p else np.zeros(0)
  frames_s = np.concatenate(all_s) if all_s else np.zeros(0)
  return {
      "psnr": float(frames_p.mean()) if frames_p.size else None,
      "ssim": float(frames_s.mean()) if frames_s.size else None,
      "clips": len(per_clip),
      "frames": int(frames_p.size),
      "skipped_clips": skipped,
      "image_size": out_size,
      "per_clip": per_clip,
  }


# ----------------------------------------------------------------------------- cross reenactment

def cross_reenactment_grid(model, params, sources: Sequence[np.ndarray],
                           drivers: Sequence[np.ndarray], *, batch: int = 8,
                           compiler_options: dict | None = None,
                           background: int = 255) -> np.ndarray:
  """uint8 grid [(1+S)*s, (1+D)*s, 3], s = the model's image size.

  Top row: the drivers (the corner cell is `background`); left column: the sources; cell
  (i, j): source i rendered with driver j's pose and dynamics codes.
  """
  if not len(sources) or not len(drivers):
    raise InputError("need at least one source and one driver image")
  s = int(model.config.image_size)
  fns = _functions(model, compiler_options)
  src = [_fit(x, s) for x in sources]
  drv = np.stack([_fit(x, s) for x in drivers])
  n_d = drv.shape[0]
  poses, dyns = [], []
  for a in range(0, n_d, batch):
    k = min(batch, n_d - a)
    mot = jax.device_get(fns.motion(params, _pad(drv[a:a + k], batch)))
    poses.append(np.asarray(mot["z_pose"])[:k])
    dyns.append(np.asarray(mot["z_dyn"])[:k])
  poses, dyns = np.concatenate(poses), np.concatenate(dyns)
  grid = np.full(((1 + len(src)) * s, (1 + n_d) * s, 3), background, np.uint8)
  for j in range(n_d):
    grid[:s, (j + 1) * s:(j + 2) * s] = drv[j]
  for i, image in enumerate(src):
    r = (i + 1) * s
    grid[r:r + s, :s] = image
    prepared = fns.prepare(params, image[None])
    for a in range(0, n_d, batch):
      k = min(batch, n_d - a)
      out = np.asarray(jax.device_get(fns.render(
          params, prepared, _pad(poses[a:a + k], batch), _pad(dyns[a:a + k], batch), s)))
      for m in range(k):
        grid[r:r + s, (a + m + 1) * s:(a + m + 2) * s] = out[m]
  return grid


def _pick_grid_frames(sources: dict, n_src: int, n_drv: int):
  """Source portraits (frame 0) and driver frames (mid clip), different identities if possible."""
  per_ds = []
  want = max(4 * (n_src + n_drv), 1)
  for key, src in sources.items():
    n = len(src)
    if not n:
      continue
    idx = np.unique(np.linspace(0, n - 1, min(n, want)).round().astype(int))
    per_ds.append([(key, int(i)) for i in idx])
  order = []   # round robin over the datasets
  for r in range(max((len(x) for x in per_ds), default=0)):
    order.extend(x[r] for x in per_ds if r < len(x))
  cands = []
  for key, i in order:
    rec = sources[key][i]
    cands.append((key, i, _text(rec["identity"]), rec))
  used_ids, used = set(), set()

  def take(n, frame_of):
    out = []
    for strict in (True, False):
      for c, (key, i, ident, rec) in enumerate(cands):
        if len(out) == n:
          return out
        if c in used or (strict and ident in used_ids):
          continue
        used.add(c)
        used_ids.add(ident)
        t = frame_of(int(rec["num_frames"]))
        out.append(({"dataset": key, "clip": i, "clip_id": _text(rec["clip_id"]) if "clip_id" in rec else str(i),
                     "identity": ident, "frame": t}, _decode(rec["frames"][t])))
    return out

  srcs = take(n_src, lambda t: 0)
  drvs = take(n_drv, lambda t: t // 2)
  return srcs, drvs


# ----------------------------------------------------------------------------- evaluate

def _write_atomic(path: str, write: Callable[[str], Any]) -> None:
  from vasa_jax.media import atomic_output
  with atomic_output(path) as tmp:
    write(tmp)


def evaluate(workdir_or_params, config, datasets: Sequence, data_dir: str | None = None,
             out_dir: str = "docs/stage1_eval", *, frames_per_clip: int = 8,
             max_clips: int | None = None, batch: int = 8, use_ema: bool = True,
             grid_sources: int = 4, grid_drivers: int = 4, sources: dict | None = None,
             compiler_options: dict | None = None,
             progress: Callable[[str, int, int], Any] | None = None) -> dict:
  """Self-reenactment metrics per dataset + a cross-reenactment grid; writes
  out_dir/reenactment.json and out_dir/cross_reenactment.png and returns the report.

  workdir_or_params: a training workdir (its newest checkpoint is restored; EMA params unless
  use_ema=False) or a generator params tree. datasets: (name, split) pairs or "name:split"
  strings. sources: optional {"name:split": random-access source} used instead of opening
  those datasets from data_dir (tests, custom data).
  """
  t0 = time.perf_counter()
  is_workdir = isinstance(workdir_or_params, (str, os.PathLike))
  if is_workdir:   # restored first: a missing checkpoint fails before any data is opened
    params, step = _restore(workdir_or_params, config, use_ema=use_ema)
  pairs = [_parse_dataset(d) for d in datasets]
  if not pairs:
    raise InputError("no datasets to evaluate")
  opened = {}
  for name, split in pairs:
    key = f"{name}:{split}"
    opened[key] = sources[key] if sources and key in sources else _open_dataset(name, split, data_dir)
  if is_workdir:
    ckpt = {"workdir": os.path.abspath(os.fspath(workdir_or_params)), "step": step,
            "params": "ema" if use_ema else "raw"}
  else:
    params, ckpt = workdir_or_params, None
  model = fl.FaceLatentModel(config.model)
  from vasa_jax.train import common
  opts = compiler_options if compiler_options is not None else common.compiler_options(config)

  results = {}
  for key, src in opened.items():
    cb = (lambda done, total, key=key: progress(key, done, total)) if progress else None
    results[key] = self_reenactment(model, params, src, frames_per_clip=frames_per_clip,
                                    max_clips=max_clips, batch=batch, compiler_options=opts,
                                    progress=cb)

  os.makedirs(out_dir, exist_ok=True)
  grid_info = None
  srcs, drvs = _pick_grid_frames(opened, grid_sources, grid_drivers)
  if srcs and drvs:
    grid = cross_reenactment_grid(model, params, [x for _, x in srcs], [x for _, x in drvs],
                                  batch=batch, compiler_options=opts)
    png = os.path.join(out_dir, "cross_reenactment.png")

    def write_png(path):
      import cv2
      if not cv2.imwrite(path, np.ascontiguousarray(grid[..., ::-1])):
        raise OSError(f"could not write {png}")

    _write_atomic(png, write_png)
    grid_info = {"png": os.path.abspath(png), "shape": list(grid.shape),
                 "layout": "top row: drivers; left column: sources; cell (i, j): source i "
                           "with driver j's pose + dynamics",
                 "sources": [d for d, _ in srcs], "drivers": [d for d, _ in drvs]}

  frames = sum(r["frames"] for r in results.values())
  overall = {"frames": frames, "psnr": None, "ssim": None}
  if frames:
    overall["psnr"] = sum(r["psnr"] * r["frames"] for r in results.values() if r["frames"]) / frames
    overall["ssim"] = sum(r["ssim"] * r["frames"] for r in results.values() if r["frames"]) / frames
  report = {
      "stage": "face_latent",
      "variant": config.get("variant", None),
      "image_size": int(config.model.image_size),
      "checkpoint": ckpt,
      "protocol": {
          "self_reenactment": "source = frame 0, drivers = frames_per_clip evenly spaced "
                              "other frames of the same clip; means over frames",
          "frames_per_clip": frames_per_clip, "max_clips": max_clips,
          "psnr": f"dB on uint8 [0, 255] (render quantised), capped at {PSNR_CAP_DB:g}",
          "ssim": f"gaussian 11 / sigma 1.5 on {SSIM_RANGE} images",
      },
      "overall": overall,
      "datasets": results,
      "cross_reenactment": grid_info,
      "seconds": round(time.perf_counter() - t0, 2),
  }
  path = os.path.join(out_dir, "reenactment.json")

  def write_json(tmp):
    with open(tmp, "w") as f:
      json.dump(report, f, indent=1)
      f.write("\n")

  _write_atomic(path, write_json)
  return report


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m vasa_jax.eval.reenact",
      description="Stage-1 self-reenactment PSNR/SSIM and a cross-reenactment grid "
                  "(extra --config.a.b=value arguments override config fields).")
  p.add_argument("--config", required=True, help="configs/face_latent.py:<variant>")
  p.add_argument("--workdir", required=True, help="training workdir (holds checkpoints/)")
  p.add_argument("--dataset", action="append", required=True,
                 help="NAME:SPLIT, e.g. synthetic_talking_heads/r256_n1000:test (repeatable)")
  p.add_argument("--data-dir", default=None, help="TFDS data dir (default: config, "
                 "$VASA_JAX_DATA_DIR or ~/tensorflow_datasets)")
  p.add_argument("--out", default="docs/stage1_eval", help="output folder")
  p.add_argument("--frames-per-clip", type=int, default=8)
  p.add_argument("--max-clips", type=int, default=None, help="per dataset (default: all)")
  p.add_argument("--batch", type=int, default=8, help="frames per render call")
  p.add_argument("--grid-sources", type=int, default=4)
  p.add_argument("--grid-drivers", type=int, default=4)
  p.add_argument("--raw-params", action="store_true", help="raw instead of EMA parameters")
  return p


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass
  from vasa_jax import config_utils
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--config" not in " ".join(argv):   # a bundle: the geometry-grounded evaluation
    from vasa_jax.eval import geo_reenact
    return geo_reenact.main(argv)
  args, extra = _parser().parse_known_args(argv)
  try:
    config = config_utils.load_config(args.config, extra)
    if config.get("stage") != "face_latent":
      raise config_utils.InputError(f"config has stage={config.get('stage')!r}; this evaluates face_latent")
    if args.frames_per_clip < 1 or args.batch < 1 or (args.max_clips is not None and args.max_clips < 1):
      raise config_utils.InputError("--frames-per-clip, --batch and --max-clips must be >= 1")
    data_dir = args.data_dir or config.data.get("data_dir") or config_utils.DEFAULT_DATA_DIR

    def progress(key, done, total):
      print(f"\r{key}: clip {done}/{total}", end="\n" if done == total else "",
            file=sys.stderr, flush=True)

    report = evaluate(args.workdir, config, [_parse_dataset(d) for d in args.dataset], data_dir,
                      args.out, frames_per_clip=args.frames_per_clip, max_clips=args.max_clips,
                      batch=args.batch, use_ema=not args.raw_params,
                      grid_sources=args.grid_sources, grid_drivers=args.grid_drivers,
                      progress=progress)
  except (config_utils.InputError, FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as e:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"vasa-jax eval: error: {msg}", file=sys.stderr)
    return 2
  print(json.dumps(report, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

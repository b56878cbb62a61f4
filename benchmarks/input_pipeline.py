"""Input-pipeline throughput: can decoding keep up with training on this machine?

Builds (or reuses) a small synthetic_talking_heads dataset at --size, then times the stage-2
pipeline over its clips (tracks and audio windows) and over motion_latents-style records (the
clips' records without frames, with a stored geometry-code motion track [T, 50] sliced into
windows and the gaze / distance / blink-rate controls measured from it, as stage 2 trains),
in-process and with grain worker processes. Prints one JSON object, including the dataset's
bytes per clip and the size a 1,000-clip corpus would take.

  python benchmarks/input_pipeline.py [--size 256] [--clips 16] [--data-dir DIR] [--workers 2]
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _rate(it, n_batches, batch_size):
  next(it)  # warm-up (worker start, first reads)
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  return n_batches * batch_size / (time.perf_counter() - t0)


MOTION_DIM = 50   # 6 pose + 40 expression + 2 lids + 2 gaze: the shipped face basis's codes


def _motion_records(src) -> list:
  """The clips of `src` as a motion_latents dataset holds them: no frames, a stored motion track
  [T, MOTION_DIM] (smooth noise; the head at 0.65 m, the lids open)."""
  import numpy as np
  rng = np.random.default_rng(0)
  out = []
  for i in range(len(src)):
    rec = {k: v for k, v in src[i].items() if k != "frames"}
    t = int(rec["num_frames"])
    m = np.cumsum(rng.normal(0.0, 0.01, (t, MOTION_DIM)), axis=0).astype(np.float32)
    m[:, 5] += 0.65
    m[:, -4:-2] += 0.3
    rec["motion"] = m
    out.append(rec)
  return out


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--clips", type=int, default=16)
  p.add_argument("--seconds", type=float, default=4.0)
  p.add_argument("--data-dir", default=None)
  p.add_argument("--dataset", default=None,
                 help="an already built dataset (e.g. synthetic_talking_heads/r256_n1000) instead of a fresh small one")
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--batches", type=int, default=20)
  a = p.parse_args()

  import tensorflow_datasets as tfds

  from vasa_jax.data import SyntheticConfig, SyntheticTalkingHeads, pipeline, register_builders
  register_builders()
  data_dir = a.data_dir or os.path.join(tempfile.gettempdir(), "vasa_jax_bench_tfds")
  t0 = time.perf_counter()
  if a.dataset:
    builder = tfds.builder(a.dataset, data_dir=data_dir)
  else:
    cfg = SyntheticConfig(name=f"bench_r{a.size}_n{a.clips}", size=a.size, clips=a.clips,
                          seconds=a.seconds, test_fraction=0.2)
    builder = SyntheticTalkingHeads(config=cfg, data_dir=data_dir)
    if not builder.is_prepared():
      import contextlib
      with contextlib.redirect_stdout(sys.stderr):   # TFDS's progress lines; stdout is the JSON
        builder.download_and_prepare(file_format="array_record")
  build_s = time.perf_counter() - t0
  src = builder.as_data_source(split="train")
  nbytes = sum(s.num_bytes for s in builder.info.splits.values())
  n_clips = sum(s.num_examples for s in builder.info.splits.values())
  per_clip = nbytes / n_clips
  out = {"dataset": builder.info.full_name, "size": builder.builder_config.size, "clips": n_clips,
         "build_seconds": round(build_s, 1),
         "bytes_per_clip": int(per_clip), "gb_per_1000_clips": round(per_clip * 1000 / 1e9, 2),
         "cpu_cores": os.cpu_count()}
  motion_src = _motion_records(src)
  for workers in (0, a.workers):
    it = iter(pipeline.stage2_loader(src, batch_size=a.batch_size, window=50, context=10, seed=0,
                                     worker_count=workers, shard_index=0, shard_count=1))
    out[f"stage2_examples_per_s_workers{workers}"] = round(_rate(it, a.batches, a.batch_size), 1)
    it = iter(pipeline.stage2_loader(motion_src, batch_size=a.batch_size, window=50, context=10,
                                     seed=0, with_motion=True, controls_from_motion=True,
                                     worker_count=workers, shard_index=0, shard_count=1))
    out[f"stage2_motion_examples_per_s_workers{workers}"] = round(
        _rate(it, a.batches, a.batch_size), 1)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

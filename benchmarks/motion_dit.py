"""Stage-2 MotionDiT: training step time, model-FLOPs utilisation and memory.

  python benchmarks/motion_dit.py [--variants demo,paper] [--batch-size N] [--repeats 5]
                                  [--dtype float32|bfloat16]
  python benchmarks/motion_dit.py --quick      # tiny config, batch 2 (smoke test)

Prints ONE JSON object. Per variant (configs/motion_dit.py): the jitted trainer update step
(vasa_jax/train/motion_dit.make_train_step: audio features, diffusion loss forward + backward,
optimiser, EMA) on a random batch of the config's window / context / motion size:
compile seconds, median step time over --repeats calls after one warm-up, windows per second,
FLOPs from XLA's cost analysis of the compiled step (hardware FLOPs of the optimised program,
2 per multiply-add, forward + backward + optimiser), achieved FLOP/s, "mfu" = that / the
device's peak (null on CPU, where no peak is known), the executable's memory analysis and,
on GPU / TPU, the device's peak bytes in use. Peaks and the analysis helpers are those of
benchmarks/_bench.py, shared with the other benchmark scripts so their figures are comparable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402


def _module(path: str, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


bench = _module(os.path.join(ROOT, "benchmarks", "_bench.py"), "bench_helpers")


def random_batch(rng: np.random.Generator, config, batch_size: int) -> dict:
  """A pipeline-layout stage-2 batch with raw motion attached (what `step_batch` returns)."""
  mc = config.model
  b, w, k, d = batch_size, int(mc.window), int(mc.context), int(mc.motion_dim)
  f32 = np.float32
  return {
      "motion": rng.normal(size=(b, w, d)).astype(f32),
      "prev_motion": rng.normal(size=(b, k, d)).astype(f32),
      "mask": np.ones((b, w), f32),
      "prev_mask": np.ones((b, k), f32),
      "audio": (0.1 * rng.normal(size=(b, w * 640))).astype(f32),
      "prev_audio": (0.1 * rng.normal(size=(b, k * 640))).astype(f32),
      "control_gaze": (0.1 * rng.normal(size=(b, 2))).astype(f32),
      "control_distance": np.full((b,), 0.65, f32),
      "control_emotion": rng.integers(0, 5, (b,)).astype(np.int32),
      "control_emotion_intensity": rng.uniform(0, 1, (b,)).astype(f32),
      "has_control_gaze": np.ones((b,), np.int32),
      "has_control_distance": np.ones((b,), np.int32),
      "has_control_emotion": np.ones((b,), np.int32),
  }


def bench_train_step(config, args, devices, peak) -> dict:
  from vasa_jax import sharding
  from vasa_jax.models import motion_dit as md
  from vasa_jax.train import motion_dit as trainer

  mesh = sharding.make_mesh(devices=devices)
  n_dev = len(devices)
  bs = args.batch_size or config.batch_size
  bs = max(n_dev, (bs // n_dev) * n_dev)
  with config.unlocked():
    config.batch_size = bs
  d = int(config.model.motion_dim)
  stats = {"mean": np.zeros(d, np.float32), "std": np.ones(d, np.float32)}
  rng = jax.random.key(config.seed, impl=config.get("rng_impl") or None)
  t0 = time.perf_counter()
  state, shardings = trainer.create_state(config, mesh, rng)
  state = jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  step = trainer.make_train_step(config, mesh, shardings, stats)
  batch = sharding.to_global(random_batch(np.random.default_rng(1), config, bs), mesh)
  compiled, c_s = bench.compile_fn(step, state, batch)
  state, metrics, times = bench.time_train_step(compiled, state, batch, args.repeats)
  loss = float(jax.device_get(metrics["loss/loss"]))
  res = bench.summarise("train_step", compiled, c_s, times, items=bs, item_name="window",
                           peak=peak, device=devices[0])
  res.update({
      "batch_size": bs, "mesh_devices": n_dev, "state_init_s": round(init_s, 3),
      "params": md.param_count(state["params"]) if hasattr(md, "param_count") else
      int(sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))),
      "frames_per_s": round(bs * int(config.model.window) / (res["median_ms"] / 1e3), 1),
      "loss_finite": bool(np.isfinite(loss)),
      "mfu": res.get("fraction_of_peak"),
  })
  if "fraction_of_tf32_peak" in res:
    res["mfu_tf32"] = res["fraction_of_tf32_peak"]
  return res


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--variants", default=None, help="comma-separated (default demo; +paper off CPU)")
  ap.add_argument("--batch-size", type=int, default=None, help="default: the config's")
  ap.add_argument("--repeats", type=int, default=None, help="default 10 (accelerator), 3 (CPU)")
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  ap.add_argument("--quick", action="store_true", help="smoke test: tiny config, batch 2")
  args = ap.parse_args(argv)
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  if args.quick:
    variants, args.batch_size, args.repeats = ["tiny"], args.batch_size or 2, args.repeats or 2
  elif args.variants:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
  else:
    variants = ["demo"] if on_cpu else ["demo", "paper"]
  args.repeats = max(1, args.repeats or (3 if on_cpu else 10))
  devices = [device] if on_cpu else jax.devices()
  peak = bench.peak_flops(device, args.dtype)
  cfg_mod = _module(os.path.join(ROOT, "configs", "motion_dit.py"), "motion_dit_config")
  out = {
      "benchmark": "motion_dit_train_step", "backend": jax.default_backend(),
      "device_kind": device.device_kind, "device_count": jax.device_count(),
      "jax": jax.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
      "loadavg_start": [round(x, 2) for x in os.getloadavg()], "dtype": args.dtype,
      "repeats": args.repeats, "quick": bool(args.quick), "peak_flops_per_s": peak["peak"],
      "variants": {},
  }
  for variant in variants:
    config = cfg_mod.get_config(variant)
    with config.unlocked():
      config.model.dtype = args.dtype
      if args.quick:
        config.compiler_options = ml_collections.ConfigDict(
            {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    t0 = time.perf_counter()
    entry = {"train_step": bench_train_step(config, args, devices, peak),
             "window": int(config.model.window), "context": int(config.model.context),
             "motion_dim": int(config.model.motion_dim)}
    entry["device_peak_bytes"] = bench.device_peak_bytes(device)
    entry["wall_s"] = round(time.perf_counter() - t0, 3)
    out["variants"][variant] = entry
  print(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())

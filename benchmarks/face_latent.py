"""Stage-1 face latent model: render throughput, prepare/encode cost, train step, FLOPs, memory.

  python benchmarks/face_latent.py [--variants demo,paper] [--frames-per-call 8] [--repeats 5]
                                   [--dtype float32|bfloat16] [--train-step] [--batch-size N]
  python benchmarks/face_latent.py --quick [--train-step]   # tiny config (smoke test)

Prints ONE JSON object. Per variant (configs/face_latent.py):
  encode   jit(FaceLatentModel.encode), one portrait image [1,S,S,3]          (once per portrait)
  prepare  jit(FaceLatentModel.prepare) on the encoded portrait, batch 1      (once per portrait)
  render   jit(FaceLatentModel.render): the prepared portrait (batch 1) broadcast against B
           random motion codes (B = --frames-per-call frames in one call)   (per frame)
  train_step (with --train-step) the jitted trainer step (generator + discriminator update) on a
           random stage-1 batch of the config's batch size (or --batch-size).
For each: compile seconds, median wall time over --repeats calls after one warm-up call,
FLOPs from XLA's cost analysis of the compiled executable, achieved FLOP/s, and the fraction of
the device's peak (a small table below; null where the device is unknown, e.g. CPU), plus the
executable's memory analysis and, where the runtime reports it (GPU, TPU), the device's peak
bytes in use so far (process-wide, cumulative: read it in measurement order).

Notes on the numbers:
  * FLOPs are XLA's HloCostAnalysis count (2 per multiply-add in convolutions and dots, plus
    elementwise ops) of the optimised program: hardware FLOPs, not an analytic model count.
    For the train step this covers forward + backward of generator and discriminator and the
    optimiser; "mfu" is that count / step time / peak. With a mesh of several devices the
    count is per device program and the peak is per device.
  * float32 on Ampere/Hopper GPUs: XLA's default precision runs float32 convolutions and dots
    on TF32 tensor cores, so the fraction of the (non-tensor-core) fp32 peak can exceed 1;
    `fraction_of_tf32_peak` is given as well. On TPU float32 matmuls at default precision run
    as single-pass bfloat16, so the bf16 peak is used for both dtypes.
  * On CPU the default is the demo variant only (paper at 512x512 takes very long there);
    pass --variants explicitly to run others. Keep --repeats small on CPU.
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
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from vasa_jax import sharding  # noqa: E402
from vasa_jax.models import face_latent as fl  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from _bench import (compile_fn, peak_flops, summarise, time_calls,  # noqa: E402,F401
                    time_train_step, device_peak_bytes)


def load_config(variant: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(
      "face_latent_config", os.path.join(ROOT, "configs", "face_latent.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


# ----------------------------------------------------------------------------- inputs

def random_motion(rng: np.random.Generator, n: int, dyn_dim: int, ref_distance: float):
  """Plausible driving codes: small head rotations/shifts around the reference pose."""
  ang = rng.uniform(-0.3, 0.3, size=(n, 3))
  txy = rng.uniform(-0.02, 0.02, size=(n, 2))
  tz = ref_distance * np.exp(rng.uniform(-0.1, 0.1, size=(n, 1)))
  z_pose = np.concatenate([ang, txy, tz], axis=1).astype(np.float32)
  z_dyn = (0.5 * rng.normal(size=(n, dyn_dim))).astype(np.float32)
  return jnp.asarray(z_pose), jnp.asarray(z_dyn)


def random_stage1_batch(rng: np.random.Generator, batch_size: int, size: int) -> dict:
  """A stage-1 batch in the layout of vasa_jax.data.pipeline.Stage1Transform (batched)."""
  b = batch_size

  def frame():
    return {
        "image": rng.integers(0, 256, size=(b, size, size, 3), dtype=np.uint8),
        "pose": np.concatenate([rng.uniform(-0.3, 0.3, (b, 3)), rng.uniform(-0.02, 0.02, (b, 2)),
                                rng.uniform(0.55, 0.75, (b, 1))], 1).astype(np.float32),
        "gaze": rng.uniform(-0.3, 0.3, (b, 2)).astype(np.float32),
        "mouth": rng.uniform(0, 1, (b, 3)).astype(np.float32),
        "blink": rng.uniform(0, 1, (b,)).astype(np.float32),
        "emotion_intensity": rng.uniform(0, 1, (b,)).astype(np.float32),
    }

  ones = np.ones((b,), np.int32)
  batch = {"source": frame(), "driving": frame(), "cross": frame()}
  for k in ("has_pose", "has_gaze", "has_mouth", "has_blink", "has_emotion", "cross_has_pose",
            "has_cross"):
    batch[k] = ones.copy()
  batch["identity_index"] = np.arange(b, dtype=np.int64)
  batch["cross_identity_index"] = np.arange(b, dtype=np.int64) + b
  batch["frame_index"] = np.stack([np.zeros(b), np.ones(b)], 1).astype(np.int32)
  return batch


# ----------------------------------------------------------------------------- benchmarks

def bench_inference(config, args, device, peak) -> tuple[dict, dict]:
  """encode / prepare / render on one device. Returns (results, info)."""
  mc = config.model
  model = fl.FaceLatentModel(mc)
  s = mc.image_size
  rng = np.random.default_rng(0)
  img1 = jnp.asarray(rng.integers(0, 256, size=(1, s, s, 3), dtype=np.uint8))

  with jax.default_device(device):
    t0 = time.perf_counter()
    opts = config.get("compiler_options", None)
    init = jax.jit(lambda r, x: model.init(r, x, x)["params"],
                   compiler_options=dict(opts) if opts else None)
    params = init(jax.random.key(0), img1)
    params = jax.block_until_ready(params)
    init_s = time.perf_counter() - t0
    info = {"generator_params": fl.param_count(params), "init_s": round(init_s, 3)}

    opts = config.get("compiler_options", None)
    opts = dict(opts) if opts else None

    def apply(method):
      return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method),
                     compiler_options=opts)

    out = {}
    # encode: one portrait image -> v_app, z_id, z_pose, z_dyn.
    enc_fn, c_s = compile_fn(apply(fl.FaceLatentModel.encode), params, img1)
    enc = jax.block_until_ready(enc_fn(params, img1))
    out["encode"] = summarise("encode", enc_fn, c_s, time_calls(enc_fn, (params, img1),
                                                                args.repeats),
                              items=1, item_name="portrait", peak=peak, device=device)

    # prepare: once per portrait (batch 1).
    prep_args = (params, enc["v_app"], enc["z_id"], enc["z_pose"], enc["z_dyn"])
    prep_fn, c_s = compile_fn(apply(fl.FaceLatentModel.prepare), *prep_args)
    prepared = jax.block_until_ready(prep_fn(*prep_args))
    out["prepare"] = summarise("prepare", prep_fn, c_s, time_calls(prep_fn, prep_args,
                                                                   args.repeats),
                               items=1, item_name="portrait", peak=peak, device=device)

    # render: the prepared portrait (batch 1) against B frames of random motion codes.
    b = args.frames_per_call
    z_pose, z_dyn = random_motion(rng, b, mc.dyn_dim, mc.ref_distance)
    rend_args = (params, prepared, z_pose, z_dyn)
    rend_fn, c_s = compile_fn(apply(fl.FaceLatentModel.render), *rend_args)
    frames = jax.block_until_ready(rend_fn(*rend_args))
    assert frames.shape == (b, s, s, 3), frames.shape
    info["render_finite"] = bool(jnp.all(jnp.isfinite(frames)))
    out["render"] = summarise("render", rend_fn, c_s, time_calls(rend_fn, rend_args, args.repeats),
                              items=b, item_name="frame", peak=peak, device=device)
    info["volume_shape"] = list(fl.volume_shape(mc))
    info["canonical_shape"] = list(prepared["canonical"].shape)
  del params, enc, prepared, frames
  return out, info


def bench_train_step(config, args, devices, peak) -> dict:
  from vasa_jax.train import face_latent as trainer   # heavier imports only when needed

  mesh = sharding.make_mesh(devices=devices)
  n_dev = len(devices)
  bs = args.batch_size or config.batch_size
  bs = max(n_dev, (bs // n_dev) * n_dev)               # divisible by the mesh
  with config.unlocked():
    config.batch_size = bs
  rng = jax.random.key(config.seed, impl=config.get("rng_impl") or None)
  t0 = time.perf_counter()
  state, shardings = trainer.create_state(config, mesh, rng)
  state = jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  step = trainer.make_train_step(config, mesh, shardings)
  batch = sharding.to_global(random_stage1_batch(np.random.default_rng(1), bs,
                                                 config.model.image_size), mesh)
  compiled, c_s = compile_fn(step, state, batch)

  state, metrics, times = time_train_step(compiled, state, batch, args.repeats)
  loss = float(jax.device_get(metrics["loss/total"]))
  res = summarise("train_step", compiled, c_s, times, items=bs, item_name="example", peak=peak,
                  device=devices[0])
  res.update({
      "batch_size": bs, "mesh_devices": n_dev, "state_init_s": round(init_s, 3),
      "loss_total_finite": bool(np.isfinite(loss)),
      "discriminator_params": fl.param_count(state["d_params"]),
      "mfu": res["fraction_of_peak"],
  })
  if "fraction_of_tf32_peak" in res:
    res["mfu_tf32"] = res["fraction_of_tf32_peak"]
  del state, metrics, batch
  return res


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--variants", default=None,
                  help="comma-separated config variants (default demo,paper; demo only on CPU)")
  ap.add_argument("--frames-per-call", type=int, default=8, help="frames rendered per call (B)")
  ap.add_argument("--repeats", type=int, default=None,
                  help="timed calls after warm-up (default 10 on accelerators, 2 on CPU)")
  ap.add_argument("--train-step", action="store_true", help="also time the trainer's update step")
  ap.add_argument("--batch-size", type=int, default=None,
                  help="train-step batch size (default: the config's)")
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                  help="model compute dtype (parameters stay float32)")
  ap.add_argument("--quick", action="store_true",
                  help="smoke test: tiny config, 2 frames, 2 repeats (train step, if asked, at batch 2)")
  args = ap.parse_args(argv)

  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  if args.quick:
    variants = ["tiny"]
    args.frames_per_call = min(args.frames_per_call, 2)
    args.repeats = args.repeats or 2
    args.batch_size = args.batch_size or 2
  elif args.variants:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
  else:
    variants = ["demo"] if on_cpu else ["demo", "paper"]
  if args.repeats is None:
    args.repeats = 2 if on_cpu else 10
  args.repeats = max(1, args.repeats)

  # Train step: one device on CPU (simulated host devices share the same cores), else all.
  train_devices = [device] if on_cpu else jax.devices()
  peak = peak_flops(device, args.dtype)
  out = {
      "benchmark": "face_latent",
      "backend": jax.default_backend(),
      "platform": device.platform,
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "jax": jax.__version__,
      "machine": platform.machine(),
      "cpu_count": os.cpu_count(),
      "loadavg_start": [round(x, 2) for x in os.getloadavg()],
      "dtype": args.dtype,
      "frames_per_call": args.frames_per_call,
      "repeats": args.repeats,
      "quick": bool(args.quick),
      "peak_flops_per_s": peak["peak"],
      "peak_tf32_flops_per_s": peak["tf32"],
      "variants": {},
  }
  for variant in variants:
    config = load_config(variant)
    with config.unlocked():
      config.model.dtype = args.dtype
      if args.quick:   # cheap CPU compiles, as in the tests
        config.compiler_options = ml_collections.ConfigDict(
            {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    t0 = time.perf_counter()
    res, info = bench_inference(config, args, device, peak)
    entry = {"image_size": config.model.image_size, **info, **res}
    if args.train_step:
      entry["train_step"] = bench_train_step(config, args, train_devices, peak)
    entry["device_peak_bytes"] = device_peak_bytes(device)
    entry["wall_s"] = round(time.perf_counter() - t0, 3)
    out["variants"][variant] = entry
  out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()

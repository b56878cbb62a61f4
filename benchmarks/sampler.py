"""Motion sampler real-time factor: vasa_jax.sampling's jitted DDIM loop.

For each step count and with / without classifier-free guidance (cfg audio 0.5, gaze 1.0:
three branches in one batched forward, vs none: one branch), times one window of W frames:
  jit_loop     the whole DDIM loop as one jax.jit (lax.fori_loop), params as an argument
  python_loop  a Python loop over the same step, itself jitted (one dispatch per step)
and prints JSON with median seconds per window, the real-time factor
  rtf = compute seconds / seconds of 25 fps motion produced (batch * W / 25); < 1 is faster
        than real time
and python_over_jit = python_loop / jit_loop.

The denoiser is MotionDiT with randomly initialised params of --variant (tiny|demo|paper)
when vasa_jax.models.motion_dit and configs/motion_dit.py exist, else (or with --mlp) a small
per-frame MLP denoiser with the same contract.

  python benchmarks/sampler.py [--variant tiny] [--steps 10,25,50] [--batch 1] [--repeats 3]
                               [--mlp] [--quick]
"""

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vasa_jax import sampling  # noqa: E402

FPS = sampling.FPS
CFG_ON = {"audio": 0.5, "gaze": 1.0}


# ----------------------------------------------------------------------------- denoisers

def mlp_denoiser(window=50, context=10, motion_dim=64, audio_dim=160, hidden=256, seed=0):
  """A per-frame MLP with the MotionDiT contract: (params, x, t, cond, drop) -> x0."""
  r = np.random.default_rng(seed)
  dense = lambda i, o: jnp.asarray(r.normal(size=(i, o)) / np.sqrt(i), jnp.float32)
  params = {"in": dense(motion_dim + audio_dim + motion_dim + 2 + 1, hidden),
            "mid": dense(hidden, hidden), "out": dense(hidden, motion_dim)}

  def denoise(p, x, t, cond, drop):
    b, w, _ = x.shape
    keep = lambda name: 1.0 - drop.get(name, jnp.zeros((b,)))[:, None, None]
    audio = cond["audio"] * cond["audio_mask"][..., None] * keep("audio")
    prev = (cond["prev_motion"] * cond["prev_mask"][..., None]).mean(1, keepdims=True)
    gaze = cond["gaze"][:, None, :] * keep("gaze")
    feats = jnp.concatenate([x, audio, jnp.broadcast_to(prev, x.shape),
                             jnp.broadcast_to(gaze, (b, w, 2)),
                             jnp.broadcast_to(t[:, None, None], (b, w, 1))], -1)
    h = jax.nn.gelu(feats @ p["in"])
    h = jax.nn.gelu(h @ p["mid"]) + h
    return h @ p["out"]

  dims = dict(window=window, context=context, motion_dim=motion_dim, audio_dim=audio_dim)
  return denoise, params, dims, {"kind": "mlp", "hidden": hidden}


def motion_dit_denoiser(variant, seed=0):
  """MotionDiT(variant) with random params, or None when the stage-2 model is not there."""
  try:
    md = importlib.import_module("vasa_jax.models.motion_dit")
    cfg_mod = importlib.import_module("configs.motion_dit")
  except ImportError:
    return None
  mc = cfg_mod.get_config(variant).model
  model = md.MotionDiT(config=mc)
  x, t, cond, drop = md.dummy_inputs(mc, 1)
  variables = jax.jit(lambda k: model.init(k, x, t, cond, drop))(jax.random.PRNGKey(seed))
  variables = unbox(variables)

  def denoise(v, x, t, cond, drop):
    return model.apply(v, x, t, cond, drop)

  dims = dict(window=int(mc.window), context=int(mc.context), motion_dim=int(mc.motion_dim),
              audio_dim=int(mc.audio_in_dim))
  info = {"kind": "motion_dit", "variant": variant, "params": md.param_count(variables),
          "width": int(mc.width), "layers": int(mc.layers), "dtype": str(mc.dtype)}
  return denoise, variables, dims, info


def unbox(tree):
  """Strip flax logical-partitioning boxes (nn.Partitioned) from an init result."""
  try:
    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    return nn.meta.unbox(tree)
  except Exception:  # noqa: BLE001
    return tree


def example_cond(batch, dims):
  r = np.random.default_rng(1)
  w, k, d, a = dims["window"], dims["context"], dims["motion_dim"], dims["audio_dim"]
  f = lambda *s: jnp.asarray(r.normal(size=s), jnp.float32)
  return {"audio": f(batch, w, a), "audio_mask": jnp.ones((batch, w)),
          "prev_motion": f(batch, k, d), "prev_audio": f(batch, k, a),
          "prev_mask": jnp.ones((batch, k)), "gaze": jnp.zeros((batch, 2)),
          "distance": jnp.full((batch,), 0.5), "emotion": jnp.zeros((batch,), jnp.int32)}


# ----------------------------------------------------------------------------- timing

def _median(fn, repeats):
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def bench_one(denoise, params, cond, shape, steps, cfg, repeats, python_loop):
  rng = jax.random.PRNGKey(0)
  fn = sampling.make_sampler(denoise, shape=shape, steps=steps, cfg=cfg, with_params=True)
  t0 = time.perf_counter()
  compiled = fn.lower(params, cond, rng).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(params, cond, rng))
  jit_s = _median(lambda: compiled(params, cond, rng), repeats)
  motion_s = shape[0] * shape[1] / FPS
  res = {"steps": steps, "cfg": dict(cfg or {}), "branches": 1 + len(sampling.active_guidance(cfg)),
         "compile_s": round(compile_s, 3), "jit_loop_s": jit_s, "rtf": jit_s / motion_s,
         "frames_per_s": shape[0] * shape[1] / jit_s}
  if python_loop:
    def one_step(p, i, z, c, key):
      step = sampling.make_step(lambda *a: denoise(p, *a), steps=steps, cfg=cfg)
      return step(i, z, c, key)
    jstep = jax.jit(one_step)
    init = jax.jit(lambda key: jax.random.normal(sampling.split_rng(key)[0], shape))

    def py():
      z = init(rng)
      k_steps = sampling.split_rng(rng)[1]
      for i in range(steps):
        z = jstep(params, jnp.int32(i), z, cond, k_steps)
      return z
    jax.block_until_ready(py())
    py_s = _median(py, repeats)
    res.update(python_loop_s=py_s, python_rtf=py_s / motion_s, python_over_jit=py_s / jit_s)
    np.testing.assert_allclose(np.asarray(py()), np.asarray(compiled(params, cond, rng)),
                               atol=1e-3, rtol=1e-3)
  return res


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variant", default="tiny", choices=["tiny", "demo", "paper"])
  ap.add_argument("--steps", default="10,25,50")
  ap.add_argument("--batch", type=int, default=1)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--mlp", action="store_true", help="force the MLP denoiser")
  ap.add_argument("--no-python-loop", action="store_true")
  ap.add_argument("--quick", action="store_true", help="steps 2,4, one repeat (smoke test)")
  args = ap.parse_args(argv)
  steps_list = [2, 4] if args.quick else [int(s) for s in args.steps.split(",")]
  repeats = 1 if args.quick else args.repeats

  built = None if args.mlp else motion_dit_denoiser(args.variant)
  if built is None:
    built = mlp_denoiser()
  denoise, params, dims, info = built
  cond = example_cond(args.batch, dims)
  shape = (args.batch, dims["window"], dims["motion_dim"])
  results = []
  for steps in steps_list:
    for cfg in (None, CFG_ON):
      results.append(bench_one(denoise, params, cond, shape, steps, cfg, repeats,
                               not args.no_python_loop))
  dev = jax.devices()[0]
  print(json.dumps({
      "backend": jax.default_backend(), "device_kind": dev.device_kind,
      "platform": platform.platform(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
      "quick": args.quick, "denoiser": info, "batch": args.batch, **dims, "fps": FPS,
      "window_seconds": dims["window"] / FPS, "repeats": repeats, "results": results,
  }, indent=1))


if __name__ == "__main__":
  main()

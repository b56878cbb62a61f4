"""Per-device memory of the volume renderer's train state (params, optimizer states, EMA,
discriminator) under fsdp.

No arrays are allocated: the state is abstract (jax.eval_shape) and each leaf's per-device
shard shape comes from the NamedSharding the logical axis rules give it.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/fsdp_memory.py [--variant volume_paper]
"""

import argparse
import functools
import importlib.util
import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def per_device_bytes(abstract, shardings) -> dict:
  out = {}
  for name in abstract:
    leaves = jax.tree_util.tree_leaves(abstract[name])
    shards = jax.tree_util.tree_leaves(shardings[name])
    out[name] = int(sum(np.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
                        for x, s in zip(leaves, shards)))
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variant", default="volume_paper")
  ap.add_argument("--fsdp", default="1,8")
  a = ap.parse_args()
  from vasa_jax import sharding
  from vasa_jax.train import common
  from vasa_jax.train import volume as trainer
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(root, "configs", "face_latent.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(a.variant)
  boxed = jax.eval_shape(functools.partial(trainer.init_state, config), jax.random.key(0))
  abstract = common.unbox(boxed)
  n = jax.device_count()
  report = {"variant": a.variant, "devices": n,
            "generator_params": int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(abstract["params"]))),
            "per_device_bytes": {}}
  for f in (int(x) for x in a.fsdp.split(",")):
    mesh = sharding.make_mesh(data=n // f, fsdp=f)
    sh = common.state_shardings(boxed, mesh, config.logical_axis_rules)
    b = per_device_bytes(abstract, sh)
    b["total"] = sum(b.values())
    report["per_device_bytes"][f"fsdp{f}"] = {k: v for k, v in b.items()}
    report["per_device_bytes"][f"fsdp{f}"]["total_gib"] = round(b["total"] / 2**30, 3)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()

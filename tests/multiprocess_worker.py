"""One process of a multi-process CPU job (run by tests/test_multiprocess.py):

  python multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON

Each process owns 8 / NUM_PROCESSES simulated CPU devices and feeds its slice of one fixed
global batch per stage; two train steps of each stage run (stage 1: the mouth compositor; stage 2:
MotionDiT on stored geometry motion with statistics of the global batch); process 0 writes each
stage's loss and parameter norm.
"""
import os, sys, json
pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // nproc}"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE); sys.path.insert(0, os.path.dirname(HERE))
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if nproc > 1:
  # generous heartbeat: on a loaded 2-core CI box a worker can be starved for a long while
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                             heartbeat_timeout_seconds=600)
import numpy as np
from jax.experimental import multihost_utils
from conftest import ListSource, make_fake_motion_records
import test_train_geo_decoder as t1
import test_train_motion_dit as t2
from vasa_jax import sharding
from vasa_jax.data import motion as motion_lib
from vasa_jax.data import pipeline
per = 8 // nproc
mesh = sharding.make_mesh()
result = {"devices": jax.device_count(), "processes": jax.process_count()}


def local_slice(full):
  return jax.tree_util.tree_map(lambda x: x[pid * per:(pid + 1) * per], full)


def compiled(name, step, *args):
  """`step` compiled for args, once every process has compiled it: a coordination-service
  barrier (10 min) lines the processes up, so neither waits in Gloo's connect (which times out
  after ~30 s) while the other is still compiling on a loaded 2-core box."""
  fn = step.lower(*args).compile()
  if nproc > 1:
    from jax._src import distributed
    distributed.global_state.client.wait_at_barrier(f"compiled_{name}", 600_000)
  return fn


def summary(state, m, loss_key):
  params = multihost_utils.process_allgather(state["params"], tiled=True)
  norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree_util.tree_leaves(params))))
  return {"loss": float(m[loss_key]), "param_norm": norm}


# --- stage 1: the mouth compositor (the default stage 1), one fixed random batch
config = t1.tiny_config()
full = t1.trainer.sanity_batch(config, batch=8)
local = local_slice(full)
state, sh = t1.trainer.create_state(config, mesh, jax.random.key(0, impl="unsafe_rbg"))
step = t1.trainer.make_train_step(config, mesh, sh)
batch = sharding.to_global(local, mesh)
step = compiled("face_latent", step, state, batch)
for _ in range(2):
  state, m = step(state, batch)
result["face_latent"] = summary(state, m, "loss/mouth_total")

# --- stage 2: MotionDiT (stored geometry motion; eps as in test_train_motion_dit's sharded test)
config = t2.tiny_config(**{"optim.eps": 1e-3})
src = ListSource(make_fake_motion_records(n_clips=8, frames=25, motion_dim=config.model.motion_dim, identities=4))
full = next(iter(pipeline.stage2_loader(src, batch_size=8, window=config.data.window, context=config.data.context, seed=0, shard_index=0, shard_count=1, with_motion=True)))
mfn = motion_lib.stored_motion
stats = motion_lib.normalization_stats([(mfn(full)[0], full["mask"])], 1)   # the same in every process
local = local_slice(full)
state, sh = t2.trainer.create_state(config, mesh, jax.random.key(0, impl="unsafe_rbg"))
step = t2.trainer.make_train_step(config, mesh, sh, stats)
batch = t2.trainer.step_batch(sharding.to_global(local, mesh), mfn, mesh)
step = compiled("motion_dit", step, state, batch)
for _ in range(2):
  state, m = step(state, batch)
result["motion_dit"] = summary(state, m, "loss/loss")

if pid == 0:
  json.dump(result, open(out, "w"))

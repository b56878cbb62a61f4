"""One process of a multi-process CPU job (run by tests/test_multiprocess.py):

  python multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON

Each process owns 8 / NUM_PROCESSES simulated CPU devices and feeds its slice of one fixed
global batch; two stage-1 train steps run; process 0 writes the loss and the parameter norm.
"""
import os, sys, json
pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // nproc}"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE); sys.path.insert(0, os.path.dirname(HERE))
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if nproc > 1:
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
import numpy as np
from conftest import ListSource, make_fake_records
import test_train_face_latent as t
from vasa_jax import sharding
from vasa_jax.data import pipeline
src = ListSource(make_fake_records(n_clips=8, frames=10, size=32, identities=4))
full = next(iter(pipeline.stage1_loader(src, batch_size=8, seed=0, augment=None, shard_index=0, shard_count=1)))
per = 8 // nproc
local = jax.tree_util.tree_map(lambda x: x[pid * per:(pid + 1) * per], full)
config = t.tiny_config()
mesh = sharding.make_mesh()
state, sh = t.trainer.create_state(config, mesh, jax.random.key(0, impl="unsafe_rbg"))
step = t.trainer.make_train_step(config, mesh, sh)
for _ in range(2):
  state, m = step(state, sharding.to_global(local, mesh))
from jax.experimental import multihost_utils
params = multihost_utils.process_allgather(state["params"], tiled=True)
norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree_util.tree_leaves(params))))
if pid == 0:
  json.dump({"loss": float(m["loss/total"]), "param_norm": norm, "devices": jax.device_count(), "processes": jax.process_count()}, open(out, "w"))

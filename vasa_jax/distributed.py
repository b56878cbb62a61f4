"""Multi-process start-up: one `jax.distributed.initialize()` per process, or nothing.

`initialize()` is what `vasa-jax train` calls first. It decides from the environment:

  VASA_COORDINATOR_ADDRESS / VASA_NUM_PROCESSES / VASA_PROCESS_ID
      explicit (any cluster): host[:port], process count, this process's index.
  VASA_DISTRIBUTED=auto (or tpu)
      `jax.distributed.initialize()` with no arguments: jax finds the peers itself (TPU pod
      slices, where launch/tpu_pod.sh sets this; also GKE / SLURM auto-detection).
  SLURM_PROCID / SLURM_NTASKS (> 1) / SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST)
      the coordinator is the first host of the node list at VASA_COORDINATOR_PORT (default
      62345): launch/slurm_gpu.sbatch, one task per node.
  anything else (or VASA_DISTRIBUTED=0)
      single process: nothing is called, so CPU runs and tests are unaffected.

`plan(env)` is the pure part (no jax), `initialize()` acts on it once per process and returns
the plan with `"initialized": True/False`.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Mapping
from vasa_jax.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_PORT = 62345
_DONE: dict | None = None


# ----------------------------------------------------------------------------- node lists

def _split_top_level(text: str) -> list[str]:
  """'a[1-2,4],b' -> ['a[1-2,4]', 'b'] (commas inside brackets do not split)."""
  parts, depth, cur = [], 0, []
  for ch in text:
    if ch == "[":
      depth += 1
    elif ch == "]":
      depth -= 1
    if ch == "," and depth == 0:
      parts.append("".join(cur))
      cur = []
    else:
      cur.append(ch)
  if cur:
    parts.append("".join(cur))
  return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str) -> list[str]:
  """'003-005,007' -> ['003', '004', '005', '007'] (zero padding kept)."""
  out = []
  for item in spec.split(","):
    item = item.strip()
    if "-" in item:
      lo, hi = item.split("-", 1)
      width = len(lo)
      out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    elif item:
      out.append(item)
  return out


def expand_nodelist(nodelist: str) -> list[str]:
  """SLURM hostlist syntax -> host names: 'node[003-005],gpu01' -> node003, node004, ..."""
  hosts = []
  for part in _split_top_level(nodelist):
    m = re.search(r"\[([^\]]*)\]", part)
    if not m:
      hosts.append(part)
      continue
    head, tail = part[:m.start()], part[m.end():]
    for mid in _expand_range(m.group(1)):
      hosts.extend(expand_nodelist(head + mid + tail))   # further bracket groups
  return hosts


def first_host(nodelist: str) -> str:
  hosts = expand_nodelist(nodelist)
  if not hosts:
    raise InputError(f"empty SLURM node list {nodelist!r}")
  return hosts[0]


# ----------------------------------------------------------------------------- plan

def _with_port(address: str, port: int) -> str:
  return address if re.search(r":\d+$", address) else f"{address}:{port}"


def plan(env: Mapping[str, str] | None = None) -> dict:
  """What `initialize` would do for this environment (pure: reads `env`, never calls jax).

  Returns {"mode": "single"|"explicit"|"auto"|"slurm", "coordinator_address", "num_processes",
  "process_id"} (None where jax decides).
  """
  env = os.environ if env is None else env
  port = int(env.get("VASA_COORDINATOR_PORT") or DEFAULT_PORT)
  single = {"mode": "single", "coordinator_address": None, "num_processes": 1, "process_id": 0}
  switch = (env.get("VASA_DISTRIBUTED") or "").strip().lower()
  if switch in ("0", "off", "false", "no"):
    return single

  if env.get("VASA_COORDINATOR_ADDRESS"):
    missing = [k for k in ("VASA_NUM_PROCESSES", "VASA_PROCESS_ID") if not env.get(k)]
    if missing:
      raise InputError(f"VASA_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not")
    n, pid = int(env["VASA_NUM_PROCESSES"]), int(env["VASA_PROCESS_ID"])
    if not 0 <= pid < n:
      raise InputError(f"VASA_PROCESS_ID={pid} is outside 0..{n - 1}")
    if n == 1:
      return single
    return {"mode": "explicit", "coordinator_address": _with_port(env["VASA_COORDINATOR_ADDRESS"], port),
            "num_processes": n, "process_id": pid}

  if switch in ("1", "auto", "tpu", "on", "true", "yes"):
    return {"mode": "auto", "coordinator_address": None, "num_processes": None, "process_id": None}

  ntasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
  if env.get("SLURM_PROCID") is not None and ntasks and int(ntasks) > 1:
    nodelist = (env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
                or env.get("SLURM_NODELIST"))
    if not nodelist:
      raise InputError("SLURM_NTASKS > 1 but no SLURM_STEP_NODELIST / SLURM_JOB_NODELIST")
    return {"mode": "slurm", "coordinator_address": f"{first_host(nodelist)}:{port}",
            "num_processes": int(ntasks), "process_id": int(env["SLURM_PROCID"])}
  return single


# ----------------------------------------------------------------------------- act

def is_initialized() -> bool:
  try:
    from jax._src import distributed
  except ImportError:  # pragma: no cover
    return False
  return distributed.global_state.client is not None


def initialize(env: Mapping[str, str] | None = None) -> dict:
  """Calls `jax.distributed.initialize` once if the environment asks for several processes.

  Returns the plan plus "initialized" (whether this call, or an earlier one, started it).
  """
  global _DONE
  if _DONE is not None:
    return dict(_DONE)
  p = plan(env)
  if p["mode"] == "single":
    _DONE = {**p, "initialized": False}
    return dict(_DONE)
  import jax
  if is_initialized():
    _DONE = {**p, "mode": "already", "initialized": True}
    return dict(_DONE)
  kwargs = {k: p[k] for k in ("coordinator_address", "num_processes", "process_id")
            if p[k] is not None}
  log.info("jax.distributed.initialize(%s) [%s]",
           ", ".join(f"{k}={v!r}" for k, v in kwargs.items()), p["mode"])
  jax.distributed.initialize(**kwargs)
  _DONE = {**p, "initialized": True, "process_index": jax.process_index(),
           "process_count": jax.process_count()}
  log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return dict(_DONE)

"""2 CPU processes x 4 devices on loopback form one JAX job and train exactly like 1 x 8
(a few steps of each stage: face latent model and MotionDiT)."""

import json
import os
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)   # each worker sets its own device count
  return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """(1 x 8 result, 2 x 4 result): the workers run once, both stages each."""
  tmp = tmp_path_factory.mktemp("multiprocess")
  one = tmp / "one.json"
  subprocess.run([sys.executable, WORKER, "0", "1", "0", str(one)], check=True, timeout=400,
                 env=_env(), capture_output=True)
  two = tmp / "two.json"
  for attempt in range(2):     # a second try on a fresh port: the loopback rendezvous can lose
    port = str(_free_port())   # its port to a concurrent test (-n 2) on a loaded CI box
    procs = [subprocess.Popen([sys.executable, WORKER, str(i), "2", port, str(two)],
                              env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(2)]
    errs = [p.communicate(timeout=400)[1] for p in procs]
    if all(p.returncode == 0 for p in procs):
      break
  assert all(p.returncode == 0 for p in procs), "\n---\n".join(
      f"process {i}: {e.decode()[:1500]} ... {e.decode()[-1500:]}" for i, e in enumerate(errs))
  a, b = json.loads(one.read_text()), json.loads(two.read_text())
  assert a["processes"] == 1 and b["processes"] == 2 and a["devices"] == b["devices"] == 8
  return a, b


@pytest.mark.parametrize("stage", ["face_latent", "motion_dit"])
def test_two_processes_match_one_process(results, stage):
  a, b = (r[stage] for r in results)
  assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a, b)
  assert abs(a["param_norm"] - b["param_norm"]) <= 1e-6 * a["param_norm"], (a, b)

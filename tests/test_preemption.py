"""Preemption: SIGTERM/SIGINT -> checkpoint of the current step, clean exit, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ListSource
from test_geometry_animate import _basis, _geo_records
from test_train_geo_decoder import tiny_config
from vasa_jax.train import common
from vasa_jax.train import geo_decoder as trainer


def _source():
  return ListSource(_geo_records())


# ----------------------------------------------------------------------------- the guard itself

def test_guard_catches_sigterm_and_sigint_and_restores_handlers():
  def mine(signum, frame):
    pass

  old_term = signal.signal(signal.SIGTERM, mine)
  try:
    for sig in (signal.SIGTERM, signal.SIGINT):
      before_int = signal.getsignal(signal.SIGINT)
      with common.PreemptionGuard() as guard:
        assert not guard.should_stop(1)
        os.kill(os.getpid(), sig)
        deadline = time.time() + 5
        while guard.received is None and time.time() < deadline:
          time.sleep(0.01)
        assert guard.received == sig and guard.should_stop(2)
      assert signal.getsignal(signal.SIGTERM) is mine
      assert signal.getsignal(signal.SIGINT) is before_int
  finally:
    signal.signal(signal.SIGTERM, old_term)


# ----------------------------------------------------------------------------- end to end

_SCRIPT = r"""
import json, os, sys
sys.path.insert(0, {tests!r})
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import conftest  # noqa: F401  (same env setup as the tests)
from conftest import ListSource
from test_geometry_animate import _basis, _geo_records
import test_train_geo_decoder as t
check = t.common.check_finite

def marked(metrics, step):          # a marker per finished step, for the parent to watch
  check(metrics, step)
  with open({marker!r} + ".tmp", "w") as f:
    f.write(str(step))
  os.replace({marker!r} + ".tmp", {marker!r})

t.common.check_finite = marked
src = ListSource(_geo_records())
out = t.trainer.train_and_evaluate(t.tiny_config(",steps=10000,ckpt_every=1000"), {workdir!r},
                                   source=src, basis=_basis())
print("RESULT " + json.dumps(out))
"""


def test_sigterm_saves_current_step_exits_cleanly_and_resumes_exactly(tmp_path):
  wd = str(tmp_path / "preempted")
  marker = str(tmp_path / "step")
  script = tmp_path / "run.py"
  tests = os.path.dirname(os.path.abspath(__file__))
  script.write_text(_SCRIPT.format(tests=tests, workdir=wd, marker=marker))
  proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  try:
    while time.time() < deadline and proc.poll() is None:
      if os.path.exists(marker) and int(open(marker).read() or 0) >= 2:
        break
      time.sleep(0.1)
    assert proc.poll() is None, "trainer exited before it was signalled"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, err[-3000:]
  assert "preempted: checkpoint at step" in err
  result = json.loads(out.split("RESULT ", 1)[1])
  stopped = int(result["preempted_step"])
  assert result["preempted"] == 1.0 and 2 <= stopped < 1000
  assert np.isfinite(result["loss/mouth_total"])
  ck = common.Checkpointer(wd)
  assert sorted(ck.manager.all_steps()) == [stopped]    # only the preemption save exists
  ck.close()

  # Resume to S and compare with an uninterrupted run to S.
  target = stopped + 2
  spec = f",steps={target},ckpt_every=1000"
  src, basis = _source(), _basis()
  resumed = trainer.train_and_evaluate(tiny_config(spec), wd, source=src, basis=basis)
  full = trainer.train_and_evaluate(tiny_config(spec), str(tmp_path / "full"), source=src,
                                    basis=basis)
  assert "preempted" not in resumed and "preempted" not in full
  for k in ("loss/mouth_total", "disc/hinge"):
    np.testing.assert_allclose(resumed[k], full[k], rtol=1e-4, err_msg=k)


def test_cli_reports_preemption_and_exits_zero(monkeypatch, tmp_path, capsys):
  import types

  from vasa_jax import cli
  fake = types.ModuleType("fake_trainer")
  fake.train_and_evaluate = lambda config, workdir, data_dir=None: {
      "loss/total": 1.0, "preempted": 1.0, "preempted_step": 7.0}
  monkeypatch.setitem(sys.modules, "fake_trainer", fake)
  monkeypatch.setitem(cli.TRAINERS, ("face_latent", "geometry"), "fake_trainer")
  cfg = os.path.join(os.path.dirname(__file__), "..", "configs", "face_latent.py")
  rc = cli.main(["train", "--config", cfg + ":geo_tiny", "--workdir", str(tmp_path)])
  assert rc == 0
  assert "preempted: checkpoint saved at step 7" in capsys.readouterr().err

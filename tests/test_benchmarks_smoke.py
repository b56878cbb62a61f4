"""benchmarks/motion_dit.py --quick (tiny config, CPU) prints one JSON object."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick(script: str, timeout: int) -> dict:
  """Runs benchmarks/SCRIPT --quick on CPU and returns its JSON."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick"],
                        env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout)


def test_motion_dit_train_step_benchmark_quick():
  out = _quick("motion_dit.py", 300)
  assert out["quick"] is True and out["peak_flops_per_s"] is None
  t = out["variants"]["tiny"]["train_step"]
  assert t["batch_size"] == 2 and t["median_ms"] > 0 and t["loss_finite"] and t["params"] > 0
  assert t["frames_per_s"] > 0 and "mfu" in t and "memory_analysis" in t
  if t["flops_per_call"] is not None:
    assert t["flops_per_window"] > 0


def test_live_benchmark_quick():
  """4 s of speech pushed at real-time pace into a live session of the bundled weights."""
  out = _quick("live.py", 600)
  live = out["live"]
  assert out["quick"] is True and live["frames_shown"] == live["frames_expected"] == 100
  assert live["latency_ms"]["p50"] > 0 and live["fps_delivered"] > 0
  assert live["dropped"] >= 0 and live["block"] == 4 and live["lookahead_frames"] == 1

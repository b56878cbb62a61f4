"""benchmarks/face_latent.py and motion_dit.py --quick (tiny configs, CPU) print one JSON object."""

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


def test_face_latent_benchmark_quick():
  out = _quick("face_latent.py", 60)
  for k in ("backend", "platform", "device_kind", "dtype", "frames_per_call", "repeats",
            "peak_flops_per_s", "variants"):
    assert k in out, k
  assert out["quick"] is True and out["peak_flops_per_s"] is None   # CPU: no peak
  v = out["variants"]["tiny"]
  assert v["image_size"] == 32 and v["generator_params"] > 0 and v["render_finite"]
  for section in ("encode", "prepare", "render"):
    r = v[section]
    for k in ("compile_s", "median_ms", "flops_per_call", "achieved_flops_per_s",
              "fraction_of_peak", "memory_analysis", "device_peak_bytes_so_far"):
      assert k in r, (section, k)
    assert r["median_ms"] > 0
  r = v["render"]
  assert r["frames_per_call"] == out["frames_per_call"]
  assert r["frames_per_s"] > 0 and r["ms_per_frame"] > 0
  if r["flops_per_frame"] is not None:
    assert r["flops_per_frame"] > 0
  assert v["prepare"]["ms_per_portrait"] > 0
  assert "train_step" not in v   # only with --train-step


def test_motion_dit_train_step_benchmark_quick():
  out = _quick("motion_dit.py", 300)
  assert out["quick"] is True and out["peak_flops_per_s"] is None
  t = out["variants"]["tiny"]["train_step"]
  assert t["batch_size"] == 2 and t["median_ms"] > 0 and t["loss_finite"] and t["params"] > 0
  assert t["frames_per_s"] > 0 and "mfu" in t and "memory_analysis" in t
  if t["flops_per_call"] is not None:
    assert t["flops_per_window"] > 0

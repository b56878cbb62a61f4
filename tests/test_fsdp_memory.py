"""fsdp shards the volume renderer's train state: per-device bytes drop close to 1/fsdp
(abstract shapes only)."""

import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_volume_paper_state_per_device_memory_shrinks_with_fsdp():
  r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "fsdp_memory.py"),
                      "--variant", "volume_paper"], capture_output=True, text=True, timeout=300,
                     env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert r.returncode == 0, r.stderr
  rep = json.loads(r.stdout)
  one, eight = rep["per_device_bytes"]["fsdp1"], rep["per_device_bytes"]["fsdp8"]
  assert rep["generator_params"] > 80e6
  # Params + EMA + Adam (2 moments) in float32: ~16 bytes per generator parameter unsharded.
  assert one["params"] == rep["generator_params"] * 4
  assert eight["total"] < one["total"] / 6          # nearly everything is split 8 ways

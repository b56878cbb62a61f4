"""Helpers shared by the benchmark scripts: device peak FLOP/s, XLA cost and memory analysis,
compile and timing loops, and the JSON summary of one compiled function (model-FLOPs
utilisation where the device's peak is known)."""

from __future__ import annotations

import statistics
import time

import jax

# Dense peak FLOP/s per device: (substring of device_kind, lower case) -> {dtype: peak}.
# First match wins, so the more specific names come first.
PEAKS = (
    ("h100 pcie", {"bfloat16": 756e12, "float32": 51e12, "tf32": 378e12}),
    ("h100", {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12}),    # SXM
    ("h200", {"bfloat16": 989e12, "float32": 67e12, "tf32": 495e12}),
    ("a100", {"bfloat16": 312e12, "float32": 19.5e12, "tf32": 156e12}),
    ("tpu v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("tpu v5 lite", {"bfloat16": 197e12, "float32": 197e12}),             # v5e
    ("tpu v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("tpu v5p", {"bfloat16": 459e12, "float32": 459e12}),
    ("tpu v5", {"bfloat16": 459e12, "float32": 459e12}),                  # v5p reports "TPU v5"
)


def peak_flops(device, dtype: str) -> dict:
  """{"peak": FLOP/s or None, "tf32": FLOP/s or None} for one device and compute dtype."""
  if device.platform == "cpu":
    return {"peak": None, "tf32": None}
  kind = device.device_kind.lower()
  for key, table in PEAKS:
    if key in kind:
      return {"peak": table.get(dtype), "tf32": table.get("tf32") if dtype == "float32" else None}
  return {"peak": None, "tf32": None}


# ----------------------------------------------------------------------------- XLA analysis

def cost_flops(compiled) -> float | None:
  """'flops' from compiled.cost_analysis(): a dict, or a list of dicts in some jax versions."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (not implemented on some backends)
    return None
  if isinstance(ca, (list, tuple)):
    ca = next((c for c in ca if c), None)
  if not ca or "flops" not in ca:
    return None
  flops = float(ca["flops"])
  return flops if flops > 0 else None


def memory_analysis(compiled) -> dict | None:
  try:
    ma = compiled.memory_analysis()
  except Exception:  # noqa: BLE001
    return None
  if ma is None:
    return None
  out = {}
  for name in ("argument", "output", "temp", "alias", "generated_code"):
    v = getattr(ma, f"{name}_size_in_bytes", None)
    if v is not None:
      out[f"{name}_bytes"] = int(v)
  if "temp_bytes" in out and "argument_bytes" in out:
    out["temp_plus_argument_bytes"] = out["temp_bytes"] + out["argument_bytes"]
  return out or None


def device_peak_bytes(device) -> int | None:
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001
    return None
  if not stats:
    return None
  v = stats.get("peak_bytes_in_use", stats.get("bytes_in_use"))
  return int(v) if v is not None else None


def compile_fn(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def time_calls(fn, args, repeats: int) -> list[float]:
  jax.block_until_ready(fn(*args))                  # warm-up (allocations, first transfers)
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return ts


def time_train_step(compiled, state, batch, repeats: int):
  """(state, metrics, seconds per call) of a compiled (state, batch) -> (state, metrics) step
  that donates its state: one warm-up call, then `repeats` timed calls."""
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  return state, metrics, times


def summarise(name, compiled, compile_s, times, *, items: int, item_name: str, peak: dict,
              device) -> dict:
  """Timing + FLOPs + memory for one compiled function; `items` units of work per call."""
  med = statistics.median(times)
  flops = cost_flops(compiled)
  res = {
      "compile_s": round(compile_s, 3),
      "times_ms": [round(t * 1e3, 3) for t in times],
      "median_ms": round(med * 1e3, 3),
      f"{item_name}s_per_call": items,
      f"ms_per_{item_name}": round(med * 1e3 / items, 3),
      f"{item_name}s_per_s": round(items / med, 3),
      "flops_per_call": flops,
      f"flops_per_{item_name}": None if flops is None else flops / items,
      "achieved_flops_per_s": None if flops is None else flops / med,
      "fraction_of_peak": None,
      "memory_analysis": memory_analysis(compiled),
      "device_peak_bytes_so_far": device_peak_bytes(device),
  }
  if flops is not None and peak["peak"]:
    res["fraction_of_peak"] = round(flops / med / peak["peak"], 5)
  if flops is not None and peak["tf32"]:
    res["fraction_of_tf32_peak"] = round(flops / med / peak["tf32"], 5)
  return res

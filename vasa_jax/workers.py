"""Worker processes for CPU-bound data work (rendering, video decoding)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def default_workers() -> int:
  """Usable CPU cores of this process."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)


def pool(workers: int) -> ProcessPoolExecutor:
  """A process pool started with `spawn`: safe next to an initialised JAX/XLA runtime."""
  return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

"""One progress line for long commands: on a terminal only (stderr), silent in logs, pipes and
JSON use, where the command's result is all that is printed."""

from __future__ import annotations

import sys
import time


class Bar:
  """`label: 12/40 [  3.1s elapsed, ETA   7.2s]`, redrawn in place at most every
  `min_interval` seconds (and always at the end).

  bar(done=None, total=None): `done` is the absolute count, None counts one more; `total` may
  change as it becomes known (None: unknown, then no ETA)."""

  def __init__(self, total: int | None, label: str, *, stream=None, enabled: bool | None = None,
               unit: str = "", min_interval: float = 0.5):
    self.stream = stream if stream is not None else sys.stderr
    self.enabled = self.stream.isatty() if enabled is None else bool(enabled)
    self.total, self.label, self.unit = total, label, unit
    self.done, self.min_interval = 0, float(min_interval)
    self._t0, self._last, self._ended = time.perf_counter(), -1e9, False

  def __call__(self, done=None, total=None, *_) -> None:
    if total is not None:
      self.total = int(total)
    self.done = self.done + 1 if done is None or not isinstance(done, (int, float)) else int(done)
    if not self.enabled or self._ended:
      return
    now = time.perf_counter()
    final = self.total is not None and self.done >= self.total
    if now - self._last < self.min_interval and not final:
      return
    self._last = now
    el = now - self._t0
    if self.total:
      eta = el / max(self.done, 1) * max(self.total - self.done, 0)
      text = f"{self.label}: {self.unit}{self.done}/{self.total} [{el:6.1f}s elapsed, ETA {eta:6.1f}s]"
    else:
      text = f"{self.label}: {self.unit}{self.done} [{el:6.1f}s]"
    print(f"\r{text}", end="\n" if final else "", file=self.stream, flush=True)
    self._ended = final

  def close(self) -> None:
    """Ends the line if the count stopped short of the total."""
    if self.enabled and not self._ended and self._last > -1e9:
      print(file=self.stream, flush=True)
    self._ended = True

"""Long commands show one progress line on a terminal and nothing in logs or pipes."""

import io
import json
import os
import subprocess
import sys

from vasa_jax.progress import Bar


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_bar_draws_on_a_terminal_only():
  tty = _Terminal()
  bar = Bar(3, "clips", stream=tty, min_interval=0.0)
  for _ in range(3):
    bar()
  text = tty.getvalue()
  assert text.count("\r") == 3 and "clips: 3/3" in text and text.endswith("\n"), text
  assert "ETA" in text
  pipe = io.StringIO()           # not a terminal: nothing at all
  quiet = Bar(3, "clips", stream=pipe, min_interval=0.0)
  for i in range(3):
    quiet(i + 1)
  assert pipe.getvalue() == "" and quiet.done == 3
  # Unknown total: a count, no ETA; close() ends the line.
  tty = _Terminal()
  bar = Bar(None, "out.mp4", stream=tty, unit="frame ", min_interval=0.0)
  bar(8, None)
  bar(16, None)
  bar.close()
  assert "out.mp4: frame 16" in tty.getvalue() and "ETA" not in tty.getvalue()
  assert tty.getvalue().endswith("\n")


def _synth(tmp_path, stderr):
  return subprocess.run([sys.executable, "-m", "vasa_jax", "synth", "--out", str(tmp_path / "s"),
                         "--clips", "2", "--seconds", "0.5", "--size", "48", "--workers", "1"],
                        stdout=subprocess.PIPE, stderr=stderr, timeout=600)


def test_synth_progress_on_a_pty_and_silent_in_a_pipe(tmp_path):
  piped = _synth(tmp_path / "a", subprocess.PIPE)
  assert piped.returncode == 0 and json.loads(piped.stdout)["clips"] == 2
  assert b"rendering clips" not in piped.stderr and b"\r" not in piped.stderr, piped.stderr
  master, slave = os.openpty()
  try:
    r = _synth(tmp_path / "b", slave)
    os.close(slave)
    slave = None
    out = b""
    while True:
      try:
        chunk = os.read(master, 4096)
      except OSError:
        break
      if not chunk:
        break
      out += chunk
  finally:
    if slave is not None:
      os.close(slave)
    os.close(master)
  assert r.returncode == 0 and json.loads(r.stdout)["clips"] == 2
  assert b"rendering clips: 2/2" in out, out

"""A real browser drives the live tab: headless Chromium with a fake microphone fed from a
speech file takes the seat, talks, and receives the portrait's frames over WebRTC; a second
visitor sees the seat taken (tools/live_browser.py). Skipped without Debian's chromium and
the playwright package."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

pytest.importorskip("playwright", reason="playwright is not installed")
pytest.importorskip("aiortc", reason="the serve extra (aiortc) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt install chromium)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_headless_chromium_talks_to_the_portrait(geo_tiny_live_bundle, tmp_path):
  import live_browser
  import soundfile as sf

  from vasa_jax import media
  wav = str(tmp_path / "mic.wav")
  sf.write(wav, media.load_audio(os.path.join(REPO, "vasa_jax", "assets", "examples",
                                              "speech.flac")), 16000, subtype="PCM_16")
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")
  log = open(tmp_path / "serve.txt", "w")
  proc = subprocess.Popen([sys.executable, "-m", "vasa_jax", "serve", "--port", str(port),
                           "--no-warmup", "--checkpoint", geo_tiny_live_bundle],
                          stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO)
  try:
    line = proc.stdout.readline()
    assert re.search(rf"http://127.0.0.1:{port}/", line), (tmp_path / "serve.txt").read_text()
    out = live_browser.drive(f"http://127.0.0.1:{port}/", wav, chromium=CHROMIUM,
                             min_frames=50, timeout_s=300)
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    log.close()
  assert out["frames_shown"] >= 50
  assert out["video"]["frames_decoded"] >= 50 and out["video"]["width"] > 0
  assert "taken" in out["second_visitor_sees"]

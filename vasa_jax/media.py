"""Media at the edges: images and audio in any common format, H.264/AAC mp4 out.

Everything decodes through the ffmpeg binary that `imageio-ffmpeg` ships inside its wheel, so
no system ffmpeg is needed. Writers are atomic: they write a temporary file next to the target
and rename it, so a failure never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from typing import Iterable, Iterator

import numpy as np

from vasa_jax.constants import FPS, SAMPLE_RATE  # noqa: E402
from vasa_jax.errors import InputError  # noqa: E402


class MediaError(InputError):
  """A media file could not be read or written (message is one human-readable line)."""


def ffmpeg_exe() -> str:
  import imageio_ffmpeg
  return imageio_ffmpeg.get_ffmpeg_exe()


def _last_error_line(stderr: bytes) -> str:
  lines = [l.strip() for l in stderr.decode("utf-8", "replace").splitlines() if l.strip()]
  return lines[-1] if lines else "unknown ffmpeg error"


# ----------------------------------------------------------------------------- audio

def load_audio(path: str, sr: int = SAMPLE_RATE, *, max_seconds: float | None = None) -> np.ndarray:
  """Decodes any audio (or the audio stream of a video) to float32 mono at `sr`."""
  if not os.path.isfile(path):
    raise MediaError(f"audio file not found: {path}")
  cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", path, "-vn", "-map", "0:a:0?"]
  if max_seconds is not None:
    cmd += ["-t", str(max_seconds)]
  cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sr), "-"]
  proc = subprocess.run(cmd, capture_output=True)
  if proc.returncode != 0 and _streams(path) and b"Audio:" not in _streams(path):
    raise MediaError(f"{path} has no audio track")
  if proc.returncode != 0:
    raise MediaError(f"cannot decode audio from {path}: {_last_error_line(proc.stderr)}")
  audio = np.frombuffer(proc.stdout, dtype=np.float32).copy()
  if audio.size == 0:
    raise MediaError(f"no audio samples in {path} (missing or empty audio stream)")
  if not np.all(np.isfinite(audio)):
    raise MediaError(f"audio in {path} contains non-finite samples")
  return audio


def _streams(path: str) -> bytes:
  """ffmpeg's listing of the file's streams (b"" when it cannot read the file)."""
  proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", path],
                        capture_output=True)
  return b"\n".join(l for l in proc.stderr.splitlines() if b"Stream #" in l)


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
  """Resamples float audio (mono [N] or [N, C] -> mono) with a polyphase filter."""
  from math import gcd

  from scipy.signal import resample_poly
  audio = np.asarray(audio, dtype=np.float32)
  if audio.ndim == 2:
    audio = audio.mean(axis=1)
  if sr_in == sr_out:
    return audio
  g = gcd(int(sr_in), int(sr_out))
  return resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def as_audio(audio, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Accepts a path, an array at `sr`, or a (samples, rate) pair; returns float32 mono at `sr`."""
  if isinstance(audio, (str, os.PathLike)):
    return load_audio(os.fspath(audio), sr)
  if isinstance(audio, tuple) and len(audio) == 2:
    samples, rate = audio
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
      samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    return resample(samples, int(rate), sr)
  return resample(np.asarray(audio, dtype=np.float32), sr, sr)


# ----------------------------------------------------------------------------- images

MAX_MEGAPIXELS = 64.0     # larger images are refused (a 144-MP photo needs 2.3 GB to animate)


def load_image(image) -> np.ndarray:
  """Loads PNG/JPEG/WebP/... (RGB, RGBA, grey, palette; EXIF rotation honoured) as uint8 RGB.
  MediaError (one line) for what is not an image, or one larger than MAX_MEGAPIXELS."""
  import warnings

  from PIL import Image, ImageOps, UnidentifiedImageError
  if isinstance(image, np.ndarray):
    arr = image
    if arr.dtype != np.uint8:
      arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
      arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] == 4:
      img = Image.fromarray(arr, "RGBA")
    else:
      return np.ascontiguousarray(arr[..., :3])
  elif isinstance(image, Image.Image):
    img = image
  else:
    path = os.fspath(image)
    if os.path.isdir(path):
      raise MediaError(f"{path} is a folder, not an image file")
    if not os.path.isfile(path):
      raise MediaError(f"image file not found: {path}")
    try:
      with warnings.catch_warnings():   # PIL's bomb warning: the size is checked below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)          # reads the header only
        _check_size(img.size, path)
        img.load()
    except Image.DecompressionBombError:
      raise MediaError(f"{path}: the image is larger than the {MAX_MEGAPIXELS:.0f} megapixels "
                       "this accepts; downscale it") from None
    except (UnidentifiedImageError, OSError) as e:
      raise MediaError(f"cannot read image {path}: {e}") from None
  _check_size(img.size, "the image")
  img = ImageOps.exif_transpose(img)
  if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, rgba)
  return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _check_size(size, what: str) -> None:
  mp = size[0] * size[1] / 1e6
  if mp > MAX_MEGAPIXELS:
    raise MediaError(f"{what} is {size[0]}x{size[1]} ({mp:.0f} megapixels), more than the "
                     f"{MAX_MEGAPIXELS:.0f} this accepts; downscale it")


# ----------------------------------------------------------------------------- video

def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def sweep_partials(path: str) -> list[str]:
  """Removes the hidden partial files (`atomic_output`'s `.NAME.PID.*.partial.EXT`) of `path`
  whose writing process is gone (killed with SIGKILL, or a crash); returns what it removed."""
  import glob
  import re
  path = os.path.abspath(path)
  stem, ext = os.path.splitext(os.path.basename(path))
  gone = []
  for f in glob.glob(os.path.join(glob.escape(os.path.dirname(path)),
                                  f".{glob.escape(stem)}.*.partial{glob.escape(ext)}")):
    m = re.match(rf"\.{re.escape(stem)}\.(\d+)\.", os.path.basename(f))
    if m and not _alive(int(m.group(1))):
      try:
        os.remove(f)
        gone.append(f)
      except OSError:
        pass
  return gone


def check_writable(path: str) -> None:
  """MediaError (one line) unless a file can be written at `path` (its folder exists or can be
  made, and is writable): checked before the work, not found after it."""
  folder = os.path.dirname(os.path.abspath(path))
  probe = folder
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise MediaError(f"cannot write {path}: {probe} is not a folder")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise MediaError(f"cannot write {path}: {probe} is not writable")
  if os.path.isdir(path):
    raise MediaError(f"cannot write {path}: it is a folder")


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a temporary path in the target's folder (hidden, named after the target and this
  process); renames it onto `path` only on success. Partials that dead processes left for the
  same target are swept first."""
  path = os.path.abspath(path)
  folder = os.path.dirname(path)
  try:
    os.makedirs(folder, exist_ok=True)
    sweep_partials(path)
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{os.getpid()}.", suffix=f".partial{ext}",
                               dir=folder)
  except OSError as e:
    raise MediaError(f"cannot write {path}: {e.strerror or e}") from None
  os.close(fd)
  try:
    yield tmp
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600 files; outputs get normal permissions
    try:
      os.replace(tmp, path)
    except OSError as e:
      raise MediaError(f"cannot write {path}: {e.strerror or e}") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path: str, prefix: str = ".partial.") -> Iterator[str]:
  """Yields a temporary folder beside `path`; on success it replaces `path` (a folder of
  files written together, e.g. weights + metadata), else it is removed."""
  import shutil
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
  try:
    yield tmp
    os.chmod(tmp, 0o755)   # mkdtemp makes 0700 folders
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    if os.path.isdir(tmp):
      shutil.rmtree(tmp)


def write_video(
    path: str,
    frames: Iterable[np.ndarray],
    *,
    fps: int = FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
    metadata: dict[str, str] | None = None,
) -> str:
  """Writes uint8 RGB frames as H.264 (yuv420p) mp4 with optional AAC audio, atomically.

  `frames` may be any iterable (a generator streams with bounded memory). The video is cut to
  the audio's length when audio is given, so the two always end together.
  """
  frames = iter(frames)
  try:
    first = np.asarray(next(frames))
  except StopIteration:
    raise MediaError(f"no frames to write to {path}") from None
  if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
    raise MediaError(f"frames must be uint8 [H, W, 3], got {first.dtype} {first.shape}")
  h, w = first.shape[:2]
  with atomic_output(path) as tmp, tempfile.TemporaryDirectory() as tmpdir:
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    if audio is not None:
      import soundfile as sf
      wav = os.path.join(tmpdir, "audio.wav")
      sf.write(wav, np.asarray(audio, np.float32), sample_rate, subtype="PCM_16")
      cmd += ["-i", wav]
    pad = "pad=ceil(iw/2)*2:ceil(ih/2)*2"
    cmd += ["-vf", pad, "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
    if audio is not None:
      cmd += ["-c:a", "aac", "-b:a", "128k", "-shortest"]
    for k, v in (metadata or {}).items():
      cmd += ["-metadata", f"{k}={v}"]
    cmd += ["-f", "mp4", tmp]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
      proc.stdin.write(np.ascontiguousarray(first).tobytes())
      for frame in frames:
        frame = np.asarray(frame)
        if frame.shape != first.shape or frame.dtype != np.uint8:
          raise MediaError(f"frame shape/dtype changed mid-video: {frame.dtype} {frame.shape}")
        proc.stdin.write(np.ascontiguousarray(frame).tobytes())
      proc.stdin.close()
    except BrokenPipeError:
      pass
    except BaseException:
      proc.kill()
      proc.wait()
      raise
    stderr = proc.stderr.read()
    if proc.wait() != 0:
      raise MediaError(f"ffmpeg failed writing {path}: {_last_error_line(stderr)}")
  return path


def read_video(path: str, *, fps: int | None = FPS, size: int | None = None) -> np.ndarray:
  """Decodes a whole (short) video to uint8 [T, H, W, 3], resampled to `fps` when given."""
  import imageio_ffmpeg
  if not os.path.isfile(path):
    raise MediaError(f"video file not found: {path}")
  kwargs = {}
  if fps is not None:
    kwargs["output_params"] = ["-r", str(fps)]
  if size is not None:
    kwargs["size"] = (size, size)
  try:
    gen = imageio_ffmpeg.read_frames(path, **kwargs)
    meta = next(gen)
    w, h = meta["size"] if size is None else (size, size)
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
  except (RuntimeError, OSError, StopIteration) as e:
    raise MediaError(f"cannot decode video {path}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
  if not frames:
    raise MediaError(f"no frames in {path}")
  return np.stack(frames)


def iter_video(path: str, *, fps: int | None = FPS, max_side: int | None = None
               ) -> Iterator[np.ndarray]:
  """Streams a video's frames (uint8 [H, W, 3]) resampled to `fps`, downscaled (area filter)
  so that the longer side is at most `max_side`; bounded memory for any length.
  MediaError (one line) if the file cannot be decoded or has no frames."""
  import logging

  import imageio_ffmpeg
  if not os.path.isfile(path):
    raise MediaError(f"video file not found: {path}")
  logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)   # "frame size differs" chatter
  params = []
  if fps is not None:
    params += ["-r", str(fps)]
  if max_side:
    m = int(max_side)
    params += ["-vf", f"scale='if(gt(iw,ih),min(iw,{m}),-2)':'if(gt(iw,ih),-2,min(ih,{m}))'"
                      ":flags=area"]
  try:
    gen = imageio_ffmpeg.read_frames(path, output_params=params or None)
    meta = next(gen)
  except (RuntimeError, OSError, StopIteration) as e:
    raise MediaError(f"cannot decode video {path}: "
                     f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
  w, h = meta["size"]
  n = 0
  try:
    for b in gen:
      n += 1
      yield np.frombuffer(b, np.uint8).reshape(h, w, 3)
  except (RuntimeError, OSError) as e:
    raise MediaError(f"cannot decode video {path}: "
                     f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}") from None
  if n == 0:
    raise MediaError(f"no frames in {path}")

"""Media edges: any image/audio in, H.264 + AAC mp4 out, atomically."""

import os
import subprocess

import numpy as np
import pytest

from vasa_jax import media


def test_write_video_roundtrip_with_audio(tmp_path):
  t, s = 30, 64
  frames = np.zeros((t, s, s, 3), np.uint8)
  for i in range(t):
    frames[i, :, : (i + 1) * 2] = 200          # a bar that grows frame by frame
  audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(t * 640) / 16000)).astype(np.float32)
  out = tmp_path / "v.mp4"
  media.write_video(str(out), iter(frames), audio=audio, metadata={"comment": "synthetic"})
  back = media.read_video(str(out))
  assert back.shape == (t, s, s, 3)
  # The growing bar survives encoding: mean brightness increases over time.
  m = back.mean(axis=(1, 2, 3))
  assert np.all(np.diff(m[::5]) > 0)
  a = media.load_audio(str(out))
  assert abs(a.shape[0] - audio.shape[0]) < 0.08 * 16000     # AAC priming/padding only
  spec = np.abs(np.fft.rfft(a[2000:10000]))
  assert abs(np.argmax(spec) * 16000 / 8000 - 440) < 5
  info = subprocess.run([media.ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True).stderr
  assert "h264" in info and "aac" in info and "25 fps" in info and "synthetic" in info
  assert [p for p in os.listdir(tmp_path) if "partial" in p] == []
  assert os.stat(out).st_mode & 0o044 == 0o044          # readable by others, like any output


def test_write_video_failure_leaves_nothing(tmp_path):
  out = tmp_path / "bad.mp4"

  def frames():
    yield np.zeros((32, 32, 3), np.uint8)
    yield np.zeros((16, 16, 3), np.uint8)     # shape change mid-stream

  with pytest.raises(media.MediaError):
    media.write_video(str(out), frames())
  assert os.listdir(tmp_path) == []


def test_load_audio_formats_and_rates(tmp_path, real_dir):
  import soundfile as sf
  stereo = np.stack([np.sin(np.arange(44100) / 10.0), np.zeros(44100)], 1).astype(np.float32) * 0.5
  sf.write(tmp_path / "a.wav", stereo, 44100)
  a = media.load_audio(str(tmp_path / "a.wav"))
  assert a.dtype == np.float32 and abs(a.shape[0] - 16000) < 10
  for name in sorted(os.listdir(real_dir / "audio")):
    if name.endswith((".mp3", ".m4a")):
      x = media.load_audio(str(real_dir / "audio" / name), max_seconds=2)
      assert x.ndim == 1 and 0 < x.shape[0] <= 32000 and np.abs(x).max() > 0.01


def test_load_audio_errors(tmp_path):
  (tmp_path / "x.wav").write_bytes(b"not audio at all")
  with pytest.raises(media.MediaError, match="cannot decode"):
    media.load_audio(str(tmp_path / "x.wav"))
  with pytest.raises(media.MediaError, match="not found"):
    media.load_audio(str(tmp_path / "missing.flac"))


def test_load_image_modes(tmp_path):
  from PIL import Image
  rgba = np.zeros((20, 30, 4), np.uint8)
  rgba[..., 0] = 255
  rgba[:, :15, 3] = 255                                   # left opaque red, right transparent
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  img = media.load_image(str(tmp_path / "a.png"))
  assert img.shape == (20, 30, 3) and tuple(img[0, 0]) == (255, 0, 0) and tuple(img[0, -1]) == (255, 255, 255)
  Image.fromarray(np.full((8, 9), 77, np.uint8), "L").save(tmp_path / "g.jpg")
  assert media.load_image(str(tmp_path / "g.jpg")).shape == (8, 9, 3)
  # EXIF orientation 6 (rotate 90 CW) is honoured.
  im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
  exif = im.getexif()
  exif[0x0112] = 6
  im.save(tmp_path / "r.jpg", exif=exif)
  assert media.load_image(str(tmp_path / "r.jpg")).shape == (20, 10, 3)
  (tmp_path / "bad.png").write_bytes(b"garbage")
  with pytest.raises(media.MediaError):
    media.load_image(str(tmp_path / "bad.png"))

"""Tests for the real-video processing (vasa_jax/data/video.py, vasa_jax/faces.py)."""

import os
import subprocess

import numpy as np
import pytest

from conftest import REAL as _REAL

from vasa_jax import faces
from vasa_jax.data import video

REAL = str(_REAL)    # ../shared/real resolved from the repository (tests/conftest.py)
needs_real = pytest.mark.skipif(not os.path.isdir(os.path.join(REAL, "videos")),
                                reason="real media (../shared/real) not present")


def _ffmpeg(*args):
  r = subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *args],
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- find_videos


def _touch(path, data=b""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def test_find_videos_layouts(tmp_path):
  root = tmp_path / "data"
  files = [
      "vox/id00012/abcDEF12345/00001.mp4",
      "vox/id00012/abcDEF12345/00002.mp4",
      "vox/id00012/zzzz/00001.mp4",
      "vox/id00034/xyz/00001.mp4",
      "vox/id00034/xyz/00001.wav",            # sibling audio
      "hdtf/WDA_AlexandriaOcasioCortez_000.mp4",
      "hdtf/WDA_AlexandriaOcasioCortez_001.MP4",
      "hdtf/WDA_AlexandriaOcasioCortez_001.flac",
      "hdtf/WDA_AlexandriaOcasioCortez_001.mp3",  # flac preferred over mp3
      "hdtf/RD_Radio10_0.mkv",
      "hdtf/clip-02.mov",
      "celebv/-2KGPYEFnsU_11.webm",
      "celebv/x.m4v",
      "celebv/other.avi",
      "celebv/notes.txt",
      "celebv/.hidden.mp4",
      "celebv/lonely.wav",
  ]
  for f in files:
    _touch(str(root / f))
  vfs = video.find_videos(str(root))
  by_key = {v.key: v for v in vfs}
  assert sorted(by_key) == sorted(
      f for f in files if f.lower().endswith((".mp4", ".mkv", ".mov", ".webm", ".m4v", ".avi"))
      and "/." not in f)
  assert [v.key for v in vfs] == sorted(by_key)  # sorted, stable
  ident = {k: v.identity for k, v in by_key.items()}
  assert ident["vox/id00012/abcDEF12345/00001.mp4"] == "id00012"
  assert ident["vox/id00012/zzzz/00001.mp4"] == "id00012"
  assert ident["vox/id00034/xyz/00001.mp4"] == "id00034"
  assert ident["hdtf/WDA_AlexandriaOcasioCortez_000.mp4"] == "WDA_AlexandriaOcasioCortez"
  assert ident["hdtf/WDA_AlexandriaOcasioCortez_001.MP4"] == "WDA_AlexandriaOcasioCortez"
  assert ident["hdtf/RD_Radio10_0.mkv"] == "RD_Radio10"
  assert ident["hdtf/clip-02.mov"] == "clip"
  assert ident["celebv/-2KGPYEFnsU_11.webm"] == "-2KGPYEFnsU"
  assert ident["celebv/x.m4v"] == "x"
  audio = {k: (os.path.relpath(v.audio_path, root) if v.audio_path else None) for k, v in by_key.items()}
  assert audio["vox/id00034/xyz/00001.mp4"] == "vox/id00034/xyz/00001.wav"
  assert audio["hdtf/WDA_AlexandriaOcasioCortez_001.MP4"] == "hdtf/WDA_AlexandriaOcasioCortez_001.flac"
  assert audio["vox/id00012/abcDEF12345/00001.mp4"] is None
  assert audio["hdtf/WDA_AlexandriaOcasioCortez_000.mp4"] is None

  # Explicit maps win (keyed by key or stem).
  vfs = video.find_videos(str(root), identity_map={"x": "person_x", "hdtf/clip-02.mov": "person_c"},
                          audio_map={"other": str(root / "celebv/lonely.wav")})
  by_key = {v.key: v for v in vfs}
  assert by_key["celebv/x.m4v"].identity == "person_x"
  assert by_key["hdtf/clip-02.mov"].identity == "person_c"
  assert by_key["celebv/other.avi"].audio_path.endswith("lonely.wav")
  assert by_key["vox/id00012/zzzz/00001.mp4"].identity == "id00012"


def test_find_videos_bad_root(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    video.find_videos(str(tmp_path / "nope"))
  _touch(str(tmp_path / "file.mp4"))
  with pytest.raises(NotADirectoryError):
    video.find_videos(str(tmp_path / "file.mp4"))


def test_read_maps(tmp_path):
  tsv = tmp_path / "inv.tsv"
  (tmp_path / "audio").mkdir()
  _touch(str(tmp_path / "audio" / "b.flac"))
  tsv.write_text("file\tidentity\tnotes\n"
                 "videos/a_000.mp4\talice\treal\n"
                 "videos/b.mp4\tbob\tsilent; paired audio: audio/b.wav\n"
                 "videos/c.mp4\t\t\n")
  assert video.read_identity_map(str(tsv)) == {"videos/a_000.mp4": "alice", "a_000": "alice",
                                               "videos/b.mp4": "bob", "b": "bob"}
  assert video.read_audio_map(str(tsv)) == {"b": str(tmp_path / "audio" / "b.flac")}
  csv_path = tmp_path / "ids.csv"
  csv_path.write_text("path,speaker\nx/y/clip1.mp4,carol\n")
  assert video.read_identity_map(str(csv_path))["clip1"] == "carol"


@needs_real
def test_inventory_maps():
  inv = os.path.join(REAL, "INVENTORY.tsv")
  ids = video.read_identity_map(inv)
  assert ids["vretalking__face3"] == "aoc"
  am = video.read_audio_map(inv)
  assert len(am) >= 10 and all(os.path.isfile(p) for p in am.values())
  assert os.path.basename(am["styletalk__KristiNoem"]).startswith("styletalk__KristiNoem.")


# ----------------------------------------------------------------------------- real clips

REAL_PICKS = ("deepavsr__lrs2_00001.mp4", "pcavs__Pose_Source_00067.mp4", "lipnet__grid_bbaf2n.mpg",
              "styletalk__feifeili_clip3.mp4")


@needs_real
def test_real_clips():
  inv = os.path.join(REAL, "INVENTORY.tsv")
  vfs = video.find_videos(os.path.join(REAL, "videos"), identity_map=video.read_identity_map(inv),
                          audio_map=video.read_audio_map(inv))
  vfs = [v for v in vfs if v.key in REAL_PICKS]
  assert len(vfs) == len(REAL_PICKS)
  det = faces.get_detector()
  skips = []
  for vf in vfs:
    clips = video.process_video(vf, size=128, on_skip=lambda v, r: skips.append((v.key, r)))
    assert clips, (vf.key, skips)
    if vf.key.startswith("styletalk"):
      assert vf.audio_path is not None  # speech from the separate file
    for c in clips:
      t = c.frames.shape[0]
      assert c.fps == 25
      assert c.frames.dtype == np.uint8 and c.frames.shape == (t, 128, 128, 3)
      assert 2.0 * 25 <= t <= 10.0 * 25
      assert c.audio.dtype == np.float32 and c.audio.shape == (t * 640,)
      assert np.sqrt(np.mean(c.audio ** 2)) > 0.005
      assert c.source == vf.path and c.identity == vf.identity and c.start >= 0
      x0, y0, side = c.box
      assert side > 0
      # the crop holds one centred face, all through the clip (one box per clip, no jitter)
      for i in (0, t // 2, t - 1):
        found = det.detect(c.frames[i])
        assert found, (vf.key, i)
        f = found[0]
        assert 0.3 * 128 < f.side < 0.85 * 128, (vf.key, i, f.side)
        assert np.abs(f.center - 64).max() < 0.2 * 128, (vf.key, i, f.center)
  # 30 fps source resampled to 25 fps: duration in frames ~ 25 * seconds
  feifei = [v for v in vfs if v.key.startswith("styletalk")][0]
  n = sum(c.frames.shape[0] for c in video.process_video(feifei, size=64))
  assert abs(n - 7.07 * 25) <= 8


# ----------------------------------------------------------------------------- synthetic bad inputs


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
  if not os.path.isdir(os.path.join(REAL, "images")):
    pytest.skip("real images not available")
  d = tmp_path_factory.mktemp("synth")
  img = os.path.join(REAL, "images", "aaai22osf__AdamSchiff_0.jpg")
  p = lambda n: str(d / n)  # noqa: E731
  v25 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", "25"]
  # A 3 s talking "video" (still photo, slowly zoomed so frames differ) with a tone.
  _ffmpeg("-loop", "1", "-framerate", "30", "-i", img, "-f", "lavfi", "-i", "sine=frequency=220:duration=3",
          "-t", "3", "-vf", "scale=320:320,crop=300:300", *v25, "-c:a", "aac", "-shortest", p("good.mp4"))
  _ffmpeg("-loop", "1", "-framerate", "25", "-i", img, "-t", "3", "-vf", "scale=256:256", *v25, p("noaudio.mp4"))
  _ffmpeg("-loop", "1", "-framerate", "25", "-i", img, "-t", "3", "-vf", "scale=256:256", *v25, "-an",
          p("sidecar.mp4"))
  _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-ar", "44100", "-ac", "2", p("sidecar.wav"))
  _ffmpeg("-loop", "1", "-framerate", "25", "-i", img, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
          "-t", "3", "-vf", "scale=256:256", *v25, "-c:a", "aac", "-shortest", p("silent.mp4"))
  _ffmpeg("-loop", "1", "-framerate", "25", "-i", img, "-f", "lavfi", "-i", "sine=frequency=220:duration=1",
          "-t", "1", "-vf", "scale=256:256", *v25, "-c:a", "aac", "-shortest", p("short.mp4"))
  _ffmpeg("-loop", "1", "-framerate", "25", "-i", img, "-f", "lavfi", "-i", "sine=frequency=220:duration=3",
          "-t", "3", "-filter_complex", "[0:v]scale=256:256,split[a][b];[a][b]hstack", *v25, "-c:a", "aac",
          "-shortest", p("twofaces.mp4"))
  _ffmpeg("-f", "lavfi", "-i", ("gradients=s=320x240:d=3:r=25:seed=7:n=3:c0=0x2040a0:c1=0xe0c040:c2=0x40a060"
                                    ":x0=0:y0=0:x1=320:y1=240"), "-f", "lavfi", "-i",
          "sine=frequency=220:duration=3", *v25, "-c:a", "aac", "-shortest", p("gradient.mp4"))
  img2 = os.path.join(REAL, "images", "audio2head__trump2.jpg")
  _ffmpeg("-loop", "1", "-framerate", "25", "-t", "2.2", "-i", img, "-loop", "1", "-framerate", "25", "-t", "2",
          "-i", img2, "-f", "lavfi", "-i", "sine=frequency=220:duration=4.2", "-filter_complex",
          "[0:v]scale=256:256,setsar=1[a];[1:v]scale=256:256,setsar=1[b];[a][b]concat=n=2:v=1[v]",
          "-map", "[v]", "-map", "2:a", *v25, "-c:a", "aac", p("cut.mp4"))
  with open(p("good.mp4"), "rb") as f:
    data = f.read()
  _touch(p("truncated.mp4"), data[: len(data) * 2 // 3])  # moov atom (at the end) is lost
  _ffmpeg("-i", p("good.mp4"), "-c", "copy", "-movflags", "+faststart", p("fast.mp4"))
  with open(p("fast.mp4"), "rb") as f:
    data = f.read()
  _touch(p("truncated_fast.mp4"), data[: len(data) // 3])  # header intact, media data cut
  _touch(p("badcodec.mp4"), data.replace(b"avc1", b"zzzz"))  # fourcc no decoder knows
  _touch(p("text.mp4"), b"this is not a video\n" * 50)
  _touch(p("empty.mp4"))
  return d


def _run(path, audio=None, **kw):
  skips = []
  vf = video.VideoFile(path=str(path), identity="x", audio_path=audio, key=os.path.basename(str(path)))
  clips = video.process_video(vf, size=64, on_skip=lambda v, r: skips.append(r), **kw)
  return clips, skips


def test_synthetic_good_and_sidecar(synth):
  clips, skips = _run(synth / "good.mp4")
  assert not skips and len(clips) == 1
  c = clips[0]
  assert abs(c.frames.shape[0] - 75) <= 2  # 30 fps source -> 25 fps
  assert c.audio.shape == (c.frames.shape[0] * 640,)
  assert np.sqrt(np.mean(c.audio ** 2)) > 0.05 and abs(np.abs(np.fft.rfft(c.audio[:16000])).argmax() - 220) <= 2
  clips, skips = _run(synth / "sidecar.mp4", audio=str(synth / "sidecar.wav"))
  assert not skips and len(clips) == 1
  assert abs(np.abs(np.fft.rfft(clips[0].audio[:16000])).argmax() - 300) <= 2


@pytest.mark.parametrize("name,category", [
    ("noaudio.mp4", "missing audio"),
    ("silent.mp4", "silent audio"),
    ("short.mp4", "too short"),
    ("twofaces.mp4", "several faces"),
    ("gradient.mp4", "no face"),
    ("truncated.mp4", "truncated file"),
    ("truncated_fast.mp4", "truncated file"),
    ("badcodec.mp4", "unsupported codec"),
    ("text.mp4", "unreadable file"),
    ("empty.mp4", "unreadable file"),
    ("does_not_exist.mp4", "unreadable file"),
])
def test_synthetic_skips(synth, name, category):
  clips, skips = _run(synth / name)
  assert clips == []
  assert len(skips) == 1, skips
  assert skips[0].split(":")[0] == category, skips
  assert skips[0].split(":")[0] in video.SKIP_CATEGORIES
  print(name, "->", skips[0])


def test_face_too_small_and_missing_sidecar(synth):
  clips, skips = _run(synth / "good.mp4", min_face=1000)
  assert clips == [] and skips[0].startswith("face too small"), skips
  clips, skips = _run(synth / "sidecar.mp4", audio=str(synth / "nope.wav"))
  assert clips == [] and skips[0].startswith("missing audio"), skips
  clips, skips = _run(synth / "good.mp4", audio=str(synth / "text.mp4"))
  assert clips == [] and skips[0].startswith("unreadable file"), skips


def test_shot_cut_splits_clips(synth):
  clips, skips = _run(synth / "cut.mp4", clip_seconds=(1.0, 10.0))
  assert len(clips) == 2, skips
  assert clips[0].start == 0.0 and clips[0].frames.shape[0] == 55  # cut at 2.2 s, not rounded to a detection
  assert clips[1].start == 2.2
  diff = lambda a, b: np.abs(a.astype(np.float32) - b).mean()  # noqa: E731
  assert diff(clips[0].frames[-1], clips[1].frames[0]) > 20  # a different shot
  assert diff(clips[0].frames[0], clips[0].frames[-1]) < 5 and diff(clips[1].frames[0], clips[1].frames[-1]) < 5


def test_load_audio(synth):
  a = video.load_audio(str(synth / "sidecar.wav"))
  assert a.dtype == np.float32 and a.ndim == 1 and abs(a.size - 48000) <= 320
  with pytest.raises(video.SkipClip) as e:
    video.load_audio(str(synth / "noaudio.mp4"))
  assert e.value.category == "missing audio"
  with pytest.raises(video.SkipClip):
    video.load_audio(str(synth / "text.mp4"))


def test_error_classification():
  assert video._classify_error("[h264] Decoder (codec foo) not found for input stream").startswith(
      "unsupported codec")
  assert video._classify_error("moov atom not found").startswith("truncated file")
  assert video._classify_error("x.mp4: Invalid data found when processing input").startswith("unreadable file")


def test_crop_square_pads_and_resizes():
  frame = np.full((100, 120, 3), 7, np.uint8)
  out = video.crop_square(frame, (-20, -20, 60), 32)
  assert out.shape == (32, 32, 3) and (out == 7).all()  # edge padding keeps the border colour
  assert video.crop_box_at(np.array([60.0, 50.0]), 40, 1.8, 0.0, 120, 100) == (24, 14, 72)
  # crop bigger than the frame but the face keeps a margin: shrink to the largest fitting square
  assert video.crop_box_at(np.array([60.0, 50.0]), 70, 1.8, 0.0, 120, 100) == (10, 0, 100)

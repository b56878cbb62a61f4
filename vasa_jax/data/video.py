"""Real talking-head videos -> clean fixed-size face-crop clips (25 fps, 16 kHz mono audio).

Input: a folder of videos "as they come" (VoxCeleb2 ``id00012/<yt_id>/00001.mp4``, HDTF
``WDA_Name_000.mp4``, CelebV-HQ ``<yt_id>_<n>.mp4``, any mix of containers/codecs/rates).
Output: `Clip`s with uint8 [T, S, S, 3] frames at 25 fps and float32 16 kHz mono audio of exactly
T * 640 samples (docs/conventions.md), one stable square crop per clip.

Pipeline of `process_video` (memory stays at a few frames of the source, whatever its size):
  1. probe with ``ffmpeg -i`` (no ffprobe needed): streams, size, rotation, duration;
  2. audio: ffmpeg -> 16 kHz mono float32 (from the container or `VideoFile.audio_path`);
  3. detection pass: ffmpeg streams rgb24 frames resampled to 25 fps (``fps`` filter) and
     downscaled to <= 640 px; BlazeFace (vasa_jax.faces) runs every ``detect_every`` frames,
     refined on a region around the face when the face is small;
  4. segmentation: runs of detections with exactly one dominant face, whose box stays within a
     tolerance of the run's median box (a moving/jumping face or a cut starts a new run);
  5. crop pass (only if some run survives): ffmpeg streams full-resolution frames again and each
     frame of a kept run is cut with the run's ONE square box (median face box enlarged by
     ``crop_scale``), shifted inside the image when possible, edge-padded otherwise, and
     resized to ``size`` (area filter);
  6. runs are split into clips of ``clip_seconds[0]``..``clip_seconds[1]`` seconds.

Nothing here raises on a bad input file: `process_video` reports each skipped video/segment via
``on_skip(vf, reason)``. Reasons start with one of `SKIP_CATEGORIES` followed by ': details'.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import os
import re
import subprocess
import tempfile
from typing import Callable, Iterator, Sequence

import numpy as np

from vasa_jax import faces as faces_lib

log = logging.getLogger(__name__)

from vasa_jax.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402,F401
from vasa_jax.errors import InputError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_EXTS = (".wav", ".flac", ".m4a", ".mp3", ".ogg", ".aac")  # preference order for siblings

SKIP_CATEGORIES = (
    "unreadable file",      # not a media file / corrupt container / cannot be opened
    "truncated file",       # container or stream ends early
    "unsupported codec",    # no decoder for the video/audio stream
    "no video stream",
    "missing audio",        # no audio stream and no separate audio file
    "zero-length audio",
    "silent audio",
    "no face",
    "several faces",        # two or more faces of comparable size
    "face too small",
    "too short",            # no single-face run of at least clip_seconds[0]
    "error",                # unexpected exception (bug or exotic input); the build goes on
)


class SkipClip(Exception):
  """A video (or a part of it) that cannot give a clip. ``reason`` is human-readable and starts
  with one of `SKIP_CATEGORIES`; ``category`` is that prefix."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason

  @property
  def category(self) -> str:
    return self.reason.split(":", 1)[0].strip()


@dataclasses.dataclass
class VideoFile:
  path: str
  identity: str
  audio_path: str | None
  key: str  # unique, stable: the path relative to the scanned root, '/'-separated


@dataclasses.dataclass
class Clip:
  frames: np.ndarray  # uint8 [T, S, S, 3]
  audio: np.ndarray  # float32 [T * 640], 16 kHz mono
  box: tuple[int, int, int]  # (x0, y0, side) of the square crop in source (display) pixels
  source: str  # source video path
  start: float  # seconds from the start of the source video
  fps: int = FPS
  identity: str = ""
  key: str = ""  # "<VideoFile.key>@<start frame>", unique per clip


# ----------------------------------------------------------------------------- finding videos

_COUNTER = re.compile(r"^(.+?)[_-]\d+$")
_VOX_ID = re.compile(r"^id\d{3,}$")


def _strip_counter(stem: str) -> str:
  m = _COUNTER.match(stem)
  return m.group(1) if m else stem


def _identity_from_path(rel: str) -> str:
  parts = rel.split("/")
  dirs = parts[:-1]
  for d in dirs:  # VoxCeleb1/2 anywhere in the tree: .../id00012/<yt_id>/00001.mp4
    if _VOX_ID.match(d):
      return d
  if len(dirs) >= 2:  # <identity>/<video>/<clip>.mp4
    return dirs[0]
  return _strip_counter(os.path.splitext(parts[-1])[0])


def _lookup(m: dict | None, key: str) -> str | None:
  if not m:
    return None
  stem = os.path.splitext(os.path.basename(key))[0]
  for k in (key, os.path.splitext(key)[0], os.path.basename(key), stem):
    if k in m:
      return m[k]
  return None


def find_videos(root: str, *, identity_map: dict[str, str] | None = None,
                audio_map: dict[str, str] | None = None) -> list[VideoFile]:
  """All videos under ``root`` (recursively), sorted by key.

  - extensions: `VIDEO_EXTS`, case-insensitive; hidden files/folders are ignored;
  - key: path relative to root with '/' separators (unique and stable);
  - audio: ``audio_map[key|key-without-ext|file name|stem]`` if given, else a sibling audio file
    with the same stem (`AUDIO_EXTS`, first match in that order), else None (container audio);
  - identity: ``identity_map[key|key-without-ext|file name|stem]`` if given and found; else a
    VoxCeleb ``idNNNNN`` folder anywhere in the path; else the first folder for files nested
    two or more levels deep (``<identity>/<video>/<clip>.mp4``); else the file stem with a
    trailing clip counter removed (``WDA_Name_000`` -> ``WDA_Name``, ``abc-02`` -> ``abc``).

  Raises FileNotFoundError / NotADirectoryError / PermissionError (with the path) when root or
  a folder below it cannot be read.
  """
  if not os.path.exists(root):
    raise FileNotFoundError(f"video folder does not exist: {root!r}")
  if not os.path.isdir(root):
    raise NotADirectoryError(f"not a folder: {root!r}")
  if not os.access(root, os.R_OK | os.X_OK):
    raise PermissionError(f"video folder is not readable: {root!r}")

  def onerror(e: OSError):
    raise type(e)(e.errno, f"cannot read folder {e.filename!r}: {e.strerror}") from e

  out = []
  seen = {os.path.realpath(root)}
  for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=True):
    keep = []
    for d in sorted(dirnames):
      real = os.path.realpath(os.path.join(dirpath, d))
      if not d.startswith(".") and real not in seen:  # hidden folders and symlink loops
        seen.add(real)
        keep.append(d)
    dirnames[:] = keep
    audio_by_stem: dict[str, str] = {}
    for f in filenames:
      stem, ext = os.path.splitext(f)
      ext = ext.lower()
      if ext in AUDIO_EXTS and not f.startswith("."):
        prev = audio_by_stem.get(stem)
        if prev is None or AUDIO_EXTS.index(ext) < AUDIO_EXTS.index(os.path.splitext(prev)[1].lower()):
          audio_by_stem[stem] = f
    for f in sorted(filenames):
      stem, ext = os.path.splitext(f)
      if f.startswith(".") or ext.lower() not in VIDEO_EXTS:
        continue
      path = os.path.join(dirpath, f)
      key = os.path.relpath(path, root).replace(os.sep, "/")
      audio = _lookup(audio_map, key)
      if audio is None and stem in audio_by_stem:
        audio = os.path.join(dirpath, audio_by_stem[stem])
      ident = _lookup(identity_map, key) or _identity_from_path(key)
      out.append(VideoFile(path=path, identity=ident, audio_path=audio, key=key))
  out.sort(key=lambda v: v.key)
  return out


def _read_table(path: str) -> tuple[list[str], list[dict[str, str]]]:
  with open(path, newline="", encoding="utf-8") as f:
    text = f.read()
  first = text.splitlines()[0] if text else ""
  delim = "\t" if (path.lower().endswith(".tsv") or "\t" in first) else ","
  rows = list(csv.DictReader(text.splitlines(), delimiter=delim))
  return [c.strip().lower() for c in (rows[0].keys() if rows else [])], rows


def _pick(cols: Sequence[str], names: Sequence[str], what: str, path: str) -> str:
  for n in names:
    if n in cols:
      return n
  raise InputError(f"{path}: no {what} column (looked for {', '.join(names)}; has {', '.join(cols)})")


_FILE_COLS = ("file", "path", "filename", "video", "name", "key", "clip")


def read_identity_map(tsv_or_csv: str) -> dict[str, str]:
  """{file stem: identity} (plus the file column's own value as a key) from a TSV/CSV with a
  header, e.g. /work/shared/real/INVENTORY.tsv (columns ``file`` and ``identity``)."""
  cols, rows = _read_table(tsv_or_csv)
  fcol = _pick(cols, _FILE_COLS, "file", tsv_or_csv)
  icol = _pick(cols, ("identity", "speaker", "person", "id", "label"), "identity", tsv_or_csv)
  out: dict[str, str] = {}
  for r in rows:
    r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
    f, ident = r.get(fcol, ""), r.get(icol, "")
    if not f or not ident:
      continue
    out[f] = ident
    out[os.path.splitext(os.path.basename(f))[0]] = ident
  return out


_PAIRED = re.compile(r"paired audio:\s*([^\s;,]+)", re.I)


def read_audio_map(tsv_or_csv: str) -> dict[str, str]:
  """{video stem: audio path} for rows whose ``notes`` say ``paired audio: <path>`` (the
  INVENTORY.tsv convention for silent videos with a separate speech file) or that have an
  ``audio``/``audio_path`` column. Relative paths are resolved against the table's folder; a
  listed file that is missing is replaced by an existing file with the same stem and any
  `AUDIO_EXTS` extension (INVENTORY lists .wav, the folder holds .flac)."""
  cols, rows = _read_table(tsv_or_csv)
  fcol = _pick(cols, _FILE_COLS, "file", tsv_or_csv)
  base = os.path.dirname(os.path.abspath(tsv_or_csv))
  out: dict[str, str] = {}
  for r in rows:
    r = {k.strip().lower(): (v or "").strip() for k, v in r.items() if k}
    a = r.get("audio_path") or r.get("audio")
    if not a:
      m = _PAIRED.search(r.get("notes", ""))
      a = m.group(1) if m else None
    if not a or not r.get(fcol):
      continue
    a = a if os.path.isabs(a) else os.path.join(base, a)
    if not os.path.exists(a):
      stem = os.path.splitext(a)[0]
      alts = [stem + e for e in AUDIO_EXTS if os.path.exists(stem + e)]
      if not alts:
        continue
      a = alts[0]
    out[os.path.splitext(os.path.basename(r[fcol]))[0]] = a
  return out


# ----------------------------------------------------------------------------- ffmpeg helpers


from vasa_jax.media import ffmpeg_exe  # noqa: E402  (re-exported: one ffmpeg for the project)


@dataclasses.dataclass
class Probe:
  duration: float | None
  width: int  # display width (after SAR and rotation)
  height: int
  fps: float | None
  vcodec: str | None
  acodec: str | None
  vstart: float  # start time of the video stream (s)
  astart: float
  stderr: str


_ERR_PATTERNS = (
    (re.compile(r"moov atom not found|end of file|Truncating packet|partial file|"
                r"Invalid NAL unit size|Packet mismatch|stream ends prematurely", re.I), "truncated file"),
    (re.compile(r"Decoder .{0,40}?not found|Unknown decoder|unsupported codec|codec not currently supported|"
                r"Could not find codec parameters|no decoder", re.I), "unsupported codec"),
    (re.compile(r"Invalid data found when processing input|could not find corresponding|"
                r"Error opening input|No such file|Permission denied|unknown format", re.I), "unreadable file"),
)


def _clean(line: str) -> str:
  """ffmpeg log line without its '[ctx @ 0x55...]' prefixes (addresses change every run)."""
  return re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line).strip()


def _classify_error(stderr: str, default: str = "unreadable file") -> str:
  for pat, cat in _ERR_PATTERNS:
    m = pat.search(stderr)
    if m:
      line = next((ln for ln in stderr.splitlines() if m.group(0) in ln), m.group(0))
      return f"{cat}: {_clean(line)[-160:]}"
  tail = " | ".join(_clean(ln) for ln in stderr.strip().splitlines()[-2:])
  return f"{default}: {tail[-160:] or 'ffmpeg failed'}"


def _looks_like_isobmff(path: str) -> bool:
  """True if the file starts like an MP4/MOV (a known box type at bytes 4..8)."""
  try:
    with open(path, "rb") as f:
      head = f.read(12)
  except OSError:
    return False
  return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def _classify_open_error(stderr: str, path: str) -> str:
  reason = _classify_error(stderr)
  if reason.startswith("truncated file") and not _looks_like_isobmff(path):
    reason = "unreadable file: not a media file (" + reason.split(": ", 1)[-1] + ")"
  return reason


def _parse_time(s: str) -> float | None:
  m = re.match(r"(\d+):(\d+):(\d+(?:\.\d+)?)", s)
  return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def probe(path: str) -> Probe:
  """Parse ``ffmpeg -i`` output. Raises SkipClip when the file cannot be opened as media."""
  if not os.path.isfile(path):
    raise SkipClip(f"unreadable file: no such file {path!r}")
  r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path],
                     capture_output=True, text=True, errors="replace")
  err = r.stderr
  if "Input #0" not in err:
    raise SkipClip(_classify_open_error(err, path))
  dur = None
  m = re.search(r"Duration:\s*([\d:.]+)", err)
  if m:
    dur = _parse_time(m.group(1))
  w = h = 0
  fps = vcodec = acodec = None
  vstart = astart = 0.0
  rotation = 0.0
  for line in err.splitlines():
    line_s = line.strip()
    if line_s.startswith("Stream #") and ": Video:" in line_s and vcodec is None and "attached pic" not in line_s:
      vcodec = line_s.split(": Video:", 1)[1].strip().split()[0].rstrip(",")
      ms = re.search(r",\s*(\d{2,5})x(\d{2,5})", line_s)
      if ms:
        w, h = int(ms.group(1)), int(ms.group(2))
      sar = re.search(r"SAR (\d+):(\d+)", line_s)
      if sar and int(sar.group(1)) > 0 and int(sar.group(2)) > 0 and sar.group(1) != sar.group(2):
        w = int(round(w * int(sar.group(1)) / int(sar.group(2)) / 2)) * 2
      mf = re.search(r"([\d.]+)\s*fps", line_s) or re.search(r"([\d.]+)\s*tbr", line_s)
      if mf:
        fps = float(mf.group(1))
      mst = re.search(r"start (-?[\d.]+)", line_s)
      if mst:
        vstart = float(mst.group(1))
    elif line_s.startswith("Stream #") and ": Audio:" in line_s and acodec is None:
      acodec = line_s.split(": Audio:", 1)[1].strip().split()[0].rstrip(",")
      mst = re.search(r"start (-?[\d.]+)", line_s)
      if mst:
        astart = float(mst.group(1))
    mr = re.search(r"rotation of (-?[\d.]+) degrees", line_s)
    if mr and vcodec is not None:
      rotation = float(mr.group(1))
  if vcodec is not None and round(abs(rotation)) % 180 == 90:
    w, h = h, w
  return Probe(dur, w, h, fps, vcodec, acodec, vstart, astart, err)


def load_audio(path: str, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Any container/format/rate/channel layout -> float32 mono at ``sr`` via ffmpeg.

  Raises SkipClip ("missing audio", "zero-length audio", "unreadable file", ...) when no audio
  samples come out."""
  if not os.path.isfile(path):
    raise SkipClip(f"missing audio: no such file {path!r}")
  cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0",
         "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
  r = subprocess.run(cmd, capture_output=True)
  err = r.stderr.decode("utf-8", "replace")
  audio = np.frombuffer(r.stdout, np.float32)
  if audio.size == 0:
    if re.search(r"matches no streams|Stream map '0:a:0'|does not contain any stream", err):
      raise SkipClip(f"missing audio: no audio stream in {os.path.basename(path)}")
    if r.returncode != 0:
      raise SkipClip(_classify_open_error(err, path))
    raise SkipClip(f"zero-length audio: {os.path.basename(path)}")
  audio = np.nan_to_num(audio.copy(), nan=0.0, posinf=0.0, neginf=0.0)
  return np.clip(audio, -1.0, 1.0)


class _FramePipe:
  """Streams rgb24 frames of the first video stream, resampled to 25 fps, at (w, h)."""

  def __init__(self, path: str, w: int, h: int, max_frames: int | None = None):
    self.w, self.h = w, h
    self._err = tempfile.TemporaryFile()
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", path, "-map", "0:v:0",
           "-an", "-sn", "-dn", "-vf", f"fps={FPS},scale={w}:{h}:flags=area,format=rgb24"]
    if max_frames is not None:
      cmd += ["-frames:v", str(max_frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, bufsize=w * h * 3)
    self.count = 0

  def __iter__(self) -> Iterator[np.ndarray]:
    n = self.w * self.h * 3
    assert self.proc.stdout is not None
    while True:
      buf = self.proc.stdout.read(n)
      if len(buf) < n:
        break
      self.count += 1
      yield np.frombuffer(buf, np.uint8).reshape(self.h, self.w, 3)

  def close(self) -> tuple[int, str]:
    if self.proc.stdout:
      self.proc.stdout.close()
    if self.proc.poll() is None:
      self.proc.kill()
    rc = self.proc.wait()
    self._err.seek(0)
    err = self._err.read().decode("utf-8", "replace")
    self._err.close()
    return rc, err

  def __enter__(self):
    return self

  def __exit__(self, *a):
    self.close()


# ----------------------------------------------------------------------------- segmentation


@dataclasses.dataclass
class _Obs:
  frame: int
  box: np.ndarray | None  # main face box (x0, y0, x1, y1) in source pixels, None = no face
  multi: bool = False  # several comparable faces
  shot: int = 0  # index of the shot (between two detected cuts) the frame belongs to


@dataclasses.dataclass
class _Run:
  frames: list[int]
  boxes: list[np.ndarray]

  def median(self) -> tuple[np.ndarray, float]:
    b = np.stack(self.boxes)
    c = np.median((b[:, :2] + b[:, 2:]) / 2, axis=0)
    side = float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
    return c, side


def _fits(run: _Run, move_tol: float, scale_tol: float) -> bool:
  c, side = run.median()
  b = np.stack(run.boxes)
  cs = (b[:, :2] + b[:, 2:]) / 2
  sides = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
  if np.abs(cs - c).max() > move_tol * side:
    return False
  return bool(((sides / side) <= scale_tol).all() and ((side / sides) <= scale_tol).all())


def _segment(obs: list[_Obs], *, max_gap: int, move_tol: float, scale_tol: float) -> list[_Run]:
  """Greedy: extend the run while every box stays near the run's median box."""
  runs: list[_Run] = []
  cur: _Run | None = None
  missing = 0
  shot = -1
  for o in obs:
    if o.shot != shot:  # never run across a cut
      if cur is not None:
        runs.append(cur)
      cur, missing, shot = None, 0, o.shot
    if o.multi or o.box is None:
      missing += 1
      if cur is not None and (o.multi or missing > max_gap):
        runs.append(cur)
        cur = None
      continue
    missing = 0
    if cur is None:
      cur = _Run([o.frame], [o.box])
      continue
    cand = _Run(cur.frames + [o.frame], cur.boxes + [o.box])
    if _fits(cand, move_tol, scale_tol):
      cur = cand
    else:
      runs.append(cur)
      cur = _Run([o.frame], [o.box])
  if cur is not None:
    runs.append(cur)
  return runs


def crop_box_at(c: np.ndarray, face_side: float, crop_scale: float, shift_up: float,
                w: int, h: int, min_fit_scale: float = 1.4) -> tuple[int, int, int]:
  """(x0, y0, side) of the square crop around a face centred at c (pixels) of side face_side
  in a w x h frame: crop_scale x the face, moved up by shift_up x the crop (the training-style
  crop; portrait.crop_box uses it for a photo)."""
  side = max(int(round(face_side * crop_scale)), 8)
  # Sources that are already face crops (LRS2 160 px, 256 px HDTF crops...): rather than pad,
  # take the largest square that fits while the face keeps a reasonable margin.
  if side > min(w, h) >= min_fit_scale * face_side:
    side = min(w, h)
  cx, cy = c[0], c[1] - shift_up * face_side
  x0 = int(round(cx - side / 2))
  y0 = int(round(cy - side / 2))
  # Keep the crop inside the image where it fits (no padding), else centre it on the face.
  if side <= w:
    x0 = min(max(x0, 0), w - side)
  if side <= h:
    y0 = min(max(y0, 0), h - side)
  return x0, y0, side


def crop_square(frame: np.ndarray, box: tuple[int, int, int], size: int) -> np.ndarray:
  """Cut the square ``box`` = (x0, y0, side) out of ``frame`` (edge-padded where it leaves the
  image) and resize it to ``size`` x ``size`` (area filter when shrinking)."""
  import cv2
  x0, y0, side = box
  h, w = frame.shape[:2]
  xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
  if xb <= xa or yb <= ya:
    patch = np.zeros((side, side, 3), np.uint8)
  else:
    patch = frame[ya:yb, xa:xb]
    pad = (ya - y0, y0 + side - yb, xa - x0, x0 + side - xb)
    if any(p > 0 for p in pad):
      patch = cv2.copyMakeBorder(patch, *pad, borderType=cv2.BORDER_REPLICATE)
  interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
  return cv2.resize(patch, (size, size), interpolation=interp)


# ----------------------------------------------------------------------------- main entry


def process_video(vf: VideoFile, *, size: int = 256, clip_seconds: tuple[float, float] = (2.0, 10.0),
                  crop_scale: float = 1.8, max_faces: int = 1,
                  on_skip: Callable[[VideoFile, str], None] | None = None,
                  min_face: int = 64, detect_every: int = 5, detect_max_side: int = 640,
                  comparable_face_ratio: float = 0.6, move_tol: float = 0.25,
                  scale_tol: float = 1.3, max_gap_seconds: float = 0.4,
                  silence_rms: float = 0.008, shift_up: float = 0.1, cut_thresh: float = 25.0) -> list[Clip]:
  """Face-crop clips of one video; see the module docstring. Never raises for bad input:
  skipped videos/segments are reported through ``on_skip(vf, reason)``.

  ``max_faces`` is the number of faces allowed per clip; only 1 is implemented (a frame where a
  second face is at least ``comparable_face_ratio`` times the size of the largest one ends the
  run). ``min_face``: smallest accepted face box side in source pixels. ``crop_scale``: crop
  side / face box side (BlazeFace box: brows to chin); ``shift_up``: crop centre above the box
  centre, in face sides (to include the hair). ``move_tol``/``scale_tol``: how far (in face
  sides) / by what factor a face may move / change size before the run is split. ``cut_thresh``:
  least mean absolute grey-level change (0-255, 32x32 thumbnails) between consecutive frames
  taken as a shot cut (it must also be 3x the recent motion level; runs never cross a cut).
  """
  def skip(reason: str):
    log.info("skip %s: %s", vf.key, reason)
    if on_skip is not None:
      on_skip(vf, reason)

  try:
    return _process(vf, size=size, clip_seconds=clip_seconds, crop_scale=crop_scale,
                    max_faces=max_faces, skip=skip, min_face=min_face, detect_every=detect_every,
                    detect_max_side=detect_max_side, comparable_face_ratio=comparable_face_ratio,
                    move_tol=move_tol, scale_tol=scale_tol, max_gap_seconds=max_gap_seconds,
                    silence_rms=silence_rms, shift_up=shift_up, cut_thresh=cut_thresh)
  except SkipClip as e:
    skip(e.reason)
  except ImportError:  # set-up problem (detector weights missing), not a bad file: fail loudly
    raise
  except Exception as e:  # noqa: BLE001 - a build must never die on one file
    log.exception("error processing %s", vf.path)
    skip(f"error: {type(e).__name__}: {e}")
  return []


def _detect_pass(vf: VideoFile, pr: Probe, *, detect_every: int, detect_max_side: int,
                 comparable_face_ratio: float, cut_thresh: float) -> tuple[list[_Obs], int, list[int]]:
  """Returns the observations, the number of decoded frames and the frames that start a new
  shot (hard cuts: mean absolute difference of 32x32 grey thumbnails above ``cut_thresh`` and
  above 3x the median difference of the previous 12 frames)."""
  import cv2
  det = faces_lib.get_detector()
  s = min(1.0, detect_max_side / max(pr.width, pr.height))
  dw, dh = max(1, round(pr.width * s)), max(1, round(pr.height * s))
  sx, sy = pr.width / dw, pr.height / dh
  obs: list[_Obs] = []
  cuts: list[int] = []
  prev: np.ndarray | None = None
  prev_thumb: np.ndarray | None = None
  recent: collections.deque[float] = collections.deque(maxlen=12)
  pipe = _FramePipe(vf.path, dw, dh)
  try:
    for i, fr in enumerate(pipe):
      thumb = cv2.resize(cv2.cvtColor(fr, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
      thumb = thumb.astype(np.float32)
      is_cut = False
      if prev_thumb is not None:
        d = float(np.abs(thumb - prev_thumb).mean())
        # a cut is a jump well above the recent motion level (hand-held footage moves a lot)
        base = float(np.median(recent)) if recent else cut_thresh / 2
        is_cut = d > cut_thresh and d > 3.0 * base
        recent.append(d)
      prev_thumb = thumb
      if is_cut:
        cuts.append(i)
        prev = None
      if i % detect_every and not is_cut:
        continue
      shot = len(cuts)
      found = det.detect(fr)
      if not found and prev is not None:  # lost it: look again around the last box
        found = det.detect_roi(fr, prev)
      if not found:
        obs.append(_Obs(i, None, shot=shot))
        prev = None
        continue
      main = found[0]
      multi = any(f.side >= comparable_face_ratio * main.side for f in found[1:])
      if main.side < 0.3 * max(dw, dh):  # small face: refine on a region around it
        ref = det.detect_roi(fr, main.box)
        if ref:
          best = max(ref, key=lambda f: faces_lib._iou(main.box, f.box[None])[0])
          if faces_lib._iou(main.box, best.box[None])[0] > 0.3:
            main = best
      prev = main.box
      box = main.box * np.array([sx, sy, sx, sy], np.float32)
      obs.append(_Obs(i, box, multi, shot))
  finally:
    rc, err = pipe.close()
  n = pipe.count
  if n == 0:
    raise SkipClip(_classify_error(err, "unreadable file") if err.strip() else "unreadable file: no frames decoded")
  expected = (pr.duration or 0) * FPS
  if (rc != 0 or err.strip()) and expected and n < 0.9 * expected - 2:
    detail = _classify_error(err).split(": ", 1)[-1]
    raise SkipClip(f"truncated file: decoded {n} of ~{int(expected)} frames ({detail})")
  return obs, n, cuts


def _process(vf: VideoFile, *, size, clip_seconds, crop_scale, max_faces, skip, min_face,
             detect_every, detect_max_side, comparable_face_ratio, move_tol, scale_tol,
             max_gap_seconds, silence_rms, shift_up, cut_thresh) -> list[Clip]:
  if max_faces != 1:
    raise ValueError("only max_faces=1 is implemented")
  pr = probe(vf.path)
  if pr.vcodec is None or pr.width <= 0 or pr.height <= 0:
    raise SkipClip("no video stream: " + os.path.basename(vf.path))

  # Audio first: cheap, and a video without speech is useless.
  if vf.audio_path:
    audio = load_audio(vf.audio_path)
    a_off = 0.0  # a separate speech file starts with the video
  else:
    if pr.acodec is None:
      raise SkipClip(f"missing audio: no audio stream in {os.path.basename(vf.path)} and no separate audio file")
    audio = load_audio(vf.path)
    a_off = pr.vstart - pr.astart  # audio sample 0 is at astart; video frame 0 at ~vstart
  if float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < silence_rms:
    raise SkipClip(f"silent audio: rms {np.sqrt(np.mean(np.square(audio))):.4f} over the whole file")
  shift = int(round(a_off * SAMPLE_RATE))
  if shift > 0:
    audio = audio[shift:]
  elif shift < 0:
    audio = np.concatenate([np.zeros(-shift, np.float32), audio])

  obs, n_frames, cuts = _detect_pass(vf, pr, detect_every=detect_every, detect_max_side=detect_max_side,
                                     comparable_face_ratio=comparable_face_ratio, cut_thresh=cut_thresh)
  # Frames with audio: allow a little shortfall (padded with zeros), cap otherwise.
  n_audio = int(np.ceil(len(audio) / SAMPLES_PER_FRAME + 2))
  n_usable = min(n_frames, n_audio)

  max_gap = max(0, int(round(max_gap_seconds * FPS / detect_every)))
  runs = _segment(obs, max_gap=max_gap, move_tol=move_tol, scale_tol=scale_tol)
  min_len = int(round(clip_seconds[0] * FPS))
  max_len = int(round(clip_seconds[1] * FPS))

  plans: list[tuple[int, int, tuple[int, int, int]]] = []  # (start, stop, box)
  reasons: list[str] = []
  for run in runs:
    start = run.frames[0]
    # extend to the next (unobserved) detection frame, but never past a cut
    next_cut = min([c for c in cuts if c > run.frames[-1]], default=n_usable)
    stop = min(run.frames[-1] + detect_every, next_cut, n_usable)
    length = stop - start
    c, side = run.median()
    span = f"{start / FPS:.1f}-{stop / FPS:.1f}s"
    if length < min_len:
      reasons.append(f"too short: single-face run {span} ({length / FPS:.1f}s < {clip_seconds[0]}s)")
      continue
    if side < min_face:
      reasons.append(f"face too small: {side:.0f}px < {min_face}px at {span}")
      continue
    n = int(np.ceil(length / max_len))
    each = length // n
    for k in range(n):
      s0 = start + k * each
      # one box per clip: the median of the detections inside the clip (all of them are within
      # move_tol/scale_tol of the run's median, so the face stays well inside the crop)
      sub = [b for f, b in zip(run.frames, run.boxes) if s0 <= f < s0 + each] or run.boxes
      cc, cside = _Run([], sub).median()
      plans.append((s0, s0 + each, crop_box_at(cc, cside, crop_scale, shift_up, pr.width, pr.height)))

  # Silence per clip (speech may stop halfway).
  kept = []
  for s0, s1, box in plans:
    a = audio[s0 * SAMPLES_PER_FRAME:s1 * SAMPLES_PER_FRAME]
    rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0
    if rms < silence_rms:
      reasons.append(f"silent audio: rms {rms:.4f} at {s0 / FPS:.1f}-{s1 / FPS:.1f}s")
      continue
    kept.append((s0, s1, box))

  if not kept:
    n_obs = len(obs)
    n_face = sum(o.box is not None for o in obs)
    n_multi = sum(o.multi for o in obs)
    if n_obs == 0 or (n_face == 0 and n_multi == 0):
      raise SkipClip(f"no face: none found in {n_obs} sampled frames")
    if n_multi >= 0.5 * max(1, n_face):
      raise SkipClip(f"several faces: comparable faces in {n_multi} of {n_face} sampled frames with a face")
    for cat in ("face too small", "silent audio", "too short"):
      rs = [r for r in reasons if r.startswith(cat)]
      if rs:
        raise SkipClip(rs[0] + (f" (+{len(rs) - 1} more)" if len(rs) > 1 else ""))
    raise SkipClip("too short: no usable single-face run")
  for r in reasons:  # report dropped parts of a video that did give clips (not tiny fragments)
    if not r.startswith("too short"):
      skip(r)

  # Crop pass at full resolution.
  last = max(s1 for _, s1, _ in kept)
  W, H = pr.width, pr.height
  bufs = [np.empty((s1 - s0, size, size, 3), np.uint8) for s0, s1, _ in kept]
  filled = [0] * len(kept)
  pipe = _FramePipe(vf.path, W, H, max_frames=last)
  try:
    for i, fr in enumerate(pipe):
      for j, (s0, s1, box) in enumerate(kept):
        if s0 <= i < s1:
          bufs[j][i - s0] = crop_square(fr, box, size)
          filled[j] += 1
  finally:
    pipe.close()

  clips = []
  for j, (s0, s1, box) in enumerate(kept):
    t = filled[j]
    if t < min_len:
      skip(f"truncated file: crop pass gave {t} of {s1 - s0} frames at {s0 / FPS:.1f}s")
      continue
    frames = bufs[j][:t]
    a = audio[s0 * SAMPLES_PER_FRAME:(s0 + t) * SAMPLES_PER_FRAME]
    if a.size < t * SAMPLES_PER_FRAME:
      a = np.pad(a, (0, t * SAMPLES_PER_FRAME - a.size))
    clips.append(Clip(frames=frames, audio=np.ascontiguousarray(a, np.float32), box=box,
                      source=vf.path, start=s0 / FPS, fps=FPS, identity=vf.identity,
                      key=f"{vf.key}@{s0}"))
  return clips

"""Landmark tracks of whole clips: every frame's 478 points, with gaps filled.

    points, valid, score = track_frames(frames)            # one clip, uint8 [T, S, S, 3]
    for i, rec, tr in track_source(source, n, workers=2, decode=records.decode_jpeg):
        ...

Frames where the face is lost (valid = False) get points linearly interpolated from the nearest
tracked frames (held at the ends), so downstream code never sees holes; `valid` says which
frames were measured.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from vasa_jax.geometry import landmarks as lm


@dataclasses.dataclass
class Track:
  points: np.ndarray   # float32 [T, 478, 3] pixels of the frames
  valid: np.ndarray    # bool [T]
  score: np.ndarray    # float32 [T] face-presence probability (0 where lost)

  @property
  def coverage(self) -> float:
    return float(self.valid.mean()) if len(self.valid) else 0.0


def fill_gaps(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """points [T, ...] with rows where ~valid replaced by linear interpolation over time."""
  points = np.array(points, np.float32, copy=True)
  t = np.arange(len(valid))
  if not valid.any():
    return points
  flat = points.reshape(len(points), -1)
  good = np.nonzero(valid)[0]
  for j in range(flat.shape[1]):
    flat[:, j] = np.interp(t, good, flat[good, j])
  return flat.reshape(points.shape)


def track_frames(frames, mesh: lm.FaceMesh | None = None, smooth: bool = True) -> Track:
  """Tracks the face through frames [T, H, W, 3] (uint8)."""
  mesh = mesh or lm.get_mesh()
  n = len(frames)
  pts = np.zeros((n, lm.NUM_POINTS, 3), np.float32)
  valid = np.zeros(n, bool)
  score = np.zeros(n, np.float32)
  for i, g in enumerate(mesh.track(frames, smooth=smooth)):
    if g is not None:
      pts[i], valid[i], score[i] = g.points, True, g.score
  return Track(fill_gaps(pts, valid), valid, score)


def _track_record(args):
  i, frames = args
  return i, track_frames(frames)


def track_source(source, n: int | None = None, *, workers: int = 1, decode: Callable
                 ) -> Iterator[tuple[int, dict, Track]]:
  """(index, record, Track) for the first n clips of a clip data source whose records hold
  encoded frames (`decode(bytes) -> uint8 [S, S, 3]`, e.g. data.records.decode_jpeg), in
  order. workers > 1 tracks clips in that many processes."""
  n = len(source) if n is None else min(n, len(source))

  def load(i):
    rec = source[i]
    return rec, np.stack([decode(bytes(f)) for f in rec["frames"]])

  if workers <= 1:
    for i in range(n):
      rec, frames = load(i)
      yield i, rec, track_frames(frames)
    return

  from vasa_jax.workers import pool
  with pool(workers) as ex:
    pending: dict = {}
    recs: dict = {}
    nxt = 0
    ahead = 2 * workers
    for i in range(n):
      while nxt < n and len(pending) < ahead:
        rec, frames = load(nxt)
        recs[nxt] = rec
        pending[nxt] = ex.submit(_track_record, (nxt, frames))
        nxt += 1
      _, tr = pending.pop(i).result()
      yield i, recs.pop(i), tr


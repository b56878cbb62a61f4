"""Landmark tracks of whole clips: every frame's 478 points, with gaps filled.

    points, valid, score = track_frames(frames)            # one clip, uint8 [T, S, S, 3]
    for i, rec, tr in track_source(source, n, workers=2, decode=records.decode_jpeg):
        ...

Frames where the face is lost (valid = False) get points linearly interpolated from the nearest
tracked frames (held at the ends), so downstream code never sees holes; `valid` says which
frames were measured.

    angles, tracked = pixel_rotation(frames, points[0])     # head rotation from the pixels

`pixel_rotation` reads the head's rotation from the image itself: the skull points of the first
frame's mesh are followed by optical flow and a rigid 3D body (their first-frame mesh) is fitted
to where they went. The face-mesh network, asked frame by frame, sees a fraction of a degree of
head rotation when only the mouth moves; the pixels do not (docs/motion_eval/still_head.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator, Sequence

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


# ----------------------------------------------------------------------------- pixel rotation

FLOW_WINDOW = 21          # Lucas-Kanade window, pixels
FLOW_LEVELS = 3           # pyramid levels
FLOW_BACK_PX = 0.5        # forward-backward disagreement above which a point is not trusted
REANCHOR_SHARE = 0.6      # under this share of trusted points, the current frame becomes the anchor


def _rotate(r: np.ndarray, omega: np.ndarray) -> np.ndarray:
  th = float(np.linalg.norm(omega))
  if th == 0.0:
    return r
  k = omega / th
  kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
  return (np.eye(3) + math.sin(th) * kx + (1.0 - math.cos(th)) * kx @ kx) @ r


def _fit_rigid(x: np.ndarray, y: np.ndarray, r: np.ndarray, s: float, shift: np.ndarray,
               iters: int = 6):
  """Gauss-Newton from (r, s, shift) for y [M, 2] ~ s (R x)[:2] + shift, x [M, 3] centred."""
  for _ in range(iters):
    z = x @ r.T
    res = s * z[:, :2] + shift - y
    jac = np.zeros((len(x), 2, 6))        # rotation (3), log scale, shift (2)
    jac[:, 0, 1], jac[:, 0, 2] = s * z[:, 2], -s * z[:, 1]
    jac[:, 1, 0], jac[:, 1, 2] = -s * z[:, 2], s * z[:, 0]
    jac[:, :, 3] = s * z[:, :2]
    jac[:, 0, 4] = jac[:, 1, 5] = 1.0
    step = np.linalg.lstsq(jac.reshape(-1, 6), -res.reshape(-1), rcond=None)[0]
    r = _rotate(r, step[:3])
    s *= math.exp(step[3])
    shift = shift + step[4:]
  return r, s, shift


def rigid_rotations(model: np.ndarray, seen: np.ndarray, trusted: np.ndarray) -> np.ndarray:
  """Per frame, the rotation R of a rigid body `model` [M, 3] (pixels, as first seen) whose
  scaled orthographic image s (R X)[:2] + t best matches `seen` [T, M, 2] at the trusted
  [T, M] points, in the least-squares sense of the tracker's own rigid fit (Gauss-Newton from
  the previous frame's fit; a frame with under 6 trusted points holds it). -> [T, 3, 3]."""
  x = np.asarray(model, np.float64)
  x = x - x.mean(0)
  out = np.tile(np.eye(3), (len(seen), 1, 1))
  r, s, shift = np.eye(3), 1.0, None
  for t in range(len(seen)):
    m = trusted[t]
    if m.sum() >= 6:
      y = np.asarray(seen[t, m], np.float64)
      shift = y.mean(0) if shift is None else shift
      r, s, shift = _fit_rigid(x[m], y, r, s, shift)
    out[t] = r
  return out


def pixel_rotation(frames, points0: np.ndarray, ids: Sequence[int] | None = None
                   ) -> tuple[np.ndarray, float]:
  """Head rotation read from the pixels: (yaw, pitch, roll [T, 3] radians relative to frame
  0, share of the point-frames that were trusted).

  points0: [478, 3] the face mesh of frame 0 (pixels); ids: the points that move with the
  skull (default codes.SKULL_INTERIOR: forehead, nose, eye corners, inner cheekbones).

  Each frame's points are found by pyramidal Lucas-Kanade against an anchor frame, starting
  from where the last fit puts them; a point is trusted when the match back to the anchor
  lands within FLOW_BACK_PX. The anchor is frame 0 until under REANCHOR_SHARE of the points
  are trusted (a large turn changes how the skin looks); then the current frame becomes the
  anchor, its points where they were found or, if not trusted, where the rigid fit puts them.
  The rigid body is always frame 0's mesh, so a new anchor adds no drift to the model, only
  the anchor positions' error (a fraction of a pixel)."""
  import cv2

  from vasa_jax.geometry import codes as codes_lib
  ids = list(codes_lib.SKULL_INTERIOR if ids is None else ids)
  model = np.asarray(points0, np.float64)[ids]
  x = model - model.mean(0)
  grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
  rot = np.tile(np.eye(3), (len(grey), 1, 1))
  if not len(grey):
    return codes_lib.rotation_to_angles(rot), 0.0
  lk = dict(winSize=(FLOW_WINDOW, FLOW_WINDOW), maxLevel=FLOW_LEVELS,
            criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
  anchor, anchor_pts = grey[0], model[:, :2].astype(np.float32).reshape(-1, 1, 2)
  r, s, shift = np.eye(3), 1.0, model[:, :2].mean(0)
  guess = anchor_pts.copy()
  trusted_total = len(ids)
  for t in range(1, len(grey)):
    fwd, st, _ = cv2.calcOpticalFlowPyrLK(anchor, grey[t], anchor_pts, guess.copy(), **lk)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(grey[t], anchor, fwd, anchor_pts.copy(), **lk)
    good = ((st[:, 0] == 1) & (st2[:, 0] == 1)
            & (np.linalg.norm(back - anchor_pts, axis=-1)[:, 0] < FLOW_BACK_PX))
    trusted_total += int(good.sum())
    if good.sum() >= 6:
      r, s, shift = _fit_rigid(x[good], fwd[good, 0].astype(np.float64), r, s, shift)
    rot[t] = r
    predicted = (s * (x @ r.T)[:, :2] + shift).astype(np.float32).reshape(-1, 1, 2)
    guess = np.where(good[:, None, None], fwd, predicted)
    if good.mean() < REANCHOR_SHARE:
      anchor, anchor_pts = grey[t], guess.copy()
  return codes_lib.rotation_to_angles(rot), trusted_total / (len(grey) * len(ids))

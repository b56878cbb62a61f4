"""Motion scripts for the synthetic corpus: per-frame ground-truth tracks from speech.

Given a :class:`~vasa_jax.synth.speech.Speech` (audio + espeak phone timings) this module
produces, for a clip of ``T`` frames at 25 fps (frame ``t`` covers audio
``[t/fps, (t+1)/fps)``, values are sampled at the frame centre ``(t + 0.5)/fps``):

* ``mouth`` [T, 3]   (open, wide, round) from phone visemes with Cohen-Massaro style
  co-articulation (overlapping dominance functions),
* ``pose``  [T, 6]   (yaw, pitch, roll, tx, ty, tz): smooth random motion plus
  speech-driven nods and larger movement while speaking,
* ``gaze``  [T, 2]   (theta, phi) around the clip's main direction with saccades,
* ``blink`` [T]      eyelid closure 0..1,
* ``emotion_intensity`` [T], ``energy`` [T] (audio RMS per frame).

All conventions (signs, units) follow docs/conventions.md.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .speech import Speech, is_pause

from vasa_jax.constants import EMOTIONS, FPS  # noqa: E402
DEG = np.pi / 180.0

# pose limits (radians / metres)
YAW_LIM, PITCH_LIM, ROLL_LIM = 30 * DEG, 20 * DEG, 15 * DEG
GAZE_LIM = 35 * DEG


@dataclasses.dataclass
class ClipControls:
  gaze: tuple  # (theta, phi) main gaze direction, radians, camera frame
  distance: float  # head-to-camera distance in metres (0.5-0.9)
  emotion: int  # index into EMOTIONS
  emotion_intensity: float  # 0..1 (0 for neutral)


def sample_controls(rng: np.random.Generator) -> ClipControls:
  """Random per-clip controls: mostly camera-directed gaze, ~40% neutral emotion."""
  u = rng.random()
  if u < 0.6:  # looking at the camera (within 5 degrees)
    r = 5 * DEG * np.sqrt(rng.random())
  elif u < 0.85:
    r = rng.uniform(5, 15) * DEG
  else:
    r = rng.uniform(15, 25) * DEG
  ang = rng.uniform(0, 2 * np.pi)
  gaze = (float(np.clip(r * np.cos(ang), -25 * DEG, 25 * DEG)),
          float(np.clip(r * np.sin(ang), -25 * DEG, 25 * DEG)))
  distance = float(rng.uniform(0.5, 0.9))
  if rng.random() < 0.4:
    emotion, intensity = 0, 0.0
  else:
    emotion = int(rng.integers(1, len(EMOTIONS)))
    intensity = float(rng.uniform(0.3, 1.0))
  return ClipControls(gaze=gaze, distance=distance, emotion=emotion,
                      emotion_intensity=intensity)


# --- visemes -------------------------------------------------------------------------
# A viseme is (open, wide, round, a_open, a_shape, theta, plateau):
#   targets in [0, 1]; a_open / a_shape: dominance magnitude for the open and the lip
#   shape (wide, round) dimensions; theta: dominance decay rate outside the segment
#   (1/s); plateau: fraction of the half-duration over which dominance stays maximal.
def _vow(o, w, r, a=1.0):
  return (o, w, r, a, 1.0, 28.0, 0.3)


def _con(o, w, r, a_open, a_shape=0.4, theta=40.0, plateau=0.5):
  return (o, w, r, a_open, a_shape, theta, plateau)


_SILENCE = (0.0, 0.0, 0.0, 1.0, 1.0, 18.0, 1.0)

_MONO = {
    # open vowels
    "a": _vow(0.85, 0.45, 0.0), "a#": _vow(0.8, 0.4, 0.0), "aa": _vow(0.88, 0.35, 0.0),
    "A": _vow(0.9, 0.25, 0.05), "A:": _vow(0.9, 0.25, 0.05), "A@": _vow(0.85, 0.25, 0.05),
    "a2": _vow(0.6, 0.3, 0.0), "&": _vow(0.8, 0.5, 0.0),
    "0": _vow(0.75, 0.1, 0.35), "O": _vow(0.65, 0.05, 0.5), "O:": _vow(0.6, 0.0, 0.6),
    "O@": _vow(0.6, 0.0, 0.55), "O2": _vow(0.6, 0.0, 0.55), "V": _vow(0.62, 0.3, 0.0),
    # mid / central
    "@": _vow(0.38, 0.2, 0.0, 0.6), "@2": _vow(0.33, 0.2, 0.0, 0.5),
    "@5": _vow(0.3, 0.1, 0.3, 0.5), "@L": _vow(0.3, 0.2, 0.0, 0.6),
    "3": _vow(0.4, 0.2, 0.1, 0.7), "3:": _vow(0.42, 0.25, 0.15), "VR": _vow(0.45, 0.2, 0.1),
    "E": _vow(0.6, 0.55, 0.0), "e": _vow(0.5, 0.6, 0.0), "e@": _vow(0.58, 0.45, 0.0),
    "E2": _vow(0.55, 0.5, 0.0), "E:": _vow(0.6, 0.55, 0.0),
    # close front
    "i": _vow(0.25, 0.75, 0.0, 0.7), "i:": _vow(0.25, 0.85, 0.0), "I": _vow(0.3, 0.65, 0.0),
    "I2": _vow(0.28, 0.55, 0.0, 0.6), "I#": _vow(0.3, 0.5, 0.0, 0.6), "y": _vow(0.25, 0.1, 0.8),
    # close back / rounded
    "u:": _vow(0.25, 0.0, 0.9), "u": _vow(0.28, 0.0, 0.85), "U": _vow(0.3, 0.05, 0.7),
    "o": _vow(0.5, 0.0, 0.7), "o:": _vow(0.5, 0.0, 0.75), "o@": _vow(0.55, 0.0, 0.6),
    "@U": _vow(0.45, 0.05, 0.6),
    # consonants: bilabials close the lips completely and dominate the open dimension
    "p": _con(0.0, 0.1, 0.1, 8.0, 0.3, 90.0, 0.8), "b": _con(0.0, 0.1, 0.1, 8.0, 0.3, 90.0, 0.8),
    "m": _con(0.0, 0.1, 0.1, 8.0, 0.3, 90.0, 0.8), "B": _con(0.05, 0.1, 0.1, 4.0, 0.3, 80.0),
    # labiodentals: lower lip to upper teeth, almost closed
    "f": _con(0.07, 0.3, 0.0, 5.0, 0.6, 80.0, 0.7), "v": _con(0.08, 0.3, 0.0, 5.0, 0.6, 80.0, 0.7),
    # dentals / alveolars: jaw fairly closed, lips follow the vowels
    "T": _con(0.2, 0.3, 0.0, 2.0), "D": _con(0.2, 0.3, 0.0, 1.5),
    "s": _con(0.14, 0.5, 0.0, 2.5, 0.8), "z": _con(0.14, 0.5, 0.0, 2.5, 0.8),
    "S": _con(0.18, 0.05, 0.65, 2.5, 1.5), "Z": _con(0.18, 0.05, 0.65, 2.5, 1.5),
    "tS": _con(0.16, 0.05, 0.6, 2.5, 1.5), "dZ": _con(0.16, 0.05, 0.6, 2.5, 1.5),
    "t": _con(0.2, 0.3, 0.0, 1.0), "d": _con(0.22, 0.3, 0.0, 0.8), "n": _con(0.22, 0.25, 0.0, 0.8),
    "t#": _con(0.25, 0.3, 0.0, 0.5), "l": _con(0.3, 0.25, 0.0, 0.7),
    "r": _con(0.25, 0.1, 0.45, 1.0, 1.0), "r-": _con(0.28, 0.1, 0.4, 1.0, 1.0),
    "w": _con(0.15, 0.0, 0.9, 3.0, 3.0, 45.0),
    "j": _con(0.2, 0.6, 0.0, 1.0, 1.0), ";": _con(0.25, 0.55, 0.0, 0.5, 0.5),
    # velars / glottals: lips and jaw follow the neighbouring vowels
    "k": _con(0.28, 0.2, 0.0, 0.6, 0.2), "g": _con(0.28, 0.2, 0.0, 0.6, 0.2),
    "N": _con(0.25, 0.2, 0.0, 0.6, 0.2), "x": _con(0.3, 0.2, 0.0, 0.6, 0.2),
    "h": _con(0.4, 0.2, 0.0, 0.25, 0.1), "?": _con(0.2, 0.2, 0.0, 0.5, 0.2),
}

# diphthongs / triphthongs: sequence of (monophthong, fraction of the duration)
_MULTI = {
    "aI": (("a", 0.55), ("I", 0.45)), "aI2": (("a", 0.55), ("I", 0.45)),
    "aI3": (("a", 0.55), ("I", 0.45)), "aI@": (("a", 0.45), ("I", 0.3), ("@", 0.25)),
    "aU": (("a", 0.55), ("U", 0.45)), "aU@": (("a", 0.45), ("U", 0.3), ("@", 0.25)),
    "eI": (("E", 0.55), ("I", 0.45)), "OI": (("O:", 0.55), ("I", 0.45)),
    "oU": (("o", 0.55), ("U", 0.45)), "@U": (("@", 0.45), ("U", 0.55)),
    "i@": (("I", 0.55), ("@", 0.45)), "i@3": (("I", 0.55), ("@", 0.45)),
    "U@": (("U", 0.55), ("@", 0.45)), "e@": (("E", 0.6), ("@", 0.4)),
}

_VOWEL_CLASS = {"a": "a", "A": "A", "&": "a", "e": "e", "E": "E", "i": "i", "I": "I",
                "y": "y", "Y": "y", "o": "o", "O": "O", "0": "0", "u": "u", "U": "U",
                "@": "@", "3": "3", "V": "V", "W": "@", "Q": "0"}
_CONS_CLASS = {"p": "p", "b": "b", "m": "m", "B": "B", "f": "f", "v": "v", "F": "f",
               "w": "w", "s": "s", "z": "z", "S": "S", "Z": "Z", "C": "S", "c": "k",
               "t": "t", "d": "d", "n": "n", "l": "l", "L": "l", "J": "j", "j": "j",
               "k": "k", "g": "g", "N": "N", "x": "x", "G": "g", "q": "k", "X": "x",
               "r": "r", "R": "r", "*": "r", "h": "h", "H": "h", "T": "T", "D": "D",
               "?": "?", ";": ";", "'": "?"}
_GENERIC_CONSONANT = _con(0.25, 0.2, 0.1, 0.5, 0.3)


def _strip(sym: str) -> str:
  """Remove stress marks (' ,) and espeak modifier marks that do not change the lips."""
  s = sym.lstrip("',=")
  return s


def _stress_gain(sym: str) -> float:
  if sym.startswith("'"):
    return 1.1
  if sym.startswith(","):
    return 1.0
  return 0.9


def viseme_sequence(sym: str):
  """Viseme parameters for one espeak mnemonic: list of (viseme, fraction)."""
  if is_pause(sym):
    return [(_SILENCE, 1.0)]
  s = _strip(sym)
  if s in _MULTI:
    return [(_MONO[m], f) for m, f in _MULTI[s]]
  if s in _MONO:
    return [(_MONO[s], 1.0)]
  # try without length / variant marks: "a:" -> "a", "E~" -> "E", "l^" -> "l", "w2" -> "w"
  core = s.rstrip(":~^#-23456789!")
  if core in _MULTI:
    return [(_MONO[m], f) for m, f in _MULTI[core]]
  if core in _MONO:
    return [(_MONO[core], 1.0)]
  # fall back on the character class of the first symbol character
  c = s[:1]
  if c in _VOWEL_CLASS:
    v = _VOWEL_CLASS[c]
    seq = [(_MONO.get(v, _MONO["@"]), 1.0)]
    # a second vowel letter means a diphthong-like glide
    c2 = s[1:2]
    if c2 in _VOWEL_CLASS and _VOWEL_CLASS[c2] != v:
      seq = [(seq[0][0], 0.55), (_MONO.get(_VOWEL_CLASS[c2], _MONO["@"]), 0.45)]
    return seq
  if c in _CONS_CLASS:
    return [(_MONO[_CONS_CLASS[c]], 1.0)]
  return [(_GENERIC_CONSONANT, 1.0)]


def _segments(phones, t_end: float):
  """Viseme segments (start, end, viseme, gain) covering [-1, t_end + 1] with silence."""
  segs = []
  first = phones[0].start if phones else t_end
  segs.append((-1.0, max(first, -0.5), _SILENCE, 1.0))
  last = first
  for p in phones:
    if p.end <= p.start:
      continue
    if p.start > last + 1e-3:  # gap between events: silence
      segs.append((last, p.start, _SILENCE, 1.0))
    dur = p.end - p.start
    g = _stress_gain(p.symbol)
    t0 = p.start
    for vis, frac in viseme_sequence(p.symbol):
      t1 = t0 + frac * dur
      segs.append((t0, t1, vis, g))
      t0 = t1
    last = p.end
  segs.append((last, max(last, t_end) + 1.0, _SILENCE, 1.0))
  return segs


def mouth_track(phones, T: int, fps: int = FPS) -> np.ndarray:
  """(open, wide, round) per frame, float32 [T, 3], sampled at frame centres.

  Each phone segment contributes its viseme target with a dominance function that is
  flat over the middle of the segment and decays exponentially outside; the value at
  time t is the dominance-weighted mean of the targets (Cohen & Massaro 1993).  The
  open and shape dimensions have separate dominances, so bilabials close the lips
  completely while keeping the rounding of the neighbouring vowels.
  """
  T = int(T)
  if T <= 0:
    return np.zeros((0, 3), np.float32)
  t = (np.arange(T) + 0.5) / fps
  segs = _segments(list(phones), T / fps)
  st = np.array([s[0] for s in segs])
  en = np.array([s[1] for s in segs])
  vis = np.array([s[2] for s in segs], dtype=np.float64)  # [N, 7]
  gain = np.array([s[3] for s in segs])
  centre = 0.5 * (st + en)
  half = 0.5 * (en - st)
  flat = half * vis[:, 6]
  theta = vis[:, 5]
  d = np.maximum(np.abs(t[:, None] - centre[None, :]) - flat[None, :], 0.0)  # [T, N]
  base = np.exp(-theta[None, :] * d)
  # very short segments dominate less (they are not fully articulated) -- except
  # pauses, whose silence target should always win deep inside a pause
  dur_w = np.clip((en - st) / 0.06, 0.35, 1.0)
  w_open = base * (vis[:, 3] * dur_w)[None, :]
  w_shape = base * (vis[:, 4] * dur_w)[None, :]
  tgt_open = np.clip(vis[:, 0] * gain, 0.0, 1.0)
  open_ = (w_open @ tgt_open) / np.maximum(w_open.sum(1), 1e-12)
  wide = (w_shape @ vis[:, 1]) / np.maximum(w_shape.sum(1), 1e-12)
  rnd = (w_shape @ vis[:, 2]) / np.maximum(w_shape.sum(1), 1e-12)
  out = np.stack([open_, wide, rnd], axis=1)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


# --- helpers ---------------------------------------------------------------------------
def frame_energy(audio: np.ndarray, T: int, sr: int = 16000, fps: int = FPS) -> np.ndarray:
  """RMS of the audio in each frame's window [t/fps, (t+1)/fps); zero past the end."""
  hop = sr // fps
  x = np.zeros(T * hop, np.float64)
  n = min(len(audio), T * hop)
  x[:n] = audio[:n]
  return np.sqrt((x.reshape(T, hop) ** 2).mean(1)).astype(np.float32)


def _ou(rng, T, fps, tau, std, x0=None):
  """Ornstein-Uhlenbeck process sampled at fps (stationary, exact discretisation)."""
  if T <= 0:
    return np.zeros(0)
  a = np.exp(-1.0 / (fps * tau))
  eps = rng.standard_normal(T) * std * np.sqrt(1 - a * a)
  x = np.empty(T)
  x[0] = std * rng.standard_normal() if x0 is None else x0
  for i in range(1, T):
    x[i] = a * x[i - 1] + eps[i]
  return x


def _smooth(x, sigma_frames):
  if sigma_frames <= 0 or len(x) < 2:
    return x
  r = int(np.ceil(3 * sigma_frames))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_frames) ** 2)
  k /= k.sum()
  xp = np.pad(x, (r, r), mode="edge")
  return np.convolve(xp, k, mode="valid")


def _bump(t, t0, width):
  """Raised-cosine bump of total length width starting at t0 (peak 1)."""
  u = (t - t0) / width
  return np.where((u >= 0) & (u <= 1), 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(u, 0, 1)), 0.0)


def speaking_envelope(phones, T, fps=FPS, smooth_s=0.15) -> np.ndarray:
  """1 while a non-pause phone is sounding, 0 otherwise, smoothed (float64 [T])."""
  t = (np.arange(T) + 0.5) / fps
  s = np.zeros(T)
  for p in phones:
    if not is_pause(p.symbol):
      s[(t >= p.start) & (t < p.end)] = 1.0
  return np.clip(_smooth(s, smooth_s * fps), 0.0, 1.0)


# --- blinks ---------------------------------------------------------------------------
def blink_track(rng, T, fps=FPS) -> np.ndarray:
  """Eyelid closure per frame: blinks of 150-300 ms every 2-6 s, sometimes double."""
  t = (np.arange(T) + 0.5) / fps
  out = np.zeros(T)
  start = rng.uniform(0.1, 3.0)
  end_t = T / fps
  while start < end_t:
    n = 2 if rng.random() < 0.12 else 1
    s = start
    for k in range(n):
      dur = rng.uniform(0.15, 0.3)
      close = dur * rng.uniform(0.25, 0.35)
      hold = dur * rng.uniform(0.15, 0.25)
      open_ = dur - close - hold
      depth = 1.0 if rng.random() < 0.9 else rng.uniform(0.6, 0.9)  # partial blinks
      u = np.clip((t - s) / close, 0, 1)
      rise = u * u * (3 - 2 * u)
      v = np.clip((t - s - close - hold) / open_, 0, 1)
      fall = 1 - v * v * (3 - 2 * v)
      b = np.where(t < s + close, rise, np.where(t < s + close + hold, 1.0, fall))
      b = np.where((t >= s) & (t <= s + dur), b, 0.0) * depth
      out = np.maximum(out, b)
      s = s + dur + rng.uniform(0.08, 0.2)
    start = s + rng.uniform(2.0, 6.0)
  return out.astype(np.float32)


# --- gaze --------------------------------------------------------------------------------
def gaze_track(rng, T, main, fps=FPS) -> np.ndarray:
  """Main direction + saccades (fast jumps every 0.5-3 s) + small drift, [T, 2]."""
  t = np.arange(T) / fps
  off = np.zeros((T, 2))
  cur = np.zeros(2)
  nxt = rng.uniform(0.3, 2.0)
  for i in range(T):
    if t[i] >= nxt:
      prev = cur
      if rng.random() < 0.45 or np.linalg.norm(cur) > 8 * DEG:
        cur = rng.normal(0, 0.7 * DEG, 2)  # back to the main direction
      else:
        cur = np.clip(rng.normal(0, 4.0 * DEG, 2) * (1.0, 0.7), -10 * DEG, 10 * DEG)
      nxt = t[i] + rng.uniform(0.5, 3.0)
      # a saccade lasts 30-80 ms: at 25 fps sometimes one in-between frame
      if rng.random() < 0.4:
        off[i] = 0.5 * (prev + cur)
        continue
    off[i] = cur
  drift = np.stack([_ou(rng, T, fps, 0.8, 0.5 * DEG), _ou(rng, T, fps, 0.8, 0.4 * DEG)], 1)
  g = np.asarray(main, np.float64)[None, :] + off + drift
  return np.clip(g, -GAZE_LIM, GAZE_LIM)


# --- head pose -----------------------------------------------------------------------------
def pose_track(rng, T, speech: Speech, distance: float, fps=FPS, energy=None) -> np.ndarray:
  """yaw, pitch, roll (rad), tx, ty, tz (m): [T, 6]."""
  t = (np.arange(T) + 0.5) / fps
  phones = speech.phones
  speak = speaking_envelope(phones, T, fps)
  liveliness = float(np.exp(rng.normal(0.0, 0.25)))  # some people move more
  # 1) idle random motion: smooth OU per axis around a per-clip mean (mostly frontal)
  mean = np.array([rng.normal(0, 3.0), rng.normal(0, 2.0), rng.normal(0, 1.5)]) * DEG
  stds = np.array([4.5, 2.8, 2.2]) * DEG * liveliness
  taus = rng.uniform(1.2, 3.0, 3)
  ang = np.stack([_smooth(_ou(rng, T, fps, taus[k], stds[k]), 1.5) for k in range(3)], 1)
  ang += mean[None, :]
  # 2) speech-driven motion: faster, only while speaking
  sstd = np.array([2.5, 1.8, 1.4]) * DEG * liveliness
  sp = np.stack([_smooth(_ou(rng, T, fps, 0.45, sstd[k]), 1.0) for k in range(3)], 1)
  ang += sp * speak[:, None]
  # 3) nods on stressed syllables (chin down = +pitch), scaled by local loudness
  if energy is not None and energy.max() > 0:
    e_norm = energy / (np.percentile(energy[energy > 0], 95) + 1e-8)
  else:
    e_norm = np.ones(T)
  nod_amp = rng.uniform(1.0, 2.5) * DEG * liveliness
  last_nod = -10.0
  for p in phones:
    if not p.symbol.startswith("'") or p.start - last_nod < 0.35:
      continue
    if rng.random() < 0.3:  # not every stress gets a nod
      continue
    fi = min(int(p.start * fps), T - 1) if T > 0 else 0
    a = nod_amp * float(np.clip(e_norm[fi], 0.3, 1.3)) * rng.uniform(0.6, 1.2)
    w = rng.uniform(0.25, 0.45)
    ang[:, 1] += a * _bump(t, p.start - 0.35 * w, w)
    ang[:, 0] += 0.3 * a * rng.normal() * _bump(t, p.start - 0.35 * w, w)
    last_nod = p.start
  # 4) occasional larger turns (look aside and back), about one per 12 s
  n_turns = rng.poisson(T / fps / 12.0)
  for _ in range(n_turns):
    t0 = rng.uniform(-0.5, T / fps)
    w = rng.uniform(1.0, 3.0)
    ang[:, 0] += rng.normal(0, 12.0) * DEG * _bump(t, t0, w)
    ang[:, 1] += rng.normal(0, 5.0) * DEG * _bump(t, t0, w)
    ang[:, 2] += rng.normal(0, 3.0) * DEG * _bump(t, t0, w)
  ang[:, 0] = np.clip(ang[:, 0], -YAW_LIM, YAW_LIM)
  ang[:, 1] = np.clip(ang[:, 1], -PITCH_LIM, PITCH_LIM)
  ang[:, 2] = np.clip(ang[:, 2], -ROLL_LIM, ROLL_LIM)
  # translation: small sway (cm), slow drift of the distance
  tx = _smooth(_ou(rng, T, fps, 2.0, 0.012), 1.5) + rng.normal(0, 0.01)
  ty = _smooth(_ou(rng, T, fps, 2.0, 0.008), 1.5) + rng.normal(0, 0.008)
  ty += 0.04 * np.sin(ang[:, 1] - mean[1]) * 0.3  # a nod moves the head centre a bit
  tz = distance + _smooth(_ou(rng, T, fps, 4.0, 0.015), 2.0)
  tz = np.clip(tz, 0.45, 0.95)
  return np.concatenate([ang, np.stack([tx, ty, tz], 1)], 1)


def emotion_track(rng, T, controls: ClipControls, fps=FPS) -> np.ndarray:
  if controls.emotion == 0 or controls.emotion_intensity <= 0:
    return np.zeros(T, np.float32)
  x = controls.emotion_intensity + _smooth(_ou(rng, T, fps, 3.0, 0.06), 3.0)
  return np.clip(x, 0.0, 1.0).astype(np.float32)


def make_tracks(speech: Speech, T: int, controls: ClipControls, rng: np.random.Generator,
                fps: int = FPS) -> dict:
  """All ground-truth tracks for a clip of T frames (float32 arrays)."""
  T = int(T)
  if T <= 0:
    dims = {"pose": 6, "gaze": 2, "mouth": 3}
    return {k: np.zeros((0, dims[k]) if k in dims else (0,), np.float32)
            for k in ("pose", "gaze", "mouth", "blink", "emotion_intensity", "energy")}
  energy = frame_energy(speech.audio, T, speech.sample_rate, fps)
  # articulation strength varies a little between speakers / clips
  mouth = mouth_track(speech.phones, T, fps)
  mouth[:, 0] *= rng.uniform(0.85, 1.1)
  mouth[:, 1:] *= rng.uniform(0.8, 1.1)
  mouth = np.clip(mouth, 0.0, 1.0)
  pose = pose_track(rng, T, speech, controls.distance, fps, energy)
  gaze = gaze_track(rng, T, controls.gaze, fps)
  blink = blink_track(rng, T, fps)
  emo = emotion_track(rng, T, controls, fps)
  return {
      "pose": pose.astype(np.float32),
      "gaze": gaze.astype(np.float32),
      "mouth": mouth.astype(np.float32),
      "blink": blink.astype(np.float32),
      "emotion_intensity": emo.astype(np.float32),
      "energy": energy.astype(np.float32),
  }

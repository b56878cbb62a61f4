"""Emotion offsets in the geometry codes: how each of EMOTIONS moves a neutral face.

No emotion labels exist for the real footage, so the stage-2 model never learns an emotion
condition for geometry bundles. Instead each emotion is an *offset* added to the generated
dynamics codes, built from the facial actions that define it (FACS action units, as in
Ekman's prototypes), written as displacements of mesh points in the canonical frame and
projected onto the bundle's expression basis:

  happy      lip corners pulled out and up (AU12), cheeks raised (AU6), lids a little narrower
  sad        inner brows raised (AU1), lip corners down (AU15), lids a little lower
  angry      brows lowered and drawn together (AU4), lids narrowed (AU7), lips pressed (AU24)
  surprised  brows raised (AU1+2), upper lids raised (AU5), jaw dropped a little (AU26)

The speech motion is untouched: the offset moves corners, brows and lids; the lips keep
opening and closing with the audio on top of it. Each offset is kept free of any change of
the inner-lip gap (`offsets` projects that direction out): an emotion that parted the lips a
little (happy, surprised) or pressed them (sad, angry) would stop them closing, or make them
overlap, on /p b m/. Displacements are in template units (the
outer-eye-corner distance is 1), spread over the mesh with a Gaussian fall-off so the face
deforms smoothly, and scaled by an intensity in [0, 1].
"""

from __future__ import annotations

import numpy as np

from vasa_jax.constants import EMOTIONS  # noqa: E402,F401

MOUTH_CORNERS = (61, 291)
LIP_UPPER = (0, 13, 37, 267)
LIP_LOWER = (17, 14, 84, 314)
CHEEKS = (50, 280, 205, 425)
BROW_INNER = (107, 55, 336, 285, 66, 296)
BROW_OUTER = (70, 46, 300, 276, 63, 293)
BROW_ALL = BROW_INNER + BROW_OUTER + (105, 52, 65, 334, 282, 295, 53, 283)
LIP_CENTRES = (13, 14)  # upper / lower inner lip centre
JAW = (152, 148, 377, 176, 400, 149, 378, 18, 200, 175)
FALLOFF = 0.07      # template units: the Gaussian radius a control point's pull spreads over

# per emotion: [(points, (outward, down) displacement)], lid openness change (both eyes)
_ACTIONS = {
    "happy": ([(MOUTH_CORNERS, (0.08, -0.10)), (CHEEKS, (0.0, -0.04))], -0.04),
    "sad": ([(MOUTH_CORNERS, (-0.02, 0.08)), (BROW_INNER, (-0.02, -0.08)),
             (BROW_OUTER, (0.0, 0.02))], -0.05),
    "angry": ([(BROW_ALL, (0.0, 0.06)), (BROW_INNER, (-0.05, 0.035)),
               (LIP_UPPER, (0.0, 0.02)), (LIP_LOWER, (0.0, -0.02))], -0.07),
    "surprised": ([(BROW_ALL, (0.0, -0.10)), (JAW + LIP_LOWER, (0.0, 0.06))], 0.08),
}


def displacement(template: np.ndarray, emotion: str) -> np.ndarray:
  """[N, 3] canonical-frame displacement of the mesh for `emotion` at full intensity.

  "outward" is away from the face's midline (x sign of the point), "down" is +y."""
  t = np.asarray(template, np.float64)
  n = t.shape[0]
  actions, _ = _ACTIONS.get(emotion, ([], 0.0))
  centre_x = np.median(t[:, 0])
  out = np.zeros((n, 3))
  weight = np.zeros(n)
  for points, (dx, dy) in actions:
    for p in points:
      side = np.sign(t[p, 0] - centre_x)
      w = np.exp(-np.sum((t[:, :2] - t[p, :2]) ** 2, -1) / (2 * FALLOFF ** 2))
      out[:, 0] += w * dx * side
      out[:, 1] += w * dy
      weight += w
  # overlapping pulls average rather than add (a dense group of points moves as one)
  out /= np.maximum(weight, 1.0)[:, None]
  return out


def offsets(basis) -> np.ndarray:
  """[len(EMOTIONS), dyn_dim] offsets of the dynamics codes (expression coefficients, lids;
  gaze untouched) of each emotion at full intensity; row 0 (neutral) is zero."""
  k = basis.exp_dim
  flat = np.asarray(basis.exp_basis, np.float64).reshape(k, -1)
  gap = inner_gap_direction(basis)
  rows = np.zeros((len(EMOTIONS), basis.dyn_dim), np.float32)
  for i, name in enumerate(EMOTIONS):
    if name == "neutral":
      continue
    d = displacement(basis.template, name)
    c = flat @ d.reshape(-1)                     # the basis is orthonormal
    rows[i, :k] = c - (gap @ c) / (gap @ gap) * gap
    rows[i, k:k + 2] = _ACTIONS[name][1]
  return rows


def inner_gap_direction(basis) -> np.ndarray:
  """[exp_dim]: the inner-lip gap change (lower minus upper inner lip centre, template units,
  +: parted) per unit of each expression coefficient."""
  e = np.asarray(basis.exp_basis, np.float64)
  return e[:, LIP_CENTRES[1], 1] - e[:, LIP_CENTRES[0], 1]

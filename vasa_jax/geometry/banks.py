"""Banks of real content that a single photo does not show: the inside of an open mouth (teeth,
tongue, the dark cavity) and closed eyelids, cut from real footage whose licence allows
bundling, kept in canonical frames with shape descriptors.

A portrait shows its lips closed and its eyes open. What the lips uncover when they part, and
what a lid looks like when it is shut, differ from person to person and from frame to frame; a
network trained with pixel losses to invent them settles on their average (a pale smear). So
they are copied from real mouths and real lids instead:

    bank = PartBank.load(path)                       # shipped in the bundle (part_bank.npz)
    donor = bank.choose_donor(crop, points, basis)   # one donor per video: one set of teeth
    ref = MouthReference(bank, donor, crop, points)  # its entries, lit like the portrait
    idx = ref.select(driving_meshes)                 # per frame, smoothed over time (Viterbi)
    rgb, alpha, box = ref.render(idx[t], driving_mesh_px, scale)   # warped onto the contour

Mouth entries live in a canonical frame of the face: the head's in-plane rotation and scale
removed (`MOUTH_PX` entry pixels per template unit, the outer eye-corner distance), the origin at
the midpoint of the inner-lip corners. Each keeps its inner-lip contour (the outline of the
opening in entry pixels), a shape descriptor (that contour in the pose-free canonical frame of
the face mesh) and how much of the upper and lower teeth show. Outside the opening an entry is
filled outward from the opening's own pixels, so the donor's lips never show wherever the
driving contour puts the opening.

Lid entries are the eye region of real blink frames (both eyes, the second one mirrored), in the
frame of the eye corners (`LID_PX` entry pixels per eye width), with their lid contour.

`build` cuts them from tracked videos; `PartBank.save` refuses a bank whose donors do not all
name their source and licence, and writes the attribution next to it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Iterable, Sequence

import cv2
import numpy as np

from vasa_jax.errors import InputError
from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry.flow import INNER_LIPS, OUTER_LIPS
from vasa_jax.geometry.landmarks import EYE_A_RING, EYE_B_RING

log = logging.getLogger(__name__)

__all__ = ["PartBank", "MouthReference", "LidReference", "build", "BANK_FILE",
           "ATTRIBUTION_FILE", "BUNDLE_LICENCES", "INNER", "cut_mouth", "cut_lid",
           "mouth_descriptors", "BankError", "skin_lab"]

BANK_FILE = "part_bank.npz"
ATTRIBUTION_FILE = "PART_BANK_ATTRIBUTION.md"
BUNDLE_LICENCES = ("MIT", "Apache-2.0", "CC BY 4.0")
FORMAT = "vasa-jax-part-bank"
VERSION = 1

# Inner-lip contour: upper lip corner to corner (11 points), then the lower lip back (9).
INNER = INNER_LIPS
UPPER_MID = (1, 2, 3, 4, 5, 6, 7, 8, 9)      # contour indices of the upper lip between corners
LOWER_MID = (11, 12, 13, 14, 15, 16, 17, 18, 19)
CHEEKS = (50, 280, 101, 330, 36, 266)

MOUTH_PX = 192.0                          # entry pixels per template unit
WIDTH_RANGE = (0.8, 1.3)                  # how far an entry's width may follow the driving
GOOD_DONOR = {"iod_px": 110.0, "entries": 12, "teeth": 0.05, "dark": 0.3}
RIGID = 0.35                              # share of an entry's gap kept rigid with each lip
OPEN_FADE = (0.004, 0.02)                 # inner-lip gap beyond the portrait's (eye distances)
                                          # over which a donor interior fades in
MOUTH_BOX = (-0.42, 0.42, -0.22, 0.50)    # x0, x1, y0, y1 (template units) about the corners
LID_PX = 80.0                             # lid entry pixels per eye width
LID_BOX = (-0.85, 0.85, -0.70, 0.45)      # x0, x1, y0, y1 (eye widths) about the corners
EYES = ((33, 133, EYE_A_RING, False), (263, 362, EYE_B_RING, True))  # outer, inner, outline, flip


class BankError(InputError):
  """A part bank that is missing, unreadable or lacks its attribution (one line)."""


def _size(box, px) -> tuple[int, int]:
  return int(round((box[1] - box[0]) * px)), int(round((box[3] - box[2]) * px))


MOUTH_SIZE = _size(MOUTH_BOX, MOUTH_PX)    # (W, H)
LID_SIZE = _size(LID_BOX, LID_PX)


# ----------------------------------------------------------------------------- frames

def _rigid_weights():
  w = np.zeros(478)
  w[list(codes_lib.RIGID)] = 1.0
  return w


def skull(points: np.ndarray, template: np.ndarray):
  """(scale [B], roll [B], canonical [B, N, 3]) of meshes [B, N, 3] (pixels): the rigid fit's
  scale (pixels per template unit), the in-plane angle of the template's x axis in the image,
  and the mesh with the pose removed (template units)."""
  p = np.asarray(points, np.float64)
  if p.ndim == 2:
    p = p[None]
  s, r, t = codes_lib.fit_similarity(template, p, _rigid_weights())
  roll = np.arctan2(r[:, 1, 0], r[:, 0, 0])
  can = np.einsum("bji,bnj->bni", r, p - t[:, None]) / s[:, None, None]
  return s, roll, can


def _frame(origin, scale_px, angle, px, box) -> np.ndarray:
  """2x3 map from entry coordinates (continuous pixels of the entry) to image coordinates."""
  c, s = math.cos(angle), math.sin(angle)
  lin = (scale_px / px) * np.array([[c, -s], [s, c]])
  q0 = np.array([-box[0] * px, -box[2] * px])
  return np.concatenate([lin, (np.asarray(origin, np.float64) - lin @ q0)[:, None]], 1)


def _invert(a: np.ndarray) -> np.ndarray:
  lin = np.linalg.inv(a[:, :2])
  return np.concatenate([lin, (-lin @ a[:, 2])[:, None]], 1)


def _apply(a: np.ndarray, p: np.ndarray) -> np.ndarray:
  return np.asarray(p, np.float64)[..., :2] @ a[:, :2].T + a[:, 2]


def sample(image: np.ndarray, a: np.ndarray, size: tuple[int, int], flip: bool = False,
           interp=cv2.INTER_AREA) -> np.ndarray:
  """The entry [H, W, C] whose continuous coordinates map to `image` by a (2x3). INTER_AREA is
  not a valid remap filter; a larger source is pre-blurred by its footprint instead (only the
  region the entry covers)."""
  w, h = size
  a = np.array(a, np.float64)
  if flip:    # entry x -> W - x
    a = a @ np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]])
  lin = a[:, :2]
  shrink = math.sqrt(abs(np.linalg.det(lin)))      # image pixels per entry pixel
  corners = _apply(a, np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64))
  pad = int(math.ceil(2 * shrink)) + 2
  ih, iw = image.shape[:2]
  x0, y0 = np.clip(np.floor(corners.min(0)).astype(int) - pad, 0, [iw - 1, ih - 1])
  x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + pad, [x0 + 1, y0 + 1], [iw, ih])
  src = image[y0:y1, x0:x1]
  if interp == cv2.INTER_AREA and shrink > 1.5:
    k = int(2 * round(shrink * 0.6) + 1)
    src = cv2.GaussianBlur(src, (k, k), shrink * 0.45)
  off = a[:, 2] - np.array([x0, y0], np.float64)
  m = np.concatenate([lin, (off + lin @ np.array([0.5, 0.5]) - 0.5)[:, None]], 1)
  return cv2.warpAffine(np.ascontiguousarray(src), m, (w, h),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)


def polygon_mask(points: np.ndarray, shape: tuple[int, int], supersample: int = 4
                 ) -> np.ndarray:
  """float32 [h, w] coverage in [0, 1] of a polygon given in continuous pixel coordinates
  (anti-aliased by supersampling)."""
  h, w = shape
  k = int(supersample)
  m = np.zeros((h * k, w * k), np.uint8)
  pts = np.round(np.asarray(points, np.float64)[:, :2] * k * 16).astype(np.int32)
  cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_8, shift=4)
  if k > 1:
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
  return m.astype(np.float32) / 255.0


def fill_outward(img: np.ndarray, valid: np.ndarray, levels: int = 6) -> np.ndarray:
  """`img` [H, W, C] float with the pixels where `valid` [H, W] is 0 filled from the valid ones
  (push-pull: masked averages down a pyramid, filled back up)."""
  img = img.astype(np.float32)
  w = valid.astype(np.float32)[..., None]
  pyr = [(img * w, w)]
  for _ in range(levels):
    a, b = pyr[-1]
    if min(a.shape[:2]) < 4:
      break
    a2 = cv2.pyrDown(a)
    b2 = cv2.pyrDown(b[..., 0])[..., None]
    if a2.ndim == 2:
      a2 = a2[..., None]
    pyr.append((a2, b2))
  a, b = pyr[-1]
  cur = a / np.maximum(b, 1e-6)
  for a, b in reversed(pyr[:-1]):
    up = cv2.resize(cur, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:
      up = up[..., None]
    own = a / np.maximum(b, 1e-6)
    wt = np.clip(b * 4.0, 0.0, 1.0)
    cur = wt * own + (1.0 - wt) * up
  wv = w
  return img * wv + cur * (1.0 - wv)


def _luma(rgb: np.ndarray) -> np.ndarray:
  x = rgb.astype(np.float32)
  return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _lab(rgb: np.ndarray) -> np.ndarray:
  """OpenCV 8-bit Lab (float32) of RGB values of any shape [..., 3]."""
  x = np.clip(rgb, 0, 255).astype(np.uint8)
  return cv2.cvtColor(x.reshape(1, -1, 3), cv2.COLOR_RGB2LAB).reshape(x.shape).astype(np.float32)


def skin_lab(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(median Lab of the cheeks, median Lab of the lips) of a face (OpenCV 8-bit Lab)."""
  p = np.asarray(points, np.float64)[:, :2]
  h, w = image.shape[:2]
  face_h = float(np.linalg.norm(p[152] - p[10])) + 1e-6
  rad = max(2, int(0.03 * face_h))
  cheek = []
  for i in CHEEKS:
    x, y = p[i].astype(int)
    cheek.append(image[max(y - rad, 0):max(y + rad, 1), max(x - rad, 0):max(x + rad, 1)]
                 .reshape(-1, 3))
  cheek = np.concatenate(cheek)
  if len(cheek) == 0:
    cheek = image.reshape(-1, 3)
  m_out = polygon_mask(p[list(OUTER_LIPS)], (h, w), 1) > 0.5
  m_in = polygon_mask(p[list(INNER)], (h, w), 1) > 0.5
  lips = image[m_out & ~m_in]
  if len(lips) < 4:
    lips = cheek
  return np.median(_lab(cheek), 0), np.median(_lab(lips), 0)


# ----------------------------------------------------------------------------- cutting

def _gap(points: np.ndarray) -> float:
  """Inner-lip gap of a face (points 13 / 14) in eye-corner distances."""
  p = np.asarray(points, np.float64)
  return float(np.linalg.norm(p[14, :2] - p[13, :2])
               / max(np.linalg.norm(p[263, :2] - p[33, :2]), 1e-6))


def mouth_descriptors(canonical: np.ndarray) -> np.ndarray:
  """[B, 40] shape descriptors of canonical meshes [B, N, 3]: the inner-lip contour (x, y in
  template units) about the midpoint of its corners."""
  c = np.asarray(canonical, np.float64)[:, list(INNER), :2]
  mid = (c[:, 0] + c[:, 10]) / 2
  return (c - mid[:, None]).reshape(len(c), -1).astype(np.float32)


FACING = ((1, 19), (2, 18), (3, 17), (4, 16), (5, 15), (6, 14), (7, 13), (8, 12), (9, 11))


def _opening(desc: np.ndarray) -> np.ndarray:
  """[B, 9] vertical gaps between facing upper / lower inner-lip points of descriptors."""
  d = np.asarray(desc).reshape(len(desc), 20, 2)
  up, lo = (list(x) for x in zip(*FACING))
  return d[:, lo, 1] - d[:, up, 1]


def mouth_frame(points: np.ndarray, scale: float, roll: float) -> np.ndarray:
  """2x3 map from mouth-entry coordinates to the image of a face (points in pixels)."""
  p = np.asarray(points, np.float64)
  o = (p[INNER[0], :2] + p[INNER[10], :2]) / 2
  return _frame(o, scale, roll, MOUTH_PX, MOUTH_BOX)


def teeth_mask(rgb: np.ndarray, skin_luma: float) -> np.ndarray:
  """Bright, pale pixels (teeth) relative to the cheeks' luminance: the judge's definition."""
  hsv = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
  return (_luma(rgb) >= 0.8 * skin_luma) & (hsv[..., 1].astype(np.float32) / 255.0 < 0.3)


def cut_mouth(image: np.ndarray, points: np.ndarray, template: np.ndarray,
              erode: float = 0.012) -> dict:
  """One mouth entry from a frame: image uint8 [H, W, 3], its mesh points [478, 3+] (pixels).

  Returns {"patch" uint8 [H, W, 3] (outside the opening filled from it), "contour" [20, 2]
  (entry pixels), "desc" [40], "gap" (canonical inner-lip gap), "teeth" [2] (share of the
  upper / lower half of the opening that is teeth), "dark" (share of the cavity darker than
  0.45 x the cheeks), "sharp" (variance of the Laplacian inside)}."""
  s, roll, can = skull(points, template)
  a = mouth_frame(points, float(s[0]), float(roll[0]))
  w, h = MOUTH_SIZE
  patch = sample(image, a, (w, h))
  contour = _apply(_invert(a), np.asarray(points, np.float64)[list(INNER)])
  inside = polygon_mask(contour, (h, w)) > 0.5
  k = max(1, int(round(erode * MOUTH_PX)))
  core = cv2.erode(inside.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
  if core.sum() < 8:
    core = inside
  filled = fill_outward(patch.astype(np.float32), core)
  # away from the opening the fill darkens to the cavity's own dark colour: where the driving
  # opening reaches past the donor's (the corners), it shows shadow, not the donor's lips
  skin, _ = skin_lab(image, points)
  skin_y = float(skin[0])                        # 8-bit Lab L ~ luma scale
  lum = _luma(patch)[core]
  if lum.size >= 4:
    dark_rgb = np.median(patch[core][lum <= np.percentile(lum, 10)], 0).astype(np.float32)
    y = float(_luma(dark_rgb[None])[0])
    if y > 0.3 * skin_y:                         # no cavity shows (teeth, tongue): a shadow
      dark_rgb *= 0.3 * skin_y / max(y, 1.0)
    dist = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, 3)
    t = np.clip(dist / 4.0, 0.0, 1.0)[..., None]
    filled = filled * (1 - t) + dark_rgb * t
  teeth = teeth_mask(patch, skin_y * 0.92) & inside
  ys = np.nonzero(inside)[0]
  mid = (contour[list(UPPER_MID), 1].mean() + contour[list(LOWER_MID), 1].mean()) / 2
  upper = inside & (np.arange(h)[:, None] < mid)
  lower = inside & ~upper
  share = [float(teeth[m].mean()) if m.any() else 0.0 for m in (upper, lower)]
  dark = float((_luma(patch)[inside] < 0.45 * skin_y * 0.92).mean()) if ys.size else 0.0
  lap = cv2.Laplacian(_luma(patch), cv2.CV_32F)
  sharp = float(lap[inside].var()) if ys.size else 0.0
  c = can[0]
  return {"patch": np.clip(filled + 0.5, 0, 255).astype(np.uint8),
          "contour": contour.astype(np.float32),
          "desc": mouth_descriptors(can)[0], "gap": float(c[14, 1] - c[13, 1]),
          "teeth": np.asarray(share, np.float32), "dark": dark, "sharp": sharp}


def lid_frame(points: np.ndarray, eye: int) -> tuple[np.ndarray, bool]:
  """(2x3 map from lid-entry coordinates to the image, flip) of eye 0 (corners 33/133) or 1
  (263/362, mirrored so that both eyes' entries have the outer corner on the left)."""
  outer, inner, _, flip = EYES[eye]
  p = np.asarray(points, np.float64)[:, :2]
  d = p[inner] - p[outer] if not flip else p[outer] - p[inner]
  width = float(np.hypot(*d))
  angle = math.atan2(d[1], d[0])
  o = (p[outer] + p[inner]) / 2
  return _frame(o, width, angle, LID_PX, LID_BOX), flip


def cut_lid(image: np.ndarray, points: np.ndarray, eye: int) -> dict:
  """One closed-lid entry: {"patch" uint8 [H, W, 3], "contour" [16, 2] entry pixels}."""
  a, flip = lid_frame(points, eye)
  w, h = LID_SIZE
  patch = sample(image, a, (w, h), flip=flip)
  contour = _apply(_invert(a), np.asarray(points, np.float64)[list(EYES[eye][2])])
  if flip:
    contour[:, 0] = w - contour[:, 0]
  return {"patch": patch, "contour": contour.astype(np.float32)}


# ----------------------------------------------------------------------------- the bank

def _jpeg(img: np.ndarray, quality: int = 90) -> bytes:
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
  if not ok:
    raise BankError("cannot encode a bank entry")
  return buf.tobytes()


def _unjpeg(b) -> np.ndarray:
  img = cv2.imdecode(np.frombuffer(bytes(b), np.uint8), cv2.IMREAD_COLOR)
  if img is None:
    raise BankError("a bank entry does not decode")
  return np.ascontiguousarray(img[..., ::-1])


def _pack(blobs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
  offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
  return np.frombuffer(b"".join(blobs), np.uint8).copy(), offsets


REQUIRED_DONOR_KEYS = ("name", "file", "source_repo", "source_path", "license")


@dataclasses.dataclass
class PartBank:
  """Mouth interiors and closed lids of real donors (see the module docstring)."""
  donors: list                 # per donor: name, file(s), source_repo, source_path, license,
                               # skin_lab [3], lip_lab [3], iod_px
  mouth_jpeg: np.ndarray       # uint8 concatenated JPEG bytes
  mouth_offsets: np.ndarray    # [N + 1]
  mouth_donor: np.ndarray      # [N] int
  mouth_order: np.ndarray      # [N] int: frame number within its donor (playback adjacency)
  mouth_contour: np.ndarray    # [N, 20, 2] entry pixels
  mouth_desc: np.ndarray       # [N, 40]
  mouth_teeth: np.ndarray      # [N, 2]
  mouth_dark: np.ndarray       # [N]
  lid_jpeg: np.ndarray
  lid_offsets: np.ndarray      # [M + 1]
  lid_donor: np.ndarray        # [M]
  lid_contour: np.ndarray      # [M, 16, 2]

  def __post_init__(self):
    self._cache: dict = {}      # decoded entries that do not depend on the portrait

  def __len__(self) -> int:
    return len(self.mouth_donor)

  @property
  def num_lids(self) -> int:
    return len(self.lid_donor)

  def mouth_patch(self, i: int) -> np.ndarray:
    o = self.mouth_offsets
    return _unjpeg(self.mouth_jpeg[o[i]:o[i + 1]])

  def lid_patch(self, i: int) -> np.ndarray:
    o = self.lid_offsets
    return _unjpeg(self.lid_jpeg[o[i]:o[i + 1]])

  def check_attribution(self) -> None:
    """BankError unless every donor names its source and a licence that allows bundling."""
    if not self.donors:
      raise BankError("the part bank has no donors")
    for d in self.donors:
      missing = [k for k in REQUIRED_DONOR_KEYS if not str(d.get(k, "")).strip()]
      if missing:
        raise BankError(f"part bank donor {d.get('name', '?')!r} has no attribution "
                        f"({', '.join(missing)} missing)")
      if d["license"] not in BUNDLE_LICENCES:
        raise BankError(f"part bank donor {d['name']!r} has licence {d['license']!r}, which "
                        f"does not allow bundling ({', '.join(BUNDLE_LICENCES)})")

  def attribution_markdown(self) -> str:
    lines = ["# Part bank: where its real mouths and lids come from", "",
             "Mouth interiors and closed eyelids cut from these real clips (the project's "
             "`../shared/real`, INVENTORY.tsv), kept under their licences. Each was tracked with "
             "the face mesh; open-mouth and blink frames were cut in a canonical frame of the face, "
             "re-encoded as JPEG; nothing else was changed.", "",
             "| donor | file | source repository | source path | licence | mouth entries | "
             "lid entries |", "|---|---|---|---|---|---|---|"]
    for k, d in enumerate(self.donors):
      lines.append(f"| {d['name']} | {d['file']} | {d['source_repo']} | {d['source_path']} | "
                   f"{d['license']} | {int((self.mouth_donor == k).sum())} | "
                   f"{int((self.lid_donor == k).sum())} |")
    return "\n".join(lines) + "\n"

  def save(self, folder: str) -> str:
    """Writes BANK_FILE and ATTRIBUTION_FILE into folder; refuses a bank without attribution."""
    self.check_attribution()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, BANK_FILE)
    meta = {"format": FORMAT, "version": VERSION, "donors": self.donors,
            "mouth_px": MOUTH_PX, "mouth_box": MOUTH_BOX, "lid_px": LID_PX, "lid_box": LID_BOX}
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
      np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
               **{k.name: getattr(self, k.name) for k in dataclasses.fields(self)
                  if k.name != "donors"})
    os.replace(tmp, path)
    with open(os.path.join(folder, ATTRIBUTION_FILE), "w") as f:
      f.write(self.attribution_markdown())
    return path

  @classmethod
  def load(cls, folder_or_file: str) -> "PartBank":
    path = folder_or_file
    if os.path.isdir(path):
      path = os.path.join(path, BANK_FILE)
    if not os.path.isfile(path):
      raise BankError(f"part bank not found: {path}")
    folder = os.path.dirname(path)
    if not os.path.isfile(os.path.join(folder, ATTRIBUTION_FILE)):
      raise BankError(f"{path}: its attribution ({ATTRIBUTION_FILE}) is missing")
    try:
      with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        arrays = {k.name: np.asarray(z[k.name]) for k in dataclasses.fields(cls)
                  if k.name != "donors"}
    except (OSError, ValueError, KeyError) as e:
      raise BankError(f"{path} is not a part bank: {e}") from None
    if meta.get("format") != FORMAT or int(meta.get("version", -1)) > VERSION:
      raise BankError(f"{path}: unsupported part bank format")
    if (tuple(meta["mouth_box"]) != MOUTH_BOX or float(meta["mouth_px"]) != MOUTH_PX
        or tuple(meta["lid_box"]) != LID_BOX or float(meta["lid_px"]) != LID_PX):
      raise BankError(f"{path}: entries in another canonical frame than this vasa-jax uses")
    bank = cls(donors=list(meta["donors"]), **arrays)
    bank.check_attribution()
    return bank

  # -- per video
  def mouth_detail(self, donor: int) -> float:
    """How crisp a donor's mouths are: the median over its entries of the mean gradient of
    luma inside the opening, over its cheeks' lightness, in entry pixels (one scale for every
    donor, so a donor filmed small or blurred scores low). Computed once per donor."""
    if "mouth_detail" in self.donors[donor]:
      return float(self.donors[donor]["mouth_detail"])
    cache = self._cache.setdefault("detail", {})
    if donor not in cache:
      vals = []
      ref = max(float(self.donors[donor]["skin_lab"][0]) / 255.0, 1e-3)
      for i in np.flatnonzero(self.mouth_donor == donor):
        y = _luma(self.mouth_patch(i).astype(np.float32) / 255.0)
        inside = polygon_mask(self.mouth_contour[i], y.shape) > 0.5
        inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if inside.sum() >= 20:
          gy, gx = np.gradient(y)
          vals.append(float(np.hypot(gx, gy)[inside].mean()) / ref)
      cache[donor] = float(np.median(vals)) if vals else 0.0
    return cache[donor]

  def reach(self, donor: int) -> float:
    """How far a donor's mouths open: the 90th percentile over its entries of the widest gap
    between facing inner-lip points (eye distances)."""
    m = self.mouth_donor == donor
    if not m.any():
      return 0.0
    return float(np.percentile(_opening(self.mouth_desc[m]).max(-1), 90))

  def good_donors(self) -> list[int]:
    """Donors fit to serve a video: a face large enough in their clips (`GOOD_DONOR` iod_px),
    enough mouth entries, mouths that show both teeth and a dark cavity on average and that
    open at least as far as the bank's typical speaker (`reach` at least the median over
    donors: a donor that rarely opens has to be stretched over every wide vowel), and of those
    the ones whose mouths are at least as crisp as their average (`mouth_detail`: a soft donor
    gives soft teeth on every portrait it serves). All donors if none qualifies."""
    if "good" in self._cache:
      return list(self._cache["good"])
    have = [k for k in range(len(self.donors))
            if (self.mouth_donor == k).sum() >= GOOD_DONOR["entries"]]
    typical = float(np.median([self.reach(k) for k in have])) if have else 0.0
    out = []
    for k in have:
      m = self.mouth_donor == k
      d = self.donors[k]
      if (d.get("iod_px", 0) >= GOOD_DONOR["iod_px"]
          and self.mouth_teeth[m].mean() >= GOOD_DONOR["teeth"]
          and self.mouth_dark[m].mean() >= GOOD_DONOR["dark"]
          and self.reach(k) >= typical):
        out.append(k)
    if len(out) > 1:
      detail = {k: self.mouth_detail(k) for k in out}
      mean = float(np.mean(list(detail.values())))
      out = [k for k in out if detail[k] >= mean]
    out = out or [k for k in range(len(self.donors)) if (self.mouth_donor == k).any()]
    self._cache["good"] = out
    return list(out)

  def choose_donor(self, crop: np.ndarray, points: np.ndarray) -> int:
    """Of the good donors, the one whose skin and lips match the portrait's best (chroma in
    Lab; the lightness is matched by `colour_transfer` anyway, so it counts a quarter)."""
    skin, lip = skin_lab(crop, points)
    best, best_cost = 0, np.inf
    for k in self.good_donors():
      d = self.donors[k]
      ds, dl = np.asarray(d["skin_lab"], np.float32), np.asarray(d["lip_lab"], np.float32)
      cost = (np.linalg.norm(skin[1:] - ds[1:]) + np.linalg.norm(lip[1:] - dl[1:])
              + 0.25 * abs(float(skin[0] - ds[0])))
      if cost < best_cost:
        best, best_cost = k, cost
    return best


# ----------------------------------------------------------------------------- runtime: mouth

def _smoothstep(a: float, b: float, x):
  t = np.clip((x - a) / (b - a), 0.0, 1.0)
  return t * t * (3 - 2 * t)


def colour_transfer(patch: np.ndarray, src_skin: np.ndarray, dst_skin: np.ndarray,
                    chroma: float = 0.5) -> np.ndarray:
  """A donor entry lit like the portrait: Lab lightness scaled by the cheeks' ratio, chroma
  shifted by part of the cheeks' difference (teeth stay pale)."""
  lab = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_RGB2LAB).astype(np.float32)
  gain = float(np.clip(dst_skin[0] / max(float(src_skin[0]), 1.0), 0.5, 1.8))
  lab[..., 0] *= gain
  lab[..., 1:] += chroma * (np.asarray(dst_skin[1:], np.float32)
                            - np.asarray(src_skin[1:], np.float32))
  return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


class MouthReference:
  """The chosen donor's mouth entries for one portrait: selection over time and the warp onto a
  driving inner-lip contour. With `self_entry` (a portrait showing its own teeth) the portrait's
  own mouth is the only entry."""

  def __init__(self, bank: PartBank | None, donor: int | None, crop: np.ndarray,
               points: np.ndarray, template: np.ndarray, *, self_entry: dict | None = None):
    self.template = np.asarray(template, np.float64)
    if self_entry is not None:
      self.patches = [self_entry["patch"].astype(np.float32)]
      self.contours = self_entry["contour"][None].astype(np.float64)
      self.desc = self_entry["desc"][None].astype(np.float32)
      self.order = np.zeros(1, np.int64)
      self.donor = -1
    else:
      if bank is None or donor is None:
        raise ValueError("a mouth reference needs a bank and a donor, or a self entry")
      idx = np.flatnonzero(bank.mouth_donor == donor)
      if idx.size == 0:
        raise BankError(f"part bank donor {donor} has no mouth entries")
      skin, _ = skin_lab(crop, points)
      d = bank.donors[donor]
      self.patches = [colour_transfer(bank.mouth_patch(i), np.asarray(d["skin_lab"]), skin
                                      ).astype(np.float32) for i in idx]
      self.contours = bank.mouth_contour[idx].astype(np.float64)
      self.desc = bank.mouth_desc[idx].astype(np.float32)
      self.order = bank.mouth_order[idx].astype(np.int64)
      self.donor = int(donor)
    self.entries = len(self.patches)
    self.own_gap = 0.0 if self_entry is not None else _gap(points)
    self._state: int | None = None
    self._darks: dict = {}

  @classmethod
  def for_portrait(cls, bank: PartBank | None, crop: np.ndarray, points: np.ndarray,
                   template: np.ndarray, *, own_min_gap: float = 0.06,
                   own_min_teeth: float = 0.08) -> "MouthReference | None":
    """The portrait's own mouth when it shows teeth (it is its own donor), else the bank's best
    donor; None without a bank."""
    own = cut_mouth(crop, points, template)
    if own["gap"] >= own_min_gap and float(own["teeth"].max()) >= own_min_teeth:
      return cls(None, None, crop, points, template, self_entry=own)
    if bank is None or len(bank) == 0:
      return None
    return cls(bank, bank.choose_donor(crop, points), crop, points, template)

  # -- selection
  def costs(self, meshes: np.ndarray) -> np.ndarray:
    """[T, N] distance of driving meshes [T, 478, 3] (pixels) to every entry: the contour's
    shape (RMS, in 2% of the eye distance) plus its opening profile (the gaps between facing
    upper and lower points, RMS, in 1% of the eye distance: how far the lips part, where)."""
    _, _, can = skull(meshes, self.template)
    d = mouth_descriptors(can)
    diff = d[:, None, :] - self.desc[None]
    shape = np.sqrt((diff ** 2).mean(-1)) / 0.02
    gd, ge = _opening(d), _opening(self.desc)
    return shape + np.sqrt(((gd[:, None] - ge[None]) ** 2).mean(-1)) / 0.01

  def select(self, meshes: np.ndarray, *, switch: float = 1.5, reset: bool = False) -> np.ndarray:
    """Entry index per frame for driving meshes [T, 478, 3]: the shape cost plus `switch` for
    each change of entry (none for the next frame of the same donor clip), minimised over the
    whole window (Viterbi). Consecutive calls continue from the last chosen entry (windows of
    a stream); reset=True starts afresh."""
    c = self.costs(meshes)
    t, n = c.shape
    if n == 1:
      return np.zeros(t, np.int64)
    trans = np.full((n, n), switch, np.float64)
    np.fill_diagonal(trans, 0.0)
    nxt = np.flatnonzero(np.diff(self.order) == 1)
    trans[nxt, nxt + 1] = 0.25 * switch
    start = np.zeros(n)
    if self._state is not None and not reset:
      start = trans[self._state].copy()
    score = start + c[0]
    back = np.zeros((t, n), np.int64)
    for k in range(1, t):
      tot = score[:, None] + trans
      back[k] = np.argmin(tot, 0)
      score = tot[back[k], np.arange(n)] + c[k]
    path = np.zeros(t, np.int64)
    path[-1] = int(np.argmin(score))
    for k in range(t - 1, 0, -1):
      path[k - 1] = back[k, path[k]]
    self._state = int(path[-1])
    return path

  def reset(self) -> None:
    self._state = None

  # -- warping
  @staticmethod
  def roi(mesh_px: np.ndarray, shape: tuple[int, int], margin: int = 2):
    """(x0, y0, x1, y1) of the driving opening in an image of `shape` (mesh in its pixels),
    or None where the lips are closed."""
    cont = np.asarray(mesh_px, np.float64)[list(INNER), :2]
    area = 0.5 * abs(np.dot(cont[:, 0], np.roll(cont[:, 1], 1))
                     - np.dot(cont[:, 1], np.roll(cont[:, 0], 1)))
    if area < 1.0:
      return None
    h, w = shape
    lo = np.floor(cont.min(0) - margin).astype(int)
    hi = np.ceil(cont.max(0) + margin).astype(int)
    x0, y0, x1, y1 = max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)
    if x1 <= x0 or y1 <= y0:
      return None
    return x0, y0, x1, y1

  def render(self, index: int, mesh_px: np.ndarray, out_map: np.ndarray,
             size: tuple[int, int], *, offset: np.ndarray | None = None, feather: float = 0.5):
    """(rgb float32 [h, w, 3] in 0-255, alpha float32 [h, w]) of entry `index` warped onto the
    driving inner-lip contour of `mesh_px` [478, 3+] (pixels of some image), sampled on an output
    grid of `size` (w, h) whose continuous coordinates map into that image by `out_map` (2x3:
    a translation for an ROI, `render.part_matrix` for a decoder patch). `offset` [h, w, 2]
    (image pixels) moves where each output pixel samples the reference (a learned correction).

    Upper teeth keep their size and hang from the upper lip (the head's own rotation and scale),
    lower teeth stand on the lower lip (the jaw); between them the cavity stretches.
    Alpha covers the driving opening (anti-aliased, feathered by `feather` output pixels)."""
    mesh = np.asarray(mesh_px, np.float64)
    cont = mesh[list(INNER), :2]
    w, h = size
    s, roll, _ = skull(mesh[None], self.template)
    ent = self.contours[index]
    # the entry's width follows the driving mouth's within WIDTH_RANGE (heights stay rigid)
    wd = float(np.linalg.norm(cont[10] - cont[0])) / max(float(s[0]), 1e-6)
    we = float(np.linalg.norm(ent[10] - ent[0])) / MOUTH_PX
    kx = float(np.clip(wd / max(we, 1e-6), *WIDTH_RANGE))
    up_a = self._fit(ent[list(UPPER_MID)], cont[list(UPPER_MID)], float(s[0]), float(roll[0]), kx)
    lo_a = self._fit(ent[list(LOWER_MID)], cont[list(LOWER_MID)], float(s[0]), float(roll[0]), kx)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pix = _apply(np.asarray(out_map, np.float64), np.stack([xs + 0.5, ys + 0.5], -1))
    if offset is not None:
      pix = pix + offset
    # vertical position between the driving upper and lower lip, in the head's frame
    c, sn = math.cos(-roll[0]), math.sin(-roll[0])
    rot = np.array([[c, -sn], [sn, c]])
    cl = cont @ rot.T
    pl = pix @ rot.T
    up_c = cl[:11][np.argsort(cl[:11, 0])]
    lo_c = np.concatenate([cl[10:], cl[:1]])
    lo_c = lo_c[np.argsort(lo_c[:, 0])]
    yu = np.interp(pl[..., 0], up_c[:, 0], up_c[:, 1])
    yl = np.interp(pl[..., 0], lo_c[:, 0], lo_c[:, 1])
    t = (pl[..., 1] - yu) / np.maximum(yl - yu, 1e-3)
    # The upper part of the opening shows the entry's upper part (upper teeth, at the head's
    # scale under the upper lip), the lower part its lower part (lower teeth, over the lower
    # lip), each column aligned on its own lip. Where the lips part less than the entry's, the
    # two halves are cut at the midline. Where they part wider, the bands next to each lip keep
    # RIGID of the entry's own gap and the entry's middle (cavity, tongue) stretches between
    # them, darkening as it deepens: no band of flat colour, and the teeth keep their size.
    k_px = float(s[0]) / MOUTH_PX                        # image pixels per entry pixel
    q_up = _apply(_invert(up_a), pix)
    q_lo = _apply(_invert(lo_a), pix)
    xu, yu_e, xl, yl_e = self._lips(index)
    x_up, x_lo = q_up[..., 0], q_lo[..., 0]
    top = np.interp(x_up, xu, yu_e)                       # entry's upper lip, this column
    bot = np.interp(x_lo, xl, yl_e)                       # entry's lower lip, this column
    v = (pl[..., 1] - yu) / k_px                          # entry px below the driving upper lip
    w_ = (yl - pl[..., 1]) / k_px                         # entry px above the driving lower lip
    gap_d = v + w_
    gap_e = np.maximum(np.interp(x_up, xl, yl_e) - top, 0.0)
    a = RIGID * gap_e
    u = np.clip((v - a) / np.maximum(gap_d - 2 * a, 1e-3), 0.0, 1.0)
    q_a = np.stack([x_up, top + v], -1)                   # rigid with the upper lip
    q_b = np.stack([x_lo, bot - w_], -1)                  # rigid with the lower lip
    q_mid = ((1 - u)[..., None] * np.stack([x_up, top + a], -1)
             + u[..., None] * np.stack([x_lo, bot - a], -1))
    q_wide = np.where((v < a)[..., None], q_a, np.where((w_ < a)[..., None], q_b, q_mid))
    wl = _smoothstep(0.42, 0.58, t)[..., None]            # the halves cut at the midline
    patch = self.patches[index]
    dark = self._dark(index)

    def take(q):
      q = q.astype(np.float32) - 0.5
      return cv2.remap(patch, q[..., 0], q[..., 1], cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    narrow = (1 - wl) * take(q_a) + wl * take(q_b)
    # deeper where the middle stretched most: up to half-way to the cavity colour
    stretch = np.clip(1.0 - gap_e / np.maximum(gap_d, 1e-3), 0.0, 1.0)
    depth = (0.5 * stretch * np.sin(np.pi * u))[..., None]
    wide = take(q_wide) * (1 - depth) + dark * depth
    k_wide = _smoothstep(0.0, 2.0, gap_d - gap_e)[..., None]
    rgb = (1 - k_wide) * narrow + k_wide * wide
    cont_out = _apply(_invert(np.asarray(out_map, np.float64)), cont)
    # the reference fades in as the lips part beyond the portrait's own (closed) lip line
    alpha = polygon_mask(cont_out, (h, w)) * _smoothstep(*OPEN_FADE, _gap(mesh) - self.own_gap)
    if feather > 0:
      k = max(1, int(math.ceil(feather * 2))) * 2 + 1
      alpha = cv2.GaussianBlur(alpha, (k, k), feather) * np.sqrt(alpha)   # inward only
    return rgb, alpha.astype(np.float32)

  def _lips(self, index: int):
    """(x, y) of the entry's upper inner lip and (x, y) of its lower one, each by increasing x
    (entry pixels)."""
    c = self.contours[index]
    up = c[:11][np.argsort(c[:11, 0])]
    lo = np.concatenate([c[10:], c[:1]])
    lo = lo[np.argsort(lo[:, 0])]
    return up[:, 0], up[:, 1], lo[:, 0], lo[:, 1]

  def _dark(self, index: int) -> np.ndarray:
    """The entry's cavity colour: the median of its darkest tenth inside the opening."""
    if index not in self._darks:
      patch = self.patches[index]
      inside = polygon_mask(self.contours[index], patch.shape[:2], 1) > 0.5
      px = patch[inside] if inside.sum() >= 4 else patch.reshape(-1, 3)
      lum = _luma(px)
      self._darks[index] = np.median(px[lum <= np.percentile(lum, 10)], 0).astype(np.float32)
    return self._darks[index]

  @staticmethod
  def _fit(src: np.ndarray, dst: np.ndarray, scale: float, roll: float, kx: float = 1.0
           ) -> np.ndarray:
    """Entry -> image map with the head's rotation and scale (entry x stretched by kx),
    translated so that the entry's points `src` land on `dst` in the least-squares sense."""
    c, s = math.cos(roll), math.sin(roll)
    lin = (scale / MOUTH_PX) * np.array([[c, -s], [s, c]]) @ np.diag([kx, 1.0])
    t = dst.mean(0) - src.mean(0) @ lin.T
    return np.concatenate([lin, t[:, None]], 1)


# ----------------------------------------------------------------------------- runtime: lids

class LidReference:
  """Closed-lid exemplars of one donor, lit like the portrait's own lids: as an eye shuts the
  render cross-fades to one, placed on the driving eye corners with its lash line on the
  driving lid line."""

  def __init__(self, bank: PartBank, crop: np.ndarray, points: np.ndarray):
    idx, cand, skins = self.candidates(bank)
    self.patches, self.contours = [], []
    allowed = np.ones(len(idx), bool)
    for e in (0, 1):
      own = cut_lid(crop, points, e)
      ref = self._lid_skin(own["patch"], own["contour"]).mean(0)
      # the real closed lid whose lid skin is most like the portrait's own (lightness counts
      # half: it is matched below); both eyes from one donor
      cost = np.abs(skins - ref) @ np.array([0.5, 1.0, 1.0])
      best = int(np.argmin(np.where(allowed, cost, np.inf)))
      allowed = bank.lid_donor[idx] == bank.lid_donor[idx[best]]
      self.patches.append(self._match(cand[best], skins[best], ref))
      self.contours.append(bank.lid_contour[idx[best]].astype(np.float64))

  @classmethod
  def candidates(cls, bank: PartBank) -> tuple:
    """(entry indices, decoded patches, mean lid-skin Lab [n, 3]) of the bank's closed lids from
    good donors: the same for every portrait, so decoded once per bank."""
    if "lids" not in bank._cache:
      good = [k for k, d in enumerate(bank.donors) if d.get("iod_px", 0) >= GOOD_DONOR["iod_px"]]
      idx = np.flatnonzero(np.isin(bank.lid_donor, good))
      if idx.size == 0:
        idx = np.arange(bank.num_lids)
      if idx.size == 0:
        raise BankError("the part bank has no closed-lid entries")
      cand = [bank.lid_patch(i) for i in idx]
      skins = np.stack([cls._lid_skin(c, bank.lid_contour[i]).mean(0)
                        for c, i in zip(cand, idx)])
      bank._cache["lids"] = (idx, cand, skins)
    return bank._cache["lids"]

  @staticmethod
  def _lid_skin(patch: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """[n, 3] Lab of the upper-lid skin of a lid entry: the band from just above the upper lid
    (the outline's top over the eye's middle) to under the brow, its brighter half (lashes,
    liner and brow hairs left out)."""
    h, w = patch.shape[:2]
    c = np.asarray(contour, np.float64)
    mid = np.abs(c[:, 0] - w / 2) < 0.25 * LID_PX
    top = float(c[mid, 1].min()) if mid.any() else -LID_BOX[2] * LID_PX
    ys = slice(max(int(top - 0.3 * LID_PX), 0), max(int(top - 0.06 * LID_PX), 1))
    xs = slice(int(w / 2 - 0.3 * LID_PX), int(w / 2 + 0.3 * LID_PX))
    px = _lab(patch[ys, xs]).reshape(-1, 3)
    if len(px) < 8:
      px = _lab(patch).reshape(-1, 3)
    return px[px[:, 0] >= np.median(px[:, 0])]

  @staticmethod
  def _match(exemplar: np.ndarray, ex_skin: np.ndarray, own_skin: np.ndarray) -> np.ndarray:
    """The exemplar lit like the portrait's lid: Lab lightness scaled by the lid skins' ratio
    (0.6-1.6), chroma shifted by their difference."""
    lab = _lab(exemplar)
    lab[..., 0] *= float(np.clip(own_skin[0] / max(float(ex_skin[0]), 1.0), 0.6, 1.6))
    lab[..., 1:] += own_skin[1:] - ex_skin[1:]
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB
                        ).astype(np.float32)

  def render(self, eye: int, mesh_px: np.ndarray, shape: tuple[int, int], scale: float = 1.0):
    """(rgb float32 [h, w, 3], weight float32 [h, w], (x0, y0)) of the exemplar for `eye` on the
    driving corners of mesh_px (render-crop pixels) at `scale`, its lash line moved onto the
    driving lid line; the weight is a soft ellipse over the lid region (to be multiplied by
    how shut the eye is)."""
    p = np.asarray(mesh_px, np.float64) * scale
    a, flip = lid_frame(p, eye)
    w_e, h_e = LID_SIZE
    corners = np.array([[0, 0], [w_e, 0], [0, h_e], [w_e, h_e]], np.float64)
    img_c = _apply(a, corners)
    h, w = shape
    x0, y0 = np.maximum(np.floor(img_c.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(img_c.max(0)).astype(int), [w, h])
    if x1 <= x0 or y1 <= y0:
      return None
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    q = _apply(_invert(a), np.stack([xs + 0.5, ys + 0.5], -1))
    drv = _apply(_invert(a), p[list(EYES[eye][2]), :2])
    if flip:
      q[..., 0] = w_e - q[..., 0]
      drv[:, 0] = w_e - drv[:, 0]
    # the lid line: a straight line through each outline (x -> y), the exemplar's moved onto
    # the driving one
    ex = self.contours[eye]
    fit = lambda c: np.polyfit(c[:, 0], c[:, 1], 1)
    dd, de = fit(drv), fit(ex)
    qy = q[..., 1] - (np.polyval(dd, q[..., 0]) - np.polyval(de, q[..., 0]))
    qf = np.stack([q[..., 0], qy], -1).astype(np.float32) - 0.5
    rgb = cv2.remap(self.patches[eye], qf[..., 0], qf[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    # soft ellipse over the eye and its lid (entry units: eye width = LID_PX)
    u = (q[..., 0] + LID_BOX[0] * LID_PX) / (0.72 * LID_PX)
    v = (q[..., 1] + LID_BOX[2] * LID_PX + 0.08 * LID_PX) / (0.42 * LID_PX)
    r = np.sqrt(u ** 2 + v ** 2)
    wt = 1.0 - _smoothstep(0.6, 1.0, r)
    return rgb, wt.astype(np.float32), (x0, y0)


# ----------------------------------------------------------------------------- building

def _farthest(desc: np.ndarray, k: int, seed_order: np.ndarray) -> list[int]:
  """k indices spread over the descriptors (farthest-point sampling from the first of
  seed_order)."""
  if len(desc) <= k:
    return list(range(len(desc)))
  chosen = [int(seed_order[0])]
  d = np.linalg.norm(desc - desc[chosen[0]], axis=1)
  while len(chosen) < k:
    j = int(np.argmax(d))
    chosen.append(j)
    d = np.minimum(d, np.linalg.norm(desc - desc[j], axis=1))
  return sorted(chosen)


def build(videos: Iterable[dict], template: np.ndarray, *, mouth_per_donor: int = 32,
          lids_per_donor: int = 6, min_iod_px: float = 70.0, max_side: int = 1280,
          max_frames: int = 750, progress=None) -> PartBank:
  """Cuts a bank from real clips. videos: dicts with path, name (the donor: one identity; clips
  of one identity share a donor), file, source_repo, source_path, license.

  Per clip, the face is tracked (face mesh + iris, no smoothing) at up to `max_side`; frames
  with a near-frontal head (|yaw|, |pitch| < 20 degrees) and a face large enough (outer eye
  corners at least `min_iod_px` apart) qualify. Mouth entries: sharp frames with the lips apart,
  spread over the shapes (farthest-point sampling of the descriptors), `mouth_per_donor` at
  most. Lid entries: the most closed frame of each blink (both lids under a third of the clip's
  median openness), `lids_per_donor` at most, both eyes."""
  from vasa_jax import media
  from vasa_jax.geometry import landmarks as lm
  mesh = lm.FaceMesh()
  template = np.asarray(template, np.float64)
  by_donor: dict = {}
  for n, v in enumerate(videos):
    try:
      frames = []
      for k, fr in enumerate(media.iter_video(v["path"], max_side=max_side)):
        if k >= max_frames:
          break
        frames.append(fr)
    except media.MediaError as e:
      log.warning("part bank: skipped %s: %s", v["file"], e)
      continue
    tracked = list(mesh.track(frames, smooth=False, redetect_every=25))
    ok = [i for i, g in enumerate(tracked) if g is not None]
    if len(ok) < 10:
      log.warning("part bank: skipped %s: face found in %d frames", v["file"], len(ok))
      continue
    pts = np.stack([tracked[i].points for i in ok]).astype(np.float64)
    s, roll, can = skull(pts, template)
    _, r, _ = codes_lib.fit_similarity(template, pts, _rigid_weights())
    ang = np.degrees(codes_lib.rotation_to_angles(r))
    iod = np.linalg.norm(pts[:, 263, :2] - pts[:, 33, :2], axis=1)
    good = (np.abs(ang[:, 0]) < 20) & (np.abs(ang[:, 1]) < 20) & (iod >= min_iod_px)
    if good.sum() < 10:
      log.warning("part bank: skipped %s: too few frontal frames with a large face (%d)",
                  v["file"], int(good.sum()))
      continue
    gap = can[:, 14, 1] - can[:, 13, 1]
    lids, _, _ = codes_lib._eye_measures(can)
    entry = by_donor.setdefault(v["name"], {"meta": dict(v), "mouth": [], "lids": [],
                                            "skin": [], "lip": [], "iod": []})
    if v["file"] not in entry["meta"]["file"]:
      for key in ("file", "source_repo", "source_path"):
        if v[key] not in str(entry["meta"][key]).split("; "):
          entry["meta"][key] = f"{entry['meta'][key]}; {v[key]}"
    open_idx = [i for i in np.flatnonzero(good & (gap > 0.035))]
    for i in open_idx[::2]:
      fi = ok[i]
      e = cut_mouth(frames[fi], pts[i], template)
      e["clip"] = n
      e["frame"] = fi
      entry["mouth"].append(e)
    for i in np.flatnonzero(good)[::10]:
      sk, lp = skin_lab(frames[ok[i]], pts[i])
      entry["skin"].append(sk)
      entry["lip"].append(lp)
      entry["iod"].append(iod[i])
    op = lids.mean(1)
    med = float(np.median(op[good]))
    shut = good & (op < med / 3.0)
    # local minima of openness within each run of shut frames (one per blink)
    i = 0
    shut_idx = np.flatnonzero(shut)
    while i < len(shut_idx):
      j = i
      while j + 1 < len(shut_idx) and shut_idx[j + 1] - shut_idx[j] <= 2:
        j += 1
      run = shut_idx[i:j + 1]
      best = int(run[np.argmin(op[run])])
      for eye in (0, 1):
        le = cut_lid(frames[ok[best]], pts[best], eye)
        le["clip"], le["open"] = n, float(op[best])
        entry["lids"].append(le)
      i = j + 1
    if progress is not None:
      progress(n + 1, v["file"], len(open_idx), int(shut.sum()))
  donors, m_blobs, m_donor, m_order, m_cont, m_desc, m_teeth, m_dark = ([] for _ in range(8))
  l_blobs, l_donor, l_cont = [], [], []
  for name in sorted(by_donor):
    e = by_donor[name]
    if not e["mouth"] or not e["skin"]:
      continue
    k = len(donors)
    meta = {key: e["meta"][key] for key in REQUIRED_DONOR_KEYS}
    meta.update(skin_lab=[float(x) for x in np.median(e["skin"], 0)],
                lip_lab=[float(x) for x in np.median(e["lip"], 0)],
                iod_px=float(np.median(e["iod"])))
    donors.append(meta)
    mouths = e["mouth"]
    sharp = np.array([m["sharp"] for m in mouths])
    keep = [i for i in range(len(mouths)) if sharp[i] >= np.percentile(sharp, 25)] or \
        list(range(len(mouths)))
    desc = np.stack([mouths[i]["desc"] for i in keep])
    gaps = np.array([mouths[i]["gap"] for i in keep])
    pick = [keep[i] for i in _farthest(desc, mouth_per_donor, np.argsort(-gaps))]
    pick.sort(key=lambda i: (mouths[i]["clip"], mouths[i]["frame"]))
    for i in pick:
      m = mouths[i]
      m_blobs.append(_jpeg(m["patch"]))
      m_donor.append(k)
      m_order.append(m["clip"] * 100000 + m["frame"] // 2)
      m_cont.append(m["contour"])
      m_desc.append(m["desc"])
      m_teeth.append(m["teeth"])
      m_dark.append(m["dark"])
    lids_e = sorted(e["lids"], key=lambda x: x["open"])[:2 * lids_per_donor]
    for le in lids_e:
      l_blobs.append(_jpeg(le["patch"]))
      l_donor.append(k)
      l_cont.append(le["contour"])
  if not donors:
    raise BankError("no clip gave a usable donor")
  mj, mo = _pack(m_blobs)
  lj, lo = _pack(l_blobs) if l_blobs else (np.zeros(0, np.uint8), np.zeros(1, np.int64))
  bank = PartBank(
      donors=donors, mouth_jpeg=mj, mouth_offsets=mo,
      mouth_donor=np.asarray(m_donor, np.int32), mouth_order=np.asarray(m_order, np.int64),
      mouth_contour=np.asarray(m_cont, np.float32), mouth_desc=np.asarray(m_desc, np.float32),
      mouth_teeth=np.asarray(m_teeth, np.float32), mouth_dark=np.asarray(m_dark, np.float32),
      lid_jpeg=lj, lid_offsets=lo, lid_donor=np.asarray(l_donor, np.int32),
      lid_contour=np.asarray(l_cont, np.float32).reshape(-1, 16, 2))
  for k, d in enumerate(bank.donors):      # stored, so that loading a bank measures nothing
    d["mouth_detail"] = bank.mouth_detail(k)
  return bank

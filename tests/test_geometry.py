"""Measured face geometry: landmarks, the face basis and codes, the dense warp, transfer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vasa_jax import bundle as bundle_lib
from vasa_jax import media
from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry import flow as flow_lib
from vasa_jax.geometry import landmarks as lm
from vasa_jax.geometry import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(ROOT, "vasa_jax", "assets", "examples", "portrait.jpg")


def cartoon_dog(seed: int = 1) -> np.ndarray:
  """A drawn dog's face that BlazeFace and the face mesh both take for a face."""
  import cv2
  r = np.random.default_rng(seed)
  im = np.full((512, 512, 3), (r.integers(60, 200), r.integers(60, 200), r.integers(60, 200)),
               np.uint8)
  fur = (int(r.integers(90, 170)), int(r.integers(50, 110)), int(r.integers(20, 60)))
  dark = tuple(int(c * 0.6) for c in fur)
  cv2.ellipse(im, (256, 270), (150, 170), 0, 0, 360, fur, -1)
  cv2.ellipse(im, (120, 230), (50, 120), 20, 0, 360, dark, -1)
  cv2.ellipse(im, (392, 230), (50, 120), -20, 0, 360, dark, -1)
  cv2.ellipse(im, (256, 360), (80, 60), 0, 0, 360, tuple(min(255, int(c * 1.4)) for c in fur), -1)
  for x in (200, 312):
    cv2.circle(im, (x, 230), 22, (20, 15, 10), -1)
    cv2.circle(im, (x - 6, 224), 6, (230, 230, 230), -1)
  cv2.ellipse(im, (256, 330), (34, 24), 0, 0, 360, (15, 10, 10), -1)
  cv2.line(im, (256, 350), (256, 385), (30, 20, 20), 4)
  cv2.ellipse(im, (256, 385), (40, 18), 0, 0, 180, (30, 20, 20), 4)
  return np.clip(im + r.normal(0, 12, im.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def basis():
  return codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))


@pytest.fixture(scope="module")
def photo():
  return media.load_image(PORTRAIT)


@pytest.fixture(scope="module")
def face(photo):
  return lm.get_mesh().detect(photo, human=True)


# ----------------------------------------------------------------------------- landmarks

def test_mesh_lands_on_the_eyes_and_mouth_of_the_example_photo(photo, face):
  """Checked against BlazeFace's own eye and mouth keypoints (an independent network)."""
  det = lm.get_mesh().detector.detect(photo)[0]
  p = face.points
  iod = np.linalg.norm(p[263, :2] - p[33, :2])
  assert face.points.shape == (lm.NUM_POINTS, 3) and face.score > 0.9
  iris_a, iris_b = p[lm.IRIS_A.start, :2], p[lm.IRIS_B.start, :2]
  # BlazeFace keypoint 0 is the image-left eye, 1 the image-right one, 3 the mouth.
  assert np.linalg.norm(iris_a - det.keypoints[0]) < 0.2 * iod
  assert np.linalg.norm(iris_b - det.keypoints[1]) < 0.2 * iod
  mouth = (p[13, :2] + p[14, :2]) / 2
  assert np.linalg.norm(mouth - det.keypoints[3]) < 0.25 * iod
  # each iris lies between its eye's corners and lids
  for iris, (a, b), up, lo in ((iris_a, (33, 133), 159, 145), (iris_b, (362, 263), 386, 374)):
    assert min(p[a, 0], p[b, 0]) < iris[0] < max(p[a, 0], p[b, 0])
    assert p[up, 1] - 0.05 * iod < iris[1] < p[lo, 1] + 0.05 * iod


def test_non_faces_are_refused(photo):
  mesh = lm.get_mesh()
  noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3)).astype(np.uint8)
  with pytest.raises(lm.NoFaceError, match="no face"):
    mesh.detect(noise)
  dog = cartoon_dog()
  # BlazeFace fires on the drawn dog and the mesh model calls it a face...
  assert mesh.detector.detect(dog)
  assert mesh.detect(dog).score > 0.5
  # ...but it is not a human face, and a portrait to animate must be one.
  with pytest.raises(lm.NoFaceError, match="human"):
    mesh.detect(dog, human=True)
  assert mesh.detect(photo, human=True).score > 0.9


def test_human_check_takes_the_fast_path_only_for_a_clear_human_face(photo, face):
  """HOG accepts the example photo on its own (no CNN pass); the drawn dog is left to the CNN,
  which refuses it."""
  hc = lm.get_human_check()
  assert hc.hog_score(photo, face) >= hc.HOG_ACCEPT
  assert hc(photo, face) == hc.hog_score(photo, face)
  dog = cartoon_dog()
  g = lm.get_mesh().detect(dog)
  assert hc.hog_score(dog, g) < hc.HOG_ACCEPT
  assert hc.cnn_score(dog, g) < 0 and hc(dog, g) < 0


def test_tracking_follows_a_moving_face_and_smooths(photo):
  import cv2
  frames = []
  for t in range(12):
    m = np.float32([[1, 0, 3.0 * t], [0, 1, 1.5 * t]])
    frames.append(cv2.warpAffine(photo, m, (512, 512), borderMode=cv2.BORDER_REPLICATE))
  track = list(lm.get_mesh().track(frames))
  assert all(g is not None for g in track)
  step = np.hypot(3.0, 1.5)
  want = np.array([33.0, 16.5])
  for i, max_lag in ((1, 2.0), (14, 1.0)):   # nose (smoothed hard), lower lip (lightly)
    pts = np.array([g.points[i, :2] for g in track])
    err = np.linalg.norm(pts[-1] - pts[0] - want)
    assert err < max_lag * step, (i, err)      # follows the face, lagging < max_lag frames
  f = lm.OneEuro()
  rng = np.random.default_rng(0)
  still = np.array([f(np.array([10.0]) + rng.normal(0, 1.0, 1), 100.0) for _ in range(50)])
  assert still[10:].std() < 0.6


# ----------------------------------------------------------------------------- codes

def test_basis_file_round_trip(tmp_path, basis):
  path = basis.save(str(tmp_path / "b.npz"))
  back = codes_lib.FaceBasis.load(path)
  assert back.dyn_dim == basis.dyn_dim and np.allclose(back.exp_basis, basis.exp_basis)
  with pytest.raises(FileNotFoundError):
    codes_lib.FaceBasis.load(str(tmp_path / "missing.npz"))


def test_encode_decode_round_trip(basis, face):
  s = 512
  c = codes_lib.encode(face.points[None], basis, s)
  assert c.pose.shape == (1, 6) and c.dyn.shape == (1, basis.dyn_dim)
  # the portrait performing its own codes is itself
  back = codes_lib.decode(c, c.pose, c.dyn, basis, s)[0]
  assert np.abs(back[:, :2] - face.points[:, :2]).max() < 0.05
  # the linear model explains the mesh (template + identity + expression + lids)
  k = basis.exp_dim
  absolute = (basis.template + np.einsum("k,knd->nd", c.ident[0], basis.id_basis)
              + np.einsum("k,knd->nd", c.dyn[0, :k], basis.exp_basis)
              + np.einsum("k,knd->nd", c.dyn[0, k:k + 2], basis.lid_basis))
  err = np.linalg.norm(absolute[:468] - c.canonical[0, :468], axis=-1).mean()
  assert err * c.scale[0] < 2.0                          # pixels
  # codes changed, decoded, measured again: the same codes come back
  pose, dyn = c.pose.copy(), c.dyn.copy()
  pose[0, 0] += 0.2                                      # yaw
  pose[0, 5] *= 1.2                                      # further away
  dyn[0, 2] += np.sqrt(basis.exp_var[2])                 # one expression component
  dyn[0, k] = 0.08                                       # one eye nearly closed
  dyn[0, k + 2] += 0.15                                  # gaze to the right
  again = codes_lib.encode(codes_lib.decode(c, pose, dyn, basis, s), basis, s)
  assert abs(again.pose[0, 0] - pose[0, 0]) < 0.01
  assert abs(again.pose[0, 5] / pose[0, 5] - 1.0) < 0.01
  assert abs(again.dyn[0, k] - 0.08) < 0.02
  assert abs(again.dyn[0, k + 2] - dyn[0, k + 2]) < 0.03
  assert abs(again.dyn[0, 2] - dyn[0, 2]) < 0.25 * np.sqrt(basis.exp_var[2])


def test_rotations_follow_the_conventions():
  r = codes_lib.angles_to_rotation(0.3, -0.2, 0.1)
  assert np.allclose(codes_lib.rotation_to_angles(r), [0.3, -0.2, 0.1])
  # yaw > 0 turns the face (head -z) towards image right (+x)
  face_dir = -codes_lib.angles_to_rotation(0.3, 0.0, 0.0) @ np.array([0, 0, 1.0])
  assert face_dir[0] > 0.2


def test_the_volume_warp_and_the_mesh_pose_agree(basis, face):
  """models/warp.py (the volume decoder's rigid warp) and the mesh codes share one pose
  convention: the same rotation, and a canonical mesh posed through canonical_to_source as
  volume points p = 2 s_ref c lands on codes.pose_mesh's pixels (normalised crop units)."""
  from vasa_jax.models import warp
  ang = np.array([[0.3, -0.2, 0.1], [-0.25, 0.15, -0.05]])
  np.testing.assert_allclose(np.asarray(warp.rotation_matrix(*ang.T)),
                             codes_lib.angles_to_rotation(*ang.T), atol=1e-6)
  assert warp.REF_DISTANCE == codes_lib.REF_DISTANCE
  s = 512
  c = codes_lib.encode(face.points[None], basis, s)
  pose = np.array([[0.3, -0.2, 0.1, 0.02, -0.01, 0.6], [-0.25, 0.15, -0.05, -0.03, 0.02, 0.8]])
  dyn = np.repeat(c.dyn, 2, 0)
  can = codes_lib.decode_canonical(c, pose, dyn, basis)
  px = codes_lib.pose_mesh(can, pose, s, basis)
  np.testing.assert_allclose(px, codes_lib.decode(c, pose, dyn, basis, s))
  q = np.asarray(warp.canonical_to_source(2 * basis.s_ref * can, pose))
  np.testing.assert_allclose((q[..., :2] + 1) / 2 * s, px[..., :2], atol=0.02)
  np.testing.assert_allclose(q[..., 2] / 2 * s, px[..., 2], atol=0.02)    # depth: no offset
  # a yaw moves the two apart: the agreement is not a tautology
  q2 = np.asarray(warp.canonical_to_source(2 * basis.s_ref * can, pose + [0.05, 0, 0, 0, 0, 0]))
  assert np.abs((q2 + 1) / 2 * s - px)[..., 0].max() > 2.0


def test_transfer_is_relative_to_the_driver_reference(basis):
  d = 6 + basis.dyn_dim
  k = basis.exp_dim
  rng = np.random.default_rng(0)
  portrait = np.r_[0.1, 0.0, 0.0, 0.01, 0.0, 0.6, rng.normal(0, 0.1, k), 0.3, 0.3, 0.0, 0.0]
  ref = np.r_[-0.2, 0.1, 0.0, 0.0, 0.0, 0.7, rng.normal(0, 0.1, k), 0.25, 0.25, 0.1, 0.0]
  out = codes_lib.transfer(portrait, ref[None], ref, k)
  assert out.shape == (1, d) and np.allclose(out[0], portrait, atol=1e-5)
  drv = ref.copy()
  drv[0] += 0.25                     # the driver turns
  drv[5] *= 1.1                      # moves away
  drv[6 + k] = 0.0                   # blinks one eye
  out = codes_lib.transfer(portrait, drv[None], ref, k)[0]
  assert abs(out[0] - 0.35) < 1e-4 and abs(out[5] - 0.66) < 1e-4 and out[6 + k] == 0.0


# ----------------------------------------------------------------------------- warp

def _bilinear(map_xy, x, y):
  x0, y0 = int(np.floor(x - 0.5)), int(np.floor(y - 0.5))
  fx, fy = x - 0.5 - x0, y - 0.5 - y0
  m = map_xy[y0:y0 + 2, x0:x0 + 2]
  top = m[0, 0] * (1 - fx) + m[0, 1] * fx
  bot = m[1, 0] * (1 - fx) + m[1, 1] * fx
  return top * (1 - fy) + bot * fy + 0.5     # continuous coordinates


def test_warp_moves_landmarks_where_the_driving_mesh_says(basis, photo, face):
  s = 512
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  k = basis.exp_dim
  pose, dyn = pg.codes.pose[0].copy(), pg.codes.dyn[0].copy()
  j = int(np.argmax(np.abs(basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1])))
  dyn[j] += 2.0 * np.sqrt(basis.exp_var[j]) * np.sign(basis.exp_basis[j, 14, 1]
                                                     - basis.exp_basis[j, 13, 1])
  pose[0] += 0.15
  fr = pg.frame(pose, dyn)
  assert fr.mesh[14, 1] - fr.mesh[13, 1] > face.points[14, 1] - face.points[13, 1] + 3
  for i in (1, 152, 17, 61, 291, 10, 4, 199):    # (not the silhouette: it may be hidden)
    got = _bilinear(fr.map_xy, *fr.mesh[i, :2])
    assert np.linalg.norm(got - face.points[i, :2]) < 1.0, i
  # nothing moves at the crop border, and the warped photo equals it there
  ys, xs = np.mgrid[0:s, 0:s]
  ident = np.stack([xs, ys], -1).astype(np.float32)
  assert np.abs(fr.map_xy[[0, -1]] - ident[[0, -1]]).max() < 0.5
  assert np.abs(fr.map_xy[:, [0, -1]] - ident[:, [0, -1]]).max() < 0.5
  # the portrait's own motion is the identity warp
  still = pg.frame(pg.codes.pose[0], pg.codes.dyn[0])
  assert np.abs(still.map_xy - ident).max() < 0.05
  assert np.abs(still.warped.astype(int) - photo.astype(int)).max() <= 1


def test_mouth_region_is_labelled(basis, photo, face):
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  dyn = pg.codes.dyn[0].copy()
  j = int(np.argmax(np.abs(basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1])))
  dyn[j] += 3.0 * np.sqrt(basis.exp_var[j]) * np.sign(basis.exp_basis[j, 14, 1]
                                                     - basis.exp_basis[j, 13, 1])
  fr = pg.frame(pg.codes.pose[0], dyn)
  m = fr.inputs["mouth"]
  assert m.shape == (64, 64, render.BASE_CHANNELS)
  assert m[..., 3].sum() > 20                       # the open mouth's inside
  assert m[..., 4][m[..., 3] > 0.5].mean() < -0.3   # stretched there (log area ratio < 0)
  x = render.mouth_inputs(fr, None, None)           # no reference: the warp, no coverage
  assert x.shape == (64, 64, render.IN_CHANNELS)
  np.testing.assert_array_equal(x[..., 9:12], m[..., :3])
  assert not x[..., 12].any()


def test_compose_changes_only_the_mouth(basis, photo, face):
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  parts = render.PartState.build(pg, None)
  fr = pg.frame(pg.codes.pose[0], pg.codes.dyn[0])
  plain = parts.warp(fr)
  r = pg.part_res["mouth"]
  fields = {"alpha": np.ones((r, r), np.float32), "flow": np.zeros((r, r, 2), np.float32),
            "shade": np.full((r, r), -0.5, np.float32),
            "residual": np.zeros((r, r, 3), np.float32)}
  out = parts.compose(fr, None, fields)
  diff = np.abs(out.astype(int) - plain.astype(int)).sum(-1) > 3
  ys, xs = np.nonzero(diff)
  p = face.points
  iod = np.linalg.norm(p[263, :2] - p[33, :2])
  assert diff.any() and diff.mean() < 0.2          # (alpha 1 over the whole patch here)
  # changed pixels sit around the mouth only: inside its patch, below the eyes
  assert np.abs(xs - p[13, 0]).max() < 0.8 * iod
  assert ys.min() > p[[145, 374], 1].max() and ys.max() < p[152, 1] + 0.5 * iod   # not the eyes
  none = parts.compose(fr, None, {**fields, "alpha": np.zeros((r, r), np.float32)})
  assert np.array_equal(none, plain)


def test_emotion_offsets_move_the_face_the_way_each_emotion_does():
  from vasa_jax import bundle as bundle_lib
  from vasa_jax.geometry import codes as codes_lib
  from vasa_jax.geometry import emotion
  basis = codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))
  off = emotion.offsets(basis)
  k = basis.exp_dim
  assert off.shape == (5, basis.dyn_dim) and not off[0].any() and not off[:, k + 2:].any()
  mesh = {n: (off[i, :k] @ basis.exp_basis.reshape(k, -1)).reshape(-1, 3)
          for i, n in enumerate(emotion.EMOTIONS)}
  corner = lambda n: mesh[n][[61, 291], 1].mean() - mesh[n][[0, 17], 1].mean()   # +: down
  brow = lambda n: mesh[n][[107, 336, 105, 334], 1].mean()
  assert corner("happy") < -0.02 and corner("sad") > 0.02           # lip corners up / down
  assert brow("surprised") < -0.04 and brow("angry") > 0.02          # brows up / down
  inner = mesh["sad"][[107, 336], 1].mean() - mesh["sad"][[70, 300], 1].mean()
  assert inner < -0.01                                               # sad: inner brows rise
  gap = lambda n: mesh[n][14, 1] - mesh[n][13, 1]
  outer = lambda n: mesh[n][17, 1] - mesh[n][0, 1]
  assert outer("surprised") > 0.01                                   # the jaw drops a little
  for n in emotion.EMOTIONS:                # ... but no emotion parts or presses the lips: they
    assert abs(gap(n)) < 1e-6                # still close on /p b m/ under it
  assert off[4, k] > 0 > off[3, k]                                   # lids: wide / narrowed


# ----------------------------------------------------------------------------- a still head

def _apparent_rotation(model, seen):
  """Degrees of rotation (per frame, yaw / pitch / roll) a rigid body fitted to `seen` shows."""
  from vasa_jax.geometry import tracking
  rot = tracking.rigid_rotations(model, seen, np.ones(seen.shape[:2], bool))
  return np.degrees(codes_lib.rotation_to_angles(rot))


def test_expression_moves_no_skull_point_the_way_a_head_turn_would(basis, face):
  """decode renders expression through codes.skull_still: strong random expressions, pose
  fixed, and a rigid body fitted to the skull points' image positions does not turn; with the
  basis as learned it would (the footage's tracker left head motion in the expression)."""
  s = 512
  c = codes_lib.encode(face.points[None], basis, s)
  rng = np.random.default_rng(0)
  k = basis.exp_dim
  dyn = np.repeat(c.dyn, 24, 0)
  dyn[:, :k] += rng.normal(size=(24, k)) * 2.0 * np.sqrt(basis.exp_var)
  pose = np.repeat(c.pose, 24, 0)
  rigid = list(codes_lib.SKULL_INTERIOR)
  base = codes_lib.decode(c, c.pose, c.dyn, basis, s)[0]
  moved = codes_lib.decode(c, pose, dyn, basis, s)
  turn = _apparent_rotation(base[rigid], moved[:, rigid, :2])
  assert np.abs(turn).max() < 0.05, np.abs(turn).max()
  # the lips still move as the expression asks (several pixels)
  lips = np.linalg.norm(moved[:, 13:15, :2] - base[13:15, :2], axis=-1).mean()
  assert lips > 3.0, lips
  # the basis as learned: the same expressions turn the skull by a visible fraction of a degree
  raw = c.canonical[0][None] + np.einsum("tk,knd->tnd", dyn[:, :k] - c.dyn[:, :k], basis.exp_basis)
  sc, r, t = c.scale[0], c.rotation[0], c.shift[0]
  raw = sc * np.einsum("ij,tnj->tni", r, raw) + t
  assert np.abs(_apparent_rotation(base[rigid], raw[:, rigid, :2])).max() > 0.2


def test_pixel_rotation_reads_a_turning_head_and_not_a_talking_one(basis, photo, face):
  """tracking.pixel_rotation on frames the warp renders: a head turned by a known yaw is read
  back from the pixels (spread within 20%, the same motion), and a still head whose mouth opens
  and closes reads as still."""
  from vasa_jax.geometry import tracking
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  pose0, dyn0 = pg.codes.pose[0], pg.codes.dyn[0]
  t = np.arange(16)
  yaw = np.radians(4.0) * np.sin(t / 2.5)
  frames = []
  for y in yaw:
    pose = pose0.copy()
    pose[0] += y
    frames.append(pg.frame(pose, dyn0).warped)
  ang, tracked = tracking.pixel_rotation(np.stack(frames), face.points)
  read = np.degrees(ang[:, 0] - ang[0, 0])
  assert tracked > 0.8
  assert abs(read.std() / np.degrees(yaw).std() - 1.0) < 0.2, (read.std(), np.degrees(yaw).std())
  # ... and the same way round: a turn to one side is not read as a turn to the other
  assert np.corrcoef(read, np.degrees(yaw))[0, 1] > 0.9
  assert abs(np.corrcoef(read, yaw)[0, 1]) > 0.95
  # the mouth opens and closes, the head stays: under 0.1 degrees
  j = int(np.argmax(np.abs(basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1])))
  frames = []
  for a in np.sin(t / 1.5):
    dyn = dyn0.copy()
    dyn[j] += 2.0 * a * np.sqrt(basis.exp_var[j])
    frames.append(pg.frame(pose0, dyn).warped)
  ang, _ = tracking.pixel_rotation(np.stack(frames), face.points)
  assert np.degrees(ang).std(0).max() < 0.1

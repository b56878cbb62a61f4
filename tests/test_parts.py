"""What a photo does not show, copied from real footage: the part bank (real mouth interiors and
closed lids), the donor mouth on the driving contour, the eye layer, the mouth compositor."""

from __future__ import annotations

import dataclasses
import os

import cv2
import jax
import numpy as np
import pytest

from vasa_jax import bundle as bundle_lib
from vasa_jax import media
from vasa_jax.geometry import banks
from vasa_jax.geometry import codes as codes_lib
from vasa_jax.geometry import eyes as eyes_lib
from vasa_jax.geometry import landmarks as lm
from vasa_jax.geometry import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORTRAIT = os.path.join(ROOT, "vasa_jax", "assets", "examples", "portrait.jpg")
DONOR_CLIP = "videos/vretalking__face3.mp4"       # Apache-2.0 (OpenTalker/video-retalking)


@pytest.fixture(scope="module")
def basis():
  return codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))


@pytest.fixture(scope="module")
def photo():
  return media.load_image(PORTRAIT)


@pytest.fixture(scope="module")
def face(photo):
  return lm.get_mesh().detect(photo, human=True)


@pytest.fixture(scope="module")
def bank(real_dir, basis):
  """A bank cut from 4 s of one real clip (the build as `vasa-jax data build-part-bank`)."""
  return banks.build([{"path": str(real_dir / DONOR_CLIP), "name": "aoc", "file": DONOR_CLIP,
                       "source_repo": "OpenTalker/video-retalking",
                       "source_path": "examples/face/3.mp4", "license": "Apache-2.0"}],
                     basis.template, mouth_per_donor=12, max_frames=100)


def _open_mouth(pg, basis, sigma=3.0):
  dyn = pg.codes.dyn[0].copy()
  j = int(np.argmax(np.abs(basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1])))
  dyn[j] += sigma * np.sqrt(basis.exp_var[j]) * np.sign(basis.exp_basis[j, 14, 1]
                                                       - basis.exp_basis[j, 13, 1])
  return dyn


def test_the_bank_holds_real_open_mouths_and_closed_lids(bank, tmp_path):
  assert len(bank) >= 6 and bank.num_lids >= 2 and len(bank.donors) == 1
  # open-mouth entries: an opening with dark cavity and teeth in it (this donor shows teeth)
  assert (bank.mouth_dark > 0.05).mean() > 0.5 and bank.mouth_teeth.max() > 0.1
  for i in range(len(bank)):
    c = bank.mouth_contour[i]
    assert c[list(banks.LOWER_MID), 1].mean() > c[list(banks.UPPER_MID), 1].mean() + 2
    assert bank.mouth_patch(i).shape == (banks.MOUTH_SIZE[1], banks.MOUTH_SIZE[0], 3)
  # saved and read back, attribution written next to it
  bank.save(str(tmp_path))
  back = banks.PartBank.load(str(tmp_path))
  assert len(back) == len(bank) and back.donors[0]["license"] == "Apache-2.0"
  np.testing.assert_array_equal(back.mouth_patch(3), bank.mouth_patch(3))
  text = open(tmp_path / banks.ATTRIBUTION_FILE).read()
  assert "OpenTalker/video-retalking" in text and "Apache-2.0" in text


def test_a_bank_without_attribution_is_refused(bank, tmp_path):
  bad = dataclasses.replace(bank, donors=[{**bank.donors[0], "license": ""}])
  with pytest.raises(banks.BankError, match="attribution"):
    bad.save(str(tmp_path / "b"))
  nc = dataclasses.replace(bank, donors=[{**bank.donors[0], "license": "CC BY-NC 4.0"}])
  with pytest.raises(banks.BankError, match="bundling"):
    nc.check_attribution()
  # ... and at export: the bundle is not written
  from conftest import load_stage_config
  fl = load_stage_config("face_latent").get_config("geo_tiny")
  with pytest.raises(bundle_lib.BundleError, match="attribution"):
    bundle_lib.save(str(tmp_path / "bundle"), face_latent_config=fl, face_latent_params={},
                    motion_dit_config=load_stage_config("motion_dit").get_config(
                        "tiny,model.dyn_dim=44"), motion_dit_params={},
                    motion_stats={"mean": np.zeros(50), "std": np.ones(50)},
                    face_basis=codes_lib.FaceBasis.load(os.path.join(
                        bundle_lib.default_dir(), bundle_lib.BASIS_FILE)), part_bank=bad)
  assert not os.path.exists(tmp_path / "bundle")
  # a bank folder whose attribution file went missing does not load
  bank.save(str(tmp_path / "c"))
  os.remove(tmp_path / "c" / banks.ATTRIBUTION_FILE)
  with pytest.raises(banks.BankError, match="attribution"):
    banks.PartBank.load(str(tmp_path / "c"))


def test_a_donor_interior_lands_inside_the_driving_inner_lip_contour(bank, basis, photo, face):
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  ref = banks.MouthReference.for_portrait(bank, photo, face.points, basis.template)
  assert ref.donor == 0 and ref.entries == len(bank)
  fr = pg.frame(pg.codes.pose[0], _open_mouth(pg, basis))
  mesh = fr.mesh
  box = ref.roi(mesh, photo.shape[:2])
  x0, y0, x1, y1 = box
  tm = np.array([[1.0, 0, x0], [0, 1.0, y0]])
  k = int(np.argmin(ref.costs(mesh[None])[0]))
  rgb, alpha = ref.render(k, mesh, tm, (x1 - x0, y1 - y0))
  inside = banks.polygon_mask(mesh[list(banks.INNER), :2] - [x0, y0], alpha.shape, 4)
  assert alpha.sum() > 50
  assert (alpha[inside == 0] == 0).all()                  # nothing outside the opening
  assert alpha[inside == 1].mean() > 0.8                   # the opening is covered
  # the donor's content: darker than the portrait's lips, with a dark cavity in it
  lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
  skin, _ = banks.skin_lab(photo, face.points)
  assert np.percentile(lum[alpha > 0.9], 20) < 0.45 * skin[0]
  # the portrait's own closed lips get nothing (its lip line stays its own)
  box = ref.roi(face.points, photo.shape[:2])
  if box is not None:
    x0, y0, x1, y1 = box
    _, a0 = ref.render(k, face.points, np.array([[1.0, 0, x0], [0, 1.0, y0]]), (x1 - x0, y1 - y0))
    assert not a0.any()


def test_an_opening_wider_than_the_entry_stretches_the_cavity_not_the_teeth(bank, basis, photo,
                                                                            face):
  """Lips parting wider than the entry's: the bands next to each lip keep the entry's scale
  (teeth rigid with their lip), the entry's middle stretches over the rest; no band of flat
  colour is inserted between the halves."""
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  ref = banks.MouthReference.for_portrait(bank, photo, face.points, basis.template)
  gaps = banks._opening(ref.desc).max(-1)
  k = int(np.argsort(gaps)[len(gaps) // 2])           # a middling entry
  mesh = pg.frame(pg.codes.pose[0], _open_mouth(pg, basis, 8.0)).mesh
  s, _, _ = banks.skull(mesh[None], basis.template)
  assert banks._gap(mesh) > 2 * gaps[k]                 # asks over twice the entry's opening
  # the entry: red = its row (a ramp over the whole patch), so a sample shows where it came
  # from; with a black cavity colour, red / green still reads the row where the cavity deepens
  h, w = ref.patches[k].shape[:2]
  ramp = np.zeros((h, w, 3), np.float32)
  ramp[..., 0] = np.linspace(0, 255, h)[:, None]
  ramp[..., 1:] = 128
  ref.patches[k] = ramp
  ref._darks[k] = np.zeros(3, np.float32)
  box = ref.roi(mesh, photo.shape[:2])
  x0, y0, x1, y1 = box
  rgb, alpha = ref.render(k, mesh, np.array([[1.0, 0, x0], [0, 1.0, y0]]), (x1 - x0, y1 - y0))
  col = int(round((mesh[13, 0] + mesh[14, 0]) / 2 - x0))
  rows = np.flatnonzero(alpha[:, col] > 0.5)
  assert len(rows) > 20
  green = rgb[rows, col, 1]
  assert green.min() > 0.4 * 128               # no band of the flat cavity colour
  row = rgb[rows, col, 0] / green * (h - 1) / 2.0          # the entry row each pixel shows
  step = np.diff(row)
  assert (step > 0).mean() > 0.9                # the entry top to bottom, in order, once
  # next to each lip the entry keeps its own scale (teeth rigid with their lip) ...
  rigid = banks.MOUTH_PX / float(s[0])           # entry rows per output row
  assert step[:2].mean() == pytest.approx(rigid, rel=0.3)
  assert step[-2:].mean() == pytest.approx(rigid, rel=0.3)
  # ... and the middle is stretched over the rest of the opening
  assert step[len(step) // 2] < 0.7 * rigid


def test_the_choice_of_entry_is_smooth_over_time_and_across_windows(bank, basis, photo, face):
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  ref = banks.MouthReference.for_portrait(bank, photo, face.points, basis.template)
  t = np.arange(60)
  sig = 1.5 + 1.5 * np.sin(t / 4.0)
  meshes = np.stack([pg.frame(pg.codes.pose[0], _open_mouth(pg, basis, s)).mesh for s in sig])
  greedy = np.argmin(ref.costs(meshes), 1)
  ref.reset()
  path = ref.select(meshes)
  switches = lambda p: int((np.diff(p) != 0).sum())
  assert switches(path) < switches(greedy) or switches(greedy) <= 2
  # the chosen entries still follow the opening: wider openings, wider entries
  gaps = ref.desc[path].reshape(-1, 20, 2)
  g = gaps[:, 15, 1] - gaps[:, 5, 1]
  assert np.corrcoef(g, sig)[0, 1] > 0.5
  # windows of a stream continue the choice: two halves give the whole's path at the seam
  ref.reset()
  a = ref.select(meshes[:30])
  b = ref.select(meshes[30:])
  assert a[-1] == b[0] or ref.costs(meshes[30:31])[0, b[0]] <= ref.costs(meshes[30:31])[0, a[-1]]


def test_a_portrait_showing_teeth_is_its_own_donor(bank, basis, real_dir):
  frames = list(media.iter_video(str(real_dir / DONOR_CLIP)))
  mesh = lm.get_mesh()
  best = None
  for f in frames[:80:4]:
    g = mesh.detect(f)
    e = banks.cut_mouth(f, g.points, basis.template)
    if best is None or e["teeth"].max() > best[2]["teeth"].max():
      best = (f, g, e)
  f, g, e = best
  assert e["teeth"].max() > 0.08
  ref = banks.MouthReference.for_portrait(bank, f, g.points, basis.template)
  assert ref.donor == -1 and ref.entries == 1


def test_a_soft_donor_is_not_chosen(bank):
  """A donor whose mouths are blurred (filmed small or out of focus) scores a lower detail than
  the same mouths sharp, and is left out of the good donors; the build stores the figure."""
  import cv2
  n = len(bank)
  soft = [cv2.GaussianBlur(bank.mouth_patch(i), (0, 0), 2.0) for i in range(n)]
  blobs = [bytes(bank.mouth_jpeg[bank.mouth_offsets[i]:bank.mouth_offsets[i + 1]])
           for i in range(n)] + [banks._jpeg(p) for p in soft]
  mj, mo = banks._pack(blobs)
  d0 = dict(bank.donors[0])
  d1 = {k: v for k, v in d0.items() if k != "mouth_detail"}
  d1["name"] = "aoc_soft"
  two = dataclasses.replace(
      bank, donors=[d0, d1], mouth_jpeg=mj, mouth_offsets=mo,
      mouth_donor=np.r_[bank.mouth_donor, np.ones(n, bank.mouth_donor.dtype)],
      mouth_order=np.r_[bank.mouth_order, bank.mouth_order],
      mouth_contour=np.concatenate([bank.mouth_contour] * 2),
      mouth_desc=np.concatenate([bank.mouth_desc] * 2),
      mouth_teeth=np.concatenate([bank.mouth_teeth] * 2),
      mouth_dark=np.concatenate([bank.mouth_dark] * 2))
  assert "mouth_detail" in bank.donors[0]
  sharp = two.mouth_detail(0)
  assert sharp == pytest.approx(bank.donors[0]["mouth_detail"])
  assert two.mouth_detail(1) < 0.9 * sharp
  assert two.good_donors() == [0]


def test_a_donor_whose_mouth_rarely_opens_is_not_chosen(bank):
  """Of two donors alike in all else, the one whose entries open half as far (`reach`) would be
  stretched over every wide vowel: it is left out of the good donors, whichever comes first."""
  n = len(bank)
  desc = bank.mouth_desc.reshape(n, 20, 2).copy()
  half = desc.copy()
  half[..., 1] *= 0.5                                  # the same mouths, half as open
  half = half.reshape(n, -1)

  def pair(first, second):
    d0 = dict(bank.donors[0])
    return dataclasses.replace(
        bank, donors=[d0, {**d0, "name": "other"}],
        mouth_jpeg=np.r_[bank.mouth_jpeg, bank.mouth_jpeg],
        mouth_offsets=np.r_[bank.mouth_offsets, bank.mouth_offsets[1:] + bank.mouth_offsets[-1]],
        mouth_donor=np.r_[bank.mouth_donor, np.ones(n, bank.mouth_donor.dtype)],
        mouth_order=np.r_[bank.mouth_order, bank.mouth_order],
        mouth_contour=np.concatenate([bank.mouth_contour] * 2),
        mouth_desc=np.concatenate([first, second]),
        mouth_teeth=np.concatenate([bank.mouth_teeth] * 2),
        mouth_dark=np.concatenate([bank.mouth_dark] * 2))
  wide_first = pair(bank.mouth_desc, half)
  assert wide_first.reach(1) == pytest.approx(0.5 * wide_first.reach(0), rel=1e-4)
  assert wide_first.good_donors() == [0]
  assert pair(half, bank.mouth_desc).good_donors() == [1]


def test_closed_lid_exemplars_are_decoded_once_per_bank(bank, photo, face):
  """A second portrait reuses the bank's decoded lids, and gets what a fresh bank would give."""
  pts = np.asarray(face.points, np.float64)
  first = banks.LidReference(bank, photo, pts)
  cached = banks.LidReference.candidates(bank)
  assert banks.LidReference.candidates(bank) is cached
  again = banks.LidReference(bank, photo, pts)
  fresh = banks.LidReference(dataclasses.replace(bank), photo, pts)
  for a, b, c in zip(first.patches, again.patches, fresh.patches):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_open_eye_pixels_are_the_photos_own(basis, photo, face):
  """No network draws over an eye: at the portrait's own motion the eyes are the photo's pixels
  (every pixel of the crop, in fact), and whatever the mouth compositor outputs, the eye
  regions of the frame are the warp's."""
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  parts = render.PartState.build(pg, None)
  fr = pg.frame(pg.codes.pose[0], pg.codes.dyn[0])
  still = parts.warp(fr)
  assert np.abs(still.astype(int) - photo.astype(int)).max() <= 1
  r = pg.part_res["mouth"]
  loud = {"alpha": np.ones((r, r), np.float32), "flow": np.full((r, r, 2), 0.05, np.float32),
          "shade": np.full((r, r), 0.4, np.float32), "residual": np.full((r, r, 3), 0.2, np.float32)}
  dyn = pg.codes.dyn[0].copy()
  dyn[-2] += 0.15                                         # a glance to the side
  fr2 = pg.frame(pg.codes.pose[0], dyn)
  plain, out = parts.warp(fr2), parts.compose(fr2, None, loud)
  for contour in (lm.EYE_A_RING, lm.EYE_B_RING):
    eye = banks.polygon_mask(fr2.mesh[list(contour), :2], photo.shape[:2], 1) > 0
    eye = np.ascontiguousarray(eye)
    assert eye.sum() > 50
    np.testing.assert_array_equal(out[eye], plain[eye])


def test_gaze_moves_the_portraits_own_iris_rigidly(basis, photo, face):
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  parts = render.PartState.build(pg, None)
  dyn = pg.codes.dyn[0].copy()
  dyn[-2] += 0.2
  fr = pg.frame(pg.codes.pose[0], dyn)
  out = parts.warp(fr)
  for sl in (lm.IRIS_A, lm.IRIS_B):
    c0, c1 = face.points[sl.start, :2], fr.mesh[sl.start, :2]
    shift = c1 - c0
    assert abs(shift[0]) > 2.0
    rad = 0.6 * np.linalg.norm(face.points[sl.start + 1:sl.stop, :2] - c0, axis=1).mean()
    ys, xs = np.mgrid[-int(rad):int(rad) + 1, -int(rad):int(rad) + 1].astype(np.float32)
    disc = xs ** 2 + ys ** 2 <= rad ** 2
    off = np.stack([xs[disc], ys[disc]], -1)[None]

    def at(img, c):
      q = (off + c - 0.5).astype(np.float32)
      return cv2.remap(img, q[..., 0], q[..., 1], cv2.INTER_LINEAR)[0].astype(float)
    src, dst, stay = at(photo, c0), at(out, c1), at(out, c0)
    # the iris' core moved with the iris landmarks, its pixels kept
    assert np.abs(dst - src).mean() < 0.3 * np.abs(stay - src).mean()
    assert np.abs(dst - src).mean() < 6.0


def test_a_lid_crossfades_to_a_real_closed_lid_only_as_it_shuts(bank, basis, photo, face):
  own = eyes_lib.lid_gap(face.points)
  w = eyes_lib.closed_weight(own[None] * np.array([[1.0], [0.5], [0.3], [0.15], [0.0]]), own)
  assert (w[:2] == 0).all() and (w[-1] == 1).all() and np.all(np.diff(w[:, 0]) >= 0)
  pg = render.PortraitGeometry.from_crop(photo, face.points, basis)
  parts = render.PartState.build(pg, bank)
  k = basis.exp_dim
  dyn = pg.codes.dyn[0].copy()
  dyn[k:k + 2] = 0.0                                       # both eyes shut
  fr = pg.frame(pg.codes.pose[0], dyn)
  shut = parts.warp(fr)
  plain = render.PartState.build(pg, None).warp(fr)
  diff = np.abs(shut.astype(int) - plain.astype(int)).sum(-1) > 6
  iod = np.linalg.norm(face.points[263, :2] - face.points[33, :2])
  ys, xs = np.nonzero(diff)
  assert diff.sum() > 100                                  # the exemplar shows ...
  eyes_y = face.points[[33, 263], 1].mean()
  assert np.abs(ys - eyes_y).max() < 0.5 * iod             # ... on the eyes only
  half = pg.codes.dyn[0].copy()
  half[k:k + 2] *= 0.6                                     # half shut: the portrait's own lid
  fr = pg.frame(pg.codes.pose[0], half)
  np.testing.assert_array_equal(parts.warp(fr), render.PartState.build(pg, None).warp(fr))


def test_lash_band_follows_a_closing_lid(basis, face):
  c = codes_lib.encode(face.points[None], basis, 512)
  k = basis.exp_dim
  dyn = c.dyn.copy()
  dyn[0, k:k + 2] = 0.0
  plain = codes_lib.decode(c, c.pose, dyn, basis, 512)[0]
  band = codes_lib.decode(c, c.pose, dyn, basis, 512, render=True)[0]
  rest = codes_lib.decode(c, c.pose, c.dyn, basis, 512, render=True)[0]
  for up, top in codes_lib.LASH_BAND:
    lid_drop = plain[up, 1] - rest[up, 1]
    assert lid_drop > 1.0
    assert band[top, 1] - plain[top, 1] == pytest.approx(codes_lib.LASH_FOLLOW * lid_drop,
                                                          rel=0.05)
  np.testing.assert_allclose(np.delete(band, [t for _, t in codes_lib.LASH_BAND], 0),
                             np.delete(plain, [t for _, t in codes_lib.LASH_BAND], 0))


def test_the_compositor_starts_as_the_reference_pasted_on_the_opening():
  import jax

  from vasa_jax.models import geo_decoder as gd
  r = 16
  x = np.zeros((1, r, r, gd.IN_CHANNELS), np.float32)
  x[..., :3] = 0.5                       # warped portrait
  x[0, 5:11, 3:13, 3] = 1.0              # driving opening
  x[..., 9:12] = -0.8                    # reference: a dark interior
  x[0, 5:11, 3:13, 12] = 1.0             # ... covering the opening
  net = gd.PartNet((4, 8), (0, 1), 2)
  params = net.init(jax.random.PRNGKey(0), x)["params"]
  out = jax.tree_util.tree_map(np.asarray, net.apply({"params": params}, x))
  assert out["alpha"][0, 8, 8] > 0.95 and out["alpha"][0, 1, 1] < 0.05
  np.testing.assert_allclose(out["rgb"][0, 8, 8], -0.8, atol=1e-5)
  assert not out["flow"].any() and not out["shade"].any() and not out["residual"].any()


def test_export_ships_the_bank_and_refuses_one_without_attribution(bank, basis, tmp_path):
  import subprocess
  import sys

  from conftest import load_stage_config
  from vasa_jax import animate as an
  fl = load_stage_config("face_latent").get_config("geo_tiny")
  md = load_stage_config("motion_dit").get_config("tiny,model.dyn_dim=44")
  anim = an.Animator.from_configs(fl, md, seed=0, face_basis=basis)
  d = int(md.model.motion_dim)
  src = str(tmp_path / "src")
  # a "trained" compositor: its output head (zero at initialisation) no longer zero
  fl_params = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.01, anim.engine.fl_params)
  bundle_lib.save(src, face_latent_config=fl, face_latent_params=fl_params,
                  motion_dit_config=md, motion_dit_params=anim.engine.md_params,
                  motion_stats={"mean": np.zeros(d), "std": np.ones(d)}, face_basis=basis,
                  part_bank=bank)
  assert os.path.isfile(os.path.join(src, banks.ATTRIBUTION_FILE))
  assert len(bundle_lib.load(src).part_bank) == len(bank)

  def export(*extra):
    return subprocess.run([sys.executable, "-m", "vasa_jax", "export", "--face-latent", src,
                           "--motion-dit", src, *extra], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  r = export("--out", str(tmp_path / "ok"), "--mouth-gain", "1.2")
  assert r.returncode == 0, r.stderr
  ok = bundle_lib.load(str(tmp_path / "ok"))
  assert len(ok.part_bank) == len(bank) and ok.sampler.mouth_gain == 1.2
  head = lambda b: np.asarray(b.face_latent_params["mouth"]["head"]["conv"]["kernel"], np.float32)
  assert np.abs(head(ok)).min() > 0.005                       # the trained compositor is kept
  r = export("--out", str(tmp_path / "copy"), "--copy-compositor")
  assert r.returncode == 0, r.stderr
  copy = bundle_lib.load(str(tmp_path / "copy"))               # the reference pasted as it is
  assert np.all(head(copy) == 0) and copy.meta["provenance"]["compositor"] == "copy"
  assert len(copy.part_bank) == len(bank)
  bad = tmp_path / "bad_bank"
  bank.save(str(bad))
  os.remove(bad / banks.ATTRIBUTION_FILE)
  r = export("--out", str(tmp_path / "no"), "--part-bank", str(bad))
  assert r.returncode == 2 and "attribution" in r.stderr
  assert len(r.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "no")


def test_mouth_gain_scales_each_opening_about_closed_lips(basis, face):
  c = codes_lib.encode(face.points[None], basis, 512)
  k = basis.exp_dim
  rng = np.random.default_rng(0)
  dyn = np.repeat(c.dyn, 16, 0)
  dyn[:, :k] += rng.normal(size=(16, k)) * np.sqrt(basis.exp_var)
  a = basis.exp_basis[:, 14, 1] - basis.exp_basis[:, 13, 1]
  base = float(codes_lib.inner_gap(c.canonical[0]))
  gap = base + (dyn[:, :k] - c.dyn[0, :k]) @ a
  out = codes_lib.open_mouth(dyn, c.dyn[0], base, basis, 1.5)
  new = base + (out[:, :k] - c.dyn[0, :k]) @ a
  np.testing.assert_allclose(new, np.where(gap > 0, 1.5 * gap, gap), atol=1e-5)
  np.testing.assert_array_equal(out[:, k:], dyn[:, k:])        # lids and gaze untouched
  np.testing.assert_allclose(codes_lib.open_mouth(dyn, c.dyn[0], base, basis, 1.0), dyn)


def test_lids_ease_off_past_the_portraits_openness():
  from vasa_jax import engine
  own = np.array([0.3, 0.25], np.float32)
  lids = np.array([[0.0, 0.0], [0.3, 0.25], [0.33, 0.27], [0.6, 0.6], [3.0, 3.0]], np.float32)
  out = engine.open_limit(lids, own)
  np.testing.assert_allclose(out[:2], lids[:2])                # closing / the own: untouched
  assert np.all(out <= own * engine.MAX_LID_OPEN + 1e-6)        # never past the limit
  assert np.all(np.diff(out, axis=0) >= 0)                      # still monotone


def test_expression_moves_each_iris_with_its_eye(basis, face):
  """The irises go where the gaze codes say: under expression alone (gaze codes fixed) an
  iris moves as its eye's outline does, so the measured gaze does not change."""
  c = codes_lib.encode(face.points[None], basis, 512)
  k = basis.exp_dim
  rng = np.random.default_rng(1)
  dyn = np.repeat(c.dyn, 8, 0)
  dyn[:, :k] += 2.0 * rng.normal(size=(8, k)) * np.sqrt(basis.exp_var)
  pts = codes_lib.decode(c, np.repeat(c.pose, 8, 0), dyn, basis, 512)
  back = codes_lib.encode(pts, basis, 512)
  drift = np.abs(back.dyn[:, k + 2:] - c.dyn[:, k + 2:]).max()
  assert drift < 0.03, drift
  # the basis as learned moves the irises within their eyes (it held the footage's gaze)
  own = np.einsum("tk,knd->tnd", dyn[:, :k] - c.dyn[:, :k], basis.exp_basis)
  rel = [own[:, sl, :2].mean(1) - own[:, list(ring), :2].mean(1)
         for sl, ring in ((lm.IRIS_A, lm.EYE_A_CONTOUR), (lm.IRIS_B, lm.EYE_B_CONTOUR))]
  width = np.linalg.norm(basis.template[133, :2] - basis.template[33, :2])
  assert np.abs(rel).max() / (codes_lib.EYEBALL_RATIO * width) > 2 * drift


def test_copy_compositor_fields_without_the_unet():
  """A compositor whose head is zero (fresh, or shipped by export --copy-compositor) gives the
  same fields in closed form as through its U-Net; a trained one is not mistaken for it."""
  import jax.numpy as jnp

  from conftest import load_stage_config
  from vasa_jax.models import geo_decoder as gd
  mc = load_stage_config("face_latent").get_config("geo_tiny").model
  dec = gd.GeometryDecoder(mc)
  (x,) = gd.dummy_inputs(mc, 2)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, x.shape).astype(np.float32))
  x = x.at[..., gd.BASE_CHANNELS + 3].set(jnp.asarray(rng.uniform(0, 1, x.shape[:3]), jnp.float32))
  params = jax.tree_util.tree_map(np.asarray, dec.init(jax.random.PRNGKey(3), x)["params"])
  params = __import__("flax").linen.meta.unbox(params)
  assert gd.is_copy(params)
  net = dec.apply({"params": params}, x)["mouth"]
  closed = gd.copy_fields(x, int(mc.mouth.get("grow", 2)))
  for k in ("alpha", "flow", "shade", "residual"):
    np.testing.assert_allclose(np.asarray(closed[k]), np.asarray(net[k]), atol=1e-5)
  assert float(np.asarray(net["alpha"]).std()) > 0.05           # the alpha is not trivial
  trained = jax.tree_util.tree_map(lambda v: v + 0.01, params)
  assert not gd.is_copy(trained)

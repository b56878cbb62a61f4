"""The volume renderer (vasa_jax/models/volume.py, renderers/volume.py, train/volume.py): VASA-1's
appearance volume and warping decoder driven by the face meshes' motion, its training pairs and
its trainer's guarantees."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import FAST_COMPILE, ListSource, load_stage_config, one_step_single_and_sharded
from vasa_jax.models import volume as vm
from vasa_jax.models import warp
from vasa_jax.ops.grid_sample import identity_grid_3d


def tiny_config(spec: str = ""):
  c = load_stage_config("face_latent").get_config("volume_tiny,batch_size=8" + spec)
  with c.unlocked():
    c.rng_impl, c.async_checkpoint = "unsafe_rbg", False
    c.compiler_options = ml_collections.ConfigDict(FAST_COMPILE)
  return c


def _mesh():
  """A face-sized sheet of vertices in volume units: a 22 x 22 grid 0.045 apart (the first
  478), a little curved in depth."""
  g = (np.arange(22) - 10.5) * 0.045
  x, y = np.meshgrid(g, g)
  z = -0.1 + 0.2 * (x ** 2 + y ** 2)
  return np.stack([x, y, z], -1).reshape(-1, 3)[:vm.NUM_VERTS].astype(np.float32)


# ----------------------------------------------------------------------------- warps

def test_rigid_yaw_pitch_roll_and_zoom():
  e = warp.half_extent()
  r = 0.5
  th = 0.3
  # yaw > 0 turns the face (head-frame -z) towards image right (+x)
  pose = jnp.array([[th, 0.0, 0.0, 0.0, 0.0, 0.65]])
  face = jnp.array([[0.0, 0.0, -r]]).reshape(1, 1, 1, 1, 3)
  q = warp.canonical_to_source(face, pose)
  np.testing.assert_allclose(np.asarray(q).reshape(3), [r * math.sin(th), 0.0, -r * math.cos(th)],
                             atol=1e-6)
  p = warp.driving_to_canonical(q, pose)
  np.testing.assert_allclose(np.asarray(p).reshape(3), [0.0, 0.0, -r], atol=1e-6)
  # a whole grid rotates rigidly about the y axis
  grid = identity_grid_3d(4, 5, 6)
  g = np.asarray(warp.driving_to_canonical(grid, pose))[0]
  rot = np.array([[math.cos(th), 0, -math.sin(th)], [0, 1, 0], [math.sin(th), 0, math.cos(th)]])
  np.testing.assert_allclose(g, np.asarray(grid) @ rot, atol=1e-6)   # R^T q as row vectors
  # pitch > 0: face goes down (+y); roll > 0: +x goes to +y (clockwise)
  q = warp.canonical_to_source(face, jnp.array([[0.0, th, 0.0, 0.0, 0.0, 0.65]]))
  assert float(q.reshape(3)[1]) > 0
  q = warp.canonical_to_source(jnp.array([1.0, 0, 0]).reshape(1, 1, 1, 1, 3),
                                   jnp.array([[0.0, 0.0, th, 0.0, 0.0, 0.65]]))
  assert float(q.reshape(3)[1]) > 0
  # tz is a zoom about the reference distance; tx shifts by its projection
  q = warp.canonical_to_source(jnp.array([1.0, 0, 0]).reshape(1, 1, 1, 1, 3),
                                   jnp.array([[0.0, 0.0, 0.0, 0.01, 0.0, 1.3]]))
  np.testing.assert_allclose(np.asarray(q).reshape(3), [0.5 + 0.5 * 0.01 / e, 0.0, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------- mesh flow

def test_mesh_flow_is_the_vertex_displacement_on_the_face_and_zero_away_from_it():
  vs = _mesh()
  vd = vs.copy()
  jaw = vs[:, 1] > 0.2
  vd[jaw] += [0.0, 0.05, 0.0]                       # the lower face moves down
  mid = int(np.argmin(np.abs(vs[:, 0]) + np.abs(vs[:, 1] - 0.35)))   # inside the moved part
  top = int(np.argmin(np.abs(vs[:, 0]) + np.abs(vs[:, 1] + 0.3)))    # far above it
  pts = np.stack([vd[mid], vd[top], [0.95, 0.95, 0.9]])[None]
  flow = np.asarray(warp.mesh_flow(pts, vs[None], vd[None], sigma=0.06, depth_sigma=0.3,
                                   floor=0.05))[0]
  # inside the moved part the driving point is sent back up to where it is on the portrait
  np.testing.assert_allclose(flow[0], [0.0, -0.05, 0.0], atol=0.005)
  np.testing.assert_allclose(flow[1], 0.0, atol=1e-4)                    # an unmoved part
  np.testing.assert_allclose(flow[2], 0.0, atol=1e-6)                    # far from the face
  same = np.asarray(warp.mesh_flow(pts, vs[None], vs[None]))
  np.testing.assert_allclose(same, 0.0, atol=1e-7)


@pytest.fixture(scope="module")
def tiny():
  c = tiny_config().model
  model = vm.VolumeDecoder(c)
  params = model.init(jax.random.PRNGKey(0), *vm.dummy_inputs(c, 1))["params"]
  return c, model, params


def test_a_fresh_decoder_samples_the_portrait_where_it_is_with_its_own_pose_and_mesh(tiny):
  """Zero-initialised residual: with the portrait's own pose and mesh, source_grid(driving_grid)
  is the identity (the portrait is reproduced); moving mouth vertices changes the grid only
  near them."""
  c, model, params = tiny
  pose = jnp.asarray([[0.2, -0.1, 0.05, 0.01, -0.02, 0.7]], jnp.float32)
  vs = jnp.asarray(_mesh()[None])
  grid = model.apply({"params": params}, pose, vs, vs, method=vm.VolumeDecoder.driving_grid)
  back = warp.canonical_to_source(grid, pose, ref_distance=c.ref_distance, fov_deg=c.fov_deg)
  d, h, w, _ = vm.volume_shape(c)
  np.testing.assert_allclose(np.asarray(back[0]), np.asarray(identity_grid_3d(d, h, w)),
                             atol=1e-4)
  moved = np.asarray(vs).copy()
  moved[0, moved[0, :, 1] > 0.3] += [0.0, 0.1, 0.0]
  grid2 = model.apply({"params": params}, pose, vs, jnp.asarray(moved),
                      method=vm.VolumeDecoder.driving_grid)
  change = np.abs(np.asarray(grid2) - np.asarray(grid)).max(-1)[0]
  assert change.max() > 0.05 and np.median(change) < 1e-3


def test_render_shares_a_batch_one_portrait_over_frames(tiny):
  c, model, params = tiny
  img = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3)), jnp.uint8)
  pose = jnp.asarray([warp.REFERENCE_POSE], jnp.float32)
  canon = model.apply({"params": params}, model.apply({"params": params}, img,
                                                      method=vm.VolumeDecoder.encode),
                      pose, method=vm.VolumeDecoder.prepare)
  vs = jnp.asarray(_mesh()[None])
  poses = jnp.tile(pose, (3, 1)).at[1, 0].set(0.3)
  out = model.apply({"params": params}, canon, poses, vs, jnp.tile(vs, (3, 1, 1)),
                    method=vm.VolumeDecoder.render)
  assert out.shape == (3, 32, 32, 3) and float(jnp.abs(out).max()) <= 1.0
  one = model.apply({"params": params}, canon, poses[1:2], vs, vs, method=vm.VolumeDecoder.render)
  np.testing.assert_allclose(np.asarray(out[1]), np.asarray(one[0]), atol=1e-5)
  assert float(jnp.abs(out[1] - out[0]).max()) > 1e-3          # a turned head renders otherwise


def test_bf16_compute_and_logical_axes():
  from flax import linen as nn
  c = tiny_config().model
  c.dtype = "bfloat16"
  model = vm.VolumeDecoder(c)
  variables = model.init(jax.random.PRNGKey(1), *vm.dummy_inputs(c, 1))
  specs = nn.get_partition_spec(variables)
  leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert leaves and all(any(a is not None for a in p) for p in leaves)   # every param named
  variables = nn.meta.unbox(variables)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
  img = jnp.zeros((1, 32, 32, 3), jnp.float32)
  v = jax.eval_shape(lambda p, x: model.apply(p, x, method=vm.VolumeDecoder.encode), variables, img)
  assert v.dtype == jnp.bfloat16
  out = model.apply(variables, *vm.dummy_inputs(c, 1))
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def test_every_variant_builds_with_the_geometry_codes_dims():
  from flax import linen as nn
  for v in ("volume_tiny", "volume", "volume_paper"):
    c = load_stage_config("face_latent").get_config(v)
    assert c.model.kind == "volume" and c.model.dyn_dim == c.model.exp_dim + 4
    p = jax.eval_shape(vm.VolumeDecoder(c.model).init, jax.random.PRNGKey(0),
                       *vm.dummy_inputs(c.model, 1))
    n = vm.param_count(nn.meta.unbox(p["params"]))
    assert n > {"volume_tiny": 1e4, "volume": 3e5, "volume_paper": 5e7}[v]


# ----------------------------------------------------------------------------- training pairs

def test_volume_pairs_of_real_clips_carry_the_pose_and_meshes_inference_uses():
  from test_geometry_animate import _basis, _geo_records
  from vasa_jax.data import geometry_pairs
  basis = _basis()
  recs = _geo_records(n_clips=1, frames=10)
  tr = geometry_pairs.VolumePairTransform(basis, 32, min_gap=3, flip=0.0, color=0.0)
  ex = tr.random_map(recs[0], np.random.default_rng(0))
  assert ex["source"].shape == ex["driving"].shape == (32, 32, 3)
  assert ex["verts_s"].shape == ex["verts_d"].shape == (478, 3)
  # the portrait's canonical mesh posed with its pose lands on its landmarks (volume units)
  pts = np.asarray(recs[0]["landmarks"], np.float32).reshape(10, -1, 3)
  q = np.asarray(warp.canonical_to_source(ex["verts_s"][None], ex["pose_s"][None]))[0]
  px = (q[:, :2] + 1) / 2 * 128
  err = [np.abs(px - pts[k, :, :2]).mean() for k in range(10)]
  assert min(err) < 2.0                                 # one of the clip's frames, to 2 px
  boxes = ex["regions"]
  assert boxes.shape == (3, 4) and (boxes[:, 2] > boxes[:, 0]).all()
  assert boxes[0, 0] > boxes[1, 2]                      # the mouth is below the eyes


# ----------------------------------------------------------------------------- trainer

def test_sharded_step_equals_single_device_and_learns():
  from vasa_jax.train import volume as trainer
  config = tiny_config()
  (p0, p1, m1), (_, p8, m8) = one_step_single_and_sharded(
      trainer, config, trainer.sanity_batch(config, batch=8))
  assert len(jax.devices()) == 8
  np.testing.assert_allclose(m1["loss/total"], m8["loss/total"], rtol=1e-4)
  # Adam moves each weight by up to lr (2e-4) whatever its gradient's size, so a weight whose
  # gradient is at rounding level may differ by a fraction of lr; a wrong batch split moves
  # the loss and whole updates (2 lr)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-4),
                         p1, p8)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p0),
                                                       jax.tree_util.tree_leaves(p1)))


def test_trains_on_clips_and_resumes_exactly(tmp_path):
  from test_geometry_animate import _basis, _geo_records
  from vasa_jax.train import common
  from vasa_jax.train import volume as trainer
  source, basis = ListSource(_geo_records()), _basis()
  full = trainer.train_and_evaluate(tiny_config(",steps=4,ckpt_every=2"), str(tmp_path / "a"),
                                    source=source, basis=basis)
  trainer.train_and_evaluate(tiny_config(",steps=2,ckpt_every=2"), str(tmp_path / "b"),
                             source=source, basis=basis)
  resumed = trainer.train_and_evaluate(tiny_config(",steps=4,ckpt_every=2"), str(tmp_path / "b"),
                                       source=source, basis=basis)
  np.testing.assert_allclose(resumed["loss/total"], full["loss/total"], rtol=1e-4)
  assert common.Checkpointer(str(tmp_path / "b")).latest_step() == 4
  assert (tmp_path / "b" / "face_basis.npz").is_file() and (tmp_path / "b" / "curve.jsonl").is_file()

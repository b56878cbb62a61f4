"""Stage-1 face latent model: shapes for every variant, the tiny model for real, warps, losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import FAST_COMPILE, fast_key, load_stage_config
from vasa_jax import losses
from vasa_jax.models import FaceLatentModel, PatchDiscriminator, param_count, volume_shape
from vasa_jax.models import warp as warp_lib
from vasa_jax.ops.grid_sample import grid_sample_3d, identity_grid_3d

M = FaceLatentModel


cfg_lib = load_stage_config("face_latent")

# CPU-friendly compilation: the default threefry PRNG and full XLA optimisation make the first
# init / grad compile take tens of seconds on a small shared CPU; rbg keys and -O0 keep the
# whole file well under a minute.
_FAST = FAST_COMPILE
_key = fast_key


def _run(fn, *args):
  """jax.jit(fn)(*args), compiled with cheap CPU options where the backend accepts them."""
  lowered = jax.jit(fn).lower(*args)
  try:
    compiled = lowered.compile(_FAST)
  except Exception:   # an option this XLA does not know: compile normally
    compiled = lowered.compile()
  return compiled(*args)


def _tiny(**over):
  c = cfg_lib.get_config("tiny").model
  for k, v in over.items():
    c[k] = v
  return c


def _images(seed, b, s):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, (b, s, s, 3)), jnp.float32)


@pytest.fixture(scope="module")
def tiny():
  c = _tiny()
  model = M(c)
  src, drv = _images(1, 2, c.image_size), _images(2, 2, c.image_size)
  variables = nn.meta.unbox(_run(model.init, _key(3), src, drv))
  return c, model, variables, src, drv


# ----------------------------------------------------------------------------- config

def test_config_variants_and_overrides():
  for v in cfg_lib.VARIANTS:
    c = cfg_lib.get_config(v)
    assert c.model.image_size % c.model.down == 0
    assert len(c.model.app_widths) == int(math.log2(c.model.down)) + 1
    assert c.mesh.data == -1 and c.mesh.fsdp == 1
  c = cfg_lib.get_config("demo,batch_size=4,model.dtype=bfloat16,optim.lr_g=1")
  assert c.batch_size == 4 and c.model.dtype == "bfloat16" and c.optim.lr_g == 1.0
  assert "configs/face_latent.py:demo" in cfg_lib.__doc__
  with pytest.raises(ValueError):
    cfg_lib.get_config("huge")
  with pytest.raises(KeyError):
    cfg_lib.get_config("tiny,model.nope=1")
  assert volume_shape(cfg_lib.get_config("paper").model) == (16, 64, 64, 96)
  assert volume_shape(cfg_lib.get_config("base").model) == (16, 64, 64, 32)
  assert volume_shape(cfg_lib.get_config("demo").model) == (8, 32, 32, 16)


# ----------------------------------------------------------------------------- shapes (abstract)

@pytest.mark.parametrize("variant", cfg_lib.VARIANTS)
def test_shapes_every_variant(variant):
  c = cfg_lib.get_config(variant).model
  model = M(c)
  s = c.image_size
  img = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), img, img)
  d, h, w, ch = volume_shape(c)
  enc = jax.eval_shape(lambda v, x: model.apply(v, x, method=M.encode), variables, img)
  assert enc["v_app"].shape == (1, d, h, w, ch)
  assert enc["z_id"].shape == (1, c.id_dim)
  assert enc["z_pose"].shape == (1, 6) and enc["z_dyn"].shape == (1, c.dyn_dim)
  mot = jax.eval_shape(lambda v, x: model.apply(v, x, method=M.encode_motion), variables, img)
  assert mot["z_pose"].shape == (1, 6) and mot["z_dyn"].shape == (1, c.dyn_dim)
  prep = jax.eval_shape(lambda v, e: model.apply(v, e["v_app"], e["z_id"], e["z_pose"],
                                                 e["z_dyn"], method=M.prepare), variables, enc)
  assert prep["canonical"].shape == (1, d, h, w, c.canon_channels)
  out = jax.eval_shape(lambda v, p, e: model.apply(v, p, e["z_pose"], e["z_dyn"], method=M.render),
                       variables, prep, enc)
  assert out.shape == (1, s, s, 3) and out.dtype == jnp.float32
  dvars = jax.eval_shape(PatchDiscriminator(c).init, jax.random.PRNGKey(0), img)
  dout = jax.eval_shape(lambda v, x: PatchDiscriminator(c).apply(v, x), dvars, img)
  assert len(dout) == c.disc.scales
  n_g, n_d = param_count(nn.meta.unbox(variables)), param_count(nn.meta.unbox(dvars))
  print(f"\n{variant}: generator {n_g / 1e6:.2f}M params, discriminator {n_d / 1e6:.2f}M")
  if variant == "demo":
    assert 1.5e6 <= n_g <= 5e6
  if variant == "base":
    assert 15e6 <= n_g <= 30e6
  if variant == "paper":
    assert 150e6 <= n_g <= 250e6


def test_params_carry_logical_axes():
  c = _tiny()
  s = c.image_size
  img = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
  variables = jax.eval_shape(M(c).init, jax.random.PRNGKey(0), img, img)
  specs = nn.get_partition_spec(variables)
  leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert leaves and all(isinstance(p, jax.sharding.PartitionSpec) for p in leaves)
  named = [p for p in leaves if any(a is not None for a in p)]
  assert len(named) == len(leaves)   # every parameter has at least one logical name
  mesh_specs = nn.logical_to_mesh(specs, cfg_lib.LOGICAL_AXIS_RULES)
  assert jax.tree_util.tree_leaves(mesh_specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


# ----------------------------------------------------------------------------- tiny, for real

def test_tiny_forward_and_split_equals_call(tiny):
  c, model, variables, src, drv = tiny
  u8 = jnp.asarray(np.round((np.asarray(src) + 1) * 127.5).astype(np.uint8))

  def run(v, src, drv, u8):
    out = model.apply(v, src, drv)
    enc = model.apply(v, src, method=M.encode)
    mot = model.apply(v, drv, method=M.encode_motion)
    prep = model.apply(v, enc["v_app"], enc["z_id"], enc["z_pose"], enc["z_dyn"], method=M.prepare)
    img = model.apply(v, prep, mot["z_pose"], mot["z_dyn"], method=M.render)
    enc8 = model.apply(v, u8, method=M.encode)
    # one prepared portrait (batch 1) renders a batch of frames
    prep1 = jax.tree_util.tree_map(lambda a: a[:1], prep)
    frames = model.apply(v, prep1, jnp.concatenate([mot["z_pose"], enc["z_pose"][:1]]),
                         jnp.concatenate([mot["z_dyn"], enc["z_dyn"][:1]]), method=M.render)
    dec = model.apply(v, enc["v_app"], enc["z_id"], enc["z_pose"], enc["z_dyn"], mot["z_pose"],
                      mot["z_dyn"], method=M.decode)
    return out, enc, mot, img, enc8, frames, dec

  out, enc, mot, img, enc8, frames, dec = _run(run, variables, src, drv, u8)
  assert frames.shape == (3,) + src.shape[1:]
  np.testing.assert_allclose(np.asarray(frames[0]), np.asarray(out["image"][0]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(dec), np.asarray(out["image"]), atol=1e-5)
  assert out["image"].shape == src.shape
  assert bool(jnp.all(jnp.isfinite(out["image"]))) and float(jnp.max(jnp.abs(out["image"]))) <= 1.0
  np.testing.assert_allclose(np.asarray(img), np.asarray(out["image"]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(mot["z_dyn"]), np.asarray(out["driving_dyn"]), atol=1e-5)
  # uint8 input is accepted and mapped to [-1, 1]
  np.testing.assert_allclose(np.asarray(enc8["z_dyn"]), np.asarray(enc["z_dyn"]), atol=5e-2)


def test_fresh_model_is_reference_pose_and_identity_warp(tiny):
  c, model, variables, src, drv = tiny
  d, h, w, _ = volume_shape(c)

  def run(v, src):
    enc = model.apply(v, src, method=M.encode)
    args = (enc["z_id"], enc["z_pose"], enc["z_dyn"])
    g_src = model.apply(v, *args, method=M.source_grid)
    g_drv = model.apply(v, *args, method=M.driving_grid)
    return enc, g_src, g_drv, grid_sample_3d(enc["v_app"], g_src)

  enc, g_src, g_drv, warped = _run(run, variables, src)
  ref = np.broadcast_to(np.asarray(warp_lib.REFERENCE_POSE, np.float32), (2, 6))
  np.testing.assert_allclose(np.asarray(enc["z_pose"]), ref, atol=1e-6)
  ident = np.broadcast_to(np.asarray(identity_grid_3d(d, h, w)), (2, d, h, w, 3))
  np.testing.assert_allclose(np.asarray(g_src), ident, atol=1e-5)
  np.testing.assert_allclose(np.asarray(g_drv), ident, atol=1e-5)
  # the identity warp passes the appearance volume through unchanged
  np.testing.assert_allclose(np.asarray(warped), np.asarray(enc["v_app"]), atol=1e-5)


def test_same_pose_zero_flow_composes_to_identity(tiny):
  c, model, variables, src, drv = tiny
  d, h, w, _ = volume_shape(c)
  ident = identity_grid_3d(d, h, w)
  pose = jnp.array([[0.4, -0.2, 0.3, 0.02, -0.01, 0.8], [-0.7, 0.1, -0.2, -0.03, 0.02, 0.55]])
  z_id = jnp.zeros((2, c.id_dim))
  z_dyn = jnp.asarray(np.random.default_rng(3).normal(size=(2, c.dyn_dim)), jnp.float32)
  kw = dict(ref_distance=c.ref_distance, fov_deg=c.fov_deg)

  def run(v, pose, z_id, z_dyn):
    flows = [model.apply(v, z_dyn, z_id, method=lambda m, a, b: m.flow_to_canonical(a, b)),
             model.apply(v, z_dyn, z_id, method=lambda m, a, b: m.flow_to_driving(a, b))]
    # driving voxel -> canonical (model grid, flow included) -> source (same pose, zero flow)
    to_canon = model.apply(v, z_id, pose, z_dyn, method=M.driving_grid)
    back = warp_lib.canonical_to_source(to_canon, pose, flows[0], **kw)
    # and the other order, analytically
    fwd = warp_lib.canonical_to_source(ident, pose, None, **kw)
    return flows, back, warp_lib.driving_to_canonical(fwd, pose, None, **kw)

  flows, back, fwd_back = _run(run, variables, pose, z_id, z_dyn)
  # the model's flows are exactly zero at initialisation, whatever the codes
  assert all(float(jnp.max(jnp.abs(f))) == 0.0 for f in flows)
  target = np.broadcast_to(np.asarray(ident), back.shape)
  np.testing.assert_allclose(np.asarray(back), target, atol=1e-5)
  np.testing.assert_allclose(np.asarray(fwd_back), target, atol=1e-5)


def test_rigid_yaw_pitch_roll_and_zoom():
  e = warp_lib.half_extent()
  r = 0.5
  th = 0.3
  # yaw > 0 turns the face (head-frame -z) towards image right (+x)
  pose = jnp.array([[th, 0.0, 0.0, 0.0, 0.0, 0.65]])
  face = jnp.array([[0.0, 0.0, -r]]).reshape(1, 1, 1, 1, 3)
  q = warp_lib.canonical_to_source(face, pose)
  np.testing.assert_allclose(np.asarray(q).reshape(3), [r * math.sin(th), 0.0, -r * math.cos(th)],
                             atol=1e-6)
  p = warp_lib.driving_to_canonical(q, pose)
  np.testing.assert_allclose(np.asarray(p).reshape(3), [0.0, 0.0, -r], atol=1e-6)
  # a whole grid rotates rigidly about the y axis
  grid = identity_grid_3d(4, 5, 6)
  g = np.asarray(warp_lib.driving_to_canonical(grid, pose))[0]
  rot = np.array([[math.cos(th), 0, -math.sin(th)], [0, 1, 0], [math.sin(th), 0, math.cos(th)]])
  np.testing.assert_allclose(g, np.asarray(grid) @ rot, atol=1e-6)   # R^T q as row vectors
  # pitch > 0: face goes down (+y); roll > 0: +x goes to +y (clockwise)
  q = warp_lib.canonical_to_source(face, jnp.array([[0.0, th, 0.0, 0.0, 0.0, 0.65]]))
  assert float(q.reshape(3)[1]) > 0
  q = warp_lib.canonical_to_source(jnp.array([1.0, 0, 0]).reshape(1, 1, 1, 1, 3),
                                   jnp.array([[0.0, 0.0, th, 0.0, 0.0, 0.65]]))
  assert float(q.reshape(3)[1]) > 0
  # tz is a zoom about the reference distance; tx shifts by its projection
  q = warp_lib.canonical_to_source(jnp.array([1.0, 0, 0]).reshape(1, 1, 1, 1, 3),
                                   jnp.array([[0.0, 0.0, 0.0, 0.01, 0.0, 1.3]]))
  np.testing.assert_allclose(np.asarray(q).reshape(3), [0.5 + 0.5 * 0.01 / e, 0.0, 0.0], atol=1e-6)


def test_training_outputs_losses_and_grads(tiny):
  c, model, variables, src, drv = tiny
  cross = _images(7, 2, c.image_size)
  disc = PatchDiscriminator(c)
  dvars = nn.meta.unbox(_run(disc.init, _key(1), src))
  weights = cfg_lib.get_config("tiny").loss
  batch = {"source": {"image": src, "pose": jnp.tile(jnp.array([[0.1, 0, 0, 0, 0, 0.6]]), (2, 1))},
           "driving": {"image": drv, "pose": jnp.zeros((2, 6))},
           "cross": {"image": cross, "pose": jnp.zeros((2, 6))},
           "has_pose": jnp.array([1, 0]), "cross_has_pose": jnp.array([0, 0]),
           "has_cross": jnp.array([1, 1])}

  def loss_fn(params):
    out = model.apply({"params": params}, src, drv, cross, method=M.training_outputs)
    fake = disc.apply(dvars, out["image"])
    real = disc.apply(dvars, drv)
    terms = losses.generator_losses(out, batch, weights, disc_fake=fake, disc_real=real)
    return terms["total"], terms

  (total, terms), grads = _run(jax.value_and_grad(loss_fn, has_aux=True), variables["params"])
  for k in ("l1", "ms_ssim", "laplacian", "gan", "feature_matching", "consistency", "identity",
            "pose", "total"):
    assert k in terms and np.isfinite(float(terms[k])), k
  gnorm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grads))))
  assert np.isfinite(gnorm) and gnorm > 0
  # the zero-initialised flow outputs receive gradient (so flows can learn)
  assert float(jnp.sum(jnp.abs(grads["flow_to_driving"]["out"]["conv"]["kernel"]))) > 0
  d = _run(lambda v: losses.discriminator_losses(disc.apply(v, drv), disc.apply(v, src)), dvars)
  assert np.isfinite(float(d["total"]))


def test_training_outputs_switches(tiny):
  """consistency=False / cross=None drop those renders; the reconstruction is unchanged."""
  c, model, variables, src, drv = tiny
  cross = _images(7, 2, c.image_size)
  full = _run(lambda v: model.apply(v, src, drv, cross, method=M.training_outputs), variables)
  lean = _run(lambda v: model.apply(v, src, drv, None, consistency=False,
                                    method=M.training_outputs), variables)
  assert "cons_a" in full and "cross_image" in full
  assert not any(k.startswith(("cons_", "cross_")) for k in lean)
  np.testing.assert_allclose(np.asarray(lean["image"]), np.asarray(full["image"]), atol=1e-5)
  only_cross = _run(lambda v: model.apply(v, src, drv, cross, consistency=False,
                                          method=M.training_outputs), variables)
  np.testing.assert_allclose(np.asarray(only_cross["cross_image"]),
                             np.asarray(full["cross_image"]), atol=1e-5)


def test_training_outputs_teacher_forces_labelled_dyn_dims(tiny):
  c, model, variables, src, drv = tiny
  # make the (zero-initialised) flows read z_dyn, so the render depends on it
  params = jax.tree_util.tree_map(lambda x: x, variables["params"])
  for name in ("flow_to_driving", "flow_to_canonical"):
    k = params[name]["out"]["conv"]["kernel"]
    params[name]["out"]["conv"]["kernel"] = 0.05 * jax.random.normal(_key(3), k.shape, k.dtype)
  v = {"params": params}
  lab = jnp.full((2, 4), 0.9)
  mask = jnp.array([1, 0])
  plain = _run(lambda v: model.apply(v, src, drv, None, consistency=False,
                                     method=M.training_outputs), v)
  forced = _run(lambda v: model.apply(v, src, drv, None, consistency=False,
                                      dyn_labels={"source": (lab, mask), "driving": (lab, mask)},
                                      method=M.training_outputs), v)
  # the encoder's own codes are returned unchanged (the dyn_labels loss trains them)
  np.testing.assert_allclose(np.asarray(forced["driving_dyn"]), np.asarray(plain["driving_dyn"]))
  diff = np.abs(np.asarray(forced["image"]) - np.asarray(plain["image"])).mean(axis=(1, 2, 3))
  assert diff[0] > 1e-4 and diff[1] < 1e-6     # only the labelled example is re-rendered


def test_bf16_compute():
  c = _tiny(dtype="bfloat16")
  model = M(c)
  src = _images(0, 1, c.image_size)
  variables = nn.meta.unbox(_run(model.init, _key(1), src, src))
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
  enc = jax.eval_shape(lambda v, x: model.apply(v, x, method=M.encode), variables, src)
  assert enc["v_app"].dtype == jnp.bfloat16
  out = _run(model.apply, variables, src, src)
  assert out["image"].dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out["image"])))
  d = PatchDiscriminator(c)
  g = _run(lambda x: losses.hinge_g_loss(d.apply(d.init(_key(2), x), x)), out["image"])
  assert np.isfinite(float(g))


# ----------------------------------------------------------------------------- losses

def test_image_losses():
  x = _images(0, 2, 32)
  y = jnp.clip(x + 0.3 * jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32),
               -1, 1)

  def run(x, y):
    g = jax.grad(lambda a: losses.ms_ssim_loss(a, y) + losses.laplacian_l1(a, y))(x)
    return dict(ssim_xx=losses.ssim(x, x), ms_xx=losses.ms_ssim(x, x), ms_xy=losses.ms_ssim(x, y),
                loss_xx=losses.ms_ssim_loss(x, x), lap_xx=losses.laplacian_l1(x, x),
                lap_xy=losses.laplacian_l1(x, y), l1_xy=losses.l1(x, y), grad=g,
                bands=losses.laplacian_pyramid(x, 3))

  r = _run(run, x, y)
  assert abs(float(r["ssim_xx"]) - 1.0) < 1e-5
  assert abs(float(r["ms_xx"]) - 1.0) < 1e-5
  assert float(r["ms_xy"]) < 0.95
  assert float(r["loss_xx"]) == pytest.approx(0.0, abs=1e-5)
  assert float(r["lap_xx"]) == 0.0 and float(r["lap_xy"]) > 0
  assert float(r["l1_xy"]) > 0
  assert bool(jnp.all(jnp.isfinite(r["grad"])))
  assert [b.shape[1] for b in r["bands"]] == [32, 16, 8]


def test_mouth_region_loss_weights_the_mouth_not_the_forehead():
  m = losses.mouth_mask(64, 64)
  assert m.shape == (64, 64) and m.max() == pytest.approx(1.0)
  assert m[38, 32] == pytest.approx(1.0) and m[6, 32] < 1e-3   # mouth vs forehead
  x = jnp.zeros((2, 64, 64, 3))
  mouth = _run(losses.mouth_region_loss, x, x.at[:, 36:41, 26:38].set(1.0))
  forehead = _run(losses.mouth_region_loss, x, x.at[:, 4:9, 26:38].set(1.0))
  assert float(mouth) > 0.05 and float(forehead) < 1e-3 * float(mouth)
  # the term enters generator_losses only with a positive weight
  out = {"image": x}
  batch = {"driving": {"image": x.at[:, 36:41, 26:38].set(1.0)}}
  on = losses.generator_losses(out, batch, {"l1": 1.0, "mouth": 2.0})
  off = losses.generator_losses(out, batch, {"l1": 1.0, "mouth": 0.0})
  assert "mouth" in on and "mouth" not in off
  assert float(on["total"]) == pytest.approx(float(off["total"]) + 2.0 * float(on["mouth"]),
                                             rel=1e-5)


def test_dyn_label_loss_names_mouth_and_blink_dims_where_labelled():
  mouth = jnp.array([[0.8, 0.2, 0.1], [0.0, 0.0, 0.0]])
  blink = jnp.array([0.0, 1.0])
  z = jnp.zeros((2, 8)).at[0, :3].set(mouth[0]).at[0, 3].set(0.0)
  both = jnp.array([1, 1])
  # example 0 matches exactly; example 1 (blink 1, z 0) is off by 1 in the blink dim only
  assert float(losses.dyn_label_loss(z, mouth, blink, both, both)) == pytest.approx(0.5)
  assert float(losses.dyn_label_loss(z, mouth, blink, both, jnp.array([1, 0]))) == 0.0
  # the free dims (4:) are not constrained
  assert float(losses.dyn_label_loss(z.at[:, 4:].set(9.0), mouth, blink, both,
                                     jnp.array([1, 0]))) == 0.0
  out = {"image": jnp.zeros((2, 8, 8, 3)), "source_dyn": z, "driving_dyn": z}
  frame = {"image": jnp.zeros((2, 8, 8, 3)), "mouth": mouth, "blink": blink}
  batch = {"source": frame, "driving": frame, "has_mouth": both, "has_blink": both}
  terms = losses.generator_losses(out, batch, {"dyn_labels": 2.0})
  assert float(terms["dyn_labels"]) == pytest.approx(0.5)
  assert float(terms["total"]) == pytest.approx(1.0)
  assert "dyn_labels" not in losses.generator_losses(out, batch, {"l1": 1.0})


def test_hinge_signs_and_feature_matching():
  big = [{"logits": jnp.full((2, 4, 4, 1), 5.0), "features": [jnp.ones((2, 4, 4, 2))]}]
  small = [{"logits": jnp.full((2, 4, 4, 1), -5.0), "features": [jnp.zeros((2, 4, 4, 2))]}]
  assert float(losses.hinge_d_loss(big, small)) == 0.0          # confident and right
  assert float(losses.hinge_d_loss(small, big)) == pytest.approx(12.0)   # 6 + 6
  assert float(losses.hinge_g_loss(big)) == -5.0                 # fooled D: low G loss
  assert float(losses.hinge_g_loss(small)) == 5.0
  assert float(losses.feature_matching(big, big)) == 0.0
  assert float(losses.feature_matching(big, small)) == 1.0


def test_latent_losses():
  a = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
  pose = jnp.array([[0.1, 0.0, 0.0, 0.0, 0.0, 0.6], [0.2, 0.1, 0.0, 0.0, 0.0, 0.7]])

  def run(a, pose):
    label, dyn = pose + 1.0, a
    return dict(
        id_same=losses.identity_loss(a, a), id_opp=losses.identity_loss(a, -a),
        id_masked=losses.identity_loss(a, -a, mask=jnp.array([0, 0])),
        pose_none=losses.pose_loss(pose, label, jnp.array([0, 0])),
        pose_one=losses.pose_loss(pose, label, jnp.array([1, 0])),
        pose_same=losses.pose_loss(pose, pose, jnp.array([1, 1])),
        pose_l2=losses.pose_loss(pose, label, jnp.array([1, 1]), kind="l2"),
        # x_a = render(pose_i, dyn_j) re-encodes to (pose_i, dyn_j); x_b to (pose_j, dyn_i)
        cons_zero=losses.consistency_loss(pose, dyn[::-1], pose[::-1], dyn,
                                          pose, dyn, pose[::-1], dyn[::-1]),
        cons_bad=losses.consistency_loss(pose, dyn, pose, dyn, pose + 0.1, dyn[::-1],
                                         pose[::-1], dyn))

  r = {k: float(v) for k, v in _run(run, a, pose).items()}
  assert r["id_same"] == pytest.approx(0.0, abs=1e-5)
  assert r["id_opp"] == pytest.approx(2.0, abs=1e-5)
  assert r["id_masked"] == 0.0
  assert r["pose_none"] == 0.0                 # no labels: masked out entirely
  assert r["pose_one"] == pytest.approx(1.0)
  assert r["pose_same"] == 0.0
  assert r["pose_l2"] == pytest.approx(1.0)
  assert r["cons_zero"] == pytest.approx(0.0, abs=1e-5)
  assert r["cons_bad"] > 0


def test_vgg_from_local_npz(tmp_path):
  rng = np.random.default_rng(0)
  widths = (4, 4, 8, 8)    # a small stand-in for VGG19's conv1_1..conv2_2
  arrays, cin = {}, 3
  for name, w in zip(("conv1_1", "conv1_2", "conv2_1", "conv2_2"), widths):
    arrays[f"{name}/kernel"] = rng.normal(0, 0.3, (3, 3, cin, w)).astype(np.float32)
    arrays[f"{name}/bias"] = np.zeros(w, np.float32)
    cin = w
  path = tmp_path / "vgg.npz"
  np.savez(path, **arrays)
  fn = losses.make_vgg_loss(str(path))     # reaches relu1_1 and relu2_1 only
  x = _images(0, 1, 16)
  same, diff = _run(lambda x: (fn(x, x), fn(x, -x)), x)
  assert float(same) == 0.0 and float(diff) > 0
  # torchvision layout is accepted too
  torch_arrays = {"features.0.weight": arrays["conv1_1/kernel"].transpose(3, 2, 0, 1),
                  "features.0.bias": arrays["conv1_1/bias"]}
  np.savez(tmp_path / "tv.npz", **torch_arrays)
  params, w = losses.load_vgg19_params(str(tmp_path / "tv.npz"))
  assert w == (4,)
  np.testing.assert_array_equal(np.asarray(params["params"]["conv1_1"]["kernel"]),
                                arrays["conv1_1/kernel"])

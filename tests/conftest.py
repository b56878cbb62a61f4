"""Shared fixtures. Eight simulated CPU devices so sharding is exercised on any machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Identical programs compiled again (each trainer run builds fresh jitted closures) come from
# XLA's persistent cache instead of a second compile.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"vasa_jax_test_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib

import numpy as np
import pytest

REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "real"
if not REAL.is_dir():
  REAL = pathlib.Path(os.environ.get("VASA_JAX_REAL", "/work/shared/real"))


@pytest.fixture(scope="session")
def real_dir():
  if not REAL.is_dir():
    pytest.skip("real media folder (../shared/real) not present")
  return REAL


def make_fake_records(n_clips=6, frames=12, size=32, identities=3, seed=0):
  """Records in the shared schema with frame content that encodes (clip, frame)."""
  from vasa_jax.data import records
  rng = np.random.default_rng(seed)
  recs = []
  for c in range(n_clips):
    f = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
      f[t, :, :, 0] = 10 * c + 5
      f[t, :, :, 1] = 10 * (t % 25) + 5          # frame index mod 25 (uint8 range)
      f[t, : size // 2, : size // 4, 2] = 250   # a bright patch on the left: flips are visible
    pose = np.stack([np.linspace(-0.2, 0.2, frames)] * 6, axis=1).astype(np.float32)
    pose[:, 5] = 0.6
    tracks = {"pose": pose, "gaze": np.full((frames, 2), 0.1, np.float32),
              "mouth": rng.uniform(size=(frames, 3)).astype(np.float32),
              "blink": np.zeros(frames, np.float32),
              "emotion_intensity": np.zeros(frames, np.float32)}
    audio = np.repeat(np.arange(frames, dtype=np.float32) / 100.0, records.SAMPLES_PER_FRAME)
    recs.append(records.make_record(
        frames=f, audio=audio, clip_id=f"clip{c}", identity=f"person{c % identities}",
        source="test", tracks=tracks,
        controls={"gaze": (0.1, -0.1), "distance": 0.6, "emotion": 1, "emotion_intensity": 0.5}))
  return recs


def make_fake_motion_records(n_clips=4, frames=25, motion_dim=50, size=32, identities=2, seed=0):
  """Records of a geometry motion dataset (the motion_latents schema: `make_fake_records` plus
  a stored motion track [T, motion_dim] of pose ++ codes): smooth random tracks, the head at
  0.6 m."""
  rng = np.random.default_rng(seed)
  recs = make_fake_records(n_clips=n_clips, frames=frames, size=size, identities=identities,
                           seed=seed)
  kernel = np.ones(5) / 5
  for r in recs:
    noise = rng.normal(0.0, 0.3, (frames + 4, motion_dim))
    m = np.stack([np.convolve(noise[:, j], kernel, mode="valid") for j in range(motion_dim)], 1)
    m[:, 5] = 0.6 + 0.02 * m[:, 5]
    r["motion"] = m[:frames].astype(np.float32)
  return recs


class ListSource:
  """A random-access source over decoded records, as tfds.data_source returns them."""

  def __init__(self, recs):
    self._recs = [self._as_read(r) for r in recs]

  @staticmethod
  def _as_read(r):
    out = dict(r)
    out["frames"] = np.asarray(r["frames"], dtype=object)
    for k in ("clip_id", "identity", "source"):
      out[k] = r[k].encode()
    return out

  def __len__(self):
    return len(self._recs)

  def __repr__(self):  # stable across processes: grain checks it when restoring iterator state
    return f"ListSource({[r['clip_id'] for r in self._recs]})"

  def __getitem__(self, i):
    return self._recs[int(i)]


@pytest.fixture(scope="session")
def fake_source():
  return ListSource(make_fake_records())


# Cheap CPU compiles for tests: -O0 XLA and rbg keys (the default threefry PRNG and full
# optimisation make the first init/grad compiles take tens of seconds on a small shared CPU).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_key(seed):
  import jax
  return jax.random.key(seed, impl="unsafe_rbg")


def load_stage_config(stage: str):
  """The configs/<stage>.py module (e.g. "face_latent", "motion_dit")."""
  from vasa_jax.config_utils import load_config_module
  return load_config_module(str(pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{stage}.py"))


def fast_tiny_config(stage: str, settings: dict | None = None, overrides: dict | None = None):
  """configs/<stage>.py:tiny set up for quick CPU tests (rbg keys, -O0 compiles, batch 8,
  synchronous checkpoints), then `settings` and `overrides` ("node.field" keys allowed)."""
  import ml_collections
  c = load_stage_config(stage).get_config("tiny")
  with c.unlocked():
    c.rng_impl = "unsafe_rbg"
    c.compiler_options = ml_collections.ConfigDict(FAST_COMPILE)
    c.batch_size = 8
    c.async_checkpoint = False
    for k, v in {**(settings or {}), **(overrides or {})}.items():
      node, *rest = k.split(".")
      if rest:
        c[node][rest[0]] = v
      else:
        c[k] = v
  return c


@pytest.fixture(scope="session")
def geo_tiny_bundle(tmp_path_factory):
  """A bundle of the default kind at tiny size (untrained geometry part decoder and MotionDiT,
  the shipped face basis, float16): what kind-agnostic Animator / CLI tests run on."""
  from vasa_jax import animate as an
  from vasa_jax import bundle as bundle_lib
  from vasa_jax.geometry import codes as codes_lib
  fl = load_stage_config("face_latent").get_config("geo_tiny")
  md = load_stage_config("motion_dit").get_config("tiny,model.dyn_dim=44")
  basis = codes_lib.FaceBasis.load(os.path.join(bundle_lib.default_dir(), bundle_lib.BASIS_FILE))
  anim = an.Animator.from_configs(fl, md, seed=0, face_basis=basis)
  d = int(md.model.motion_dim)
  stats = {"mean": np.zeros(d, np.float32), "std": np.full(d, 0.05, np.float32)}
  path = str(tmp_path_factory.mktemp("bundle") / "geo")
  bundle_lib.save(path, face_latent_config=fl, face_latent_params=anim.engine.fl_params,
                  motion_dit_config=md, motion_dit_params=anim.engine.md_params, motion_stats=stats,
                  face_basis=basis, dtype="float16")
  return path


@pytest.fixture(scope="session")
def geo_tiny_live_bundle(tmp_path_factory, geo_tiny_bundle):
  """geo_tiny_bundle with an untrained tiny live generator (configs/motion_dit.py:live_tiny)
  beside its MotionDiT."""
  import jax
  from flax import linen as nn
  from vasa_jax import bundle as bundle_lib
  from vasa_jax.models import motion_dit as md_lib
  b = bundle_lib.load(geo_tiny_bundle)
  live = load_stage_config("motion_dit").get_config("live_tiny,model.dyn_dim=44")
  params = nn.meta.unbox(md_lib.MotionDiT(live.model).init(
      jax.random.PRNGKey(1), *md_lib.dummy_inputs(live.model, 1)))["params"]
  path = str(tmp_path_factory.mktemp("bundle") / "geo_live")
  bundle_lib.save(path, face_latent_config=b.face_latent_config,
                  face_latent_params=b.face_latent_params,
                  motion_dit_config=b.motion_dit_config, motion_dit_params=b.motion_dit_params,
                  motion_stats=b.motion_stats, face_basis=b.face_basis, dtype="float16",
                  live_config=live, live_params=params)
  return path


# ----------------------------------------------------------------------------- trainers

def corrupt_call(monkeypatch, at: int, field):
  """Patches sharding.to_global so that its `at`-th call (1-based) gets a batch with NaN in
  `field` (a key path) at example 0; returns the list of calls made so far."""
  import jax
  from vasa_jax import sharding
  real, calls = sharding.to_global, []

  def to_global(batch, mesh):
    calls.append(1)
    if len(calls) == at:
      batch = jax.tree_util.tree_map(np.array, batch)    # a copy, the loader's arrays untouched
      node = batch
      for k in field[:-1]:
        node = node[k]
      node[field[-1]][0] = np.nan
    return real(batch, mesh)

  monkeypatch.setattr(sharding, "to_global", to_global)
  return calls


def checkpoint_states(workdir):
  """{step: train state as numpy} of every checkpoint in workdir."""
  import jax
  import orbax.checkpoint as ocp
  from vasa_jax.train import common
  ck = common.Checkpointer(workdir)
  try:
    return {s: jax.device_get(ck.manager.restore(
        s, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"])
            for s in ck.manager.all_steps()}
  finally:
    ck.close()


def assert_skipped_step(states, bad: int):
  """Checkpoint `bad` holds the state of checkpoint bad - 1 bit for bit except its step (the
  batch was consumed, no update applied; an applied or NaN update would differ), and the next
  step trained on with finite values."""
  import jax
  before, skipped, after = states[bad - 1], states[bad], states[bad + 1]
  assert (int(before["step"]), int(skipped["step"]), int(after["step"])) == (bad - 1, bad, bad + 1)
  for k in before:
    if k != "step":
      jax.tree_util.tree_map(np.testing.assert_array_equal, before[k], skipped[k])
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(after))
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(skipped["params"]),
                                                       jax.tree_util.tree_leaves(after["params"])))


def one_step_single_and_sharded(trainer, config, local):
  """A stage trainer's first step (`create_state`, `make_train_step`) on the batch `local`,
  on one device and on all 8: [(initial params, params, metrics)] for each, as numpy."""
  import jax
  from vasa_jax import sharding
  out = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(devices=devices)
    state, shardings = trainer.create_state(config, mesh, jax.random.key(0, impl="unsafe_rbg"))
    init = jax.device_get(state["params"])
    step = trainer.make_train_step(config, mesh, shardings)
    state, metrics = step(state, sharding.to_global(local, mesh))
    out.append((init, jax.device_get(state["params"]), jax.device_get(metrics)))
  return out


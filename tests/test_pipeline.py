"""grain pipelines: stage-2 windows, sharding, checkpointable iterators."""

import jax
import numpy as np
import pytest

from vasa_jax import sharding
from vasa_jax.data import pipeline, records


def _clip_frame(image):
  """Recovers (clip, frame) from the fake frame colours (see conftest.make_fake_records)."""
  return int(round((image[..., 0].mean() - 5) / 10)), int(round((image[..., 1].mean() - 5) / 10))


def test_stage2_windows(fake_source):
  it = iter(pipeline.stage2_loader(fake_source, batch_size=3, window=5, context=4, seed=3,
                                   with_frames=True, shard_index=0, shard_count=1))
  seen_masked = False
  for _ in range(6):
    b = next(it)
    assert b["audio"].shape == (3, 5 * 640) and b["prev_audio"].shape == (3, 4 * 640)
    assert b["pose"].shape == (3, 5, 6) and b["prev_mouth"].shape == (3, 4, 3)
    for n in range(3):
      t0 = int(b["start"][n])
      # Audio of frame t is t/100 in the fake records: the window's audio is aligned.
      np.testing.assert_allclose(b["audio"][n, ::640], (t0 + np.arange(5)) / 100, atol=1e-4)
      assert _clip_frame(b["frames"][n, 0])[1] == t0
      expect = (np.arange(t0 - 4, t0) >= 0).astype(np.float32)
      np.testing.assert_array_equal(b["prev_mask"][n], expect)
      np.testing.assert_array_equal(b["prev_pose"][n][expect == 0], 0)
      seen_masked |= expect.min() == 0
      valid = expect == 1
      np.testing.assert_allclose(b["prev_audio"][n, ::640][valid], (np.arange(t0 - 4, t0) / 100)[valid], atol=1e-4)
    np.testing.assert_allclose(b["control_gaze"], [[0.1, -0.1]] * 3)
  assert seen_masked


def _windows(source, **kw):
  """The stage-2 loader over `source`: random windows of 4 frames after 2 of context."""
  return pipeline.stage2_loader(source, batch_size=2, window=4, context=2, with_frames=True,
                                shard_index=0, shard_count=1, **kw)


def test_iterator_state_resumes_exactly(fake_source):
  it = iter(_windows(fake_source, seed=5))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  it2 = iter(_windows(fake_source, seed=5))
  it2.set_state(state)
  for e in expected:
    got = next(it2)
    np.testing.assert_array_equal(got["frames"], e["frames"])
    np.testing.assert_array_equal(got["audio"], e["audio"])


def test_shards_are_disjoint(fake_source):
  # Shard membership by record index: with shuffle off, shard k holds a contiguous block.
  src_len = len(fake_source)
  a = list(range(src_len))[: src_len // 2]
  b = list(range(src_len))[src_len // 2:]
  idx = []
  for shard in range(2):
    loader = pipeline.make_loader(fake_source, pipeline.Stage2Transform(2, 0, with_frames=True),
                                  batch_size=1, shuffle=False, num_epochs=1, shard_index=shard,
                                  shard_count=2)
    idx.append([_clip_frame(x["frames"][0, 0])[0] for x in loader])
  assert sorted(idx[0] + idx[1]) == list(range(src_len))
  assert not set(idx[0]) & set(idx[1]) and idx[0] == a and idx[1] == b


def test_global_batch_on_8_devices(fake_source):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh(data=4, fsdp=2)
  bs = sharding.per_process_batch_size(8, mesh)
  b = next(iter(pipeline.stage2_loader(fake_source, batch_size=bs, window=4, context=2, seed=0,
                                       with_frames=True, shard_index=0, shard_count=1)))
  g = sharding.to_global(b, mesh)
  x = g["frames"]
  assert isinstance(x, jax.Array) and x.shape == (8, 4, 32, 32, 3)
  assert len(x.addressable_shards) == 8
  assert {s.data.shape for s in x.addressable_shards} == {(1, 4, 32, 32, 3)}
  np.testing.assert_array_equal(np.asarray(x), b["frames"])
  with pytest.raises(ValueError):
    sharding.per_process_batch_size(6, mesh)


def test_concat_source_weights(fake_source):
  cat = pipeline.ConcatSource([fake_source, fake_source], repeats=[1, 2])
  assert len(cat) == 3 * len(fake_source)
  assert cat[len(fake_source) + 1]["clip_id"] == fake_source[1]["clip_id"]
  assert cat[2 * len(fake_source) + 2]["clip_id"] == fake_source[2]["clip_id"]


def test_identity_split_is_disjoint_and_stable():
  ids = [f"person{i}" for i in range(2000)]
  test = {i for i in ids if records.is_test_identity(i, 0.1)}
  assert 150 < len(test) < 250
  assert test == {i for i in ids if records.is_test_identity(i, 0.1)}


def test_worker_processes_give_the_same_batches(fake_source):
  def batches(workers):
    it = iter(_windows(fake_source, seed=9, worker_count=workers))
    return [next(it) for _ in range(3)]
  for a, b in zip(batches(0), batches(1)):
    np.testing.assert_array_equal(a["frames"], b["frames"])
    np.testing.assert_array_equal(a["prev_audio"], b["prev_audio"])


def test_stage2_controls_measured_from_geometry_motion(fake_source):
  recs = []
  for n, r in enumerate(fake_source[i] for i in range(len(fake_source))):
    t = int(r["num_frames"])
    m = np.zeros((t, 50), np.float32)
    m[:, 0] = np.linspace(-0.1, 0.3, t)       # head yaw turns right over the clip
    m[:, 1] = 0.05                            # pitch
    m[:, 5] = 0.6 + 0.01 * n                  # tz
    m[:, -2], m[:, -1] = -0.02, 0.03          # eyes: a little left and down in the head
    m[:, -4:-2] = 0.3                         # open lids ...
    m[3:5, -4:-2] = 0.05                      # ... and one blink
    own = n % 2 == 0                          # even clips carry their own controls
    recs.append({**r, "motion": m, "has_control_gaze": int(own), "has_control_distance": int(own)})
  it = iter(pipeline.stage2_loader(recs, batch_size=4, window=5, context=2, seed=0,
                                   with_motion=True, controls_from_motion=True,
                                   shard_index=0, shard_count=1))
  seen = set()
  for _ in range(4):
    b = next(it)
    assert b["has_control_gaze"].tolist() == [1] * 4
    assert b["has_control_distance"].tolist() == [1] * 4
    for n in range(4):
      w = b["motion"][n]
      own = abs(b["control_gaze"][n] - np.float32([0.1, -0.1])).max() < 1e-6
      if not own:       # measured: where the eyes point in the camera frame, and the distance
        np.testing.assert_allclose(b["control_gaze"][n], [w[:, 0].mean() - 0.02, 0.08], atol=1e-5)
        np.testing.assert_allclose(b["control_distance"][n], w[0, 5], atol=1e-6)
      seen.add(own)
      assert b["control_blink_rate"][n] == pytest.approx(60 * 25 / 12)   # 1 blink in 12 frames
  assert seen == {True, False}
  # measured_controls_only: the clips' own controls are replaced by the measured ones too
  it = iter(pipeline.stage2_loader(recs, batch_size=4, window=5, context=2, seed=0,
                                   with_motion=True, controls_from_motion=True,
                                   measured_controls_only=True, shard_index=0, shard_count=1))
  for _ in range(4):
    b = next(it)
    for n in range(4):
      w = b["motion"][n]
      np.testing.assert_allclose(b["control_gaze"][n], [w[:, 0].mean() - 0.02, 0.08], atol=1e-5)
      np.testing.assert_allclose(b["control_distance"][n], w[0, 5], atol=1e-6)
  lids = np.full((100, 50), 0.3, np.float32)
  lids[[10, 11, 13, 40, 41, 80], -4:-2] = 0.05  # a blink with a flutter, two more blinks
  assert pipeline.blink_onsets(lids).tolist() == [10, 40, 80]
  assert pipeline.blink_rate(lids) == pytest.approx(3 * 60 * 25 / 100)
  with pytest.raises(ValueError, match="with_motion"):
    pipeline.Stage2Transform(5, 2, controls_from_motion=True)

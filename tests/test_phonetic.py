"""The phonetic audio front end: labels from espeak-ng phone timings, augmentation, a fit
through the one training loop, the FeatureSource, saved weights."""

import os

import numpy as np
import pytest

from vasa_jax.models import phonetic as ph
from vasa_jax.train import phonetic as P


def test_visemes_of_espeak_phones():
  v = lambda s: ph.VISEMES[P.viseme_of(s)]            # noqa: E731
  assert [v(s) for s in ("p", "b", "m", "'m")] == ["bilabial"] * 4
  assert [v(s) for s in ("f", "v", "T", "S", "k", "r", "w")] == [
      "labiodental", "labiodental", "dental", "postalveolar", "velar", "r", "w"]
  assert [v(s) for s in ("'a", "aI", "A:", "i:", "I", "u:", "'O:", "@", "E", "_:", "_!")] == [
      "open", "open", "open", "close_front", "close_front", "rounded", "rounded", "mid", "mid",
      "silence", "silence"]


def test_corpus_labels_follow_the_phones():
  (u,) = P.make_corpus(1, seed=3, languages=("en-us",))
  n = len(u["viseme"])
  assert len(u["audio"]) == n * 640 and u["mouth"].shape == (n, 3)
  bil = u["viseme"] == ph.VISEMES.index("bilabial")
  opn = u["viseme"] == ph.VISEMES.index("open")
  if bil.any() and opn.any():                          # lips shut on /p b m/, open on /a/
    assert u["mouth"][bil, 0].mean() < 0.5 * u["mouth"][opn, 0].mean()
  assert len(set(u["viseme"].tolist())) >= 6


def test_augmented_crops_keep_audio_and_labels_aligned():
  rng = np.random.default_rng(0)
  corpus = P.make_corpus(3, seed=1, languages=("de", "es"))
  a, v, m, mask = P.crop_batch(rng, corpus, 6)
  assert a.shape == (6, P.CROP * 640) and v.shape == (6, P.CROP) and m.shape == (6, P.CROP, 3)
  assert np.isfinite(a).all() and np.abs(a).max() <= 1.0 and mask.sum() > 0
  a0, v0, m0, _ = P.crop_batch(np.random.default_rng(5), corpus, 2, augment=False)
  u = corpus[0]          # unaugmented crops are exact slices of an utterance
  assert any(np.array_equal(v0[k], u["viseme"][i:i + P.CROP])
             for k in range(2) for u in corpus for i in range(len(u["viseme"]) - P.CROP + 1)
             if np.array_equal(a0[k][:640], u["audio"][i * 640:(i + 1) * 640]))
  x = np.sin(np.arange(16000) / 5).astype(np.float32)
  assert P.reverb(rng, x).shape == x.shape and abs(P.noise(rng, x).std() - x.std()) > 1e-3


def test_fit_lowers_the_loss_and_the_source_round_trips(tmp_path):
  corpus = P.make_corpus(12, seed=2, languages=("en-us", "fr-fr"))
  cfg = ph.Config(hidden=32, embed=8, dilations=(1, 2))
  params, info = P.train(corpus, steps=60, batch=8, lr=3e-3, cfg=cfg, log_every=20)
  h = info["history"]
  assert [r["step"] for r in h] == [20, 40, 60] and h[-1]["loss"] < h[0]["loss"]
  ph.save(str(tmp_path / "w"), params, cfg, {"note": "test"})
  src = ph.load(str(tmp_path / "w"))
  assert src.cfg == cfg and src.meta["note"] == "test"
  audio = corpus[0]["audio"][:16000]
  f = np.asarray(src(audio[None]))
  assert f.shape == (1, 25, src.dim) and src.dim == 8 + 3 + len(ph.VISEMES)
  np.testing.assert_allclose(f[0, :, -len(ph.VISEMES):].sum(-1), 1.0, atol=1e-5)
  rep = P.validate(src, corpus[:2])
  assert set(rep) == {"clean", "noisy_reverberant", "utterances"}
  assert 0.0 <= rep["clean"]["viseme_acc"] <= 1.0
  with pytest.raises(FileNotFoundError, match="no phonetic encoder weights"):
    ph.load(str(tmp_path / "nothing"))


def test_the_bundled_front_end_is_shipped_and_documented():
  import os
  src = ph.load()                                        # vasa_jax/assets/phonetic
  ho = src.meta["held_out"]
  assert os.path.getsize(os.path.join(ph.default_dir(), ph.WEIGHTS)) < 3_000_000
  assert ho["clean"]["viseme_acc"] > 0.5 and ho["clean"]["bilabial_recall"] > 0.5
  assert ho["clean"]["mouth_open_r"] > ho["clean"]["loudness_open_r"]
  assert src.meta["training"]["command"].startswith("python -m vasa_jax.train.phonetic")


def test_stage2_hears_through_the_phonetic_front_end(tmp_path, geo_tiny_bundle):
  """model.audio_features=log_mel+phonetic: the config's input width follows, the trainer
  steps on log-mel ++ phonetic features, and a bundle carries the front end it heard with."""
  from conftest import ListSource, load_stage_config, make_fake_motion_records
  from vasa_jax import animate as an
  from vasa_jax import audio as audio_lib
  from vasa_jax import bundle as bundle_lib
  from vasa_jax.train import motion_dit as trainer
  md_mod = load_stage_config("motion_dit")
  md = md_mod.get_config("tiny,model.audio_features=log_mel+phonetic,model.dyn_dim=44")
  assert md.model.audio_in_dim == ph.feature_dim("log_mel+phonetic") == 160 + ph.load().dim
  feats = ph.audio_source(md.model)
  a = np.random.default_rng(0).normal(0, 0.1, (1, 16000)).astype(np.float32)
  f = np.asarray(feats(a))
  assert f.shape == (1, 25, md.model.audio_in_dim)
  np.testing.assert_allclose(f[..., :160], np.asarray(audio_lib.log_mel(a)), atol=1e-5)
  with md.unlocked():
    md.rng_impl, md.batch_size, md.async_checkpoint = "unsafe_rbg", 8, False
    md.motion_source, md.data.stats_batches, md.steps, md.ckpt_every = "dataset", 2, 2, 2
  d = md.model.motion_dim
  out = trainer.train_and_evaluate(md, str(tmp_path / "run"), source=ListSource(
      make_fake_motion_records(n_clips=4, frames=25, motion_dim=d)))
  assert np.isfinite(out["loss/loss"])
  geo = bundle_lib.load(geo_tiny_bundle)
  anim = an.Animator.from_configs(geo.face_latent_config, md, face_basis=geo.face_basis)
  path = bundle_lib.save(str(tmp_path / "b"), face_latent_config=geo.face_latent_config,
                         face_latent_params=geo.face_latent_params, motion_dit_config=md,
                         motion_dit_params=anim.engine.md_params,
                         motion_stats={"mean": np.zeros(d), "std": np.full(d, 0.05)},
                         face_basis=geo.face_basis)
  b = bundle_lib.load(path)
  assert b.phonetic_dir == str(tmp_path / "b" / "phonetic")
  again = an.Animator(path, render_batch=4)
  portrait = again.prepare_portrait(os.path.join(bundle_lib.default_dir(), "..", "examples",
                                                 "portrait.jpg"))
  m = np.concatenate([x for _, x in again.motion_windows(portrait, a[0], steps=2)])
  assert m.shape == (25, d) and np.isfinite(m).all()

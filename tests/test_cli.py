"""The `vasa-jax` command line as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vasa_jax import media

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None):
  return subprocess.run([sys.executable, "-m", "vasa_jax", *args], capture_output=True, text=True,
                        cwd=cwd, timeout=600)


def test_synth_writes_playable_clips_with_ground_truth(tmp_path):
  out = tmp_path / "s"
  r = run("synth", "--out", str(out), "--clips", "2", "--seconds", "2", "--size", "64",
          "--seed", "3", "--workers", "2")
  assert r.returncode == 0, r.stderr
  summary = json.loads(r.stdout)
  assert summary["clips"] == 2 and summary["frames"] == 100
  for i in range(2):
    mp4 = out / f"clip_{i:05d}.mp4"
    frames = media.read_video(str(mp4))
    assert frames.shape == (50, 64, 64, 3)
    audio = media.load_audio(str(mp4))
    assert abs(len(audio) / 16000 - 2.0) < 0.1 and np.abs(audio).max() > 0.05
    info = subprocess.run([media.ffmpeg_exe(), "-i", str(mp4)], capture_output=True, text=True).stderr
    assert "h264" in info and "aac" in info and "25 fps" in info
    gt = np.load(out / f"clip_{i:05d}.npz")
    assert gt["pose"].shape == (50, 6) and gt["mouth"].shape == (50, 3) and gt["blink"].shape == (50,)
    assert gt["gaze"].shape == (50, 2) and gt["emotion_intensity"].shape == (50,)
    meta = json.loads((out / f"clip_{i:05d}.json").read_text())
    assert meta["text"] and meta["phones"] and meta["identity"].startswith("synth-s3-")
  index = json.loads((out / "index.json").read_text())
  assert len(index["clips"]) == 2
  # Two clips of the default corpus are two different people.
  assert index["clips"][0]["identity"] != index["clips"][1]["identity"]


def test_synth_is_deterministic(tmp_path):
  a = run("synth", "--out", str(tmp_path / "a"), "--clips", "1", "--seconds", "1", "--size", "48",
          "--workers", "1", "--seed", "11")
  b = run("synth", "--out", str(tmp_path / "b"), "--clips", "1", "--seconds", "1", "--size", "48",
          "--workers", "1", "--seed", "11")
  assert a.returncode == 0 and b.returncode == 0
  ga, gb = np.load(tmp_path / "a" / "clip_00000.npz"), np.load(tmp_path / "b" / "clip_00000.npz")
  for k in ga.files:
    np.testing.assert_array_equal(ga[k], gb[k])


def test_bad_input_is_one_line_and_exit_2(tmp_path):
  for args in (["synth", "--out", str(tmp_path), "--clips", "0"],
               ["synth", "--out", str(tmp_path), "--size", "8"],
               ["data", "build", "no_such_dataset/x", "--data-dir", str(tmp_path)],
               ["data", "build", "talking_face_videos/r64", "--data-dir", str(tmp_path)],
               ["data", "build", "talking_face_videos/r64", "--data-dir", str(tmp_path),
                "--manual-dir", str(tmp_path / "missing")],
               ["data", "info", "synthetic_talking_heads/tiny", "--data-dir", str(tmp_path)],
               ["train", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path / "w")],
               ["train", "--config", "configs/face_latent.py:huge", "--workdir", str(tmp_path / "w")],
               ["train", "--config", "configs/face_latent.py:geo_tiny", "--workdir", str(tmp_path / "w"),
                "--config.no_such_field=1"]):
    r = run(*args, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 2, (args, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("vasa-jax: error:"), (args, r.stderr)
  assert not any(p.suffix == ".mp4" for p in tmp_path.rglob("*"))


def test_a_bug_keeps_its_traceback_while_bad_input_is_one_line(monkeypatch, capsys):
  """Only `InputError` (bad input the user can fix) and a missing path become the one-line
  error: a ValueError from a bug deep inside (numpy, a shape) is raised with its traceback."""
  import argparse
  from vasa_jax import cli
  from vasa_jax.errors import InputError

  class Parser:                       # a parser whose command is `func`
    def __init__(self, func):
      self.func = func

    def parse_known_args(self, argv):
      return argparse.Namespace(func=self.func), []

  def bug(args):
    return int(np.zeros(3).reshape(2, 2).sum())

  monkeypatch.setattr(cli, "build_parser", lambda: Parser(bug))
  with pytest.raises(ValueError, match="reshape"):
    cli.main([])

  def bad(args):
    raise media.MediaError("clip.mp4: not a video")

  monkeypatch.setattr(cli, "build_parser", lambda: Parser(bad))
  assert cli.main([]) == 2
  assert capsys.readouterr().err.strip() == "vasa-jax: error: clip.mp4: not a video"
  assert issubclass(media.MediaError, InputError)


def test_config_overrides_reach_the_config():
  from vasa_jax.cli import load_config
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = load_config(os.path.join(root, "configs/face_latent.py") + ":geo_tiny,batch_size=4",
                  ["--config.optim.lr=3e-3", "--config.model.dtype=bfloat16"])
  assert c.batch_size == 4 and c.optim.lr == 3e-3 and c.model.dtype == "bfloat16"


def test_negative_gaze_is_taken_as_typed():
  from vasa_jax import cli
  argv = cli.join_negative_values(["animate", "--image", "a.jpg", "--audio", "b.wav", "--out",
                                   "o.mp4", "--gaze", "-15,0", "--distance", "-0.5"])
  args = cli.build_parser().parse_args(argv)
  assert args.gaze == "-15,0" and args.distance == -0.5 and args.image == ["a.jpg"]
  assert cli._pair(args.gaze, "--gaze") == (-15.0, 0.0)
  # a flag's own value that merely starts with a dash-letter is left alone
  assert cli.join_negative_values(["--out", "-x"]) == ["--out", "-x"]


def test_out_that_is_neither_mp4_nor_folder_is_refused(tmp_path):
  from vasa_jax import cli
  img = os.path.join(ROOT, "vasa_jax", "assets", "examples", "portrait.jpg")
  aud = os.path.join(ROOT, "vasa_jax", "assets", "examples", "speech.flac")
  out = tmp_path / "result.txt"
  assert cli.main(["animate", "--image", img, "--audio", aud, "--out", str(out)]) == 2
  assert not out.exists()
  assert cli.main(["eval", "--help"]) == 0


def test_help_on_every_subcommand_exits_0():
  """Enumerated from the parser, so a new subcommand is covered without editing this test."""
  import argparse
  import contextlib
  import io

  from vasa_jax import cli
  parser = cli.build_parser()

  def commands(p, prefix=()):
    for action in p._actions:
      if isinstance(action, argparse._SubParsersAction):
        for name, sub in action.choices.items():
          yield prefix + (name,)
          yield from commands(sub, prefix + (name,))
  found = list(commands(parser))
  assert ("serve",) in found and ("data", "extract-motion") in found and ("eval",) in found
  for cmd in found + [("eval", w) for w in ("report", "reenact", "motion", "controls", "syncnet",
                                             "meshsync")]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
      try:
        code = cli.main([*cmd, "--help"])
      except SystemExit as e:
        code = e.code
    assert code == 0, cmd
    assert "usage:" in out.getvalue().lower(), cmd


def test_export_keeps_a_bundles_stage1_and_reads_the_runs_recorded_config(tmp_path,
                                                                           geo_tiny_bundle):
  """`vasa-jax export --face-latent BUNDLE --motion-dit RUN`: the bundle's stage 1 is kept
  as it is, the stage-2 EMA weights and statistics come from the run, and the run's config is
  the one it recorded (no --motion-dit-config)."""
  import jax
  from conftest import ListSource, fast_tiny_config, make_fake_motion_records
  from vasa_jax import bundle as bundle_lib
  from vasa_jax.train import common
  from vasa_jax.train import motion_dit as trainer
  md = fast_tiny_config("motion_dit", {"motion_source": "dataset", "model.dyn_dim": 44,
                                       "data.stats_batches": 2, "steps": 2, "ckpt_every": 2})
  run_dir = str(tmp_path / "md")
  trainer.train_and_evaluate(md, run_dir, source=ListSource(
      make_fake_motion_records(n_clips=4, frames=25, motion_dim=md.model.motion_dim)))
  src = geo_tiny_bundle
  bank = bundle_lib.default_dir()              # the shipped part bank (a geometry bundle's)
  r = run("export", "--face-latent", src, "--motion-dit", run_dir, "--out",
          str(tmp_path / "out"), "--part-bank", bank)
  assert r.returncode == 0, r.stderr
  out = bundle_lib.load(str(tmp_path / "out"))
  same = lambda a, b: all(np.array_equal(np.asarray(x), np.asarray(y))  # noqa: E731
                          for x, y in zip(jax.tree_util.tree_leaves(a),
                                          jax.tree_util.tree_leaves(b)))
  assert same(out.face_latent_params, bundle_lib.load(src).face_latent_params)
  ema, _ = common.restore_params(run_dir, md)
  assert same(out.motion_dit_params, ema)
  assert out.meta["provenance"]["face_latent_bundle"] == src
  assert out.motion_dit_config.motion_source == "dataset"      # the run's own record
  assert json.loads(r.stdout)["bytes"] > 0
  assert out.motion_dit_config.sampler.cfg_audio == md.sampler.cfg_audio
  # sampler defaults tuned after training travel in the bundle; a bad value is refused
  r = run("export", "--face-latent", src, "--motion-dit", run_dir, "--out",
          str(tmp_path / "tuned"), "--cfg-audio", "1.75", "--audio-lead", "0.5",
          "--part-bank", bank)
  assert r.returncode == 0, r.stderr
  tuned = bundle_lib.load(str(tmp_path / "tuned"))
  assert tuned.motion_dit_config.sampler.cfg_audio == 1.75 != md.sampler.cfg_audio
  assert tuned.meta["provenance"]["cfg_audio"] == 1.75
  assert tuned.sampler.audio_lead == 0.5 and bundle_lib.load(src).sampler.audio_lead == 0.0
  r = run("export", "--face-latent", src, "--motion-dit", run_dir, "--out",
          str(tmp_path / "bad"), "--cfg-audio", "-1")
  assert r.returncode != 0 and "--cfg-audio" in r.stderr and len(r.stderr.strip().splitlines()) == 1
  assert not os.path.exists(str(tmp_path / "bad"))
  r = run("export", "--face-latent", src, "--motion-dit", run_dir, "--out",
          str(tmp_path / "bad"), "--audio-lead", "9")
  assert r.returncode != 0 and "--audio-lead must be" in r.stderr
  assert not os.path.exists(str(tmp_path / "bad"))

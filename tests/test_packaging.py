"""The wheel built from this tree carries what inference needs (make dist-check installs it)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_carries_the_bundle_evaluators_examples_and_face_models(tmp_path):
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--no-build-isolation", ROOT, "-w", str(tmp_path)], check=True,
                 capture_output=True, timeout=300)
  (whl,) = glob.glob(str(tmp_path / "vasa_jax-*.whl"))
  names = set(zipfile.ZipFile(whl).namelist())
  assets = os.path.join(ROOT, "vasa_jax", "assets")
  want = {os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
          for d, _, fs in os.walk(assets) for f in fs if "__pycache__" not in d}
  assert want and want <= names, sorted(want - names)
  for must in ("vasa_jax/assets/demo/bundle.json", "vasa_jax/assets/models/face_landmark.tflite",
               "vasa_jax/assets/models/iris_landmark.tflite",
               "vasa_jax/assets/models/face_detection_full_range.tflite",
               "vasa_jax/assets/models/NOTICE.md", "vasa_jax/assets/models/LICENSE-Apache-2.0.txt",
               "vasa_jax/assets/examples/ATTRIBUTION.md", "vasa_jax/cli.py"):
    assert must in names, must
  meta = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
  assert meta and "vasa-jax = vasa_jax.cli:main" in zipfile.ZipFile(whl).read(meta[0]).decode()
  assert not [n for n in names if n.startswith(("tests/", "tools/", "benchmarks/"))]
  # The web demo's dependencies are an extra, not forced on every install.
  (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
  requires = [ln for ln in zipfile.ZipFile(whl).read(metadata).decode().splitlines()
              if ln.startswith(("Requires-Dist:", "Provides-Extra:"))]
  assert "Provides-Extra: serve" in requires
  assert any(ln.startswith("Requires-Dist: gradio==") and 'extra == "serve"' in ln
             for ln in requires), requires
  assert not any(ln.startswith("Requires-Dist: gradio") and "extra" not in ln for ln in requires)
  assert any(ln.startswith("Requires-Dist: jax==") for ln in requires)


def test_face_models_come_from_the_package():
  from vasa_jax import faces
  assert os.path.samefile(faces.model_dir(), os.path.join(ROOT, "vasa_jax", "assets", "models"))

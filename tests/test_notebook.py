"""notebooks/demo.ipynb runs headless (nbclient) with a tiny untrained model, so it never rots."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_notebook_executes(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "demo.ipynb"), as_version=4)
  monkeypatch.setenv("VASA_JAX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
  assert "first frames after" in text
  assert "watermark" in text.lower()
  for name in ("notebook_demo", "notebook_happy", "notebook_gaze_left", "notebook_still_head",
               "notebook_more_blinks", "notebook_reenact"):
    assert os.path.getsize(tmp_path / "out" / f"{name}.mp4") > 1000
  assert "frames driven by out/notebook_demo.mp4" in text

"""Datasets (TFDS builders) and grain input pipelines.

Importing this package imports no dataset code: inference uses `vasa_jax.faces` and
`vasa_jax.data.video` without TensorFlow Datasets. The builders are registered with TFDS by
`register_builders()` (what `tfds.builder("talking_face_videos/...")` needs first), and the
builder classes below load on first use."""

import importlib

_BUILDERS = {
    "MotionLatents": "motion_latents", "MotionLatentsConfig": "motion_latents",
    "SyntheticConfig": "synthetic_talking_heads", "SyntheticTalkingHeads": "synthetic_talking_heads",
    "TalkingFaceVideos": "talking_face_videos", "VideosConfig": "talking_face_videos",
}

__all__ = [*_BUILDERS, "register_builders"]


def register_builders() -> None:
  """Imports the three TFDS builders, which registers them by name with TFDS."""
  for module in sorted(set(_BUILDERS.values())):
    importlib.import_module(f"vasa_jax.data.{module}")


def __getattr__(name):
  if name in _BUILDERS:
    return getattr(importlib.import_module(f"vasa_jax.data.{_BUILDERS[name]}"), name)
  raise AttributeError(f"module 'vasa_jax.data' has no attribute {name!r}")

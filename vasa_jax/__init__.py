"""vasa-jax: lifelike audio-driven talking faces (a JAX/Flax re-creation of VASA-1).

Sub-packages are imported lazily so that `vasa-jax synth` and data tools start fast:
  vasa_jax.synth     procedural talking-head corpus (3D renderer, espeak-ng speech, motion)
  vasa_jax.data      TFDS builders and grain pipelines
  vasa_jax.media     image/audio/video input and output
  vasa_jax.sharding  meshes and global batches
"""

__version__ = "0.1.0"

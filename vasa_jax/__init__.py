"""vasa-jax: lifelike audio-driven talking faces (a JAX/Flax re-creation of VASA-1).

Sub-packages are imported lazily so that `vasa-jax synth` and data tools start fast:
  vasa_jax.synth      procedural talking-head corpus (3D renderer, espeak-ng speech, motion)
  vasa_jax.data       TFDS builders and grain pipelines
  vasa_jax.media      image/audio/video input and output
  vasa_jax.sharding   meshes and global batches
  vasa_jax.ops        trilinear grid sampling
  vasa_jax.geometry   face meshes, the motion codes, the dense warp, eyes, real mouth banks
  vasa_jax.renderers  motion -> frames: the mesh renderer and the volume renderer
  vasa_jax.models     the stage-1 networks (volume decoder, mouth compositor), MotionDiT
  vasa_jax.losses     stage-1 losses
  vasa_jax.audio      log-mel features at 25 fps, audio encoders
  vasa_jax.diffusion  noise schedule and x0 loss
  vasa_jax.sampling   jit-compiled DDIM sampler with multi-condition CFG, windows, streaming
  vasa_jax.train      trainers (both stages) and shared checkpoint/logging pieces
  vasa_jax.eval       evaluation (reenactment, motion, lip sync, the report)
"""

__version__ = "0.1.0"


def __getattr__(name):
  # `vasa_jax.Animator` without importing JAX at package import time.
  if name in ("Animator", "AnimationResult", "AnimateError"):
    from vasa_jax import animate
    return getattr(animate, name)
  raise AttributeError(f"module 'vasa_jax' has no attribute {name!r}")

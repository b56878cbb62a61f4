"""Trainers for both stages and what they share."""

# (stage, stage-1 kind) -> the trainer module; a stage-2 config has no kind (None).
TRAINERS = {
    ("face_latent", "geometry"): "vasa_jax.train.geo_decoder",
    ("face_latent", "volume"): "vasa_jax.train.volume",
    ("motion_dit", None): "vasa_jax.train.motion_dit",
}


def trainer_key(config) -> tuple:
  """(stage, kind) of a config: its row of TRAINERS."""
  stage = config.get("stage")
  if stage == "motion_dit":
    return stage, None
  model = config.get("model") or {}
  return stage, model.get("kind", "learned_flow")


def trainer_module(config) -> str | None:
  """The trainer module name for a config, or None when no trainer takes it."""
  return TRAINERS.get(trainer_key(config))


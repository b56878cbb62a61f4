"""Loading the per-stage ml_collections config files and applying `key=value` overrides.

The bottom of the artifacts layer: every other layer (data, train, eval, the CLI) resolves
config specs here, and bad input anywhere below the CLI is an `InputError`."""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import tempfile

import ml_collections

from vasa_jax.errors import InputError  # noqa: F401  (re-exported: the CLI's user error)

DEFAULT_DATA_DIR = os.environ.get("VASA_JAX_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


class ConfigError(InputError):
  """A config spec or override that cannot be applied."""


def load_config(spec: str, overrides=()):
  """`configs/face_latent.py:geo` (+ `--config.a.b=value` overrides) -> ConfigDict."""
  path, _, arg = spec.partition(":")
  try:
    module = load_config_module(path)
  except FileNotFoundError as e:
    raise ConfigError(str(e)) from None
  try:
    config = module.get_config(arg or None)
  except (ValueError, KeyError) as e:
    raise ConfigError(f"{spec}: {e}") from None
  for item in overrides:
    key, eq, _ = item.partition("=")
    if not key.startswith("--config.") or not eq:
      raise ConfigError(f"unrecognised argument {item!r} (overrides look like --config.a.b=value)")
    try:
      apply_override(config, item[len("--config."):])
    except KeyError:
      raise ConfigError(f"{key}: no such config field") from None
  return config


RUN_CONFIG = "config.json"    # the config a training run recorded in its workdir

log = logging.getLogger(__name__)


def record_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes the run's config into its workdir (atomically), so that later steps read the
  config the run really trained with instead of resolving a spec again (`run_config`)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_CONFIG)
  fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".json", dir=workdir)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(config.to_json_best_effort(indent=1))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def run_config(workdir: str, spec: str | None = None) -> ml_collections.ConfigDict:
  """The config a training workdir recorded (RUN_CONFIG); `spec` is only the fallback for a
  workdir written before runs recorded their config (a spec that disagrees with the record
  is ignored, with a warning). ConfigError when there is neither."""
  path = os.path.join(workdir, RUN_CONFIG)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        recorded = ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
      raise ConfigError(f"cannot read {path}: {e}") from None
    if isinstance(spec, str) and spec and not spec.endswith(".json"):
      model = lambda c: json.loads(c.to_json_best_effort()).get("model")  # noqa: E731
      if model(load_config(spec)) != model(recorded):
        log.warning("%s: using the config the run recorded, not %s (their models differ)",
                    workdir, spec)
    return recorded
  if not spec:
    raise ConfigError(f"{workdir} records no config ({RUN_CONFIG}); pass the config it was "
                      "trained with")
  return load_config(spec)


def load_config_module(path: str):
  """Imports a config file (configs/<stage>.py) by path."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  name = "vasa_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def apply_override(c: ml_collections.ConfigDict, item: str) -> None:
  """Sets `a.b.c=value` (value parsed as a Python literal, else kept as a string).

  The field must exist; an int given for a float field becomes a float.
  """
  if "=" not in item:
    raise ValueError(f"config override {item!r} is not key=value")
  key, raw = (s.strip() for s in item.split("=", 1))
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  *path, leaf = key.split(".")
  node = c
  try:
    for p in path:
      node = node[p]
    old = node[leaf]
  except (KeyError, AttributeError):
    raise KeyError(f"config override {key!r}: no such field") from None
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  with c.unlocked():
    node[leaf] = value

"""Weights folders on disk: the one writer for msgpack parameters + JSON metadata (bundles,
the evaluators' weights), atomic: a temporary folder beside the target, renamed onto it only
when every file is written, so a crash leaves the old folder or none, never half of one."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax import serialization

from vasa_jax.media import atomic_folder


class JsonConfig:
  """A frozen dataclass of a network's settings that round-trips through the JSON metadata of
  its weights folder (tuples are stored as lists; unknown keys are ignored)."""

  def to_json(self) -> dict:
    import dataclasses
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, d: dict):
    import dataclasses
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


def to_host(tree, dtype: str = "float32"):
  """Every leaf as a host numpy array of `dtype`."""
  return jax.tree_util.tree_map(lambda v: np.asarray(jax.device_get(v), dtype), tree)


def count_params(tree) -> int:
  return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


def write_weights_folder(out_dir: str, *, weights: Mapping[str, Any],
                         documents: Mapping[str, Any] = (), prefix: str = ".partial.",
                         extra: Callable[[str], None] | None = None) -> str:
  """Writes `out_dir` whole: each `weights[file]` tree (host arrays) as msgpack, each
  `documents[file]` as indented JSON, then `extra(tmp_folder)` for anything else. Returns the
  absolute folder."""
  out_dir = os.path.abspath(out_dir)
  with atomic_folder(out_dir, prefix=prefix) as tmp:
    for name, tree in weights.items():
      with open(os.path.join(tmp, name), "wb") as f:
        f.write(serialization.msgpack_serialize(tree))
    for name, doc in dict(documents).items():
      with open(os.path.join(tmp, name), "w") as f:
        json.dump(doc, f, indent=1)
    if extra is not None:
      extra(tmp)
  return out_dir

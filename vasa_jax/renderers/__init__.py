"""Renderers: motion (the measured face-mesh codes of vasa_jax.geometry.codes) -> frames.

One motion space, two ways to make the pixels, behind one interface (`base.Renderer`):

  geometry  (renderers/mesh.py, the default) the photo warped at its own resolution along the
            face meshes, the eye layer, and a real donor mouth put in by the mouth compositor.
  volume    (renderers/volume.py) VASA-1's 3D appearance volume and warping decoder, its warps
            driven by the dense 3D displacement of the same meshes plus a learned residual.

A stage-1 config names its kind in `model.kind`; `renderer_class(kind)` is the one place that
maps a kind to code (with the bundle loader, the only code that looks at the kind). The
learned-flow stage 1 ("learned_flow", or a config without a kind) is retired: docs/DESIGN.md
names the last commit that renders it.
"""

from __future__ import annotations

import importlib

from vasa_jax.errors import InputError

__all__ = ["KINDS", "RETIRED", "RendererError", "kind_of", "renderer_class"]

_MODULES = {"geometry": "vasa_jax.renderers.mesh", "volume": "vasa_jax.renderers.volume"}
KINDS = tuple(_MODULES)
RETIRED = "learned_flow"


class RendererError(InputError):
  """A stage-1 kind no renderer takes (one human-readable line)."""


def kind_of(model_config) -> str:
  """The stage-1 kind a `model` config names ("learned_flow" when it names none)."""
  return str(model_config.get("kind", RETIRED))


def renderer_class(kind: str):
  """The Renderer subclass for a stage-1 kind; RendererError for a retired or unknown one."""
  if kind == RETIRED:
    raise RendererError("a learned-flow stage 1; that stage 1 is retired (docs/DESIGN.md "
                        "names the last commit that renders it): export the motion model with "
                        "a geometry or volume stage 1 (`vasa-jax export`)")
  if kind not in _MODULES:
    raise RendererError(f"unknown stage-1 kind {kind!r}; this vasa-jax renders {KINDS}")
  return importlib.import_module(_MODULES[kind]).RENDERER

"""Inference bundles: the two stages' configs, EMA parameters and motion statistics in one folder.

A bundle is what `vasa_jax.Animator` loads (the bundled demo weights are one):

    DIR/bundle.json            format version, configs (JSON), parameter counts, provenance
    DIR/face_latent.msgpack    stage-1 generator EMA parameters (flax.serialization)
    DIR/motion_dit.msgpack     stage-2 MotionDiT EMA parameters
    DIR/live_motion_dit.msgpack   optional: the live generator (configs/motion_dit.py:live,
                               vasa_jax/live.py), a MotionDiT over short blocks with audio
                               look-ahead; same motion codes, statistics and audio front end
    DIR/motion_stats.json      per-dimension mean/std of the motion latents (stage-2 space)
    DIR/face_basis.npz         the face template and expression basis the motion codes live in
                               (vasa_jax.geometry.codes.FaceBasis)
    DIR/part_bank.npz          mesh-renderer bundles: real mouth interiors and closed lids
    DIR/PART_BANK_ATTRIBUTION.md   (vasa_jax.geometry.banks), with where each comes from

The stage-1 config's `model.kind` names its renderer (vasa_jax.renderers): "geometry" (the mesh
renderer; face_latent.msgpack holds the mouth compositor, vasa_jax.models.geo_decoder) or
"volume" (the appearance-volume decoder, vasa_jax.models.volume).

It is written from two training workdirs by

    vasa-jax export --face-latent WORKDIR1 --motion-dit WORKDIR2 --out DIR [--part-bank BANK]

Parameters are stored in float32, or float16 with `dtype="float16"` (half the size; they are
cast back to float32 on load). Nothing here needs orbax or the optimizer state, so loading is
fast and works on any device.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import serialization

from vasa_jax.errors import InputError


FORMAT = "vasa-jax-bundle"
VERSION = 3            # 3: the part bank; 2: geometry-grounded bundles (face_basis.npz)
META_FILE = "bundle.json"
FACE_FILE = "face_latent.msgpack"
DIT_FILE = "motion_dit.msgpack"
LIVE_FILE = "live_motion_dit.msgpack"
STATS_FILE = "motion_stats.json"
BASIS_FILE = "face_basis.npz"
PHONETIC_DIR = "phonetic"  # the frozen phonetic front end (model.audio_features with phonetic)


class BundleError(InputError):
  """A bundle folder is missing, incomplete or incompatible (one human-readable line)."""


@dataclasses.dataclass(frozen=True)
class SamplerDefaults:
  """How the bundle's motion model is sampled unless a call says otherwise (its config's
  `sampler` block): DDIM steps, eta (0: deterministic DDIM), the guidance scales, and the
  audio lead: each frame's motion is conditioned on the audio this many frames later
  (`engine.sample_motion`; it undoes a lag the training targets carry); the mouth gain: each
  generated mouth opening is scaled by it (geometry bundles; set against real footage)."""
  steps: int = 25
  eta: float = 0.0
  cfg_audio: float = 0.5
  cfg_gaze: float = 1.0
  audio_lead: float = 0.0
  cfg_expression: float | None = None   # audio guidance of the expression codes (None: cfg_audio)
  mouth_gain: float = 1.0               # asked mouth openings x this (codes.open_mouth)

  @classmethod
  def from_config(cls, config) -> "SamplerDefaults":
    s = config.get("sampler", None) if hasattr(config, "get") else None
    if not s:
      return cls()
    d = cls()
    return cls(steps=int(s.get("steps", d.steps)), eta=float(s.get("eta", d.eta)),
               cfg_audio=float(s.get("cfg_audio", d.cfg_audio)),
               cfg_gaze=float(s.get("cfg_gaze", d.cfg_gaze)),
               audio_lead=float(s.get("audio_lead", d.audio_lead)),
               cfg_expression=None if s.get("cfg_expression", None) is None
               else float(s["cfg_expression"]),
               mouth_gain=float(s.get("mouth_gain", d.mouth_gain)))


@dataclasses.dataclass
class Bundle:
  """Everything inference needs, in memory: both stages' configs and EMA parameters, the
  motion statistics, the face basis (geometry-grounded bundles), the provenance metadata, and,
  derived from the stage-2 config, the diffusion schedule it was trained with and its sampler
  defaults. `load` reads one from a folder, `save` writes one."""
  face_latent_config: Any
  face_latent_params: Any
  motion_dit_config: Any
  motion_dit_params: Any
  motion_stats: dict
  face_basis: Any = None
  meta: dict = dataclasses.field(default_factory=dict)
  path: str | None = None            # the folder it was read from (None: built in memory)
  live_config: Any = None            # the live generator (None: the bundle has none)
  live_params: Any = None

  @property
  def kind(self) -> str:
    """The stage-1 kind, as its config names it (`model.kind`): "geometry" (the mesh
    renderer), "volume" (the volume renderer) or "learned_flow" (the retired stage 1, which no
    Engine renders; a config without a kind is one)."""
    from vasa_jax import renderers
    return renderers.kind_of(self.face_latent_config.model)

  @property
  def schedule(self):
    """The noise schedule of the stage-2 run (its config's `diffusion` block)."""
    from vasa_jax import diffusion
    return diffusion.schedule_from_config(self.motion_dit_config)

  @property
  def sampler(self) -> SamplerDefaults:
    return SamplerDefaults.from_config(self.motion_dit_config)

  @property
  def part_bank(self):
    """The real mouth interiors and closed lids this bundle renders with (a geometry bundle's
    part_bank.npz, loaded on first use), or None when it has none (in-memory test bundles: the
    renderer then leaves the inside of the mouth to the warp)."""
    if "_bank" not in self.__dict__:
      from vasa_jax.geometry import banks
      bank = None
      if self.path and os.path.isfile(os.path.join(self.path, banks.BANK_FILE)):
        try:
          bank = banks.PartBank.load(self.path)
        except banks.BankError as e:
          raise BundleError(str(e)) from None
      elif int(self.meta.get("version", VERSION)) >= 3 and self.meta.get("part_bank"):
        raise BundleError(f"{self.path}: its part bank ({banks.BANK_FILE}) is missing")
      self.__dict__["_bank"] = bank
    return self.__dict__["_bank"]

  @property
  def phonetic_dir(self) -> str | None:
    """The phonetic front end's weights this bundle's motion model hears through: its own
    copy (DIR/phonetic), else the package's (an in-memory bundle)."""
    if self.path and os.path.isdir(os.path.join(self.path, PHONETIC_DIR)):
      return os.path.join(self.path, PHONETIC_DIR)
    return None

  @property
  def label(self) -> str:
    """Where it came from, for messages."""
    return self.path or "the bundle"


def default_dir() -> str:
  """The demo bundle shipped with the package (vasa_jax/assets/demo)."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "demo")


def _to_host(tree, dtype: str):
  def cast(x):
    x = np.asarray(jax.device_get(x))
    return x.astype(np.float16) if dtype == "float16" and x.dtype == np.float32 else x
  return jax.tree_util.tree_map(cast, tree)


def _from_host(tree):
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x, np.float32) if np.asarray(x).dtype == np.float16 else np.asarray(x),
      tree)


def _config_json(config: ml_collections.ConfigDict) -> Any:
  return json.loads(config.to_json_best_effort())


def save(out_dir: str, *, face_latent_config, face_latent_params, motion_dit_config,
         motion_dit_params, motion_stats: dict, dtype: str = "float32",
         provenance: dict | None = None, face_basis=None, phonetic_dir: str | None = None,
         part_bank=None, live_config=None, live_params=None) -> str:
  """Writes a bundle atomically (a temporary folder renamed onto out_dir).

  live_config / live_params: the live generator (optional), which must read and write the
  same motion codes with the same audio front end as the offline MotionDiT.
  face_basis: the FaceBasis the motion codes live in (required).
  part_bank: the PartBank (vasa_jax.geometry.banks) of real mouths and lids a mesh renderer
  renders with; refused unless every donor names its source and a licence that allows
  bundling."""
  from vasa_jax import renderers
  kind = renderers.kind_of(face_latent_config.model)
  try:
    renderer_cls = renderers.renderer_class(kind)
  except renderers.RendererError as e:
    raise BundleError(str(e)) from None
  if face_basis is None:
    raise BundleError("a stage 1 needs its face basis (face_basis=)")
  if face_basis.dyn_dim != int(face_latent_config.model.dyn_dim):
    raise BundleError(f"face basis dyn_dim {face_basis.dyn_dim} != face_latent model.dyn_dim "
                      f"{face_latent_config.model.dyn_dim}")
  if dtype not in ("float32", "float16"):
    raise BundleError(f"dtype must be float32 or float16, got {dtype!r}")
  if part_bank is not None:
    from vasa_jax.geometry import banks
    if not renderer_cls.uses_part_bank:
      raise BundleError(f"a part bank goes with the mesh renderer, not a {kind!r} stage 1")
    try:
      part_bank.check_attribution()
    except banks.BankError as e:
      raise BundleError(f"refusing the part bank: {e}") from None
  fl_dyn = int(face_latent_config.model.dyn_dim)
  md_dim = int(motion_dit_config.model.motion_dim)
  if md_dim != 6 + fl_dyn:
    raise BundleError(f"motion_dit motion_dim {md_dim} != 6 + face_latent dyn_dim {fl_dyn}")
  if len(motion_stats["mean"]) != md_dim:
    raise BundleError(f"motion statistics have {len(motion_stats['mean'])} dims, not {md_dim}")
  check_live(motion_dit_config, live_config, live_params)
  from vasa_jax import artifacts
  fl = _to_host(face_latent_params, dtype)
  md = _to_host(motion_dit_params, dtype)
  weights = {FACE_FILE: fl, DIT_FILE: md}
  if live_config is not None:
    weights[LIVE_FILE] = _to_host(live_params, dtype)
  meta = {
      "format": FORMAT, "version": VERSION, "dtype": dtype,
      "face_latent": {"config": _config_json(face_latent_config),
                      "params": artifacts.count_params(fl),
                      "kind": kind},
      "motion_dit": {"config": _config_json(motion_dit_config),
                     "params": artifacts.count_params(md)},
      "provenance": provenance or {},
      **({"live_motion_dit": {"config": _config_json(live_config),
                              "params": artifacts.count_params(weights[LIVE_FILE])}}
         if live_config is not None else {}),
      "part_bank": None if part_bank is None else {
          "donors": len(part_bank.donors), "mouth_entries": len(part_bank),
          "lid_entries": part_bank.num_lids},
  }
  stats = {"mean": [float(x) for x in motion_stats["mean"]],
           "std": [float(x) for x in motion_stats["std"]]}
  phonetic = "phonetic" in str(motion_dit_config.model.get("audio_features", "log_mel"))
  if phonetic:
    from vasa_jax.models import phonetic as phonetic_lib
    phonetic_dir = phonetic_dir or phonetic_lib.default_dir()
    phonetic_lib.load(phonetic_dir)           # refuse missing / incompatible weights now

  def extra(tmp):
    face_basis.save(os.path.join(tmp, BASIS_FILE))
    if part_bank is not None:
      part_bank.save(tmp)
    if phonetic:                            # the bundle carries the front end it heard with
      import shutil
      shutil.copytree(phonetic_dir, os.path.join(tmp, PHONETIC_DIR))
  return artifacts.write_weights_folder(
      out_dir, weights=weights,
      documents={STATS_FILE: stats, META_FILE: meta}, prefix=".bundle.", extra=extra)


def load(path: str | None = None) -> Bundle:
  """The Bundle in a folder (default: the bundled demo)."""
  path = os.path.abspath(os.fspath(path or default_dir()))
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isdir(path):
    raise BundleError(f"checkpoint folder not found: {path}")
  if not os.path.isfile(meta_path):
    raise BundleError(f"{path} is not a vasa-jax bundle (no {META_FILE}); make one from "
                      "training workdirs with `vasa-jax export`")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise BundleError(f"cannot read {meta_path}: {e}") from None
  if meta.get("format") != FORMAT or int(meta.get("version", -1)) > VERSION:
    raise BundleError(f"{path}: unsupported bundle format {meta.get('format')!r} "
                      f"version {meta.get('version')!r} (this vasa-jax reads {FORMAT} v{VERSION})")
  parts = {}
  stages = [("face_latent", FACE_FILE), ("motion_dit", DIT_FILE)]
  if meta.get("live_motion_dit"):
    stages.append(("live_motion_dit", LIVE_FILE))
  for stage, fname in stages:
    fpath = os.path.join(path, fname)
    try:
      with open(fpath, "rb") as f:
        params = serialization.msgpack_restore(f.read())
    except (OSError, ValueError, TypeError) as e:
      raise BundleError(f"cannot read {fpath}: {type(e).__name__}: {e}") from None
    name = "live" if stage == "live_motion_dit" else stage
    parts[f"{name}_params"] = _from_host(params)
    parts[f"{name}_config"] = ml_collections.ConfigDict(meta[stage]["config"])
  try:
    with open(os.path.join(path, STATS_FILE)) as f:
      stats = json.load(f)
    parts["motion_stats"] = {"mean": np.asarray(stats["mean"], np.float32),
                             "std": np.asarray(stats["std"], np.float32)}
  except (OSError, ValueError, KeyError) as e:
    raise BundleError(f"cannot read {os.path.join(path, STATS_FILE)}: {e}") from None
  from vasa_jax import renderers
  if renderers.kind_of(parts["face_latent_config"].model) != renderers.RETIRED:
    from vasa_jax.geometry.codes import FaceBasis
    try:
      parts["face_basis"] = FaceBasis.load(os.path.join(path, BASIS_FILE))
    except (OSError, ValueError) as e:
      raise BundleError(f"{path}: cannot read the face basis: {e}") from None
  return Bundle(meta=meta, path=path, **parts)


def check_live(motion_dit_config, live_config, live_params) -> None:
  """BundleError unless a live generator fits beside the offline MotionDiT: a live config
  (live.block > 0, shorter than its window), the same motion dim and audio features."""
  if live_config is None and live_params is None:
    return
  if live_config is None or live_params is None:
    raise BundleError("a live generator needs both its config and its parameters")
  block = int(live_config.get("live", {}).get("block", 0) or 0)
  window = int(live_config.model.window)
  if not 0 < block < window:
    raise BundleError(f"the live generator's live.block {block} must be in 1..window-1 "
                      f"(window {window}); train it with configs/motion_dit.py:live")
  for key in ("motion_dim", "audio_features", "audio_in_dim"):
    if live_config.model.get(key) != motion_dit_config.model.get(key):
      raise BundleError(f"the live generator's model.{key} {live_config.model.get(key)!r} "
                        f"differs from the motion model's {motion_dit_config.model.get(key)!r}")


def check_params(params, reference, what: str) -> None:
  """Raises BundleError unless `params` has the tree structure and shapes of `reference`."""
  flat_p = {jax.tree_util.keystr(k): np.shape(v)
            for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  flat_r = {jax.tree_util.keystr(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_flatten_with_path(reference)[0]}
  missing = sorted(set(flat_r) - set(flat_p))
  extra = sorted(set(flat_p) - set(flat_r))
  if missing or extra:
    raise BundleError(f"{what} parameters do not match the bundle's config (missing "
                      f"{missing[:2]}, unexpected {extra[:2]})")
  bad = [k for k in flat_r if tuple(flat_p[k]) != flat_r[k]]
  if bad:
    raise BundleError(f"{what} parameter {bad[0]} has shape {flat_p[bad[0]]}, the config "
                      f"expects {flat_r[bad[0]]}")

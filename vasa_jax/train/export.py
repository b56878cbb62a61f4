"""`vasa-jax export`: a bundle from training runs or other bundles (vasa_jax/bundle.py holds
the format; this is where run checkpoints, recorded configs, statistics and the part bank are
gathered into one)."""

from __future__ import annotations

import os

from vasa_jax import bundle as bundle_lib
from vasa_jax import config_utils
from vasa_jax.data import motion as motion_lib
from vasa_jax.errors import InputError
from vasa_jax.train import common

def _bundle_at(path: str):
  """The bundle in folder `path`, or None when it is not one (a training workdir); a broken
  bundle is a BundleError (an InputError)."""
  if not os.path.isfile(os.path.join(path, bundle_lib.META_FILE)):
    return None
  return bundle_lib.load(path)


def export(face_latent: str, motion_dit: str, out: str, *, face_latent_config: str | None = None,
           motion_dit_config: str | None = None, weights: str = "ema", dtype: str = "float32",
           part_bank: str | None = None, copy_compositor: bool = False,
           tuned: dict | None = None, live_motion_dit: str | None = None) -> dict:
  """Writes a bundle to `out` from a stage-1 source and a stage-2 source; returns {"bundle":
  path, "bytes": size}. Each source is a training workdir (its EMA or raw weights, the config
  it recorded, else the given spec) or a bundle (its stage kept as it is). `tuned`: sampler
  defaults tuned after training (cfg_audio, cfg_gaze, cfg_expression, audio_lead,
  mouth_gain), checked against the range every call accepts. A mesh-renderer stage 1 needs its
  part bank when its renderer uses one (`part_bank`, else the stage-1 bundle's or the run
  config's data.part_bank);
  copy_compositor ships the copy compositor (the donor reference pasted on the opening)
  instead of trained weights. live_motion_dit: the live generator's workdir or a bundle
  holding one (default: the stage-2 bundle's, if it has one). InputError (one line) for
  anything the user can fix."""
  tuned = dict(tuned or {})
  stage1_bundle = _bundle_at(face_latent)   # a bundle: its stage 1 kept, its stage 2 swapped
  if stage1_bundle is not None:
    fl_cfg = stage1_bundle.face_latent_config
    face_latent_config = (stage1_bundle.meta.get("provenance", {}).get("face_latent_config")
                          or "the bundle's")
  else:
    recorded = os.path.join(face_latent, config_utils.RUN_CONFIG)
    if not os.path.isfile(recorded) and not face_latent_config:
      raise InputError(f"{face_latent} records no config ({config_utils.RUN_CONFIG}): give "
                       "--face-latent-config configs/face_latent.py:VARIANT")
    fl_cfg = config_utils.run_config(face_latent, face_latent_config)
    if os.path.isfile(recorded):
      face_latent_config = recorded
  stage2_bundle = _bundle_at(motion_dit)    # a bundle: its stage 2 kept, its stage 1 swapped
  if stage2_bundle is not None:
    md_cfg = stage2_bundle.motion_dit_config
  else:
    md_recorded = os.path.isfile(os.path.join(motion_dit, config_utils.RUN_CONFIG))
    md_cfg = config_utils.run_config(motion_dit, motion_dit_config or (
        None if md_recorded else "configs/motion_dit.py:demo"))
  if tuned:
    from vasa_jax import engine as engine_lib
    try:        # the range every sampling call accepts, so no call refuses the default
      engine_lib.SampleOptions(**tuned).resolved(bundle_lib.SamplerDefaults.from_config(md_cfg))
    except engine_lib.AnimateError as e:
      raise InputError("--" + str(e).replace("_", "-", 1)) from None
    with md_cfg.unlocked():
      md_cfg.sampler.update(tuned)
  from vasa_jax import renderers
  try:
    renderer_cls = renderers.renderer_class(renderers.kind_of(fl_cfg.model))
  except renderers.RendererError as e:
    raise InputError(f"--face-latent: {e}") from None
  try:
    key = "ema" if weights == "ema" else "params"
    if stage1_bundle is not None:
      fl_params, face_basis = stage1_bundle.face_latent_params, stage1_bundle.face_basis
    else:
      from vasa_jax.geometry import codes as codes_lib
      face_basis = codes_lib.FaceBasis.load(os.path.join(face_latent, codes_lib.BASIS_FILE))
      fl_params, _ = common.restore_params(face_latent, fl_cfg, key=key)
    if stage2_bundle is not None:
      md_params = stage2_bundle.motion_dit_params
      md_step = stage2_bundle.meta.get("provenance", {}).get("motion_dit_step")
    else:
      md_params, md_step = common.restore_params(motion_dit, md_cfg, key=key)
  except FileNotFoundError as e:
    raise InputError(str(e)) from None
  live_cfg = live_params = live_step = None
  live_src = live_motion_dit or (motion_dit if stage2_bundle is not None
                                 and stage2_bundle.live_config is not None else None)
  if live_src:
    live_bundle = _bundle_at(live_src)
    if live_bundle is not None:
      if live_bundle.live_config is None:
        raise InputError(f"--live-motion-dit: the bundle {live_src} has no live generator")
      live_cfg, live_params = live_bundle.live_config, live_bundle.live_params
      live_step = live_bundle.meta.get("provenance", {}).get("live_motion_dit_step")
    else:
      if not os.path.isfile(os.path.join(live_src, config_utils.RUN_CONFIG)):
        raise InputError(f"--live-motion-dit: {live_src} is neither a bundle nor a training "
                         f"workdir with its {config_utils.RUN_CONFIG}")
      live_cfg = config_utils.run_config(live_src, None)
      try:
        live_params, live_step = common.restore_params(
            live_src, live_cfg, key="ema" if weights == "ema" else "params")
      except FileNotFoundError as e:
        raise InputError(str(e)) from None
  if copy_compositor:
    if not hasattr(renderer_cls, "copy_params"):
      raise InputError("--copy-compositor is for mesh-renderer (geometry) stage 1 bundles")
    fl_params = renderer_cls.copy_params(fl_cfg.model)
  if stage2_bundle is not None:
    stats = stage2_bundle.motion_stats
  else:
    stats_path = os.path.join(motion_dit, motion_lib.STATS_FILE)
    if not os.path.isfile(stats_path):
      raise InputError(f"no {motion_lib.STATS_FILE} in {motion_dit}")
    stats = motion_lib.load_stats(stats_path)
  bank = None
  if renderer_cls.uses_part_bank:
    from vasa_jax.geometry import banks
    where = part_bank or (stage1_bundle.path if stage1_bundle is not None
                               and stage1_bundle.part_bank is not None else "") or \
        fl_cfg.get("data", {}).get("part_bank", "")
    if not where:
      raise InputError("a geometry bundle needs its part bank: --part-bank DIR (built by "
                       "`vasa-jax data build-part-bank`)")
    try:
      bank = banks.PartBank.load(where)
    except banks.BankError as e:
      raise InputError(f"--part-bank: {e}") from None
  try:
    path = bundle_lib.save(out, face_latent_config=fl_cfg, face_latent_params=fl_params,
                        motion_dit_config=md_cfg, motion_dit_params=md_params,
                        motion_stats=stats, dtype=dtype,
                        face_basis=face_basis, part_bank=bank,
                        live_config=live_cfg, live_params=live_params,
                        phonetic_dir=None if stage2_bundle is None else stage2_bundle.phonetic_dir,
                        provenance={"face_latent_workdir": (
                                        stage1_bundle.meta.get("provenance", {}).get(
                                            "face_latent_workdir")
                                        if stage1_bundle is not None
                                        else os.path.abspath(face_latent)),
                                    **({"face_latent_bundle": os.path.abspath(face_latent)}
                                       if stage1_bundle is not None else {}),
                                    "face_latent_config": face_latent_config,
                                    "motion_dit_workdir": (
                                        stage2_bundle.meta.get("provenance", {}).get(
                                            "motion_dit_workdir")
                                        if stage2_bundle is not None
                                        else os.path.abspath(motion_dit)),
                                    **({"motion_dit_bundle": os.path.abspath(motion_dit)}
                                       if stage2_bundle is not None else {}),
                                    "motion_dit_config": motion_dit_config,
                                    "motion_dit_step": md_step, "weights": weights,
                                    **({"live_motion_dit": os.path.abspath(live_src),
                                        "live_motion_dit_step": live_step}
                                       if live_src else {}),
                                    **({"compositor": "copy"} if copy_compositor else {}),
                                    **tuned})
  except bundle_lib.BundleError as e:
    raise InputError(str(e)) from None
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  return {"bundle": path, "bytes": size}

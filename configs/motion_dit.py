r"""Stage 2: motion diffusion transformer (MotionDiT) over [z_pose, z_dyn] windows.

Launch (one GPU). Stage 2 trains on stored motion: first track every clip's face into mesh codes
(a motion_latents dataset; vasa_jax/data/motion_latents.py), then train on it:

  vasa-jax data extract-motion --datasets talking_face_videos/r256 \
      --data-dir ~/tensorflow_datasets --name geo
  vasa-jax train --config configs/motion_dit.py:geo --workdir /tmp/motion_dit_geo \
      --data-dir ~/tensorflow_datasets

(`geo` reads motion_latents/geo; the other variants need
--config.data.motion_dataset=motion_latents/NAME and a model.dyn_dim that matches its codes.)

Variants (the part after the colon; `key=value` pairs after a comma override fields, dotted
paths allowed, e.g. `demo,batch_size=32,model.dtype=bfloat16`):
  tiny   motion 6+8, width 32, 2 layers, W=8, K=2: initialises and trains in seconds (tests).
  demo   motion 6+64, width 192, 4 layers, 4 heads, W=50, K=10 (~2.6M parameters): a CPU box,
         an hour.
  paper  motion 6+256, width 512, 8 layers, 8 heads, W=100, K=10 (~40M parameters; VASA-1 scale).
  geo    the demo network over the geometry-grounded codes of face_latent.py:geo: motion 6+44
         (pose, 40 expression coefficients, 2 eyelids, 2 gaze), trained on the geometry
         motion_latents dataset (the bundled demo weights):
           vasa-jax train --config configs/motion_dit.py:geo --workdir RUN --data-dir DATA
  live   the live (microphone) generator of vasa_jax/live.py: the geo network over windows of
         live.block = 4 kept frames plus model.window - live.block = 1 frame of audio look-ahead,
         conditioned on the last 10 frames shown; its audio features are computed over
         [16 frames before | context | window] as one stretch (data.audio_left), as the live
         session computes them. Warm-started from the bundled demo weights:
           vasa-jax train --config configs/motion_dit.py:live --workdir RUN --data-dir DATA
  live_tiny  the same shape of run at the tiny size (tests).

Any field can also be set from the command line: `--config.train.p_drop=0.2`.
"""

from __future__ import annotations


import ml_collections

from vasa_jax.config_utils import apply_override

# Logical axes (vasa_jax/models/motion_dit.py) -> mesh axes. Ordered; first match wins.
# Dense outputs ("mlp") and attention heads split over `fsdp`; the residual width ("embed"),
# norms, tiny outputs and positional tables stay replicated. With fsdp=1 this is a no-op.
LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", None),
    ("mlp", "fsdp"),
    ("heads", "fsdp"),
    ("kv", None),
    ("vocab", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("norm", None),
    ("out_small", None),
)

VARIANTS = ("tiny", "demo", "paper", "geo", "live", "live_tiny")
from vasa_jax.constants import EMOTIONS  # noqa: E402  (one definition for the package)


def _model(variant: str) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.dtype = "float32"             # compute dtype: "float32" | "bfloat16" (params stay float32)
  m.pose_dim = 6                  # yaw, pitch, roll, tx, ty, tz
  m.dyn_dim = {"tiny": 8, "demo": 64, "paper": 256}[variant]   # = the motion dataset's codes
  m.motion_dim = m.get_ref("pose_dim") + m.get_ref("dyn_dim")   # derived: D = 6 + dyn_dim
  m.window = {"tiny": 8, "demo": 50, "paper": 100}[variant]     # W frames per window
  m.context = {"tiny": 2, "demo": 10, "paper": 10}[variant]     # K previous frames
  m.width = {"tiny": 32, "demo": 192, "paper": 512}[variant]
  m.layers = {"tiny": 2, "demo": 4, "paper": 8}[variant]
  m.heads = {"tiny": 2, "demo": 4, "paper": 8}[variant]
  m.mlp_ratio = 4.0
  m.dropout = 0.0
  m.time_scale = 1000.0           # sinusoidal embedding of t * time_scale
  # Audio: per-frame input features -> learned AudioEncoder -> audio_dim. "log_mel": 2 mel
  # frames x 80 bins per video frame; "log_mel+phonetic": followed by the frozen phonetic
  # front end's features (vasa_jax/models/phonetic.py, trained on espeak-ng speech). For a
  # pretrained FeatureSource set audio_in_dim to its width.
  m.audio_features = "log_mel"
  m.n_mels = 80
  m.audio_in_dim = 2 * m.n_mels
  m.audio_dim = {"tiny": 16, "demo": 128, "paper": 256}[variant]
  m.audio_hidden = {"tiny": 16, "demo": 192, "paper": 512}[variant]
  m.audio_layers = {"tiny": 1, "demo": 2, "paper": 4}[variant]
  m.audio_kernel = 3
  # Controls.
  m.num_emotions = len(EMOTIONS)  # + 1 learned 'empty' index
  m.gaze_scale = 0.3              # radians -> unit scale for the gaze MLP
  # a 4th control token: the speaker's blink rate (blinks/min; measured from geometry codes,
  # data.controls_from_motion)
  m.blink_control = False
  m.distance_mean = 0.65          # metres; also the sampler's default distance
  m.distance_scale = 0.1
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = (arg or "demo").split(",")
  variant, overrides = parts[0].strip() or "demo", [p for p in parts[1:] if p.strip()]
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")
  if variant in ("live", "live_tiny"):
    base = ["geo"] if variant == "live" else ["tiny", "model.blink_control=True"]
    block, ahead, left = (4, 1, 16) if variant == "live" else (2, 1, 2)
    c = get_config(",".join(base + [
        f"model.window={block + ahead}", f"live.block={block}", f"data.audio_left={left}",
        "train.p_drop_prev=0.05", "train.p_mask_tail=0.0"] + (
            ["init_from=vasa_jax/assets/demo", "model.audio_features=log_mel+phonetic",
             "batch_size=128", "steps=2500", "optim.lr=2e-4", "optim.warmup_steps=100",
             "sampler.steps=4", "sampler.cfg_audio=1.5", "sampler.audio_lead=0.0",
             "sampler.head_gain=1.6", "sampler.pose_smoothing=1.0",
             "data.motion_stats=vasa_jax/assets/demo/motion_stats.json", "ckpt_every=250"]
            if variant == "live" else []) + overrides))
    c.variant = variant
    return c
  if variant == "geo":
    c = get_config(",".join(["demo", "model.dyn_dim=44", "data.motion_dataset=motion_latents/geo",
                             "steps=3000",
                             "ckpt_every=250", "data.controls_from_motion=True",
                             "model.blink_control=True"] + overrides))
    c.variant = "geo"
    return c

  c = ml_collections.ConfigDict()
  c.stage = "motion_dit"
  c.variant = variant
  c.seed = 0
  c.model = _model(variant)
  # Stored motion is the only source ("dataset"): data.motion_dataset, or an injected source
  # whose records carry `motion` (vasa_jax/train/motion_dit.py).
  c.motion_source = "dataset"

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "cosine"
  c.diffusion.logsnr_min = -20.0   # alpha(1) ~ 5e-5
  c.diffusion.logsnr_max = 20.0    # sigma(0) ~ 5e-5: x_0 is the data

  c.train = ml_collections.ConfigDict()
  c.train.p_drop = 0.1            # audio, gaze, distance, emotion: each dropped independently
  c.train.p_drop_prev = 0.5       # previous-window context
  c.train.p_mask_tail = 0.1       # mask the last U[1, W/2] frames of audio
  c.train.velocity_weight = 1.0   # frame-difference MSE term (0 disables)

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = {"tiny": 1e-3, "demo": 3e-4, "paper": 1e-4}[variant]
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.01
  c.optim.warmup_steps = {"tiny": 0, "demo": 200, "paper": 5000}[variant]
  c.optim.grad_clip = 1.0
  c.optim.eps = 1e-8
  c.ema_decay = {"tiny": 0.9999, "demo": 0.995, "paper": 0.9999}[variant]   # demo: short runs

  c.batch_size = {"tiny": 2, "demo": 32, "paper": 256}[variant]
  c.steps = {"tiny": 2, "demo": 20_000, "paper": 500_000}[variant]
  # Warm start: a workdir of the same model config whose params / EMA start this run (fresh
  # optimizer, step and data order; ignored once this workdir has its own checkpoint).
  c.init_from = ""

  # A batch with NaN/Inf in its float inputs: skip its update, warn, count it in
  # data/skipped_batches (it still consumes a step); False: stop with NonFiniteError. More
  # than max_skipped_batches skipped batches (since the process started) stop the run.
  c.skip_nonfinite_batches = True
  c.max_skipped_batches = 100

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.logical_axis_rules = LOGICAL_AXIS_RULES

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""      # "" -> $VASA_JAX_DATA_DIR or ~/tensorflow_datasets
  # The built motion_latents dataset ("motion_latents/NAME", `vasa-jax data extract-motion`):
  # training reads its stored motion and statistics ("" only with an injected source).
  c.data.motion_dataset = ""
  # Further motion datasets (extracted with the same face basis) mixed into motion_dataset:
  # "NAME:SHARE[+NAME:SHARE]", each SHARE the fraction of training records drawn from it, e.g.
  # "motion_latents/geo_syn:0.3" for the synthetic corpus, whose mouths follow espeak-ng's
  # phoneme timings exactly. The normalisation statistics stay motion_dataset's.
  c.data.motion_mix = ""
  c.data.split = "train"
  c.data.window = c.model.get_ref("window")
  c.data.context = c.model.get_ref("context")
  c.data.worker_count = 0 if variant == "tiny" else 8
  # motion_dataset holds geometry codes (face_latent.py:geo): clips without their own gaze /
  # distance controls get them measured from each window's motion (pipeline.window_controls).
  c.data.controls_from_motion = False
  # ... and with measured_controls_only every clip's controls are measured so, its own stored
  # ones ignored: the synthetic corpus's ground-truth gaze / distance are in the renderer's
  # units, not the tracker's, so a mix of real and synthetic clips must use one measure.
  c.data.measured_controls_only = False
  c.data.motion_stats = ""  # .npz with per-dim mean/std of the motion ("" = the dataset's)
  c.data.stats_batches = 16   # batches used to compute the statistics at the first start
  c.data.stats_min_std = 1e-2
  c.data.with_frames = False  # decode window frames for an injected motion function
  # Raw audio of this many frames before the context, featurised with it and the window as
  # one stretch ("left_audio"; the live generator's features). 0: window and context apart.
  c.data.audio_left = 0

  # The live generator (vasa_jax/live.py; variants live / live_tiny): each window of
  # model.window frames keeps its first live.block frames; the rest is audio look-ahead.
  c.live = ml_collections.ConfigDict()
  c.live.block = 0            # 0: not a live model

  # The sampler defaults the exported bundle carries (vasa_jax.bundle.SamplerDefaults): what
  # inference uses where a call does not say (DDIM steps, eta, the CFG scales).
  c.sampler = ml_collections.ConfigDict()
  c.sampler.steps = 25
  c.sampler.eta = 0.0
  c.sampler.cfg_audio = 0.5
  c.sampler.cfg_gaze = 1.0
  c.sampler.audio_lead = 0.0     # frames the audio is advanced by (engine.lead_audio)
  # the live generator's (vasa_jax/live.py): head motion x this about the portrait's pose, and
  # the pose EMA weight (1: none)
  c.sampler.head_gain = 1.0
  c.sampler.pose_smoothing = 0.3

  c.log_every = {"tiny": 1, "demo": 50, "paper": 100}[variant]
  c.ckpt_every = {"tiny": 1, "demo": 2000, "paper": 5000}[variant]
  c.keep = 3
  c.async_checkpoint = True
  c.rng_impl = ""           # "" = JAX default; "unsafe_rbg" compiles much faster on CPU
  c.compiler_options = ml_collections.ConfigDict()

  for ov in overrides:
    _apply_override(c, ov)
  return c


def _apply_override(c: ml_collections.ConfigDict, item: str) -> None:
  apply_override(c, item)
  key = item.split("=", 1)[0].strip()
  if key in ("model.n_mels", "model.audio_features"):
    # the input width follows the features: 2 mel frames x n_mels, plus the phonetic front
    # end's 48 (vasa_jax/models/phonetic.py: embedding 32 + mouth 3 + 13 visemes)
    c.model.audio_in_dim = 2 * c.model.n_mels + (
        48 if c.model.audio_features == "log_mel+phonetic" else 0)

r"""Stage 1: face latent model (appearance volume, identity, pose + dynamics codes, 3D warps).

Launch (the `demo` variant; CPU or one GPU):

  vasa-jax train --config configs/face_latent.py:demo --workdir /tmp/face_latent_demo

Variants (the part after the colon; `key=value` pairs after a comma override fields, dotted
paths allowed, e.g. `demo,batch_size=8,model.dtype=bfloat16`):
  tiny   32x32, volume 4 x 8 x 8 x 4: initialises and runs a train step in seconds (tests).
  demo   256x256, volume 8 x 32 x 32 x 16, ~3M generator parameters: a CPU box, hours
         (the bundled demo weights).
  base   256x256, volume 16 x 64 x 64 x 32, ~20M generator parameters: one GPU, a day.
  paper  512x512, volume 16 x 64 x 64 x 96 (S/8), ~190M generator parameters (VASA-1 scale).

Geometry-grounded variants (model.kind = "geometry", the default path since the geometry issue):
the motion field is the dense displacement that measured face meshes imply
(vasa_jax/geometry), and the network (vasa_jax/models/geo_decoder.py) learns only the residual
flow, occlusion and missing content of mouth and eye patches. They train on a motion_latents
dataset built with `vasa-jax data extract-motion --geometry` (landmarks, codes, face basis):

  geo_tiny   8x8 / 16x16 patches, a few hundred parameters (tests).
  geo        64x64 mouth, 32x32 eye patches, ~0.4M parameters: trains on a 2-core CPU in an
             hour (the bundled demo weights); the photo keeps its own resolution.
  geo_paper  128x128 mouth, 64x64 eyes, wider networks: one GPU.

  vasa-jax train --config configs/face_latent.py:geo --workdir /tmp/face_geo \
      --data-dir DATA --config.data.geometry=motion_latents/geo

Any field can also be set from the command line: `--config.optim.lr_g=1e-4`.
"""

from __future__ import annotations


import ml_collections

from vasa_jax.config_utils import apply_override

# Logical parameter axes (vasa_jax/models/layers.py) -> mesh axes. Ordered; first match wins.
# Conv output channels and dense outputs are split over `fsdp`; tiny outputs (RGB, flow xyz,
# logits, pose) and norms stay replicated. With the default mesh (fsdp=1) everything is
# replicated and the rules are a no-op.
LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("conv_in", None),
    ("conv_out", "fsdp"),
    ("embed", None),
    ("mlp", "fsdp"),
    ("norm", None),
    ("out_small", None),
)

VARIANTS = ("tiny", "demo", "base", "paper")
GEO_VARIANTS = ("geo_tiny", "geo", "geo_paper")


def _model(variant: str) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.dtype = "float32"             # compute dtype: "float32" | "bfloat16" (params stay float32)
  m.groups = 32                   # GroupNorm groups (reduced to a divisor of the width)
  m.align_corners = False         # grid_sample_3d semantics of the warps
  # Geometry (vasa_jax/models/warp.py): the volume cube spans the field of view at ref_distance.
  m.ref_distance = 0.65           # metres; tz of the reference pose (rigid warp = identity)
  m.fov_deg = 14.0                # vertical field of view of the portrait camera
  m.max_angle = 1.5707963267948966   # pose head: angles = max_angle * tanh(.)
  m.max_shift_m = 0.1             # tx, ty = max_shift_m * tanh(.)
  m.tz_log_range = 0.35           # tz = ref_distance * exp(tz_log_range * tanh(.)) ~ [0.46, 0.92]
  m.motion_hidden = 256
  m.disc = ml_collections.ConfigDict()
  if variant == "tiny":
    m.image_size = 32
    m.down = 4                    # h = w = image_size / down
    m.vol_depth, m.vol_channels = 4, 4
    m.app_widths = (8, 16, 16)    # log2(down) + 1 stages
    m.app_blocks2d, m.app_blocks3d = 1, 1
    m.encoder_size = 0            # 0: identity/motion encoders see the full image
    m.id_widths = (8, 16)
    m.motion_widths = (8, 16)
    m.enc_blocks = 1
    m.id_dim, m.dyn_dim = 16, 8
    m.motion_hidden = 16
    m.flow_hidden, m.flow_widths = 16, (8, 8)
    m.canon_channels, m.canon_blocks = 4, 1
    m.dec_width, m.dec_blocks, m.dec_up_widths = 16, 1, (16, 8)
    m.groups = 4
    m.disc.widths, m.disc.scales = (8, 16), 2
  elif variant == "demo":
    # Sized to train on a 2-core CPU box in a couple of hours (~7 GFLOP forward per training
    # example): 256x256 output from a 32x32 feature grid; the full-resolution stages are single
    # convolutions without residual blocks.
    m.image_size = 256
    m.down = 8
    m.vol_depth, m.vol_channels = 8, 16
    m.app_widths = (8, 32, 64, 96)
    m.app_blocks2d, m.app_blocks3d = (0, 0, 0, 1), 1
    m.encoder_size = 128
    m.id_widths = (16, 24, 48, 96, 128)
    m.motion_widths = (16, 24, 48, 96, 128)
    m.enc_blocks = (0, 0, 1, 1, 1)
    m.id_dim, m.dyn_dim = 128, 64
    m.flow_hidden, m.flow_widths = 128, (32, 16, 8)
    m.canon_channels, m.canon_blocks = 16, 2
    m.dec_width, m.dec_blocks, m.dec_up_widths = 96, 1, (32, 16, 8)
    m.dec_up_blocks = (1, 0, 0)
    m.groups = 8
    m.disc.widths, m.disc.scales = (16, 32, 64, 128), 2
  elif variant == "base":
    m.image_size = 256
    m.down = 4
    m.vol_depth, m.vol_channels = 16, 32
    m.app_widths = (64, 128, 256)
    m.app_blocks2d, m.app_blocks3d = 1, 2
    m.encoder_size = 128          # identity/motion encoders run on a 128x128 resize
    m.id_widths = (32, 64, 128, 256, 256)
    m.motion_widths = (32, 64, 128, 256, 256)
    m.enc_blocks = 1
    m.id_dim, m.dyn_dim = 256, 128
    m.flow_hidden, m.flow_widths = 256, (64, 32, 16)
    m.canon_channels, m.canon_blocks = 32, 3
    m.dec_width, m.dec_blocks, m.dec_up_widths = 256, 3, (128, 64)
    m.disc.widths, m.disc.scales = (64, 128, 256, 256), 2
  elif variant == "paper":
    m.image_size = 512
    m.down = 8
    m.vol_depth, m.vol_channels = 16, 96
    m.app_widths = (64, 128, 256, 512)
    m.app_blocks2d, m.app_blocks3d = 3, 6
    m.encoder_size = 256
    m.id_widths = (64, 128, 256, 512, 512, 512)
    m.motion_widths = (64, 128, 256, 512, 512, 512)
    m.enc_blocks = 2
    m.id_dim, m.dyn_dim = 512, 256
    m.motion_hidden = 512
    m.flow_hidden, m.flow_widths = 512, (128, 64, 32)
    m.canon_channels, m.canon_blocks = 96, 8
    m.dec_width, m.dec_blocks, m.dec_up_widths = 512, 12, (256, 128, 64)
    m.disc.widths, m.disc.scales = (64, 128, 256, 512), 3
  else:
    raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")
  return m


def _loss(variant: str) -> ml_collections.ConfigDict:
  w = ml_collections.ConfigDict()
  w.l1 = 1.0                # pixel L1 on the reconstruction
  w.ms_ssim = 1.0           # 1 - multi-scale SSIM
  w.laplacian = 1.0         # Laplacian-pyramid L1
  w.vgg = 0.0               # VGG19 perceptual loss; needs loss.vgg_weights (a local .npz)
  w.vgg_weights = ""        # path to VGG19 weights (.npz); empty: no VGG loss
  w.gan = 0.1               # hinge generator loss
  w.feature_matching = 1.0  # discriminator feature matching
  w.consistency = 1.0       # latent cycle consistency (pose_i, dyn_j) / (pose_j, dyn_i)
  w.identity = 0.5          # cross-identity z_id preservation (cosine)
  w.pose = 1.0              # supervised pose where has_pose == 1
  # Extra L1 (image + finest Laplacian band) over the mouth region of the aligned crop: not in
  # the paper; on for the small CPU-trained demo, whose whole-image losses left the mouth static.
  w.mouth = {"demo": 4.0}.get(variant, 0.0)
  w.mouth_region = (0.6, 0.5, 0.11, 0.17)   # centre y, centre x, radius y, radius x (fractions)
  # z_dyn[:, 0:3] = mouth (open, wide, round), z_dyn[:, 3] = blink where labels exist (L1; not in
  # the paper): on for the demo, whose unsupervised z_dyn carried no mouth signal.
  w.dyn_labels = {"demo": 1.0}.get(variant, 0.0)
  # Render labelled frames with those dims set to the labels (teacher forcing), so the decoder
  # learns mouth / blink motion before the encoder reads them well.
  w.dyn_labels_teacher = variant == "demo"
  w.gan_start_step = {"tiny": 0, "demo": 1500}.get(variant, 2000)   # GAN terms off before this step
  return w


def _geo_model(variant: str) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.kind = "geometry"
  m.dtype = "float32"
  m.groups = {"geo_tiny": 2}.get(variant, 8)
  m.image_size = {"geo_tiny": 64, "geo": 256, "geo_paper": 512}[variant]   # training crops
  # Inference: the motion field and the part patches are computed on a crop of at most this
  # side; the field is then scaled up and applied to the photo at its own resolution.
  m.field_size = {"geo_paper": 512}.get(variant, 256)
  m.ref_distance = 0.65
  m.fov_deg = 14.0
  # z_dyn = exp_dim expression coefficients + 2 eyelids + 2 gaze (the face basis decides
  # exp_dim; a bundle checks they agree).
  m.exp_dim = 40
  m.dyn_dim = m.get_ref("exp_dim") + 4
  m.max_flow = 0.08               # flow limit on the reference, normalised patch units
  # The mouth compositor (models/geo_decoder.py): a U-Net on a patch aligned to the driving
  # mouth that blends the donor's real mouth interior (vasa_jax/geometry/banks.py) into the
  # warped portrait. The eyes have no network (vasa_jax/geometry/eyes.py).
  m.mouth = ml_collections.ConfigDict()
  if variant == "geo_tiny":
    m.mouth.res, m.mouth.widths, m.mouth.blocks = 16, (4, 8), (0, 1)
  elif variant == "geo":
    m.mouth.res, m.mouth.widths, m.mouth.blocks = 64, (16, 32, 64, 96), (0, 1, 1, 1)
  else:
    m.mouth.res, m.mouth.widths, m.mouth.blocks = 128, (32, 64, 128, 256, 256), (1, 1, 2, 2, 2)
  m.critic = ml_collections.ConfigDict()       # the patch discriminator (training only)
  m.critic.widths = {"geo_tiny": (4, 8)}.get(variant, (32, 64, 128))
  return m


def _geo_config(variant: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "face_latent"
  c.variant = variant
  c.seed = 0
  c.model = _geo_model(variant)
  w = c.loss = ml_collections.ConfigDict()
  w.l1 = 1.0                # mouth composite vs the true driving patch
  w.ssim = 1.0              # 1 - SSIM (7x7 window)
  w.laplacian = 1.0         # Laplacian-pyramid L1
  w.interior = 2.0          # extra L1 inside the mouth opening (driving or reference's)
  w.alpha = 0.02            # alpha outside the reference's coverage (keep the photo's pixels)
  w.flow = 0.05             # flow magnitude (the reference is already on the contour)
  w.gan = 0.05              # hinge patch discriminator on the mouth (what remains invented
  w.feature_matching = 1.0  # is sharp, not the mean), with feature matching,
  w.gan_start_step = {"geo_tiny": 0}.get(variant, 300)   # from this step
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = {"geo_tiny": 1e-3}.get(variant, 1e-3)
  c.optim.b1 = 0.9
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = {"geo_tiny": 0, "geo": 100}.get(variant, 1000)
  c.optim.decay_steps = {"geo_tiny": 0}.get(variant, 0)   # 0: constant after warmup
  c.optim.grad_clip = 1.0
  c.ema_decay = {"geo_tiny": 0.9}.get(variant, 0.995)
  c.batch_size = {"geo_tiny": 8, "geo": 16, "geo_paper": 64}[variant]
  c.steps = {"geo_tiny": 2, "geo": 4000, "geo_paper": 200_000}[variant]
  c.skip_nonfinite_batches = True
  c.max_skipped_batches = 100
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.logical_axis_rules = LOGICAL_AXIS_RULES
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""
  # The motion_latents dataset built with `extract-motion --geometry` (landmarks per frame and
  # the face basis); its clips' frames come from the source datasets it was built from.
  c.data.geometry = {"geo_tiny": "motion_latents/geo_tiny"}.get(variant, "motion_latents/geo")
  c.data.source_data_dir = ""    # where its clip datasets are ("": data_dir)
  # clips of datasets whose name starts with a key are drawn that many times more often
  c.data.repeats = ml_collections.ConfigDict({"talking_face_videos": 2})
  c.data.split = "train"
  c.data.worker_count = {"geo_tiny": 0}.get(variant, 1)
  c.data.min_gap = 4             # source and driving frames at least this far apart
  c.data.hard_pairs = 0.7        # share of pairs chosen for a large mouth difference
  c.data.flip = 0.5
  c.data.color = 0.1             # photometric jitter (same for source and driving)
  # The part bank (a folder with part_bank.npz, e.g. a bundle) whose donors give the
  # cross-identity references; "" trains on same-clip references only.
  c.data.part_bank = ""
  c.data.same_clip = 0.4         # share of pairs whose reference is another frame of the clip
  c.data.no_reference = 0.1      # share with no reference (the compositor touches up the warp)
  c.log_every = {"geo_tiny": 1, "geo": 25}.get(variant, 100)
  c.ckpt_every = {"geo_tiny": 1, "geo": 250}.get(variant, 5000)
  # Warm start: a workdir of the same model config, or an inference bundle, whose parameters
  # start this run (fresh optimizer, step and data order; ignored once this workdir has its
  # own checkpoint).
  c.init_from = ""
  c.keep = 3
  c.async_checkpoint = True
  c.rng_impl = ""
  c.compiler_options = ml_collections.ConfigDict()
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = (arg or "demo").split(",")
  variant, overrides = parts[0].strip() or "demo", [p for p in parts[1:] if p.strip()]
  if variant in GEO_VARIANTS:
    c = _geo_config(variant)
    for ov in overrides:
      _apply_override(c, ov)
    return c
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS + GEO_VARIANTS}")

  c = ml_collections.ConfigDict()
  c.stage = "face_latent"
  c.variant = variant
  c.seed = 0
  c.model = _model(variant)
  c.loss = _loss(variant)

  c.optim = ml_collections.ConfigDict()
  c.optim.lr_g = 2e-4
  c.optim.lr_d = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = {"tiny": 0, "demo": 200, "base": 1000, "paper": 5000}[variant]
  c.optim.grad_clip = 1.0
  c.ema_decay = 0.999

  c.batch_size = {"tiny": 2, "demo": 8, "base": 16, "paper": 64}[variant]
  c.steps = {"tiny": 2, "demo": 20_000, "base": 200_000, "paper": 1_000_000}[variant]

  # A batch with NaN/Inf in its float inputs: skip its update, warn, count it in
  # data/skipped_batches (it still consumes a step); False: stop with NonFiniteError. More
  # than max_skipped_batches skipped batches (since the process started) stop the run.
  c.skip_nonfinite_batches = True
  c.max_skipped_batches = 100

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
  c.logical_axis_rules = LOGICAL_AXIS_RULES

  size = c.model.image_size
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""      # "" -> $VASA_JAX_DATA_DIR or ~/tensorflow_datasets
  if variant == "tiny":
    c.data.datasets = (("synthetic_talking_heads/tiny", 1.0),)
  else:
    c.data.datasets = ((f"synthetic_talking_heads/r{size}_n1000", 0.5),
                       (f"talking_face_videos/r{size}", 0.5))
  c.data.split = "train"
  c.data.worker_count = {"tiny": 0, "demo": 2}.get(variant, 8)
  c.data.augment = ml_collections.ConfigDict(dict(
      flip=0.5, scale=0.06, shift=0.03, brightness=0.15, contrast=0.15, saturation=0.2,
      hue=0.03))

  c.log_every = {"tiny": 1, "demo": 25, "base": 50, "paper": 100}[variant]
  c.ckpt_every = {"tiny": 1, "demo": 250, "base": 2000, "paper": 5000}[variant]
  c.keep = 3
  c.async_checkpoint = True
  # TensorBoard image grid (source | driving | reconstruction | cross | cross reenactment),
  # rendered with the EMA parameters; 0 = never.
  c.image_every = {"tiny": 0, "demo": 500, "base": 1000, "paper": 2000}[variant]
  c.rng_impl = ""           # "" = JAX default; "unsafe_rbg" compiles much faster on CPU
  c.compiler_options = ml_collections.ConfigDict()   # extra XLA options for the jitted steps

  for ov in overrides:
    _apply_override(c, ov)
  return c


def _apply_override(c: ml_collections.ConfigDict, item: str) -> None:
  apply_override(c, item)

#!/usr/bin/env bash
# The exact pipeline behind the bundled demo weights (vasa_jax/assets/demo): the geometry-grounded
# stage 1 (face mesh codes + the part decoder) and stage 2 on those codes, on a 2-core CPU box
# with no GPU. Data: the real clips of ../shared/real (INVENTORY.tsv lists their sources and
# licences) and the synthetic corpus.
#
#   bash tools/train_demo_weights.sh DATA_DIR RUN_DIR
#
# A step that was interrupted resumes where its last checkpoint left it when the script is run
# again with the same arguments (the datasets and the finished runs are skipped).
set -euo pipefail
DATA=${1:?DATA_DIR}
RUN=${2:?RUN_DIR}
VJ=${VJ:-.venv/bin/vasa-jax}
FL_STEPS=${FL_STEPS:-2500}
MD_STEPS=${MD_STEPS:-7000}
PART_STEPS=${PART_STEPS:-3000}
# The bundled weights were trained on the real clips only (WITH_SYNTH=0): the synthetic corpus
# adds rendered heads, whose mouth interiors differ from real ones, and ~35 min of data build +
# extraction on this box. WITH_SYNTH=1 adds synthetic_talking_heads/r256_n1000 to both stages.
WITH_SYNTH=${WITH_SYNTH:-0}     # (stage 2 of bundle v4 mixes the synthetic corpus in: step 5)
DATASETS=talking_face_videos/r256
[ "$WITH_SYNTH" = 1 ] && DATASETS=$DATASETS,synthetic_talking_heads/r256_n1000

# 0. clip datasets (real clips: ~5 min; synthetic r256_n1000: ~20 min)
[ -d "$DATA/talking_face_videos/r256" ] || \
  $VJ data build talking_face_videos/r256 --data-dir "$DATA" \
    --manual-dir ../shared/real/videos --identity-map ../shared/real/INVENTORY.tsv
[ "$WITH_SYNTH" != 1 ] || [ -d "$DATA/synthetic_talking_heads/r256_n1000" ] || \
  $VJ data build synthetic_talking_heads/r256_n1000 --data-dir "$DATA"

# 1. landmarks of every frame (face mesh + iris), the face basis fitted on the train split, and
#    the motion codes (real clips: ~5 min on 2 cores). The bundled basis was fitted on the real
#    and synthetic train splits by a first extraction with the same command (WITH_SYNTH=1,
#    before the region-dependent smoothing of the landmarks); the
#    extraction behind the bundle reused it with --face-basis so that the codes of both stages
#    live in one basis. Without a basis file, drop --face-basis: a new one is fitted.
BASIS=${BASIS:-vasa_jax/assets/demo/face_basis.npz}
[ -d "$DATA/motion_latents/geo" ] || \
  $VJ data extract-motion --geometry --face-basis "$BASIS" \
    --datasets "$DATASETS" \
    --data-dir "$DATA" --max-clips 300 --name geo --workers 2

# 2. stage 1: the part decoder, self-reenactment pairs of the clips (real ones drawn twice as
#    often as synthetic ones when both are used); about 0.5-0.7 steps/s on the CPU box
$VJ train --config configs/face_latent.py:geo --workdir "$RUN/face_geo" --data-dir "$DATA" \
  --config.data.geometry=motion_latents/geo --config.steps="$FL_STEPS"

# 3. stage 2 on the geometry codes. configs/motion_dit.py:geo measures each window's main gaze
#    and head distance and each clip's blink rate from the codes (data.controls_from_motion,
#    model.blink_control): the controls are learned from the real footage. About 3.5 steps/s
#    on the CPU box when nothing else runs (bundle v3: 7000 steps).
$VJ train --config configs/motion_dit.py:geo --workdir "$RUN/motion_dit" --data-dir "$DATA" \
  --config.steps="$MD_STEPS"

# 4. the v3 bundle (float16 halves its size): stage 1 + stage 2 on the real clips
[ -f "$RUN/bundle_v3/bundle.json" ] || \
  $VJ export --face-latent "$RUN/face_geo" --motion-dit "$RUN/motion_dit" \
    --motion-dit-config configs/motion_dit.py:geo --out "$RUN/bundle_v3" --dtype float16

# 5. bundle v4: stage 2 warm-started from v3, now hearing through the phonetic
#    front end (model.audio_features=log_mel+phonetic; its new input rows start at zero) and
#    mixed with the synthetic corpus (30% of windows), whose mouths follow espeak-ng's phoneme
#    timings exactly; every clip's gaze / distance controls measured by the tracker
#    (data.measured_controls_only: the synthetic clips' own ground truth is in the renderer's
#    units). Synthetic corpus ~20 min, its codes ~5 min, 5000 steps ~30 min on the CPU box.
[ -d "$DATA/synthetic_talking_heads/r256_n1000" ] || \
  $VJ data build synthetic_talking_heads/r256_n1000 --data-dir "$DATA"
[ -d "$DATA/motion_latents/geosynth" ] || \
  $VJ data extract-motion --geometry --face-basis "$BASIS" \
    --datasets synthetic_talking_heads/r256_n1000 \
    --data-dir "$DATA" --max-clips 300 --name geosynth --workers 2
$VJ train --config "configs/motion_dit.py:geo,model.audio_features=log_mel+phonetic" \
  --workdir "$RUN/md_mix" --data-dir "$DATA" \
  --config.data.motion_mix=motion_latents/geosynth:0.3 --config.data.measured_controls_only=True \
  --config.init_from="$RUN/bundle_v3" --config.steps=5000
[ -f "$RUN/bundle_v4/bundle.json" ] || \
  $VJ export --face-latent "$RUN/bundle_v3" --motion-dit "$RUN/md_mix" \
    --out "$RUN/bundle_v4" --dtype float16

# 6. bundle v5: v4's weights with the audio guidance scale tuned on the TRAIN
#    split's real clips (12 clips, 8 s, 10 steps; seeds 0 and 1). Of cfg_audio 0.5 (v4), 1.0,
#    1.5, 2.0 and 3.0, 1.5 comes closest to the footage on head-rotation spread and speed,
#    blinks, mouth spread and jitter (figures in docs/motion_eval/cfg_sweep.md). Each point:
#      $VJ eval motion --data-dir "$DATA" --dataset motion_latents/geo:train --max-clips 12 \
#        --control-clips 0 --bilabial-sentences 0 --cfg-audio C --seed S --out OUT
$VJ export --face-latent "$RUN/bundle_v4" --motion-dit "$RUN/md_mix" \
  --out "$RUN/bundle_v5" --dtype float16 --cfg-audio 1.5

# 7. bundle v6: v5 with an audio lead of 0.5 frames. The tracker's causal
#    smoothing delays the lips it measures by 0.42 frames, and the training targets carry that
#    delay. The lead was chosen on the TRAIN split, where the mesh lip-sync evaluator reads the
#    footage at offset 0: it brings the generated clips' mean offset from +0.8 to ~0
#    (docs/motion_eval/audio_lead.md). Each point:
#      $VJ eval motion --data-dir "$DATA" --dataset motion_latents/geo:train --max-clips 12 \
#        --control-clips 0 --bilabial-sentences 0 --audio-lead L --seed S --out OUT
#    The evaluator itself (vasa_jax/assets/evaluators/meshsync, ~2 min):
#      $VJ eval meshsync --data-dir "$DATA"
[ -f "$RUN/bundle_v6/bundle.json" ] || \
  $VJ export --face-latent "$RUN/bundle_v4" --motion-dit "$RUN/md_mix" \
    --out "$RUN/bundle_v6" --dtype float16 --cfg-audio 1.5 --audio-lead 0.5

# 8. bundle v7 (the bundled one): what a photo does not show is copied from real footage.
#    The part bank: real mouth interiors and closed lids cut from the clips of ../shared/real
#    whose licence allows bundling (MIT, Apache-2.0, CC BY 4.0), train identities only, with
#    their attribution (~5 min):
[ -f "$RUN/part_bank/part_bank.npz" ] || \
  $VJ data build-part-bank --manual-dir ../shared/real/videos \
    --inventory ../shared/real/INVENTORY.tsv --out "$RUN/part_bank"
#    The mouth compositor trained on it (self-reenactment pairs whose reference is another
#    frame of the clip or another identity's bank entry; L1 + SSIM + Laplacian + a hinge patch
#    critic). Run again, it resumes from its last checkpoint (every 250 steps); about 0.7
#    steps/s on the CPU box:
$VJ train --config configs/face_latent.py:geo --workdir "$RUN/face_geo_v7" --data-dir "$DATA" \
  --config.data.geometry=motion_latents/geo --config.data.part_bank="$RUN/part_bank" \
  --config.steps="$PART_STEPS"
#    Stage 2 of v6 as it is (the motion codes did not change); the mouth gain set against the
#    train split's footage (tools/mouth_gain.py; 1.0: unseen voices already open as far).
#    The bundle ships the compositor at its initialisation (--copy-compositor: the donor's
#    interior pasted as it is): after 3000 CPU steps the trained one lowers the pixel loss by
#    dimming the donor's teeth towards the mean (docs/part_eval/trained_compositor: teeth 0.04
#    against 0.12 pasted, contrast and flicker fail), the failure this design set out to avoid.
$VJ export --face-latent "$RUN/face_geo_v7" --motion-dit "$RUN/bundle_v6" \
  --out vasa_jax/assets/demo --dtype float16 --part-bank "$RUN/part_bank" --copy-compositor

# 9. The live generator (`vasa-jax live`, the web page's Live tab): the v6 MotionDiT
#    warm-started on 5-frame windows (4 kept + 1 of audio look-ahead) whose audio features are
#    computed over [16 frames | context | window], as a live session computes them
#    (configs/motion_dit.py:live). Run again, it resumes from its last checkpoint (every 250
#    steps); about 0.7-0.9 steps/s at batch 128 on the CPU box (2500 steps: ~50 min):
$VJ train --config configs/motion_dit.py:live --workdir "$RUN/live_md" --data-dir "$DATA" \
  --config.steps=2500 --config.data.worker_count=2
#    Added to the bundle beside the offline model (the other files unchanged):
$VJ export --face-latent vasa_jax/assets/demo --motion-dit vasa_jax/assets/demo \
  --live-motion-dit "$RUN/live_md" --out "$RUN/bundle_v8" --dtype float16
python - "$RUN/bundle_v8" <<'PY'
import json, shutil, sys
new, demo = sys.argv[1], "vasa_jax/assets/demo"
shutil.copy(f"{new}/live_motion_dit.msgpack", demo)
meta, add = json.load(open(f"{demo}/bundle.json")), json.load(open(f"{new}/bundle.json"))
meta["live_motion_dit"] = add["live_motion_dit"]
# 4 DDIM steps a block, no audio lead: set on this CPU with benchmarks/live.py (8 steps and the
# offline 0.5-frame lead put the 95th-percentile latency at 283 ms; 4 steps and no lead: 228)
meta["live_motion_dit"]["config"]["sampler"].update(steps=4, audio_lead=0.0)
# head motion x1.6 and no pose EMA: the offline sampler's spread and most of its speed, set in
# the motion codes on clips the evaluation does not use (tools/live_calibrate.py)
meta["live_motion_dit"]["config"]["sampler"].update(head_gain=1.6, pose_smoothing=1.0)
meta["provenance"].update({k: add["provenance"][k] for k in ("live_motion_dit", "live_motion_dit_step")})
json.dump(meta, open(f"{demo}/bundle.json", "w"), indent=1)
PY

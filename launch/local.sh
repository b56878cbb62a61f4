#!/usr/bin/env bash
# Train vasa-jax on this machine (CPU or the local GPUs/TPU chips), single process.
#
#   launch/local.sh --config configs/face_latent.py:volume --workdir runs/stage1 [-- --config.steps=2000]
#   launch/local.sh --config configs/motion_dit.py:demo --workdir runs/stage2 --cpu --dry-run
#
# Options: --config (required) --workdir (required) --data-dir DIR --venv DIR (default ./.venv)
#          --cpu (JAX_PLATFORMS=cpu) --dry-run (print the command). Arguments after `--` go to
#          `vasa-jax train`. Ctrl-C or SIGTERM saves a checkpoint of the current step and exits;
#          rerunning the same command resumes.
set -euo pipefail

die() { echo "local.sh: error: $*" >&2; exit 2; }

CONFIG=""
WORKDIR=""
DATA_DIR=""
VENV="${VENV:-.venv}"
CPU=0
DRY_RUN="${DRY_RUN:-0}"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) CONFIG="${2:-}"; shift 2 || die "--config needs a value" ;;
    --workdir) WORKDIR="${2:-}"; shift 2 || die "--workdir needs a value" ;;
    --data-dir) DATA_DIR="${2:-}"; shift 2 || die "--data-dir needs a value" ;;
    --venv) VENV="${2:-}"; shift 2 || die "--venv needs a value" ;;
    --cpu) CPU=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
done
[[ -n "$CONFIG" ]] || die "--config is required (e.g. configs/face_latent.py:volume)"
[[ -n "$WORKDIR" ]] || die "--workdir is required"

cmd=(vasa-jax train --config "$CONFIG" --workdir "$WORKDIR")
[[ -n "$DATA_DIR" ]] && cmd+=(--data-dir "$DATA_DIR")
cmd+=("${EXTRA[@]}")
envs=(VASA_DISTRIBUTED=0)
[[ "$CPU" == 1 ]] && envs+=(JAX_PLATFORMS=cpu)

if [[ "$DRY_RUN" == 1 ]]; then
  out=""
  for a in "${envs[@]}" "${cmd[@]}"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$a "; else out+="$(printf '%q' "$a") "; fi
  done
  echo "${out% }"
  exit 0
fi
if [[ -f "$VENV/bin/activate" ]]; then
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
fi
exec env "${envs[@]}" "${cmd[@]}"

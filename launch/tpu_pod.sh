#!/usr/bin/env bash
# Train vasa-jax on a Cloud TPU pod slice (every worker runs the same command).
#
#   launch/tpu_pod.sh create --name vasa --zone us-east5-a --accelerator v5p-64 --version v2-alpha-tpuv5
#   launch/tpu_pod.sh setup  --name vasa --zone us-east5-a --repo https://github.com/you/vasa-jax.git
#   launch/tpu_pod.sh train  --name vasa --zone us-east5-a \
#       --config configs/face_latent.py:volume --workdir gs://bucket/vasa/stage1 [-- --config.steps=100000]
#   launch/tpu_pod.sh logs | stop | delete --name vasa --zone us-east5-a
#
# Options: --name --zone --accelerator --version --config --workdir --repo --project --spot
#          --dry-run (print every command instead of running it). Arguments after `--` are
#          passed to `vasa-jax train` unchanged. --repo is a git URL (cloned on every worker) or a
#          local folder (copied with `gcloud compute tpus tpu-vm scp --worker=all`).
# Training runs under nohup in ~/vasa-jax on each worker, log in ~/vasa-train.log. A preempted
# or stopped run saves a checkpoint (SIGTERM) and `train` again resumes from the workdir.
set -euo pipefail

die() { echo "tpu_pod.sh: error: $*" >&2; exit 2; }

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

[[ $# -ge 1 ]] || die "missing sub-command (create | setup | train | logs | stop | delete)"
CMD="$1"
shift
case "$CMD" in
  create|setup|train|logs|stop|delete) ;;
  -h|--help|help) usage; exit 0 ;;
  *) die "unknown sub-command '$CMD' (create | setup | train | logs | stop | delete)" ;;
esac

NAME=""
ZONE=""
ACCELERATOR="v5p-8"
VERSION="v2-alpha-tpuv5"
CONFIG=""
WORKDIR=""
REPO=""
PROJECT=""
SPOT=0
DRY_RUN="${DRY_RUN:-0}"
REMOTE_DIR="vasa-jax"
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="${2:-}"; shift 2 || die "--name needs a value" ;;
    --zone) ZONE="${2:-}"; shift 2 || die "--zone needs a value" ;;
    --accelerator) ACCELERATOR="${2:-}"; shift 2 || die "--accelerator needs a value" ;;
    --version) VERSION="${2:-}"; shift 2 || die "--version needs a value" ;;
    --config) CONFIG="${2:-}"; shift 2 || die "--config needs a value" ;;
    --workdir) WORKDIR="${2:-}"; shift 2 || die "--workdir needs a value" ;;
    --repo) REPO="${2:-}"; shift 2 || die "--repo needs a value" ;;
    --project) PROJECT="${2:-}"; shift 2 || die "--project needs a value" ;;
    --spot) SPOT=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1'" ;;
  esac
done

[[ -n "$NAME" ]] || die "--name is required"
[[ -n "$ZONE" ]] || die "--zone is required"

# Prints (dry run) or runs a command; arguments are shell-quoted when printed.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local out=""
    local a
    for a in "$@"; do
      if [[ "$a" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
    done
    echo "${out% }"
  else
    "$@"
  fi
}

COMMON=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project "$PROJECT")

ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${COMMON[@]}" --worker=all --command "$1"
}

case "$CMD" in
  create)
    args=(gcloud compute tpus tpu-vm create "$NAME" "${COMMON[@]}"
          --accelerator-type "$ACCELERATOR" --version "$VERSION")
    [[ "$SPOT" == 1 ]] && args+=(--spot)
    run "${args[@]}"
    ;;

  setup)
    [[ -n "$REPO" ]] || die "--repo is required for setup (git URL or local folder)"
    if [[ -d "$REPO" ]]; then
      ssh_all "rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR"
      run gcloud compute tpus tpu-vm scp --recurse "$REPO/." "$NAME:~/$REMOTE_DIR" \
        "${COMMON[@]}" --worker=all
    else
      ssh_all "rm -rf ~/$REMOTE_DIR && git clone --depth 1 $(printf '%q' "$REPO") ~/$REMOTE_DIR"
    fi
    ssh_all "cd ~/$REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate && pip install -U pip && pip install -r requirements.txt && pip install -U 'jax[tpu]==0.10.2' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && pip install -e . --no-deps"
    ;;

  train)
    [[ -n "$CONFIG" ]] || die "--config is required for train (e.g. configs/face_latent.py:volume)"
    [[ -n "$WORKDIR" ]] || die "--workdir is required for train (gs://bucket/path works)"
    train="vasa-jax train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")"
    for a in "${EXTRA[@]}"; do train+=" $(printf '%q' "$a")"; done
    ssh_all "cd ~/$REMOTE_DIR && . .venv/bin/activate && VASA_DISTRIBUTED=auto nohup $train > ~/vasa-train.log 2>&1 &"
    ;;

  logs)
    run gcloud compute tpus tpu-vm ssh "$NAME" "${COMMON[@]}" --worker=0 --command "tail -n 200 -f ~/vasa-train.log"
    ;;

  stop)
    # SIGTERM: every worker saves a checkpoint at the same step and exits.
    ssh_all "pkill -TERM -f 'vasa-jax train' || true"
    ;;

  delete)
    run gcloud compute tpus tpu-vm delete "$NAME" "${COMMON[@]}" --quiet
    ;;
esac

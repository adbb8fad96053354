#!/usr/bin/env bash
# distrain on one host: NP ranks of the training program on this machine's cores.
#
#   launch/local.sh                          # 2 ranks, the default model, synthetic data
#   NP=4 launch/local.sh --model cnn --epochs 3
#   MAX_RESTARTS=2 launch/local.sh --epochs 10     # relaunch from the last checkpoint
#
# Arguments go to python -m distrain.train. Settings (environment of this script):
#   NP                      ranks (default 2)
#   MAX_RESTARTS            relaunches after a failure (default 0)
#   CHECKPOINT_DIR          where checkpoints go (default ./checkpoints)
#   STALL_SHUTDOWN_SECONDS  abort when a collective waits this long (default 600)
# Beyond this machine's cores distrain-run oversubscribes, with a warning.
set -euo pipefail

NP="${NP:-2}"
MAX_RESTARTS="${MAX_RESTARTS:-0}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-./checkpoints}"
STALL_SHUTDOWN_SECONDS="${STALL_SHUTDOWN_SECONDS:-600}"

exec distrain-run -np "$NP" \
    --max-restarts "$MAX_RESTARTS" \
    --stall-warning-seconds 60 --stall-shutdown-seconds "$STALL_SHUTDOWN_SECONDS" \
    python -m distrain.train --checkpoint-dir "$CHECKPOINT_DIR" "$@"

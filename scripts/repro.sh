#!/usr/bin/env bash
# The one script that runs the pipeline: `make repro` calls it, and so does CI retraining.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export WANDB_MODE="${WANDB_MODE:-offline}" WANDB_ERROR_REPORTING=false DO_NOT_TRACK=1
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.cache/numba}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$PWD/.cache/matplotlib}"
# `dvc repro` and `dvc exp` need a git repository with a commit.
if ! git rev-parse --verify -q HEAD >/dev/null 2>&1; then
  echo "musicrec: dvc needs a git repository with at least one commit; run 'git init && git add -A && git commit -m init' first" >&2
  exit 2
fi
# One W&B service for every stage of the run (W&B's shared wandb-core, `wandb beta core`),
# where each stage would start its own: a few tenths of a second saved per tracked stage. If it
# cannot start, each stage starts its own as before; it is stopped when the run ends.
if [ "$WANDB_MODE" != disabled ] && [ -z "${WANDB_SERVICE:-}" ]; then
  if service="$(wandb beta core start --idle-timeout 10m 2>/dev/null)" && [ -n "$service" ]; then
    export WANDB_SERVICE="$service"
    trap '(wandb beta core stop >/dev/null 2>&1 &)' EXIT
  fi
fi
if ! dvc repro "$@"; then
  # Say plainly when it was the data: validation failed, so nothing was trained on it.
  if python -c 'import json,sys; sys.exit(json.load(open("reports/validation.json"))["play_log"]["ok"] is not False)' 2>/dev/null; then
    message="the data failed validation, so no model was trained on it: fix the lines listed above (also in reports/validation.json) and run again"
    echo "musicrec: $message" >&2
    if [ "${GITHUB_ACTIONS:-}" = true ]; then echo "::error title=Data validation failed::$message"; fi
  fi
  exit 1
fi
echo
echo "Report: reports/report.md (HTML: reports/report.html); metrics: dvc metrics show"

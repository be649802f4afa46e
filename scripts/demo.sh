#!/usr/bin/env bash
# `make demo`: the pipeline end to end on this machine, no AWS account. Brings the local stack up
# (local-up.sh), uploads every image in samples/ through S3 (S3 -> Lambda -> SNS -> SQS ->
# consumer -> S3), prints a table of the thumbnails with their latency, copies them to
# demo-output/, and brings the stack down again, also on failure or Ctrl-C. A stack that was
# already up before the demo is left running.
# Exits non-zero, naming it, if a thumbnail does not appear within DEMO_TIMEOUT seconds.
# Usage: scripts/demo.sh    (the settings of local-up.sh, and DEMO_TIMEOUT=60)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=local-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-lib.sh"

readonly DEMO_TIMEOUT=${DEMO_TIMEOUT:-60}
readonly SAMPLES_DIR=$REPO_ROOT/samples
readonly OUTPUT_DIR=$REPO_ROOT/demo-output

WAS_UP=0

bring_down() {
  local status=$?
  trap - EXIT INT TERM
  if ((WAS_UP)); then
    info "the stack was up before the demo: left running (make down stops it)"
  else
    "$SCRIPTS_DIR/local-down.sh" >&2 || status=1
  fi
  exit "$status"
}

main() {
  local samples=()
  shopt -s nullglob
  samples=("$SAMPLES_DIR"/*.{jpg,png,webp,gif})
  ((${#samples[@]} > 0)) || die "no images in $SAMPLES_DIR (scripts/make-samples.py makes them)"
  if running emulator && [[ -f $ENV_OUT ]]; then
    WAS_UP=1
  fi
  trap bring_down EXIT
  trap 'exit 130' INT TERM
  "$SCRIPTS_DIR/local-up.sh" >&2
  read_env
  rm -rf "$OUTPUT_DIR"
  mkdir -p "$OUTPUT_DIR"
  info "uploading ${#samples[@]} images from samples/ under raw-images/"
  if ! with_local_aws "$VENV_BIN/python" -m imgpipe.local.demo --timeout "$DEMO_TIMEOUT" \
    --out "$OUTPUT_DIR" "${samples[@]}"; then
    die "some thumbnails did not appear within ${DEMO_TIMEOUT}s (named above); logs in $RUN_DIR"
  fi
  info "thumbnails copied to ${OUTPUT_DIR#"$PWD"/}/"
}

main "$@"

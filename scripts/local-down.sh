#!/usr/bin/env bash
# `make down`: undoes `make up`. Stops the consumers (they finish what they hold) and the log
# shipper (a last flush), removes the AWS resources with infra/destroy.sh while the emulator still
# runs, then stops the emulator. Only processes recorded in RUN_DIR that are still the ones
# `make up` started are signalled. Safe to run twice, or when nothing is up.
# stdout: what was stopped and removed.
# Usage: scripts/local-down.sh    (the same RUN_DIR and EMULATOR_PORT as local-up.sh)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=local-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-lib.sh"

# Returns 1 if destroy.sh failed (the emulator's state goes with it anyway).
destroy_resources() {
  if ! running emulator; then
    [[ -f $ENV_OUT ]] && info "the emulator is not running: no resources to remove"
    return 0
  fi
  if ! read_env; then
    info "no $ENV_OUT: infra/create.sh did not finish, nothing to remove"
    return 0
  fi
  info "removing the pipeline's resources from the emulator (infra/destroy.sh)"
  if ! with_local_aws "$REPO_ROOT/infra/destroy.sh"; then
    warn "infra/destroy.sh failed (its messages are above)"
    return 1
  fi
}

main() {
  local names
  local name
  local consumers=()
  local status=0
  [[ -d $RUN_DIR ]] || {
    echo "nothing is up (no $RUN_DIR)"
    return 0
  }
  mapfile -t names < <(recorded_names)
  for name in "${names[@]}"; do
    if [[ $name == consumer-* ]]; then
      consumers+=("$name")
    fi
  done
  # Consumers first, so they never see their queue vanish; logship after them, for their last lines.
  stop "${consumers[@]}"
  stop logship
  destroy_resources || status=1
  stop emulator
  rm -f "$ENV_OUT" "$ENV_OUT.tmp"
  if ((${#names[@]} == 0)); then
    echo "nothing was running"
  fi
  return "$status"
}

main "$@"

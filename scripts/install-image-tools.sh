#!/usr/bin/env bash
# Installs what `make image` needs on a Debian machine with no Docker engine:
# buildah (builds and runs OCI images rootless-style with vfs + chroot) and debootstrap
# (makes the stand-in base image). Does nothing when both are already there.
set -euo pipefail

readonly PACKAGES=(buildah debootstrap)

log() {
  echo "install-image-tools: $*" >&2
}

missing_packages() {
  local cmd
  for cmd in "${PACKAGES[@]}"; do
    command -v "${cmd}" >/dev/null 2>&1 || echo "${cmd}"
  done
}

main() {
  local missing
  missing="$(missing_packages)"
  if [[ -z "${missing}" ]]; then
    return 0
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    log "need root to apt-get install: ${missing//$'\n'/ }"
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get here; install by hand: ${missing//$'\n'/ }"
    exit 1
  fi
  log "installing: ${missing//$'\n'/ }"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086  # one package name a line, split on purpose
  apt-get install -y -qq --no-install-recommends ${missing}
}

main "$@"

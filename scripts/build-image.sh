#!/usr/bin/env bash
# `make image`: builds the consumer image from the repo's Dockerfile without a Docker engine
# (buildah: vfs storage, chroot isolation), reports its size and smoke-tests it against the emulator.
# Docker Hub is out of reach here, so the official python base is replaced by a stand-in
# (Debian bookworm + its python3) made once with debootstrap and kept in buildah's storage.
#
# Settings: IMAGE, BASE_IMAGE, DEBIAN_MIRROR, SMOKE=0 (build and size only), REBUILD_BASE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly IMAGE="${IMAGE:-localhost/imgpipe-consumer:dev}"
readonly BASE_IMAGE="${BASE_IMAGE:-localhost/imgpipe-base:bookworm}"
readonly DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
readonly SMOKE="${SMOKE:-1}"
readonly REBUILD_BASE="${REBUILD_BASE:-0}"
readonly PYTHON="${ROOT}/.venv/bin/python"
readonly AWS_CLI="${ROOT}/.venv/bin/aws"
readonly WORK_DIR="${ROOT}/.run/image"
# Uncompressed size of the official python:3.12-slim-bookworm as `docker images` lists it
# (130 MB; see README, "Image size"). Our stand-in base differs, so only our layers are measured.
readonly OFFICIAL_BASE_MB=130
readonly MAX_IMAGE_MB=200
readonly SMOKE_TIMEOUT_SECONDS=90
# Trusted by pip during the build only, never copied into the image: this machine reaches PyPI
# through a TLS-inspecting proxy whose CA only the host's bundle has.
readonly BUILD_CA_BUNDLE="${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

log() {
  echo "build-image: $*" >&2
}

die() {
  log "error: $*"
  exit 1
}

buildah_() {
  buildah --storage-driver vfs "$@"
}

image_exists() {
  buildah_ inspect --type image "$1" >/dev/null 2>&1
}

# Bytes of an image's layers as uncompressed tars (what `docker images` adds up).
image_bytes() {
  local dir="${WORK_DIR}/layers"
  rm -rf "${dir}"
  buildah_ push --quiet --disable-compression "$1" "dir:${dir}" >/dev/null
  "${PYTHON}" -c 'import json, sys
print(sum(layer["size"] for layer in json.load(open(sys.argv[1]))["layers"]))' "${dir}/manifest.json"
  rm -rf "${dir}"
}

mb() {
  echo $(( ($1 + 500000) / 1000000 ))
}

trim_rootfs() {
  local rootfs="$1"
  rm -rf "${rootfs:?}"/usr/share/{doc,man,info,locale,lintian}/* \
    "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/* "${rootfs}"/var/cache/debconf/*-old \
    "${rootfs}"/var/log/*
}

build_base() {
  if [[ "${REBUILD_BASE}" != 1 ]] && image_exists "${BASE_IMAGE}"; then
    log "reusing the stand-in base ${BASE_IMAGE} (REBUILD_BASE=1 makes it anew)"
    return
  fi
  local rootfs="${WORK_DIR}/rootfs"
  local ctr
  local mnt
  log "making the stand-in base with debootstrap (about a minute)"
  rm -rf "${rootfs}"
  mkdir -p "${WORK_DIR}"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "${rootfs}" \
    "${DEBIAN_MIRROR}" >"${WORK_DIR}/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see ${WORK_DIR}/debootstrap.log"
  trim_rootfs "${rootfs}"
  ctr="$(buildah_ from scratch)"
  mnt="$(buildah_ mount "${ctr}")"
  cp -a "${rootfs}/." "${mnt}/"
  buildah_ umount "${ctr}" >/dev/null
  buildah_ config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "${ctr}"
  buildah_ commit --quiet --rm "${ctr}" "${BASE_IMAGE}" >/dev/null
  rm -rf "${rootfs}"
}

image_id() {
  buildah_ inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true
}

build_image() {
  local mounts=()
  local previous
  previous="$(image_id "${IMAGE}")"
  if [[ -f "${BUILD_CA_BUNDLE}" ]]; then
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"${WORK_DIR}/pip.conf"
    mounts=(--volume "${BUILD_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"
      --volume "${WORK_DIR}/pip.conf:/etc/pip.conf:ro")
  fi
  log "building ${IMAGE} from Dockerfile on ${BASE_IMAGE}"
  # docker format: the OCI format has no HEALTHCHECK.
  buildah_ bud --isolation chroot --format docker --build-arg "BASE=${BASE_IMAGE}" "${mounts[@]}" \
    --tag "${IMAGE}" --file "${ROOT}/Dockerfile" "${ROOT}" >"${WORK_DIR}/build.log" 2>&1 \
    || { tail -n 30 "${WORK_DIR}/build.log" >&2; die "build failed; see ${WORK_DIR}/build.log"; }
  # vfs stores every image as a full copy: drop the one this build replaced.
  if [[ -n "${previous}" && "${previous}" != "$(image_id "${IMAGE}")" ]]; then
    buildah_ rmi "${previous}" >/dev/null 2>&1 || true
  fi
}

report_sizes() {
  local base
  local total
  local added
  base="$(image_bytes "${BASE_IMAGE}")"
  total="$(image_bytes "${IMAGE}")"
  added=$((total - base))
  log "stand-in base: $(mb "${base}") MB; image: $(mb "${total}") MB"
  log "layers the Dockerfile adds: $(mb "${added}") MB"
  log "estimated size on python:3.12-slim-bookworm: $(( $(mb "${added}") + OFFICIAL_BASE_MB )) MB" \
    "(${OFFICIAL_BASE_MB} MB base + our layers; limit ${MAX_IMAGE_MB} MB)"
  if (( $(mb "${added}") + OFFICIAL_BASE_MB > MAX_IMAGE_MB )); then
    die "the image would be over ${MAX_IMAGE_MB} MB"
  fi
}

free_port() {
  "${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until "$@" succeeds or SMOKE_TIMEOUT_SECONDS pass; fails if the consumer died.
wait_for() {
  local what="$1"
  shift
  local deadline=$((SECONDS + SMOKE_TIMEOUT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "${CONSUMER_PID}" 2>/dev/null; then
      cat "${WORK_DIR}/consumer.log" >&2
      die "the consumer exited before ${what}"
    fi
    (( SECONDS < deadline )) || die "timed out waiting for ${what}"
    sleep 0.5
  done
  log "ok: ${what}"
}

http_ok() {
  "${PYTHON}" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
}

# A list from the image's configuration (e.g. Entrypoint), one NUL-terminated item each.
image_config_list() {
  buildah_ inspect --type image "${IMAGE}" | "${PYTHON}" -c 'import json, sys
value = json.load(sys.stdin)["Docker"]["config"]
for part in sys.argv[1].split("."):
    value = value[part]
sys.stdout.write("".join(item + "\0" for item in value))' "$1"
}

# Runs the image's own HEALTHCHECK command beside the consumer, in the same container.
image_healthcheck() {
  local test=()
  mapfile -d '' test < <(image_config_list Healthcheck.Test)
  [[ "${test[0]:-}" == CMD ]] || die "the image has no exec-form HEALTHCHECK"
  buildah_ run --isolation chroot --env "HEALTH_PORT=$1" "${SMOKE_CTR}" -- "${test[@]:1}"
}

aws_() {
  "${AWS_CLI}" --endpoint-url "${AWS_ENDPOINT_URL}" "$@"
}

# `buildah run` forwards no signal to its command, but chroot isolation keeps the host's PID
# namespace: signal the innermost process of its tree, the consumer itself.
innermost_child() {
  local pid="$1"
  local child
  while child="$(ps -o pid= --ppid "${pid}" | head -n 1 | tr -d ' ')" && [[ -n "${child}" ]]; do
    pid="${child}"
  done
  echo "${pid}"
}

cleanup() {
  local pid
  for pid in "${CONSUMER_PID:-}" "${MOTO_PID:-}"; do
    if [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null; then
      kill "$(innermost_child "${pid}")" 2>/dev/null || true
      wait "${pid}" 2>/dev/null || true
    fi
  done
  if [[ -n "${SMOKE_CTR:-}" ]]; then
    buildah_ rm "${SMOKE_CTR}" >/dev/null 2>&1 || true
  fi
}

start_emulator() {
  local port
  port="$(free_port)"
  "${PYTHON}" -m moto.server -H 127.0.0.1 -p "${port}" >"${WORK_DIR}/moto.log" 2>&1 &
  MOTO_PID=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:${port}"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  export AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
  local deadline=$((SECONDS + 30))
  until http_ok "${AWS_ENDPOINT_URL}/moto-api/" 2>/dev/null; do
    (( SECONDS < deadline )) || die "the emulator did not start; see ${WORK_DIR}/moto.log"
    sleep 0.2
  done
}

smoke_test() {
  local bucket="imgpipe-smoke"
  local key="raw-images/smoke test.jpg"
  local queue_url
  local health_port
  local entrypoint=()
  local status
  trap cleanup EXIT
  start_emulator
  aws_ s3api create-bucket --bucket "${bucket}" >/dev/null
  queue_url="$(aws_ sqs create-queue --queue-name imgpipe-smoke --query QueueUrl --output text)"
  "${PYTHON}" -c 'import sys; from PIL import Image
Image.new("RGB", (1600, 1200), (200, 30, 30)).save(sys.argv[1], quality=90)' "${WORK_DIR}/smoke.jpg"
  aws_ s3 cp --quiet "${WORK_DIR}/smoke.jpg" "s3://${bucket}/${key}"
  aws_ sqs send-message --queue-url "${queue_url}" \
    --message-body "{\"bucket\": \"${bucket}\", \"key\": \"${key}\"}" >/dev/null

  health_port="$(free_port)"
  mapfile -d '' entrypoint < <(image_config_list Entrypoint)
  (( ${#entrypoint[@]} > 0 )) || die "the image has no ENTRYPOINT"
  SMOKE_CTR="$(buildah_ from "${IMAGE}")"
  log "smoke test: running the consumer inside the image (health on port ${health_port})"
  # chroot isolation shares the host's network, where the emulator listens on 127.0.0.1.
  buildah_ run --isolation chroot \
    --env "AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL}" --env AWS_ACCESS_KEY_ID=testing \
    --env AWS_SECRET_ACCESS_KEY=testing --env AWS_REGION=us-east-1 \
    --env "BUCKET_NAME=${bucket}" --env "QUEUE_URL=${queue_url}" \
    --env "HEALTH_PORT=${health_port}" --env WAIT_TIME_SECONDS=1 \
    "${SMOKE_CTR}" -- "${entrypoint[@]}" >"${WORK_DIR}/consumer.log" 2>&1 &
  CONSUMER_PID=$!
  wait_for "/healthz answers 200" http_ok "http://127.0.0.1:${health_port}/healthz"
  wait_for "the image's HEALTHCHECK passes" image_healthcheck "${health_port}"
  wait_for "the thumbnail in S3" aws_ s3api head-object --bucket "${bucket}" \
    --key "thumbnails/${key#raw-images/}"
  kill -TERM "$(innermost_child "${CONSUMER_PID}")"
  status=0
  wait "${CONSUMER_PID}" || status=$?
  CONSUMER_PID=""
  [[ "${status}" -eq 0 ]] || { cat "${WORK_DIR}/consumer.log" >&2; die "exit ${status} on SIGTERM"; }
  log "ok: the consumer stopped on SIGTERM with exit 0"
}

main() {
  [[ -x "${PYTHON}" ]] || die "no ${PYTHON}: run make install first"
  "${ROOT}/scripts/install-image-tools.sh"
  mkdir -p "${WORK_DIR}"
  build_base
  build_image
  report_sizes
  if [[ "${SMOKE}" == 1 ]]; then
    smoke_test
  fi
}

main "$@"

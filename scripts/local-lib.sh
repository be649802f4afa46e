#!/usr/bin/env bash
# Shared by local-up.sh, local-down.sh and demo.sh: where the local stack keeps its state and how
# its processes are started, recognised and stopped. Sourced, never run.
# shellcheck disable=SC2034 # the settings are used by the scripts that source this file

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPTS_DIR/.." && pwd)
SCRIPT_NAME=$(basename "$0" .sh)
readonly SCRIPTS_DIR REPO_ROOT SCRIPT_NAME

# Every setting, with its default (also in .env.example).
RUN_DIR=$(realpath -m "${RUN_DIR:-$REPO_ROOT/.run}") # pid files, logs, env
readonly RUN_DIR
readonly EMULATOR_PORT=${EMULATOR_PORT:-4566}
readonly CONSUMERS=${CONSUMERS:-2}
readonly CONSUMER_BASE_PORT=${CONSUMER_BASE_PORT:-8081} # consumer-1 listens here, consumer-2 on +1
readonly LOCAL_REGION=${AWS_REGION:-us-east-1}
readonly VENV_BIN=${VENV_BIN:-$REPO_ROOT/.venv/bin}

readonly ENDPOINT=http://127.0.0.1:$EMULATOR_PORT
readonly ENV_OUT=$RUN_DIR/env
# Every process we start carries this in its environment; a reused PID does not.
readonly MARKER=IMGPIPE_RUN_DIR=$RUN_DIR
readonly STOP_SECONDS=30 # the consumer finishes its current images first; 90 s is its hard limit
# The emulator's fake account accepts any key; these keep real ones out of every call.
readonly FAKE_CREDENTIALS=(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test)
ENV_ARGS=()

info() {
  printf '[%s] %s\n' "$SCRIPT_NAME" "$*" >&2
}

warn() {
  printf '[%s] WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2
}

die() {
  printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

check_settings() {
  local name
  for name in EMULATOR_PORT CONSUMER_BASE_PORT CONSUMERS; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$name=${!name} is not a number"
  done
  ((EMULATOR_PORT > 0 && EMULATOR_PORT < 65536)) || die "EMULATOR_PORT=$EMULATOR_PORT is not a port"
  ((CONSUMERS >= 1 && CONSUMERS <= 16)) || die "CONSUMERS=$CONSUMERS is not 1..16"
  ((CONSUMER_BASE_PORT > 0 && CONSUMER_BASE_PORT + CONSUMERS <= 65536)) ||
    die "CONSUMER_BASE_PORT=$CONSUMER_BASE_PORT is not a port"
  [[ -x $VENV_BIN/imgpipe ]] || die "$VENV_BIN/imgpipe is missing: run make install first"
}

# is_ours PID PATTERN: PID is alive (not a zombie), inherited our marker and its command line
# contains PATTERN.
is_ours() {
  local pid=$1
  local pattern=$2
  local cmdline
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/environ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$pattern"* ]] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "$MARKER"
}

# What each started process runs, to recognise it by: emulator, consumer-N, logship.
pattern_of() {
  case $1 in
    emulator) printf 'imgpipe emulator --port %s' "$EMULATOR_PORT" ;;
    consumer-*) printf 'imgpipe consumer' ;;
    logship) printf 'imgpipe.local.logship' ;;
    *) die "unknown process name $1" ;;
  esac
}

# running NAME: the recorded process NAME is ours and alive; its PID in REPLY.
running() {
  local file=$RUN_DIR/$1.pid
  REPLY=""
  [[ -f $file ]] || return 1
  REPLY=$(<"$file")
  is_ours "$REPLY" "$(pattern_of "$1")"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_background NAME COMMAND...: COMMAND in its own session (a Ctrl-C in this terminal does
# not reach it), output to NAME.log, PID to NAME.pid.
start_background() {
  local name=$1
  shift
  rm -f "$RUN_DIR/$name.log" # a new file, so logship starts it from its beginning
  env "$MARKER" setsid "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$RUN_DIR/$name.pid"
}

# The local stack's settings (.run/env) as KEY=value words, in ENV_ARGS, for env(1).
read_env() {
  ENV_ARGS=()
  [[ -f $ENV_OUT ]] || return 1
  mapfile -t ENV_ARGS < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$ENV_OUT")
}

# with_local_aws COMMAND...: COMMAND against the emulator only, never a real account.
with_local_aws() {
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_SECURITY_TOKEN \
    "PATH=$VENV_BIN:$PATH" "AWS_REGION=$LOCAL_REGION" "AWS_DEFAULT_REGION=$LOCAL_REGION" \
    "${FAKE_CREDENTIALS[@]}" "${ENV_ARGS[@]}" "AWS_ENDPOINT_URL=$ENDPOINT" "$@"
}

# The recorded process names, consumers first.
recorded_names() {
  local file
  for file in "$RUN_DIR"/consumer-*.pid "$RUN_DIR"/logship.pid "$RUN_DIR"/emulator.pid; do
    if [[ -f $file ]]; then
      basename "$file" .pid
    fi
  done
}

# stop NAME...: SIGTERM to each that is still ours, wait up to STOP_SECONDS for them all, then
# SIGKILL the rest. Removes their pid files; prints one line per process on stdout.
stop() {
  local name
  local i
  local alive
  local deadline=$((SECONDS + STOP_SECONDS))
  local names=()
  local pids=()
  for name in "$@"; do
    if running "$name"; then
      kill -TERM "$REPLY" 2>/dev/null || true
      names+=("$name")
      pids+=("$REPLY")
    elif [[ -n $REPLY ]]; then
      info "$name (pid $REPLY) was not running"
    fi
    rm -f "$RUN_DIR/$name.pid"
  done
  while true; do
    alive=0
    for i in "${!pids[@]}"; do
      is_ours "${pids[i]}" "$(pattern_of "${names[i]}")" && alive=1
    done
    ((alive && SECONDS < deadline)) || break
    sleep 0.2
  done
  for i in "${!pids[@]}"; do
    if is_ours "${pids[i]}" "$(pattern_of "${names[i]}")"; then
      kill -KILL "${pids[i]}" 2>/dev/null || true
      echo "stopped ${names[i]} (pid ${pids[i]}): killed, it did not stop within ${STOP_SECONDS}s"
    else
      echo "stopped ${names[i]} (pid ${pids[i]})"
    fi
  done
}

#!/usr/bin/env bash
# `make up`: the whole pipeline on this machine. The emulator (moto + local Lambda runtime), the
# AWS resources made on it by infra/create.sh, CONSUMERS consumer processes and a log shipper
# (consumer logs -> CloudWatch Logs, as the CloudWatch add-on does on EKS). State in RUN_DIR
# (.run/): pid files, logs, and env, the settings `imgpipe` reads while the stack is up.
# A second run starts only what is not running, and says so.
# Usage: scripts/local-up.sh    (EMULATOR_PORT, CONSUMERS, CONSUMER_BASE_PORT, RUN_DIR, AWS_REGION)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=local-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/local-lib.sh"

readonly START_SECONDS=30
# Local consumers poll for 5 s, not 20: `make down` then stops them in seconds.
readonly CONSUMER_WAIT_SECONDS=${WAIT_TIME_SECONDS:-5}
readonly CONSUMER_LOG_GROUP=${CONSUMER_LOG_GROUP:-/aws/containerinsights/${CLUSTER_NAME:-${PROJECT:-imgpipe}}/application}

consumer_port() {
  printf '%s' $((CONSUMER_BASE_PORT + $1 - 1))
}

fully_up() {
  local i
  running emulator && [[ -f $ENV_OUT ]] && running logship || return 1
  for ((i = 1; i <= CONSUMERS; i++)); do
    running "consumer-$i" || return 1
  done
}

# wait_until NAME SECONDS COMMAND...: until COMMAND succeeds; dies if NAME exits or time runs out.
wait_until() {
  local name=$1
  local seconds=$2
  local deadline=$((SECONDS + seconds))
  shift 2
  until "$@"; do
    if ! running "$name"; then
      tail -n 20 "$RUN_DIR/$name.log" >&2 || true
      die "$name exited while starting (log above, in $RUN_DIR/$name.log)"
    fi
    ((SECONDS < deadline)) || die "$name did not become ready within ${seconds}s: see $RUN_DIR/$name.log"
    sleep 0.2
  done
}

emulator_listening() {
  grep -q '"emulator listening"' "$RUN_DIR/emulator.log" && port_open "$EMULATOR_PORT"
}

start_emulator() {
  if port_open "$EMULATOR_PORT"; then
    die "port $EMULATOR_PORT on 127.0.0.1 is taken by another program: stop it, or set EMULATOR_PORT to a free port"
  fi
  start_background emulator "$VENV_BIN/imgpipe" emulator --port "$EMULATOR_PORT"
  wait_until emulator "$START_SECONDS" emulator_listening
  info "started the emulator on $ENDPOINT (pid $(<"$RUN_DIR/emulator.pid"))"
}

# infra/create.sh against the emulator; its KEY=value lines, with the endpoint, the fake
# credentials and the consumers' log group, become RUN_DIR/env.
create_resources() {
  local settings
  info "creating the pipeline's resources on the emulator (infra/create.sh, about 30 s)"
  ENV_ARGS=()
  settings=$(with_local_aws "$REPO_ROOT/infra/create.sh") ||
    die "infra/create.sh failed (its messages are above); make down cleans up"
  {
    echo "# Written by scripts/local-up.sh; removed by scripts/local-down.sh."
    grep -E '^[A-Za-z_][A-Za-z0-9_]*=' <<<"$settings" | grep -vE '^(AWS_DEFAULT_REGION|AWS_ENDPOINT_URL|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|CONSUMER_LOG_GROUP)='
    echo "AWS_DEFAULT_REGION=$LOCAL_REGION" # what the AWS CLI v1 and boto3 read
    echo "AWS_ENDPOINT_URL=$ENDPOINT"
    printf '%s\n' "${FAKE_CREDENTIALS[@]}"
    echo "CONSUMER_LOG_GROUP=$CONSUMER_LOG_GROUP"
  } >"$ENV_OUT.tmp"
  mv "$ENV_OUT.tmp" "$ENV_OUT"
}

consumer_ready() {
  "$VENV_BIN/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$1/readyz" 2>/dev/null
}

start_consumer() {
  local i=$1
  local port
  port=$(consumer_port "$i")
  if port_open "$port"; then
    die "port $port on 127.0.0.1 (consumer-$i) is taken by another program: set CONSUMER_BASE_PORT"
  fi
  start_background "consumer-$i" env -u AWS_PROFILE -u AWS_SESSION_TOKEN "${ENV_ARGS[@]}" \
    HEALTH_HOST=127.0.0.1 "HEALTH_PORT=$port" "WAIT_TIME_SECONDS=$CONSUMER_WAIT_SECONDS" \
    "$VENV_BIN/imgpipe" consumer
}

start_consumers() {
  local i
  local started=()
  for ((i = 1; i <= CONSUMERS; i++)); do
    if running "consumer-$i"; then
      info "consumer-$i is already running (pid $REPLY)"
    else
      start_consumer "$i"
      started+=("$i")
    fi
  done
  for i in "${started[@]}"; do
    wait_until "consumer-$i" "$START_SECONDS" consumer_ready "$(consumer_port "$i")"
    info "started consumer-$i, ready on port $(consumer_port "$i") (pid $(<"$RUN_DIR/consumer-$i.pid"))"
  done
}

start_logship() {
  local files=()
  local i
  if running logship; then
    info "logship is already running (pid $REPLY)"
    return
  fi
  for ((i = 1; i <= CONSUMERS; i++)); do
    files+=("$RUN_DIR/consumer-$i.log")
  done
  start_background logship env -u AWS_PROFILE -u AWS_SESSION_TOKEN "${ENV_ARGS[@]}" \
    "$VENV_BIN/python" -m imgpipe.local.logship --group "$CONSUMER_LOG_GROUP" "${files[@]}"
  wait_until logship "$START_SECONDS" grep -q '"shipping"' "$RUN_DIR/logship.log"
  info "started logship: consumer logs -> $CONSUMER_LOG_GROUP (pid $(<"$RUN_DIR/logship.pid"))"
}

print_summary() {
  local i
  local name
  local where=${RUN_DIR#"$PWD"/}
  echo "imgpipe runs on this machine (state in $where/):"
  printf '  %-11s %-34s pid %s\n' emulator "$ENDPOINT" "$(<"$RUN_DIR/emulator.pid")"
  for ((i = 1; i <= CONSUMERS; i++)); do
    name=consumer-$i
    printf '  %-11s %-34s pid %s\n' "$name" "http://127.0.0.1:$(consumer_port "$i")/readyz" \
      "$(<"$RUN_DIR/$name.pid")"
  done
  printf '  %-11s %-34s pid %s\n' logship "consumer logs -> CloudWatch Logs" "$(<"$RUN_DIR/logship.pid")"
  echo "  log group:  $CONSUMER_LOG_GROUP (imgpipe logs consumer)"
  echo "  logs: $where/*.log    settings: $where/env"
  echo "Try:"
  if [[ $RUN_DIR != "$REPO_ROOT/.run" ]]; then
    echo "  set -a; source $RUN_DIR/env; set +a   # imgpipe reads ./.run/env by itself, not $where/env"
  fi
  echo "  .venv/bin/imgpipe upload 'samples/city at night.jpg' --wait"
  echo "  .venv/bin/imgpipe status"
  echo "  .venv/bin/imgpipe logs lambda      # or: logs consumer"
  echo "  make down"
}

main() {
  local fresh=0
  check_settings
  mkdir -p "$RUN_DIR"
  if fully_up; then
    info "already up: nothing changed"
    print_summary
    return
  fi
  if running emulator; then
    info "the emulator is already running (pid $REPLY)"
  else
    start_emulator
    fresh=1
  fi
  # A new emulator starts empty; one that ran on keeps what create.sh made.
  if ((fresh)) || [[ ! -f $ENV_OUT ]]; then
    create_resources
  else
    info "resources exist ($ENV_OUT): infra/create.sh not run"
  fi
  read_env
  start_consumers
  start_logship
  print_summary
}

main "$@"

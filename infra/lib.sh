#!/usr/bin/env bash
# Shared by create.sh, destroy.sh and cw-alarms.sh: settings, logging, the `awsx` wrapper.
# Sourced, never run. Every setting is documented once, in .env.example.
# shellcheck disable=SC2034 # the settings are used by the scripts that source this file
set -euo pipefail # the callers' mode already; stated so this file is strict on its own too

INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INFRA_DIR/.." && pwd)
SCRIPT_NAME=$(basename "$0" .sh)
readonly INFRA_DIR REPO_ROOT SCRIPT_NAME

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

# KEY=value lines from a .env file, exported unless the variable is already set: the
# environment wins over the file. Surrounding quotes are stripped; nothing is evaluated.
load_env_file() {
  local file=$1
  local line
  local key
  local value
  [[ -f $file ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[2]}
    value=${BASH_REMATCH[3]}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    [[ -v $key ]] || export "$key=$value"
  done <"$file"
}

load_env_file "${ENV_FILE:-$REPO_ROOT/.env}"

readonly PROJECT=${PROJECT:-imgpipe}
readonly AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
readonly SNS_TOPIC_NAME=${SNS_TOPIC_NAME:-$PROJECT-uploads}
readonly QUEUE_NAME=${QUEUE_NAME:-$PROJECT-thumbnails}
readonly DLQ_NAME=${DLQ_NAME:-$QUEUE_NAME-dlq}
readonly LAMBDA_NAME=${LAMBDA_NAME:-$PROJECT-publish}
readonly RAW_PREFIX=${RAW_PREFIX:-raw-images/}
readonly THUMB_PREFIX=${THUMB_PREFIX:-thumbnails/}
readonly LOG_RETENTION_DAYS=${LOG_RETENTION_DAYS:-14}
readonly ALARM_TOPIC_NAME=${ALARM_TOPIC_NAME:-$PROJECT-alarms}
readonly ALARM_EMAIL=${ALARM_EMAIL:-}
readonly CLUSTER_NAME=${CLUSTER_NAME:-$PROJECT}
readonly NODE_TYPE=${NODE_TYPE:-t3.small}
readonly NODE_COUNT=${NODE_COUNT:-1}
readonly NAMESPACE=${NAMESPACE:-image-pipeline}
readonly SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-imgpipe-consumer}
readonly ECR_REPO=${ECR_REPO:-$PROJECT-consumer}
readonly IMAGE_PLATFORMS=${IMAGE_PLATFORMS:-linux/amd64,linux/arm64}
readonly CONSUMER_AUTH=${CONSUMER_AUTH:-pod-identity}
# The emulator has no EKS: by default the EKS half runs only against a real account.
if [[ -n ${AWS_ENDPOINT_URL:-} ]]; then
  readonly SKIP_EKS=${SKIP_EKS:-1}
else
  readonly SKIP_EKS=${SKIP_EKS:-0}
fi

# Names derived from the settings, shared by create and destroy.
readonly LAMBDA_ROLE_NAME=$LAMBDA_NAME-role
readonly LAMBDA_POLICY_NAME=$LAMBDA_NAME-publish
readonly LOG_GROUP=/aws/lambda/$LAMBDA_NAME
readonly CONSUMER_NAME=$PROJECT-consumer
readonly CONSUMER_ROLE_NAME=$PROJECT-consumer-pod-identity
readonly KEYS_SECRET=imgpipe-aws-keys
readonly ALARM_LAMBDA_ERRORS=$PROJECT-lambda-errors
readonly ALARM_DLQ_NOT_EMPTY=$PROJECT-dlq-not-empty
readonly ALARM_QUEUE_STALLED=$PROJECT-queue-stalled
readonly DASHBOARD_NAME=$PROJECT
readonly QUERY_NAME=$PROJECT/lambda-errors

# AWS CLI v2 would page output through `less`.
export AWS_PAGER=""

is_local() {
  [[ -n ${AWS_ENDPOINT_URL:-} ]]
}

# Every AWS call goes through here: CLI v1 ignores AWS_ENDPOINT_URL for some services (SQS).
awsx() {
  aws --region "$AWS_REGION" ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} "$@"
}

# try_aws PATTERN ARGS...: run `awsx ARGS`, output in REPLY. Returns 0 on success, 1 when it
# failed with an error matching the extended regex PATTERN (not found, already exists);
# any other failure is fatal.
try_aws() {
  local pattern=$1
  shift
  if REPLY=$(awsx "$@" 2>"$WORK_DIR/aws.err"); then
    return 0
  fi
  if grep -Eq -- "$pattern" "$WORK_DIR/aws.err"; then
    return 1
  fi
  die "aws $1 $2 failed: $(tr '\n' ' ' <"$WORK_DIR/aws.err")"
}

require_tools() {
  local tool
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (install them or fix PATH)"
}

check_credentials() {
  local identity
  if ! identity=$(awsx sts get-caller-identity --query '[Account,Arn]' --output text \
    2>"$WORK_DIR/aws.err"); then
    die "no usable AWS credentials" \
      "(aws sts get-caller-identity: $(tr '\n' ' ' <"$WORK_DIR/aws.err"))"
  fi
  ACCOUNT_ID=${identity%%$'\t'*}
  PARTITION=$(cut -d: -f2 <<<"${identity#*$'\t'}")
  readonly ACCOUNT_ID PARTITION
}

# The scratch directory, the credentials check and the names that need the account id.
init() {
  require_tools aws
  WORK_DIR=$(mktemp -d)
  readonly WORK_DIR
  trap 'rm -rf "$WORK_DIR"' EXIT
  [[ $CONSUMER_AUTH == pod-identity || $CONSUMER_AUTH == access-keys ]] ||
    die "CONSUMER_AUTH must be pod-identity or access-keys, not '$CONSUMER_AUTH'"
  check_credentials
  readonly BUCKET_NAME=${BUCKET_NAME:-$PROJECT-$ACCOUNT_ID-$AWS_REGION}
  readonly BUCKET_ARN=arn:$PARTITION:s3:::$BUCKET_NAME
  readonly TOPIC_ARN=arn:$PARTITION:sns:$AWS_REGION:$ACCOUNT_ID:$SNS_TOPIC_NAME
  readonly QUEUE_ARN=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT_ID:$QUEUE_NAME
  readonly DLQ_ARN=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT_ID:$DLQ_NAME
  readonly FUNCTION_ARN=arn:$PARTITION:lambda:$AWS_REGION:$ACCOUNT_ID:function:$LAMBDA_NAME
  readonly LAMBDA_ROLE_ARN=arn:$PARTITION:iam::$ACCOUNT_ID:role/$LAMBDA_ROLE_NAME
  readonly CONSUMER_POLICY_ARN=arn:$PARTITION:iam::$ACCOUNT_ID:policy/$CONSUMER_NAME
  readonly ALARM_TOPIC_ARN=arn:$PARTITION:sns:$AWS_REGION:$ACCOUNT_ID:$ALARM_TOPIC_NAME
}

# query_definition_id: the id of the saved Logs Insights query QUERY_NAME, or empty.
query_definition_id() {
  local id
  id=$(awsx logs describe-query-definitions --query-definition-name-prefix "$QUERY_NAME" \
    --query "queryDefinitions[?name=='$QUERY_NAME'].queryDefinitionId | [0]" --output text)
  [[ $id == None ]] || printf '%s' "$id"
}

# render TEMPLATE: the file with every ${NAME} replaced by that variable's value, on stdout.
# An unset or empty variable is an error, so no placeholder reaches AWS unfilled.
render() {
  local text
  local name
  local placeholder
  text=$(<"$1")
  while [[ $text =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
    name=${BASH_REMATCH[1]}
    [[ -n ${!name:-} ]] || die "$1 uses \${$name}, which is not set"
    placeholder="\${$name}"
    text=${text//"$placeholder"/"${!name}"}
  done
  printf '%s\n' "$text"
}

# json_string TEXT: TEXT as a JSON string literal, for policies nested in attribute maps.
json_string() {
  local text=$1
  text=${text//\\/\\\\}
  text=${text//\"/\\\"}
  text=${text//$'\n'/ }
  text=${text//$'\t'/ }
  printf '"%s"' "$text"
}

ensure_topic() {
  local name=$1
  local arn=$2
  if try_aws NotFound sns get-topic-attributes --topic-arn "$arn" --query Attributes.TopicArn; then
    info "topic $name exists"
  else
    awsx sns create-topic --name "$name" --tags "Key=project,Value=$PROJECT" >/dev/null
    info "created topic $name"
  fi
}

# bucket_state: in REPLY, "absent", "ours" (tagged project=<PROJECT>), "untagged" (this account's
# but not made by create.sh) or "foreign" (another account's). A real error is fatal.
bucket_state() {
  if try_aws 'NoSuchBucket|NoSuchTagSet|AccessDenied|\(403\)' s3api get-bucket-tagging \
    --bucket "$BUCKET_NAME" --expected-bucket-owner "$ACCOUNT_ID" \
    --query "TagSet[?Key=='project'].Value | [0]" --output text; then
    if [[ $REPLY == "$PROJECT" ]]; then
      REPLY=ours
    else
      REPLY=untagged
    fi
  elif grep -q NoSuchBucket "$WORK_DIR/aws.err"; then
    REPLY=absent
  elif grep -q NoSuchTagSet "$WORK_DIR/aws.err"; then
    REPLY=untagged
  else
    REPLY=foreign
  fi
}

# eksctl answers "not found" with an error: tell that apart from a real failure.
cluster_exists() {
  local out
  if out=$(eksctl get cluster --name "$CLUSTER_NAME" --region "$AWS_REGION" 2>&1); then
    return 0
  fi
  if grep -Eq 'ResourceNotFoundException|No cluster found' <<<"$out"; then
    return 1
  fi
  die "eksctl get cluster $CLUSTER_NAME failed: ${out//$'\n'/ }"
}

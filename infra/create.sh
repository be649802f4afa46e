#!/usr/bin/env bash
set -euo pipefail
# Creates the pipeline: S3 -> Lambda -> SNS -> SQS (+ DLQ) -> consumer on EKS, and its alarms.
# Every step is get-or-create: a second run changes nothing. With AWS_ENDPOINT_URL set (the
# emulator) the EKS half is skipped (SKIP_EKS=1).
# stdout: the settings a consumer needs, as KEY=value lines; every other message goes to stderr.
# Usage: infra/create.sh        (settings from the environment, then .env; see .env.example)

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly VISIBILITY_TIMEOUT=120 # > the slowest allowed image (50 MB, 100 Mpx) takes
readonly LONG_POLL_SECONDS=20   # the SQS maximum
readonly QUEUE_RETENTION=345600 # 4 days
readonly DLQ_RETENTION=1209600  # 14 days (the SQS maximum), longer than the queue's
readonly MAX_RECEIVE_COUNT=5
readonly ROLE_PROPAGATION_SECONDS=60
readonly S3_INVOKE_SID=s3-invoke

ensure_bucket() {
  bucket_state
  case $REPLY in
    absent) create_bucket ;;
    ours) info "bucket $BUCKET_NAME exists" ;;
    # Never reconfigure (and later destroy) a bucket this script did not make.
    untagged)
      die "bucket $BUCKET_NAME exists but is not tagged project=$PROJECT:" "set BUCKET_NAME"
      ;;
    foreign) die "bucket $BUCKET_NAME is another account's (or hides its tags): set BUCKET_NAME" ;;
  esac
  awsx s3api put-public-access-block --bucket "$BUCKET_NAME" --public-access-block-configuration \
    BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
  awsx s3api put-bucket-encryption --bucket "$BUCKET_NAME" --server-side-encryption-configuration \
    '{"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}'
  if [[ ${AWS_ENDPOINT_URL:-} == http://* ]]; then
    info "TLS-only bucket policy not applied: on a plain-HTTP endpoint it would deny everything"
  else
    awsx s3api put-bucket-policy --bucket "$BUCKET_NAME" \
      --policy "$(render "$INFRA_DIR/iam-policies/bucket-policy.json")"
  fi
}

create_bucket() {
  local args=(s3api create-bucket --bucket "$BUCKET_NAME")
  # us-east-1 rejects a LocationConstraint; every other region requires one.
  if [[ $AWS_REGION != us-east-1 ]]; then
    args+=(--create-bucket-configuration "LocationConstraint=$AWS_REGION")
  fi
  if ! try_aws 'BucketAlreadyExists|BucketAlreadyOwnedByYou' "${args[@]}"; then
    grep -q BucketAlreadyOwnedByYou "$WORK_DIR/aws.err" ||
      die "bucket name $BUCKET_NAME is taken by another account: set BUCKET_NAME"
  fi
  awsx s3api put-bucket-tagging --bucket "$BUCKET_NAME" \
    --tagging "TagSet=[{Key=project,Value=$PROJECT}]"
  info "created bucket $BUCKET_NAME"
}

# ensure_queue NAME ATTRIBUTES_JSON: the queue's URL in REPLY. create-queue is itself
# get-or-create when the attributes match; a queue whose attributes drifted gets ours back.
ensure_queue() {
  local name=$1
  local attributes=$2
  if try_aws QueueAlreadyExists sqs create-queue --queue-name "$name" \
    --attributes "$attributes" --tags "project=$PROJECT" --query QueueUrl --output text; then
    info "queue $name is in place"
    return
  fi
  REPLY=$(awsx sqs get-queue-url --queue-name "$name" --query QueueUrl --output text)
  awsx sqs set-queue-attributes --queue-url "$REPLY" --attributes "$attributes"
  info "queue $name existed with other attributes: set them"
}

dlq_attributes() {
  printf '{"MessageRetentionPeriod": "%s", "SqsManagedSseEnabled": "true"}' "$DLQ_RETENTION"
}

queue_attributes() {
  local redrive
  redrive=$(printf '{"deadLetterTargetArn": "%s", "maxReceiveCount": %s}' \
    "$DLQ_ARN" "$MAX_RECEIVE_COUNT")
  printf '{"VisibilityTimeout": "%s", "ReceiveMessageWaitTimeSeconds": "%s",' \
    "$VISIBILITY_TIMEOUT" "$LONG_POLL_SECONDS"
  printf ' "MessageRetentionPeriod": "%s", "SqsManagedSseEnabled": "true",' "$QUEUE_RETENTION"
  printf ' "RedrivePolicy": %s, "Policy": %s}' "$(json_string "$redrive")" \
    "$(json_string "$(render "$INFRA_DIR/iam-policies/queue-policy.json")")"
}

ensure_subscription() {
  local existing
  existing=$(awsx sns list-subscriptions-by-topic --topic-arn "$TOPIC_ARN" \
    --query "Subscriptions[?Endpoint=='$QUEUE_ARN'].SubscriptionArn" --output text)
  if [[ -n $existing ]]; then
    info "queue $QUEUE_NAME is subscribed to $SNS_TOPIC_NAME"
    return
  fi
  awsx sns subscribe --topic-arn "$TOPIC_ARN" --protocol sqs --notification-endpoint "$QUEUE_ARN" \
    --attributes RawMessageDelivery=true --return-subscription-arn >/dev/null
  info "subscribed queue $QUEUE_NAME to $SNS_TOPIC_NAME (raw delivery)"
}

ensure_lambda_role() {
  if try_aws EntityAlreadyExists iam create-role --role-name "$LAMBDA_ROLE_NAME" \
    --description "$LAMBDA_NAME: publish S3 uploads to $SNS_TOPIC_NAME" \
    --assume-role-policy-document "file://$INFRA_DIR/iam-policies/lambda-trust-policy.json" \
    --tags "Key=project,Value=$PROJECT"; then
    info "created role $LAMBDA_ROLE_NAME"
  else
    info "role $LAMBDA_ROLE_NAME exists"
  fi
  awsx iam put-role-policy --role-name "$LAMBDA_ROLE_NAME" --policy-name "$LAMBDA_POLICY_NAME" \
    --policy-document "$(render "$INFRA_DIR/iam-policies/lambda-publish-policy.json")"
}

# Made here because Lambda would make it on first use without retention or tags.
ensure_log_group() {
  local retention
  retention=$(awsx logs describe-log-groups --log-group-name-prefix "$LOG_GROUP" --output text \
    --query "logGroups[?logGroupName=='$LOG_GROUP'] | [0].[logGroupName, retentionInDays]")
  if [[ $retention == None ]]; then
    awsx logs create-log-group --log-group-name "$LOG_GROUP" --tags "project=$PROJECT"
    info "created log group $LOG_GROUP"
  elif [[ ${retention##*$'\t'} == "$LOG_RETENTION_DAYS" ]]; then
    info "log group $LOG_GROUP exists"
    return
  fi
  awsx logs put-retention-policy --log-group-name "$LOG_GROUP" \
    --retention-in-days "$LOG_RETENTION_DAYS"
}

# A fixed timestamp and no extra attributes: the same handler.py always gives the same zip,
# so its sha256 tells whether the deployed code is current.
build_lambda_zip() {
  local dir=$WORK_DIR/lambda
  [[ -f $REPO_ROOT/lambda/handler.py ]] || die "lambda/handler.py is missing"
  mkdir -p "$dir"
  cp "$REPO_ROOT/lambda/handler.py" "$dir/handler.py"
  chmod 644 "$dir/handler.py"
  touch -t 198001010000 "$dir/handler.py"
  (cd "$dir" && zip -q -X function.zip handler.py)
}

ensure_lambda() {
  local zip=$WORK_DIR/lambda/function.zip
  local sha
  build_lambda_zip
  sha=$(openssl dgst -sha256 -binary "$zip" | base64)
  if ! try_aws ResourceNotFoundException lambda get-function-configuration \
    --function-name "$LAMBDA_NAME" --query CodeSha256 --output text; then
    create_function "$zip"
  elif [[ $REPLY == "$sha" ]]; then
    info "Lambda $LAMBDA_NAME is up to date"
  else
    awsx lambda update-function-code --function-name "$LAMBDA_NAME" --zip-file "fileb://$zip" \
      >/dev/null
    awsx lambda wait function-updated-v2 --function-name "$LAMBDA_NAME"
    info "updated the code of Lambda $LAMBDA_NAME"
  fi
}

# A role made seconds ago is often not yet assumable by Lambda (IAM is eventually consistent).
create_function() {
  local zip=$1
  local delay=1
  local deadline=$((SECONDS + ROLE_PROPAGATION_SECONDS))
  until awsx lambda create-function --function-name "$LAMBDA_NAME" \
    --runtime python3.12 --handler handler.handler --role "$LAMBDA_ROLE_ARN" \
    --zip-file "fileb://$zip" --timeout 30 --memory-size 128 \
    --environment "Variables={SNS_TOPIC_ARN=$TOPIC_ARN,RAW_PREFIX=$RAW_PREFIX}" \
    --logging-config LogFormat=JSON --tags "project=$PROJECT" \
    >/dev/null 2>"$WORK_DIR/aws.err"; do
    if ! grep -q 'cannot be assumed' "$WORK_DIR/aws.err" || ((SECONDS + delay > deadline)); then
      die "aws lambda create-function failed: $(tr '\n' ' ' <"$WORK_DIR/aws.err")"
    fi
    info "role $LAMBDA_ROLE_NAME cannot be assumed yet (IAM propagation): retrying in ${delay}s"
    sleep "$delay"
    delay=$((delay * 2))
  done
  awsx lambda wait function-active-v2 --function-name "$LAMBDA_NAME"
  info "created Lambda $LAMBDA_NAME"
}

# An event that still fails after Lambda's two async retries goes to the DLQ, not away: the DLQ
# alarm fires, and `imgpipe dlq redrive` hands it to the consumer, which reads S3 events.
ensure_lambda_failure_destination() {
  if try_aws ResourceNotFoundException lambda get-function-event-invoke-config \
    --function-name "$LAMBDA_NAME" --query DestinationConfig.OnFailure.Destination \
    --output text && [[ $REPLY == "$DLQ_ARN" ]]; then
    info "failed Lambda events go to $DLQ_NAME"
    return
  fi
  awsx lambda put-function-event-invoke-config --function-name "$LAMBDA_NAME" \
    --maximum-retry-attempts 2 \
    --destination-config "{\"OnFailure\": {\"Destination\": \"$DLQ_ARN\"}}" >/dev/null
  info "failed Lambda events now go to $DLQ_NAME"
}

# S3 may invoke the function only for this bucket, in this account (no confused deputy).
ensure_s3_permission() {
  if try_aws ResourceNotFoundException lambda get-policy --function-name "$LAMBDA_NAME" \
    --query Policy --output text && grep -Eq "\"Sid\": ?\"$S3_INVOKE_SID\"" <<<"$REPLY"; then
    info "S3 may invoke $LAMBDA_NAME"
    return
  fi
  awsx lambda add-permission --function-name "$LAMBDA_NAME" --statement-id "$S3_INVOKE_SID" \
    --action lambda:InvokeFunction --principal s3.amazonaws.com \
    --source-arn "$BUCKET_ARN" --source-account "$ACCOUNT_ID" >/dev/null
  info "allowed S3 bucket $BUCKET_NAME to invoke $LAMBDA_NAME"
}

# The permission must exist first: S3 validates the destination when the notification is set.
ensure_bucket_notification() {
  local found
  local config
  found=$(awsx s3api get-bucket-notification-configuration --bucket "$BUCKET_NAME" --output text \
    --query "length(LambdaFunctionConfigurations[?LambdaFunctionArn=='$FUNCTION_ARN'] || \`[]\`)")
  if ((found > 0)); then
    info "bucket $BUCKET_NAME notifies $LAMBDA_NAME"
    return
  fi
  config=$(printf '{"LambdaFunctionConfigurations": [{"Id": "%s", "LambdaFunctionArn": "%s",
    "Events": ["s3:ObjectCreated:*"],
    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "%s"}]}}}]}' \
    "$PROJECT-uploads" "$FUNCTION_ARN" "$RAW_PREFIX")
  awsx s3api put-bucket-notification-configuration --bucket "$BUCKET_NAME" \
    --notification-configuration "$config"
  info "bucket $BUCKET_NAME now notifies $LAMBDA_NAME of uploads under $RAW_PREFIX"
}

ensure_ecr_repo() {
  if try_aws RepositoryNotFoundException ecr describe-repositories \
    --repository-names "$ECR_REPO" --query 'repositories[0].repositoryUri' --output text; then
    info "ECR repository $ECR_REPO exists"
  else
    REPLY=$(awsx ecr create-repository --repository-name "$ECR_REPO" \
      --image-scanning-configuration scanOnPush=true --tags "Key=project,Value=$PROJECT" \
      --query repository.repositoryUri --output text)
    info "created ECR repository $ECR_REPO"
  fi
  readonly ECR_URI=$REPLY
}

# IMAGE_TAG, else the git short sha; uncommitted changes make it "<sha>-dirty", rebuilt every run.
resolve_image_tag() {
  local tag=${IMAGE_TAG:-}
  if [[ -z $tag ]]; then
    tag=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null) ||
      die "not a git checkout: set IMAGE_TAG"
    if [[ -n $(git -C "$REPO_ROOT" status --porcelain) ]]; then
      tag+=-dirty
    fi
  fi
  readonly IMAGE_TAG=$tag
  readonly IMAGE=$ECR_URI:$tag
}

build_and_push_image() {
  if [[ $IMAGE_TAG != *-dirty ]] && try_aws ImageNotFound ecr describe-images \
    --repository-name "$ECR_REPO" --image-ids "imageTag=$IMAGE_TAG" \
    --query 'imageDetails[0].imageDigest'; then
    info "image $IMAGE is already in ECR"
    return
  fi
  [[ -f $REPO_ROOT/Dockerfile ]] || die "Dockerfile is missing at the repository root"
  awsx ecr get-login-password |
    docker login --username AWS --password-stdin "${ECR_URI%%/*}" >&2
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --platform "$IMAGE_PLATFORMS" --tag "$IMAGE" --push "$REPO_ROOT" >&2
  else
    info "docker buildx is not available: building for this machine's platform only"
    docker build --tag "$IMAGE" "$REPO_ROOT" >&2
    docker push "$IMAGE" >&2
  fi
  info "pushed $IMAGE"
}

ensure_consumer_policy() {
  if try_aws EntityAlreadyExists iam create-policy --policy-name "$CONSUMER_NAME" \
    --description "$PROJECT consumer: read uploads, write thumbnails, consume its queue" \
    --policy-document "$(render "$INFRA_DIR/iam-policies/eks-consumer-policy.json")" \
    --tags "Key=project,Value=$PROJECT"; then
    info "created IAM policy $CONSUMER_NAME"
  else
    info "IAM policy $CONSUMER_NAME exists"
  fi
}

ensure_cluster() {
  if cluster_exists; then
    info "EKS cluster $CLUSTER_NAME exists"
    eksctl utils write-kubeconfig --cluster "$CLUSTER_NAME" --region "$AWS_REGION" >&2
    return
  fi
  render "$INFRA_DIR/cluster.yaml" >"$WORK_DIR/cluster.yaml"
  info "creating EKS cluster $CLUSTER_NAME: 15-20 minutes"
  eksctl create cluster -f "$WORK_DIR/cluster.yaml" >&2
}

# CONSUMER_AUTH=access-keys, a demo-only shortcut: an IAM user whose long-lived keys sit in a
# Kubernetes Secret. Keys are readable only once, so new ones are made only when the Secret is
# missing (and the old ones then deleted).
ensure_consumer_keys() {
  local keys
  local key_id
  local secret
  if try_aws EntityAlreadyExists iam create-user --user-name "$CONSUMER_NAME" \
    --tags "Key=project,Value=$PROJECT"; then
    info "created IAM user $CONSUMER_NAME (CONSUMER_AUTH=access-keys: demo only)"
  else
    info "IAM user $CONSUMER_NAME exists"
  fi
  awsx iam attach-user-policy --user-name "$CONSUMER_NAME" --policy-arn "$CONSUMER_POLICY_ARN"
  if [[ -n $(kubectl get secret "$KEYS_SECRET" -n "$NAMESPACE" --ignore-not-found -o name) ]]; then
    info "Secret $NAMESPACE/$KEYS_SECRET exists"
    return
  fi
  for key_id in $(awsx iam list-access-keys --user-name "$CONSUMER_NAME" \
    --query 'AccessKeyMetadata[].AccessKeyId' --output text); do
    awsx iam delete-access-key --user-name "$CONSUMER_NAME" --access-key-id "$key_id"
  done
  keys=$(awsx iam create-access-key --user-name "$CONSUMER_NAME" \
    --query 'AccessKey.[AccessKeyId,SecretAccessKey]' --output text)
  read -r key_id secret <<<"$keys"
  kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >&2
  # printf is a builtin: the secret never shows up in a process listing.
  printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$key_id" "$secret" |
    kubectl create secret generic "$KEYS_SECRET" -n "$NAMESPACE" --from-env-file=/dev/stdin \
      --dry-run=client -o yaml | kubectl apply -f - >&2
  info "stored new access keys of $CONSUMER_NAME in Secret $NAMESPACE/$KEYS_SECRET"
}

# kustomize refuses absolute paths: from DIR (physical) climb to / and go down to k8s/.
path_to_base() {
  local dir=$1
  local parts
  local up
  IFS=/ read -ra parts <<<"${dir#/}"
  printf -v up '../%.0s' "${parts[@]}" # one ../ per component
  printf '%s%s/k8s\n' "$up" "${REPO_ROOT#/}"
}

# The repository's k8s/ base, with this deployment's image and settings layered on top.
write_overlay() {
  local dir=$1
  local queue_url=$2
  cat <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(path_to_base "$dir")
images:
  - name: imgpipe-consumer
    newName: $ECR_URI
    newTag: "$IMAGE_TAG"
configMapGenerator:
  - name: imgpipe-config
    behavior: merge
    literals:
      - "BUCKET_NAME=$BUCKET_NAME"
      - "QUEUE_URL=$queue_url"
      - "AWS_REGION=$AWS_REGION"
EOF
}

deploy_consumer() {
  local queue_url=$1
  local overlay
  mkdir -p "$WORK_DIR/overlay"
  overlay=$(cd "$WORK_DIR/overlay" && pwd -P)
  write_overlay "$overlay" "$queue_url" >"$overlay/kustomization.yaml"
  kubectl apply -k "$overlay" >&2
  kubectl wait --namespace "$NAMESPACE" --for=condition=Available deployment --all \
    --timeout=300s >&2
  info "consumer $IMAGE is running in namespace $NAMESPACE"
}

create_eks_half() {
  local queue_url=$1
  ensure_ecr_repo
  resolve_image_tag
  build_and_push_image
  ensure_consumer_policy
  ensure_cluster
  if [[ $CONSUMER_AUTH == access-keys ]]; then
    ensure_consumer_keys
  fi
  deploy_consumer "$queue_url"
}

print_settings() {
  local queue_url=$1
  local dlq_url=$2
  printf '%s\n' "AWS_REGION=$AWS_REGION" "BUCKET_NAME=$BUCKET_NAME" "QUEUE_URL=$queue_url" \
    "DLQ_URL=$dlq_url" "SNS_TOPIC_ARN=$TOPIC_ARN" "LAMBDA_NAME=$LAMBDA_NAME" \
    "RAW_PREFIX=$RAW_PREFIX" "THUMB_PREFIX=$THUMB_PREFIX" "ALARM_TOPIC_ARN=$ALARM_TOPIC_ARN"
  if is_local; then
    printf 'AWS_ENDPOINT_URL=%s\n' "$AWS_ENDPOINT_URL"
  fi
}

main() {
  local queue_url
  local dlq_url
  require_tools zip openssl
  if [[ $SKIP_EKS != 1 ]]; then
    require_tools docker eksctl kubectl git
  fi
  init
  info "creating $PROJECT in account $ACCOUNT_ID," \
    "region $AWS_REGION${AWS_ENDPOINT_URL:+ (emulator)}"
  ensure_bucket
  ensure_topic "$SNS_TOPIC_NAME" "$TOPIC_ARN"
  ensure_queue "$DLQ_NAME" "$(dlq_attributes)"
  dlq_url=$REPLY
  ensure_queue "$QUEUE_NAME" "$(queue_attributes)"
  queue_url=$REPLY
  ensure_subscription
  ensure_lambda_role
  ensure_log_group
  ensure_lambda
  ensure_lambda_failure_destination
  ensure_s3_permission
  ensure_bucket_notification
  "$INFRA_DIR/cw-alarms.sh"
  if [[ $SKIP_EKS == 1 ]]; then
    info "SKIP_EKS=1: no ECR, image, cluster or deployment"
  else
    create_eks_half "$queue_url"
  fi
  print_settings "$queue_url" "$dlq_url"
  info "done"
}

main "$@"

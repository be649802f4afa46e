#!/usr/bin/env bash
set -euo pipefail
# Removes everything create.sh made, in reverse order. Each step acts only on what exists, so a
# second run, or a run after a half-finished create, succeeds; a real error stops it.
# stdout: one "removed ..." line per resource, then whatever is still tagged project=<PROJECT>.
# Usage: infra/destroy.sh      (the same settings as create.sh)

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# One page of list-object-versions (at most 1,000 keys) as a delete-objects request.
readonly VERSIONS_QUERY="{Objects: [Versions[].{Key: Key, VersionId: VersionId},
  DeleteMarkers[].{Key: Key, VersionId: VersionId}][], Quiet: \`true\`}"

removed() {
  printf 'removed %s\n' "$*"
}

# aws_words ARGS...: the values of a text-output list query, one per line; none for an
# empty or absent list.
aws_words() {
  local out
  out=$(awsx "$@" --output text)
  if [[ -n $out && $out != None ]]; then
    tr -s '[:space:]' '\n' <<<"$out"
  fi
}

# Services first: a LoadBalancer Service owns an AWS load balancer that would block deleting
# the cluster's VPC. A cluster whose API never came up cannot hold any.
delete_kubernetes_objects() {
  if ! eksctl utils write-kubeconfig --cluster "$CLUSTER_NAME" --region "$AWS_REGION" >&2 ||
    ! kubectl get --raw /readyz >/dev/null; then
    warn "the API of cluster $CLUSTER_NAME does not answer: no Kubernetes objects removed"
    return
  fi
  if [[ -z $(kubectl get namespace "$NAMESPACE" --ignore-not-found -o name) ]]; then
    return
  fi
  kubectl delete services --all --namespace "$NAMESPACE" --wait=true --timeout=300s >&2
  kubectl delete namespace "$NAMESPACE" --wait=true --timeout=600s >&2
  removed "Kubernetes Services and namespace $NAMESPACE"
}

delete_cluster() {
  if ! cluster_exists; then
    return
  fi
  delete_kubernetes_objects
  info "deleting EKS cluster $CLUSTER_NAME: about 10 minutes"
  eksctl delete cluster --name "$CLUSTER_NAME" --region "$AWS_REGION" --wait >&2
  removed "EKS cluster $CLUSTER_NAME (its VPC, node group and pod identity role)"
}

delete_consumer_user() {
  local key_id
  local arn
  try_aws NoSuchEntity iam list-access-keys --user-name "$CONSUMER_NAME" \
    --query 'AccessKeyMetadata[].AccessKeyId' --output text || return 0
  for key_id in ${REPLY//None/}; do
    awsx iam delete-access-key --user-name "$CONSUMER_NAME" --access-key-id "$key_id"
  done
  for arn in $(aws_words iam list-attached-user-policies --user-name "$CONSUMER_NAME" \
    --query 'AttachedPolicies[].PolicyArn'); do
    awsx iam detach-user-policy --user-name "$CONSUMER_NAME" --policy-arn "$arn"
  done
  awsx iam delete-user --user-name "$CONSUMER_NAME"
  removed "IAM user $CONSUMER_NAME and its access keys"
}

delete_consumer_policy() {
  local name
  local version
  try_aws NoSuchEntity iam get-policy --policy-arn "$CONSUMER_POLICY_ARN" \
    --query Policy.AttachmentCount --output text || return 0
  if ((REPLY > 0)); then
    for name in $(aws_words iam list-entities-for-policy --policy-arn "$CONSUMER_POLICY_ARN" \
      --query 'PolicyRoles[].RoleName'); do
      awsx iam detach-role-policy --role-name "$name" --policy-arn "$CONSUMER_POLICY_ARN"
    done
    for name in $(aws_words iam list-entities-for-policy --policy-arn "$CONSUMER_POLICY_ARN" \
      --query 'PolicyUsers[].UserName'); do
      awsx iam detach-user-policy --user-name "$name" --policy-arn "$CONSUMER_POLICY_ARN"
    done
  fi
  for version in $(aws_words iam list-policy-versions --policy-arn "$CONSUMER_POLICY_ARN" \
    --query 'Versions[?!IsDefaultVersion].VersionId'); do
    awsx iam delete-policy-version --policy-arn "$CONSUMER_POLICY_ARN" --version-id "$version"
  done
  awsx iam delete-policy --policy-arn "$CONSUMER_POLICY_ARN"
  removed "IAM policy $CONSUMER_NAME"
}

delete_ecr_repo() {
  if try_aws RepositoryNotFoundException ecr delete-repository --repository-name "$ECR_REPO" \
    --force; then
    removed "ECR repository $ECR_REPO and its images"
  fi
}

delete_eks_half() {
  delete_cluster
  delete_consumer_user
  delete_consumer_policy
  delete_ecr_repo
}

delete_query_definition() {
  local id
  if is_local; then
    info "saved Logs Insights query skipped: the emulator has no query definitions"
    return
  fi
  id=$(query_definition_id)
  if [[ -z $id ]]; then
    return
  fi
  awsx logs delete-query-definition --query-definition-id "$id" >/dev/null
  removed "saved Logs Insights query $QUERY_NAME"
}

delete_monitoring() {
  local names
  local name
  delete_query_definition
  if try_aws 'ResourceNotFound|DashboardNotFound' cloudwatch delete-dashboards \
    --dashboard-names "$DASHBOARD_NAME"; then
    removed "CloudWatch dashboard $DASHBOARD_NAME"
  fi
  # delete-alarms succeeds for names that do not exist: ask first, to tell what went.
  names=$(aws_words cloudwatch describe-alarms --query 'MetricAlarms[].AlarmName' \
    --alarm-names "$ALARM_LAMBDA_ERRORS" "$ALARM_DLQ_NOT_EMPTY" "$ALARM_QUEUE_STALLED")
  if [[ -n $names ]]; then
    # shellcheck disable=SC2086 # one alarm name per word
    awsx cloudwatch delete-alarms --alarm-names $names
    for name in $names; do
      removed "CloudWatch alarm $name"
    done
  fi
  delete_topic "$ALARM_TOPIC_NAME" "$ALARM_TOPIC_ARN"
}

# delete-topic succeeds for a topic that does not exist: ask first, to tell what went.
delete_topic() {
  local name=$1
  local arn=$2
  local subscription
  try_aws NotFound sns list-subscriptions-by-topic --topic-arn "$arn" --output text \
    --query "Subscriptions[?SubscriptionArn!='PendingConfirmation'].SubscriptionArn" || return 0
  for subscription in ${REPLY//None/}; do
    awsx sns unsubscribe --subscription-arn "$subscription"
    removed "SNS subscription $subscription"
  done
  awsx sns delete-topic --topic-arn "$arn"
  removed "SNS topic $name"
}

# First, so no upload starts the Lambda while the rest is going away.
delete_bucket_notification() {
  local found
  found=$(awsx s3api get-bucket-notification-configuration --bucket "$BUCKET_NAME" --output text \
    --query "length(LambdaFunctionConfigurations[?LambdaFunctionArn=='$FUNCTION_ARN'] || \`[]\`)")
  if ((found > 0)); then
    awsx s3api put-bucket-notification-configuration --bucket "$BUCKET_NAME" \
      --notification-configuration '{}'
    removed "S3 notification $BUCKET_NAME -> $LAMBDA_NAME"
  fi
}

delete_lambda() {
  if try_aws ResourceNotFoundException lambda delete-function --function-name "$LAMBDA_NAME"; then
    removed "Lambda function $LAMBDA_NAME and its S3 invoke permission"
  fi
}

# Log groups outlive their writers: the Lambda's, and those of the cluster's CloudWatch add-on
# (locally, scripts/local-up.sh ships the consumers' logs to the same place).
delete_log_groups() {
  local group
  if try_aws ResourceNotFoundException logs delete-log-group --log-group-name "$LOG_GROUP"; then
    removed "log group $LOG_GROUP"
  fi
  for group in $(aws_words logs describe-log-groups \
    --log-group-name-prefix "/aws/containerinsights/$CLUSTER_NAME/" \
    --query 'logGroups[].logGroupName'); do
    awsx logs delete-log-group --log-group-name "$group"
    removed "log group $group"
  done
}

delete_role() {
  local name=$1
  local policy
  try_aws NoSuchEntity iam list-role-policies --role-name "$name" --query PolicyNames \
    --output text || return 0
  for policy in ${REPLY//None/}; do
    awsx iam delete-role-policy --role-name "$name" --policy-name "$policy"
  done
  for policy in $(aws_words iam list-attached-role-policies --role-name "$name" \
    --query 'AttachedPolicies[].PolicyArn'); do
    awsx iam detach-role-policy --role-name "$name" --policy-arn "$policy"
  done
  awsx iam delete-role --role-name "$name"
  removed "IAM role $name"
}

delete_queue() {
  local name=$1
  try_aws 'NonExistentQueue|QueueDoesNotExist' sqs get-queue-url --queue-name "$name" \
    --query QueueUrl --output text || return 0
  awsx sqs delete-queue --queue-url "$REPLY"
  removed "SQS queue $name"
}

# Every version and delete marker, one page at a time: delete-bucket needs the bucket empty.
empty_bucket() {
  local batch=$WORK_DIR/batch.json
  local failed
  local count=0
  while true; do
    awsx s3api list-object-versions --bucket "$BUCKET_NAME" --no-paginate --output json \
      --query "$VERSIONS_QUERY" >"$batch"
    grep -q '"Key"' "$batch" || break
    failed=$(awsx s3api delete-objects --bucket "$BUCKET_NAME" --delete "file://$batch" \
      --query "length(Errors || \`[]\`)" --output text)
    ((failed == 0)) || die "$failed objects of bucket $BUCKET_NAME could not be deleted"
    count=$((count + $(grep -c '"Key"' "$batch")))
  done
  REPLY=$count
}

delete_bucket() {
  empty_bucket
  awsx s3api delete-bucket --bucket "$BUCKET_NAME"
  removed "S3 bucket $BUCKET_NAME ($REPLY object versions)"
}

report_leftovers() {
  local left
  left=$(aws_words resourcegroupstaggingapi get-resources \
    --tag-filters "Key=project,Values=$PROJECT" --query 'ResourceTagMappingList[].ResourceARN')
  if [[ -z $left ]]; then
    echo "nothing left tagged project=$PROJECT"
    return
  fi
  # The tagging API can list a resource for a while after its deletion.
  echo "still tagged project=$PROJECT (AWS may take minutes to forget deleted ones):"
  printf '  %s\n' "${left//$'\n'/$'\n  '}"
}

main() {
  local bucket
  if [[ $SKIP_EKS != 1 ]]; then
    require_tools eksctl kubectl
  fi
  init
  info "destroying $PROJECT in account $ACCOUNT_ID," \
    "region $AWS_REGION${AWS_ENDPOINT_URL:+ (emulator)}"
  # The bucket is ours only if create.sh tagged it; any other is left alone.
  bucket_state
  bucket=$REPLY
  case $bucket in
    ours) delete_bucket_notification ;;
    untagged) warn "bucket $BUCKET_NAME is not tagged project=$PROJECT: left alone" ;;
    foreign) warn "bucket $BUCKET_NAME belongs to another account: left alone" ;;
  esac
  if [[ $SKIP_EKS == 1 ]]; then
    info "SKIP_EKS=1: cluster, ECR repository and consumer IAM left out"
  else
    delete_eks_half
  fi
  delete_monitoring
  delete_lambda
  delete_log_groups
  delete_role "$LAMBDA_ROLE_NAME"
  delete_queue "$QUEUE_NAME"
  delete_queue "$DLQ_NAME"
  delete_topic "$SNS_TOPIC_NAME" "$TOPIC_ARN"
  if [[ $bucket == ours ]]; then
    delete_bucket
  fi
  report_leftovers
}

main "$@"

#!/usr/bin/env bash
set -euo pipefail
# CloudWatch for the pipeline: the alarm topic (+ email if ALARM_EMAIL is set), three alarms,
# a dashboard and a saved Logs Insights query. create.sh runs it; it also runs alone (the
# Lambda and queues need not exist yet). Every step is get-or-create or an idempotent put.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly PERIOD=60                 # seconds: Lambda and SQS publish one-minute metrics
readonly STALLED_AFTER_SECONDS=300 # the oldest message waited this long: the consumer stalled

ensure_email_subscription() {
  local existing
  if [[ -z $ALARM_EMAIL ]]; then
    info "ALARM_EMAIL is empty: alarms notify topic $ALARM_TOPIC_NAME only"
    return
  fi
  existing=$(awsx sns list-subscriptions-by-topic --topic-arn "$ALARM_TOPIC_ARN" --output text \
    --query "Subscriptions[?Protocol=='email' && Endpoint=='$ALARM_EMAIL'].SubscriptionArn")
  if [[ -n $existing ]]; then
    info "$ALARM_EMAIL is subscribed to $ALARM_TOPIC_NAME ($existing)"
    return
  fi
  awsx sns subscribe --topic-arn "$ALARM_TOPIC_ARN" --protocol email \
    --notification-endpoint "$ALARM_EMAIL" >/dev/null
  info "subscribed $ALARM_EMAIL to $ALARM_TOPIC_NAME: confirm from the e-mail AWS sends"
}

# put_alarm NAME DESCRIPTION NAMESPACE METRIC DIMENSION STATISTIC THRESHOLD: an alarm when the
# metric is >= THRESHOLD over one period. An idempotent put: the same values change nothing.
put_alarm() {
  awsx cloudwatch put-metric-alarm --alarm-name "$1" --alarm-description "$2" \
    --namespace "$3" --metric-name "$4" --dimensions "$5" --statistic "$6" \
    --threshold "$7" --comparison-operator GreaterThanOrEqualToThreshold \
    --period "$PERIOD" --evaluation-periods 1 --treat-missing-data notBreaching \
    --alarm-actions "$ALARM_TOPIC_ARN" --ok-actions "$ALARM_TOPIC_ARN" \
    --tags "Key=project,Value=$PROJECT"
  info "alarm $1"
}

put_alarms() {
  put_alarm "$ALARM_LAMBDA_ERRORS" \
    "Lambda $LAMBDA_NAME failed: uploads may not reach $SNS_TOPIC_NAME. See $LOG_GROUP." \
    AWS/Lambda Errors "Name=FunctionName,Value=$LAMBDA_NAME" Sum 1
  put_alarm "$ALARM_DLQ_NOT_EMPTY" \
    "Messages in $DLQ_NAME: images that failed for good. Read the imgpipe-error-reason attribute." \
    AWS/SQS ApproximateNumberOfMessagesVisible "Name=QueueName,Value=$DLQ_NAME" Maximum 1
  put_alarm "$ALARM_QUEUE_STALLED" \
    "A message in $QUEUE_NAME waited ${STALLED_AFTER_SECONDS}s: the consumer stalled or lags." \
    AWS/SQS ApproximateAgeOfOldestMessage "Name=QueueName,Value=$QUEUE_NAME" Maximum \
    "$STALLED_AFTER_SECONDS"
}

dashboard_body() {
  cat <<EOF
{"widgets": [
  {"type": "metric", "x": 0, "y": 0, "width": 12, "height": 6, "properties": {
    "title": "Lambda $LAMBDA_NAME", "region": "$AWS_REGION", "stat": "Sum", "period": $PERIOD,
    "metrics": [["AWS/Lambda", "Invocations", "FunctionName", "$LAMBDA_NAME"],
                [".", "Errors", ".", "."], [".", "Throttles", ".", "."]]}},
  {"type": "metric", "x": 12, "y": 0, "width": 12, "height": 6, "properties": {
    "title": "Queue $QUEUE_NAME", "region": "$AWS_REGION", "stat": "Maximum", "period": $PERIOD,
    "metrics": [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "$QUEUE_NAME"],
                [".", "ApproximateNumberOfMessagesNotVisible", ".", "."],
                [".", "ApproximateNumberOfMessagesVisible", ".", "$DLQ_NAME", {"label": "DLQ"}]]}},
  {"type": "metric", "x": 0, "y": 6, "width": 12, "height": 6, "properties": {
    "title": "Oldest message (s)", "region": "$AWS_REGION", "stat": "Maximum", "period": $PERIOD,
    "metrics": [["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", "$QUEUE_NAME"]]}},
  {"type": "alarm", "x": 12, "y": 6, "width": 12, "height": 6, "properties": {
    "title": "Alarms", "alarms": [
      "arn:$PARTITION:cloudwatch:$AWS_REGION:$ACCOUNT_ID:alarm:$ALARM_LAMBDA_ERRORS",
      "arn:$PARTITION:cloudwatch:$AWS_REGION:$ACCOUNT_ID:alarm:$ALARM_DLQ_NOT_EMPTY",
      "arn:$PARTITION:cloudwatch:$AWS_REGION:$ACCOUNT_ID:alarm:$ALARM_QUEUE_STALLED"]}}
]}
EOF
}

put_dashboard() {
  awsx cloudwatch put-dashboard --dashboard-name "$DASHBOARD_NAME" \
    --dashboard-body "$(dashboard_body)" >/dev/null
  info "dashboard $DASHBOARD_NAME"
}

# A saved Logs Insights query for the Lambda's failures (its logs are JSON, with a level).
ensure_query_definition() {
  local id
  if is_local; then
    info "saved Logs Insights query skipped: the emulator has no PutQueryDefinition"
    return
  fi
  id=$(query_definition_id)
  if [[ -n $id ]]; then
    info "saved query $QUERY_NAME exists"
    return
  fi
  awsx logs put-query-definition --name "$QUERY_NAME" --log-group-names "$LOG_GROUP" \
    --query-string 'fields @timestamp, level, message | filter level = "ERROR" or level = "WARN"
| sort @timestamp desc | limit 100' >/dev/null
  info "saved Logs Insights query $QUERY_NAME"
}

main() {
  init
  ensure_topic "$ALARM_TOPIC_NAME" "$ALARM_TOPIC_ARN"
  ensure_email_subscription
  put_alarms
  put_dashboard
  ensure_query_definition
}

main "$@"

"""S3 upload event -> one SNS message per new object under RAW_PREFIX (docs/CONTRACTS.md).

Settings: SNS_TOPIC_ARN (required), RAW_PREFIX (default raw-images/).
Only boto3 and the standard library: what the Lambda python3.12 runtime ships.
"""

import functools
import json
import logging
import os
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config

MAX_BATCH_ENTRIES = 10  # SNS PublishBatch takes at most 10 entries a call
TEST_EVENT = "s3:TestEvent"  # sent once by S3 when the notification is configured

logger = logging.getLogger(__name__)
if "AWS_LAMBDA_LOG_LEVEL" not in os.environ:
    # Lambda sets the root level only when the function has a log level; without one INFO is lost.
    logger.setLevel(logging.INFO)


class PublishError(RuntimeError):
    """SNS refused messages: raised so Lambda retries the event and the Errors alarm sees it."""


@functools.cache
def _sns():
    # Built on first use, not at import, so AWS_ENDPOINT_URL set later (tests, local mode) counts.
    return boto3.client("sns", config=Config(retries={"mode": "standard"}))


def _settings():
    topic_arn = os.environ.get("SNS_TOPIC_ARN")
    if not topic_arn:
        raise RuntimeError("SNS_TOPIC_ARN is not set: the ARN of the topic to publish uploads to")
    return topic_arn, os.environ.get("RAW_PREFIX", "raw-images/")


def _log(key, outcome, reason=None):
    fields = {"key": key, "outcome": outcome, "reason": reason}
    # JSON as the message reads well in any log format; extra= gives Lambda's JSON format the
    # same fields at the top level of its line.
    logger.info(json.dumps(fields, ensure_ascii=False), extra=fields)


def _field(record, *path):
    value = record
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        shown = json.dumps(record, default=str)[:500]
        raise ValueError(f"malformed S3 event record: no {'.'.join(path)} in {shown}")
    return value


def _message(record, raw_prefix):
    """One S3 event record -> (decoded key, message to publish or None, reason to skip)."""
    bucket = _field(record, "s3", "bucket", "name")
    # S3 URL-encodes keys in events: a space arrives as "+", a plus sign as "%2B".
    key = unquote_plus(_field(record, "s3", "object", "key"))
    obj = record["s3"]["object"]
    event_name = record.get("eventName") or ""
    if not event_name.startswith("ObjectCreated:"):
        return key, None, f"not an ObjectCreated event: {event_name or 'no eventName'}"
    if not key.startswith(raw_prefix):
        # With the notification's prefix filter, this stops a thumbnail from triggering a run.
        return key, None, f"outside {raw_prefix}"
    message = {
        "bucket": bucket,
        "key": key,
        "size": obj.get("size"),
        "etag": obj.get("eTag"),
        "eventTime": record.get("eventTime"),
    }
    return key, message, None


def _publish(topic_arn, messages):
    """PublishBatch in chunks; raise PublishError naming every key SNS did not accept.

    The whole event is retried then, so accepted messages may be published again: the consumer
    already has to cope with duplicates (S3 and SQS deliver at least once).
    """
    failures = []
    for start in range(0, len(messages), MAX_BATCH_ENTRIES):
        chunk = messages[start : start + MAX_BATCH_ENTRIES]
        # ASCII-only JSON: SQS rejects some Unicode code points in a raw-delivered body.
        entries = [{"Id": str(i), "Message": json.dumps(m)} for i, m in enumerate(chunk)]
        response = _sns().publish_batch(TopicArn=topic_arn, PublishBatchRequestEntries=entries)
        for entry in response.get("Successful", []):
            _log(chunk[int(entry["Id"])]["key"], "published")
        for entry in response.get("Failed", []):
            key = chunk[int(entry["Id"])]["key"]
            reason = f"{entry.get('Code')}: {entry.get('Message')}"
            _log(key, "failed", reason)
            failures.append(f"{key} ({reason})")
    if failures:
        raise PublishError(
            f"SNS did not accept {len(failures)} of {len(messages)} messages: "
            + "; ".join(failures)
        )


def handler(event, context):
    topic_arn, raw_prefix = _settings()
    if isinstance(event, dict) and event.get("Event") == TEST_EVENT:
        _log(None, "skipped", TEST_EVENT)
        return {"published": 0, "skipped": 0}
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        raise ValueError("not an S3 event notification: no Records list (and not an s3:TestEvent)")
    # Check every record before publishing any, so a malformed event publishes nothing.
    parsed = [_message(record, raw_prefix) for record in records]
    for key, message, reason in parsed:
        if message is None:
            _log(key, "skipped", reason)
    messages = [message for _, message, _ in parsed if message is not None]
    _publish(topic_arn, messages)
    return {"published": len(messages), "skipped": len(records) - len(messages)}

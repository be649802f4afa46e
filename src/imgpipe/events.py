"""An SQS message body -> the S3 objects it names.

Three shapes arrive: the JSON the Lambda publishes through SNS with raw delivery
(`{"bucket": ..., "key": ...}`, key already decoded); a plain S3 event notification
(`{"Records": [...]}`, keys URL-encoded the way S3 does it: a space is `+`); and the record
Lambda sends to its on-failure destination (the DLQ) when it gave up on an S3 event
(`{"requestContext": ..., "requestPayload": <the S3 event>}`), so `imgpipe dlq redrive` can
hand such an upload to the consumer directly.
"""

import json
from dataclasses import dataclass
from urllib.parse import unquote_plus

from imgpipe.errors import PermanentError


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str


def parse_body(body: str) -> list[ObjectRef]:
    """The objects a message names; [] for S3's test event. PermanentError if unreadable."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise PermanentError("bad-message", f"body is not JSON: {body[:80]!r}") from None
    if not isinstance(doc, dict):
        raise PermanentError("bad-message", f"body is not a JSON object: {body[:80]!r}")
    if isinstance(doc.get("requestContext"), dict) and isinstance(doc.get("requestPayload"), dict):
        doc = doc["requestPayload"]
    if doc.get("Event") == "s3:TestEvent":
        return []
    if "Records" in doc:
        return [_from_s3_record(r) for r in doc["Records"] if _is_created(r)]
    bucket, key = doc.get("bucket"), doc.get("key")
    if isinstance(bucket, str) and isinstance(key, str) and bucket and key:
        return [ObjectRef(bucket, key)]
    raise PermanentError("bad-message", f"body has neither bucket/key nor Records: {body[:80]!r}")


def _is_created(record) -> bool:
    return isinstance(record, dict) and str(record.get("eventName", "")).startswith(
        "ObjectCreated:"
    )


def _from_s3_record(record: dict) -> ObjectRef:
    try:
        s3 = record["s3"]
        return ObjectRef(s3["bucket"]["name"], unquote_plus(s3["object"]["key"]))
    except (KeyError, TypeError):
        raise PermanentError(
            "bad-message", "S3 record lacks s3.bucket.name or s3.object.key"
        ) from None

"""Operator commands: upload, status, logs, dlq. The same on AWS and on the local emulator.

Names come from the environment with the defaults infra/lib.sh uses, so no setting is needed for
a default deployment; `.env` and, while the local stack is up, `.run/env` fill in what is unset.
"""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

from imgpipe.config import SQS_MAX_BATCH
from imgpipe.errors import PermanentError
from imgpipe.events import parse_body
from imgpipe.storage import SOURCE_ETAG, thumbnail_key

ENV_FILES = (".run/env", ".env")  # the local stack's settings win over the user's .env
DLQ_LIST_VISIBILITY = 30  # hides listed messages so one listing shows each once


def load_env_files(root: Path | None = None) -> None:
    """KEY=value lines from ENV_FILES into os.environ, never overriding what is already set."""
    for name in ENV_FILES:
        path = (root or Path.cwd()) / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                os.environ.setdefault(
                    key.removeprefix("export ").strip(), value.strip().strip("'\"")
                )


@dataclass
class Deployment:
    """Where the pipeline's resources are: names resolved lazily, clients built once."""

    env: dict
    _clients: dict = field(default_factory=dict)

    @cached_property
    def session(self):
        return boto3.session.Session(region_name=self.env.get("AWS_REGION", "us-east-1"))

    def client(self, name):
        if name not in self._clients:
            self._clients[name] = self.session.client(name)
        return self._clients[name]

    @cached_property
    def project(self) -> str:
        return self.env.get("PROJECT", "imgpipe")

    @cached_property
    def bucket(self) -> str:
        if self.env.get("BUCKET_NAME"):
            return self.env["BUCKET_NAME"]
        account = self.client("sts").get_caller_identity()["Account"]
        return f"{self.project}-{account}-{self.session.region_name}"

    @cached_property
    def queue_url(self) -> str:
        name = self.env.get("QUEUE_NAME", f"{self.project}-thumbnails")
        return (
            self.env.get("QUEUE_URL")
            or self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        )

    @cached_property
    def dlq_url(self) -> str:
        name = self.env.get("DLQ_NAME", f"{self.project}-thumbnails-dlq")
        return (
            self.env.get("DLQ_URL") or self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        )

    @property
    def raw_prefix(self) -> str:
        return self.env.get("RAW_PREFIX", "raw-images/")

    @property
    def thumb_prefix(self) -> str:
        return self.env.get("THUMB_PREFIX", "thumbnails/")

    def log_group(self, which: str) -> str:
        if which == "lambda":
            return "/aws/lambda/" + self.env.get("LAMBDA_NAME", f"{self.project}-publish")
        cluster = self.env.get("CLUSTER_NAME", self.project)
        return self.env.get("CONSUMER_LOG_GROUP", f"/aws/containerinsights/{cluster}/application")


def upload(dep: Deployment, files: list[str], wait: bool, timeout: float = 120) -> int:
    """Put files under raw-images/; with wait, report each thumbnail's latency."""
    sent = put_files(dep, files)
    if not wait:
        return 0
    latencies = wait_for_thumbnails(dep, sent, time.monotonic() + timeout)
    for key in sent:
        thumb = thumbnail_key(key, dep.raw_prefix, dep.thumb_prefix)
        if key in latencies:
            print(f"{key}\t{thumb}\t{latencies[key] * 1000:.0f} ms")
        else:
            print(f"{key}\tno thumbnail after {timeout:.0f}s")
    return 0 if len(latencies) == len(sent) else 1


def put_files(dep: Deployment, files: list[str]) -> dict[str, tuple[str, float]]:
    """Upload each file as raw-images/<name>: key -> (its ETag, when it was uploaded)."""
    s3 = dep.client("s3")
    sent = {}
    for i, name in enumerate(files, 1):
        key = dep.raw_prefix + Path(name).name
        with open(name, "rb") as f:
            etag = s3.put_object(Bucket=dep.bucket, Key=key, Body=f)["ETag"]
        sent[key] = (etag, time.monotonic())
        _progress(i, len(files), key)
    return sent


def wait_for_thumbnails(dep: Deployment, sent: dict, deadline: float) -> dict[str, float]:
    """key -> seconds from upload until a thumbnail of that upload's ETag exists, all at once."""
    s3 = dep.client("s3")
    done: dict[str, float] = {}
    while len(done) < len(sent) and time.monotonic() < deadline:
        for key, (etag, uploaded) in sent.items():
            if key in done:
                continue
            thumb = thumbnail_key(key, dep.raw_prefix, dep.thumb_prefix)
            try:
                head = s3.head_object(Bucket=dep.bucket, Key=thumb)
            except ClientError:
                continue
            if head["Metadata"].get(SOURCE_ETAG) == etag:
                done[key] = time.monotonic() - uploaded
        time.sleep(0.05)
    return done


def _progress(done: int, total: int, label: str) -> None:
    if total < 2:
        return
    width = 30
    bar = "#" * (width * done // total)
    end = "\n" if done == total else ""
    print(f"\r[{bar:<{width}}] {done}/{total} {label[-40:]:<40}", end=end, file=sys.stderr)


def status(dep: Deployment) -> int:
    sqs = dep.client("sqs")
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    queue = sqs.get_queue_attributes(QueueUrl=dep.queue_url, AttributeNames=names)["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=dep.dlq_url, AttributeNames=names)["Attributes"]
    thumbnails = sum(
        page.get("KeyCount", 0)
        for page in dep.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=dep.bucket, Prefix=dep.thumb_prefix)
    )
    rows = [
        ("bucket", dep.bucket),
        ("queued", queue["ApproximateNumberOfMessages"]),
        ("in flight", queue["ApproximateNumberOfMessagesNotVisible"]),
        ("dead letters", dlq["ApproximateNumberOfMessages"]),
        ("thumbnails", thumbnails),
    ]
    alarms = dep.client("cloudwatch").describe_alarms(AlarmNamePrefix=dep.project)["MetricAlarms"]
    rows += [(f"alarm {a['AlarmName']}", a["StateValue"]) for a in alarms]
    for label, value in rows:
        print(f"{label:<40} {value}")
    return 0


def logs(dep: Deployment, which: str, follow: bool, since_minutes: int = 60) -> int:
    """Print a log group's events (FilterLogEvents), like `aws logs tail [--follow]`."""
    client = dep.client("logs")
    group = dep.log_group(which)
    start = int((time.time() - since_minutes * 60) * 1000)
    seen: set[str] = set()
    while True:
        kwargs = {"logGroupName": group, "startTime": start}
        try:
            for page in client.get_paginator("filter_log_events").paginate(**kwargs):
                for event in page.get("events", []):
                    if event["eventId"] not in seen:
                        seen.add(event["eventId"])
                        start = max(start, event["timestamp"])
                        print(f"{event['logStreamName']}  {event['message'].rstrip()}", flush=True)
        except client.exceptions.ResourceNotFoundException:
            print(f"log group {group} does not exist (yet)", file=sys.stderr)
            if not follow:
                return 1
        if not follow:
            return 0
        time.sleep(2)


def dlq_list(dep: Deployment, limit: int = 100) -> int:
    """Show dead letters with their reasons; they stay in the DLQ, visible again at once."""
    sqs = dep.client("sqs")
    listed = list(_drain(dep.dlq_url, sqs, limit, DLQ_LIST_VISIBILITY))
    for message in listed:
        print("\t".join(_describe_dead_letter(message)))
    for i in range(0, len(listed), SQS_MAX_BATCH):
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for n, m in enumerate(listed[i : i + SQS_MAX_BATCH])
        ]
        sqs.change_message_visibility_batch(QueueUrl=dep.dlq_url, Entries=entries)
    print(f"{len(listed)} dead letter(s)", file=sys.stderr)
    return 0


def dlq_redrive(dep: Deployment, limit: int = 10_000) -> int:
    """Move dead letters back to the work queue (after the cause is fixed)."""
    sqs = dep.client("sqs")
    moved = 0
    for message in _drain(dep.dlq_url, sqs, limit, visibility=60):
        sqs.send_message(QueueUrl=dep.queue_url, MessageBody=message["Body"])
        sqs.delete_message(QueueUrl=dep.dlq_url, ReceiptHandle=message["ReceiptHandle"])
        moved += 1
    print(f"moved {moved} message(s) back to {dep.queue_url}")
    return 0


def _drain(url, sqs, limit, visibility):
    """Receive up to `limit` messages, each once, until the queue answers empty."""
    got = 0
    while got < limit:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(SQS_MAX_BATCH, limit - got),
            WaitTimeSeconds=1,
            VisibilityTimeout=visibility,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return
        got += len(batch)
        yield from batch


def _describe_dead_letter(message: dict) -> tuple[str, str, str]:
    """(key, reason, detail): the consumer's attributes, Lambda's failure record, or SQS redrive."""
    body = message["Body"]
    try:
        keys = ", ".join(ref.key for ref in parse_body(body)) or body[:80]
    except PermanentError:
        keys = body[:80]
    attrs = message.get("MessageAttributes", {})
    if "imgpipe-error-reason" in attrs:
        detail = attrs.get("imgpipe-error-detail", {}).get("StringValue", "")
        return keys, attrs["imgpipe-error-reason"]["StringValue"], detail
    try:
        doc = json.loads(body)
        condition = doc["requestContext"]["condition"]
    except (ValueError, KeyError, TypeError):
        return keys, "redriven by SQS", "failed maxReceiveCount times in the consumer"
    response = doc.get("responsePayload")
    error = response.get("errorMessage", "") if isinstance(response, dict) else response
    return keys, "lambda-failed", f"{condition}: {error}"

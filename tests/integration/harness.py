"""Test harness: a bucket, a queue and its DLQ on the moto server; consumers to run on them."""

import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import boto3

from imgpipe.config import Settings
from imgpipe.consumer import Consumer

MAX_RECEIVE_COUNT = 2


@dataclass
class Pipeline:
    bucket: str
    queue_url: str
    dlq_url: str
    s3: object
    sqs: object
    max_receive_count: int = MAX_RECEIVE_COUNT

    def env(self, **extra) -> dict:
        return {
            **os.environ,
            "BUCKET_NAME": self.bucket,
            "QUEUE_URL": self.queue_url,
            "HEALTH_HOST": "127.0.0.1",
            "HEALTH_PORT": "0",
            "WAIT_TIME_SECONDS": "1",
            **{k: str(v) for k, v in extra.items()},
        }

    def upload(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def send(self, key: str, bucket: str | None = None) -> None:
        body = json.dumps({"bucket": bucket or self.bucket, "key": key})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def thumbnail(self, key: str, timeout: float = 30) -> dict:
        """The thumbnail object for key, waiting for it to appear."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.s3.get_object(Bucket=self.bucket, Key=key)
            except self.s3.exceptions.NoSuchKey:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no thumbnail {key} after {timeout}s") from None
                time.sleep(0.2)

    def keys(self, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def dead_letters(self, expected: int, timeout: float = 30) -> list[dict]:
        """Read (and delete) `expected` messages from the DLQ, waiting for them."""
        found, deadline = [], time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            got = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            for m in got:
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])
            found += got
        return found

    def depth(self, url: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


def make_pipeline(name: str) -> Pipeline:
    """A bucket, a DLQ, and a queue (3 s visibility) redriving to it after MAX_RECEIVE_COUNT."""
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    s3.create_bucket(Bucket=name)
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": "3", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    return Pipeline(name, queue_url, dlq_url, s3, sqs)


@contextmanager
def consumer_thread(pipeline: Pipeline, **settings):
    """A consumer on a thread of this process; stopped and joined on exit."""
    consumer = Consumer(Settings.from_env(pipeline.env(**settings)))
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "consumer did not stop"

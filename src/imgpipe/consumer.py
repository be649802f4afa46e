"""The SQS loop: receive, keep messages invisible while working, process, acknowledge, stop cleanly.

A message is acknowledged (deleted) in one place, `_acknowledge`, and only when its thumbnail is
written (or already there), or when a permanent failure has been copied to the dead-letter queue
with its reason. A transient failure is left to come back after a back-off; SQS's redrive policy
dead-letters whatever keeps failing.
"""

import json
import logging
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import cached_property
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imgpipe import health, jsonlog
from imgpipe.config import SQS_MAX_BATCH, SQS_MAX_WAIT_SECONDS, ConfigError, Settings
from imgpipe.errors import PermanentError, TransientError
from imgpipe.events import ObjectRef, parse_body
from imgpipe.imaging import Limits, make_thumbnail
from imgpipe.storage import Storage, thumbnail_key

log = logging.getLogger("imgpipe.consumer")

REASON_ATTRIBUTE = "imgpipe-error-reason"
DETAIL_ATTRIBUTE = "imgpipe-error-detail"
RETRY_BACKOFF_SECONDS = 30  # times the receive count, for a transient failure
MAX_RETRY_BACKOFF_SECONDS = 900
SLOWEST_IMAGE_SECONDS = 60  # far above the slowest measured (README: a 99 MP PNG takes 0.7 s)
SETUP_RETRY_SECONDS = 5
PREFETCH_PER_WORKER = 2  # messages held per worker, so none waits for a receive


class Consumer:
    def __init__(self, settings: Settings, session: boto3.session.Session | None = None):
        self.settings = settings
        self.session = session or boto3.session.Session(region_name=settings.region)
        self.health = health.Health(stale_after=SQS_MAX_WAIT_SECONDS + SLOWEST_IMAGE_SECONDS + 30)
        self.stopping = threading.Event()
        self.limits = Limits(settings.max_input_bytes, settings.max_pixels)
        self.visibility_timeout = 120
        self.dlq_url: str | None = None

    # Clients are built on first use and shared by the worker threads (clients are thread-safe).
    @cached_property
    def sqs(self):
        return self.session.client("sqs", config=self._client_config)

    @cached_property
    def storage(self) -> Storage:
        return Storage(
            self.session.client("s3", config=self._client_config), self.settings.bucket_name
        )

    @property
    def _client_config(self) -> Config:
        pool = self.settings.workers + 4
        return Config(retries={"mode": "standard"}, max_pool_connections=pool)

    def stop(self, *_signal) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new messages will be received")
        self.stopping.set()

    def run(self) -> None:
        """Keep every worker busy: receive as room frees up, acknowledge as messages finish.

        Long-polls only when idle; with work in hand it polls without waiting, once a second,
        so finished messages are deleted and visibility is extended on time. On stop, it
        hands back what no worker has started and finishes the rest.
        """
        self._set_up_queue()
        capacity = self.settings.workers * PREFETCH_PER_WORKER
        work: dict[Future, dict] = {}
        extended = time.monotonic()
        with ThreadPoolExecutor(self.settings.workers, thread_name_prefix="worker") as pool:
            while work or not self.stopping.is_set():
                self.health.beat()
                if self.stopping.is_set():
                    self._release_unstarted(work)
                elif len(work) < capacity:
                    wait_seconds = 0 if work else self.settings.wait_time_seconds
                    for message in self._receive(capacity - len(work), wait_seconds):
                        work[pool.submit(self._handle, message)] = message
                        health.IN_FLIGHT.inc()
                done, _ = wait(work, timeout=1, return_when=FIRST_COMPLETED)
                finished = {f: work.pop(f) for f in done}
                health.IN_FLIGHT.dec(len(finished))
                self._acknowledge([m for f, m in finished.items() if f.result()])
                if work and time.monotonic() - extended > self.visibility_timeout / 3:
                    self._extend(list(work.values()))
                    extended = time.monotonic()
        log.info("stopped")

    def _set_up_queue(self) -> None:
        """Read the visibility timeout and the DLQ from the queue; wait while it is unreachable."""
        while not self.stopping.is_set():
            self.health.beat()
            try:
                attrs = self.sqs.get_queue_attributes(
                    QueueUrl=self.settings.queue_url,
                    AttributeNames=["VisibilityTimeout", "RedrivePolicy"],
                )["Attributes"]
                break
            except (ClientError, BotoCoreError) as e:
                self.health.queue_ok = False
                log.error("queue unreachable, retrying", extra={"reason": str(e)})
                self.stopping.wait(SETUP_RETRY_SECONDS)
        else:
            return
        self.health.queue_ok = True
        self.visibility_timeout = int(attrs["VisibilityTimeout"])
        if "RedrivePolicy" in attrs:
            dlq_arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
            _, _, _, _, account, name = dlq_arn.split(":")
            self.dlq_url = self.sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)[
                "QueueUrl"
            ]
        else:
            log.warning("queue has no dead-letter queue: permanent failures will be retried")
        log.info(
            "consuming",
            extra={
                "queue_url": self.settings.queue_url,
                "dlq_url": self.dlq_url,
                "visibility_timeout": self.visibility_timeout,
                "workers": self.settings.workers,
            },
        )

    def _receive(self, most: int, wait_seconds: int) -> list[dict]:
        try:
            messages = self.sqs.receive_message(
                QueueUrl=self.settings.queue_url,
                MaxNumberOfMessages=min(most, SQS_MAX_BATCH),
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
        except (ClientError, BotoCoreError) as e:
            self.health.queue_ok = False
            log.error("receive failed, retrying", extra={"reason": str(e)})
            if wait_seconds:  # idle: back off; with work in hand the loop's own pace is enough
                self.stopping.wait(SETUP_RETRY_SECONDS)
            return []
        self.health.queue_ok = True
        health.RECEIVED.inc(len(messages))
        return messages

    def _handle(self, message: dict) -> bool:
        """Process one message; True when it may be deleted. Logs one line per message."""
        started = time.monotonic()
        fields = {"message_id": message["MessageId"], "key": None}
        try:
            refs = parse_body(message["Body"])
            outcomes = {self._process(ref, fields) for ref in refs} or {"ignored"}
            fields["outcome"] = ",".join(sorted(outcomes))
            ok = True
        except PermanentError as e:
            ok = self._dead_letter(message, e, fields)
        except TransientError as e:
            fields.update(outcome="retry", reason=str(e))
            health.FAILURES.labels("transient").inc()
            self._back_off(message)
            ok = False
        except (
            Exception
        ) as e:  # a bug: keep serving, and let redrive catch a message that keeps failing
            log.exception("unexpected error", extra={"key": fields["key"]})
            fields.update(outcome="retry", reason=f"internal error: {e!r}")
            health.FAILURES.labels("internal").inc()
            ok = False
        seconds = time.monotonic() - started
        fields["ms"] = round(seconds * 1000)
        health.SECONDS.observe(seconds)
        health.OUTCOMES.labels(fields["outcome"]).inc()
        log.info(fields["outcome"], extra=fields)
        return ok

    def _process(self, ref: ObjectRef, fields: dict) -> str:
        fields["key"] = ref.key
        if ref.bucket != self.settings.bucket_name:
            raise PermanentError(
                "wrong-bucket", f"bucket {ref.bucket} is not {self.settings.bucket_name}"
            )
        s = self.settings
        thumb_key = thumbnail_key(ref.key, s.raw_prefix, s.thumb_prefix)
        source = self.storage.head_source(ref.key)
        if source.size > s.max_input_bytes:
            raise PermanentError(
                "too-large", f"{source.size} bytes is over MAX_INPUT_BYTES={s.max_input_bytes}"
            )
        if self.storage.thumbnail_etag_source(thumb_key) == source.etag:
            return "duplicate"
        # On disk, not in memory: libvips streams a file (TMPDIR is an emptyDir in the pod).
        with tempfile.NamedTemporaryFile(prefix="imgpipe-") as file:
            self.storage.download_source(ref.key, source.etag, file)
            thumb = make_thumbnail(
                Path(file.name),
                s.thumbnail_size,
                limits=self.limits,
                jpeg_quality=s.jpeg_quality,
                webp_quality=s.webp_quality,
            )
        self.storage.put_thumbnail(thumb_key, thumb.data, thumb.content_type, source.etag)
        health.WRITTEN.inc()
        fields.update(thumbnail_key=thumb_key, width=thumb.width, height=thumb.height)
        return "written"

    def _dead_letter(self, message: dict, error: PermanentError, fields: dict) -> bool:
        """Copy the message to the DLQ with the reason; True if it may now be deleted."""
        fields.update(outcome="dead-lettered", reason=f"{error.reason}: {error}")
        health.FAILURES.labels(error.reason).inc()
        if self.dlq_url is None:
            fields["outcome"] = "failed"
            return False
        try:
            self.sqs.send_message(
                QueueUrl=self.dlq_url,
                MessageBody=message["Body"],
                MessageAttributes={
                    REASON_ATTRIBUTE: {"DataType": "String", "StringValue": error.reason},
                    DETAIL_ATTRIBUTE: {"DataType": "String", "StringValue": str(error)[:1000]},
                },
            )
        except (ClientError, BotoCoreError) as e:
            fields.update(outcome="retry", reason=f"{fields['reason']} (DLQ send failed: {e})")
            return False
        return True

    def _back_off(self, message: dict) -> None:
        count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        delay = min(RETRY_BACKOFF_SECONDS * count, MAX_RETRY_BACKOFF_SECONDS)
        self._change_visibility([message], delay)

    def _extend(self, messages: list[dict]) -> None:
        self._change_visibility(messages, self.visibility_timeout)

    def _release_unstarted(self, work: dict[Future, dict]) -> None:
        """On stop: hand back messages no worker has started, so another consumer takes them."""
        unstarted = [work.pop(f) for f in list(work) if f.cancel()]
        if unstarted:
            health.IN_FLIGHT.dec(len(unstarted))
            self._change_visibility(unstarted, 0)
            log.info("released unstarted messages", extra={"count": len(unstarted)})

    def _change_visibility(self, messages: list[dict], seconds: int) -> None:
        for chunk in _chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)
            ]
            try:
                result = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.settings.queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as e:
                log.warning("visibility change failed", extra={"reason": str(e)})
                continue
            for failure in result.get("Failed", []):
                log.warning("visibility change failed", extra={"reason": failure.get("Message")})

    def _acknowledge(self, messages: list[dict]) -> None:
        """The one place a message is deleted; every entry's result is checked."""
        for chunk in _chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            try:
                result = self.sqs.delete_message_batch(
                    QueueUrl=self.settings.queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as e:
                # The messages come back; the thumbnail's source ETag makes the redo a no-op.
                log.error("delete failed", extra={"reason": str(e), "count": len(chunk)})
                continue
            for failure in result.get("Failed", []):
                message = chunk[int(failure["Id"])]
                log.error(
                    "delete failed",
                    extra={"message_id": message["MessageId"], "reason": failure.get("Message")},
                )


def _chunks(items: list, size: int = SQS_MAX_BATCH):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"imgpipe consumer: {e}", file=sys.stderr)
        return 2
    jsonlog.configure(settings.log_level)
    consumer = Consumer(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, consumer.stop)
    server = health.serve(consumer.health, settings.health_host, settings.health_port)
    log.info("health server listening", extra={"port": server.server_address[1]})
    consumer.run()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

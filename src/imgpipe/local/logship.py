"""Ship log files to CloudWatch Logs: `python -m imgpipe.local.logship --group G FILE...`.

On EKS the CloudWatch Observability add-on ships the consumer pods' stdout to
/aws/containerinsights/<cluster>/application; locally this does the same for the consumer
processes' log files, so `imgpipe logs consumer` reads one group in both places. One stream per
file, named after it (consumer-1.log -> consumer-1). Each file is read from its start and
followed (a truncated or replaced file is read again from its start); complete lines are sent
every POLL_SECONDS with PutLogEvents. SIGTERM or SIGINT: a last read and flush, then exit 0.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imgpipe import jsonlog

log = logging.getLogger("imgpipe.logship")

POLL_SECONDS = 0.5
# PutLogEvents quotas: events and bytes a call (each event counts 26 bytes more than its
# message), and the largest event.
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_MESSAGE_BYTES = 256 * 1024 - EVENT_OVERHEAD_BYTES
# Held while CloudWatch Logs is unreachable; the oldest go first beyond this.
MAX_PENDING_EVENTS = 50_000


class Tail:
    """A file followed like `tail -F`: complete lines only, until the last read."""

    def __init__(self, path: Path):
        self.path = path
        self.stream = path.stem
        self._file = None
        self._inode = None
        self._partial = b""

    def read_lines(self, final: bool = False) -> list[str]:
        self._reopen_if_replaced()
        if self._file is None:
            return []
        data = self._partial + self._file.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines if line.strip()]

    def _reopen_if_replaced(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # not written yet, or removed: keep what is open
        truncated = self._file is not None and st.st_size < self._file.tell()
        if self._file is None or st.st_ino != self._inode or truncated:
            if self._file is not None:
                self._file.close()
            self._file = open(self.path, "rb")  # noqa: SIM115 (held open across reads)
            self._inode = st.st_ino
            self._partial = b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Shipper:
    """Pending events per stream, sent in PutLogEvents batches; creates group and streams."""

    def __init__(self, client, group: str):
        self.client = client
        self.group = group
        self._pending: dict[str, list[dict]] = {}
        self._last_timestamp: dict[str, int] = {}
        self._ready: set[str] = set()

    def add(self, stream: str, lines: list[str]) -> None:
        if not lines:
            return
        # PutLogEvents wants each batch in time order; the clock may step back.
        now = max(int(time.time() * 1000), self._last_timestamp.get(stream, 0))
        self._last_timestamp[stream] = now
        events = self._pending.setdefault(stream, [])
        events += [{"timestamp": now, "message": _clip(line)} for line in lines]
        if len(events) > MAX_PENDING_EVENTS:
            dropped = len(events) - MAX_PENDING_EVENTS
            del events[:dropped]
            log.warning("log events dropped", extra={"stream": stream, "count": dropped})

    def flush(self) -> bool:
        """Send everything pending; False if some stays pending (CloudWatch Logs unreachable)."""
        ok = True
        for stream, events in self._pending.items():
            while events:
                batch = _batch(events)
                try:
                    self._put(stream, batch)
                except (ClientError, BotoCoreError) as e:
                    log.error("put_log_events failed, will retry",
                              extra={"group": self.group, "stream": stream, "reason": str(e)})
                    ok = False
                    break
                del events[: len(batch)]
        return ok

    def _put(self, stream: str, batch: list[dict]) -> None:
        if stream not in self._ready:
            self._create(stream)
        try:
            self.client.put_log_events(logGroupName=self.group, logStreamName=stream,
                                       logEvents=batch)
        except self.client.exceptions.ResourceNotFoundException:
            # The group went away (the emulator restarted, or someone deleted it): make it again.
            self._create(stream)
            self.client.put_log_events(logGroupName=self.group, logStreamName=stream,
                                       logEvents=batch)

    def _create(self, stream: str) -> None:
        exists = self.client.exceptions.ResourceAlreadyExistsException
        try:
            self.client.create_log_group(logGroupName=self.group)
            log.info("created log group", extra={"group": self.group})
        except exists:
            pass
        try:
            self.client.create_log_stream(logGroupName=self.group, logStreamName=stream)
        except exists:
            pass
        self._ready.add(stream)


def _clip(line: str) -> str:
    data = line.encode("utf-8")
    if len(data) <= MAX_MESSAGE_BYTES:
        return line
    return data[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")


def _batch(events: list[dict]) -> list[dict]:
    """The longest prefix of events that fits one PutLogEvents call."""
    size = 0
    for n, event in enumerate(events[:MAX_BATCH_EVENTS]):
        size += len(event["message"].encode("utf-8")) + EVENT_OVERHEAD_BYTES
        if size > MAX_BATCH_BYTES:
            return events[:n]
    return events[:MAX_BATCH_EVENTS]


def run(shipper: Shipper, tails: list[Tail], stop: threading.Event,
        poll: float = POLL_SECONDS) -> None:
    """Read and ship until `stop` is set, then read and ship once more."""
    while True:
        final = stop.is_set()
        for tail in tails:
            shipper.add(tail.stream, tail.read_lines(final))
        shipper.flush()
        if final:
            return
        stop.wait(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgpipe.local.logship",
                                     description="Follow log files into CloudWatch Logs.")
    parser.add_argument("--group", required=True, help="log group (created if missing)")
    parser.add_argument("files", nargs="+", metavar="FILE", help="one log stream per file")
    args = parser.parse_args(argv)
    jsonlog.configure(os.environ.get("LOG_LEVEL", "INFO"))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Short timeouts and few retries: the last flush at shutdown must not hang on a dead endpoint.
    config = Config(connect_timeout=2, read_timeout=10,
                    retries={"mode": "standard", "max_attempts": 3})
    session = boto3.session.Session(region_name=os.environ.get("AWS_REGION", "us-east-1"))
    client = session.client("logs", config=config)
    tails = [Tail(Path(name)) for name in args.files]
    log.info("shipping", extra={"group": args.group, "files": args.files})
    run(Shipper(client, args.group), tails, stop)
    for tail in tails:
        tail.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

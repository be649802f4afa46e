"""/healthz (the loop is alive), /readyz (it can reach its queue), /metrics (Prometheus)."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

RECEIVED = Counter("imgpipe_messages_received", "SQS messages received")
WRITTEN = Counter("imgpipe_thumbnails_written", "Thumbnails written to S3")
OUTCOMES = Counter("imgpipe_messages", "Messages finished, by outcome", ["outcome"])
FAILURES = Counter("imgpipe_failures", "Failed messages, by reason", ["reason"])
SECONDS = Histogram(
    "imgpipe_processing_seconds",
    "Seconds one message takes to handle (read, thumbnail, write or dead-letter)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IN_FLIGHT = Gauge("imgpipe_messages_in_flight", "Messages received and not yet finished")


class Health:
    """What the probes read: a heartbeat from the loop and the last queue call's result."""

    def __init__(self, stale_after: float):
        self.stale_after = stale_after
        self._beat = time.monotonic()
        self.queue_ok = False

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._beat < self.stale_after


def serve(health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server on a daemon thread; returns it (server_address has the port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._status(health.alive, "alive", "loop stalled")
            elif self.path == "/readyz":
                self._status(health.alive and health.queue_ok, "ready", "queue unreachable")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _status(self, ok: bool, good: str, bad: str):
            self._send(200 if ok else 503, ((good if ok else bad) + "\n").encode(), "text/plain")

        def _send(self, code: int, body: bytes, content_type: str):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # probes every few seconds would drown the JSON log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server

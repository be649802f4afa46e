"""`imgpipe emulator`: the moto server on 127.0.0.1 plus a local Lambda runtime.

moto stores Lambda functions but runs their code only in Docker. Two moto functions are swapped
for calls into `LambdaRuntime` (see lambda_runtime.py), nothing else:

- `moto.s3.notifications._invoke_awslambda(account_id, event_body, fn_arn, region_name)`, which
  moto calls synchronously inside the S3 PUT whose key matches a Lambda notification: the event
  is queued and the PUT returns at once, as on AWS.
- `moto.awslambda.models.LambdaBackend.invoke(self, function_name, qualifier, body, headers,
  response_headers)`, behind the Invoke API: InvocationType=Event is queued the same way,
  RequestResponse runs once and answers with the handler's result (and the log tail if asked).

The runtime reads what moto stored (code, handler, environment, timeout, memory, and the event
invoke config's retries and OnFailure destination) and writes back only through moto's backends:
CloudWatch Logs for the runs' output, SQS for Lambda's failure records.

Both are pinned to moto 5.2.5 (checked at start-up); tests/integration/test_emulator.py fails
loudly if an upgrade renames them, changes their signatures or stops calling the S3 one on upload.

State does not persist across restarts. moto 5.2.5 has no snapshot of its backends; its request
recorder (/moto-api/recorder/) replays the recorded HTTP requests instead, which re-runs their
side effects (an S3 PUT fires its notification and the Lambda again, sent SQS messages come
back, deletes with stale receipt handles miss). `make up` re-creates every resource, idempotently.

`/moto-api/` (dashboard, reset, recorder) stays available on the same port.
"""

import argparse
import base64
import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from imgpipe import jsonlog
from imgpipe.local.lambda_runtime import (
    DEFAULT_RETRY_DELAYS,
    DEFAULT_WORKERS,
    LOG_TAIL_BYTES,
    FunctionSpec,
    LambdaRuntime,
)

log = logging.getLogger(__name__)

MOTO_VERSION = "5.2.5"
DEFAULT_HOST = "127.0.0.1"
# LocalStack's port, so tools that default to it find us.
DEFAULT_PORT = 4566
DEFAULT_GRACE_SECONDS = 5.0


class EmulatorError(RuntimeError):
    """The emulator cannot start; the message says why."""


def check_moto_version() -> None:
    import moto

    if moto.__version__ != MOTO_VERSION:
        raise EmulatorError(
            f"imgpipe emulator needs moto {MOTO_VERSION} (found {moto.__version__}): it replaces "
            "moto internals that other versions may not have. Install the pinned version with "
            "pip install -e '.[local]'."
        )


class Emulator:
    """The moto server and the Lambda runtime, in this process: `with Emulator(port=0) as emu:`."""

    _active: "Emulator | None" = None
    _active_lock = threading.Lock()

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        workers: int = DEFAULT_WORKERS,
        grace: float = DEFAULT_GRACE_SECONDS,
    ):
        self._host = host
        self._port = port
        self._retry_delays = retry_delays
        self._workers = workers
        self._grace = grace
        self._server = None
        self._thread: threading.Thread | None = None
        self.runtime: LambdaRuntime | None = None

    @property
    def endpoint(self) -> str:
        """The URL clients (and Lambda runs) use: AWS_ENDPOINT_URL."""
        host, port = self._server.server_address[:2]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def start(self) -> "Emulator":
        check_moto_version()
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        with Emulator._active_lock:
            # The patched moto functions are process-wide, so is the emulator.
            if Emulator._active is not None:
                raise EmulatorError("an emulator is already running in this process")
            # Bound here, not by moto's ThreadedMotoServer (whose start() hangs when the port is
            # taken) nor by werkzeug (which calls sys.exit): a taken port raises OSError.
            with socket.create_server((self._host, self._port)) as sock:
                self._server = make_server(
                    self._host, self._port, DomainDispatcherApplication(create_backend_app),
                    threaded=True, request_handler=MotoRequestHandler, fd=sock.fileno(),
                )
            Emulator._active = self
        self.runtime = LambdaRuntime(self.endpoint, _write_logs, self._retry_delays,
                                     self._workers, destination_sink=_send_to_destination)
        _install(self.runtime)
        self._thread = threading.Thread(target=self._server.serve_forever, name="emulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Let in-flight Lambda runs finish (they call the server), then stop the server."""
        try:
            self.runtime.close(self._grace)
        finally:
            _uninstall()
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()
            with Emulator._active_lock:
                Emulator._active = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---- The seam: the two moto functions replaced while an emulator runs. ----

_originals: dict[str, Any] = {}


def _install(runtime: LambdaRuntime) -> None:
    from moto.awslambda import models as lambda_models
    from moto.s3 import notifications

    def invoke_awslambda(account_id: str, event_body: Any, fn_arn: str, region_name: str) -> None:
        # Called inside the S3 PUT: whatever happens, the PUT must succeed, as on AWS.
        try:
            fn = _get_backend(account_id, region_name).get_function(fn_arn)
            runtime.submit(_spec_of(fn), json.loads(json.dumps(event_body)))
        except Exception:
            log.exception("S3 notification not delivered to Lambda", extra={"function": fn_arn})

    def backend_invoke(backend, function_name, qualifier, body, headers, response_headers):
        spec = _spec_of(backend.get_function(function_name, qualifier))
        event = json.loads(body) if body else {}
        invocation_type = headers.get("X-Amz-Invocation-Type", "RequestResponse")
        payload = b""
        if invocation_type == "Event":
            runtime.submit(spec, event)
        elif invocation_type == "RequestResponse":
            result = runtime.invoke(spec, event)
            payload = result.payload
            if not result.ok:
                response_headers["x-amz-function-error"] = "Unhandled"
            tail = "\n".join(result.log_lines).encode()[-LOG_TAIL_BYTES:]
            response_headers["x-amz-log-result"] = base64.b64encode(tail).decode()
        response_headers["x-amz-executed-version"] = "$LATEST"
        response_headers["Content-Length"] = str(len(payload))
        return payload

    _originals["invoke_awslambda"] = notifications._invoke_awslambda
    _originals["backend_invoke"] = lambda_models.LambdaBackend.invoke
    notifications._invoke_awslambda = invoke_awslambda
    lambda_models.LambdaBackend.invoke = backend_invoke


def _uninstall() -> None:
    from moto.awslambda import models as lambda_models
    from moto.s3 import notifications

    if _originals:
        notifications._invoke_awslambda = _originals.pop("invoke_awslambda")
        lambda_models.LambdaBackend.invoke = _originals.pop("backend_invoke")


def _get_backend(account_id: str, region_name: str):
    from moto.awslambda.utils import get_backend

    return get_backend(account_id, region_name)


def _spec_of(fn: Any) -> FunctionSpec:
    """Snapshot a moto LambdaFunction: later UpdateFunctionCode calls do not touch a queued run."""
    if fn.package_type != "Zip" or not getattr(fn, "code_bytes", b""):
        raise EmulatorError(f"{fn.function_name}: only zip-packaged functions can run locally")
    return FunctionSpec(
        name=fn.function_name,
        arn=fn.function_arn,
        region=fn.region,
        account_id=fn.account_id,
        handler=fn.handler,
        code=fn.code_bytes,
        environment=dict(fn.environment_vars),
        timeout=int(fn.timeout),
        memory_size=int(fn.memory_size),
        runtime=fn.run_time or "python3.12",
        **_event_invoke_config(fn),
    )


def _event_invoke_config(fn: Any) -> dict:
    """MaximumRetryAttempts and the OnFailure destination of PutFunctionEventInvokeConfig."""
    if not fn.event_invoke_config:
        return {}
    config = fn.event_invoke_config[-1].config  # moto appends each put; the last one counts
    options = {"max_retries": int(config.get("MaximumRetryAttempts", 2))}
    destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    if destination:
        options["on_failure"] = destination
    return options


def _send_to_destination(arn: str, record: dict) -> None:
    """Straight into moto's SQS backend, as Lambda's destination delivery does on AWS."""
    from moto.sqs.models import sqs_backends

    _, _, service, region, account, name = arn.split(":")
    if service != "sqs":
        raise EmulatorError(f"only SQS on-failure destinations run locally, not {arn}")
    sqs_backends[account][region].send_message(name, json.dumps(record))


def _write_logs(spec: FunctionSpec, stream: str, events: list[dict]) -> None:
    """Straight into moto's CloudWatch Logs backend, where `aws logs tail` reads them."""
    from moto.logs.models import logs_backends

    backend = logs_backends[spec.account_id][spec.region]
    backend.ensure_log_group(spec.log_group)
    backend.create_log_stream(spec.log_group, stream)
    backend.put_log_events(spec.log_group, stream, events)


# ---- The command. ----


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = threading.Event()
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in handled}
    try:
        with Emulator(host, port) as emulator:
            log.info("emulator listening", extra={"endpoint": emulator.endpoint,
                                                  "moto": MOTO_VERSION})
            stop.wait()
            log.info("emulator stopping")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="imgpipe emulator",
        description="The AWS emulator (moto) with a local Lambda runtime, for AWS_ENDPOINT_URL.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (default: $EMULATOR_PORT, else {DEFAULT_PORT})")
    args = parser.parse_args(argv)
    port = args.port
    if port is None:
        value = os.environ.get("EMULATOR_PORT", str(DEFAULT_PORT))
        if not value.isdigit() or not 0 <= int(value) <= 65535:
            parser.error(f"EMULATOR_PORT={value!r} is not a port number")
        port = int(value)

    jsonlog.configure(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        run(args.host, port)
    except EmulatorError as e:
        log.error(str(e))
        return 2
    except OSError as e:
        log.error("emulator cannot listen", extra={"host": args.host, "port": port,
                                                   "error": str(e)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The local Lambda runtime: runs a function's deployed zip in a child Python process.

`LambdaRuntime.submit()` is Lambda's asynchronous invocation: it returns at once, a worker thread
runs the function and retries a failed run twice (Lambda waits about 1 and 2 minutes; the delays
here are seconds and configurable). `LambdaRuntime.invoke()` is one synchronous attempt
(RequestResponse). Every attempt gets its own log stream, `YYYY/MM/DD/[$LATEST]<hex>`, holding
Lambda's START / END / REPORT lines around the handler's stdout and stderr; retries keep the
request id, as Lambda's do.

The child is the current interpreter (`sys.executable -I -u`) running this file as a script: the
bootstrap at the bottom imports the handler module from the unzipped code, builds a context object
and calls `handler(event, context)`. Its environment is Lambda's (AWS_LAMBDA_FUNCTION_NAME,
_HANDLER, AWS_REGION, fake credentials...) plus AWS_ENDPOINT_URL pointing at the emulator; nothing
is inherited from the emulator's own environment but PATH.

Known differences from AWS Lambda: the handler sees the emulator's site-packages (not only boto3);
the timeout clock starts when the process starts (Lambda starts it after the init phase), so the
import time counts against it; MemorySize is reported against Max Memory Used but not enforced;
every attempt is a cold start.
"""

import io
import json
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS = (1.0, 2.0)
DEFAULT_WORKERS = 4
# Lambda's x-amz-log-result header carries the last 4 KB of the log.
LOG_TAIL_BYTES = 4096
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass(frozen=True)
class FunctionSpec:
    """What CreateFunction stored, snapshotted when the invocation is queued."""

    name: str
    arn: str
    region: str
    account_id: str
    handler: str
    code: bytes = field(repr=False)
    environment: dict[str, str] = field(default_factory=dict)
    timeout: int = 3
    memory_size: int = 128
    runtime: str = "python3.12"
    max_retries: int = 2  # PutFunctionEventInvokeConfig's MaximumRetryAttempts
    on_failure: str | None = None  # its OnFailure destination ARN (an SQS queue)

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"


@dataclass(frozen=True)
class RunResult:
    request_id: str
    log_stream: str
    ok: bool
    payload: bytes  # the handler's JSON result, or Lambda's error object
    log_lines: list[str]


# (function, log stream name, [{"timestamp": ms, "message": line}, ...])
LogSink = Callable[[FunctionSpec, str, list[dict]], None]
# (destination ARN, the invocation record Lambda sends there)
DestinationSink = Callable[[str, dict], None]


class RuntimeStopping(RuntimeError):
    """The runtime is shutting down and starts no new run."""


class LambdaRuntime:
    def __init__(
        self,
        endpoint: str,
        log_sink: LogSink,
        retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
        workers: int = DEFAULT_WORKERS,
        destination_sink: DestinationSink | None = None,
    ):
        self._endpoint = endpoint
        self._log_sink = log_sink
        self._destination_sink = destination_sink
        self._retry_delays = tuple(retry_delays)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lambda")
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self._scratch = tempfile.TemporaryDirectory(prefix="imgpipe-lambda-")
        self._code_dirs: dict[str, Path] = {}
        self._pending = 0
        self._pending_changed = threading.Condition()

    def submit(self, spec: FunctionSpec, event: dict) -> str:
        """Queue an asynchronous invocation (with retries); returns its request id."""
        request_id = str(uuid.uuid4())
        if self._stopping.is_set():
            log.warning("lambda invocation dropped: runtime stopping",
                        extra={"function": spec.name, "request_id": request_id})
            return request_id
        with self._pending_changed:
            self._pending += 1
        self._pool.submit(self._run_with_retries, spec, event, request_id)
        return request_id

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted invocation has made its last attempt; False on timeout."""
        with self._pending_changed:
            return self._pending_changed.wait_for(lambda: self._pending == 0, timeout)

    def invoke(self, spec: FunctionSpec, event: dict) -> RunResult:
        """One synchronous attempt in the caller's thread, as InvocationType=RequestResponse."""
        return self._attempt(spec, event, str(uuid.uuid4()), attempt=1)

    def close(self, grace: float = 5.0) -> None:
        """Start nothing new, let running attempts finish for `grace` seconds, kill the rest."""
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        while self._running() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            for proc in self._procs:
                log.warning("killing lambda run at shutdown", extra={"pid": proc.pid})
                _kill(proc)
        self._pool.shutdown(wait=True)
        self._scratch.cleanup()

    def _running(self) -> bool:
        with self._lock:
            return bool(self._procs)

    def _run_with_retries(self, spec: FunctionSpec, event: dict, request_id: str) -> None:
        try:
            self._retry(spec, event, request_id)
        finally:
            with self._pending_changed:
                self._pending -= 1
                self._pending_changed.notify_all()

    def _retry(self, spec: FunctionSpec, event: dict, request_id: str) -> None:
        attempts = 1 + min(spec.max_retries, len(self._retry_delays))
        for attempt in range(1, attempts + 1):
            try:
                result = self._attempt(spec, event, request_id, attempt)
            except RuntimeStopping:
                return
            except Exception:
                log.exception("lambda runtime failure",
                              extra={"function": spec.name, "request_id": request_id})
                return
            if result.ok:
                return
            if attempt == attempts:
                log.error("lambda invocation failed after all retries",
                          extra={"function": spec.name, "request_id": request_id,
                                 "attempts": attempts})
                self._send_on_failure(spec, event, request_id, attempts, result)
                return
            if self._stopping.wait(self._retry_delays[attempt - 1]):
                log.warning("lambda retry abandoned: runtime stopping",
                            extra={"function": spec.name, "request_id": request_id})
                return

    def _send_on_failure(self, spec, event, request_id, attempts, result: RunResult) -> None:
        """Lambda's invocation record to the OnFailure destination, as AWS sends it."""
        if not (spec.on_failure and self._destination_sink):
            return
        record = {
            "version": "1.0",
            "timestamp": _iso_now(),
            "requestContext": {
                "requestId": request_id,
                "functionArn": f"{spec.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": json.loads(result.payload or b"null"),
        }
        try:
            self._destination_sink(spec.on_failure, record)
        except Exception:
            log.exception("on-failure destination not reached",
                          extra={"function": spec.name, "destination": spec.on_failure})

    def _attempt(self, spec: FunctionSpec, event: dict, request_id: str, attempt: int) -> RunResult:
        stream = _log_stream_name()
        events = [_log_event(f"START RequestId: {request_id} Version: $LATEST")]
        run = self._run_process(spec, event, request_id, stream, events)
        ok, payload = _conclude(spec, request_id, run, events)
        events.append(_log_event(f"END RequestId: {request_id}"))
        events.append(_log_event(_report_line(spec, request_id, run)))
        self._log_sink(spec, stream, events)
        log.info("lambda run", extra={"function": spec.name, "request_id": request_id,
                                      "attempt": attempt, "ok": ok, "log_stream": stream})
        return RunResult(request_id=request_id, log_stream=stream, ok=ok,
                         payload=json.dumps(payload).encode(),
                         log_lines=[e["message"] for e in events])

    def _run_process(self, spec: FunctionSpec, event: dict, request_id: str, stream: str,
                     events: list[dict]) -> "_ProcessRun":
        with tempfile.TemporaryDirectory(dir=self._scratch.name) as work:
            event_path = Path(work, "event.json")
            result_path = Path(work, "result.json")
            event_path.write_text(json.dumps(event))
            started = time.time()
            deadline = started + spec.timeout
            argv = [sys.executable, "-I", "-u", __file__, str(self._code_dir(spec)), spec.handler,
                    str(event_path), str(result_path), request_id, str(int(deadline * 1000)),
                    spec.arn]
            proc, reader = self._spawn(argv, self._environment(spec, stream), events)
            timed_out, peak_kb = _wait(proc, deadline)
            reader.join(timeout=5)
            with self._lock:
                self._procs.discard(proc)
            report = json.loads(result_path.read_text()) if result_path.exists() else None
        return _ProcessRun(report=report, timed_out=timed_out, returncode=proc.returncode,
                           wall_ms=(time.time() - started) * 1000, peak_kb=peak_kb)

    def _spawn(self, argv: list[str], env: dict[str, str], events: list[dict]):
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeStopping()
            # Own process group, so a timeout kills whatever the handler started too.
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self._procs.add(proc)
        reader = threading.Thread(target=_collect_lines, args=(proc.stdout, events), daemon=True)
        reader.start()
        return proc, reader

    def _environment(self, spec: FunctionSpec, stream: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            **spec.environment,
            "_HANDLER": spec.handler,
            "LAMBDA_TASK_ROOT": str(self._code_dir(spec)),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self._endpoint,
            # No profile or credential process from the developer's ~/.aws may leak in.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def _code_dir(self, spec: FunctionSpec) -> Path:
        """The unzipped code, extracted once per distinct zip."""
        digest = sha256(spec.code).hexdigest()
        with self._lock:
            if digest not in self._code_dirs:
                target = Path(self._scratch.name, "code", digest)
                with zipfile.ZipFile(io.BytesIO(spec.code)) as archive:
                    archive.extractall(target)
                self._code_dirs[digest] = target
            return self._code_dirs[digest]


@dataclass(frozen=True)
class _ProcessRun:
    report: dict | None  # what the bootstrap wrote; None when it was killed or crashed
    timed_out: bool
    returncode: int
    wall_ms: float
    peak_kb: int


def _conclude(spec: FunctionSpec, request_id: str, run: _ProcessRun,
              events: list[dict]) -> tuple[bool, object]:
    """(ok, payload); logs what Lambda logs when the runtime, not the handler, ended the run."""
    if run.timed_out:
        error = f"Task timed out after {spec.timeout:.2f} seconds"
        events.append(_log_event(f"{_iso_now()} {request_id} {error}"))
        return False, {"errorType": "Sandbox.Timedout",
                       "errorMessage": f"RequestId: {request_id} Error: {error}"}
    if run.report is None:
        error = f"Runtime exited with error: {_exit_status(run.returncode)}"
        events.append(_log_event(f"RequestId: {request_id} Error: {error}"))
        return False, {"errorType": "Runtime.ExitError",
                       "errorMessage": f"RequestId: {request_id} Error: {error}"}
    if run.report["ok"]:
        return True, run.report["result"]
    return False, run.report["error"]


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[bool, int]:
    """Wait until the process exits or the deadline passes; (timed out, peak RSS in KB)."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.time()))
        return False, 0
    except subprocess.TimeoutExpired:
        peak_kb = _peak_rss_kb(proc.pid)
        _kill(proc)
        proc.wait()
        return True, peak_kb


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _peak_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _collect_lines(stream, events: list[dict]) -> None:
    with stream:
        for raw in stream:
            events.append(_log_event(raw.decode("utf-8", "replace").rstrip("\r\n")))


def _report_line(spec: FunctionSpec, request_id: str, run: _ProcessRun) -> str:
    report = run.report or {}
    duration_ms = report.get("duration_ms", spec.timeout * 1000 if run.timed_out else run.wall_ms)
    fields = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {math.ceil(duration_ms)} ms",
        f"Memory Size: {spec.memory_size} MB",
        f"Max Memory Used: {math.ceil(report.get('max_rss_kb', run.peak_kb) / 1024)} MB",
    ]
    if "init_ms" in report:
        fields.append(f"Init Duration: {report['init_ms']:.2f} ms")
    if run.timed_out:
        fields.append("Status: timeout")
    return "\t".join(fields)


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        return f"signal: {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _log_event(message: str) -> dict:
    return {"timestamp": int(time.time() * 1000), "message": message}


def _log_stream_name() -> str:
    return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{secrets.token_hex(16)}"


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- The bootstrap: what runs inside the child process. Standard library only. ----


class _Context:
    """The subset of Lambda's context object that handlers use."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str):
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        # A string, as in Lambda's own Python runtime.
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _bootstrap(argv: list[str]) -> int:
    code_dir, handler_name, event_path, result_path, request_id, deadline_ms, arn = argv
    sys.path.insert(0, code_dir)
    os.chdir(code_dir)
    event = json.loads(Path(event_path).read_text())
    context = _Context(request_id, int(deadline_ms), arn)
    _configure_lambda_logging(request_id)

    started = time.perf_counter()
    handler, error = _load_handler(handler_name)
    init_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    report = _call(handler, event, context) if handler else {"ok": False, "error": error}
    duration_ms = (time.perf_counter() - started) * 1000

    # Not getrusage(): on Linux its ru_maxrss survives exec and so counts the emulator's size.
    report.update(init_ms=init_ms, duration_ms=duration_ms, max_rss_kb=_peak_rss_kb(os.getpid()))
    Path(result_path).write_text(json.dumps(report))
    return 0 if report["ok"] else 1


def _configure_lambda_logging(request_id: str) -> None:
    """Lambda's Python runtime gives the root logger a handler (not a level) in this format."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        f"[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t{request_id}\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)


def _load_handler(handler_name: str):
    import importlib

    module_name, _, function_name = handler_name.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
        return getattr(module, function_name), None
    except Exception as e:
        error = {"errorType": "Runtime.ImportModuleError",
                 "errorMessage": f"Unable to import module '{module_name}': {e}"}
        print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr)
        return None, error


def _call(handler, event: dict, context: _Context) -> dict:
    try:
        result = handler(event, context)
    except Exception as e:
        # Lambda shows the handler's frames, not those of its own runtime.
        frames = traceback.format_tb(e.__traceback__.tb_next)
        print(f"[ERROR] {type(e).__name__}: {e}\nTraceback (most recent call last):\n"
              + "".join(frames).rstrip("\n"), file=sys.stderr)
        return {"ok": False, "error": {"errorType": type(e).__name__, "errorMessage": str(e),
                                       "requestId": context.aws_request_id,
                                       "stackTrace": frames}}
    try:
        json.dumps(result)
    except (TypeError, ValueError) as e:
        message = f"Unable to marshal response: {e}"
        print(f"[ERROR] Runtime.MarshalError: {message}", file=sys.stderr)
        return {"ok": False, "error": {"errorType": "Runtime.MarshalError",
                                       "errorMessage": message}}
    return {"ok": True, "result": result}


if __name__ == "__main__":
    sys.exit(_bootstrap(sys.argv[1:]))

"""The emulator process and its seam into moto.

The seam tests fail loudly when a moto upgrade renames or reshapes the functions the local
Lambda runtime replaces, or stops calling the S3 one on upload: the runtime would then be
silently bypassed.
"""

import inspect
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import boto3
import moto
import pytest
import requests
from moto.awslambda.models import LambdaBackend
from moto.s3 import notifications

from imgpipe.local import emulator as emulator_module
from imgpipe.local.emulator import MOTO_VERSION, Emulator, EmulatorError

REGION = "us-east-1"
SEAM = "moto.s3.notifications._invoke_awslambda"

SLEEPER = """
import os, pathlib, time

def handler(event, context):
    pathlib.Path(os.environ["PID_FILE"]).write_text(str(os.getpid()))
    time.sleep(60)
"""


def zipped(source: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("handler.py", source)
    return buf.getvalue()


def client(emulator: Emulator, service: str):
    return boto3.client(service, endpoint_url=emulator.endpoint, region_name=REGION)


def deploy(emulator: Emulator, name: str, source: str, **config) -> str:
    role = client(emulator, "iam").create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    return client(emulator, "lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": zipped(source)},
        **config,
    )["FunctionArn"]


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_moto_is_the_pinned_version():
    assert moto.__version__ == MOTO_VERSION, (
        f"moto {moto.__version__} is installed, the emulator is pinned to {MOTO_VERSION}: "
        "re-check the seam below before moving the pin"
    )


def test_the_patched_moto_functions_keep_their_names_and_signatures():
    assert parameters(notifications._invoke_awslambda) == [
        "account_id",
        "event_body",
        "fn_arn",
        "region_name",
    ], f"{SEAM} changed its signature"
    assert parameters(LambdaBackend.invoke) == [
        "self",
        "function_name",
        "qualifier",
        "body",
        "headers",
        "response_headers",
    ], "moto.awslambda.models.LambdaBackend.invoke changed its signature"


def test_the_moto_function_object_still_carries_what_the_runtime_reads(unique_name):
    with Emulator(port=0) as emulator:
        arn = deploy(
            emulator,
            unique_name,
            SLEEPER,
            Timeout=7,
            MemorySize=256,
            Environment={"Variables": {"A": "1"}},
        )
        dlq_arn = f"arn:aws:sqs:{REGION}:123456789012:{unique_name}-dlq"
        client(emulator, "lambda").put_function_event_invoke_config(
            FunctionName=unique_name,
            MaximumRetryAttempts=1,
            DestinationConfig={"OnFailure": {"Destination": dlq_arn}},
        )
        fn = emulator_module._get_backend("123456789012", REGION).get_function(arn)
        spec = emulator_module._spec_of(fn)

    assert (spec.name, spec.arn, spec.handler) == (unique_name, arn, "handler.handler")
    assert (spec.timeout, spec.memory_size, spec.environment) == (7, 256, {"A": "1"})
    assert (spec.max_retries, spec.on_failure) == (1, dlq_arn)
    assert zipfile.ZipFile(io.BytesIO(spec.code)).namelist() == ["handler.py"]


def test_moto_calls_the_seam_on_an_upload_matching_a_lambda_notification(unique_name, monkeypatch):
    with Emulator(port=0) as emulator:
        calls = []
        installed = notifications._invoke_awslambda
        monkeypatch.setattr(
            notifications, "_invoke_awslambda", lambda *args: calls.append(args) or installed(*args)
        )
        arn = deploy(emulator, unique_name, "def handler(event, context):\n    return 1\n")
        s3 = client(emulator, "s3")
        s3.create_bucket(Bucket=unique_name)
        s3.put_bucket_notification_configuration(
            Bucket=unique_name,
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [
                    {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )

        s3.put_object(Bucket=unique_name, Key="raw-images/a.jpg", Body=b"x")
        assert emulator.runtime.wait_idle(30)

    assert len(calls) == 1, f"moto no longer calls {SEAM} on upload: no Lambda would run"
    account_id, event_body, fn_arn, region_name = calls[0]
    assert (fn_arn, region_name) == (arn, REGION)
    assert event_body["Records"][0]["s3"]["object"]["key"] == "raw-images%2Fa.jpg"


def test_stopping_restores_moto():
    original = notifications._invoke_awslambda
    with Emulator(port=0):
        assert notifications._invoke_awslambda is not original
    assert notifications._invoke_awslambda is original


def test_another_moto_version_is_refused(monkeypatch):
    monkeypatch.setattr(moto, "__version__", "5.3.0")

    with pytest.raises(EmulatorError, match=r"needs moto 5\.2\.5 \(found 5\.3\.0\)"):
        Emulator(port=0).start()


def test_one_emulator_per_process():
    with Emulator(port=0), pytest.raises(EmulatorError, match="already running"):
        Emulator(port=0).start()


def test_stop_kills_a_run_that_outlives_the_grace_period(unique_name, tmp_path):
    pid_file = tmp_path / "pid"
    with Emulator(port=0, grace=0.2) as emulator:
        deploy(
            emulator,
            unique_name,
            SLEEPER,
            Timeout=120,
            Environment={"Variables": {"PID_FILE": str(pid_file)}},
        )
        client(emulator, "lambda").invoke(FunctionName=unique_name, InvocationType="Event")
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the function never started"
            time.sleep(0.05)

    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def start_command(*args: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`python -m imgpipe.local.emulator`, and the endpoint from its first log line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgpipe.local.emulator", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    first = json.loads(proc.stdout.readline())
    assert first["message"] == "emulator listening", first
    return proc, first["endpoint"]


@pytest.mark.parametrize(
    "signum, how",
    [
        (signal.SIGTERM, {"args": ["--port", "0"]}),
        (signal.SIGINT, {"env": {"EMULATOR_PORT": "0"}}),
    ],
)
def test_the_command_serves_aws_and_moto_api_then_stops_on_a_signal(signum, how):
    proc, endpoint = start_command(*how.get("args", []), **how.get("env", {}))
    try:
        assert endpoint.startswith("http://127.0.0.1:")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        s3.create_bucket(Bucket="imgpipe-command-test")
        assert requests.get(f"{endpoint}/moto-api/", timeout=10).status_code == 200

        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
        assert json.loads(proc.stdout.readline())["message"] == "emulator stopping"
    finally:
        proc.kill()
        proc.wait()


def test_the_command_fails_clearly_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run(
            [sys.executable, "-m", "imgpipe.local.emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 1
    line = json.loads(result.stdout.splitlines()[-1])
    assert (line["message"], line["port"]) == ("emulator cannot listen", port)


def test_the_command_rejects_a_bad_emulator_port():
    result = subprocess.run(
        [sys.executable, "-m", "imgpipe.local.emulator"],
        env={**os.environ, "EMULATOR_PORT": "http"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "EMULATOR_PORT='http' is not a port number" in result.stderr

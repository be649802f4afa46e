"""The local Lambda runtime, told through the emulator's HTTP API as create.sh and a user see it.

S3 upload under raw-images/ -> the deployed zip runs in its own process -> SNS -> SQS; its output,
failures and retries land in CloudWatch Logs under /aws/lambda/<name>.
"""

import io
import json
import os
import re
import textwrap
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest

from imgpipe.local.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
IDLE_TIMEOUT = 60

# Publishes what it saw to the topic; behaviour chosen by the object's name.
PUBLISHER = """
import json, os, time
from urllib.parse import unquote_plus

import boto3

def handler(event, context):
    record = event["Records"][0]
    key = unquote_plus(record["s3"]["object"]["key"])
    print(f"handling {key}")
    if "slow" in key:
        time.sleep(1)
    boto3.client("sns").publish(TopicArn=os.environ["TOPIC_ARN"], Message=json.dumps({
        "key": key,
        "greeting": os.environ.get("GREETING"),
        "request_id": context.aws_request_id,
        "published_at": time.time(),
    }))
    return {"published": key}
"""

FAILING = """
def handler(event, context):
    print("about to fail")
    raise RuntimeError("the handler broke on purpose")
"""

INTROSPECTING = """
import os, time

def handler(event, context):
    if event.get("sleep"):
        print(f"pid {os.getpid()}", flush=True)
        time.sleep(event["sleep"])
    return {
        "event": event,
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "env": {name: os.environ.get(name) for name in (
            "GREETING", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID", "IMGPIPE_TEST_SECRET")},
    }
"""


def zipped(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, source in files.items():
            archive.writestr(name, textwrap.dedent(source))
    return buf.getvalue()


@dataclass
class Aws:
    endpoint: str
    emulator: Emulator
    role_arn: str

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION)

    def deploy(self, name: str, code: bytes, handler: str = "handler.handler", **config) -> str:
        return self.client("lambda").create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=self.role_arn,
            Handler=handler,
            Code={"ZipFile": code},
            **config,
        )["FunctionArn"]

    def bucket_notifying(self, bucket: str, function_arn: str) -> None:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "LambdaFunctionConfigurations": [
                    {
                        "LambdaFunctionArn": function_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": "raw-images/"}]}
                        },
                    }
                ],
            },
        )

    def topic_with_raw_queue(self, name: str) -> tuple[str, str]:
        sns, sqs = self.client("sns"), self.client("sqs")
        topic_arn = sns.create_topic(Name=name)["TopicArn"]
        queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        return topic_arn, queue_url

    def next_message(self, queue_url: str, timeout: float = 30) -> dict:
        sqs = self.client("sqs")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages")
            if messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
                return json.loads(messages[0]["Body"])
        raise AssertionError(f"no message in {queue_url} after {timeout}s")

    def wait_idle(self) -> None:
        assert self.emulator.runtime.wait_idle(IDLE_TIMEOUT), "Lambda runs still going"

    def log_streams(self, function_name: str) -> dict[str, list[str]]:
        """Every log stream of the function with its messages, oldest stream first."""
        logs = self.client("logs")
        group = f"/aws/lambda/{function_name}"
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
        found = {}
        for stream in sorted(streams, key=lambda s: s["creationTime"]):
            events = logs.get_log_events(
                logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True
            )["events"]
            found[stream["logStreamName"]] = [e["message"] for e in events]
        return found


@pytest.fixture(scope="module")
def aws():
    with Emulator(port=0, retry_delays=(0.1, 0.1)) as emulator:
        iam = boto3.client("iam", endpoint_url=emulator.endpoint, region_name=REGION)
        role_arn = iam.create_role(
            RoleName="imgpipe-test-lambda",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "sts:AssumeRole",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        yield Aws(emulator.endpoint, emulator, role_arn)


@pytest.fixture
def publisher(aws, unique_name):
    """Given a bucket notifying a function that publishes each new key to a topic -> raw queue."""
    topic_arn, queue_url = aws.topic_with_raw_queue(unique_name)
    function_arn = aws.deploy(
        unique_name,
        zipped({"handler.py": PUBLISHER}),
        Environment={
            "Variables": {"TOPIC_ARN": topic_arn, "GREETING": "hello from CreateFunction"}
        },
    )
    aws.bucket_notifying(unique_name, function_arn)
    return unique_name, queue_url


def test_upload_runs_the_function_which_publishes_to_the_queue(aws, publisher):
    bucket, queue_url = publisher

    aws.client("s3").put_object(Bucket=bucket, Key="raw-images/red flower+1.jpg", Body=b"x")

    message = aws.next_message(queue_url)
    assert message["key"] == "raw-images/red flower+1.jpg"
    assert message["greeting"] == "hello from CreateFunction"


def test_upload_returns_before_the_function_finishes(aws, publisher):
    bucket, queue_url = publisher

    aws.client("s3").put_object(Bucket=bucket, Key="raw-images/slow.jpg", Body=b"x")
    put_returned_at = time.time()

    message = aws.next_message(queue_url)
    # The handler sleeps a second before publishing: a PUT that waited for it would have
    # returned after the publish.
    assert put_returned_at < message["published_at"]


def test_upload_outside_the_prefix_runs_nothing(aws, publisher):
    bucket, _ = publisher

    aws.client("s3").put_object(Bucket=bucket, Key="thumbnails/red.jpg", Body=b"x")
    aws.wait_idle()

    logs = aws.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{bucket}")["logGroups"]
    assert groups == []


def test_log_group_holds_lambda_report_lines_and_handler_output(aws, publisher):
    bucket, queue_url = publisher

    aws.client("s3").put_object(Bucket=bucket, Key="raw-images/logged.jpg", Body=b"x")
    request_id = aws.next_message(queue_url)["request_id"]
    aws.wait_idle()

    [(stream, lines)] = aws.log_streams(bucket).items()
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", stream)
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert "handling raw-images/logged.jpg" in lines
    assert lines[-2] == f"END RequestId: {request_id}"
    assert lines[-1].startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    assert "\tMemory Size: 128 MB\tMax Memory Used: " in lines[-1]


def test_failing_function_is_run_three_times_with_the_traceback_logged(aws, unique_name):
    function_arn = aws.deploy(unique_name, zipped({"handler.py": FAILING}))
    aws.bucket_notifying(unique_name, function_arn)

    aws.client("s3").put_object(Bucket=unique_name, Key="raw-images/doomed.jpg", Body=b"x")
    aws.wait_idle()

    attempts = list(aws.log_streams(unique_name).values())
    assert len(attempts) == 3
    request_ids = {lines[0].split()[2] for lines in attempts}
    assert len(request_ids) == 1, "retries of one event keep its request id"
    for lines in attempts:
        assert "about to fail" in lines
        assert "[ERROR] RuntimeError: the handler broke on purpose" in lines
        assert "Traceback (most recent call last):" in lines
        assert any('raise RuntimeError("the handler broke on purpose")' in line for line in lines)
        assert lines[-1].startswith("REPORT RequestId: ")


def test_an_event_failing_every_retry_goes_to_the_on_failure_destination(aws, unique_name):
    # Given a failing function whose event invoke config names a queue for failures
    function_arn = aws.deploy(unique_name, zipped({"handler.py": FAILING}))
    sqs = aws.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{unique_name}-failed")["QueueUrl"]
    aws.client("lambda").put_function_event_invoke_config(
        FunctionName=unique_name,
        MaximumRetryAttempts=1,
        DestinationConfig={
            "OnFailure": {"Destination": f"arn:aws:sqs:{REGION}:123456789012:{unique_name}-failed"}
        },
    )
    aws.bucket_notifying(unique_name, function_arn)
    # When an upload makes it fail on the first try and on its one retry
    aws.client("s3").put_object(Bucket=unique_name, Key="raw-images/lost.jpg", Body=b"x")
    aws.wait_idle()
    # Then it ran twice, and Lambda's invocation record, with the S3 event, is on the queue
    assert len(aws.log_streams(unique_name)) == 2
    [message] = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    key = record["requestPayload"]["Records"][0]["s3"]["object"]["key"]
    assert unquote_plus(key) == "raw-images/lost.jpg"  # moto encodes the slash too
    assert record["responsePayload"]["errorMessage"] == "the handler broke on purpose"


def test_environment_and_context_reach_the_handler(aws, unique_name, monkeypatch):
    monkeypatch.setenv("IMGPIPE_TEST_SECRET", "emulator's own environment")
    aws.deploy(
        unique_name,
        zipped({"handler.py": INTROSPECTING}),
        MemorySize=256,
        Timeout=30,
        Environment={"Variables": {"GREETING": "hi"}},
    )

    response = aws.client("lambda").invoke(FunctionName=unique_name, Payload=b'{"n": 1}')

    assert "FunctionError" not in response
    result = json.loads(response["Payload"].read())
    assert result["event"] == {"n": 1}
    assert result["function_name"] == unique_name
    assert result["memory_limit_in_mb"] == "256"
    assert 0 < result["remaining_ms"] <= 30_000
    assert result["env"] == {
        "GREETING": "hi",
        "AWS_LAMBDA_FUNCTION_NAME": unique_name,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "IMGPIPE_TEST_SECRET": None,
    }


def test_function_exceeding_its_timeout_is_killed_and_logged(aws, unique_name):
    aws.deploy(unique_name, zipped({"handler.py": INTROSPECTING}), Timeout=1)

    response = aws.client("lambda").invoke(
        FunctionName=unique_name, Payload=b'{"sleep": 60}', LogType="Tail"
    )

    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "Sandbox.Timedout"
    [lines] = aws.log_streams(unique_name).values()
    assert lines[-3].endswith(" Task timed out after 1.00 seconds")
    assert lines[-1].endswith("\tStatus: timeout")
    pid = int(next(line for line in lines if line.startswith("pid ")).split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_event_invocation_is_accepted_at_once_and_run(aws, unique_name):
    aws.deploy(unique_name, zipped({"handler.py": INTROSPECTING}))

    response = aws.client("lambda").invoke(
        FunctionName=unique_name, InvocationType="Event", Payload=b'{"sleep": 0.5}'
    )
    assert response["StatusCode"] == 202
    aws.wait_idle()

    [lines] = aws.log_streams(unique_name).values()
    assert lines[-1].startswith("REPORT RequestId: ")
    assert "Status: timeout" not in lines[-1]


@pytest.mark.skipif(not (ROOT / "lambda" / "handler.py").exists(), reason="no lambda/handler.py")
def test_the_project_lambda_publishes_the_contract_message(aws, unique_name):
    topic_arn, queue_url = aws.topic_with_raw_queue(unique_name)
    code = zipped({"handler.py": (ROOT / "lambda" / "handler.py").read_text()})
    function_arn = aws.deploy(
        unique_name, code, Timeout=30, Environment={"Variables": {"SNS_TOPIC_ARN": topic_arn}}
    )
    aws.bucket_notifying(unique_name, function_arn)

    put = aws.client("s3").put_object(Bucket=unique_name, Key="raw-images/a b+c.jpg", Body=b"12345")

    message = aws.next_message(queue_url)
    assert message["bucket"] == unique_name
    assert message["key"] == "raw-images/a b+c.jpg"
    assert message["size"] == 5
    assert message["etag"] == put["ETag"].strip('"')
    aws.wait_idle()
    [lines] = aws.log_streams(unique_name).values()
    assert any(line.startswith("[INFO]\t") and '"outcome": "published"' in line for line in lines)

"""`make up` / `make down` end to end: real S3 uploads through the emulator's Lambda, SNS and SQS
to the consumer processes, on one stack for the module. The tests run in order; the last brings
the stack down and checks that nothing is left.
"""

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pyvips

from imgpipe.storage import SOURCE_ETAG

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
SAMPLES = ["photo-exif-rotated.jpg", "logo-alpha.png", "city at night.jpg"]
THUMBNAIL_SECONDS = 60
LAMBDA_LOG_GROUP = "/aws/lambda/imgpipe-publish"


def sample(name: str) -> bytes:
    return (SAMPLES_DIR / name).read_bytes()


def thumbnail(stack, key: str, etag: str) -> bytes:
    """The thumbnail of this upload (its source ETag), waiting for it."""
    s3 = stack.client("s3")

    def made():
        try:
            got = s3.get_object(Bucket=stack.settings["BUCKET_NAME"], Key=key)
        except s3.exceptions.NoSuchKey:
            return None
        return got["Body"].read() if got["Metadata"].get(SOURCE_ETAG) == etag else None

    return stack.wait_for(made, THUMBNAIL_SECONDS, f"thumbnail {key}")


def upload(stack, key: str, data: bytes) -> str:
    s3 = stack.client("s3")
    return s3.put_object(Bucket=stack.settings["BUCKET_NAME"], Key=key, Body=data)["ETag"]


def lambda_log_lines(stack, since_ms: int) -> list[dict]:
    logs = stack.client("logs")
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName=LAMBDA_LOG_GROUP, startTime=since_ms
    )
    return [event for page in pages for event in page["events"]]


def test_up_starts_every_part_and_records_it(local_stack):
    pids = local_stack.pids()
    assert sorted(pids) == ["consumer-1", "consumer-2", "emulator", "logship"]
    assert all(local_stack.alive(pid) for pid in pids.values())
    for port in local_stack.consumer_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            assert answer.status == 200
    settings = local_stack.settings
    assert settings["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{local_stack.emulator_port}"
    assert {"BUCKET_NAME", "QUEUE_URL", "DLQ_URL", "SNS_TOPIC_ARN", "LAMBDA_NAME",
            "AWS_ACCESS_KEY_ID", "CONSUMER_LOG_GROUP"} <= set(settings)


def test_a_second_up_changes_nothing(local_stack):
    before = local_stack.pids()

    again = local_stack.script("local-up.sh")

    assert again.returncode == 0, again.stderr
    assert "already up: nothing changed" in again.stderr
    assert local_stack.pids() == before
    assert "[create]" not in again.stderr  # infra/create.sh did not run


def test_uploads_under_raw_images_become_thumbnails(local_stack):
    # Given the sample images, when each is put under raw-images/ (S3 -> Lambda -> SNS -> SQS)
    etags = {name: upload(local_stack, f"raw-images/{name}", sample(name)) for name in SAMPLES}

    # Then each gets its thumbnail, made from that upload
    thumbs = {name: pyvips.Image.new_from_buffer(thumbnail(local_stack, f"thumbnails/{name}",
                                                           etag), "")
              for name, etag in etags.items()}
    assert (thumbs["photo-exif-rotated.jpg"].width,
            thumbs["photo-exif-rotated.jpg"].height) == (192, 256)  # EXIF orientation applied
    assert thumbs["logo-alpha.png"].hasalpha()
    assert max(thumbs["city at night.jpg"].width, thumbs["city at night.jpg"].height) == 256


def test_an_upload_under_thumbnails_starts_nothing(local_stack):
    s3 = local_stack.client("s3")
    bucket = local_stack.settings["BUCKET_NAME"]
    since = int(time.time() * 1000)
    stray = f"thumbnails/manual-{uuid.uuid4().hex[:8]}.png"
    marker = f"marker-{uuid.uuid4().hex[:8]}.png"
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}

    # When a file is put under thumbnails/, then one under raw-images/ after it
    upload(local_stack, stray, sample("logo-alpha.png"))
    etag = upload(local_stack, f"raw-images/{marker}", sample("logo-alpha.png"))
    thumbnail(local_stack, f"thumbnails/{marker}", etag)
    local_stack.wait_for(lambda: any(marker in e["message"]
                                     for e in lambda_log_lines(local_stack, since)),
                         30, "the marker's Lambda log")

    # Then only the later upload ran the Lambda and made a thumbnail
    lines = lambda_log_lines(local_stack, since)
    assert not [e for e in lines if stray in e["message"]]
    assert len({e["logStreamName"] for e in lines if e["message"].startswith("START")}) == 1
    after = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert after - before == {stray, f"raw-images/{marker}", f"thumbnails/{marker}"}
    status = local_stack.cli("status")
    assert [line.split()[-1] for line in status.stdout.splitlines()
            if line.startswith("dead letters")] == ["0"]


def test_a_failing_lambda_run_is_logged_retried_and_kept_for_a_redrive(local_stack):
    lam = local_stack.client("lambda")
    name = local_stack.settings["LAMBDA_NAME"]
    good = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    missing_topic = good["SNS_TOPIC_ARN"] + "-missing"
    since = int(time.time() * 1000)
    failed_before = local_stack.log_text("emulator").count("failed after all retries")
    lam.update_function_configuration(
        FunctionName=name, Environment={"Variables": {**good, "SNS_TOPIC_ARN": missing_topic}}
    )
    try:
        # When an upload's Lambda run cannot publish
        key = f"raw-images/fails-{uuid.uuid4().hex[:8]}.png"
        etag = upload(local_stack, key, sample("logo-alpha.png"))
        local_stack.wait_for(
            lambda: local_stack.log_text("emulator").count("failed after all retries")
            > failed_before, 60, "the Lambda's last attempt")
    finally:
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": good})

    # Then its log group holds three attempts of one request, each with the error
    lines = lambda_log_lines(local_stack, since)
    starts = [e for e in lines if e["message"].startswith("START RequestId:")]
    assert len(starts) == 3
    assert len({e["message"].split()[2] for e in starts}) == 1  # retries keep the request id
    assert len({e["logStreamName"] for e in starts}) == 3  # one stream per attempt
    errors = {e["logStreamName"] for e in lines if "Topic does not exist" in e["message"]}
    assert errors == {e["logStreamName"] for e in starts}

    # And the event it gave up on waits in the DLQ (Lambda's on-failure destination), with why
    def listed():
        dlq = local_stack.cli("dlq", "list")
        return dlq.stdout.strip() and dlq
    dead_key, reason, detail = local_stack.wait_for(listed, 30, "the DLQ").stdout.split("\t")
    assert (dead_key, reason) == (key, "lambda-failed")
    assert "RetriesExhausted" in detail and "Topic does not exist" in detail
    # So once the cause is fixed, a redrive hands the upload to the consumer: nothing was lost
    assert "moved 1 message(s)" in local_stack.cli("dlq", "redrive").stdout
    thumbnail(local_stack, "thumbnails/" + key.removeprefix("raw-images/"), etag)


def test_imgpipe_status_and_logs_read_the_local_stack(local_stack):
    status = local_stack.cli("status")
    assert status.returncode == 0, status.stderr
    assert local_stack.settings["BUCKET_NAME"] in status.stdout
    assert "thumbnails" in status.stdout

    # The consumers' log lines reach CloudWatch Logs through logship, one stream per process.
    def shipped():
        logs = local_stack.cli("logs", "consumer")
        written = [line for line in logs.stdout.splitlines() if '"outcome": "written"' in line]
        keys = {json.loads(line.split("  ", 1)[1])["key"] for line in written}
        return logs if {f"raw-images/{name}" for name in SAMPLES} <= keys else None

    logs = local_stack.wait_for(shipped, 30, "the consumers' log lines in CloudWatch Logs")
    assert {line.split()[0] for line in logs.stdout.splitlines()} <= {"consumer-1", "consumer-2"}

    lambda_logs = local_stack.cli("logs", "lambda")
    assert lambda_logs.returncode == 0, lambda_logs.stderr
    assert "raw-images/logo-alpha.png" in lambda_logs.stdout


def test_the_demo_report_lists_each_thumbnail(local_stack, tmp_path):
    files = [str(SAMPLES_DIR / name) for name in ("landscape.webp", "spinner.gif")]
    report = subprocess.run(
        [sys.executable, "-m", "imgpipe.local.demo", "--timeout", "60", "--out", str(tmp_path),
         *files],
        env={**local_stack.env, **local_stack.settings}, capture_output=True, text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    rows = report.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["raw-images/landscape.webp",
                                                "raw-images/spinner.gif"]
    assert "240x240 (12 frames)" in rows[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landscape.webp", "spinner.gif"]


def test_down_stops_everything_and_leaves_nothing(local_stack):
    pids = local_stack.pids()
    ports = [local_stack.emulator_port, *local_stack.consumer_ports]

    down = local_stack.script("local-down.sh")

    assert down.returncode == 0, down.stderr
    assert "nothing left tagged project=imgpipe" in down.stdout  # destroy.sh's leftover list
    for name, pid in pids.items():
        assert f"stopped {name} (pid {pid})" in down.stdout
        assert not local_stack.alive(pid), f"{name} (pid {pid}) still runs"
    assert not [port for port in ports if local_stack.listening(port)]
    assert not list(local_stack.run_dir.glob("*.pid"))
    assert not (local_stack.run_dir / "env").exists()

    again = local_stack.script("local-down.sh")
    assert again.returncode == 0, again.stderr
    assert "nothing was running" in again.stdout

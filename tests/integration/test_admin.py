"""The operator's commands against the moto server: upload --wait, status, dlq list/redrive."""

import subprocess
import sys
import time

from images import make_image


def imgpipe(pipeline, tmp_path, *args, **env):
    run = subprocess.run(
        [sys.executable, "-m", "imgpipe.cli", *args],
        env=pipeline.env(DLQ_URL=pipeline.dlq_url, PROJECT=pipeline.bucket, **env),
        cwd=tmp_path,  # no .env or .run/env here
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run


def test_upload_wait_reports_each_thumbnail_latency(pipeline, running_consumer, tmp_path):
    # Given a running consumer (no Lambda here: the test sends the messages it would publish)
    files = []
    for name in ("one.jpg", "two.png"):
        path = tmp_path / name
        path.write_bytes(make_image("PNG" if name.endswith("png") else "JPEG"))
        files.append(str(path))
    running_consumer()
    upload = subprocess.Popen(
        [sys.executable, "-m", "imgpipe.cli", "upload", "--wait", "--timeout", "30", *files],
        env=pipeline.env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    while len(pipeline.keys("raw-images/")) < 2:  # uploaded: now tell the consumer
        time.sleep(0.1)
    for name in ("one.jpg", "two.png"):
        pipeline.send(f"raw-images/{name}")
    out, _ = upload.communicate(timeout=60)
    assert upload.returncode == 0, out
    lines = sorted(out.splitlines())
    assert lines[0].startswith("raw-images/one.jpg\tthumbnails/one.jpg\t")
    assert lines[1].startswith("raw-images/two.png\tthumbnails/two.png\t")
    assert all(line.endswith(" ms") for line in lines)


def test_upload_wait_fails_naming_a_thumbnail_that_never_came(pipeline, tmp_path):
    path = tmp_path / "lonely.jpg"
    path.write_bytes(make_image())
    run = imgpipe(pipeline, tmp_path, "upload", "--wait", "--timeout", "1", str(path))
    assert run.returncode == 1
    assert "raw-images/lonely.jpg\tno thumbnail after 1s" in run.stdout


def test_status_dlq_list_and_redrive(pipeline, running_consumer, tmp_path):
    # Given one dead letter (a corrupt upload) and one thumbnail
    pipeline.upload("raw-images/bad.jpg", b"\xff\xd8\xff garbage")
    pipeline.upload("raw-images/good.jpg", make_image())
    pipeline.send("raw-images/bad.jpg")
    pipeline.send("raw-images/good.jpg")
    with_consumer = running_consumer()
    pipeline.thumbnail("thumbnails/good.jpg")
    while pipeline.depth(pipeline.dlq_url) < 1:
        time.sleep(0.1)
    with_consumer.stop()

    status = imgpipe(pipeline, tmp_path, "status")
    assert status.returncode == 0, status.stderr
    table = dict(line.rsplit(None, 1) for line in status.stdout.splitlines())
    assert (table["dead letters"], table["thumbnails"], table["queued"]) == ("1", "1", "0")

    listed = imgpipe(pipeline, tmp_path, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    key, reason, detail = listed.stdout.strip().split("\t")
    assert (key, reason) == ("raw-images/bad.jpg", "corrupt-image")
    assert "could not be decoded" in detail

    # When the operator redrives, the message is back on the work queue and gone from the DLQ
    redriven = imgpipe(pipeline, tmp_path, "dlq", "redrive")
    assert "moved 1 message(s)" in redriven.stdout
    assert pipeline.depth(pipeline.queue_url) == 1


def test_a_command_against_a_missing_queue_says_so_in_one_line(pipeline, tmp_path):
    run = imgpipe(pipeline, tmp_path, "status", QUEUE_URL=pipeline.queue_url + "-gone")
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "imgpipe status:" in run.stderr

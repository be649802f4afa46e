"""The consumer against the moto server: messages in, thumbnails out, nothing lost or done twice."""

import json
import signal
import threading
import time
import urllib.request

import pytest

from images import make_image
from imgpipe import consumer as consumer_module
from imgpipe import health
from imgpipe.errors import TransientError
from imgpipe.storage import Storage


def test_messages_in_thumbnails_out(pipeline, running_consumer):
    # Given three uploads of different formats, one with a space and a plus in its name
    uploads = {
        "raw-images/holiday/beach day+1.jpg": make_image("JPEG", size=(1600, 1200)),
        "raw-images/logo.png": make_image("PNG", size=(300, 600), mode="RGBA", color=(0, 0, 0, 0)),
        "raw-images/cat.webp": make_image("WEBP", size=(512, 512)),
    }
    for key, data in uploads.items():
        pipeline.upload(key, data)
        pipeline.send(key)
    # When the consumer runs
    running_consumer()
    # Then each thumbnail is written next to the others, with its type and its source's ETag
    expected = {
        "thumbnails/holiday/beach day+1.jpg": "image/jpeg",
        "thumbnails/logo.png": "image/png",
        "thumbnails/cat.webp": "image/webp",
    }
    for key, content_type in expected.items():
        thumb = pipeline.thumbnail(key)
        assert thumb["ContentType"] == content_type
        source = pipeline.s3.head_object(Bucket=pipeline.bucket, Key="raw-images/" + key[11:])
        assert thumb["Metadata"]["source-etag"] == source["ETag"]
    # And every message is gone from the queue, none dead-lettered
    _wait_for(lambda: pipeline.depth(pipeline.queue_url) == 0)
    assert pipeline.depth(pipeline.dlq_url) == 0


def test_a_plain_s3_event_body_is_accepted(pipeline, running_consumer):
    pipeline.upload("raw-images/a b.jpg", make_image())
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": pipeline.bucket}, "object": {"key": "raw-images/a+b.jpg"}},
    }
    pipeline.sqs.send_message(
        QueueUrl=pipeline.queue_url, MessageBody=json.dumps({"Records": [record]})
    )
    running_consumer()
    assert pipeline.thumbnail("thumbnails/a b.jpg")["ContentType"] == "image/jpeg"


def test_bad_input_is_dead_lettered_with_its_reason_and_good_work_keeps_flowing(
    pipeline, running_consumer
):
    bad = {
        "raw-images/corrupt.jpg": b"\xff\xd8\xff\xe0 this is not a jpeg",
        "raw-images/drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        "raw-images/bomb.png": make_image("PNG", size=(4000, 4000), mode="1", color=0),
    }
    for key, data in bad.items():
        pipeline.upload(key, data)
        pipeline.send(key)
    pipeline.send("raw-images/never-uploaded.jpg")
    pipeline.send("thumbnails/outside.jpg")
    pipeline.sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody="not json at all")
    running_consumer(MAX_PIXELS=1_000_000)
    # Good work after the bad keeps flowing through the same consumer
    pipeline.upload("raw-images/good.jpg", make_image())
    pipeline.send("raw-images/good.jpg")
    assert pipeline.thumbnail("thumbnails/good.jpg")

    reasons = {}
    for m in pipeline.dead_letters(expected=6):
        attrs = m["MessageAttributes"]
        reasons[m["Body"]] = attrs["imgpipe-error-reason"]["StringValue"]
        assert attrs["imgpipe-error-detail"]["StringValue"]
    by_key = {json.loads(b)["key"] if b.startswith("{") else b: r for b, r in reasons.items()}
    assert by_key == {
        "raw-images/corrupt.jpg": "corrupt-image",
        "raw-images/drawing.svg": "unsupported-format",
        "raw-images/bomb.png": "too-many-pixels",
        "raw-images/never-uploaded.jpg": "missing-object",
        "thumbnails/outside.jpg": "outside-prefix",
        "not json at all": "bad-message",
    }
    assert pipeline.keys("thumbnails/") == ["thumbnails/good.jpg"]
    _wait_for(lambda: pipeline.depth(pipeline.queue_url) == 0)


def test_a_message_that_keeps_failing_reaches_the_dlq_after_the_redrive_count(
    pipeline, running_consumer, monkeypatch
):
    # Given an object whose read always fails transiently (say, S3 keeps throttling it)
    real_download = Storage.download_source
    attempts = []

    def flaky_download(self, key, etag, file):
        if key == "raw-images/poison.jpg":
            attempts.append(key)
            raise TransientError("SlowDown: please reduce your request rate")
        return real_download(self, key, etag, file)

    monkeypatch.setattr(Storage, "download_source", flaky_download)
    monkeypatch.setattr(consumer_module, "RETRY_BACKOFF_SECONDS", 0)
    for key in ("raw-images/poison.jpg", "raw-images/ok1.jpg"):
        pipeline.upload(key, make_image())
        pipeline.send(key)
    running_consumer()
    # Good ones keep flowing while the poison one is retried
    assert pipeline.thumbnail("thumbnails/ok1.jpg")
    pipeline.upload("raw-images/ok2.jpg", make_image())
    pipeline.send("raw-images/ok2.jpg")
    assert pipeline.thumbnail("thumbnails/ok2.jpg")
    # Then SQS's redrive policy moves it to the DLQ after maxReceiveCount receives
    [dead] = pipeline.dead_letters(expected=1)
    assert json.loads(dead["Body"])["key"] == "raw-images/poison.jpg"
    assert len(attempts) == pipeline.max_receive_count


def test_a_duplicate_delivery_does_not_redo_the_work(pipeline, running_consumer):
    pipeline.upload("raw-images/twice.jpg", make_image())
    pipeline.send("raw-images/twice.jpg")
    consumer = running_consumer()
    first = pipeline.thumbnail("thumbnails/twice.jpg")
    written = health.WRITTEN._value.get()
    pipeline.send("raw-images/twice.jpg")
    _wait_for(lambda: health.OUTCOMES.labels("duplicate")._value.get() >= 1)
    assert health.WRITTEN._value.get() == written
    again = pipeline.s3.get_object(Bucket=pipeline.bucket, Key="thumbnails/twice.jpg")
    assert again["LastModified"] == first["LastModified"]
    assert consumer.health.alive


def test_a_reupload_with_new_content_is_thumbnailed_again(pipeline, running_consumer):
    pipeline.upload("raw-images/v.jpg", make_image(color=(255, 0, 0)))
    pipeline.send("raw-images/v.jpg")
    running_consumer()
    first = pipeline.thumbnail("thumbnails/v.jpg")["Body"].read()
    pipeline.upload("raw-images/v.jpg", make_image(color=(0, 0, 255)))
    pipeline.send("raw-images/v.jpg")
    _wait_for(lambda: pipeline.thumbnail("thumbnails/v.jpg")["Body"].read() != first)


def test_visibility_is_extended_while_a_slow_image_is_worked_on(
    pipeline, running_consumer, monkeypatch
):
    # Given an image that takes longer than the queue's 3 s visibility timeout
    real = consumer_module.make_thumbnail
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(5)
        return real(*args, **kwargs)

    monkeypatch.setattr(consumer_module, "make_thumbnail", slow)
    pipeline.upload("raw-images/slow.jpg", make_image())
    pipeline.send("raw-images/slow.jpg")
    running_consumer(WORKERS=2)
    running_consumer(WORKERS=2)  # a second consumer would take it if it became visible
    pipeline.thumbnail("thumbnails/slow.jpg", timeout=30)
    _wait_for(lambda: pipeline.depth(pipeline.queue_url) == 0)
    assert len(calls) == 1


def test_a_slow_image_holds_up_nothing_else(pipeline, running_consumer, monkeypatch):
    # Given one image whose thumbnail blocks until the test lets it go, and four quick ones
    real = consumer_module.make_thumbnail
    release = threading.Event()

    def maybe_slow(path, *args, **kwargs):
        if path.read_bytes() == slow_bytes:
            release.wait(timeout=30)
        return real(path, *args, **kwargs)

    slow_bytes = make_image(size=(900, 600), color=(1, 2, 3))
    monkeypatch.setattr(consumer_module, "make_thumbnail", maybe_slow)
    pipeline.upload("raw-images/slow.jpg", slow_bytes)
    pipeline.send("raw-images/slow.jpg")
    quick = [f"raw-images/quick-{i}.jpg" for i in range(4)]
    for key in quick:
        pipeline.upload(key, make_image())
        pipeline.send(key)
    running_consumer(WORKERS=2)
    # Then the quick ones are written and their messages deleted while the slow one still runs
    for key in quick:
        pipeline.thumbnail("thumbnails/" + key.removeprefix("raw-images/"))
    _wait_for(lambda: pipeline.depth(pipeline.queue_url) == 1)
    assert "thumbnails/slow.jpg" not in pipeline.keys("thumbnails/")
    release.set()
    pipeline.thumbnail("thumbnails/slow.jpg")
    _wait_for(lambda: pipeline.depth(pipeline.queue_url) == 0)


def test_sigterm_during_a_batch_loses_nothing(pipeline, consumer_process):
    # Given ten messages and one single-threaded consumer process busy with them
    keys = [f"raw-images/batch/{i}.jpg" for i in range(10)]
    for key in keys:
        pipeline.upload(key, make_image(size=(3000, 2000)))
        pipeline.send(key)
    proc = consumer_process(WORKERS=1)
    for line in proc.stdout:
        if '"outcome": "written"' in line:
            break
    # When it is told to stop mid-batch
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=90)[0]
    # Then it exits 0, having finished or handed back what it held
    assert proc.returncode == 0, output
    assert '"message": "stopped"' in output
    done = {k for k in keys if "thumbnails/" + k[11:] in pipeline.keys("thumbnails/batch/")}
    assert 0 < len(done) < len(keys)
    # And a new consumer finishes the rest: every image has its thumbnail, nothing dead-lettered
    proc = consumer_process(WORKERS=2)
    for key in keys:
        pipeline.thumbnail("thumbnails/" + key[11:], timeout=60)
    _wait_for(lambda: pipeline.depth(pipeline.queue_url) == 0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=90)
    assert proc.returncode == 0
    assert pipeline.depth(pipeline.dlq_url) == 0


def test_health_ready_and_metrics_endpoints(pipeline, running_consumer):
    consumer = running_consumer()
    server = health.serve(consumer.health, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _wait_for(lambda: consumer.health.queue_ok)
        assert _get(base + "/healthz") == (200, "alive\n")
        assert _get(base + "/readyz") == (200, "ready\n")
        status, metrics = _get(base + "/metrics")
        assert status == 200
        for name in (
            "imgpipe_messages_received_total",
            "imgpipe_thumbnails_written_total",
            "imgpipe_failures_total",
            "imgpipe_processing_seconds_bucket",
            "imgpipe_messages_in_flight",
        ):
            assert name in metrics
    finally:
        server.shutdown()


def test_readyz_fails_while_the_queue_is_unreachable(pipeline, running_consumer):
    missing = pipeline.queue_url + "-does-not-exist"
    consumer = running_consumer(QUEUE_URL=missing)
    time.sleep(1)
    assert not consumer.health.queue_ok
    assert consumer.health.alive  # still serving: it waits and retries


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.2)

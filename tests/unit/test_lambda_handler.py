"""lambda/handler.py against the moto server: S3 events shaped as AWS sends them -> SNS -> SQS."""

import copy
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
BUCKET = "imgpipe-123456789012-us-east-1"


def load_handler_module():
    # lambda/ is not a package (the function's zip holds handler.py at its root).
    spec = importlib.util.spec_from_file_location("lambda_handler", ROOT / "lambda" / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_event(name):
    return json.loads((EVENTS / name).read_text())


def s3_event(*keys, event_name="ObjectCreated:Put"):
    """An S3 notification with one record per key; keys are given URL-encoded, as S3 sends them."""
    template = load_event("s3-put.json")["Records"][0]
    records = []
    for i, key in enumerate(keys):
        record = copy.deepcopy(template)
        record["eventName"] = event_name
        record["s3"]["object"].update(
            key=key, size=1000 + i, sequencer=f"{0x55AED6DCD90281E5 + i:018X}"
        )
        records.append(record)
    return {"Records": records}


@pytest.fixture(scope="module")
def handler_module():
    return load_handler_module()


@pytest.fixture
def lam(handler_module, moto_endpoint):
    """The handler module, its cached SNS client dropped so it is built against this endpoint."""
    handler_module._sns.cache_clear()
    yield handler_module
    handler_module._sns.cache_clear()


@pytest.fixture
def topic(moto_endpoint, unique_name, monkeypatch):
    """A topic with an SQS queue subscribed (raw delivery); SNS_TOPIC_ARN names the topic."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    arn = sns.create_topic(Name=unique_name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    monkeypatch.setenv("SNS_TOPIC_ARN", arn)
    monkeypatch.delenv("RAW_PREFIX", raising=False)
    return SimpleNamespace(arn=arn, queue_url=queue_url)


def delivered(queue_url):
    """Every message body waiting in the queue, parsed as JSON."""
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        if not response.get("Messages"):
            return bodies
        bodies += [json.loads(m["Body"]) for m in response["Messages"]]


def log_lines(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_handler"]


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("raw-images/red+flower.jpg", "raw-images/red flower.jpg"),
        ("raw-images/a%2Bb.jpg", "raw-images/a+b.jpg"),
        ("raw-images/%C3%BCn%C3%AF.png", "raw-images/ünï.png"),
        ("raw-images/100%25.jpg", "raw-images/100%.jpg"),
    ],
)
def test_publishes_the_decoded_key_of_an_upload(lam, topic, encoded, decoded):
    # Given an upload whose key S3 URL-encoded in the event
    event = s3_event(encoded)
    record = event["Records"][0]

    # When the handler runs
    summary = lam.handler(event, None)

    # Then one message with the decoded key and the object's facts reaches the queue
    assert summary == {"published": 1, "skipped": 0}
    assert delivered(topic.queue_url) == [
        {
            "bucket": BUCKET,
            "key": decoded,
            "size": 1000,
            "etag": record["s3"]["object"]["eTag"],
            "eventTime": record["eventTime"],
        }
    ]


def test_the_sample_event_file_publishes_its_object(lam, topic):
    assert lam.handler(load_event("s3-put.json"), None) == {"published": 1, "skipped": 0}
    [message] = delivered(topic.queue_url)
    assert message["key"] == "raw-images/red flower.jpg"
    assert message["size"] == 48213


def test_many_records_go_out_in_batches_of_ten_and_all_arrive(lam, topic):
    # Given 23 uploads in one event, and a count of the PublishBatch calls made
    keys = [f"raw-images/photo-{i:02d}.jpg" for i in range(23)]
    batch_sizes = []
    lam._sns().meta.events.register(
        "provide-client-params.sns.PublishBatch",
        lambda params, **_: batch_sizes.append(len(params["PublishBatchRequestEntries"])),
    )

    # When the handler runs
    summary = lam.handler(s3_event(*keys), None)

    # Then three calls carried them all, and every one arrived
    assert summary == {"published": 23, "skipped": 0}
    assert batch_sizes == [10, 10, 3]
    assert sorted(m["key"] for m in delivered(topic.queue_url)) == keys


def test_a_thumbnail_does_not_trigger_another_run(lam, topic, caplog):
    caplog.set_level("INFO")
    summary = lam.handler(s3_event("thumbnails/red+flower.jpg"), None)

    assert summary == {"published": 0, "skipped": 1}
    assert delivered(topic.queue_url) == []
    assert log_lines(caplog) == [
        {"key": "thumbnails/red flower.jpg", "outcome": "skipped", "reason": "outside raw-images/"}
    ]


def test_a_deleted_object_is_skipped(lam, topic, caplog):
    caplog.set_level("INFO")
    summary = lam.handler(load_event("s3-delete.json"), None)

    assert summary == {"published": 0, "skipped": 1}
    assert delivered(topic.queue_url) == []
    [line] = log_lines(caplog)
    assert line["outcome"] == "skipped"
    assert line["reason"] == "not an ObjectCreated event: ObjectRemoved:Delete"


def test_a_mixed_event_publishes_only_new_raw_images(lam, topic):
    event = s3_event("raw-images/new.jpg", "thumbnails/new.jpg")
    event["Records"] += load_event("s3-delete.json")["Records"]

    assert lam.handler(event, None) == {"published": 1, "skipped": 2}
    assert [m["key"] for m in delivered(topic.queue_url)] == ["raw-images/new.jpg"]


def test_raw_prefix_comes_from_the_environment(lam, topic, monkeypatch):
    monkeypatch.setenv("RAW_PREFIX", "uploads/")
    summary = lam.handler(s3_event("uploads/cat.jpg", "raw-images/cat.jpg"), None)

    assert summary == {"published": 1, "skipped": 1}
    assert [m["key"] for m in delivered(topic.queue_url)] == ["uploads/cat.jpg"]


def test_the_s3_test_event_is_acknowledged_and_ignored(lam, topic, caplog):
    caplog.set_level("INFO")
    assert lam.handler(load_event("s3-test-event.json"), None) == {"published": 0, "skipped": 0}
    assert delivered(topic.queue_url) == []
    assert log_lines(caplog) == [{"key": None, "outcome": "skipped", "reason": "s3:TestEvent"}]


def test_one_json_log_line_per_record_with_fields_for_lambdas_json_format(lam, topic, caplog):
    caplog.set_level("INFO")
    lam.handler(s3_event("raw-images/a%2Bb.jpg", "thumbnails/a%2Bb.jpg"), None)

    # The message is JSON on its own (local runs, text format) ...
    assert sorted(log_lines(caplog), key=lambda line: line["outcome"]) == [
        {"key": "raw-images/a+b.jpg", "outcome": "published", "reason": None},
        {"key": "thumbnails/a+b.jpg", "outcome": "skipped", "reason": "outside raw-images/"},
    ]
    # ... and the same fields ride on the record, where Lambda's JSON formatter picks them up.
    records = [r for r in caplog.records if r.name == "lambda_handler"]
    assert {(r.key, r.outcome) for r in records} == {
        ("raw-images/a+b.jpg", "published"),
        ("thumbnails/a+b.jpg", "skipped"),
    }


@pytest.mark.parametrize(
    ("event", "complaint"),
    [
        ({}, "no Records"),
        ({"Records": []}, "no Records"),
        ({"Records": "raw-images/a.jpg"}, "no Records"),
        (
            {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "a"}}}]},
            "no s3.bucket.name",
        ),
        (
            {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]},
            "no s3.object.key",
        ),
    ],
)
def test_a_malformed_event_raises_value_error_saying_what_is_wrong(lam, topic, event, complaint):
    with pytest.raises(ValueError, match=complaint):
        lam.handler(event, None)
    assert delivered(topic.queue_url) == []


def test_one_malformed_record_stops_the_whole_event_before_anything_is_published(lam, topic):
    event = s3_event("raw-images/good.jpg")
    event["Records"].append({"eventName": "ObjectCreated:Put", "s3": {}})

    with pytest.raises(ValueError, match="malformed S3 event record: no s3.bucket.name"):
        lam.handler(event, None)
    assert delivered(topic.queue_url) == []


def test_a_missing_topic_setting_is_named(lam, topic, monkeypatch):
    monkeypatch.delenv("SNS_TOPIC_ARN")
    with pytest.raises(RuntimeError, match="SNS_TOPIC_ARN is not set"):
        lam.handler(s3_event("raw-images/a.jpg"), None)


def test_a_topic_that_does_not_exist_raises(lam, topic, monkeypatch):
    monkeypatch.setenv("SNS_TOPIC_ARN", topic.arn + "-gone")
    with pytest.raises(ClientError) as raised:
        lam.handler(s3_event("raw-images/a.jpg"), None)
    assert raised.value.response["Error"]["Code"] == "NotFound"


def test_a_partly_failed_batch_raises_naming_the_refused_key(lam, topic, caplog):
    # Given a batch where SNS refuses one entry. S3 keys stop at 1,024 bytes; an oversized one is
    # simply the way to make the emulator refuse a single entry (its message passes 256 KiB).
    huge = "raw-images/" + "x" * 262_144 + ".jpg"
    caplog.set_level("INFO")

    # When the handler runs, then it raises naming that key and only that key
    with pytest.raises(lam.PublishError, match=r"did not accept 1 of 3 messages") as raised:
        lam.handler(s3_event("raw-images/ok-1.jpg", huge, "raw-images/ok-2.jpg"), None)
    assert huge in str(raised.value)
    assert "ok-1" not in str(raised.value) and "ok-2" not in str(raised.value)

    # And the others were delivered, and the refusal is on the log with the key
    assert sorted(m["key"] for m in delivered(topic.queue_url)) == [
        "raw-images/ok-1.jpg",
        "raw-images/ok-2.jpg",
    ]
    [failed] = [line for line in log_lines(caplog) if line["outcome"] == "failed"]
    assert failed["key"] == huge


def test_the_client_is_built_on_first_use_and_reused(topic, moto_endpoint, monkeypatch):
    # Given the module imported while no endpoint is set, as the local runtime may do
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    module = load_handler_module()
    assert module._sns.cache_info().currsize == 0

    # When the endpoint is set afterwards and the function runs twice
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    module.handler(s3_event("raw-images/one.jpg"), None)
    module.handler(s3_event("raw-images/two.jpg"), None)

    # Then both messages went to the emulator through one client
    assert sorted(m["key"] for m in delivered(topic.queue_url)) == [
        "raw-images/one.jpg",
        "raw-images/two.jpg",
    ]
    assert module._sns.cache_info().misses == 1

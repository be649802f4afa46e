"""Message bodies -> the objects they name, and the thumbnail key of each."""

import json

import pytest

from imgpipe.errors import PermanentError
from imgpipe.events import ObjectRef, parse_body
from imgpipe.storage import thumbnail_key


def s3_event(*keys, event="ObjectCreated:Put"):
    """Shaped like the sample in the S3 docs: keys URL-encoded, a space as '+'."""
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": event,
                    "s3": {"bucket": {"name": "photos"}, "object": {"key": k, "size": 1}},
                }
                for k in keys
            ]
        }
    )


def test_the_lambda_message_is_taken_as_is():
    body = json.dumps({"bucket": "photos", "key": "raw-images/a b+c.jpg", "size": 3})
    assert parse_body(body) == [ObjectRef("photos", "raw-images/a b+c.jpg")]


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("raw-images/red+flower.jpg", "raw-images/red flower.jpg"),
        ("raw-images/a%2Bb.jpg", "raw-images/a+b.jpg"),
        ("raw-images/%C3%BCn%C3%AF.png", "raw-images/ünï.png"),
        ("raw-images/100%25.jpg", "raw-images/100%.jpg"),
        ("raw-images%2Fa+b%2Bc.jpg", "raw-images/a b+c.jpg"),  # moto's more eager encoding
    ],
)
def test_s3_event_keys_are_url_decoded(encoded, key):
    assert parse_body(s3_event(encoded)) == [ObjectRef("photos", key)]


def test_a_lambda_failure_record_from_the_dlq_yields_the_upload_it_gave_up_on():
    record = {
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": json.loads(s3_event("raw-images/red+flower.jpg")),
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "Topic does not exist"},
    }
    assert parse_body(json.dumps(record)) == [ObjectRef("photos", "raw-images/red flower.jpg")]


def test_only_object_created_records_count_and_the_test_event_is_ignored():
    assert parse_body(s3_event("raw-images/x.jpg", event="ObjectRemoved:Delete")) == []
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "photos"}
    assert parse_body(json.dumps(test_event)) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        '{"bucket": "b"}',
        '{"key": 5, "bucket": "b"}',
        '{"Records": [{"eventName": "ObjectCreated:Put"}]}',
    ],
)
def test_a_body_that_parses_as_neither_is_permanent(body):
    with pytest.raises(PermanentError) as e:
        parse_body(body)
    assert e.value.reason == "bad-message"


def test_thumbnail_key_keeps_the_path_after_the_prefix():
    assert thumbnail_key("raw-images/2026/a b.jpg") == "thumbnails/2026/a b.jpg"
    assert thumbnail_key("in/x.png", "in/", "out/") == "out/x.png"


@pytest.mark.parametrize("key", ["thumbnails/x.jpg", "x.jpg", "raw-images/", "raw-imagesx.jpg"])
def test_a_key_outside_the_raw_prefix_is_permanent(key):
    with pytest.raises(PermanentError) as e:
        thumbnail_key(key)
    assert e.value.reason == "outside-prefix"

"""The contract between the Lambda and the consumer (docs/CONTRACTS.md, "The message").

What lambda/handler.py publishes, delivered raw through SNS -> SQS on the moto server, is what
imgpipe.events.parse_body reads: the same bucket, the key decoded exactly once.
"""

import copy
import importlib.util
import json
from pathlib import Path

import boto3
import pytest

from imgpipe.events import ObjectRef, parse_body
from imgpipe.storage import thumbnail_key

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"

# (key as S3 writes it in the event, the object's real key)
KEYS = [
    ("raw-images/red+flower.jpg", "raw-images/red flower.jpg"),
    ("raw-images/a%2Bb.jpg", "raw-images/a+b.jpg"),
    ("raw-images/%C3%BCn%C3%AF.png", "raw-images/ünï.png"),
    ("raw-images/100%25.jpg", "raw-images/100%.jpg"),
    # Decoded twice this would become "a+.jpg": the consumer must not decode the Lambda's key.
    ("raw-images/a%252B.jpg", "raw-images/a%2B.jpg"),
    ("raw-images/2026/03/IMG+0001.webp", "raw-images/2026/03/IMG 0001.webp"),
]


@pytest.fixture
def lam(moto_endpoint):
    # lambda/ is not a package; a fresh module also means a fresh client for this endpoint.
    spec = importlib.util.spec_from_file_location("lambda_handler", ROOT / "lambda" / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def queue_url(moto_endpoint, unique_name, monkeypatch):
    """The deployed shape: topic -> queue with RawMessageDelivery; SNS_TOPIC_ARN names the topic."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name=unique_name)["TopicArn"]
    url = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    monkeypatch.setenv("SNS_TOPIC_ARN", topic_arn)
    monkeypatch.delenv("RAW_PREFIX", raising=False)
    return url


def s3_event(*encoded_keys):
    template = json.loads((EVENTS / "s3-put.json").read_text())["Records"][0]
    records = []
    for key in encoded_keys:
        record = copy.deepcopy(template)
        record["s3"]["object"]["key"] = key
        records.append(record)
    return {"Records": records}


def bodies(queue_url):
    sqs = boto3.client("sqs")
    found = []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages"
    ):
        found += [m["Body"] for m in messages]
    return found


def test_what_the_lambda_publishes_is_what_the_consumer_reads(lam, queue_url):
    # Given uploads whose keys S3 URL-encoded in the event
    event = s3_event(*(encoded for encoded, _ in KEYS))
    bucket = event["Records"][0]["s3"]["bucket"]["name"]

    # When the Lambda publishes them and the consumer parses what the queue delivers
    lam.handler(event, None)
    refs = [ref for body in bodies(queue_url) for ref in parse_body(body)]

    # Then the consumer sees each object once, under its real key, with a thumbnail beside it
    assert sorted(refs, key=lambda ref: ref.key) == sorted(
        (ObjectRef(bucket, key) for _, key in KEYS), key=lambda ref: ref.key
    )
    for ref in refs:
        assert thumbnail_key(ref.key) == "thumbnails/" + ref.key.removeprefix("raw-images/")


def test_the_lambda_road_and_the_plain_s3_road_name_the_same_objects(lam, queue_url):
    # The consumer also takes S3's own notification (URL-encoded keys) straight from a queue.
    event = s3_event(*(encoded for encoded, _ in KEYS))

    lam.handler(event, None)
    via_lambda = {ref for body in bodies(queue_url) for ref in parse_body(body)}

    assert via_lambda == set(parse_body(json.dumps(event)))

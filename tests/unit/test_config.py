"""Settings: defaults, and one clear line naming a bad variable."""

import subprocess
import sys

import pytest

from imgpipe.config import ConfigError, Settings

REQUIRED = {"BUCKET_NAME": "photos", "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/q"}


def test_defaults():
    s = Settings.from_env(REQUIRED)
    assert (s.region, s.raw_prefix, s.thumb_prefix) == ("us-east-1", "raw-images/", "thumbnails/")
    assert (s.thumbnail_size, s.health_port, s.wait_time_seconds) == (256, 8080, 20)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BUCKET_NAME": ""}, "BUCKET_NAME"),
        ({"QUEUE_URL": "my-queue"}, "QUEUE_URL"),
        ({"THUMBNAIL_SIZE": "big"}, "THUMBNAIL_SIZE"),
        ({"THUMBNAIL_SIZE": "0"}, "THUMBNAIL_SIZE"),
        ({"WORKERS": "-1"}, "WORKERS"),
        ({"WAIT_TIME_SECONDS": "30"}, "WAIT_TIME_SECONDS"),
        ({"RAW_PREFIX": "raw-images"}, "RAW_PREFIX"),
        ({"THUMB_PREFIX": "raw-images/t/"}, "RAW_PREFIX"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ],
)
def test_a_bad_setting_names_its_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env({**REQUIRED, **env})


def test_the_consumer_exits_non_zero_with_one_line_for_a_bad_setting():
    env = {"PATH": "", "BUCKET_NAME": "photos", "QUEUE_URL": REQUIRED["QUEUE_URL"]}
    run = subprocess.run(
        [sys.executable, "-m", "imgpipe.consumer"],
        env={**env, "THUMBNAIL_SIZE": "huge"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "imgpipe consumer: THUMBNAIL_SIZE='huge' is not a whole number"
    ]

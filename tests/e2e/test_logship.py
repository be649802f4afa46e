"""logship: the consumer log files of the local stack into CloudWatch Logs, one stream each."""

import threading

import boto3
import pytest

from imgpipe.local import logship


@pytest.fixture
def logs(moto_endpoint):
    return boto3.client("logs")


def messages(logs, group: str, stream: str) -> list[str]:
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [e["message"] for e in events["events"]]


def test_lines_are_followed_and_the_last_partial_line_is_shipped_at_stop(logs, unique_name,
                                                                         tmp_path):
    group = f"/test/{unique_name}"
    first, second = tmp_path / "consumer-1.log", tmp_path / "consumer-2.log"
    first.write_text('{"message": "one"}\n{"message": "two"}\n{"message": "half')
    shipper = logship.Shipper(logs, group)
    tails = [logship.Tail(first), logship.Tail(second)]  # the second does not exist yet
    stop = threading.Event()
    runner = threading.Thread(target=logship.run, args=(shipper, tails, stop, 0.05))
    runner.start()
    try:
        with first.open("a") as f:
            f.write(' done"}\n')
        second.write_text("started\n")
    finally:
        stop.set()
        runner.join(10)

    assert messages(logs, group, "consumer-1") == [
        '{"message": "one"}', '{"message": "two"}', '{"message": "half done"}']
    assert messages(logs, group, "consumer-2") == ["started"]


def test_a_file_started_anew_is_read_from_its_start(logs, unique_name, tmp_path):
    group = f"/test/{unique_name}"
    path = tmp_path / "consumer-1.log"
    path.write_text("old line, long enough to be past the new file's end\n")
    tail = logship.Tail(path)
    shipper = logship.Shipper(logs, group)
    shipper.add(tail.stream, tail.read_lines())

    path.unlink()  # what local-up.sh does before it starts a consumer again
    path.write_text("new\n")
    shipper.add(tail.stream, tail.read_lines())
    assert shipper.flush()

    assert messages(logs, group, "consumer-1")[-1] == "new"


def test_batches_stay_within_the_put_log_events_limits():
    events = [{"timestamp": 1, "message": "x" * 100_000} for _ in range(20)]
    batch = logship._batch(events)
    assert len(batch) == 10  # 10 x (100,000 + 26) bytes fit in 1 MiB, 11 do not
    assert len(logship._batch([{"timestamp": 1, "message": "x"}] * 12_000)) == 10_000

"""Fixtures for the integration tests (the harness is in harness.py)."""

import subprocess
import sys
from contextlib import ExitStack

import pytest

from harness import Pipeline, consumer_thread, make_pipeline


@pytest.fixture
def pipeline(moto_endpoint, unique_name) -> Pipeline:
    return make_pipeline(unique_name)


@pytest.fixture
def running_consumer(pipeline):
    """Start consumers on threads with extra settings; all are stopped after the test."""
    with ExitStack() as stack:
        yield lambda **settings: stack.enter_context(consumer_thread(pipeline, **settings))


@pytest.fixture
def consumer_process(pipeline):
    """Start `imgpipe consumer` as a real process (JSON log on stdout); killed after the test."""
    started = []

    def start(**settings) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgpipe.consumer"],
            env=pipeline.env(**settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()

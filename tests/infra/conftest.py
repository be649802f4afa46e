"""Fixtures for the infra script tests; the helpers are in infra_harness.py."""

import uuid

import boto3
import pytest


@pytest.fixture(scope="module")
def project():
    """One project name (the prefix of every resource) per test module."""
    return f"imgpipe-it-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def aws(moto_endpoint):
    """boto3 clients on the emulator, by service name."""
    clients = {}

    def client(service: str):
        if service not in clients:
            clients[service] = boto3.client(service, region_name="us-east-1")
        return clients[service]

    return client

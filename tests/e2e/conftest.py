"""The local stack of `make up` (scripts/local-up.sh) for end-to-end tests.

Each stack gets its own RUN_DIR and free ports, so a developer's running `make up` is not
touched, and none of the developer's settings (.env, AWS_*) reach it.
"""

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
SAMPLES = ROOT / "samples"
# Below Linux's ephemeral range (32768+), so an outgoing connection cannot hold the port.
PORT_RANGE = (20000, 32000)
SCRIPT_TIMEOUT = 180


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports nobody listens on."""
    for _ in range(200):
        base = random.randrange(*PORT_RANGE)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free ports")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {k: v for k, sep, v in pairs if sep and not k.startswith("#")}


@dataclass
class LocalStack:
    run_dir: Path
    env: dict  # what the scripts are run with
    emulator_port: int
    consumer_ports: list[int]
    settings: dict = field(default_factory=dict)  # RUN_DIR/env, once up

    def script(self, name: str, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPTS / name)], env={**self.env, **extra}, cwd=self.run_dir.parent,
            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
        )

    def up(self) -> subprocess.CompletedProcess:
        result = self.script("local-up.sh")
        if result.returncode == 0:
            self.settings = read_env_file(self.run_dir / "env")
        return result

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`imgpipe ARGS` with the stack's settings, away from any ./.run/env or ./.env."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "imgpipe"), *args],
            env={**self.env, **self.settings}, cwd=self.run_dir.parent,
            capture_output=True, text=True, timeout=60,
        )

    def pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in sorted(self.run_dir.glob("*.pid"))}

    def client(self, service: str):
        return boto3.client(
            service, endpoint_url=self.settings["AWS_ENDPOINT_URL"],
            region_name=self.settings["AWS_REGION"],
            aws_access_key_id="test", aws_secret_access_key="test",
        )

    def log_text(self, name: str) -> str:
        return (self.run_dir / f"{name}.log").read_text(errors="replace")

    # Helpers for the tests, here because a conftest cannot be imported.
    alive = staticmethod(alive)
    listening = staticmethod(listening)

    @staticmethod
    def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
        """predicate()'s first truthy value; fails naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)


def make_stack(tmp_dir: Path, consumers: int = 2) -> LocalStack:
    run_dir = tmp_dir / "run"
    emulator_port = free_ports(1)
    base = free_ports(consumers)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", str(tmp_dir)),
        "LANG": "C.UTF-8",
        "RUN_DIR": str(run_dir),
        "VENV_BIN": str(Path(sys.executable).parent),
        "EMULATOR_PORT": str(emulator_port),
        "CONSUMER_BASE_PORT": str(base),
        "CONSUMERS": str(consumers),
        "ENV_FILE": os.devnull,  # not the developer's .env
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return LocalStack(run_dir, env, emulator_port, [base + i for i in range(consumers)])


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    """One stack for the module (create.sh and destroy.sh take most of a minute between them)."""
    stack = make_stack(tmp_path_factory.mktemp("stack"))
    result = stack.up()
    try:
        assert result.returncode == 0, f"local-up.sh failed:\n{result.stderr}"
        yield stack
    finally:
        stack.script("local-down.sh")  # a no-op if a test already brought it down


@pytest.fixture
def new_stack(tmp_path):
    """A stack's settings on fresh ports and RUN_DIR; not started."""
    stack = make_stack(tmp_path)
    yield stack
    stack.script("local-down.sh")

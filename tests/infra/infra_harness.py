"""Running infra/*.sh against the emulator, with stand-ins for eksctl, kubectl and docker.

The stand-ins in tests/infra/bin come first on PATH: each records its calls (and what it reads
on stdin) to the file named by STUB_LOG, and keeps its state (cluster, namespace, Secret,
applied overlays, the rendered ClusterConfig) in the folder STUB_LOG.d next to it.
"""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
STUBS = Path(__file__).resolve().parent / "bin"
VENV_BIN = ROOT / ".venv" / "bin"
SCRIPT_TIMEOUT = 240


def script_env(project: str, stub_log: Path, **settings: str) -> dict[str, str]:
    """The environment for one script run: fake credentials, the emulator, no .env file."""
    env = dict(os.environ)
    env.update(
        PATH=os.pathsep.join([str(STUBS), str(VENV_BIN), os.environ.get("PATH", "")]),
        ENV_FILE=os.devnull,
        PROJECT=project,
        STUB_LOG=str(stub_log),
    )
    env.update(settings)
    return env


def start_script(name: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(INFRA / name)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_script(process: subprocess.Popen, check: bool = True) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=SCRIPT_TIMEOUT)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{process.args[0]} exited {result.returncode}\n--- stdout\n{result.stdout}"
            f"\n--- stderr\n{result.stderr}"
        )
    return result


def run_script(name: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return finish_script(start_script(name, env), check)


def settings_from(stdout: str) -> dict[str, str]:
    """create.sh's KEY=value lines; any other line on stdout is a bug (callers capture it)."""
    lines = stdout.splitlines()
    assert all("=" in line for line in lines), stdout
    return dict(line.split("=", 1) for line in lines)


def flaky_aws(folder: Path) -> Path:
    """An `aws` that fails the first create-function the way fresh IAM roles make it fail."""
    real = VENV_BIN / "aws"
    marker = folder / "create-function-failed-once"
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "aws"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ " $* " == *" lambda create-function "* && ! -e "{marker}" ]]; then\n'
        f'  touch "{marker}"\n'
        '  echo "An error occurred (InvalidParameterValueException) when calling the'
        " CreateFunction operation: The role defined for the function cannot be assumed"
        ' by Lambda." >&2\n'
        "  exit 254\n"
        "fi\n"
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return folder

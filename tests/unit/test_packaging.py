"""The image's lock file agrees with pyproject.toml's pins, and pins everything exactly."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_lock_pins_every_package_and_matches_pyproject():
    lock = {}
    for line in (ROOT / "consumer-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line}"
            lock[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        assert lock[name.lower()] == version, f"{name}: pyproject {version}, lock {lock[name]}"

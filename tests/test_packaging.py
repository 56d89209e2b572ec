"""What the wheel holds: the product and what `demo` / `simulate-call` run, never the dev kit.

Reads the package selection from pyproject.toml and applies it as setuptools does, so moving a
test tool into `bridge/` (or dropping the simulator from the selection) fails here, not on a
user's machine."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return set(find_packages(where=str(ROOT), include=include))


def test_the_dev_kit_is_not_installed() -> None:
    packages = _packages()
    assert (ROOT / "devkit" / "fakes").is_dir()  # it exists in the checkout...
    assert not {p for p in packages if p == "devkit" or p.startswith("devkit.")}  # ...not in the wheel
    assert not {p for p in packages if p.startswith(("tests", "bench"))}


def test_what_the_commands_run_is_installed() -> None:
    packages = _packages()
    wanted = {"bridge", "bridge.simulator", "bridge.simulator.plivo", "bridge.commands", "xml_server"}
    assert wanted <= packages
    # SIPp scenarios ship as package data of bridge.simulator (the "*.xml" package-data rule)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "*.xml" in config["tool"]["setuptools"]["package-data"]["*"]
    assert list((ROOT / "bridge" / "simulator" / "scenarios").glob("*.xml"))


"""Builds guest-workloads once per session with make (the real build, -Werror included)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    return ROOT / "guest-workloads" / "bin"


def run_json(path: Path, *args: str, expect: int = 0) -> list[dict[str, Any]]:
    done = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def trials(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["type"] == "trial"]


def metric(line: dict[str, Any], name: str) -> float:
    return float(line["metrics"][name]["value"])

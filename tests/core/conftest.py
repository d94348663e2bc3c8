"""Fixtures for core tests: suites on disk and stand-in workload binaries at the process boundary."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

FAKE_FORK_DIRTY = """#!{python}
import json, os, sys, time
args = sys.argv[1:]
pages = int(args[args.index("--pages") + 1])
behaviour = os.environ.get("FAKE_BEHAVIOUR", "ok")
delay = float(os.environ.get("FAKE_DELAY", "0"))
time.sleep(delay)
if behaviour == "fail" and pages > 1000:
    print(json.dumps({{"type": "error", "workload": "fork-dirty", "reason": "layout check failed"}}))
    sys.exit(1)
if behaviour == "hang":
    time.sleep(600)
print(json.dumps({{"type": "trial", "workload": "fork-dirty", "trial": 0, "warmup": False,
                  "params": {{"pages": pages}},
                  "metrics": {{"fork_us": {{"value": pages / 100.0, "unit": "us"}}}},
                  "rusage": {{"minflt": 1}}, "clock": "CLOCK_MONOTONIC", "info": {{}}}}))
"""

SUITE = """\
name: core-test
paging: [native]
workloads:
  - name: fork
    kind: fork-dirty
    params: {{pages: {pages}}}
    trials: {trials}
    warmup: 1
timeouts: {{boot: 60s, trial: {timeout}}}
"""


@pytest.fixture()
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fork-dirty"
    script.write_text(FAKE_FORK_DIRTY.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ORCH_WORKLOADS_BIN", str(bin_dir))
    return bin_dir


def write_suite(directory: Path, *, pages: str = "[100, 2000]", trials: int = 3,
                timeout: str = "30s") -> Path:
    path = directory / "suite.yaml"
    path.write_text(SUITE.format(pages=pages, trials=trials, timeout=timeout))
    return path


@pytest.fixture()
def suite_file(tmp_path: Path) -> Path:
    return write_suite(tmp_path)


def cli_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}

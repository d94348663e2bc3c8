"""Fleet tests: the nightly wrapper's own lock per test, suites on disk, built workloads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.store import rundir

ROOT = Path(__file__).resolve().parents[2]

# fork timings (us) that compare can judge, plus a no-op: about ten seconds natively
QUICK_SUITE = """\
name: fleet-quick
paging: [native]
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: 1280}
    trials: 5
  - name: empty
    kind: noop
    trials: 3
timeouts: {boot: 60s, trial: 60s}
"""

# one trial of a minute: longer than any deadline a test gives it
LONG_SUITE = """\
name: fleet-long
paging: [native]
workloads:
  - name: dirtier
    kind: dirtier
    params: {pages: 1024, duration: 60s, interval: 250ms}
    trials: 2
    warmup: 0
timeouts: {boot: 60s, trial: 120s}
"""


@pytest.fixture(autouse=True)
def private_nightly_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lock = tmp_path / "orchestrator-nightly.lock"
    monkeypatch.setenv("ORCH_NIGHTLY_LOCK", str(lock))
    return lock


@pytest.fixture(scope="session")
def built_workloads() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    return ROOT / "guest-workloads" / "bin"


def write_suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def nightly_argv(suite: Path, results_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.fleet.nightly", str(suite),
            "--results-dir", str(results_dir), *extra]


def run_nightly(suite: Path, results_dir: Path, *extra: str,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nightly_argv(suite, results_dir, *extra), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def fake_run(root: Path, suite: str, *, status: str = "done", started: float | None = None,
             outcomes: dict[str, int] | None = None, host: str = "lab1") -> Path:
    """A run directory with only a manifest: enough for listing, baselines and retention."""
    run_dir = rundir.new_run_dir(root, suite)
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": suite, "status": status,
        "started_at": str(started if started is not None else time.time()),
        "outcomes": outcomes if outcomes is not None else {"ok": 3},
        "host": {"hostname": host}})
    return run_dir


def manifest(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / rundir.MANIFEST).read_text())
    return data

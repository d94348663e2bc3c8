"""The nightly wrapper around real native runs: lock, deadline, regression, retention, log."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode
from orchestrator.store import reader, rundir
from orchestrator.store.tables import finalize_tables
from tests.fleet.conftest import (
    LONG_SUITE,
    QUICK_SUITE,
    ROOT,
    manifest,
    nightly_argv,
    run_nightly,
    write_suite,
)

pytestmark = [pytest.mark.integration]


def _wait_for_run_dir(root: Path, timeout: float = 120) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        runs = reader.list_runs(root, hosts=False)
        if runs and runs[-1].get("host_conditions") is not None:
            return Path(runs[-1]["path"])
        time.sleep(0.2)
    raise AssertionError(f"no run started under {root}")


def test_a_second_nightly_is_refused_while_the_first_holds_the_lock(
        built_workloads: Path, tmp_path: Path, private_nightly_lock: Path) -> None:
    suite = write_suite(tmp_path, LONG_SUITE)
    first = subprocess.Popen(nightly_argv(suite, tmp_path / "res"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        run_dir = _wait_for_run_dir(tmp_path / "res")
        second = run_nightly(suite, tmp_path / "res", timeout=120)
        assert second.returncode == ExitCode.LOCKED
        assert second.stdout == ""
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("nightly: another nightly run holds the lock")
        assert str(private_nightly_lock) in lines[0] and f"pid {first.pid}" in lines[0]
        # the first one is stopped by SIGTERM like by its deadline: the run is interrupted
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == ExitCode.INTERRUPTED, err
    assert manifest(run_dir)["status"] == "interrupted"
    # one run only: the refused nightly never started one
    assert len(reader.list_runs(tmp_path / "res")) == 1


def test_the_deadline_stops_the_run_and_marks_it_interrupted(
        built_workloads: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, LONG_SUITE)
    log = tmp_path / "logs" / "nightly.log"
    began = time.monotonic()
    done = run_nightly(suite, tmp_path / "res", "--deadline", "20s", "--grace", "60s",
                       "--log", str(log), timeout=300)
    took = time.monotonic() - began
    assert done.returncode == ExitCode.INTERRUPTED, done.stderr
    assert done.returncode != ExitCode.REGRESSION
    assert "deadline of 20s reached" in done.stderr
    assert "marked interrupted" in done.stderr and "Traceback" not in done.stderr
    assert took < 60  # not the two minutes the suite needs
    [run] = reader.list_runs(tmp_path / "res")
    assert run["status"] == "interrupted"
    text = log.read_text()
    assert "sending SIGTERM" in text and "run: orchestrate: interrupted" in text
    assert "nightly exits 130 (interrupted)" in text
    assert "\x1b[" not in text  # no colour, no cursor movement


def _slow_down_baseline(run_dir: Path, factor: float) -> None:
    """Make the baseline look `factor` times faster (the new run then looks slower)."""
    journal = run_dir / rundir.JOURNAL
    lines = []
    for line in journal.read_text().splitlines():
        rec = json.loads(line)
        rec["metrics"] = [[n, v / factor if u == "us" else v, u] for n, v, u in rec["metrics"]]
        lines.append(json.dumps(rec))
    journal.write_text("\n".join(lines) + "\n")
    finalize_tables(run_dir)


def test_a_regression_against_the_last_good_run_exits_4_and_retention_applies(
        built_workloads: Path, tmp_path: Path) -> None:
    suite, res = write_suite(tmp_path, QUICK_SUITE), tmp_path / "res"
    first = run_nightly(suite, res, "--keep", "1")
    assert first.returncode == ExitCode.OK, first.stderr
    assert "nothing to compare with" in first.stdout
    [baseline] = [Path(r["path"]) for r in reader.list_runs(res)]
    _slow_down_baseline(baseline, 10.0)

    second = run_nightly(suite, res, "--keep", "1")
    assert second.returncode == ExitCode.REGRESSION, second.stdout + second.stderr
    assert f"compare {baseline.name} -> " in second.stderr and "REGRESSION" in second.stderr
    # keep 1, but the baseline is never deleted: both runs are there
    assert len(reader.list_runs(res)) == 2

    third = run_nightly(suite, res, "--keep", "1")
    # the regressed run was good (exit 0 of its own), so it is the new baseline; the old
    # baseline is now beyond retention
    assert third.returncode in (ExitCode.OK, ExitCode.REGRESSION), third.stderr
    left = [Path(r["path"]) for r in reader.list_runs(res)]
    assert baseline not in left and len(left) == 2
    assert "retention (keep 1): deleted " + baseline.name in (res / "nightly.log").read_text()

"""compare flags only significant changes beyond the threshold, in the right direction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from orchestrator.analysis.compare import compare_tables
from orchestrator.store import reader
from tests.report.conftest import make_run, noisy


def verdicts(base: Path, new: Path) -> dict[tuple[str, str], str]:
    changes = compare_tables(reader.load(base).trials, reader.load(new).trials, ["pages"])
    return {(c.cell_id, c.metric): c.verdict for c in changes}


def test_identical_runs_flag_nothing(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(1))
    assert set(verdicts(a, b).values()) == {"unchanged"}


def test_a_twenty_percent_slowdown_is_a_regression(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.2))
    found = verdicts(a, b)
    assert found[("tdp-c-large", "fork_us")] == "regression"
    assert found[("tdp-c-small", "fork_us")] == "unchanged"
    assert found[("tdp-c-large", "rusage_minflt")] == "unchanged"  # counts never regress


def test_a_speedup_is_an_improvement_not_a_regression(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(3, slow_cell="c-small", factor=0.7))
    assert verdicts(a, b)[("tdp-c-small", "fork_us")] == "improvement"


def test_noisy_but_equal_medians_are_not_flagged(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(4, sigma=0.25))
    b = make_run(tmp_path, "b", noisy(5, sigma=0.25))
    assert "regression" not in verdicts(a, b).values()


def test_small_real_change_below_threshold_is_not_flagged(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1, sigma=0.001))
    b = make_run(tmp_path, "b", noisy(1, sigma=0.001, slow_cell="c-large", factor=1.02))
    assert verdicts(a, b)[("tdp-c-large", "fork_us")] == "unchanged"


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.2))
    cli = [sys.executable, "-m", "orchestrator.cli", "compare"]
    same = subprocess.run([*cli, str(a), str(a)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "0 regression(s)" in same.stdout
    slower = subprocess.run([*cli, str(a), str(b), "--json"], capture_output=True, text=True,
                            timeout=120)
    assert slower.returncode == 4
    data = json.loads(slower.stdout)
    assert data["regressions"] == 1
    flagged = [c for c in data["changes"] if c["verdict"] == "regression"][0]
    assert np.isclose(flagged["ratio"], 1.2, atol=0.05) and flagged["ci_low"] > 1
    bad = subprocess.run([*cli, str(a), str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "no such run" in bad.stderr

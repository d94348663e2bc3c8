"""The A/A test: the same suite run back to back on this machine compares as unchanged, and a
20% slowdown injected into one cell is still flagged (#15).

Ten real native runs of one small suite: the first nine are the host's history (compare reads
its run-to-run noise from them), the ninth is the base, the tenth the new run. The slowdown
is injected into a copy of the new run's journal (its values of one cell x1.2): a real workload
cannot be slowed by exactly 20% on demand, and the statistics see exactly what they would see.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.bench_sensitivity import slowed

pytestmark = pytest.mark.slow

SUITE = """\
name: aa-native
description: an A/A pair's suite, natively
paging: [native]
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: [1280, 32000]}
    trials: 10
    warmup: 2
  - name: mprotect
    kind: mprotect
    params: {pages: 4096, range_pages: [16, 0], iterations: 50}
    trials: 10
    warmup: 2
"""
RUNS = 10
TIMES = ("us", "ns")


def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("aa")
    suite = root / "suite.yaml"
    suite.write_text(SUITE)
    for _ in range(RUNS):
        done = orchestrate("run", str(suite), "--results-dir", str(root / "results"))
        assert done.returncode == 0, done.stderr
    return sorted(p for p in (root / "results").iterdir() if p.is_dir() and not p.is_symlink())


def compare(base: Path, new: Path) -> tuple[int, dict[str, Any]]:
    done = orchestrate("compare", str(base), str(new), "--json", "--results-dir",
                       str(base.parent))
    return done.returncode, json.loads(done.stdout)


def flagged(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in data["changes"] if c["verdict"] in ("regression", "improvement")]


def test_an_a_a_pair_flags_no_cell(runs: list[Path]) -> None:
    code, data = compare(runs[-2], runs[-1])
    assert flagged(data) == [], [{k: c[k] for k in ("workload", "params", "metric", "ratio",
                                                    "p_value", "p_basis", "q_value", "noise")}
                                 for c in flagged(data)]
    assert code == 0
    timed = [c for c in data["changes"] if c["unit"] in TIMES]
    assert timed and all(c["noise"] is not None for c in timed)  # every cell had history


def test_a_twenty_percent_slowdown_of_one_cell_is_flagged(runs: list[Path]) -> None:
    _, data = compare(runs[-2], runs[-1])
    timed = [c for c in data["changes"] if c["unit"] in TIMES and c["noise"] is not None]
    steady = min(timed, key=lambda c: c["noise"])
    assert steady["noise"] < 0.15, f"no cell is steady enough here to show a 20% step: {steady}"
    slowed_run = slowed(runs[-1], runs[-1].parent, steady["cell_id"], steady["metric"], 1.2)
    code, after = compare(runs[-2], slowed_run)
    assert code == 4
    [only] = flagged(after)
    assert (only["cell_id"], only["metric"], only["verdict"]) == \
        (steady["cell_id"], steady["metric"], "regression")
    assert only["ratio"] == pytest.approx(1.2 * steady["ratio"], rel=1e-6)
    assert only["ci_low"] > 1

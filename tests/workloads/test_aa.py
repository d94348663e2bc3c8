"""The A/A test (#15): runs of an unchanged suite on this machine compare as unchanged, and a
slowdown injected into one cell is flagged, and only it.

Two sources of runs:
- **Recorded**: tests/fixtures/aa-native holds 30 real native runs of SUITE below, back to back
  on one of these machines (their manifest and journal, as written). Every adjacent pair is
  compared with the runs before it as the host's history, as `compare` does after a nightly.
  Deterministic, so it states the false-alarm rate and the smallest step caught as facts about
  the statistics, not about how busy the CI machine is today.
- **Live**: a few real runs now, through the CLI, so the whole path (run, journal, history,
  compare --json) is exercised on real numbers; a step well beyond the cell's measured noise
  must be flagged whatever the machine's load.

A real workload cannot be slowed by an exact factor on demand, so slowdowns are injected into a
copy of the new run's journal (bench/bench_sensitivity.py `slowed`): the statistics see exactly
what they would see. On a shared 2-core CI machine a neighbour's load can slow a whole run by
20-25% (seen: every cell of one live run), which is a real difference between runs that no
per-pair test can tell from a regression; #20's change points and confirmation reruns are for
that. So no live assertion depends on the machine being quiet.
"""

from __future__ import annotations

import json
import shutil
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
RECORDED = Path(__file__).parent.parent / "fixtures" / "aa-native"
LIVE_RUNS = 4  # three earlier runs: the fewest that give compare a host history
TIMES = ("us", "ns")
FALSE_ALARM_BOUND = 0.05  # compare's FDR level: an A/A series may not flag more than that


def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args],
                          capture_output=True, text=True, timeout=600)


def compare(base: Path, new: Path, root: Path) -> tuple[int, dict[str, Any]]:
    done = orchestrate("compare", str(base), str(new), "--json", "--results-dir", str(root))
    assert done.returncode in (0, 4), done.stderr
    return done.returncode, json.loads(done.stdout)


def flagged(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in data["changes"] if c["verdict"] in ("regression", "improvement")]


def timed(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in data["changes"] if c["unit"] in TIMES]


def step_beyond_noise(noise: float) -> float:
    """20%, or three times a 99% run-to-run noise half-width (on the log scale) if larger."""
    return max(1.2, (1 + noise) ** 3)


def test_a_step_beyond_the_noise_is_at_least_twenty_percent() -> None:
    assert step_beyond_noise(0.02) == 1.2
    assert step_beyond_noise(0.25) == pytest.approx(1.953125)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The recorded runs in a results root of their own (compare may write beside them)."""
    root = tmp_path_factory.mktemp("recorded") / "results"
    shutil.copytree(RECORDED, root)
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_the_recorded_a_a_series_flags_at_most_its_fdr_level(recorded: list[Path]) -> None:
    assert len(recorded) == 30
    tested, false_alarms = 0, []
    for base, new in zip(recorded, recorded[1:], strict=False):
        _, data = compare(base, new, base.parent)  # history: the runs up to base
        tested += len(timed(data))
        false_alarms += [(new.name, c["workload"], c["params"], c["metric"], c["ratio"])
                         for c in flagged(data)]
    assert tested >= 29 * 8  # 4 cells, at least 2 timed metrics each
    assert len(false_alarms) / tested <= FALSE_ALARM_BOUND, false_alarms


def test_a_step_beyond_the_noise_of_the_steadiest_recorded_cell_is_the_only_flag(
        recorded: list[Path]) -> None:
    base, new = recorded[-2], recorded[-1]
    _, data = compare(base, new, base.parent)
    assert flagged(data) == []
    steady = min((c for c in timed(data) if c["noise"] is not None), key=lambda c: c["noise"])
    factor = step_beyond_noise(steady["noise"])
    copy = slowed(new, new.parent.parent, steady["cell_id"], steady["metric"], factor)
    code, after = compare(base, copy, base.parent)
    assert code == 4
    [only] = flagged(after)
    assert (only["cell_id"], only["metric"], only["verdict"]) == \
        (steady["cell_id"], steady["metric"], "regression")
    assert only["ratio"] == pytest.approx(factor * steady["ratio"], rel=1e-6)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path) -> list[Path]:
    root = tmp_path_factory.mktemp("aa")
    suite = root / "suite.yaml"
    suite.write_text(SUITE)
    for _ in range(LIVE_RUNS):
        done = orchestrate("run", str(suite), "--results-dir", str(root / "results"))
        assert done.returncode == 0, done.stderr
    return sorted(p for p in (root / "results").iterdir() if p.is_dir() and not p.is_symlink())


def test_live_runs_compare_with_their_history_and_a_step_beyond_noise_is_caught(
        live: list[Path]) -> None:
    base, new = live[-2], live[-1]
    _, data = compare(base, new, base.parent)
    cells = timed(data)
    assert len(cells) >= 8 and all(c["noise"] is not None for c in cells), cells
    for c in flagged(data):  # whatever the machine did, a flag lies beyond the host's noise
        assert abs(c["ratio"] - 1) > 0 and c["q_value"] < 0.05
    steady = min(cells, key=lambda c: c["noise"])
    factor = step_beyond_noise(steady["noise"])
    copy = slowed(new, new.parent.parent, steady["cell_id"], steady["metric"], factor)
    code, after = compare(base, copy, base.parent)
    assert code == 4
    hit = {(c["cell_id"], c["metric"]): c for c in flagged(after)}
    assert hit[(steady["cell_id"], steady["metric"])]["verdict"] == "regression"


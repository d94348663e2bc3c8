"""The statistics every reader shares: which way a metric gets worse (compare and history ask
the same function), the per-cell summary, and the notebook's load_runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.analysis.compare import Change, _verdict
from orchestrator.analysis.history import Step, is_regression
from orchestrator.analysis.stats import higher_is_worse, load_runs, summary
from orchestrator.store import reader, rundir
from tests.report.conftest import make_run, noisy

TIMES = ["us", "ns", "ms", "s"]
RATES = ["pages/s", "ops/s", "MiB/s"]
COUNTS = ["count", "MiB", ""]


@pytest.mark.parametrize(("unit", "worse"), [*((u, True) for u in TIMES),
                                             *((u, False) for u in RATES),
                                             *((u, None) for u in COUNTS)])
def test_which_way_is_worse_comes_from_the_unit(unit: str, worse: bool | None) -> None:
    assert higher_is_worse(unit) is worse


@pytest.mark.parametrize("unit", TIMES + RATES + COUNTS)
@pytest.mark.parametrize("ratio", [0.8, 1.25])
def test_compare_and_history_agree_on_what_a_regression_is(unit: str, ratio: float) -> None:
    step = Step("c", "m", unit, "n05", before=100.0, after=100.0 * ratio)
    change = Change("c", "tdp", "g", "w", "m", unit, "", 12, 12, 100.0, 100.0 * ratio, ratio,
                    ratio - 0.05, ratio + 0.05, p_value=0.001, p_basis="trials", q_value=0.001,
                    noise=float("nan"), verdict="")
    compared = _verdict(change, threshold=0.05)
    assert is_regression(step) == (compared == "regression")
    slower = (ratio > 1) == (unit in TIMES) and unit not in COUNTS
    assert is_regression(step) == slower  # a time up or a rate down; a count never


def test_the_summary_gives_range_quartiles_and_ci_per_point(tmp_path: Path) -> None:
    trials = reader.load(make_run(tmp_path, "a", noisy(1), trials=9)).trials
    table = summary(trials, ["pages"])
    fork = table[(table["metric"] == "fork_us") & (table["pages"] == 1280)].iloc[0]
    values = trials[(trials["metric"] == "fork_us") & (trials["pages"] == 1280)]["value"]
    assert fork["n"] == 9 and fork["median"] == values.median()
    assert (fork["min"], fork["max"]) == (values.min(), values.max())
    assert fork["min"] <= fork["q1"] <= fork["median"] <= fork["q3"] <= fork["max"]
    assert fork["ci_low"] <= fork["median"] <= fork["ci_high"]


def test_load_runs_takes_one_run_or_many(tmp_path: Path) -> None:
    first = make_run(tmp_path, "a", noisy(1), trials=3)
    second = make_run(tmp_path, "b", noisy(2), trials=3)
    rundir.update_latest(tmp_path, second)
    one = load_runs(str(tmp_path / "latest"))  # a string is one path, not its characters
    assert set(one["run_id"]) == {rundir.read_manifest(second)["run_id"]}
    assert len(load_runs(first)) == len(one)
    both = load_runs([first, str(second)])
    assert both["run_id"].nunique() == 2 and len(both) == 2 * len(one)
    assert load_runs([]).empty

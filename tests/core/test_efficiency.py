"""Where a run's wall time went (`orchestrate results`): the workload, the first boot of each
guest in each mode with its mode switch, each trial's exec cost, and the rest;
efficiency = (workload + setup) / wall."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.analysis.efficiency import budget_line, time_budget
from orchestrator.analysis.summary import print_summary, run_json
from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.store import reader, rundir
from orchestrator.store.journal import Journal
from orchestrator.store.tables import finalize_tables

T0 = 1.7e9
START = datetime.fromtimestamp(T0, UTC).isoformat()


def rows(*trials: tuple[str, str, float, float]) -> pd.DataFrame:
    """(mode, guest, start offset s, duration s) per trial; two metric rows each, as in a
    real trials table (one row per metric)."""
    out = []
    for i, (mode, guest, at, took) in enumerate(trials):
        for metric in ("a", "b"):
            out.append({"cell_id": f"c{i}", "trial": 0, "attempt": 1, "metric": metric,
                        "paging_requested": mode, "paging_mode": mode, "guest": guest, "duration_s": took,
                        "started_at": pd.Timestamp(T0 + at, unit="s", tz="UTC")})
    return pd.DataFrame(out)


def manifest(ended: float | None, **guests: float) -> dict[str, object]:
    """guests: "MODE_GUEST"=its empty trial's seconds."""
    out: dict[str, object] = {"started_at": START, "guests": {
        k.replace("_", "/"): {"empty_trial_s": v} for k, v in guests.items()}}
    if ended is not None:
        out["ended_at"] = datetime.fromtimestamp(T0 + ended, UTC).isoformat()
    return out


def test_the_gap_before_each_guests_first_trial_in_a_mode_is_setup() -> None:
    trials = rows(("tdp", "g", 10, 1), ("tdp", "g", 11, 1),   # 10 s to switch and boot
                  ("tdp", "h", 20, 1),                       # 8 s to boot h
                  ("tdp", "h", 25, 1),                       # 4 s lost mid-point: other
                  ("shadow", "g", 40, 2))                    # 14 s to switch and boot
    budget = time_budget(trials, manifest(50))
    assert budget is not None
    assert budget["wall_s"] == pytest.approx(50)
    assert budget["trials"] == 5  # trials, not metric rows
    assert budget["workload_s"] == pytest.approx(6)  # no exec cost measured: all workload
    assert budget["exec_s"] == 0 and budget["exec_unmeasured"] == 5
    assert "per-trial exec not measured" in budget_line(budget)  # unknown is not 0.0 s
    assert budget["setup_s"] == pytest.approx(10 + 8 + 14)
    assert budget["other_s"] == pytest.approx(50 - 6 - 32)
    assert budget["efficiency"] == pytest.approx(38 / 50)
    assert budget["trial_median_s"] == pytest.approx(1)


def test_each_guests_empty_trial_is_exec_cost_not_workload() -> None:
    trials = rows(("tdp", "g", 10, 0.5), ("tdp", "g", 11, 0.5), ("tdp", "h", 12, 0.01),
                  ("native", "host", 13, 0.5))
    budget = time_budget(trials, manifest(20, tdp_g=0.1, tdp_h=0.2))
    assert budget is not None
    assert budget["exec_s"] == pytest.approx(0.1 + 0.1 + 0.01)  # never more than the trial
    assert budget["exec_unmeasured"] == 0  # the native trial runs without SSH
    assert budget["workload_s"] == pytest.approx(1.51 - 0.21)
    assert budget["efficiency"] == pytest.approx((1.3 + budget["setup_s"]) / 20)


def test_a_run_without_an_end_is_measured_to_its_last_trial() -> None:
    budget = time_budget(rows(("tdp", "g", 2, 1), ("tdp", "g", 3, 1)), manifest(None))
    assert budget is not None
    assert budget["wall_s"] == pytest.approx(4)
    assert budget["efficiency"] == pytest.approx(1.0)


def test_no_trials_or_no_start_gives_no_budget() -> None:
    assert time_budget(rows(), manifest(5)) is None
    assert time_budget(rows(("tdp", "g", 2, 1)), {}) is None


def test_the_line_says_the_efficiency_first() -> None:
    budget = time_budget(rows(("tdp", "g", 10, 0.002), ("tdp", "g", 11, 0.002)), manifest(20))
    assert budget is not None
    line = budget_line(budget)
    assert line.startswith("efficiency 50% of 20.0 s wall: workload ")
    assert "first boots and mode switches 10.0 s (50%)" in line
    assert "(2 trials, median trial 2.0 ms)" in line


def test_results_json_and_text_carry_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    run_dir = rundir.new_run_dir(tmp_path, "s")
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "s", "status": "done", "started_at": START,
        "ended_at": datetime.fromtimestamp(T0 + 30, UTC).isoformat(), "param_columns": {}})
    with Journal(run_dir) as journal:
        for trial in range(3):
            journal.append(TrialRecord(
                cell_id="c1", trial=trial, warmup=False, paging_requested="tdp",
                paging_mode="tdp", accel="kvm", guest="g", workload="noop", kind="noop",
                params={}, outcome=Outcome.OK, started_at=T0 + 20 + trial, duration_s=0.5,
                metrics=(Metric("noop_ns", 80.0, "ns"),)))
    finalize_tables(run_dir)
    tables = reader.load(run_dir, tmp_path, quiet=True)
    budget = run_json(tables)["time"]
    assert budget["setup_s"] == pytest.approx(20)
    assert budget["efficiency"] == pytest.approx(21.5 / 30)
    assert budget["exec_s"] == 0  # the run recorded no guest facts
    print_summary(tables)
    assert "efficiency 72% of 30.0 s wall" in capsys.readouterr().out


def test_guests_without_a_measured_empty_trial_are_named_beside_those_with_one() -> None:
    trials = rows(("tdp", "g", 10, 0.5), ("tdp", "h", 11, 0.5), ("tdp", "h", 12, 0.5))
    budget = time_budget(trials, manifest(20, tdp_g=0.1))
    assert budget is not None
    assert budget["exec_s"] == pytest.approx(0.1) and budget["exec_unmeasured"] == 2
    assert "per-trial exec 0.1 s (0%), not measured for 2 guest trials" in budget_line(budget)

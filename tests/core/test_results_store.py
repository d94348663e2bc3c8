"""The results store: torn journal lines, attempts, streamed tables, units."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.store import rundir
from orchestrator.store.rundir import EventCount, Metric, Outcome, TrialRecord
from orchestrator.suite.units import format_size, parse_duration, parse_size


def record(trial: int, *, attempt: int = 1, outcome: Outcome = Outcome.OK,
           metrics: tuple[Metric, ...] = (Metric("fork_us", 1.5, "us"),)) -> TrialRecord:
    return TrialRecord(cell_id="c1", trial=trial, warmup=trial == 0, paging_requested="tdp",
                       paging_mode="tcg", accel="tcg", guest="g", workload="w",
                       kind="fork-dirty", params={"pages": 10}, outcome=outcome,
                       metrics=metrics, started_at=1.7e9, attempt=attempt,
                       events=(EventCount("host", "kvm:kvm_exit", 5.0),
                               EventCount("host", "kvmmmu:nope", None, False)))


def make_run(tmp_path: Path) -> Path:
    run_dir = rundir.new_run_dir(tmp_path, "s")
    rundir.write_json_atomic(run_dir / rundir.MANIFEST, {
        "run_id": run_dir.name, "suite_name": "s", "git_rev": "abc",
        "host": {"hostname": "lab1"}, "param_columns": {"pages": "int"}})
    return run_dir


def test_torn_last_line_is_skipped_and_counted_by_readers(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with rundir.Journal(run_dir) as journal:
        journal.append(record(0))
        journal.append(record(1))
    with (run_dir / rundir.JOURNAL).open("a") as fh:
        fh.write('{"cell_id": "c1", "tri')  # a crash in the middle of a write
    journal_bytes = (run_dir / rundir.JOURNAL).read_bytes()
    assert [r["trial"] for r in rundir.read_journal(run_dir)] == [0, 1]
    tables = rundir.load(run_dir)
    assert list(tables.trials["trial"]) == [0, 1]
    assert tables.unreadable == 1 and tables.problems[0].line == 3
    assert (run_dir / rundir.JOURNAL).read_bytes() == journal_bytes  # readers never repair


def test_latest_attempt_wins_and_rows_carry_provenance(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with rundir.Journal(run_dir) as journal:
        journal.append(record(1, outcome=Outcome.ERROR, metrics=()))
        journal.append(record(1, attempt=2))
    trials = rundir.load(run_dir).trials
    assert len(trials) == 1
    row = trials.iloc[0]
    assert (row["attempt"], row["outcome"], row["host"], row["git_rev"]) == (2, "ok", "lab1", "abc")
    assert (row["paging_mode"], row["accel"], row["pages"]) == ("tcg", "tcg", 10)


def test_a_trial_without_metrics_still_has_a_row(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with rundir.Journal(run_dir) as journal:
        journal.append(record(3, outcome=Outcome.SKIPPED, metrics=()))
    trials = rundir.load(run_dir).trials
    assert len(trials) == 1 and trials.iloc[0]["metric"] == "" and math.isnan(trials.iloc[0]["value"])


def test_events_unavailable_is_not_zero(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with rundir.Journal(run_dir) as journal:
        journal.append(record(1))
    events = rundir.load(run_dir).events
    missing = events[events["event"] == "kvmmmu:nope"].iloc[0]
    assert not missing["available"] and math.isnan(missing["count"])
    assert events[events["event"] == "kvm:kvm_exit"].iloc[0]["count"] == 5.0


def test_tables_are_streamed_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rundir, "BATCH", 7)
    run_dir = make_run(tmp_path)
    with rundir.Journal(run_dir) as journal:
        for i in range(50):
            journal.append(record(i))
    rundir.finalize_tables(run_dir)
    assert len(rundir.load(run_dir).trials) == 50


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no such run"):
        rundir.load(tmp_path)


def test_sizes_and_durations() -> None:
    assert parse_size("2GiB") == 2 << 30 and parse_size("4096") == 4096
    assert format_size(2 << 30) == "2GiB" and format_size(1000) == "1000B"
    for bad in ("2GB", "2 gb", "1.5GiB", "two", "5XB"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_duration("250ms") == 0.25 and parse_duration("2m") == 120.0
    for bad_duration in ("300", "0s", "fast"):
        with pytest.raises(ValueError):
            parse_duration(bad_duration)


def test_the_readme_recipe_reads_through_the_public_face(tmp_path: Path) -> None:
    """`from orchestrator import results; results.load(...)`: the README's pandas recipe."""
    from orchestrator import results

    run_dir = make_run(tmp_path)
    with rundir.Journal(run_dir) as journal:
        journal.append(record(0))
        journal.append(record(1))
    rundir.update_latest(tmp_path, run_dir)
    run = results.load(tmp_path / "latest")
    assert isinstance(run, results.RunTables)
    fork = run.trials.query("metric == 'fork_us' and not warmup and outcome == 'ok'")
    assert list(fork["trial"]) == [1]
    assert [r["path"] for r in results.list_runs(tmp_path)] == [run_dir]
    assert set(results.__all__) <= set(dir(rundir))

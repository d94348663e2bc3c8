"""The results store: torn journal lines, attempts, streamed tables, the manifest's one
writer, read-only loading, units."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from orchestrator.model import EventCount, Metric, Outcome, TrialRecord
from orchestrator.store import reader, rundir, tables
from orchestrator.store.journal import Journal, read_journal
from orchestrator.store.tables import finalize_tables
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
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "s", "git_rev": "abc",
        "host": {"hostname": "lab1"}, "param_columns": {"pages": "int"}})
    return run_dir


def test_torn_last_line_is_skipped_and_counted_by_readers(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with Journal(run_dir) as journal:
        journal.append(record(0))
        journal.append(record(1))
    with (run_dir / rundir.JOURNAL).open("a") as fh:
        fh.write('{"cell_id": "c1", "tri')  # a crash in the middle of a write
    journal_bytes = (run_dir / rundir.JOURNAL).read_bytes()
    assert [r["trial"] for r in read_journal(run_dir)] == [0, 1]
    tables = reader.load(run_dir)
    assert list(tables.trials["trial"]) == [0, 1]
    assert tables.unreadable == 1 and tables.problems[0].line == 3
    assert (run_dir / rundir.JOURNAL).read_bytes() == journal_bytes  # readers never repair


def test_latest_attempt_wins_and_rows_carry_provenance(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with Journal(run_dir) as journal:
        journal.append(record(1, outcome=Outcome.ERROR, metrics=()))
        journal.append(record(1, attempt=2))
    trials = reader.load(run_dir).trials
    assert len(trials) == 1
    row = trials.iloc[0]
    assert (row["attempt"], row["outcome"], row["host"], row["git_rev"]) == (2, "ok", "lab1", "abc")
    assert (row["paging_mode"], row["accel"], row["pages"]) == ("tcg", "tcg", 10)


def test_a_trial_without_metrics_still_has_a_row(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with Journal(run_dir) as journal:
        journal.append(record(3, outcome=Outcome.SKIPPED, metrics=()))
    trials = reader.load(run_dir).trials
    assert len(trials) == 1 and trials.iloc[0]["metric"] == "" and math.isnan(trials.iloc[0]["value"])


def test_events_unavailable_is_not_zero(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with Journal(run_dir) as journal:
        journal.append(record(1))
    events = reader.load(run_dir).events
    missing = events[events["event"] == "kvmmmu:nope"].iloc[0]
    assert not missing["available"] and math.isnan(missing["count"])
    assert events[events["event"] == "kvm:kvm_exit"].iloc[0]["count"] == 5.0


def test_tables_are_streamed_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "BATCH", 7)
    run_dir = make_run(tmp_path)
    with Journal(run_dir) as journal:
        for i in range(50):
            journal.append(record(i))
    finalize_tables(run_dir)
    assert len(reader.load(run_dir).trials) == 50


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no such run"):
        reader.load(tmp_path)


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
    with Journal(run_dir) as journal:
        journal.append(record(0))
        journal.append(record(1))
    rundir.update_latest(tmp_path, run_dir)
    run = results.load(tmp_path / "latest")
    assert isinstance(run, results.RunTables)
    fork = run.trials.query("metric == 'fork_us' and not warmup and outcome == 'ok'")
    assert list(fork["trial"]) == [1]
    assert [r["path"] for r in results.list_runs(tmp_path)] == [run_dir]
    assert (results.load, results.RunTables, results.Outcome) == \
        (reader.load, reader.RunTables, Outcome)  # the store's own, handed on


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run directory: its bytes and modification time."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_loading_a_stale_run_builds_its_tables_in_memory_and_writes_nothing(
        tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with Journal(run_dir) as journal:
        journal.append(record(0))
    finalize_tables(run_dir)
    with Journal(run_dir) as journal:  # the run went on after its tables were written
        journal.append(record(1))
    with (run_dir / rundir.JOURNAL).open("a") as fh:
        fh.write('{"cell_id": "c1"')  # and was killed mid-write
    later = (run_dir / rundir.TRIALS).stat().st_mtime_ns + 10**9
    os.utime(run_dir / rundir.JOURNAL, ns=(later, later))
    before = snapshot(run_dir)
    run = reader.load(run_dir)
    assert list(run.trials["trial"]) == [0, 1] and run.unreadable == 1
    assert snapshot(run_dir) == before  # no tables written, no torn tail repaired


def test_update_manifest_is_read_change_write(tmp_path: Path) -> None:
    run = rundir.RunDir(make_run(tmp_path))
    written = run.update_manifest(lambda m: m.setdefault("guests", {}).update(g={"cpus": 2}),
                                  status="done")
    assert run.read_manifest() == written
    assert (written["status"], written["guests"], written["suite_name"]) == \
        ("done", {"g": {"cpus": 2}}, "s")
    assert sorted(p.name for p in run.path.iterdir()) == [rundir.LOGS, rundir.MANIFEST]


def test_update_manifest_leaves_an_unchanged_manifest_alone(tmp_path: Path) -> None:
    run = rundir.RunDir(make_run(tmp_path))
    inode = run.manifest.stat().st_ino
    rundir.mark_unfinished(run.path, "interrupted")  # no status: not a running run
    run.update_manifest(suite_name="s")
    assert run.manifest.stat().st_ino == inode


def test_mark_unfinished_changes_only_a_running_run(tmp_path: Path) -> None:
    run = rundir.RunDir(make_run(tmp_path))
    run.update_manifest(status="running")
    rundir.mark_unfinished(run.path, "interrupted", interrupted_by="SIGTERM")
    rundir.mark_unfinished(run.path, "error", error="later")
    manifest = run.read_manifest()
    assert (manifest["status"], manifest["interrupted_by"]) == ("interrupted", "SIGTERM")
    assert "error" not in manifest


def test_a_manifest_is_created_once(tmp_path: Path) -> None:
    run = rundir.RunDir(make_run(tmp_path))
    with pytest.raises(FileExistsError):
        run.create_manifest({"run_id": "other", "suite_name": "s"})
    assert run.read_manifest()["run_id"] == run.path.name

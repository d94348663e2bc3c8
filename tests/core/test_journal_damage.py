"""A damaged journal: a torn tail is repaired by the writer only, every unreadable line is
reported with its number by every reader, and reading never changes a run directory."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.store import reader, rundir
from orchestrator.store.journal import Journal, read_journal, scan_journal
from orchestrator.store.tables import finalize_tables
from tests.core.conftest import cli_env

CLI = [sys.executable, "-m", "orchestrator.cli"]


def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180,
                          env=cli_env({}))


def record(trial: int, pages: object = 10) -> TrialRecord:
    return TrialRecord(cell_id="c1", trial=trial, warmup=False, paging_requested="tdp",
                       paging_mode="tdp", accel="kvm", guest="g", workload="fork",
                       kind="fork-dirty", params={"pages": pages}, outcome=Outcome.OK,
                       metrics=(Metric("fork_us", 1.5 + trial, "us"),), started_at=1.7e9)


def make_run(root: Path, trials: int = 3, name: str = "s") -> Path:
    run_dir = rundir.new_run_dir(root, name)
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": name, "git_rev": "abc", "status": "done",
        "host": {"hostname": "lab1"}, "param_columns": {"pages": "int"},
        "plan": {"trials": trials}})
    with Journal(run_dir) as journal:
        for trial in range(trials):
            journal.append(record(trial))
    return run_dir


def journal_lines(run_dir: Path) -> list[str]:
    return (run_dir / rundir.JOURNAL).read_text().splitlines(keepends=True)


def rewrite(run_dir: Path, lines: list[str]) -> None:
    (run_dir / rundir.JOURNAL).write_text("".join(lines))


def snapshot(run_dir: Path) -> dict[str, tuple[int, int, str]]:
    """Every name, size, mtime and content under the run directory (and its own mtime)."""
    seen = {".": (0, run_dir.stat().st_mtime_ns, "")}
    for path in sorted(run_dir.rglob("*")):
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        seen[str(path.relative_to(run_dir))] = (st.st_size, st.st_mtime_ns, digest)
    return seen


def make_stale(run_dir: Path) -> None:
    """The journal newer than the tables (whatever the file system's timestamp grain)."""
    tables = (run_dir / rundir.TRIALS).stat().st_mtime_ns
    os.utime(run_dir / rundir.JOURNAL, ns=(tables + 10**10, tables + 10**10))


# ---- the writer repairs a torn tail -------------------------------------------------------


def test_a_torn_tail_is_moved_aside_when_the_journal_is_reopened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = make_run(tmp_path, trials=2)
    fragment = record(2).to_json()[:40]
    with (run_dir / rundir.JOURNAL).open("a") as fh:
        fh.write(fragment)  # power lost in the middle of a write
    with caplog.at_level(logging.WARNING, "orchestrator"), Journal(run_dir) as journal:
        journal.append(record(3))
    scan = scan_journal(run_dir)
    assert [r["trial"] for r in scan.records] == [0, 1, 3]  # nothing glued, nothing lost
    assert scan.problems == []
    assert (run_dir / rundir.TORN).read_text() == fragment + "\n"
    [warning] = [r.getMessage() for r in caplog.records]
    assert "torn" in warning and rundir.TORN in warning


def test_a_whole_record_that_lost_only_its_newline_is_kept(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, trials=1)
    with (run_dir / rundir.JOURNAL).open("a") as fh:
        fh.write(record(1).to_json())
    with Journal(run_dir) as journal:
        journal.append(record(2))
    assert [r["trial"] for r in read_journal(run_dir)] == [0, 1, 2]
    assert not (run_dir / rundir.TORN).exists()


def test_a_journal_that_is_only_a_fragment_is_emptied_into_the_torn_file(
        tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, trials=0)
    (run_dir / rundir.JOURNAL).write_bytes(b"\0" * 5000)  # zeroed blocks after a power cut
    Journal(run_dir).close()
    assert (run_dir / rundir.JOURNAL).read_bytes() == b""
    assert (run_dir / rundir.TORN).read_bytes() == b"\0" * 5000 + b"\n"


def test_a_reader_reports_a_torn_tail_and_leaves_it_alone(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, trials=2)
    with (run_dir / rundir.JOURNAL).open("a") as fh:
        fh.write('{"cell_id": "c1", "tri')
    before = snapshot(run_dir)
    scan = scan_journal(run_dir)
    assert [r["trial"] for r in scan.records] == [0, 1]
    assert [(p.line, p.what) for p in scan.problems] == [
        (3, "torn last line: a write cut short")]
    assert reader.load(run_dir).unreadable == 1
    assert snapshot(run_dir) == before


def test_resume_after_a_torn_tail_loses_no_trial(fake_bin: Path, suite_file: Path,
                                                 tmp_path: Path) -> None:
    root = tmp_path / "r"
    assert orchestrate("run", str(suite_file), "--results-dir", str(root)).returncode == 0
    run_dir = (root / "latest").resolve()
    lines = journal_lines(run_dir)
    assert len(lines) == 8
    rewrite(run_dir, [*lines[:5], lines[5][:60]])  # the 6th trial's write was cut short
    done = orchestrate("run", "--resume", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert "torn" in done.stderr
    scan = scan_journal(run_dir)
    assert scan.problems == []
    assert sorted((r["cell_id"], r["trial"]) for r in scan.records) == sorted(
        (json.loads(line)["cell_id"], json.loads(line)["trial"]) for line in lines)
    assert (run_dir / rundir.TORN).read_text() == lines[5][:60] + "\n"
    fork = reader.load(run_dir).trials.query("metric == 'fork_us'")
    assert len(fork) == 8 and not fork[["cell_id", "trial"]].duplicated().any()


# ---- readers report every unreadable line ---------------------------------------------------


def ok_line(old: str = "", new: str = "", **fields: object) -> str:
    """A good record's line with one text replaced (to damage it)."""
    return record(9, **fields).to_json().replace(old, new) + "\n"


DAMAGE = [  # (the line, what readers must say about it)
    ("{not json\n", "bad JSON"),
    ("\n", "blank line"),
    ("[1, 2]\n", "not a JSON object"),
    (json.dumps({k: v for k, v in json.loads(ok_line()).items() if k != "trial"}) + "\n",
     "missing key 'trial'"),
    (ok_line('"trial":9', '"trial":"9"'), "'trial' is not an integer"),
    (ok_line('"warmup":false', '"warmup":0'), "'warmup' is not true or false"),
    (ok_line('"outcome":"ok"', '"outcome":"meh"'), "unknown outcome 'meh'"),
    (ok_line('"trial":9', '"trial":4294967296'), "trial 4294967296 out of range"),
    (ok_line('"started_at":1700000000.0', '"started_at":1e300'),
     "started_at 1e+300 is not a time"),
    (ok_line('["fork_us",10.5,"us"]', '["fork_us","fast"]'),
     "metrics entry 0 is not [name, value, unit]"),
    (ok_line("10.5", str(2**60)),  # more than a float64 column holds exactly
     "metrics entry 0 is not [name, value, unit]"),
    (ok_line('"events":[]', '"events":[["host","kvm:kvm_exit",3]]'),
     "events entry 0 is not [side, event, count, available]"),
    (ok_line(pages="many"), "param 'pages' is not an integer"),
]


@pytest.mark.parametrize(("line", "what"), DAMAGE)
def test_every_kind_of_bad_line_is_reported_with_its_number(tmp_path: Path, line: str,
                                                            what: str) -> None:
    run_dir = make_run(tmp_path)
    lines = journal_lines(run_dir)
    rewrite(run_dir, [lines[0], line, *lines[1:]])
    tables = reader.load(run_dir, quiet=True)
    assert sorted(tables.trials["trial"]) == [0, 1, 2]
    assert tables.unreadable == 1
    assert tables.unreadable_note() == f"journal: 1 unreadable line(s) skipped: 2 ({what})"


def test_bytes_that_are_not_text_are_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    lines = [line.encode() for line in journal_lines(run_dir)]
    (run_dir / rundir.JOURNAL).write_bytes(b"".join([lines[0], b"\xff\xfe\0\n", *lines[1:]]))
    scan = scan_journal(run_dir)
    assert len(scan.records) == 3 and [str(p) for p in scan.problems] == ["2 (not UTF-8 text)"]


def test_finalized_tables_keep_the_count_of_unreadable_lines(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    lines = journal_lines(run_dir)
    rewrite(run_dir, [lines[0], "{oops\n", lines[1], "7\n", lines[2]])
    assert [str(p) for p in finalize_tables(run_dir)] == [
        "2 (bad JSON)", "4 (not a JSON object)"]
    tables = reader.load(run_dir, quiet=True)  # from the Parquet files
    assert tables.unreadable == 2 and [p.line for p in tables.problems] == [2, 4]


def test_tables_written_without_the_count_still_report_the_journals_bad_lines(
        tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    lines = journal_lines(run_dir)
    rewrite(run_dir, [lines[0], "{oops\n", *lines[1:]])
    finalize_tables(run_dir)
    for name in (rundir.TRIALS, rundir.EVENTS):  # as an older version wrote them
        table = pq.read_table(run_dir / name)
        pq.write_table(table.replace_schema_metadata(None), run_dir / name)
    assert reader.load(run_dir, quiet=True).unreadable_note() == \
        "journal: 1 unreadable line(s) skipped: 2 (bad JSON)"


def test_tables_built_in_memory_equal_the_finalized_ones(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, trials=5)
    in_memory = reader.load(run_dir)
    assert not (run_dir / rundir.TRIALS).exists()  # load wrote nothing
    finalize_tables(run_dir)
    from_parquet = reader.load(run_dir)
    pd.testing.assert_frame_equal(in_memory.trials, from_parquet.trials)
    pd.testing.assert_frame_equal(in_memory.events, from_parquet.events)


def test_a_corrupt_parquet_file_falls_back_to_the_journal(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    finalize_tables(run_dir)
    (run_dir / rundir.TRIALS).write_bytes(b"PAR1 not really")
    before = snapshot(run_dir)
    assert sorted(reader.load(run_dir).trials["trial"]) == [0, 1, 2]
    assert snapshot(run_dir) == before


# ---- the CLI, as a user sees it -------------------------------------------------------------


@pytest.fixture()
def damaged_run(fake_bin: Path, suite_file: Path, tmp_path: Path) -> Path:
    """A real run whose journal has a corrupt line 3 and a record without 'trial' at line 6,
    its tables written before the damage (so they are stale)."""
    root = tmp_path / "r"
    assert orchestrate("run", str(suite_file), "--results-dir", str(root)).returncode == 0
    run_dir = (root / "latest").resolve()
    lines = journal_lines(run_dir)
    no_trial = {k: v for k, v in json.loads(lines[5]).items() if k != "trial"}
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"
    lines[5] = json.dumps(no_trial) + "\n"
    rewrite(run_dir, lines)
    make_stale(run_dir)
    return run_dir


NOTE = "journal: 2 unreadable line(s) skipped: 3 (bad JSON), 6 (missing key 'trial')"


def test_results_report_and_compare_say_which_lines_they_skipped(damaged_run: Path,
                                                                 tmp_path: Path) -> None:
    before = snapshot(damaged_run)
    summary = orchestrate("results", str(damaged_run))
    assert summary.returncode == 0, summary.stderr
    assert NOTE in summary.stdout
    assert "recorded: 6 ok" in summary.stdout.splitlines()[0]
    as_json = json.loads(orchestrate("results", str(damaged_run), "--json").stdout)
    assert as_json["journal"] == {"unreadable": 2, "lines": [
        {"line": 3, "problem": "bad JSON"}, {"line": 6, "problem": "missing key 'trial'"}]}
    report = orchestrate("report", str(damaged_run), "--out", str(tmp_path / "out"))
    assert report.returncode == 0, report.stderr
    assert NOTE.removeprefix("journal: ") in report.stderr
    assert NOTE.removeprefix("journal: ") in (tmp_path / "out" / "report.md").read_text()
    compare = orchestrate("compare", str(damaged_run), str(damaged_run), "--json")
    assert compare.returncode == 0, compare.stderr
    assert NOTE.removeprefix("journal: ") in compare.stderr
    assert json.loads(compare.stdout)["unreadable_lines"] == {"base": 2, "new": 2}
    assert "internal error" not in summary.stderr + report.stderr + compare.stderr
    assert snapshot(damaged_run) == before


def test_reading_runs_changes_nothing_in_their_directories(fake_bin: Path, suite_file: Path,
                                                           tmp_path: Path) -> None:
    root = tmp_path / "r"
    for _ in range(2):
        assert orchestrate("run", str(suite_file), "--results-dir", str(root)).returncode == 0
    runs = sorted(p for p in root.iterdir() if not p.is_symlink())
    make_stale(runs[0])  # tables older than the journal
    (runs[1] / rundir.TRIALS).unlink()  # no tables at all
    (runs[1] / rundir.EVENTS).unlink()
    before = {run: snapshot(run) for run in runs}
    where = ["--results-dir", str(root)]
    for argv in (["results", *where], ["results", "latest", *where],
                 ["results", "latest", "--json", *where],
                 ["results", "latest", "--csv", str(tmp_path / "csv"), *where],
                 ["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "rep")],
                 ["compare", str(runs[0]), str(runs[1]), *where],
                 ["history", "core-test", "--json", *where]):
        done = orchestrate(*argv)
        assert done.returncode in (0, 4), (argv, done.stderr)
    assert {run: snapshot(run) for run in runs} == before

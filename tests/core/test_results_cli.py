"""`orchestrate results`: one damaged run never hides the others, the status comes first,
--json shapes, and where it looked when there is nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.analysis.summary import status_line
from orchestrator.errors import BadInput
from orchestrator.fleet import nightly
from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.store import reader, rundir
from orchestrator.store.journal import Journal
from orchestrator.store.tables import finalize_tables
from tests.core.conftest import cli_env

CLI = [sys.executable, "-m", "orchestrator.cli"]


def orchestrate(*args: str, env: dict[str, str] | None = None,
                cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in cli_env({}).items() if k != "ORCH_RESULTS"}  # only what we say
    full.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env=full, cwd=cwd)


def make_run(root: Path, *, status: str = "done", outcomes: list[Outcome] | None = None,
             planned: int | None = None, started: str = "2026-01-01T00:00:00+00:00") -> Path:
    outcomes = [Outcome.OK] * 3 if outcomes is None else outcomes
    run_dir = rundir.new_run_dir(root, "s")
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "s", "git_rev": "abc", "status": status,
        "started_at": started, "host": {"hostname": "lab1"}, "outcomes": counts,
        "param_columns": {"pages": "int"}, "plan": {"trials": planned or len(outcomes)}})
    with Journal(run_dir) as journal:
        for trial, outcome in enumerate(outcomes):
            journal.append(TrialRecord(
                cell_id="c1", trial=trial, warmup=False, paging_requested="tdp",
                paging_mode="tdp", accel="kvm", guest="g", workload="fork", kind="fork-dirty",
                params={"pages": 10}, outcome=outcome, started_at=1.7e9,
                reason="" if outcome is Outcome.OK else "it broke",
                metrics=(Metric("fork_us", 2.0 + trial, "us"),) if outcome is Outcome.OK
                else ()))
    finalize_tables(run_dir)
    return run_dir


BAD_MANIFESTS: dict[str, tuple[str, str]] = {
    "truncated": ('{"run_id": "x", "suite_na', "corrupt"),
    "empty": ("", "corrupt"),
    "not an object": ('["run_id"]', "not a JSON object"),
    "old format": ('{"status": "done", "suite": "s"}', "no 'run_id'"),
    "no suite name": ('{"run_id": "x"}', "no 'suite_name'"),
    "run_id a number": ('{"run_id": 7, "suite_name": "s"}', "'run_id' is not a string"),
    "outcomes a list": ('{"run_id": "x", "suite_name": "s", "outcomes": ["ok"]}',
                        "'outcomes' is not an object"),
    "host a string": ('{"run_id": "x", "suite_name": "s", "host": "lab1"}',
                      "'host' is not an object"),
    "unknown param type": ('{"run_id": "x", "suite_name": "s", "param_columns": {"p": "x"}}',
                           "unknown type for 'p'"),
    "not text": ("\udcff", "unreadable"),
}


def damage(run_dir: Path, text: str) -> None:
    (run_dir / rundir.MANIFEST).write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("kind", sorted(BAD_MANIFESTS))
def test_list_runs_skips_a_damaged_manifest_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    good = make_run(tmp_path)
    bad = make_run(tmp_path)
    text, said = BAD_MANIFESTS[kind]
    damage(bad, text)
    skipped: list[reader.SkippedRun] = []
    with caplog.at_level(logging.WARNING, "orchestrator"):
        runs = reader.list_runs(tmp_path, skipped=skipped)
    assert [r["path"] for r in runs] == [good]
    [warning] = [r.getMessage() for r in caplog.records]
    assert str(bad / rundir.MANIFEST) in warning and said in warning
    assert "\n" not in warning
    assert [s.path for s in skipped] == [bad]
    with pytest.raises(BadInput, match=said):  # named on its own: one-line BadInput
        reader.load(bad)


def test_results_lists_the_other_runs_when_one_manifest_is_truncated(tmp_path: Path) -> None:
    first, bad, last = (make_run(tmp_path, started=f"2026-01-0{i}") for i in (1, 2, 3))
    damage(bad, '{"run_id": "x", "suite_na')
    done = orchestrate("results", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == [first.name, last.name]
    [warning] = done.stderr.splitlines()
    assert str(bad / rundir.MANIFEST) in warning and "corrupt" in warning
    named = orchestrate("results", bad.name, "--results-dir", str(tmp_path))
    assert named.returncode == 2
    [error] = named.stderr.splitlines()
    assert "corrupt" in error and "hint:" in error


def test_nightly_never_stops_at_nor_deletes_a_damaged_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = [make_run(tmp_path, started=f"2026-01-0{i}") for i in (1, 2, 3)]
    damage(runs[0], "{")
    with caplog.at_level(logging.WARNING, "orchestrator"):
        assert [r["path"] for r in nightly.suite_runs(tmp_path, "s")] == runs[1:]
        assert nightly.previous_good(tmp_path, "s") == runs[2]
        assert nightly.apply_retention(tmp_path, "s", 1, set()) == [runs[1]]
    assert runs[0].exists()  # what it cannot read it never deletes
    assert all(str(runs[0]) in r.getMessage() for r in caplog.records)


def test_the_summary_says_the_status_first(tmp_path: Path) -> None:
    run = make_run(tmp_path, status="interrupted", planned=10)
    done = orchestrate("results", str(run))
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()[:2]
    assert first.startswith("status: interrupted - NOT FINISHED")
    assert first.endswith("3 of 10 planned trials recorded: 3 ok")
    assert f"orchestrate run --resume {run}" in second


@pytest.mark.parametrize(("status", "outcomes", "said"), [
    ("done", ["ok", "ok"], "status: done; 2 of 4 planned trials recorded: 2 ok"),
    ("done-with-errors", ["ok", "error", "failed"],
     "status: done-with-errors - FINISHED WITH ERRORS"),
    ("crashed", ["ok"], "status: crashed - NOT FINISHED: the orchestrator crashed"),
    ("error", [], "status: error - NOT FINISHED: the harness broke; 0 of 4 planned trials "
                  "recorded: none"),
    ("running", ["skipped"], "status: running - NOT FINISHED"),
    ("weird", ["ok"], "status: weird - UNKNOWN STATUS"),
])
def test_status_lines(status: str, outcomes: list[str], said: str) -> None:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    line = status_line({"status": status, "plan": {"trials": 4}}, counts)
    assert line.startswith(said)
    for outcome, n in counts.items():
        assert f"{n} {outcome}" in line


def test_the_list_shows_each_runs_status(tmp_path: Path) -> None:
    make_run(tmp_path, started="2026-01-01")
    make_run(tmp_path, status="done-with-errors", outcomes=[Outcome.OK, Outcome.ERROR],
             started="2026-01-02")
    done = orchestrate("results", "--results-dir", str(tmp_path))
    header, ok, bad = done.stdout.splitlines()
    assert header.split()[:4] == ["run", "host", "status", "outcomes"]
    assert ok.split()[1:] == ["lab1", "done", "3", "ok"]
    assert bad.split()[1:] == ["lab1", "done-with-errors", "1", "error,", "1", "ok"]
    assert ok.index(" done ") == bad.index(" done-with-errors ")  # one column


def test_results_json_lists_the_runs_and_the_skipped_ones(tmp_path: Path) -> None:
    good = make_run(tmp_path, outcomes=[Outcome.OK, Outcome.FAILED], planned=4)
    bad = make_run(tmp_path)
    damage(bad, "[]")
    done = orchestrate("results", "--json", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["schema"] == "orchestrate.results.runs/1"
    assert data["results_dir"] == str(tmp_path.resolve())
    [run] = data["runs"]
    assert run == {"name": good.name, "run_id": good.name, "path": str(good.resolve()),
                   "suite": "s", "status": "done", "host": "lab1", "collected_from": None,
                   "started_at": "2026-01-01T00:00:00+00:00", "ended_at": None,
                   "git_rev": "abc", "outcomes": {"ok": 1, "failed": 1}, "planned_trials": 4}
    [skipped] = data["skipped"]
    assert skipped["path"] == str(bad.resolve()) and "not a JSON object" in skipped["problem"]


def test_results_json_of_one_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, status="done-with-errors", outcomes=[Outcome.OK, Outcome.ERROR])
    done = orchestrate("results", run.name, "--json", "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["schema"] == "orchestrate.results.run/1"
    assert (data["run_id"], data["path"], data["suite"]) == (run.name, str(run.resolve()), "s")
    assert (data["status"], data["finished"]) == ("done-with-errors", True)
    assert data["trials"] == {"recorded": 2, "planned": 2, "outcomes": {"ok": 1, "error": 1}}
    assert data["not_ok"] == [{"outcome": "error", "cell_id": "c1", "paging_mode": "tdp",
                               "guest": "g", "workload": "fork", "reason": "it broke"}]
    assert data["journal"] == {"unreadable": 0, "lines": []}
    assert data["summary"] == [{"paging_mode": "tdp", "accel": "kvm", "guest": "g",
                                "workload": "fork", "params": {"pages": 10},
                                "metric": "fork_us", "unit": "us", "n": 1, "median": 2.0,
                                "min": 2.0, "max": 2.0}]
    assert data["events"] == []


def test_results_with_no_runs_says_where_it_looked(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    by_flag = orchestrate("results", "--results-dir", "empty", cwd=tmp_path)
    by_env = orchestrate("results", env={"ORCH_RESULTS": str(tmp_path / "nowhere")})
    by_default = orchestrate("results", cwd=tmp_path)
    for done, where in ((by_flag, empty), (by_env, tmp_path / "nowhere"),
                        (by_default, tmp_path / "results")):
        assert done.returncode == 0, done.stderr
        assert str(where) in done.stdout
        assert "--results-dir" in done.stdout and "$ORCH_RESULTS" in done.stdout
    as_json = orchestrate("results", "--json", "--results-dir", str(empty))
    assert json.loads(as_json.stdout)["runs"] == []

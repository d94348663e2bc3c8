"""The nightly wrapper's decisions (exit code, baseline, retention) and fleet-root listing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.analysis import changepoints
from orchestrator.analysis.changepoints import ChangePoint
from orchestrator.analysis.history import History
from orchestrator.cli import entry as cli
from orchestrator.errors import ExitCode
from orchestrator.fleet import confirm, nightly
from orchestrator.run.lock import run_lock
from orchestrator.store import reader, rundir
from orchestrator.suite.loader import load_suite
from tests.fleet.conftest import fake_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("run_rc", "deadline", "compare_rc", "expected"), [
    (0, False, None, ExitCode.OK),
    (0, False, 0, ExitCode.OK),
    (0, False, 4, ExitCode.REGRESSION),
    (1, False, 0, ExitCode.TRIALS_FAILED),
    (1, False, 4, ExitCode.REGRESSION),
    (3, False, None, ExitCode.HARNESS_BROKE),
    (0, False, 3, ExitCode.HARNESS_BROKE),  # compare itself broke
    (-9, False, None, ExitCode.HARNESS_BROKE),  # killed by someone else
    (5, False, None, ExitCode.LOCKED),  # a manual run holds the run lock
    (2, False, None, ExitCode.BAD_INPUT),
    (130, True, None, ExitCode.INTERRUPTED),
    (-15, True, None, ExitCode.INTERRUPTED),
    (130, False, None, ExitCode.INTERRUPTED),
])
def test_one_exit_code_per_night(run_rc: int, deadline: bool, compare_rc: int | None,
                                 expected: ExitCode) -> None:
    assert nightly.final_code(run_rc, deadline, compare_rc) == expected


def test_the_baseline_is_the_newest_good_run_of_the_same_suite(tmp_path: Path) -> None:
    good = fake_run(tmp_path, "s", started=100)
    fake_run(tmp_path, "s", started=200, outcomes={"ok": 2, "error": 1})
    fake_run(tmp_path, "s", started=300, status="interrupted")
    fake_run(tmp_path, "other", started=400)
    assert nightly.previous_good(tmp_path, "s") == good
    assert nightly.previous_good(tmp_path, "nope") is None


def test_skipped_trials_do_not_spoil_a_baseline(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "s", outcomes={"ok": 4, "skipped": 2})
    assert nightly.previous_good(tmp_path, "s") == run


def test_retention_keeps_the_newest_and_the_protected(tmp_path: Path) -> None:
    runs = [fake_run(tmp_path, "s", started=t) for t in (100, 200, 300, 400, 500)]
    other = fake_run(tmp_path, "other", started=50)
    deleted = nightly.apply_retention(tmp_path, "s", 2, protect={runs[0]})
    assert set(deleted) == {runs[1], runs[2]}
    assert [p.exists() for p in runs] == [True, False, False, True, True]
    assert other.exists()


def test_retention_never_descends_into_a_fleet_root(tmp_path: Path) -> None:
    collected = fake_run(tmp_path / "lab2", "s", started=1)
    mine = [fake_run(tmp_path, "s", started=t) for t in (100, 200)]
    nightly.apply_retention(tmp_path, "s", 1, protect=set())
    assert collected.exists() and not mine[0].exists() and mine[1].exists()


def test_a_killed_run_is_marked_interrupted(tmp_path: Path) -> None:
    run = fake_run(tmp_path, "s", status="running")
    nightly.mark_interrupted(run, "nightly deadline 10s (killed)")
    m = rundir.read_manifest(run)
    assert m["status"] == "interrupted" and "deadline" in m["interrupted_by"]
    done = fake_run(tmp_path, "s", status="done")
    nightly.mark_interrupted(done, "x")
    assert rundir.read_manifest(done)["status"] == "done"


def test_a_fleet_root_lists_runs_of_every_host(tmp_path: Path) -> None:
    local = fake_run(tmp_path, "s", started=100, host="here")
    a = fake_run(tmp_path / "lab1", "s", started=200, host="lab1")
    b = fake_run(tmp_path / "lab2", "s", started=300, host="lab2-real-name")
    (tmp_path / "lab1" / "latest").symlink_to(a.name)
    (tmp_path / "empty-host").mkdir()
    runs = reader.list_runs(tmp_path)
    assert [r["path"] for r in runs] == [local, a, b]
    assert [r.get("collected_from") for r in runs] == [None, "lab1", "lab2"]
    assert [r["path"] for r in reader.list_runs(tmp_path, hosts=False)] == [local]


def test_results_lists_a_fleet_root_with_hosts(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "lab1", "s", started=200, host="lab1")
    b = fake_run(tmp_path / "lab2", "s", started=300, host="lab2-real-name")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "results", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "host", "status"]
    assert lines[1].split()[:3] == [f"lab1/{a.name}", "lab1", "done"]
    assert lines[2].split()[:3] == [f"lab2/{b.name}", "lab2", "(lab2-real-name)"]
    # and the name shown resolves to the run
    assert reader.resolve_run(f"lab1/{a.name}", tmp_path) == a.resolve()


def test_a_bad_deadline_is_one_line_and_exit_2(tmp_path: Path) -> None:
    suite = ROOT / "suites" / "native-smoke.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.fleet.nightly", str(suite), "--results-dir",
         str(tmp_path), "--deadline", "soon"], capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.BAD_INPUT
    assert done.stderr.strip().count("\n") == 0
    assert "cannot read duration 'soon'" in done.stderr and "Traceback" not in done.stderr
    assert "cannot read duration" in (tmp_path / "nightly.log").read_text()


# the old module path stays for runners whose cron wrapper predates orchestrator/fleet/
@pytest.mark.parametrize("module", ["orchestrator.fleet.nightly", "orchestrator.nightly"])
def test_a_missing_suite_is_one_line_and_exit_2(tmp_path: Path, module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, str(tmp_path / "nope.yaml"),
         "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.BAD_INPUT, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


_BUILD_PARSER = cli.build_parser


def _cli_with_nightly() -> argparse.ArgumentParser:
    """`orchestrate`'s own parser with the nightly verb added, as cli/entry.py registers it."""
    parser = _BUILD_PARSER()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "nightly" not in sub.choices:
        nightly.add_parser(sub)
    return parser


def test_the_verb_refuses_while_another_nightly_holds_the_lock(
        tmp_path: Path, private_nightly_lock: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "build_parser", _cli_with_nightly)
    suite = ROOT / "suites" / "native-smoke.yaml"
    with run_lock(private_nightly_lock, what="nightly held by the test"):
        code = cli.main(["nightly", str(suite), "--results-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == ExitCode.LOCKED
    assert out == ""
    assert err.splitlines() == [
        f"nightly: another nightly run holds the lock {private_nightly_lock} "
        f"(pid {os.getpid()} since {err.split(' since ')[1].split(' ')[0]} "
        "nightly held by the test); not starting"]
    assert reader.list_runs(tmp_path) == []  # nothing was started
    assert "another nightly run holds the lock" in (tmp_path / "nightly.log").read_text()


STUBBORN_RUN = """\
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a run that does not stop on SIGTERM
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                          start_new_session=True)  # like proc.run's workloads
print("worker", worker.pid, flush=True)
time.sleep(300)
"""

DRIVE_RUN_CHILD = """\
import sys, time
from pathlib import Path
from orchestrator.fleet import nightly
log = nightly.NightlyLog(Path(sys.argv[2]))
ran = nightly.run_child([sys.executable, sys.argv[1]], log, "run",
                        deadline=time.monotonic() + 3, grace_s=1)
print(ran.returncode, ran.deadline_hit, ran.killed)
"""


def test_a_run_deaf_to_sigterm_is_killed_with_what_it_left_behind(tmp_path: Path) -> None:
    # the wrapper's process handling alone, with a stand-in run at the process boundary
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(STUBBORN_RUN)
    log = tmp_path / "nightly.log"
    done = subprocess.run([sys.executable, "-c", DRIVE_RUN_CHILD, str(stubborn), str(log)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-9", "True", "True"]
    text = log.read_text()
    worker = int(text.split("run: worker ")[1].split()[0])
    assert "sending SIGTERM" in text and "sending SIGKILL" in text
    assert f"left behind: {worker}" in text
    assert not Path(f"/proc/{worker}").exists()


def test_an_unwritable_log_is_one_line_and_exit_3(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.fleet.nightly", str(ROOT / "suites/native-smoke.yaml"),
         "--results-dir", str(tmp_path), "--log", str(tmp_path / "file" / "nightly.log")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.HARNESS_BROKE
    assert done.stderr.startswith("orchestrate: error: cannot write the nightly log")
    assert len(done.stderr.strip().splitlines()) == 1


def _point(workload: str, runs_after: int, **params: object) -> ChangePoint:
    return ChangePoint("h", "c", "fork_us", "us", {"workload": workload, **params}, "r1", "r2",
                       100.0, 150.0, 1.2, 1.8, 1e-5, runs_after)


def test_the_confirmation_suite_keeps_only_the_cells_to_confirm(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\npaging: [native]\nworkloads:\n"
                     "  - {name: fork, kind: fork-dirty, params: {pages: [1280, 32000]}}\n"
                     "  - {name: mp, kind: mprotect, params: {pages: 4096, range_pages: [16, 0]}}\n")
    out = confirm.reduced_suite(suite, [_point("fork", 1, pages="32000")], tmp_path / "c")
    loaded = load_suite(out).suite
    assert loaded.name == "s" and [w.name for w in loaded.workloads] == ["fork"]
    data = json.loads(out.read_text())
    assert data["workloads"][0]["params"] == {"pages": [32000]}


def test_only_open_unconfirmed_regressions_are_rerun() -> None:
    fresh, old = _point("fork", 1), _point("fork", changepoints.CONFIRM_RUNS)
    faster = replace(fresh, after=50.0)
    acked = replace(fresh, status="acknowledged")
    found = History([], [fresh, old, faster, acked], [])
    assert confirm.pending(found) == [fresh]
    assert confirm.reruns_needed([fresh]) == changepoints.CONFIRM_RUNS - 1
    assert found.alerts == [old]

"""`orchestrate run` end to end at the process boundary: durability, resume, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.store import reader, rundir
from tests.core.conftest import cli_env, write_suite

pytestmark = pytest.mark.slow  # real `orchestrate run` processes, seconds each

CLI = [sys.executable, "-m", "orchestrator.cli"]


def orchestrate(*args: str, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(env or {}))


def only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1
    return runs[0]


def journal_lines(run_dir: Path) -> int:
    path = run_dir / rundir.JOURNAL
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_clean_run_writes_tables_manifest_and_latest(fake_bin: Path, suite_file: Path,
                                                       tmp_path: Path) -> None:
    done = orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "res"))
    assert done.returncode == 0, done.stderr
    run_dir = only_run(tmp_path / "res")
    assert (tmp_path / "res" / "latest").resolve() == run_dir.resolve()
    tables = reader.load(run_dir)
    trials = tables.trials
    assert len(trials) == 2 * 4 * 2  # 2 points x (1 warm-up + 3 trials) x (fork_us, minflt)
    fork = trials[trials["metric"] == "fork_us"]
    assert set(fork["pages"]) == {100, 2000}
    assert fork["warmup"].sum() == 2
    assert set(fork["paging_mode"]) == {"native"} and set(fork["accel"]) == {"native"}
    assert fork.loc[fork["pages"] == 2000, "value"].iloc[0] == pytest.approx(20.0)
    manifest = tables.manifest
    assert manifest["status"] == "done" and manifest["outcomes"] == {"ok": 8}
    assert manifest["suite_hash"] and "host" in manifest and manifest["git_rev"]
    assert manifest["param_columns"] == {"pages": "int", "ptes_per_table": "int", "cow": "bool"}


def test_failed_trials_exit_1_and_are_recorded(fake_bin: Path, suite_file: Path,
                                               tmp_path: Path) -> None:
    done = orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"),
                       env={"FAKE_BEHAVIOUR": "fail"})
    assert done.returncode == 1, done.stderr
    trials = reader.load(only_run(tmp_path / "r")).trials
    failed = trials[trials["outcome"] == "failed"]
    assert set(failed["pages"]) == {2000}
    assert set(failed["reason"]) == {"layout check failed"}


def test_a_hung_workload_times_out_as_error_exit_3(fake_bin: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, pages="[100]", trials=1, timeout="1s")
    done = orchestrate("run", str(suite), "--results-dir", str(tmp_path / "r"),
                       env={"FAKE_BEHAVIOUR": "hang"})
    assert done.returncode == 3, done.stderr
    trials = reader.load(only_run(tmp_path / "r")).trials
    assert set(trials["outcome"]) == {"error"}
    assert trials["reason"].str.contains("timed out after 1s").all()


def test_missing_binaries_are_bad_input_not_a_traceback(tmp_path: Path, suite_file: Path) -> None:
    done = orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"),
                       env={"ORCH_WORKLOADS_BIN": str(tmp_path / "nowhere")})
    assert done.returncode == 3  # the guest group could not open: harness error, rows kept
    assert "make -C guest-workloads" in done.stderr
    assert "Traceback" not in done.stderr


def test_kill_mid_run_then_resume_loses_and_duplicates_nothing(fake_bin: Path,
                                                               tmp_path: Path) -> None:
    suite = write_suite(tmp_path, pages="[100, 200, 300]", trials=4)
    root = tmp_path / "r"
    proc = subprocess.Popen([*CLI, "run", str(suite), "--results-dir", str(root)],
                            env=cli_env({"FAKE_DELAY": "0.15"}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if root.exists() and any(root.iterdir()) and journal_lines(only_run(root)) >= 4:
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup code runs at all
    proc.wait()
    run_dir = only_run(root)
    before = journal_lines(run_dir)
    assert 4 <= before < 15
    done = orchestrate("run", "--resume", str(run_dir))
    assert done.returncode == 0, done.stderr
    trials = reader.load(run_dir).trials
    keys = trials[trials["metric"] == "fork_us"][["cell_id", "trial"]]
    assert len(keys) == 15 and not keys.duplicated().any()
    assert journal_lines(run_dir) == 15  # the resumed run re-ran nothing already recorded
    assert rundir.read_manifest(run_dir)["resumed"][0]["only_failed"] is False


def test_sigterm_keeps_results_and_marks_the_run_interrupted(fake_bin: Path,
                                                             tmp_path: Path) -> None:
    suite = write_suite(tmp_path, pages="[100, 200, 300]", trials=4)
    root = tmp_path / "r"
    proc = subprocess.Popen([*CLI, "run", str(suite), "--results-dir", str(root)],
                            env=cli_env({"FAKE_DELAY": "0.15"}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while not (root.exists() and any(root.iterdir()) and journal_lines(only_run(root)) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    run_dir = only_run(root)
    manifest = rundir.read_manifest(run_dir)
    assert manifest["status"] == "interrupted"
    assert (run_dir / rundir.TRIALS).exists()
    assert len(reader.load(run_dir).trials) >= 2


def test_rerun_failed_reruns_only_those_and_keeps_the_latest_attempt(fake_bin: Path,
                                                                     suite_file: Path,
                                                                     tmp_path: Path) -> None:
    orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"),
                env={"FAKE_BEHAVIOUR": "fail"})
    run_dir = only_run(tmp_path / "r")
    assert journal_lines(run_dir) == 8
    done = orchestrate("run", "--rerun-failed", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert journal_lines(run_dir) == 12  # only the 4 failed trials ran again
    trials = reader.load(run_dir).trials
    fork = trials[trials["metric"] == "fork_us"]
    assert len(fork) == 8 and set(trials["outcome"]) == {"ok"}
    assert set(fork.loc[fork["pages"] == 2000, "attempt"]) == {2}


def test_replay_runs_the_stored_suite_as_a_new_run(fake_bin: Path, suite_file: Path,
                                                   tmp_path: Path) -> None:
    orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"))
    first = only_run(tmp_path / "r")
    suite_file.write_text("garbage: [")  # the replay must not need the original file
    done = orchestrate("run", "--replay", str(first), "--results-dir", str(tmp_path / "r2"))
    assert done.returncode == 0, done.stderr
    second = only_run(tmp_path / "r2")
    a, b = rundir.read_manifest(first), rundir.read_manifest(second)
    assert a["suite_hash"] == b["suite_hash"] and a["run_id"] != b["run_id"]


def test_resume_with_a_different_suite_is_refused(fake_bin: Path, suite_file: Path,
                                                  tmp_path: Path) -> None:
    orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"))
    run_dir = only_run(tmp_path / "r")
    other = write_suite(tmp_path / "r", pages="[7]")
    done = orchestrate("run", str(other), "--resume", str(run_dir))
    assert done.returncode == 2
    assert "differs from the suite" in done.stderr


def test_unavailable_modes_are_recorded_as_skipped_with_the_reason(fake_bin: Path,
                                                                   tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(write_suite(tmp_path).read_text().replace(
        "paging: [native]", "paging: [native, shadow]\naccel: kvm\nguests: {g: {}}"))
    done = orchestrate("run", str(suite), "--results-dir", str(tmp_path / "r"),
                       )
    trials = reader.load(only_run(tmp_path / "r")).trials
    shadow = trials[trials["paging_requested"] == "shadow"]
    assert len(shadow) > 0 and set(shadow["outcome"]) <= {"skipped", "error"}
    assert shadow["reason"].str.len().min() > 10
    assert done.returncode in (0, 3)


def test_results_lists_and_exports_csv(fake_bin: Path, suite_file: Path, tmp_path: Path) -> None:
    orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"))
    listing = orchestrate("results", "--results-dir", str(tmp_path / "r"))
    assert "core-test" in listing.stdout and "8 ok" in listing.stdout
    summary = orchestrate("results", "latest", "--results-dir", str(tmp_path / "r"))
    assert summary.returncode == 0 and "fork_us" in summary.stdout
    export = orchestrate("results", "latest", "--results-dir", str(tmp_path / "r"),
                         "--csv", str(tmp_path / "csv"))
    assert export.returncode == 0
    header = (tmp_path / "csv" / "trials.csv").read_text().splitlines()[0]
    assert "paging_mode" in header and "pages" in header
    missing = orchestrate("results", "nope", "--results-dir", str(tmp_path / "r"))
    assert missing.returncode == 2 and "no such run" in missing.stderr


def test_plan_json_counts(suite_file: Path) -> None:
    done = orchestrate("plan", str(suite_file), "--json")
    data = json.loads(done.stdout)
    assert data["counts"]["trials"] == 8 and len(data["cells"]) == 8
    text = orchestrate("plan", str(suite_file)).stdout
    assert "0 mode switches, 0 guest boots, 2 points, 8 trials (6 measured)" in text

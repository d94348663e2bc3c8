"""The command line as people and scripts use it: pipes that close early, --version,
--debug after the verb, shell completion, run statuses that say what happened, plain log
lines that name the point, and --resume/--rerun-failed under --results-dir."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli.entry import EXIT_BROKEN_PIPE
from orchestrator.store import rundir, tables
from tests.core.conftest import cli_env, write_suite

pytestmark = pytest.mark.slow  # every test runs the CLI as a process, seconds each

CLI = [sys.executable, "-m", "orchestrator.cli"]


def orchestrate(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in cli_env(env or {}).items() if k != "ORCH_RESULTS"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=full)


def piped_into_head(args: list[str], cwd: Path | None = None) -> tuple[int, str]:
    """Run orchestrate with stdout into `head -1`; its exit status and its stderr."""
    writer = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=cwd)
    assert writer.stdout is not None
    head = subprocess.run(["head", "-c", "1"], stdin=writer.stdout, capture_output=True,
                          timeout=60)
    writer.stdout.close()  # only head reads it now, and head has gone
    _, err = writer.communicate(timeout=60)
    assert head.returncode == 0
    return writer.returncode, err


def big_suite(tmp_path: Path) -> Path:
    # enough plan JSON (>64 KiB) that writing it fills the pipe after head has gone
    return write_suite(tmp_path, pages="[" + ", ".join(str(p) for p in range(1, 2000)) + "]")


def test_plan_json_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    code, err = piped_into_head(["plan", "--json", str(big_suite(tmp_path))])
    assert code == EXIT_BROKEN_PIPE
    assert err == ""  # no traceback, no "internal error", no "Exception ignored"


def test_results_into_a_closed_pipe_exits_quietly(fake_bin: Path, suite_file: Path,
                                                  tmp_path: Path) -> None:
    root = tmp_path / "r"
    for _ in range(2):
        assert orchestrate("run", str(suite_file), "--results-dir", str(root)).returncode == 0
    code, err = piped_into_head(["results", "latest", "--results-dir", str(root)])
    assert code in (0, EXIT_BROKEN_PIPE)  # a short summary may fit the pipe before head ends
    assert "Traceback" not in err and "internal error" not in err and "Exception" not in err


def test_version_and_debug_after_the_verb(suite_file: Path) -> None:
    version = orchestrate("--version")
    assert version.returncode == 0 and version.stdout.startswith("orchestrate ")
    for argv in (["--debug", "validate", str(suite_file)], ["validate", str(suite_file),
                                                           "--debug"]):
        done = orchestrate(*argv)
        assert done.returncode == 0, done.stderr
    missing = orchestrate("validate", "/nonexistent.yaml", "--debug")
    assert missing.returncode == 2
    assert "Traceback" in missing.stderr  # --debug shows the traceback, after the verb too
    quiet = orchestrate("validate", "/nonexistent.yaml")
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.count("\n") == 1


def test_nested_verbs_take_debug_too() -> None:
    done = orchestrate("image", "build", "nosuchimage", "--debug")
    assert done.returncode == 2 and "unrecognized arguments" not in done.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_verbs_and_options(tmp_path: Path) -> None:
    script = orchestrate("completion", "bash")
    assert script.returncode == 0
    path = tmp_path / "orchestrate.bash"
    path.write_text(script.stdout)

    def complete(*words: str) -> set[str]:
        line = " ".join(f"'{w}'" for w in words)
        probe = (f"source {path}; COMP_WORDS=(orchestrate {line}); "
                 f"COMP_CWORD={len(words)}; COMP_LINE='orchestrate {' '.join(words)}'; "
                 f"COMP_POINT=${{#COMP_LINE}}; _shtab_orchestrate; "
                 "printf '%s\\n' \"${COMPREPLY[@]}\"")
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        return {w.strip() for w in done.stdout.split()}

    assert {"report", "results"} <= complete("re")
    assert "--resume" in complete("run", "--res")


def test_a_run_with_errored_trials_is_not_plain_done(fake_bin: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path, pages="[100, 2000]", trials=1, timeout="1s")
    done = orchestrate("run", str(suite), "--results-dir", str(tmp_path / "r"),
                       env={"FAKE_BEHAVIOUR": "hang"})
    assert done.returncode == 3
    manifest = rundir.read_manifest(tmp_path / "r" / "latest")
    assert manifest["status"] == "done-with-errors"
    assert manifest["outcomes"] == {"error": 4}
    summary = orchestrate("results", "latest", "--results-dir", str(tmp_path / "r"))
    assert "done-with-errors" in summary.stdout.splitlines()[0]


def test_plain_log_lines_name_the_point(fake_bin: Path, suite_file: Path,
                                        tmp_path: Path) -> None:
    done = orchestrate("run", str(suite_file), "--results-dir", str(tmp_path / "r"))
    lines = [line for line in done.stderr.splitlines() if " trial " in line]
    assert "native/host fork pages=2000 ptes_per_table=512 cow=False trial 3: ok" in lines[-1]


def test_skips_are_logged_once_per_point_with_the_reason(fake_bin: Path,
                                                         tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(write_suite(tmp_path).read_text().replace(
        "kind: fork-dirty", "kind: dirty-log"))  # host-driven: skipped natively
    done = orchestrate("run", str(suite), "--results-dir", str(tmp_path / "r"))
    skipped = [line for line in done.stderr.splitlines() if ": skipped" in line]
    assert len(skipped) == 2  # one per point (2 native points), never one per trial
    assert all("pages=" in line and "(" in line for line in skipped)


def test_resume_honours_results_dir(fake_bin: Path, suite_file: Path, tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "r", tmp_path / "other"
    assert orchestrate("run", str(suite_file), "--results-dir", str(root)).returncode == 0
    run_dir = (root / "latest").resolve()
    by_name = orchestrate("run", "--resume", "latest", "--results-dir", str(root))
    assert by_name.returncode == 0, by_name.stderr
    assert str(run_dir) in by_name.stdout
    outside = orchestrate("run", "--resume", str(run_dir), "--results-dir", str(elsewhere))
    assert outside.returncode == 2
    assert "is not a run under --results-dir" in outside.stderr
    assert not elsewhere.exists()


def test_the_relative_default_results_dir_gives_absolute_paths(fake_bin: Path,
                                                               suite_file: Path,
                                                               tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = orchestrate("run", str(suite_file), cwd=work)
    assert done.returncode == 0, done.stderr
    run_dir = (work / "results" / "latest").resolve()
    assert f"results: {run_dir}" in done.stdout  # an absolute path, printed as such
    listing = orchestrate("results", "--json", cwd=work)
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)


def test_doctor_json_is_one_object_with_the_facts() -> None:
    done = orchestrate("doctor", "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["schema"] == "orchestrate.doctor/1"
    assert facts["accel"] in ("kvm", "tcg") and isinstance(facts["runs_in_progress"], list)
    assert "qemu" in facts["tools"]
    assert {"governor", "turbo", "aslr", "thp", "ksm", "nmi_watchdog", "busy_processes"} \
        <= facts["stability"].keys()
    assert isinstance(facts["stability_warnings"], list)


def test_the_status_is_written_even_when_the_tables_cannot_be(
        fake_bin: Path, suite_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import entry as cli

    def no_space(run_dir: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tables, "finalize_tables", no_space)
    code = cli.main(["run", str(suite_file), "--results-dir", str(tmp_path / "r")])
    assert code == 3
    err = capsys.readouterr().err
    assert "could not be written" in err and "Traceback" not in err
    manifest = rundir.read_manifest(tmp_path / "r" / "latest")
    assert manifest["status"] == "done" and manifest["outcomes"] == {"ok": 8}
    assert "No space left" in manifest["tables_error"]

"""trace-cmd capture: the command line (all QEMU threads named) and an honest failure where
ftrace cannot be enabled. A real capture is read back in the nested lab e2e (tests/lab)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from orchestrator.tracing.capture import record_argv, recording


def test_every_thread_of_the_process_is_traced(tmp_path: Path) -> None:
    for tid in ("100", "7", "12"):
        (tmp_path / "100" / "task" / tid).mkdir(parents=True)
    argv = record_argv(100, tmp_path / "t.dat", ["kvm:kvm_exit", "kvmmmu:kvm_mmu_get_page"],
                       proc_root=tmp_path)
    assert argv[:2] == ["trace-cmd", "record"]
    assert argv[argv.index("-o") + 1] == str(tmp_path / "t.dat")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-P"] == ["7", "12", "100"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-e"] == [
        "kvm:kvm_exit", "kvmmmu:kvm_mmu_get_page"]


def test_a_capture_that_cannot_record_is_reported_not_hidden(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        start = time.monotonic()
        # here ftrace cannot be enabled (a restricted kernel); elsewhere it would record
        with recording(sleeper.pid, tmp_path / "c" / "t.dat", ["sched:sched_switch"],
                       start_timeout=30) as problems:
            pass
        assert time.monotonic() - start < 60
        recorded = (tmp_path / "c" / "t.dat").exists()
        assert recorded == (not problems), problems  # a file, or a reason: never neither
        assert recorded or "trace-cmd" in problems[-1]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not subprocess.run(["pgrep", "-f", f"trace-cmd record -o {tmp_path}"],
                              capture_output=True).stdout  # no recorder left behind


def test_a_timeline_capture_is_stamped_with_the_tsc(tmp_path: Path) -> None:
    (tmp_path / "100" / "task" / "100").mkdir(parents=True)
    argv = record_argv(100, tmp_path / "t.dat", ["kvm:kvm_exit"], proc_root=tmp_path,
                       clock="x86-tsc")
    assert argv[argv.index("-C") + 1] == "x86-tsc"
    assert "-C" not in record_argv(100, tmp_path / "t.dat", [], proc_root=tmp_path)

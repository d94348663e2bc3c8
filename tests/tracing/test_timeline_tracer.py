"""The tracer's part in a timeline: the guest is set up before the trial and read after it,
outside every counting window, also when the trial fails; the guest boundary is scripted (what
the guest runs is recorded), the host side is this machine's (where ftrace cannot record)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.suite.loader import parse_suite
from orchestrator.suite.plan import make_plan
from orchestrator.tracing import timeline
from orchestrator.tracing.perf import PerfTracer

pytestmark = pytest.mark.needs_root  # the host side is this machine's: its debugfs (root's)

SUITE = """\
name: tl
paging: [tdp]
guests: {g: {image: mini}}
workloads:
  - {name: fork, kind: fork-dirty, params: {pages: [100]}, trials: 1, warmup: 0}
trace: {host: ["sched:sched_switch"], guest: ["exceptions:page_fault_user", "page-faults"],
        timeline: true}
"""


class ScriptedGuest:
    name = "g"

    def __init__(self, host_pid: int, setup_status: int = 0) -> None:
        self.host_pid, self.setup_status = host_pid, setup_status
        self.commands: list[str] = []

    def run(self, argv: Sequence[str], *, timeout: float) -> proc.Completed:
        if argv[:2] == ["perf", "list"]:
            return proc.Completed(tuple(argv), 0, "exceptions:page_fault_user page-faults", "")
        if list(argv) == timeline.guest_setup(["exceptions:page_fault_user"]):
            self.commands.append("setup")
            return proc.Completed(tuple(argv), self.setup_status, "",
                                  "sh: can't create x: nonexistent directory")
        if list(argv) == timeline.guest_collect(["exceptions:page_fault_user"]):
            self.commands.append("collect")
            return proc.Completed(tuple(argv), 0, "", "")
        self.commands.append(" ".join(argv))
        return proc.Completed(tuple(argv), 0, "", "")


@pytest.fixture
def sleeper() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "120"])  # stands in for the guest's QEMU process
    yield child.pid
    child.kill()
    child.wait()


def _tracer_and_point(tmp_path: Path) -> tuple[PerfTracer, object]:
    loaded = parse_suite(SUITE, tmp_path / "suite.yaml")
    return PerfTracer(loaded.suite), make_plan(loaded.suite).groups[0].points[0]


def test_set_up_before_and_read_after_the_trial_even_when_it_fails(
        tmp_path: Path, sleeper: int) -> None:
    tracer, point = _tracer_and_point(tmp_path)
    guest = ScriptedGuest(sleeper)
    with pytest.raises(RuntimeError), \
            tracer(guest, point, tmp_path / "captures" / "c-0.dat") as window:  # type: ignore[arg-type]
        assert guest.commands == ["setup"]
        wrapped = window.wrap(["fork-dirty"])
        assert wrapped[:2] == ["sh", "-c"] and wrapped[-1] == "fork-dirty"
        assert "perf stat" in " ".join(wrapped)  # counting inside, tracing on/off outside
        raise RuntimeError("the trial failed")
    assert guest.commands == ["setup", "collect"]


def test_a_guest_that_cannot_trace_gets_no_timeline_and_says_why(
        tmp_path: Path, sleeper: int) -> None:
    tracer, point = _tracer_and_point(tmp_path)
    guest = ScriptedGuest(sleeper, setup_status=1)
    with tracer(guest, point, tmp_path / "captures" / "c-0.dat") as window:  # type: ignore[arg-type]
        assert window.wrap(["fork-dirty"])[:3] == ["perf", "stat", "-x,"]  # not traced
    assert guest.commands == ["setup"]  # nothing to read back
    assert window.info == {}
    assert "no timeline: the guest could not trace on the TSC clock: sh: can't create x" \
        in window.problem

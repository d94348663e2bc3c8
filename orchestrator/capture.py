"""A full record of one trial's host events with trace-cmd, for looking at individual events
(`trace-cmd report FILE`), next to the counts every trial gets.

trace-cmd's -P filters by thread id, and a guest's vCPUs are threads of its QEMU process that
exist before the trial starts, so every thread of the QEMU process is named. Recording starts
before the trial (trace-cmd says "Hit Ctrl^C to stop recording" once its buffers are armed)
and ends with SIGINT, which makes trace-cmd write the file. Where ftrace cannot be enabled
(this project's own machines: "Can't enable ftrace") the trial is marked and runs on.
"""

from __future__ import annotations

import logging
import select
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestrator import proc

log = logging.getLogger(__name__)

READY = "Hit Ctrl^C to stop recording"


def record_argv(pid: int, out: Path, events: Sequence[str], proc_root: Path = Path("/proc")
                ) -> list[str]:
    tids = sorted((p.name for p in (proc_root / str(pid) / "task").iterdir()), key=int)
    # line-buffered stdout: through a pipe trace-cmd would hold its "ready" line until exit
    argv = ["stdbuf", "-oL", "trace-cmd", "record", "-o", str(out)]
    for event in events:
        argv += ["-e", event]
    for tid in tids:
        argv += ["-P", tid]
    return argv


@contextmanager
def recording(pid: int, out: Path, events: Sequence[str], *,
              start_timeout: float = 120) -> Iterator[list[str]]:
    """Record for the with-block; yields a list that receives a problem, if one occurs."""
    problems: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with proc.background(record_argv(pid, out, events), settle_s=0) as child:
        if not _armed(child, time.monotonic() + start_timeout):
            problems.append("trace-cmd never started recording")
        yield problems
        err = proc.stop_background(child, signal.SIGINT, timeout=120)
    if child.returncode not in (0, None) or not out.exists():
        problems.append(f"trace-cmd record failed: {err.strip()[-200:]}")
    if problems:
        log.warning("capture %s: %s", out.name, "; ".join(problems))


def _armed(child: object, deadline: float) -> bool:
    stdout = getattr(child, "stdout", None)
    if stdout is None:
        return False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        line = stdout.readline()
        if not line:
            return False  # trace-cmd exited
        if READY in line:
            return True
    return False

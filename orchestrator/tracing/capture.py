"""A full record of one trial's host events with trace-cmd, for looking at individual events
(`trace-cmd report -i FILE`), next to the counts every trial gets.

trace-cmd's -P filters by thread id, and a guest's vCPUs are threads of its QEMU process that
exist before the trial starts, so every thread of the QEMU process is named. Recording starts
before the trial (once the per-CPU recorders have opened their files) and ends with SIGINT,
which makes trace-cmd write the file. Where ftrace cannot be enabled (this project's own
machines: "Can't enable ftrace"), the trial is marked and runs on.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestrator import proc

log = logging.getLogger(__name__)

def record_argv(pid: int, out: Path, events: Sequence[str], proc_root: Path = Path("/proc"),
                clock: str | None = None) -> list[str]:
    """`clock`: the ftrace clock to stamp events with (trace-cmd's default is "local")."""
    tids = sorted((p.name for p in (proc_root / str(pid) / "task").iterdir()), key=int)
    argv = ["trace-cmd", "record", "-o", str(out)]
    if clock is not None:
        argv += ["-C", clock]
    for event in events:
        argv += ["-e", event]
    for tid in tids:
        argv += ["-P", tid]
    return argv


@contextmanager
def recording(pid: int, out: Path, events: Sequence[str], *, clock: str | None = None,
              start_timeout: float = 120) -> Iterator[list[str]]:
    """Record for the with-block; yields a list that receives a problem, if one occurs."""
    problems: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with proc.background(record_argv(pid, out, events, clock=clock), settle_s=0) as child:
        if not _armed(child, out, time.monotonic() + start_timeout):
            problems.append("trace-cmd never started recording")
        yield problems
        err = proc.stop_background(child, signal.SIGINT, timeout=120)
    if child.returncode not in (0, None) or not out.exists():
        problems.append(f"trace-cmd record failed: {err.strip()[-200:]}")
    if problems:
        log.warning("capture %s: %s", out.name, "; ".join(problems))


def _armed(child: subprocess.Popen[str], out: Path, deadline: float) -> bool:
    """Recording has begun once trace-cmd's per-CPU recorders have opened their files
    (OUT.cpuN); its "Hit Ctrl^C" line is no signal through a pipe (it comes at exit)."""
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False  # trace-cmd gave up (e.g. ftrace cannot be enabled here)
        if any(out.parent.glob(f"{out.name}.cpu*")):
            time.sleep(0.2)  # every CPU's recorder, not just the first
            return True
        time.sleep(0.05)
    return False

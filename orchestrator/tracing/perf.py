"""Kernel event counts per trial with perf stat: around the workload, and on the host.

Guest side (or the lab host itself for native rows): the workload runs under
`perf stat -x, -e EVENTS --`, so the count covers exactly that process and its children; perf
writes its CSV to stderr, which is split off before the workload's own output is read.
Host side (guests only): `perf stat -p <QEMU pid>` runs from just before to just after the
trial, so it counts what this guest's vCPUs and device threads caused (kvm:*, kvmmmu:*).
Names may be globs (`kvmmmu:*`); they are expanded against the events that kernel has
(`perf list --raw-dump`). An event that kernel lacks is recorded as unavailable (count NaN),
never as 0; one perf cannot count is likewise unavailable. Host names `kvmstat:<name>` are
KVM's own per-VM counters, read as deltas (kvm_stats); guest names `vmstat:<name>` are
/proc/vmstat deltas around the workload (vmstat).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.model import EventCount
from orchestrator.proc import CommandError
from orchestrator.suite.kinds import KINDS
from orchestrator.suite.plan import Point
from orchestrator.suite.schema import Suite, TraceSpec
from orchestrator.tracing import kvm_stats, timeline, vmstat
from orchestrator.tracing.capture import recording
from orchestrator.tracing.event_globs import expand_globs

log = logging.getLogger(__name__)

# Used when a suite lists `default` among its events; each kind adds its own (suite/kinds.py).
DEFAULT_GUEST = ("page-faults", "minor-faults", "major-faults", "exceptions:page_fault_user",
                 "tlb:tlb_flush")
DEFAULT_HOST = ("kvm:kvm_exit", "kvm:kvm_page_fault", "kvmmmu:kvm_mmu_get_page",
                "kvmmmu:kvm_mmu_sync_page", "kvmmmu:kvm_mmu_unsync_page",
                "kvmmmu:kvm_mmu_prepare_zap_page", "kvmmmu:fast_page_fault",
                "kvmmmu:kvm_tdp_mmu_spte_changed")


def with_defaults(requested: Sequence[str], side: str, kind: str) -> list[str]:
    """`default` in a suite's event list, replaced by this side's defaults for the kind."""
    registered = KINDS[kind]
    if side == "guest":  # a host-assisted kind has no single guest process to count around
        base = () if registered.host_assisted else DEFAULT_GUEST
        defaults = (*base, *registered.guest_events)
    else:
        defaults = (*DEFAULT_HOST, *registered.host_events)
    return [n for item in requested for n in (defaults if item == "default" else [item])]


Runner = Callable[[Sequence[str], float], proc.Completed]


def known_events(run: Runner) -> set[str]:
    done = run(["perf", "list", "--raw-dump", "tracepoint", "sw"], 120)
    return set(done.stdout.split()) if done.returncode == 0 else set()


def parse_perf_csv(stderr: str, names: Sequence[str]) -> tuple[dict[str, float | None], str]:
    """perf stat -x, lines -> counts (None when perf could not count); the rest of stderr."""
    counts: dict[str, float | None] = {}
    rest = []
    for line in stderr.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[2] in names:
            value = fields[0].strip()
            counts[fields[2]] = None if value.startswith("<") else _number(value)
        else:
            rest.append(line)
    return counts, "\n".join(rest)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def events_of(names: Sequence[str], known: set[str], counts: dict[str, float | None],
              side: str) -> tuple[EventCount, ...]:
    out = []
    for name in names:
        count = counts.get(name) if name in known else None
        out.append(EventCount(side, name, count, count is not None))
    return tuple(out)


@dataclass
class TraceWindow:
    """One trial's events: `wrap` the argv before running, `collect` the finished command."""

    guest_names: list[str] = field(default_factory=list)
    guest_known: set[str] = field(default_factory=set)
    vmstat_names: list[str] = field(default_factory=list)
    timeline_events: list[str] = field(default_factory=list)  # guest tracepoints, via tracefs
    counts: tuple[EventCount, ...] = ()
    problem: str = ""  # a tracer that failed: the trial keeps its timing, the row says why
    info: dict[str, object] = field(default_factory=dict)  # for the trial's journal info

    def no_guest_side(self) -> None:
        """For trials with no single guest process to wrap (dirty-log, migrate)."""
        self.guest_names, self.vmstat_names, self.timeline_events = [], [], []

    def wrap(self, argv: list[str]) -> list[str]:
        usable = [n for n in self.guest_names if n in self.guest_known]
        if usable:
            argv = ["perf", "stat", "-x,", "--no-big-num", "-e", ",".join(usable), "--", *argv]
        # outside perf, so perf never counts the shell and sed of the vmstat snapshots
        argv = vmstat.wrap(argv) if self.vmstat_names else argv
        # outermost, so neither perf nor vmstat counts the two writes that turn tracing on/off
        return timeline.guest_wrap(argv) if self.timeline_events else argv

    def collect(self, done: proc.Completed) -> proc.Completed:
        stderr = done.stderr
        if self.vmstat_names:
            before, after, stderr = vmstat.split(stderr)
            self.counts += vmstat.deltas(self.vmstat_names, before, after)
        if self.guest_names:
            counts, stderr = parse_perf_csv(stderr, self.guest_names)
            self.counts += events_of(self.guest_names, self.guest_known, counts, "guest")
        return proc.Completed(done.argv, done.returncode, done.stdout, stderr)


@dataclass
class PerfTracer:
    """The executor's tracer: knows the suite's event sets and caches what each side has."""

    suite: Suite
    _known: dict[str, set[str]] = field(default_factory=dict)

    def spec_for(self, point: Point) -> TraceSpec:
        workload = next(w for w in self.suite.workloads if w.name == point.workload)
        return workload.trace or self.suite.trace

    @contextmanager
    def __call__(self, target: object, point: Point,
                 capture: Path | None = None) -> Iterator[TraceWindow]:
        """`capture`: where a full trace-cmd record of this trial goes, if the suite asks."""
        spec = self.spec_for(point)
        host = with_defaults(spec.host, "host", point.kind)
        run = getattr(target, "run", None)
        window = self._guest_side(with_defaults(spec.guest, "guest", point.kind), run,
                                  f"guest:{getattr(target, 'name', '')}")
        pid = getattr(target, "host_pid", None)
        stats = [n for n in host if n.startswith(kvm_stats.PREFIX)]
        perf_host = [n for n in host if not n.startswith(kvm_stats.PREFIX)]
        if not pid or not host:
            yield window
            return
        stat_names = expand_globs(stats, kvm_stats.available(pid))
        problems: list[str] = []
        host_counts: Callable[[], tuple[EventCount, ...]] = tuple
        on_timeline = (capture is not None and spec.timeline and run is not None
                       and not KINDS[point.kind].host_assisted)
        guest_problems = _timeline_setup(window, run) if on_timeline and run is not None else []
        events: list[str] = []
        dumps: list[str] = []
        with ExitStack() as stack:
            if window.timeline_events and run is not None:
                # first in, so last out: read outside every counting window, on every path
                stack.callback(_timeline_collect, window.timeline_events, run, dumps)
            if capture is not None and (spec.capture or on_timeline):
                events = [n for n in expand_globs(perf_host, self._host_known())
                          if n in self._host_known() and ":" in n]  # tracepoints only
                offsets = timeline.WRITE_TSC_OFFSET  # what the guest stamps convert with
                if on_timeline and offsets in self._host_known() and offsets not in events:
                    events.append(offsets)
                problems = stack.enter_context(recording(
                    pid, capture, events, clock=timeline.CLOCK if on_timeline else None))
            tsc = timeline.tsc_map(pid) if on_timeline else None
            if perf_host:
                host_counts = stack.enter_context(self._host_window(perf_host, pid, window))
            # innermost, so the deltas cover the trial, not the tracers' start and stop
            before = kvm_stats.snapshot(pid, stat_names)
            yield window
            after = kvm_stats.snapshot(pid, stat_names)
        window.counts += host_counts() + kvm_stats.deltas(before, after)
        if dumps and capture is not None and not problems:
            window.info, problem = timeline.build(capture, events, dumps[0],
                                                  window.timeline_events, tsc)
            problems += [problem] if problem else []
        if (problems or guest_problems) and not window.problem:
            window.problem = "; ".join(problems[:1] + guest_problems)

    def _guest_side(self, guest: list[str], run: Callable[..., proc.Completed] | None,
                    key: str) -> TraceWindow:
        """A window with the guest's events: perf's (checked against what the guest's kernel
        has, asked once per guest) and /proc/vmstat's."""
        window = TraceWindow()
        if run is None:
            return window
        perf_guest = [n for n in guest if not n.startswith(vmstat.PREFIX)]
        vmstat_guest = [n for n in guest if n.startswith(vmstat.PREFIX)]
        if perf_guest:
            if key not in self._known:
                self._known[key] = known_events(lambda a, t: run(a, timeout=t))
            window.guest_known = self._known[key]
            window.guest_names = expand_globs(perf_guest, window.guest_known)
        if vmstat_guest:
            if f"vmstat:{key}" not in self._known:
                done = run(["cat", "/proc/vmstat"], timeout=60)
                self._known[f"vmstat:{key}"] = {vmstat.PREFIX + line.split()[0] for line in
                                                done.stdout.splitlines() if line.strip()}
            window.vmstat_names = expand_globs(vmstat_guest, self._known[f"vmstat:{key}"])
        return window

    def _host_known(self) -> set[str]:
        if "host" not in self._known:
            self._known["host"] = known_events(lambda a, t: proc.run(a, timeout=t, check=False))
        return self._known["host"]

    @contextmanager
    def _host_window(self, requested: Sequence[str], pid: int,
                     window: TraceWindow) -> Iterator[Callable[[], tuple[EventCount, ...]]]:
        known = self._host_known()
        names = expand_globs(requested, known)
        usable = [n for n in names if n in known]
        result: list[EventCount] = []
        if not usable:
            yield lambda: events_of(names, known, {}, "host")
            return
        with tempfile.TemporaryDirectory(prefix="orch-perf-") as tmp:
            ctl, ack = Path(tmp) / "ctl", Path(tmp) / "ack"
            os.mkfifo(ctl)
            os.mkfifo(ack)
            # -D -1: start disabled; counting begins only when perf acks "enable", so a slow
            # perf start (seconds, in a nested lab) can never miss the start of the trial
            argv = ["perf", "stat", "-x,", "--no-big-num", "-e", ",".join(usable),
                    "-p", str(pid), "-D", "-1", "--control", f"fifo:{ctl},{ack}"]
            with proc.background(argv, settle_s=0) as perf:
                enabled = _enable(ctl, ack, perf, deadline_s=120)
                yield lambda: tuple(result)
                died = not enabled or perf.poll() is not None  # before we asked it to stop
                stderr = proc.stop_background(perf, signal.SIGINT, timeout=60)
        counts, _ = parse_perf_csv(stderr, names)
        if died and enabled and perf.returncode == 0 and not _alive(pid):
            # perf -p ends cleanly with the process it follows: a migration moved the guest
            # to another QEMU, and the counts cover the source (where logging cost) up to then
            window.problem = "host events cover the guest's QEMU until it ended mid-trial"
        elif died:
            counts = {}  # whatever it printed covers only part of the trial
            window.problem = (f"host tracer died mid-trial (exit {perf.returncode})" if enabled
                              else "host tracer never started counting")
            log.warning("%s: %s", window.problem, stderr.strip()[-200:])
        result.extend(events_of(names, known, counts, "host"))


def _timeline_setup(window: TraceWindow, run: Callable[..., proc.Completed]) -> list[str]:
    """The guest's tracepoints set up for the timeline (window.timeline_events), before the
    trial; a guest that cannot trace them leaves the trial without a timeline, saying why."""
    events = [n for n in window.guest_names if ":" in n and n in window.guest_known]
    if not events:
        return ["no timeline: none of the guest events is a tracepoint that guest has"]
    done = run(timeline.guest_setup(events), timeout=120)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return [f"no timeline: the guest could not trace on the TSC clock: {why[:160]}"]
    window.timeline_events = events
    return []


def _timeline_collect(events: list[str], run: Callable[..., proc.Completed],
                      dumps: list[str]) -> None:
    """The guest's trace read and its tracefs put back; a guest gone by now has nothing to
    put back, and the trial's own error says why."""
    try:
        dumps.append(run(timeline.guest_collect(events), timeout=600).stdout)
    except CommandError as exc:
        log.warning("timeline: the guest's trace could not be read: %s", exc.one_line())


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _enable(ctl: Path, ack: Path, perf: subprocess.Popen[str], *, deadline_s: float) -> bool:
    """Tell a disabled perf to start counting; True once it has acknowledged."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and perf.poll() is None:
        try:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until perf opens it
        except OSError:
            time.sleep(0.05)
            continue
        ack_fd = os.open(ack, os.O_RDONLY | os.O_NONBLOCK)
        try:
            os.write(fd, b"enable\n")
            while time.monotonic() < end and perf.poll() is None:
                try:
                    if os.read(ack_fd, 64).startswith(b"ack"):
                        return True
                except BlockingIOError:
                    pass
                time.sleep(0.02)
        finally:
            os.close(fd)
            os.close(ack_fd)
    return False

"""Host and guest events of one trial on one timeline (`trace: {timeline: true}`).

Both sides stamp their ftrace events with the TSC (trace_clock x86-tsc): the host through its
trace-cmd capture of the guest's QEMU, the guest through tracefs around the workload. Under KVM
the guest's TSC is the host's, scaled and offset by what KVM programmed for the vCPU: KVM shows
the offset in debugfs (`<pid>-<fd>/vcpuN/tsc-offset`, and the scaling ratio where the CPU has
TSC scaling) and traces each change of it (kvm_write_tsc_offset, in the capture), so guest
stamps convert exactly onto the host's: a guest page fault lines up with the VM exits and
shadow-MMU work around it. This is what trace-cmd's agent mode does with its
kvm time-sync plugin, without the vsock channel the agent needs (no vhost-vsock here).

The guest side needs no tool in the guest, only tracefs and a shell: the events are set up
before the trial and the ring buffer read after it, both outside every counting window; the
trial itself only turns tracing on and off around the workload.
"""

from __future__ import annotations

import bisect
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import proc

if TYPE_CHECKING:
    import pandas as pd

TRACEFS = "/sys/kernel/tracing"
GUEST_SAVED = "/tmp/orch-timeline.saved"  # noqa: S108 - inside the throwaway guest
BUFFER_KB = 32768  # per CPU: a 64,000-page fork-dirty makes ~100,000 guest events
CLOCK = "x86-tsc"
U64 = 1 << 64

# "<task>-<pid> [cpu] <flags> <timestamp>: <event>: <details>" from tracefs `trace`, and
# "<task>-<pid> [cpu]<timestamp>: ..." from `trace-cmd report` (no flags; on the TSC clock
# trace-cmd 3.1 leaves no space before the stamp); on the TSC clock the stamp is an integer
LINE_RE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]"
                     r"\s*(?:[^\s:]{4,5}\s+)?(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>\w+):\s*"
                     r"(?P<detail>.*)$")


def _enables(events: Sequence[str], tracefs: str) -> str:
    return " ".join(shlex.quote(f"{tracefs}/events/{e.replace(':', '/')}/enable")
                    for e in events)


def guest_setup(events: Sequence[str], *, tracefs: str = TRACEFS,
                saved: str = GUEST_SAVED) -> list[str]:
    """Before the trial (outside every counting window): the TSC clock, a buffer big enough,
    `events` (sys:name) enabled, tracing still off; the clock and buffer size as they were go
    to `saved`, for guest_collect. Fails (exit status, stderr) where the guest cannot trace."""
    script = f"""T={shlex.quote(tracefs)}
clock=$(sed -n 's/.*\\[\\(.*\\)\\].*/\\1/p' $T/trace_clock)
size=$(cat $T/buffer_size_kb); size=${{size%% *}}
echo "clock=${{clock:-local}} size=$size" > {shlex.quote(saved)}
echo 0 > $T/tracing_on && echo {CLOCK} > $T/trace_clock &&
echo {BUFFER_KB} > $T/buffer_size_kb && : > $T/trace || exit 1
for f in {_enables(events, tracefs)}; do echo 1 > "$f" || exit 1; done"""
    return ["sh", "-c", script]


def guest_wrap(argv: Sequence[str], *, tracefs: str = TRACEFS) -> list[str]:
    """The workload with tracing on: two writes to tracefs are all the trial itself carries."""
    script = f"""echo 1 > {shlex.quote(tracefs)}/tracing_on
"$@"; rc=$?
echo 0 > {shlex.quote(tracefs)}/tracing_on
exit $rc"""
    return ["sh", "-c", script, "orch-timeline", *argv]


def guest_collect(events: Sequence[str], *, tracefs: str = TRACEFS,
                  saved: str = GUEST_SAVED) -> list[str]:
    """After the trial: the events off, the buffer printed, the clock and buffer size put back
    as they were, the buffer emptied. Prints the trace on stdout."""
    script = f"""T={shlex.quote(tracefs)}
echo 0 > $T/tracing_on
for f in {_enables(events, tracefs)}; do echo 0 > "$f"; done
cat $T/trace
clock=local; size=; [ -f {shlex.quote(saved)} ] && . {shlex.quote(saved)}
: > $T/trace; echo "$clock" > $T/trace_clock; [ -n "$size" ] && echo "$size" > $T/buffer_size_kb
rm -f {shlex.quote(saved)}"""
    return ["sh", "-c", script]


WRITE_TSC_OFFSET = "kvm:kvm_write_tsc_offset"  # recorded on the host with every timeline
OFFSET_RE = re.compile(r"vcpu=(\d+) prev=\d+ next=(\d+)")


def _signed(value: int) -> int:
    return value - U64 if value >= 1 << 63 else value


@dataclass(frozen=True)
class TscMap:
    """guest_tsc = (host_tsc * ratio >> frac_bits) + offset, per vCPU. The offset is KVM's at
    the start (debugfs), then whatever KVM wrote during the trial (kvm_write_tsc_offset, in host
    order): where the host's TSC is marked unstable (as in an emulated lab host) KVM rewrites it
    whenever a vCPU thread is scheduled in, so that the guest's TSC never jumps."""

    offsets: dict[int, int]  # vCPU -> offset when the capture began
    ratio: int = 1
    frac_bits: int = 0
    # vCPU -> (guest TSC from which each new offset holds, kept non-decreasing; the offsets),
    # from the kvm_write_tsc_offset events of the capture, in host order
    changes: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)

    def with_changes(self, host: Sequence[TraceEvent]) -> TscMap:
        changes: dict[int, tuple[list[int], list[int]]] = {}
        for event in sorted(host, key=lambda e: e.tsc):
            match = OFFSET_RE.search(event.detail) if event.event == WRITE_TSC_OFFSET else None
            if match:
                vcpu, offset = int(match[1]), _signed(int(match[2]))
                starts, offsets = changes.setdefault(vcpu, ([], []))
                start = ((event.tsc * self.ratio) >> self.frac_bits) + offset
                starts.append(max(start, starts[-1]) if starts else start)
                offsets.append(offset)
        return replace(self, changes=changes)

    def to_host(self, guest_tsc: int, vcpu: int = 0) -> int:
        """The host TSC at which the vCPU's TSC read guest_tsc: under the last offset whose
        span of guest time had begun by then."""
        offset = self.offsets.get(vcpu, self.offsets.get(0, next(iter(self.offsets.values()))))
        starts, offsets = self.changes.get(vcpu, ([], []))
        index = bisect.bisect_right(starts, guest_tsc) - 1
        if index >= 0:
            offset = offsets[index]
        return (((guest_tsc - offset) % U64) << self.frac_bits) // self.ratio


def tsc_map(qemu_pid: int, debugfs: Path = Path("/sys/kernel/debug/kvm")) -> TscMap | None:
    """What KVM programmed for the guest of this QEMU process; None without KVM's debugfs."""
    for vm in sorted(debugfs.glob(f"{qemu_pid}-*")):
        offsets = {}
        for vcpu in vm.glob("vcpu*"):
            try:
                offsets[int(vcpu.name[4:])] = int((vcpu / "tsc-offset").read_text())
            except (OSError, ValueError):
                continue
        if not offsets:
            continue
        try:  # only where the CPU scales the TSC
            ratio = int((vm / "vcpu0" / "tsc-scaling-ratio").read_text())
            frac = int((vm / "vcpu0" / "tsc-scaling-ratio-frac-bits").read_text())
        except (OSError, ValueError):
            return TscMap(offsets)
        return TscMap(offsets, ratio, frac)
    return None


@dataclass(frozen=True)
class TraceEvent:
    side: str  # host | guest
    event: str  # sys:name
    tsc: int  # on the host's TSC
    cpu: int
    task: str
    pid: int
    detail: str
    guest_tsc: int | None = None  # the guest's own stamp (guest events)


def parse_events(text: str, side: str, names: Sequence[str]) -> Iterator[TraceEvent]:
    """Trace lines -> events, stamped as written; `names` (sys:name) give their full names."""
    full = {n.split(":", 1)[-1]: n for n in names}
    for line in text.splitlines():
        match = LINE_RE.match(line)
        if match is None or "." in match["ts"]:
            continue  # headers, lost-event notes; a dotted stamp is not the TSC clock's
        yield TraceEvent(side, full.get(match["event"], match["event"]), int(match["ts"]),
                         int(match["cpu"]), match["task"].strip(), int(match["pid"]),
                         match["detail"])


def merge(host_text: str, host_events: Sequence[str], guest_text: str,
          guest_events: Sequence[str], tsc: TscMap) -> pd.DataFrame:
    """One table ordered on the host's TSC: side, event, tsc (host cycles), guest_tsc (the
    guest's own stamp, guest rows only), cpu, task, pid, detail."""
    import pandas as pd  # here, not at the top: the executor loads this module, not tables

    rows = list(parse_events(host_text, "host", host_events))
    tsc = tsc.with_changes(rows)
    rows += [replace(e, tsc=tsc.to_host(e.tsc, e.cpu), guest_tsc=e.tsc)
             for e in parse_events(guest_text, "guest", guest_events)]
    frame = pd.DataFrame({
        "side": pd.array([e.side for e in rows], dtype="string"),
        "event": pd.array([e.event for e in rows], dtype="string"),
        # TSC values need all 64 bits: never through float
        "tsc": pd.array([e.tsc for e in rows], dtype="UInt64"),
        "guest_tsc": pd.array([e.guest_tsc for e in rows], dtype="UInt64"),
        "cpu": pd.array([e.cpu for e in rows], dtype="Int32"),
        "task": pd.array([e.task for e in rows], dtype="string"),
        "pid": pd.array([e.pid for e in rows], dtype="Int32"),
        "detail": pd.array([e.detail for e in rows], dtype="string"),
    })
    return frame.sort_values("tsc", kind="stable", ignore_index=True)


def build(capture: Path, host_events: Sequence[str], guest_dump: str,
          guest_events: Sequence[str], tsc: TscMap | None) -> tuple[dict[str, object], str]:
    """The trial's timeline next to its host capture (CAPTURE.timeline.parquet): (what the
    trial's row records about it, a problem or "")."""
    if tsc is None:
        return {}, "no timeline: KVM's debugfs shows no tsc-offset for the guest's QEMU"
    report = proc.run(["trace-cmd", "report", "-i", str(capture)], timeout=900, check=False)
    if report.returncode != 0:
        return {}, f"no timeline: trace-cmd report failed: {report.stderr.strip()[-160:]}"
    frame = merge(report.stdout, host_events, guest_dump, guest_events, tsc)
    out = capture.with_name(capture.stem + ".timeline.parquet")
    frame.to_parquet(out, index=False)
    sides = frame["side"].value_counts()
    return {"timeline": out.name, "tsc_offsets": {str(k): v for k, v in tsc.offsets.items()},
            "timeline_host_events": int(sides.get("host", 0)),
            "timeline_guest_events": int(sides.get("guest", 0))}, ""

"""/proc/vmstat deltas around a workload: THP allocations and splits, NUMA and reclaim
counters, the kernel's own page-fault tallies (`vmstat:thp_fault_alloc`, `vmstat:pgfault`).

The workload's argv (already wrapped by perf stat, so perf never counts these extra
processes) is wrapped once more in a small shell that copies /proc/vmstat to stderr, tagged,
before and after. /proc/vmstat is system-wide: in a dedicated guest that is the workload and
its kernel; natively it includes whatever else the host did meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.model import EventCount

PREFIX = "vmstat:"
_BEFORE, _AFTER = "@orch-vmstat-0 ", "@orch-vmstat-1 "
_SCRIPT = (f'sed "s/^/{_BEFORE}/" /proc/vmstat >&2; "$@"; rc=$?; '
           f'sed "s/^/{_AFTER}/" /proc/vmstat >&2; exit $rc')


def wrap(argv: Sequence[str]) -> list[str]:
    return ["sh", "-c", _SCRIPT, "sh", *argv]


def split(stderr: str) -> tuple[dict[str, int], dict[str, int], str]:
    """(before, after, the rest of stderr) from a wrapped command's stderr."""
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    rest = []
    for line in stderr.splitlines():
        for tag, table in ((_BEFORE, before), (_AFTER, after)):
            if line.startswith(tag):
                name, _, value = line[len(tag):].partition(" ")
                table[name] = int(value)
                break
        else:
            rest.append(line)
    return before, after, "\n".join(rest)


def deltas(names: Sequence[str], before: dict[str, int],
           after: dict[str, int]) -> tuple[EventCount, ...]:
    out = []
    for name in names:
        key = name[len(PREFIX):]
        if key in before and key in after:
            out.append(EventCount("guest", name, float(after[key] - before[key]), True))
        else:
            out.append(EventCount("guest", name, None, False))  # this kernel lacks it
    return tuple(out)

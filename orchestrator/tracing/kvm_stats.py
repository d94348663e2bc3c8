"""KVM's own per-VM statistics as per-trial deltas: the cheap counters beside the tracepoints.

KVM keeps counters per VM (exits, pf_fixed, mmu_shadow_zapped, mmu_unsync, tlb_flush, ...)
and shows them in debugfs as /sys/kernel/debug/kvm/<QEMU pid>-<vm fd>/<name>; reading them
costs nothing while the guest runs, unlike a tracepoint. (The binary stats interface,
KVM_GET_STATS_FD, needs the VM's file descriptor, which only QEMU holds.) Suites name them
`kvmstat:<name>` (globs allowed) among the host events; a counter this kernel lacks, or no
debugfs, is unavailable, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.model import EventCount

PREFIX = "kvmstat:"
DEBUGFS_KVM = Path("/sys/kernel/debug/kvm")


def vm_dirs(pid: int, root: Path = DEBUGFS_KVM) -> list[Path]:
    """The process's VM directories; none where debugfs cannot be read (it is root's only:
    then every counter is unavailable, never 0)."""
    try:
        return sorted(p for p in root.glob(f"{pid}-*") if p.is_dir())
    except PermissionError:
        return []


def available(pid: int, root: Path = DEBUGFS_KVM) -> set[str]:
    return {PREFIX + f.name for d in vm_dirs(pid, root) for f in d.iterdir() if f.is_file()}


def snapshot(pid: int, names: Sequence[str], root: Path = DEBUGFS_KVM) -> dict[str, int | None]:
    """Each counter summed over the process's VMs (QEMU has one); None where unreadable."""
    dirs = vm_dirs(pid, root)
    values: dict[str, int | None] = {}
    for name in names:
        total: int | None = None
        for directory in dirs:
            try:
                total = (total or 0) + int((directory / name[len(PREFIX):]).read_text())
            except (OSError, ValueError):
                total = None
                break
        values[name] = total
    return values


def deltas(before: dict[str, int | None], after: dict[str, int | None]) -> tuple[EventCount, ...]:
    out = []
    for name, start in before.items():
        end = after.get(name)
        if start is None or end is None:
            out.append(EventCount("host", name, None, False))
        else:
            out.append(EventCount("host", name, float(end - start), True))
    return tuple(out)

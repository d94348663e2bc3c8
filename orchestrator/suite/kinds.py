"""The workload kinds, each declared once: its name, its parameters, the guest-workloads program
it runs, whether the host drives its trial, and the events `default` adds for it.

Everything else reads this registry: the suite schema builds its `Workload` union from it,
workloads/adapters.py runs `binary` with one flag per parameter (an outside tool, `binary`
None, has its argv and parser there), workloads/dirty.py drives the `host_assisted` kinds, and
tracing/perf.py adds the events. It is pure data, so it lives with the suite, the lowest stage
that needs it; tests/core/test_kinds.py checks that the other stages agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from orchestrator.suite.fields import Frozen, NonNegInt, PosInt, Seconds, Size, Sweep

PAGE = 4096  # bytes per page: the workloads' `pages` are base pages


class Params(Frozen):
    """What every kind's parameters tell the suite checks: the memory its largest point needs."""

    sized_by: ClassVar[str | None] = "pages"  # the parameter that sets the memory, if any

    def peak_bytes(self) -> int:
        """Bytes the largest point of the sweep touches (what must fit in the guest or host)."""
        pages: tuple[int, ...] = getattr(self, "pages", (0,))
        return max(pages) * PAGE


class ForkDirtyParams(Params):
    pages: Sweep[PosInt]
    ptes_per_table: Sweep[Annotated[int, Field(ge=1, le=512)]] = (512,)
    cow: Sweep[bool] = (False,)

    def peak_bytes(self) -> int:
        pages = max(self.pages)
        copies = 2 if True in self.cow else 1  # with cow the child writes a copy of each page
        tables = 2 * -(-pages // min(self.ptes_per_table))  # parent's and child's PTE pages
        return (pages * copies + tables) * PAGE


class MprotectParams(Params):
    pages: Sweep[PosInt]
    range_pages: Sweep[NonNegInt] = (0,)  # 0 = the whole region
    iterations: Sweep[PosInt] = (100,)


class HugepageBacking(StrEnum):
    HUGETLB_2M = "hugetlb-2m"
    HUGETLB_1G = "hugetlb-1g"
    THP = "thp"
    SMALL = "small"


class HugepageParams(Params):
    size: Sweep[Size]
    backing: Sweep[HugepageBacking] = (HugepageBacking.HUGETLB_2M,)

    sized_by = "size"

    def peak_bytes(self) -> int:
        return max(self.size)


class FaultParams(Params):
    pages: Sweep[PosInt]
    backing: Sweep[Literal["anon", "file"]] = ("anon",)
    cache: Sweep[Literal["warm", "cold"]] = ("warm",)
    order: Sweep[Literal["seq", "random"]] = ("seq",)
    populate: Sweep[
        Literal["none", "map-populate", "madv-populate-write", "madv-willneed"]
    ] = ("none",)
    seed: Sweep[NonNegInt] = (1,)


class DirtierParams(Params):
    pages: Sweep[PosInt]
    rate: Sweep[NonNegInt] = (0,)  # pages per second; 0 = flat out
    duration: Sweep[Seconds] = (5.0,)
    interval: Sweep[Seconds] = (1.0,)


class NoopParams(Params):
    sized_by = None


class StressNgParams(Params):
    sized_by = None  # stress-ng sizes its own stressors
    stressor: Sweep[Literal["fork", "forkheavy", "fault", "mprotect", "mmaphuge", "vm", "mmap"]]
    workers: Sweep[PosInt] = (1,)
    ops: Sweep[PosInt] = (1000,)  # bogo operations per worker: fixed work, not fixed time


class DirtyLogParams(Params):
    """The dirtier in the guest; the host turns dirty logging on for the middle `phase`."""

    pages: Sweep[PosInt]
    rate: Sweep[NonNegInt] = (0,)  # pages per second; 0 = flat out
    phase: Sweep[Seconds] = (3.0,)  # seconds of logging off, on, off again


class MigrateParams(Params):
    """The dirtier in the guest while the host live-migrates it to a second QEMU (loopback)."""

    pages: Sweep[PosInt]
    rate: Sweep[NonNegInt] = (0,)
    phase: Sweep[Seconds] = (3.0,)  # seconds of dirtying before and after the migration
    downtime_ms: Sweep[PosInt] = (300,)  # QEMU's downtime-limit
    bandwidth_mib_s: Sweep[PosInt] = (1024,)  # QEMU's max-bandwidth


@dataclass(frozen=True)
class Kind:
    name: str  # what a suite's `kind:` says
    params: type[Params]  # its `params:`; optional in the suite when every one has a default
    # the guest-workloads program it runs (guest-workloads/Makefile builds it); None: an
    # outside tool, whose argv and parser workloads/adapters.py holds (TOOLS)
    binary: str | None
    # the metric a precision target (`trials: {ci_halfwidth: ...}`) watches unless the
    # workload names another: the one its question is about
    primary_metric: str
    # the host drives the trial (QMP, migration) around the program, started detached: there
    # is no single guest process to run or to count events around (workloads/dirty.DRIVERS)
    host_assisted: bool = False
    guest_events: tuple[str, ...] = ()  # what `default` adds for it on the guest side
    host_events: tuple[str, ...] = ()  # and on the host side
    # every metric its trials report (a program's own, then what the parser adds): a precision
    # target's `metric:` must be one (tests/workloads check them against the programs' output)
    metrics: tuple[str, ...] = ()


RUSAGE = ("rusage_minflt", "rusage_majflt", "rusage_nvcsw", "rusage_nivcsw")  # adapters adds


# Suite order: what `kind must be one of` lists.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("fork-dirty", ForkDirtyParams, "fork-dirty", "fork_us",
         metrics=("fork_us", "fork_wait_us", "cow_us", *RUSAGE)),
    Kind("mprotect", MprotectParams, "mprotect", "mprotect_ro_ns",
         metrics=("mprotect_ro_ns", "mprotect_rw_ns", "prot_fault_ns", *RUSAGE)),
    Kind("hugepage", HugepageParams, "hugepage", "fork_us",
         guest_events=("vmstat:thp_fault_alloc", "vmstat:thp_fault_fallback",
                       "vmstat:thp_split_page", "vmstat:htlb_buddy_alloc_success"),
         metrics=("populate_us", "fork_us", "fork_wait_us", "munmap_us", *RUSAGE)),
    Kind("fault", FaultParams, "fault", "ns_per_page",
         guest_events=("vmstat:pgfault", "vmstat:pgmajfault"),
         metrics=("populate_us", "touch_us", "ns_per_page", "minflt", "majflt", *RUSAGE)),
    Kind("dirtier", DirtierParams, "dirtier", "pages_per_s",
         metrics=("pages_per_s", "pages_written", "duration_s", *RUSAGE)),
    Kind("noop", NoopParams, "noop", "noop_ns", metrics=("noop_ns", *RUSAGE)),
    Kind("stress-ng", StressNgParams, None, "bogo_ops_per_s",
         metrics=("bogo_ops", "bogo_ops_per_s", "wall_s", "user_s", "system_s")),
    Kind("dirty-log", DirtyLogParams, "dirtier", "pages_per_s_on", host_assisted=True,
         host_events=("kvmstat:mmu_shadow_zapped", "kvmstat:pf_fixed"),
         metrics=("pages_per_s_off", "pages_per_s_on", "pages_per_s_after", "slowdown_pct",
                  "dirty_rate_mib_s", "logging_s")),
    Kind("migrate", MigrateParams, "dirtier", "total_time_ms", host_assisted=True,
         host_events=("kvmstat:mmu_shadow_zapped", "kvmstat:pf_fixed"),
         metrics=("pages_per_s_before", "pages_per_s_during", "pages_per_s_after",
                  "total_time_ms", "downtime_ms", "setup_time_ms", "transferred_mib",
                  "pages_transferred", "iterations")),
)}

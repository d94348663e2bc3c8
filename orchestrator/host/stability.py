"""Is this host quiet enough to measure on? The checks pyperf's `system tune` makes, read-only.

Each setting that adds noise or bias to page-table timings is recorded (the manifest keeps the
facts, the report shows them beside the figures) and, when it is not the quiet choice, named in
one warning line with the command that changes it (`doctor` prints them). Nothing is changed
here: a shared lab host's settings are its owner's; `host_prep: {apply: true}` in a suite is the
one way a run changes some of them, and puts them back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.host.host_prep import BOOST, conditions, read_setting, selected

ASLR = "proc/sys/kernel/randomize_va_space"
THP_DEFRAG = "sys/kernel/mm/transparent_hugepage/defrag"
KSM = "sys/kernel/mm/ksm/run"
NMI_WATCHDOG = "proc/sys/kernel/nmi_watchdog"
BUSY_SHARE = 0.10  # a process using more than this share of one CPU during the sample is busy
SAMPLE_S = 0.25


def _cpu_ticks(root: Path) -> dict[int, tuple[str, int]]:
    """pid -> (command name, user+system clock ticks so far), for every process now."""
    ticks: dict[int, tuple[str, int]] = {}
    for path in root.glob("proc/[0-9]*/stat"):
        stat = proc.stat_fields(path)
        if stat and len(stat[1]) > 12:  # utime, stime: fields 14, 15 of stat; 12, 13 here
            ticks[int(path.parent.name)] = (stat[0], int(stat[1][11]) + int(stat[1][12]))
    return ticks


def busy_processes(root: Path = Path("/"), sample_s: float = SAMPLE_S,
                   sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Processes other than this one that used more than BUSY_SHARE of a CPU over the sample."""
    hz = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks(root)
    sleep(sample_s)
    after = _cpu_ticks(root)
    busy = []
    for pid, (name, ticks) in after.items():
        if pid == os.getpid() or pid not in before:
            continue
        share = (ticks - before[pid][1]) / hz / sample_s
        if share > BUSY_SHARE:
            busy.append({"pid": pid, "name": name, "cpu_share": round(share, 2)})
    return sorted(busy, key=lambda p: -float(p["cpu_share"]))


def settings(root: Path = Path("/")) -> dict[str, Any]:
    """The noise-relevant settings as they are now (None where this host has no such knob);
    governor, boost and THP as host_prep records them for every run."""
    measured = conditions(root)
    boost, no_turbo = (measured["boost"].get(path) for path in BOOST)
    turbo = None if boost is None and no_turbo is None else (boost == "1" or no_turbo == "0")
    return {
        "governor": measured["governor"],
        "turbo": turbo,
        "aslr": read_setting(root / ASLR),
        "thp": measured["thp"],
        "thp_defrag": selected(read_setting(root / THP_DEFRAG)),
        "ksm": read_setting(root / KSM),
        "nmi_watchdog": read_setting(root / NMI_WATCHDOG),
    }


def facts(root: Path = Path("/"), sample_s: float = SAMPLE_S) -> dict[str, Any]:
    """settings() plus the busy processes seen over a short sample: for the manifest."""
    return {**settings(root), "busy_processes": busy_processes(root, sample_s)}


def _warn_if(condition: bool, text: str) -> list[str]:
    return [text] if condition else []


def warnings(found: dict[str, Any]) -> list[str]:
    """One line per setting that is not the quiet choice, each with how to change it."""
    governor = found.get("governor")
    busy = found.get("busy_processes") or []
    return [
        *_warn_if(governor is not None and governor != "performance",
                  f"CPU frequency governor is {governor}: clocks change under load "
                  "(hint: cpupower frequency-set -g performance)"),
        *_warn_if(found.get("turbo") is True,
                  "turbo/boost is on: the clock depends on temperature and other cores "
                  "(hint: echo 0 > /sys/devices/system/cpu/cpufreq/boost, or 1 > "
                  "/sys/devices/system/cpu/intel_pstate/no_turbo)"),
        *_warn_if(found.get("aslr") not in (None, "2"),
                  f"ASLR is {found.get('aslr')}, not full: one address layout for every trial "
                  "can bias all of them alike (hint: sysctl kernel.randomize_va_space=2)"),
        *_warn_if(found.get("thp") not in (None, "madvise"),
                  f"transparent hugepages are '{found.get('thp')}': khugepaged may collapse "
                  "memory behind the workloads, which choose per region (hint: echo madvise "
                  "> /sys/kernel/mm/transparent_hugepage/enabled)"),
        *_warn_if(found.get("ksm") == "1",
                  "KSM is merging pages: guest memory may be shared and copied on write "
                  "(hint: echo 0 > /sys/kernel/mm/ksm/run)"),
        *_warn_if(found.get("nmi_watchdog") not in (None, "0"),
                  "the NMI watchdog is on: periodic NMIs interrupt trials and hold a "
                  "performance counter (hint: sysctl kernel.nmi_watchdog=0)"),
        *_warn_if(bool(busy),
                  "other processes were busy: " + ", ".join(
                      f"{p['name']} (pid {p['pid']}, {p['cpu_share']:.0%} of a CPU)"
                      for p in busy[:5]) + " (hint: measure on an idle host)"),
    ]


def recorded(root: Path = Path("/")) -> dict[str, Any]:
    """What a run's manifest keeps: the facts and the warnings they give (readers of the
    manifest, such as the report, need not know the rules)."""
    found = facts(root)
    return {**found, "warnings": warnings(found)}

"""Facts about the lab host recorded in every run's manifest (what a replay must match)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from orchestrator.host import accel
from orchestrator.host.host_prep import HUGEPAGES_2M, THP, read_setting
from orchestrator.store.rundir import hostname


def _cpuinfo(root: Path) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in (read_setting(root / "proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "microcode", "vendor_id") and key not in facts:
            facts[key] = value.strip()
    return facts


def collect(root: Path = Path("/")) -> dict[str, Any]:
    cpu = _cpuinfo(root)
    kvm = accel.detect(root)
    return {
        "kvm_module": kvm.kvm_module,
        "kvm_params": kvm.params,
        "guest_accel": kvm.accel,
        "guest_paging_mode": kvm.paging_mode,
        "kvm_unusable_because": list(kvm.reasons),
        "hostname": hostname(),
        "kernel_release": platform.release(),
        "kernel_cmdline": read_setting(root / "proc/cmdline"),
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_model": cpu.get("model name"),
        "microcode": cpu.get("microcode"),
        "thp": read_setting(root / THP),  # all the choices, the active one in brackets
        "nr_hugepages_2m": read_setting(root / HUGEPAGES_2M),
    }

"""Facts about the lab host recorded in every run's manifest (what a replay must match)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from orchestrator.host import accel
from orchestrator.store.rundir import hostname


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _cpuinfo(root: Path) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in (_read(root / "proc/cpuinfo") or "").splitlines():
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
        "kernel_cmdline": _read(root / "proc/cmdline"),
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_model": cpu.get("model name"),
        "microcode": cpu.get("microcode"),
        "thp": _read(root / "sys/kernel/mm/transparent_hugepage/enabled"),
        "nr_hugepages_2m": _read(root / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
    }

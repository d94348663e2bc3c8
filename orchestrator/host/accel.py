"""Which accelerator guests get here, and which paging mode the host's KVM is in (from sysfs).

KVM counts as usable only with kvm_intel or kvm_amd loaded: a `/dev/kvm` served by kvm_pvm
(as on the project's own machines) cannot run distribution kernels, and guests would hang
after decompression. Then guests run under TCG, labelled so in every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

VENDOR_MODULES = {"kvm_intel": "ept", "kvm_amd": "npt"}


@dataclass(frozen=True)
class AccelReport:
    accel: str  # "kvm" | "tcg"
    kvm_module: str | None  # kvm_intel | kvm_amd | kvm_pvm | None
    paging_mode: str  # tdp | tdp-legacy | shadow under KVM; "tcg" otherwise
    params: dict[str, str] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()


def _yes(value: str | None) -> bool:
    return (value or "").strip().upper() in ("Y", "1")


def _param(root: Path, module: str, name: str) -> str | None:
    try:
        return (root / "sys/module" / module / "parameters" / name).read_text().strip()
    except OSError:
        return None


def detect(root: Path = Path("/")) -> AccelReport:
    loaded = [m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if (root / "sys/module" / m).is_dir()]
    has_dev = (root / "dev/kvm").exists()
    vendor = next((m for m in loaded if m in VENDOR_MODULES), None)
    if vendor is None or not has_dev:
        reasons = []
        if "kvm_pvm" in loaded:
            reasons.append("/dev/kvm is served by kvm_pvm, a paravirtual shadow-only "
                           "hypervisor that cannot boot distribution kernels")
        if not has_dev:
            reasons.append("there is no /dev/kvm")
        if vendor is None and "kvm_pvm" not in loaded:
            reasons.append("neither kvm_intel nor kvm_amd is loaded (no VMX/SVM?)")
        return AccelReport("tcg", loaded[0] if loaded else None, "tcg", {}, tuple(reasons))
    tdp_name = VENDOR_MODULES[vendor]
    params = {tdp_name: _param(root, vendor, tdp_name) or "?",
              "tdp_mmu": _param(root, "kvm", "tdp_mmu") or "?"}
    if not _yes(params[tdp_name]):
        mode = "shadow"
    else:
        mode = "tdp" if _yes(params["tdp_mmu"]) or params["tdp_mmu"] == "?" else "tdp-legacy"
    return AccelReport("kvm", vendor, mode, params, ())

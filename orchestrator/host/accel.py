"""Which accelerator guests get here, and which paging mode the host's KVM is in (from sysfs).

KVM counts as usable only with kvm_intel or kvm_amd loaded: a `/dev/kvm` served by kvm_pvm
(as on the project's own machines) cannot run distribution kernels, and guests would hang
after decompression. Then guests run under TCG, labelled so in every row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ExitCode
from orchestrator.host import host_prep, provenance

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


def doctor_lines(root: Path = Path("/")) -> list[str]:
    report = detect(root)
    lines = [f"accelerator for guests: {report.accel}"]
    if report.accel == "kvm":
        lines.append(f"KVM module {report.kvm_module}, paging mode {report.paging_mode} "
                     f"({', '.join(f'{k}={v}' for k, v in report.params.items())})")
    else:
        lines += [f"  why not KVM: {r}" for r in report.reasons]
        lines.append("  guests run under TCG: rows say accel=tcg, paging_mode=tcg; such "
                     "timings are not comparable to KVM ones")
    versions = provenance.tool_versions()
    lines.append("tools: " + ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items()))
    conditions = host_prep.conditions(root)
    lines.append(f"THP {conditions['thp']}, 2 MiB hugepages {conditions['hugepages_2m']}, "
                 f"governor {conditions['governor'] or 'n/a'}")
    lines.append("libvirt: " + ("virsh found" if shutil.which("virsh") else "virsh missing"))
    return lines


def add_parser(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="what this host can do, and why (and recover "
                                           "crashed runs first)")
    doctor.add_argument("--json", action="store_true",
                        help="the same facts as one JSON object on stdout")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    # A crashed run may have left KVM in shadow mode or THP off: put that right first, so
    # what doctor reports is the host's own state. (Imported here: recovery needs paging,
    # which needs this module.)
    from orchestrator.run import recovery

    survey = recovery.recover_unless_locked(
        by=f"orchestrate doctor (pid {os.getpid()})",
        say=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        facts = doctor_facts()
        facts["runs_in_progress"] = [{"run": s.name, "why": s.why} for s in survey.alive]
        print(json.dumps(facts, indent=1, sort_keys=True))
        return ExitCode.OK
    for line in doctor_lines():
        print(line)
    alive = [f"{s.name} ({s.why})" for s in survey.alive]
    print("runs in progress: " + (", ".join(alive) if alive else "none"))
    return ExitCode.OK


def doctor_facts(root: Path = Path("/")) -> dict[str, Any]:
    """What `doctor` prints, as data: schema `orchestrate.doctor/1`."""
    report = detect(root)
    return {
        "schema": "orchestrate.doctor/1",
        "accel": report.accel, "kvm_module": report.kvm_module,
        "paging_mode": report.paging_mode, "kvm_params": report.params,
        "why_not_kvm": list(report.reasons), "tools": provenance.tool_versions(),
        "host_conditions": host_prep.conditions(root), "virsh": shutil.which("virsh"),
    }

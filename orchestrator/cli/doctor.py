"""`orchestrate doctor`: what this host can do, and why; crashed runs are put right first.

A verb of the front door, not of the host package: it asks the host (accelerator, paging
mode, measurement conditions, tool versions) and, before that, recovers dead runs, which
reaches into the run stage. Kept here, no host module has to import upward.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from orchestrator.errors import ExitCode
from orchestrator.host import host_prep, provenance, stability
from orchestrator.host.accel import detect
from orchestrator.run import recovery


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
    noisy = stability.warnings(stability.facts(root))
    lines.append("measurement stability: " + ("quiet" if not noisy else
                                              f"{len(noisy)} warning(s)"))
    lines += [f"  warning: {w}" for w in noisy]
    return lines


def add_parser(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="what this host can do, and why (and recover "
                                           "crashed runs first)")
    doctor.add_argument("--json", action="store_true",
                        help="the same facts as one JSON object on stdout")
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    # A crashed run may have left KVM in shadow mode or THP off: put that right first, so
    # what doctor reports is the host's own state.
    survey = recovery.recover_unless_locked(
        by=f"orchestrate doctor (pid {os.getpid()})",
        say=lambda line: print(line, file=sys.stderr, flush=True), settings=args.settings)
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
        "stability": (found := stability.facts(root)),
        "stability_warnings": stability.warnings(found),
    }

"""A run SIGKILLed inside the nested lab, in shadow mode with its L2 guest running, and the
next command there: KVM back in two-dimensional paging (a real kvm_amd reload in L1), no QEMU
left, the run marked crashed, and the command saying what it restored. One L1 boot."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.guests.images import build_mini
from orchestrator.lab.l1 import NPT, Lab, load_kvm, nested_lab
from orchestrator.lab.run import orchestrate_in_lab, start_inner
from orchestrator.store import rundir
from orchestrator.suite.loader import load_suite

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e, pytest.mark.needs_root]
ROOT = Path(__file__).resolve().parents[2]

# one trial far longer than the test: the run is killed while it is in shadow mode
SUITE = """\
name: lab-crash
paging: [shadow]
guests:
  small: {image: mini, vcpus: 1, memory: 1GiB}
workloads:
  - {name: dirty, kind: dirtier, params: {pages: 1024, duration: 900s}, trials: 1, warmup: 0}
timeouts: {boot: 600s, trial: 1200s}
"""
QEMU = "qemu-system-x86"  # the comm of qemu-system-x86_64 (15 characters)


def l1_state(lab: Lab) -> tuple[str, list[str]]:
    """(npt, PIDs of QEMU processes) in L1, in one round trip."""
    done = lab.run(["sh", "-c", f"cat {NPT} 2>/dev/null || echo -; pgrep -x {QEMU} || true"],
                   timeout=60, idempotent=True)
    npt, *pids = done.stdout.split()
    return npt, pids


def test_a_run_killed_in_shadow_mode_is_recovered_by_the_next_command(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    build_mini()
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    began = time.monotonic()
    with nested_lab(tmp_path / "lab") as lab:
        load_kvm(lab, npt=True)  # the lab host's own state
        assert l1_state(lab) == ("Y", [])
        booted = time.monotonic()
        start_inner(lab, load_suite(suite))
        deadline = time.monotonic() + 900
        while (state := l1_state(lab))[0] != "N" or not state[1]:
            assert not (lab.workdir / "inner.rc").exists(), \
                (lab.workdir / "inner.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the run never got to shadow mode with a guest"
            time.sleep(2)
        in_shadow = time.monotonic()
        pid = (lab.workdir / "inner.pid").read_text().strip()
        lab.run(["kill", "-9", pid], timeout=60)
        while not (lab.workdir / "inner.rc").exists():
            time.sleep(0.5)
        # nothing of the run restored KVM: it is still in shadow mode; its QEMU went with it
        # (a death signal), and its ledger says what it had started and changed
        npt, qemus = l1_state(lab)
        assert npt == "N"
        run_dir = next((lab.workdir / "results").glob("*-lab-crash-*"))
        entries = [json.loads(line) for line in
                   (run_dir / "ledger.jsonl").read_text().splitlines()]
        assert {"kvm", "process", "run"} <= {e["kind"] for e in entries}
        kvm = next(e for e in entries if e["kind"] == "kvm")
        assert kvm["vendor"] == "kvm_amd" and kvm["before"]["tdp"] is True
        assert any(e["kind"] == "process" and e["argv"].startswith("qemu-system-x86_64")
                   for e in entries)
        assert rundir.read_manifest(run_dir)["status"] == "running"

        killed = time.monotonic()
        done = orchestrate_in_lab(lab, "doctor", timeout=900)
        recovered = time.monotonic()
        print(f"L1 boot + kvm_amd load {booted - began:.0f}s; run to shadow with a guest "
              f"{in_shadow - booted:.0f}s; doctor (recovery) {recovered - killed:.0f}s; "
              f"QEMUs left right after the kill: {qemus}")
        print(done.stderr)
        assert done.returncode == 0, done.stderr
        assert f"run {run_dir.name} is dead (pid {pid} is gone): recovering it" in done.stderr
        assert "reloaded kvm_amd npt=1 (kvm tdp_mmu=1): paging mode tdp, verified from sysfs" \
            in done.stderr
        assert f"run {run_dir.name}: marked crashed in its manifest" in done.stderr
        assert "KVM module kvm_amd, paging mode tdp" in done.stdout
        assert l1_state(lab) == ("Y", [])
        manifest = rundir.read_manifest(run_dir)
        assert manifest["status"] == "crashed" and "orchestrate doctor" in manifest["crashed_by"]

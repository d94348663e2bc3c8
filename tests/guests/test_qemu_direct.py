"""Guests started by QEMU directly (the nested lab's launcher), for real under TCG here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import BadInput, HarnessError, Unavailable
from orchestrator.guests.guest import booted_guest, launcher_name
from orchestrator.guests.images import Image
from orchestrator.guests.qemu_direct import qemu_argv
from orchestrator.guests.ssh import new_run_key
from orchestrator.store import reader
from tests.guests.conftest import spec_for

SUITE = """\
name: direct-test
paging: [tdp]
guests:
  mini: {image: mini, vcpus: 1, memory: 768MiB}
workloads:
  - {name: fork, kind: fork-dirty, params: {pages: [1280]}, trials: 2, warmup: 0}
timeouts: {boot: 120s, trial: 60s}
"""


def test_command_line_follows_the_spec(tmp_path: Path, mini_image: Image) -> None:
    spec = replace(spec_for(mini_image, tmp_path, accel="kvm"), hugepages="2M", vcpus=2,
                   disk=tmp_path / "d.qcow2")
    argv = qemu_argv(spec)
    joined = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "768"
    assert f"hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22" in joined
    assert "mem-path=/dev/hugepages," in joined and "memory-backend=mem0" in joined
    assert f"file={tmp_path / 'd.qcow2'},format=qcow2" in joined
    assert "-no-reboot" in argv  # a guest that reboots or panics ends, as with libvirt
    tcg = qemu_argv(spec_for(mini_image, tmp_path))
    assert tcg[tcg.index("-accel") + 1] == "tcg" and tcg[tcg.index("-cpu") + 1] == "max"
    with pytest.raises(Unavailable, match="cpu_pins needs the libvirt launcher"):
        qemu_argv(replace(spec, cpu_pins=(0,)))
    ring = qemu_argv(replace(spec, dirty_ring=4096))
    assert ring[ring.index("-accel") + 1] == "kvm,dirty-ring-size=4096"


def test_unknown_launcher_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_GUEST_LAUNCHER", "xen")
    with pytest.raises(BadInput, match="not a guest launcher"):
        launcher_name()


@pytest.mark.integration
def test_boot_ssh_and_no_process_left(mini_image: Image, tmp_path: Path) -> None:
    key, public = new_run_key(tmp_path)
    spec = spec_for(mini_image, tmp_path)
    with booted_guest(spec, mini_image, key=key, public_key=public, uri="unused",
                      boot_timeout=120, launcher="qemu") as (domain, session):
        pid = domain.qemu_pid()
        assert pid is not None and f"-name\0{spec.name}" in Path(
            f"/proc/{pid}/cmdline").read_text()
        assert session.run(["uname", "-r"], timeout=30).stdout.strip() == \
            mini_image.kernel_release
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped on the way out


@pytest.mark.integration
def test_guest_panic_is_seen_with_the_console(mini_image: Image, tmp_path: Path) -> None:
    key, public = new_run_key(tmp_path)
    spec = spec_for(mini_image, tmp_path, cmdline="console=ttyS0 panic=-1 rdinit=/nope")
    with pytest.raises(HarnessError, match="died while booting"), booted_guest(
            spec, mini_image, key=key, public_key=public, uri="unused", boot_timeout=120,
            launcher="qemu"):
        pass
    assert "Kernel panic" in spec.console_log.read_text(errors="replace")


@pytest.mark.integration
def test_suite_run_with_the_direct_launcher_interrupted(mini_image: Image,
                                                        tmp_path: Path) -> None:
    """A whole run with ORCH_GUEST_LAUNCHER=qemu; SIGTERM while the guest is up leaves no
    QEMU behind and keeps what was measured."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("trials: 2", "trials: 200"))
    env = {**os.environ, "ORCH_GUEST_LAUNCHER": "qemu"}
    child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                              "--results-dir", str(tmp_path / "r")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = None
    for _ in range(600):
        journal = next((tmp_path / "r").glob("*/trials.jsonl"), None)
        if journal is not None and journal.read_text().count("\n") >= 2:
            break
        subprocess.run(["sleep", "0.5"], check=True)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    run = reader.load(tmp_path / "r" / "latest")
    assert run.manifest["status"] == "interrupted"
    assert len(run.trials) >= 2 and set(run.trials["accel"]) == {"tcg"}
    assert run.manifest["guests"]["tcg/mini"]["launcher"] == "qemu"
    leftover = subprocess.run(["pgrep", "-f", "--", f"-name orch-{run.path.name[-6:]}"],
                              capture_output=True, text=True)
    assert not leftover.stdout, leftover.stdout

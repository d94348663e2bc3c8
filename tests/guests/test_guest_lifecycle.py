"""Real guests under real libvirtd/QEMU (TCG here): boot, SSH, trials, and every fault path."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.guests.guest import booted_guest
from orchestrator.guests.images import Image
from orchestrator.guests.libvirt_domain import running_domain
from orchestrator.guests.ssh import new_run_key
from orchestrator.proc import CommandError
from orchestrator.store import reader
from tests.guests.conftest import project_domains, spec_for

pytestmark = pytest.mark.integration

SUITE = """\
name: guest-test
paging: [native, tdp]
guests:
  mini: {image: mini, vcpus: 1, memory: 768MiB, cmdline: "pti=on"}
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: [1280, 12800]}
    trials: 2
    warmup: 1
timeouts: {boot: 120s, trial: 60s}
"""


def test_suite_with_native_and_a_guest_gives_one_table(
        libvirtd: str, mini_image: Image, tmp_path: Path, no_leftover_domains: None) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                           "--results-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "runs under TCG" in done.stderr  # the user is told the guest timings are TCG's
    run = reader.load(tmp_path / "r" / "latest")
    fork = run.trials[run.trials["metric"] == "fork_us"]
    by_target = fork.groupby(["paging_requested", "paging_mode", "accel", "guest"]).size()
    assert by_target.to_dict() == {("native", "native", "native", "host"): 6,
                                   ("tdp", "tcg", "tcg", "mini"): 6}
    facts = run.manifest["guests"]["tcg/mini"]
    assert facts["pti"] == "on" and facts["kernel_release"] == mini_image.kernel_release
    assert "orch.ssh_key" not in facts["kernel_cmdline"]
    assert facts["runner"] == "orch-runner"  # the image's helper, not the shell loop
    assert list((run.path / "logs").glob("console-*.log"))


def test_guest_that_never_brings_ssh_up(libvirtd: str, mini_image: Image, tmp_path: Path,
                                        no_leftover_domains: None) -> None:
    key, public = new_run_key(tmp_path)
    # `sleep` as init (the words without "=" are its arguments): alive, but never any SSH
    spec = spec_for(mini_image, tmp_path,
                    cmdline="console=ttyS0 panic=-1 rdinit=/bin/busybox sleep 600")
    start = time.monotonic()
    with pytest.raises(HarnessError, match="no SSH from the guest within 15s"), booted_guest(
            spec, mini_image, key=key, public_key=public, uri=libvirtd, boot_timeout=15):
        pass
    assert time.monotonic() - start < 60
    assert spec.name not in project_domains(libvirtd)


def test_panic_ends_the_domain_at_once(libvirtd: str, mini_image: Image, tmp_path: Path,
                                       no_leftover_domains: None) -> None:
    key, public = new_run_key(tmp_path)
    spec = spec_for(mini_image, tmp_path, cmdline="console=ttyS0 panic=-1 rdinit=/nope")
    with pytest.raises(HarnessError, match="died while booting") as info, booted_guest(
            spec, mini_image, key=key, public_key=public, uri=libvirtd, boot_timeout=120):
        pass
    assert "Kernel panic" in spec.console_log.read_text(errors="replace")
    assert str(spec.console_log) in info.value.message
    assert "\n" not in info.value.one_line()


def test_wrong_host_key_is_refused(libvirtd: str, mini_image: Image, tmp_path: Path,
                                   no_leftover_domains: None) -> None:
    key, public = new_run_key(tmp_path)
    _, impostor = new_run_key(tmp_path / "other")
    forged = replace(mini_image, host_key_pub=" ".join(impostor.split()[:2]))
    with pytest.raises(HarnessError, match="host key mismatch"), booted_guest(
            spec_for(mini_image, tmp_path), forged, key=key, public_key=public, uri=libvirtd,
            boot_timeout=120):
        pass


def test_guest_killed_mid_command(libvirtd: str, mini_image: Image, tmp_path: Path,
                                  no_leftover_domains: None) -> None:
    key, public = new_run_key(tmp_path)
    spec = spec_for(mini_image, tmp_path)
    with booted_guest(spec, mini_image, key=key, public_key=public, uri=libvirtd,
                      boot_timeout=120) as (domain, session):
        assert session.run(["uname", "-r"], timeout=30).stdout.strip() == \
            mini_image.kernel_release
        with pytest.raises(CommandError) as info:
            session.run(["sh", "-c", "exit 7"], timeout=30)
        assert info.value.returncode == 7
        with pytest.raises(CommandError, match="timed out after 2s"):
            session.run(["sleep", "30"], timeout=2)
        killer = threading.Timer(2.0, lambda: subprocess.run(
            ["virsh", "-c", libvirtd, "destroy", spec.name], capture_output=True, check=False))
        killer.start()
        with pytest.raises(CommandError) as lost:
            session.run(["sleep", "60"], timeout=60)
        killer.join()
        assert lost.value.returncode is None
        assert not domain.is_alive()


def test_libvirt_not_reachable_is_one_line_with_a_hint(mini_image: Image,
                                                       tmp_path: Path) -> None:
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    with pytest.raises(HarnessError) as info, running_domain(spec_for(mini_image, tmp_path),
                                                             uri):
        pass
    assert "cannot connect to libvirt" in info.value.message
    assert "libvirtd-up" in info.value.hint
    assert "\n" not in info.value.one_line()


def test_run_against_a_dead_libvirt_records_errors_and_exits_3(
        mini_image: Image, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("[native, tdp]", "[tdp]"))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", str(suite), "--results-dir",
         str(tmp_path / "r")], capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ,
             "ORCH_LIBVIRT_URI": "qemu+unix:///system?socket=/nonexistent/sock"})
    assert done.returncode == 3
    assert "Traceback" not in done.stderr and "cannot connect to libvirt" in done.stderr
    trials = reader.load(tmp_path / "r" / "latest").trials
    assert set(trials["outcome"]) == {"error"} and len(trials) == 6


def test_gc_destroys_strays_from_a_crashed_run(libvirtd: str, mini_image: Image,
                                               tmp_path: Path) -> None:
    from orchestrator.guests.libvirt_domain import connect, domain_xml

    spec = spec_for(mini_image, tmp_path)
    conn = connect(libvirtd)
    conn.createXML(domain_xml(spec), 0)  # a guest whose run died without cleaning up
    conn.close()
    assert spec.name in project_domains(libvirtd)
    listed = subprocess.run([sys.executable, "-m", "orchestrator.cli", "gc", "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert spec.name in listed.stdout and spec.name in project_domains(libvirtd)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "gc"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and spec.name in done.stdout
    assert spec.name not in project_domains(libvirtd)

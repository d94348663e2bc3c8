"""Guests as QEMU processes started directly, for hosts where libvirt cannot run them.

The nested lab's L1 is such a host: a libvirt-defined L2 hung before its firmware there while
the same kernel and initramfs booted at once from a plain QEMU command line, so the lab runs
suites with this launcher (`ORCH_GUEST_LAUNCHER=qemu`). It mirrors libvirt_domain: the command
line is a pure function of the DomainSpec, and the process lives exactly as long as the
with-block. Like the libvirt domains, guests never restart (-no-reboot, panic=-1) and the
watchdog powers them off.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import HarnessError, Unavailable
from orchestrator.libvirt_domain import NIC_PCI_SLOT, DomainSpec

log = logging.getLogger(__name__)

HUGEPAGE_MOUNTS = {"2M": "/dev/hugepages", "1G": "/dev/hugepages1G"}


def qemu_argv(spec: DomainSpec) -> list[str]:
    if spec.cpu_pins:
        raise Unavailable("cpu_pins needs the libvirt launcher",
                          hint="drop cpu_pins from the guest, or run where libvirtd runs guests")
    accel = ["-accel", "kvm", "-cpu", "host"] if spec.accel == "kvm" else \
        ["-accel", "tcg", "-cpu", "max"]
    argv = [
        "qemu-system-x86_64", "-name", spec.name, "-machine", "q35", *accel,
        "-smp", str(spec.vcpus), "-m", str(spec.memory_mib),
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.cmdline,
        "-serial", f"file:{spec.console_log}",
        "-device", "i6300esb", "-watchdog-action", "poweroff",
        "-netdev", f"user,id=orchnet,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", f"virtio-net-pci,netdev=orchnet,bus=pcie.0,addr={NIC_PCI_SLOT}",
    ]
    if spec.hugepages != "none":
        argv += ["-object", f"memory-backend-file,id=mem0,size={spec.memory_mib}M,"
                            f"mem-path={HUGEPAGE_MOUNTS[spec.hugepages]},prealloc=on",
                 "-machine", "memory-backend=mem0"]
    if spec.disk is not None:
        argv += ["-drive", f"file={spec.disk},format=qcow2,if=virtio"]
    return argv


@dataclass
class RunningQemu:
    """libvirt_domain.RunningDomain's interface, over a child process."""

    name: str
    console_log: Path
    process: subprocess.Popen[bytes]

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def console_tail(self, lines: int = 15) -> str:
        try:
            text = self.console_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def qemu_pid(self) -> int | None:
        return self.process.pid if self.is_alive() else None


@contextmanager
def running_qemu(spec: DomainSpec) -> Iterator[RunningQemu]:
    """A guest QEMU that exists exactly as long as the with-block, on every exit path."""
    argv = qemu_argv(spec)
    spec.console_log.parent.mkdir(parents=True, exist_ok=True)
    stderr_path = spec.console_log.with_suffix(".qemu.log")
    with stderr_path.open("wb") as stderr:
        try:
            child = subprocess.Popen(  # noqa: S603 - argv list, never a shell
                argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                start_new_session=True)
        except OSError as exc:
            raise HarnessError(f"could not start QEMU for guest {spec.name}: {exc.strerror}",
                               hint="is qemu-system-x86 installed?") from None
    log.info("guest %s started as QEMU pid %d (%s, ssh on 127.0.0.1:%d)", spec.name,
             child.pid, spec.accel, spec.ssh_port)
    try:
        yield RunningQemu(spec.name, spec.console_log, child)
    finally:
        _stop(child)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # like virDomainDestroy: no guest shutdown
        except ProcessLookupError:
            pass
    child.wait()

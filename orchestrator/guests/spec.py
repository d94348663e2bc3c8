"""What every guest launcher shares: the guest's description (DomainSpec), its network (QEMU
user mode, one forwarded SSH port on 127.0.0.1), the tail of its logs, and QMP's replies.

Launcher-neutral and light: nothing here imports libvirt, so the nested lab (where libvirt
cannot run guests) and the QEMU launcher work on a host without libvirt-python.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import HarnessError

NETDEV_ID = "orchnet"
NIC_PCI_SLOT = "0x1a"  # clear of libvirt's root ports (low slots) and the ICH9 devices (0x1f)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    run_id: str
    accel: str  # "kvm" | "tcg"
    vcpus: int
    memory_mib: int
    hugepages: str  # "none" | "2M" | "1G"
    cpu_pins: tuple[int, ...] | None
    kernel: Path
    initrd: Path
    cmdline: str
    ssh_port: int
    console_log: Path
    disk: Path | None = None
    dirty_ring: int = 0  # KVM dirty-ring entries per vCPU; 0 = the dirty bitmap
    # an image with its own boot loader: "uefi" (OVMF, with this guest's copy of its
    # variables in firmware_vars) or "bios"; "" = direct kernel boot of kernel/initrd/cmdline
    firmware: str = ""
    firmware_vars: Path | None = None
    seed: Path | None = None  # the cloud-init NoCloud volume (cloud_init.py), read-only


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")  # Debian's ovmf, 2 MiB, no Secure Boot
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")  # its variables' template


def boot_args(spec: DomainSpec) -> list[str]:
    """How QEMU starts the guest: its kernel directly, or the disk's own boot loader through
    OVMF (UEFI) or QEMU's default SeaBIOS."""
    if not spec.firmware:
        return ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.cmdline]
    argv = []
    if spec.firmware == "uefi":
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={spec.firmware_vars}"]
    return argv


def pick_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nic_args(ssh_port: int) -> list[str]:
    """QEMU arguments of the guest's one NIC: user-mode networking (no bridge, no root),
    reachable from outside only by its SSH port, forwarded to 127.0.0.1:ssh_port."""
    return ["-netdev", f"user,id={NETDEV_ID},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device", f"virtio-net-pci,netdev={NETDEV_ID},bus=pcie.0,addr={NIC_PCI_SLOT}"]


def file_tail(path: Path, lines: int, *, sep: str = "\n") -> str:
    """The last lines of a log (a console written by virtlogd or QEMU, QEMU's own output),
    joined by sep; "" before it exists."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return sep.join(line.rstrip() for line in text.strip().splitlines()[-lines:])


def qmp_return(command: str, reply: dict[str, Any]) -> Any:
    """What QEMU answered to a QMP command, or its error as a HarnessError."""
    if "error" in reply:
        raise HarnessError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}",
                           hint="see QEMU's QMP reference for the command")
    return reply.get("return")

"""Guest domains through libvirt: the XML (a pure function) and the lifecycle (a context manager).

Domains are transient and named `orch-<run>-<guest>-<suffix>`, with a metadata element naming
the run, so `orchestrate gc` can find strays. A domain is written in the run's ledger before
it is created (libvirtd owns its QEMU, so no death signal of ours reaches it): a run killed
with its guest running is found dead by the next command, which destroys the guest. They
never restart: poweroff, reboot, crash and a watchdog expiry all end the domain, so a guest
panic (the kernel runs with panic=-1) is seen at once instead of hanging a night's run.
Networking is QEMU user mode with one forwarded port on 127.0.0.1 (libvirt 9.0 has no passt
portForward; its default NAT network is never used).
"""

from __future__ import annotations

import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from orchestrator.errors import HarnessError, Unavailable
from orchestrator.guests.spec import DomainSpec, file_tail, nic_args, qmp_return
from orchestrator.settings import DEFAULT_LIBVIRT_URI, current
from orchestrator.store import ledger

log = logging.getLogger(__name__)

NAME_PREFIX = "orch-"
METADATA_NS = "https://github.com/orchestrator/memvirt/run"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
DEFAULT_URI = DEFAULT_LIBVIRT_URI  # $ORCH_LIBVIRT_URI overrides it (settings.py)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def domain_xml(spec: DomainSpec) -> str:
    ET.register_namespace("qemu", QEMU_NS)
    root = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(root, "name", spec.name)
    meta = _sub(root, "metadata")
    ET.SubElement(meta, f"{{{METADATA_NS}}}run", id=spec.run_id)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus), placement="static")
    _memory_backing(root, spec)
    _cpu(root, spec)
    _os(root, spec)
    features = _sub(root, "features")
    features.append(ET.Element("acpi"))
    if spec.dirty_ring:
        _sub(_sub(features, "kvm"), "dirty-ring", state="on", size=str(spec.dirty_ring))
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _sub(root, event, "destroy")
    _devices(root, spec)
    _user_network(root, spec.ssh_port)
    return ET.tostring(root, encoding="unicode")


def _memory_backing(root: ET.Element, spec: DomainSpec) -> None:
    if spec.hugepages == "none":
        return
    size = {"2M": ("2", "M"), "1G": ("1", "G")}[spec.hugepages]
    pages = _sub(_sub(root, "memoryBacking"), "hugepages")
    _sub(pages, "page", size=size[0], unit=size[1])


def _cpu(root: ET.Element, spec: DomainSpec) -> None:
    if spec.accel == "kvm":
        _sub(root, "cpu", mode="host-passthrough", check="none", migratable="off")
    else:
        _sub(root, "cpu", mode="maximum", check="none")  # QEMU's -cpu max under TCG
    if spec.cpu_pins:
        tune = _sub(root, "cputune")
        for vcpu, host_cpu in enumerate(spec.cpu_pins):
            _sub(tune, "vcpupin", vcpu=str(vcpu), cpuset=str(host_cpu))


def _os(root: ET.Element, spec: DomainSpec) -> None:
    if spec.firmware:
        raise Unavailable("an image with its own boot loader boots with the qemu launcher only",
                          hint="set `launcher: qemu` on the guest (auto picks it)")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    _sub(os_el, "kernel", str(spec.kernel))
    _sub(os_el, "initrd", str(spec.initrd))
    _sub(os_el, "cmdline", spec.cmdline)


def _devices(root: ET.Element, spec: DomainSpec) -> None:
    devices = _sub(root, "devices")
    if spec.disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2")
        _sub(disk, "source", file=str(spec.disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(spec.console_log), append="off")  # written by virtlogd
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    _sub(devices, "watchdog", model="i6300esb", action="poweroff")
    _sub(devices, "memballoon", model="none")  # no balloon: guest memory stays what we set


def _user_network(root: ET.Element, port: int) -> None:
    commandline = ET.SubElement(root, f"{{{QEMU_NS}}}commandline")
    for arg in nic_args(port):
        ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)


def default_uri() -> str:
    """$ORCH_LIBVIRT_URI, else DEFAULT_URI: a library caller's default (commands pass theirs)."""
    return current().libvirt_uri


def connect(uri: str) -> libvirt.virConnect:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HarnessError(f"cannot connect to libvirt at {uri}: {exc.get_error_message()}",
                           hint="start libvirtd: scripts/libvirtd-up (or systemctl start "
                                "libvirtd)") from None


@dataclass
class RunningDomain:
    name: str
    console_log: Path
    _dom: libvirt.virDomain

    def is_alive(self) -> bool:
        try:
            return bool(self._dom.isActive())
        except libvirt.libvirtError:
            return False  # a transient domain that ended is gone entirely

    def console_tail(self, lines: int = 15) -> str:
        return file_tail(self.console_log, lines)

    def qmp(self, command: str, **arguments: Any) -> Any:
        """One QMP command through libvirt (it marks the domain tainted, which is harmless for a
        transient experiment guest)."""
        request = json.dumps({"execute": command, "arguments": arguments})
        try:
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(self._dom, request, 0))
        except libvirt.libvirtError as exc:
            raise HarnessError(f"QMP {command} on {self.name}: {exc.get_error_message()}",
                               hint=f"console log: {self.console_log}") from None
        return qmp_return(command, reply)

    def qemu_pid(self) -> int | None:
        pid_file = Path("/run/libvirt/qemu") / f"{self.name}.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


@contextmanager
def running_domain(spec: DomainSpec, uri: str = DEFAULT_URI) -> Iterator[RunningDomain]:
    """A transient domain that exists exactly as long as the with-block, on every exit path."""
    conn = connect(uri)
    try:
        spec.console_log.parent.mkdir(parents=True, exist_ok=True)
        entry = ledger.record("domain", name=spec.name, uri=uri)
        try:
            dom = conn.createXML(domain_xml(spec), 0)
        except libvirt.libvirtError as exc:
            ledger.undone(entry)
            message = exc.get_error_message()
            raise HarnessError(f"libvirt refused guest {spec.name}: {message}",
                               hint=refusal_hint(message)) from None
        log.info("guest %s started (%s, ssh on 127.0.0.1:%d)", spec.name, spec.accel,
                 spec.ssh_port)
        try:
            yield RunningDomain(spec.name, spec.console_log, dom)
        finally:
            if destroy(dom):
                ledger.undone(entry)
    finally:
        conn.close()


def refusal_hint(message: str) -> str:
    """Point where the problem is: a file libvirtd could not open is about that path, not
    about what the host can run."""
    if any(why in message for why in ("Unable to open", "No such file", "Permission denied",
                                      "Cannot access")):
        return ("libvirtd (and its QEMU) open that file themselves, from their own working "
                "directory and as their own user: the path must be absolute and reachable "
                "by them")
    if "hugepage" in message.lower():
        return ("reserve hugepages first (host_prep.hugepages_2m), or set the guest's "
                "hugepages: none")
    return "`orchestrate doctor` shows what this host can run"


def destroy(dom: libvirt.virDomain) -> bool:
    """Stop a domain (no guest shutdown); True once it is gone or stopped."""
    for _ in range(3):
        try:
            if not dom.isActive():
                return True
            dom.destroy()
            return True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True  # already gone (it powered off or crashed)
            time.sleep(0.5)
    log.error("could not destroy guest %s; `orchestrate gc` will try again", dom.name())
    return False


def destroy_by_name(conn: libvirt.virConnect, name: str) -> str:
    """Destroy (and undefine, if persistent) a domain by name: what was done, in words."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return f"guest {name} was already gone"
        raise HarnessError(f"libvirt: {exc.get_error_message()}", hint="") from None
    if not destroy(dom):
        raise HarnessError(f"libvirt could not destroy guest {name}",
                           hint="`virsh destroy` it by hand")
    try:
        dom.undefine()  # only persistent ones have a definition left
    except libvirt.libvirtError:
        pass
    return f"destroyed guest {name}"

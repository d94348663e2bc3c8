"""Guests as QEMU processes started directly, for hosts where libvirt cannot run them.

The nested lab's L1 is such a host: a libvirt-defined L2 hung before its firmware there while
the same kernel and initramfs booted at once from a plain QEMU command line, so the lab runs
suites with this launcher (`ORCH_GUEST_LAUNCHER=qemu`). It mirrors libvirt_domain: the command
line is a pure function of the DomainSpec, and the process lives exactly as long as the
with-block. Like the libvirt domains, guests never restart (-no-reboot, panic=-1) and the
watchdog powers them off. Each QEMU is a child started by proc.spawn: it dies with us (its
death signal) and is in the run's ledger, so recovery kills one that outlived a killed run.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from orchestrator import proc
from orchestrator.errors import HarnessError, Unavailable
from orchestrator.guests.spec import (
    DomainSpec,
    boot_args,
    file_tail,
    nic_args,
    pick_free_port,
    qmp_return,
)

log = logging.getLogger(__name__)

HUGEPAGE_MOUNTS = {"2M": "/dev/hugepages", "1G": "/dev/hugepages1G"}


def qemu_argv(spec: DomainSpec, *, qmp: Path | None = None,
              incoming: str | None = None) -> list[str]:
    if spec.cpu_pins:
        raise Unavailable("cpu_pins needs the libvirt launcher",
                          hint="drop cpu_pins from the guest, or run where libvirtd runs guests")
    ring = f",dirty-ring-size={spec.dirty_ring}" if spec.dirty_ring else ""
    accel = ["-accel", f"kvm{ring}", "-cpu", "host"] if spec.accel == "kvm" else \
        ["-accel", "tcg", "-cpu", "max"]
    argv = [
        "qemu-system-x86_64", "-name", spec.name, "-machine", "q35", *accel,
        "-smp", str(spec.vcpus), "-m", str(spec.memory_mib),
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none",
        *boot_args(spec),
        "-serial", f"file:{spec.console_log}",
        "-device", "i6300esb", "-watchdog-action", "poweroff",
        *nic_args(spec.ssh_port),
    ]
    if spec.hugepages != "none":
        argv += ["-object", f"memory-backend-file,id=mem0,size={spec.memory_mib}M,"
                            f"mem-path={HUGEPAGE_MOUNTS[spec.hugepages]},prealloc=on",
                 "-machine", "memory-backend=mem0"]
    if spec.disk is not None:
        argv += ["-drive", f"file={spec.disk},format=qcow2,if=virtio"]
    if spec.seed is not None:  # after the disk: the firmware tries the disk first
        argv += ["-drive", f"file={spec.seed},format=raw,if=virtio,readonly=on"]
    if qmp is not None:
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if incoming is not None:
        argv += ["-incoming", incoming]  # a migration destination: waits for the source
    return argv


@dataclass
class RunningQemu:
    """libvirt_domain.RunningDomain's interface, over a child process. After a migration the
    guest lives in another QEMU process: `process`, `spec` and `qmp_path` follow it."""

    name: str
    console_log: Path
    process: subprocess.Popen[bytes]
    spec: DomainSpec
    qmp_path: Path
    _others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ssh_port(self) -> int:
        return self.spec.ssh_port

    def qmp(self, command: str, **arguments: Any) -> Any:
        """One QMP command on the guest's QEMU; its error is a HarnessError, which says how
        QEMU ended when it is ending (it unlinks its monitor socket before it is reaped)."""
        if not self.is_alive():
            raise HarnessError(f"guest {self.name} is not running: no QMP {command}",
                               hint=self.end_report())
        try:
            return qmp_command(self.qmp_path, command, arguments)
        except MonitorUnreachable as exc:
            if _ended(self.process, within_s=EXIT_WAIT_S):
                raise HarnessError(f"guest {self.name} ended during QMP {command}",
                                   hint=self.end_report()) from None
            raise exc from None

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def end_report(self) -> str:
        """How the guest's QEMU ended, for an error: exit status, its stderr, the console."""
        return describe_end(self.process, self.console_log)

    def console_tail(self, lines: int = 15) -> str:
        return file_tail(self.console_log, lines)

    def qemu_pid(self) -> int | None:
        return self.process.pid if self.is_alive() else None

    def migrate_locally(self, *, timeout: float, downtime_ms: int,
                        bandwidth_mib_s: int) -> MigrationResult:
        """What makes this launcher's guests migratable (workloads.dirty.LocallyMigratable)."""
        return migrate_locally(self, timeout=timeout, downtime_ms=downtime_ms,
                               bandwidth_mib_s=bandwidth_mib_s)


class MonitorUnreachable(HarnessError):
    """QMP could not be spoken at all (no socket, refused, closed), unlike a command QEMU
    answered with an error."""


EXIT_WAIT_S = 3.0  # a QEMU that dropped its monitor and is exiting is reaped within this


def _ended(process: subprocess.Popen[bytes], within_s: float) -> bool:
    try:
        process.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def describe_end(process: subprocess.Popen[bytes], console_log: Path) -> str:
    status = process.poll()
    if status is None:
        how = "QEMU is still running"
    elif status < 0:
        how = f"QEMU was killed by signal {-status}"
    else:  # 0: the guest powered off, or reset under -no-reboot (a panic or a triple fault)
        how = f"QEMU exited with status {status}"
    stderr = file_tail(console_log.with_suffix(".qemu.log"), 2, sep=" | ")
    console = file_tail(console_log, 2, sep=" | ")
    return "; ".join([how, *(f"{what}: {text}" for what, text in
                             (("its stderr", stderr), ("console", console)) if text)])


def qmp_command(socket_path: Path, command: str, arguments: dict[str, Any]) -> Any:
    monitor = QEMUMonitorProtocol(str(socket_path))
    try:
        monitor.connect()
        monitor.settimeout(60)
        response = monitor.cmd_raw(command, arguments or None)
    except (OSError, EOFError, QMPError) as exc:
        # EOF: QEMU closed the monitor, usually because it died (see its .qemu.log)
        raise MonitorUnreachable(f"QMP {command} failed: {type(exc).__name__} {exc}".strip(),
                           hint=f"is the guest's QEMU still running? socket {socket_path}"
                           ) from None
    finally:
        try:
            monitor.close()
        except (OSError, EOFError, QMPError):
            pass  # the command's outcome is what counts
    return qmp_return(command, response)


def _start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        try:
            child: subprocess.Popen[bytes] = proc.spawn(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            return child
        except OSError as exc:
            raise HarnessError(f"could not start QEMU: {exc.strerror}",
                               hint="is qemu-system-x86 installed?") from None


@contextmanager
def running_qemu(spec: DomainSpec) -> Iterator[RunningQemu]:
    """A guest QEMU that exists exactly as long as the with-block, on every exit path (with
    every QEMU a migration started for it)."""
    spec.console_log.parent.mkdir(parents=True, exist_ok=True)
    sockets = Path(tempfile.mkdtemp(prefix="orch-qmp-"))  # short: a unix socket path is <108
    qmp = sockets / "qmp-0.sock"
    child = _start(qemu_argv(spec, qmp=qmp), spec.console_log.with_suffix(".qemu.log"))
    log.info("guest %s started as QEMU pid %d (%s, ssh on 127.0.0.1:%d)", spec.name,
             child.pid, spec.accel, spec.ssh_port)
    guest = RunningQemu(spec.name, spec.console_log, child, spec, qmp)
    try:
        yield guest
    finally:
        for process in [guest.process, *guest._others]:
            _stop(process)
        shutil.rmtree(sockets, ignore_errors=True)


@dataclass(frozen=True)
class MigrationResult:
    status: str  # completed | failed | cancelled
    stats: dict[str, Any]  # QMP query-migrate, as QEMU reported it at the end
    started_at: float
    ended_at: float


def migrate_locally(guest: RunningQemu, *, timeout: float, downtime_ms: int,
                    bandwidth_mib_s: int) -> MigrationResult:
    """Live-migrate the guest to a new QEMU on this host, over loopback TCP.

    libvirt refuses a same-host migration, so both ends are driven over QMP. On success the
    guest lives in the destination (new SSH port) and the source is gone; on failure the
    destination is killed and the guest keeps running in the source."""
    port, dest, dest_spec, dest_qmp = _start_destination(guest)
    try:
        guest.qmp("migrate-set-parameters", **{"downtime-limit": downtime_ms,
                                               "max-bandwidth": bandwidth_mib_s << 20})
        started = time.time()
        guest.qmp("migrate", uri=f"tcp:127.0.0.1:{port}")
        stats = _wait_for_migration(guest, started + timeout)
        ended = time.time()
    except BaseException:
        _abandon(guest, dest)
        raise
    if stats.get("status") != "completed":
        _abandon(guest, dest)
        return MigrationResult(str(stats.get("status")), stats, started, ended)
    source = guest.process
    guest._others.remove(dest)
    guest._others.append(source)
    guest.process, guest.spec, guest.qmp_path = dest, dest_spec, dest_qmp
    _stop(source)  # paused after the switch-over; the guest runs in the destination now
    return MigrationResult("completed", stats, started, ended)


DESTINATION_STARTS = 2  # free ports are picked by bind-and-close: another process may win one


def _start_destination(guest: RunningQemu
                       ) -> tuple[int, subprocess.Popen[bytes], DomainSpec, Path]:
    """A QEMU waiting for the guest on a loopback port: (port, process, spec, monitor). Nothing
    is measured yet, so a destination that does not start is started again on fresh ports."""
    start = 1
    while True:
        port = pick_free_port()
        dest_spec = replace(guest.spec, ssh_port=pick_free_port())
        dest_qmp = guest.qmp_path.with_name(f"qmp-{len(guest._others) + 1}.sock")
        dest = _start(qemu_argv(dest_spec, qmp=dest_qmp, incoming="defer"),
                      guest.console_log.with_suffix(".qemu.log"))
        guest._others.append(dest)
        try:
            _wait_for_monitor(dest_qmp, dest, guest.console_log)
            qmp_command(dest_qmp, "migrate-incoming", {"uri": f"tcp:127.0.0.1:{port}"})
        except HarnessError as exc:
            reason = _destination_failure(dest, guest.console_log, exc)
            _stop(dest)
            guest._others.remove(dest)
            dest_qmp.unlink(missing_ok=True)
            if start >= DESTINATION_STARTS:
                raise
            log.warning("guest %s: migration destination (start %d): %s; starting another",
                        guest.name, start, reason)
            start += 1
            continue
        return port, dest, dest_spec, dest_qmp


def _destination_failure(dest: subprocess.Popen[bytes], console_log: Path,
                         exc: HarnessError) -> str:
    """Why a destination did not take the guest. A QEMU that fails its set-up (a host forward
    on a port another process took) can accept on its monitor for a moment before it exits;
    then the monitor only says "connection reset", and QEMU's own exit and stderr say why."""
    try:
        dest.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return exc.one_line()
    return f"the migration destination QEMU did not start: {describe_end(dest, console_log)}"


def _wait_for_monitor(path: Path, process: subprocess.Popen[bytes], console_log: Path) -> None:
    """Until QEMU accepts on its monitor socket. The socket file exists from bind(), before
    listen(), and stays behind if QEMU dies in its start-up: its existence proves nothing."""
    deadline = time.monotonic() + 60
    while not _accepts(path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise HarnessError("the migration destination QEMU did not start",
                               hint=describe_end(process, console_log))
        time.sleep(0.05)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _wait_for_migration(guest: RunningQemu, deadline: float) -> dict[str, Any]:
    while True:
        stats: dict[str, Any] = guest.qmp("query-migrate")
        if stats.get("status") in ("completed", "failed", "cancelled"):
            return stats
        if time.time() > deadline:
            guest.qmp("migrate_cancel")
            stats = guest.qmp("query-migrate")
            stats["status"] = "cancelled"
            stats.setdefault("error-desc", "the migration did not converge before the timeout")
            return stats
        time.sleep(0.2)


def _abandon(guest: RunningQemu, dest: subprocess.Popen[bytes]) -> None:
    """A failed migration: the destination goes, the source guest runs on."""
    _stop(dest)
    if dest in guest._others:
        guest._others.remove(dest)
    if guest.is_alive():
        try:
            status = guest.qmp("query-status").get("status")
            if status != "running":
                guest.qmp("cont")  # a failure after the pause must not leave it stopped
        except HarnessError as exc:
            log.warning("guest %s after a failed migration: %s", guest.name, exc.one_line())


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        proc.kill_group(child)  # SIGKILL, like virDomainDestroy: no guest shutdown
    child.wait()
    proc.reaped(child)

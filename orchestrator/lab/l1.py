"""The nested lab: an L1 lab host booted under TCG with `-cpu max` (which emulates AMD SVM with
NPT), running Debian's kernel and kvm_amd, so real L2 guests run under real KVM with npt=1
(two-dimensional paging) or npt=0 (KVM's shadow MMU) on a machine without VMX/SVM.

L1's root is this host's own / shared read-only over 9p (so its QEMU, libvirt, perf, Python and
this checkout's virtual environment are used as they are), with tmpfs where a host writes; a
second, writable 9p share carries keys in and results out. L1 is driven over SSH (dropbear on a
forwarded 127.0.0.1 port, host key pinned).

A libvirt-defined L2 inside L1 did not get past its firmware (L1 stopped answering) while the
same guest booted at once from a plain QEMU command line, so suites in the lab start their
guests with QEMU directly (qemu_direct; `orchestrate lab run`, see lab_run).
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import HarnessError
from orchestrator.guests.images import (
    default_cache_root,
    dropbear_host_key,
    has_module,
    initramfs_root,
    installed_kernel,
    staged,
    write_cpio,
)
from orchestrator.guests.spec import file_tail, nic_args, pick_free_port
from orchestrator.guests.ssh import ConnectionLost, GuestSession, new_run_key, wait_for_ssh
from orchestrator.host.paging import load_module
from orchestrator.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

LAB_INIT = PROJECT_ROOT / "images" / "lab" / "init"
LAB_MODULES = ["virtio_pci", "virtio_net", "9pnet_virtio", "9p"]
L1_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONSOLE = "l1-console.log"
QEMU_LOG = "l1-qemu.log"  # L1's QEMU's own stdout/stderr (an abort of the emulator lands here)
RECONNECT_S = 120.0
L1_MODPROBE_S = 300.0  # a module (un)load in the emulated L1


@dataclass(frozen=True)
class HostKernel:
    """The kernel L1 boots: this host's installed Debian kernel (modules from the shared root),
    or one chosen with `lab run --host-kernel` (its modules shared to L1's /lib/modules)."""

    release: str
    image: Path
    modules_base: Path | None  # holds lib/modules/RELEASE; None: the host's own /lib/modules
    kernel_id: str = ""
    facts: tuple[tuple[str, str], ...] = ()  # provenance, for the run's manifest


def installed_host_kernel() -> HostKernel:
    release, image = installed_kernel()
    return HostKernel(release, image, None, facts=(("source", "installed"),
                                                   ("release", release)))


def lab_initrd(cache_root: Path | None = None, kernel: HostKernel | None = None
               ) -> tuple[Path, Path]:
    """(kernel, initramfs) for L1, cached by the init script and the kernel (release, id)."""
    chosen = kernel or installed_host_kernel()
    digest = hashlib.sha256(LAB_INIT.read_bytes() + chosen.release.encode()
                            + chosen.kernel_id.encode()).hexdigest()[:16]
    out = (cache_root or default_cache_root()) / f"lab-{digest}"
    if not (out / "initrd.img").exists():
        base = chosen.modules_base
        # a kernel you built may have these built in: then there is nothing to load
        wanted = [m for m in LAB_MODULES if has_module(chosen.release, m, base)]
        with staged(out) as (staging, root):
            initramfs_root(root, chosen.release, init=LAB_INIT, executables=["/bin/busybox"],
                           modules=wanted, dirs=("proc", "sys", "dev", "newroot"),
                           modules_base=base)
            write_cpio(root, staging / "initrd.img")
    return chosen.image, out / "initrd.img"


class LabLost(HarnessError):
    """The lab host (L1) itself is lost: its QEMU exited (a panic with -no-reboot, or a crash),
    or it lives but no longer answers SSH (it is then stopped)."""


@dataclass
class Lab:
    session: GuestSession
    workdir: Path  # the writable share: /mnt inside L1
    ssh_port: int
    qemu: subprocess.Popen[str] | None = None  # L1 itself, when this process started it
    _reconnect: Callable[[], GuestSession] | None = None
    kernel_facts: dict[str, str] = field(default_factory=dict)  # what L1 booted (provenance)

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            idempotent: bool = False) -> proc.Completed:
        """A command on the lab host (L1), with proc.run's contract.

        A lost SSH connection while L1 lives is reconnected (an emulated L1 under load has
        dropped one), and an idempotent command (a read, a signal) is then tried again; a dead
        L1 is a LabLost that says how it died."""
        full = ["env", f"PATH={L1_PATH}", *argv]
        try:
            return self.session.run(full, timeout=timeout, check=check)
        except ConnectionLost as lost:
            self._recover(lost)
            if not idempotent:
                raise
            log.warning("lost the SSH connection to L1 (%s); reconnected, trying again", lost)
            return self.session.run(full, timeout=timeout, check=check)

    def sysfs_read(self, path: str) -> str:
        return self.run(["cat", path], timeout=60, idempotent=True).stdout.strip()

    def alive(self) -> bool:
        return self.qemu is None or self.qemu.poll() is None

    def death_report(self) -> str:
        """How L1 ended, from its QEMU's exit status, console and stderr."""
        status = "running" if self.qemu is None else f"QEMU exit status {self.qemu.poll()}"
        console, qemu = (file_tail(self.workdir / name, 3, sep=" | ")
                         for name in (CONSOLE, QEMU_LOG))
        return f"{status}; console {console!r}; QEMU said {qemu!r}"

    def _recover(self, lost: ConnectionLost) -> None:
        if self.alive():
            time.sleep(1)  # the connection may be lost because QEMU is going away right now
        if not self.alive() or self._reconnect is None:
            raise LabLost(f"the lab host (L1) died under `{shlex.join(lost.argv[2:])}` "
                          f"({self.death_report()})",
                          hint=f"its console log: {self.workdir / CONSOLE}") from lost
        self.session.close()
        try:
            self.session = self._reconnect()
        except HarnessError as exc:
            # alive but unreachable (seen: a soft lockup under TCG, for minutes): as lost as a
            # dead L1, and stopped so that nothing takes it for a usable lab host
            self._stop()
            raise LabLost(f"the lab host (L1) stopped answering under "
                          f"`{shlex.join(lost.argv[2:])}` and was stopped ({exc.message}; "
                          f"{self.death_report()})",
                          hint=f"its console log: {self.workdir / CONSOLE}") from lost

    def _stop(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            proc.kill_group(self.qemu)  # started by proc.background, in a session of its own
            self.qemu.wait()


def _qemu_argv(kernel: Path, initrd: Path, workdir: Path, port: int, memory_mib: int,
               smp: int, modules_base: Path | None = None) -> list[str]:
    # a chosen kernel's modules over the shared root's /lib/modules (images/lab/init finds the
    # share by its tag: the kernel command line stays the same, as compare reads it)
    kmods = [] if modules_base is None else [
        "-virtfs", f"local,path={modules_base / 'lib' / 'modules'},mount_tag=kmods,"
                   "security_model=none,readonly=on,multidevs=remap"]
    return [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35",
        "-smp", str(smp), "-m", str(memory_mib), "-nographic", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet lab.project={PROJECT_ROOT}",
        *kmods,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        # this checkout again at its own path: L1's tmpfs over /tmp would hide one under /tmp
        "-virtfs", f"local,path={PROJECT_ROOT},mount_tag=project,security_model=none,"
                   "readonly=on,multidevs=remap",
        "-virtfs", f"local,path={workdir},mount_tag=labwork,security_model=none,"
                   "multidevs=remap",
        *nic_args(port),
        "-serial", f"file:{workdir / CONSOLE}", "-monitor", "none",
    ]


@contextmanager
def nested_lab(workdir: Path, *, memory_mib: int = 4096, smp: int = 2,
               boot_timeout: float = 900, host_kernel: HostKernel | None = None
               ) -> Iterator[Lab]:
    """Boot L1 (on the installed kernel, or host_kernel) and hand it over; QEMU is killed on
    every exit path."""
    kernel, initrd = lab_initrd(kernel=host_kernel)
    modules_base = host_kernel.modules_base if host_kernel else None
    # 0700: it holds L1's host key, the client key and copies of key-holding guest initrds
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key, public = new_run_key(workdir / "client")
    (workdir / "authorized_keys").write_text(public + "\n")
    host_key = dropbear_host_key(workdir / "lab_host_key")  # /init has dropbear use it
    port = pick_free_port()
    argv = _qemu_argv(kernel, initrd, workdir, port, memory_mib, smp, modules_base)
    with proc.background(argv, settle_s=0, output=workdir / QEMU_LOG) as qemu:
        def console() -> str:
            last = file_tail(workdir / CONSOLE, 3, sep=" | ")
            return f"last lines {last!r}, log {workdir / CONSOLE}"

        def connect(deadline_s: float) -> GuestSession:
            return wait_for_ssh("127.0.0.1", port, user="root", key=key, host_key=host_key,
                                deadline_s=deadline_s, alive=lambda: qemu.poll() is None,
                                console=console)

        lab = Lab(connect(boot_timeout), workdir, port, qemu, lambda: connect(RECONNECT_S),
                  dict((host_kernel or installed_host_kernel()).facts))
        try:
            yield lab
        finally:
            lab.session.close()


def load_kvm(lab: Lab, *, npt: bool = True) -> None:
    """(Re)load kvm_amd in L1 with npt=1 (two-dimensional paging) or npt=0 (shadow MMU): the
    host's own reload (paging.load_module), its commands run inside L1 (slowly: emulated)."""
    try:
        load_module("kvm_amd", tdp=npt, tdp_mmu=True, runner=lab.run, timeout=L1_MODPROBE_S)
    except proc.CommandError as failed:
        # modprobe says only "Operation not supported"; L1's kernel log says why (e.g. a
        # PREEMPT_RT kernel's KVM wants a constant TSC, which TCG's -cpu max lacks)
        said = lab.run(["sh", "-c", "dmesg | tail -n 2"], timeout=60, check=False,
                       idempotent=True).stdout
        raise HarnessError(failed.one_line(), hint="L1's kernel log ends: " + (
            " | ".join(said.split("\n")).strip(" |") or "(empty)")) from None


NPT = "/sys/module/kvm_amd/parameters/npt"

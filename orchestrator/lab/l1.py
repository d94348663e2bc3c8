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
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import HarnessError
from orchestrator.guests.images import (
    default_cache_root,
    install_file,
    installed_kernel,
    module_order,
    module_path,
    write_cpio,
)
from orchestrator.guests.libvirt_domain import pick_free_port
from orchestrator.guests.ssh import ConnectionLost, GuestSession, new_run_key, wait_for_ssh
from orchestrator.paths import PROJECT_ROOT

log = logging.getLogger(__name__)

LAB_INIT = PROJECT_ROOT / "images" / "lab" / "init"
LAB_MODULES = ["virtio_pci", "virtio_net", "9pnet_virtio", "9p"]
L1_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONSOLE = "l1-console.log"
QEMU_LOG = "l1-qemu.log"  # L1's QEMU's own stdout/stderr (an abort of the emulator lands here)
RECONNECT_S = 120.0


def lab_initrd(cache_root: Path | None = None) -> tuple[Path, Path]:
    """(kernel, initramfs) for L1, cached by the init script and the kernel release."""
    release, kernel = installed_kernel()
    digest = hashlib.sha256(LAB_INIT.read_bytes() + release.encode()).hexdigest()[:16]
    out = (cache_root or default_cache_root()) / f"lab-{digest}"
    if not (out / "initrd.img").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            root = Path(tmp) / "root"
            for empty in ("proc", "sys", "dev", "newroot", "etc"):
                (root / empty).mkdir(parents=True)
            install_file(Path("/bin/busybox"), root)
            modules = module_order(release, LAB_MODULES)
            for name in modules:
                install_file(module_path(release, name), root, f"/lib/modules/{name}.ko")
            (root / "etc/modules-order").write_text("\n".join(modules) + "\n")
            install_file(LAB_INIT, root, "/init", 0o755)
            staging = Path(tmp) / "out"
            staging.mkdir()
            write_cpio(root, staging / "initrd.img")
            if out.exists():
                shutil.rmtree(out)
            staging.rename(out)
    return kernel, out / "initrd.img"


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
        return (f"{status}; console {_last_lines(self.workdir / CONSOLE)!r}; "
                f"QEMU said {_last_lines(self.workdir / QEMU_LOG)!r}")

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


def _last_lines(path: Path, count: int = 3) -> str:
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in lines[-count:])


def _qemu_argv(kernel: Path, initrd: Path, workdir: Path, port: int, memory_mib: int,
               smp: int) -> list[str]:
    return [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35",
        "-smp", str(smp), "-m", str(memory_mib), "-nographic", "-no-reboot",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 quiet lab.project={PROJECT_ROOT}",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        # this checkout again at its own path: L1's tmpfs over /tmp would hide one under /tmp
        "-virtfs", f"local,path={PROJECT_ROOT},mount_tag=project,security_model=none,"
                   "readonly=on,multidevs=remap",
        "-virtfs", f"local,path={workdir},mount_tag=labwork,security_model=none,"
                   "multidevs=remap",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{workdir / CONSOLE}", "-monitor", "none",
    ]


def _host_key(workdir: Path) -> str:
    key = workdir / "lab_host_key"
    proc.run(["dropbearkey", "-t", "ed25519", "-f", str(key)], timeout=60)
    public = proc.run(["dropbearkey", "-y", "-f", str(key)], timeout=60).stdout
    line = next(x for x in public.splitlines() if x.startswith("ssh-ed25519 "))
    return " ".join(line.split()[:2])


@contextmanager
def nested_lab(workdir: Path, *, memory_mib: int = 4096, smp: int = 2,
               boot_timeout: float = 900) -> Iterator[Lab]:
    """Boot L1 and hand it over; QEMU is killed on every exit path."""
    kernel, initrd = lab_initrd()
    # 0700: it holds L1's host key, the client key and (boot_l2) copies of key-holding initrds
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key, public = new_run_key(workdir / "client")
    (workdir / "authorized_keys").write_text(public + "\n")
    host_key = _host_key(workdir)
    port = pick_free_port()
    argv = _qemu_argv(kernel, initrd, workdir, port, memory_mib, smp)
    with proc.background(argv, settle_s=0, output=workdir / QEMU_LOG) as qemu:
        def console() -> str:
            return f"last lines {_last_lines(workdir / CONSOLE)!r}, log {workdir / CONSOLE}"

        def connect(deadline_s: float) -> GuestSession:
            return wait_for_ssh("127.0.0.1", port, user="root", key=key, host_key=host_key,
                                deadline_s=deadline_s, alive=lambda: qemu.poll() is None,
                                console=console)

        lab = Lab(connect(boot_timeout), workdir, port, qemu,
                  lambda: connect(RECONNECT_S))
        try:
            yield lab
        finally:
            lab.session.close()


def load_kvm(lab: Lab, *, npt: bool = True) -> None:
    """(Re)load kvm_amd in L1 with npt=1 (two-dimensional paging) or npt=0 (shadow MMU)."""
    lab.run(["modprobe", "-r", "kvm_amd", "kvm"], timeout=300, check=False)
    lab.run(["modprobe", "kvm_amd", f"npt={1 if npt else 0}"], timeout=300)


NPT = "/sys/module/kvm_amd/parameters/npt"


def boot_l2(lab: Lab, kernel: Path, initrd: Path, *, timeout: float = 600) -> proc.Completed:
    """A raw L2 boot under real KVM in L1 that powers off as soon as its init runs.

    Kernel and initrd go through the writable share: L1's tmpfs over /tmp hides a checkout
    (and so its image cache) that lives under the host's /tmp."""
    for path in (kernel, initrd):
        shutil.copy2(path, lab.workdir / f"l2-{path.name}")
    return lab.run(["timeout", str(int(timeout)), "qemu-system-x86_64", "-machine", "q35",
                    "-enable-kvm", "-cpu", "host", "-m", "512", "-nographic", "-no-reboot",
                    "-kernel", f"/mnt/l2-{kernel.name}", "-initrd", f"/mnt/l2-{initrd.name}",
                    "-append", "console=ttyS0 panic=-1 rdinit=/bin/busybox poweroff -f"],
                   timeout=timeout + 30, check=False)

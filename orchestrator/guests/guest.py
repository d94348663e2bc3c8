"""A booted guest as a workload target: domain + SSH session + the facts a run must record."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from orchestrator import proc
from orchestrator.errors import HarnessError
from orchestrator.guests.images import GUEST_BIN, Image
from orchestrator.guests.spec import DomainSpec, pick_free_port
from orchestrator.guests.ssh import GuestSession, kernel_key_arg, wait_for_ssh
from orchestrator.proc import CommandError
from orchestrator.settings import Settings, current
from orchestrator.suite.schema import Guest

# panic=-1: a panic reboots at once, and on_reboot=destroy ends the domain, so a crashed guest
# is seen within a second instead of hanging until a timeout.
BASE_CMDLINE = "console=ttyS0 panic=-1 quiet"


class GuestDomain(Protocol):
    """A running guest, whichever launcher started it (libvirt or QEMU directly)."""

    name: str
    console_log: Path

    def is_alive(self) -> bool: ...
    def console_tail(self, lines: int = 15) -> str: ...
    def qemu_pid(self) -> int | None: ...
    def qmp(self, command: str, **arguments: Any) -> Any: ...


def launcher_name(settings: Settings | None = None) -> str:
    """libvirt (the default), or qemu: guests as plain QEMU processes (the nested lab's L1);
    $ORCH_GUEST_LAUNCHER, checked where the settings are read."""
    return (settings or current()).guest_launcher


def launch(spec: DomainSpec, uri: str, launcher: str) -> AbstractContextManager[GuestDomain]:
    """The chosen launcher's guest; only that launcher's bindings (libvirt, QEMU's QMP) load."""
    if launcher == "qemu":
        from orchestrator.guests.qemu_direct import running_qemu
        return running_qemu(spec)
    from orchestrator.guests.libvirt_domain import running_domain
    return running_domain(spec, uri)


def unique_name(run_id: str, guest: str) -> str:
    return f"orch-{run_id[-6:]}-{guest}-{uuid.uuid4().hex[:4]}"


def domain_spec(unique: str, cfg: Guest, image: Image, *, run_id: str, accel: str,
                logs: Path, disk: Path | None = None) -> DomainSpec:
    # nested-tcg labels rows from the nested lab; the guest itself runs under KVM there
    kvm = accel in ("kvm", "nested-tcg")
    return DomainSpec(
        name=unique, run_id=run_id, accel="kvm" if kvm else "tcg",
        vcpus=cfg.vcpus,
        memory_mib=cfg.memory >> 20, hugepages=cfg.hugepages.value, cpu_pins=cfg.cpu_pins,
        kernel=image.kernel, initrd=image.initrd,
        cmdline=" ".join(filter(None, [BASE_CMDLINE, image.boot_args, cfg.cmdline])),
        ssh_port=pick_free_port(), console_log=logs / f"console-{unique}.log", disk=disk,
        dirty_ring=cfg.dirty_ring if kvm else 0,  # a KVM feature: TCG has no dirty ring
    )


@dataclass
class GuestTarget:
    """The executor's view of a guest (targets.Target)."""

    name: str
    paging_mode: str
    accel: str
    session: GuestSession
    domain: GuestDomain
    bin_dir: str = GUEST_BIN
    info: dict[str, Any] = field(default_factory=dict)
    connect: Callable[[int], GuestSession] | None = None  # a new session to a forwarded port

    def reconnect(self, port: int) -> None:
        """After a migration the guest answers on its new QEMU's forwarded port."""
        if self.connect is None:
            raise HarnessError(f"guest {self.name} cannot be reconnected",
                               hint="this target was made without a connect function")
        self.session.close()
        self.session = self.connect(port)

    def run(self, argv: Sequence[str], *, timeout: float) -> proc.Completed:
        try:
            return self.session.run(argv, timeout=timeout, check=False)
        except CommandError as exc:
            if not self.domain.is_alive():
                raise CommandError(argv, None, reason="the guest died mid-trial",
                                   hint=f"console log: {self.domain.console_log}") from exc
            raise

    @property
    def host_pid(self) -> int | None:
        """The guest's QEMU process on the host: what host-side tracing is scoped to."""
        return self.domain.qemu_pid()


FACT_COMMANDS = {
    "kernel_release": ["uname", "-r"],
    "kernel_cmdline": ["cat", "/proc/cmdline"],
    "thp": ["cat", "/sys/kernel/mm/transparent_hugepage/enabled"],
    "hugepages_2m": ["cat", "/proc/sys/vm/nr_hugepages"],
    "cpu_flags": ["grep", "-m1", "^flags", "/proc/cpuinfo"],
    "meminfo_total": ["grep", "-m1", "MemTotal", "/proc/meminfo"],
}


def guest_facts(session: GuestSession) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for name, argv in FACT_COMMANDS.items():
        done = session.run(argv, timeout=30, check=False)
        facts[name] = done.stdout.strip() if done.returncode == 0 else None
    cmdline = facts.get("kernel_cmdline") or ""
    facts["kernel_cmdline"] = " ".join(w for w in cmdline.split()
                                       if not w.startswith("orch.ssh_key="))
    facts["pti"] = next((w.split("=", 1)[1] for w in cmdline.split() if w.startswith("pti=")),
                        "default")
    facts["empty_trial_s"] = empty_trial_s(session)
    facts["runner"] = session.runner_kind()  # what carried the trials (and the empty ones)
    return facts


def empty_trial_s(session: GuestSession, samples: int = 7) -> float:
    """The median seconds of an empty trial (`true`) on this session: what every trial pays
    beyond its workload. `orchestrate results` takes it off each trial to tell workload time
    from exec cost (analysis/efficiency.py)."""
    costs = []
    for _ in range(samples):
        start = time.perf_counter()
        session.run(["true"], timeout=30)
        costs.append(time.perf_counter() - start)
    return statistics.median(costs)


@contextmanager
def booted_guest(spec: DomainSpec, image: Image, *, key: Path, public_key: str, uri: str,
                 boot_timeout: float, launcher: str = "libvirt",
                 ) -> Iterator[tuple[GuestDomain, GuestSession]]:
    """Boot, wait for SSH with the pinned host key, and tear down on every exit path."""
    spec = replace(spec, cmdline=f"{spec.cmdline} {kernel_key_arg(public_key)}")
    with launch(spec, uri, launcher) as domain:
        def console() -> str:
            last = domain.console_tail(1).strip()
            return f"last line {last!r}, full log {spec.console_log}"

        session = wait_for_ssh("127.0.0.1", spec.ssh_port, user=image.login_user, key=key,
                               host_key=image.host_key_pub, deadline_s=boot_timeout,
                               alive=domain.is_alive, console=console)
        try:
            yield domain, session
        finally:
            session.close()


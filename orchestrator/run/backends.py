"""The lab-host backend: native on the host itself, libvirt guests for the virtualized modes.

The paging mode a row carries is read from sysfs when the mode is entered, never copied from
the suite. Without usable KVM (the project's own machines), guests run under TCG and rows say
`accel=tcg`, `paging_mode=tcg`, unless the suite demands `accel: kvm`. With KVM, rows say
the backend's `accel_label`: `kvm`, or `nested-tcg` when this host is the nested lab's L1
(`orchestrate lab run` starts the run inside it with `--accel-label nested-tcg`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import Unavailable
from orchestrator.guests.guest import (
    GuestTarget,
    booted_guest,
    domain_spec,
    guest_facts,
    launcher_name,
    unique_name,
)
from orchestrator.guests.images import Image, load_image, overlay
from orchestrator.guests.libvirt_domain import default_uri
from orchestrator.guests.spec import DomainSpec
from orchestrator.guests.ssh import GuestSession, new_run_key, wait_for_ssh
from orchestrator.host import accel
from orchestrator.host.paging import paging_mode
from orchestrator.run.targets import ModeState, Target, native_mode, native_target
from orchestrator.settings import Settings, current
from orchestrator.store import ledger, rundir
from orchestrator.suite.loader import LoadedSuite
from orchestrator.suite.schema import AccelChoice, RequestedMode

log = logging.getLogger(__name__)

ACCEL_LABELS = ("kvm", "nested-tcg")  # what rows of a KVM mode say: bare metal, the lab's L1


@dataclass
class LabHostBackend:
    loaded: LoadedSuite
    run_dir: Path
    bin_dir: Path | None = None
    sysfs_root: Path = Path("/")
    uri: str = field(default_factory=default_uri)
    force: bool = False  # reload KVM even while other VMs hold /dev/kvm
    launcher: str = field(default_factory=launcher_name)
    accel_label: str = ACCEL_LABELS[0]  # one of ACCEL_LABELS
    image_cache: Path | None = None  # None: the environment's

    def enter_mode(self, mode: RequestedMode) -> AbstractContextManager[ModeState]:
        if mode is RequestedMode.NATIVE:
            # the nested lab's L1 is itself emulated: its "native" numbers are TCG numbers
            return native_mode("tcg" if self.accel_label == "nested-tcg" else "native")
        return self._virtual_mode(mode)

    @contextmanager
    def _virtual_mode(self, mode: RequestedMode) -> Iterator[ModeState]:
        report = accel.detect(self.sysfs_root)
        choice = self.loaded.suite.accel
        if report.accel == "tcg":
            if choice is AccelChoice.KVM:
                raise Unavailable(f"{mode.value} needs KVM: " + "; ".join(report.reasons),
                                  hint="`orchestrate doctor` explains; `accel: auto` runs "
                                       "guests under TCG, labelled tcg")
            log.warning("no usable KVM here (%s): %s runs under TCG and is labelled tcg; "
                        "its timings are not comparable to KVM ones",
                        "; ".join(report.reasons) or "accel: tcg", mode.value)
            yield ModeState(mode, "tcg", "tcg", {"reasons": list(report.reasons)})
            return
        if choice is AccelChoice.TCG:
            yield ModeState(mode, "tcg", "tcg", {"reasons": ["the suite asked for accel: tcg"]})
            return
        with paging_mode(mode.value, root=self.sysfs_root, force=self.force) as verified:
            yield ModeState(mode, verified.paging_mode, self.accel_label,
                            {"module": verified.kvm_module, **verified.params})

    def open_target(self, state: ModeState, guest: str) -> AbstractContextManager[Target]:
        if state.requested is RequestedMode.NATIVE:
            return native_target(self.bin_dir)
        return self._guest(state, guest)

    @contextmanager
    def _guest(self, state: ModeState, name: str) -> Iterator[Target]:
        cfg = self.loaded.suite.guests[name]
        image = load_image(cfg.image, self.image_cache)
        key, public = new_run_key(self.run_dir / "ssh")
        unique = unique_name(self.run_dir.name, name)
        with ExitStack() as stack:
            disk = stack.enter_context(disk_overlay(image, unique))
            spec = domain_spec(unique, cfg, image, run_id=self.run_dir.name, accel=state.accel,
                               logs=self.run_dir / "logs", disk=disk)
            yield stack.enter_context(self._booted(state, name, spec, image, key, public))

    @contextmanager
    def _booted(self, state: ModeState, name: str, spec: DomainSpec, image: Image, key: Path,
                public: str) -> Iterator[Target]:
        boot = self.loaded.suite.timeouts.boot
        chosen = self.loaded.suite.guests[name].launcher
        launcher = self.launcher if chosen == "auto" else chosen
        with booted_guest(spec, image, key=key, public_key=public, uri=self.uri,
                          boot_timeout=boot, launcher=launcher) as (domain, session):
            facts = {**guest_facts(session), "image": image.to_dict(), "accel": state.accel,
                     "paging_mode": state.verified, "domain": spec.name, "launcher": launcher,
                     "dirty_ring": spec.dirty_ring}
            self._record_guest(f"{state.verified}/{name}", facts)

            def connect(port: int) -> GuestSession:
                return wait_for_ssh("127.0.0.1", port, user=image.login_user, key=key,
                                    host_key=image.host_key_pub, deadline_s=boot,
                                    alive=domain.is_alive, console=domain.console_tail)

            target = GuestTarget(name, state.verified, state.accel, session, domain,
                                 info=facts, connect=connect)
            try:
                yield target
            finally:
                target.session.close()  # a session opened after a migration, too

    def _record_guest(self, key: str, facts: dict[str, object]) -> None:
        def add(manifest: rundir.Manifest) -> None:
            manifest.setdefault("guests", {})[key] = facts

        rundir.RunDir(self.run_dir).update_manifest(add)


@contextmanager
def disk_overlay(image: Image, unique: str) -> Iterator[Path | None]:
    """A per-guest copy-on-write disk next to the image (libvirt's QEMU user can reach it);
    in the run's ledger before it is made, so a killed run's overlay is deleted by recovery."""
    if image.disk is None:
        yield None
        return
    directory = image.directory.parent / "overlays"
    path = directory / f"{unique}.qcow2"  # where images.overlay makes it
    entry = ledger.record("file", path=str(path.absolute()))
    try:
        yield overlay(image, directory, unique)
    finally:
        path.unlink(missing_ok=True)
        ledger.undone(entry)


def lab_host_backend(loaded: LoadedSuite, run_dir: Path, *, force: bool = False,
                     settings: Settings | None = None,
                     accel_label: str = ACCEL_LABELS[0]) -> LabHostBackend:
    """The backend of a run, everything it needs handed in: the settings (workloads, libvirt
    URI, guest launcher, image cache) and the label of KVM rows."""
    settings = settings or current()
    if accel_label not in ACCEL_LABELS:
        raise ValueError(f"accel label {accel_label!r} is none of {ACCEL_LABELS}")
    return LabHostBackend(loaded, run_dir, bin_dir=settings.workloads_bin,
                          uri=settings.libvirt_uri, force=force,
                          launcher=settings.guest_launcher, accel_label=accel_label,
                          image_cache=settings.image_cache)

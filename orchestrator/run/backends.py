"""The lab-host backend: native on the host itself, libvirt guests for the virtualized modes.

The paging mode a row carries is read from sysfs when the mode is entered, never copied from
the suite. Without usable KVM (the project's own machines), guests run under TCG and rows say
`accel=tcg`, `paging_mode=tcg`, unless the suite demands `accel: kvm`. With KVM, rows say
the backend's `accel_label`: `kvm`, or `nested-tcg` when this host is the nested lab's L1
(`orchestrate lab run` starts the run inside it with `--accel-label nested-tcg`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import BadInput, HarnessError, Unavailable
from orchestrator.guests import cloud_boot, cloud_image
from orchestrator.guests.guest import (
    GuestTarget,
    booted_guest,
    domain_spec,
    guest_facts,
    launcher_name,
    unique_name,
)
from orchestrator.guests.images import GUEST_BIN, Image, load_image, overlay
from orchestrator.guests.kernels import Prepared, digest, prepare
from orchestrator.guests.libvirt_domain import default_uri
from orchestrator.guests.runner import HELPER
from orchestrator.guests.ship import ship_workloads
from orchestrator.guests.spec import DomainSpec
from orchestrator.guests.ssh import GuestSession, new_run_key, wait_for_ssh
from orchestrator.host import accel
from orchestrator.host.paging import paging_mode
from orchestrator.run.targets import ModeState, Target, native_mode, native_target
from orchestrator.settings import Settings, current
from orchestrator.store import ledger, rundir
from orchestrator.suite.kernel_choice import IMAGE_KERNEL, spec_json
from orchestrator.suite.loader import LoadedSuite
from orchestrator.suite.plan import RunGuest, run_guests
from orchestrator.suite.schema import AccelChoice, ImageKind, RequestedMode

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
    # guests whose suite chose their kernel, made ready before the run (prepare_kernels);
    # one missing here is made ready when it boots
    kernels: dict[str, Prepared] = field(default_factory=dict)
    # guests whose image was brought by the user, by image reference (prepare_images)
    cloud: dict[str, Image] = field(default_factory=dict)

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
        chosen = run_guests(self.loaded.suite)[name]
        cfg = chosen.config
        image = self._image(name, chosen)
        key, public = new_run_key(self.run_dir / "ssh")
        unique = unique_name(self.run_dir.name, name)
        overlays = self._cache() / "overlays"
        with ExitStack() as stack:
            disk = stack.enter_context(disk_overlay(image, unique, overlays))
            spec = domain_spec(unique, cfg, image, run_id=self.run_dir.name, accel=state.accel,
                               logs=self.run_dir / "logs", disk=disk)
            if image.firmware:
                stack.enter_context(cloud_files(overlays, unique))
                spec, image = cloud_boot.prepare(image, spec, overlays, guest=name,
                                                 client_key=public)
            yield stack.enter_context(self._booted(state, name, spec, image, key, public))

    @contextmanager
    def _booted(self, state: ModeState, name: str, spec: DomainSpec, image: Image, key: Path,
                public: str) -> Iterator[Target]:
        boot = self.loaded.suite.timeouts.boot
        chosen = run_guests(self.loaded.suite)[name].config.launcher
        # an image with its own boot loader boots with QEMU directly (libvirt_domain refuses)
        auto = "qemu" if image.firmware else self.launcher
        launcher = auto if chosen == "auto" else chosen
        started = time.monotonic()
        with ExitStack() as stack:
            try:
                domain, session = stack.enter_context(booted_guest(
                    spec, image, key=key, public_key=public, uri=self.uri, boot_timeout=boot,
                    launcher=launcher))
            except HarnessError as exc:
                if not image.firmware:
                    raise
                raise cloud_boot.diagnose(exc, spec.console_log) from None
            boot_s = round(time.monotonic() - started, 2)
            bin_dir, shipped = self._ship(image, session, boot)
            helper = f"{bin_dir}/{HELPER}"  # the image's, or the copy shipped with the workloads
            session.use_helper(helper)
            facts = {**guest_facts(session), "image": image.to_dict(), "accel": state.accel,
                     "paging_mode": state.verified, "domain": spec.name, "launcher": launcher,
                     "dirty_ring": spec.dirty_ring, "boot_to_ssh_s": boot_s,
                     "kernel_id": image.kernel_id or digest(image.kernel), **shipped}
            self._record_guest(f"{state.verified}/{name}", facts)

            def connect(port: int) -> GuestSession:
                again = wait_for_ssh("127.0.0.1", port, user=image.login_user, key=key,
                                     host_key=image.host_key_pub, deadline_s=boot,
                                     alive=domain.is_alive, console=domain.console_tail)
                again.use_helper(helper)
                return again

            target = GuestTarget(name, state.verified, state.accel, session, domain,
                                 info=facts, connect=connect, bin_dir=bin_dir)
            try:
                yield target
            finally:
                target.session.close()  # a session opened after a migration, too

    def _ship(self, image: Image, session: GuestSession,
              boot: float) -> tuple[str, dict[str, object]]:
        """(where the guest's workloads are, facts): an image built here carries them; one
        brought by the user gets them now, once cloud-init has finished."""
        if not image.firmware:
            return GUEST_BIN, {}
        started = time.monotonic()
        status = cloud_boot.wait_for_cloud_init(session, boot)
        waited = round(time.monotonic() - started, 2)
        bins = self.bin_dir or current().workloads_bin
        started = time.monotonic()
        target = ship_workloads(session, bins, self.run_dir.name)
        return target, {"cloud_init": status, "cloud_init_wait_s": waited,
                        "workloads_dir": target,
                        "ship_s": round(time.monotonic() - started, 2)}

    def _image(self, name: str, chosen: RunGuest) -> Image:
        """The image's own (built by `orchestrate image build`), one brought by the user, or
        the one assembled around the kernel the suite chose for this guest."""
        ref = chosen.config.image
        if ref not in ImageKind.__members__.values():
            if ref not in self.cloud:
                self.cloud[ref] = cloud_image.resolve(ref, self._cache(),
                                                      self.loaded.path.parent.resolve())
            return self.cloud[ref]
        if chosen.kernel == IMAGE_KERNEL:
            return load_image(chosen.config.image, self.image_cache)
        if name not in self.kernels:
            self.kernels[name] = prepare(chosen.kernel, base_dir=self.loaded.path.parent,
                                         cache_root=self._cache(), bin_dir=self.bin_dir,
                                         image_kind=str(chosen.config.image))
            record_kernels(self.run_dir, self.loaded, {name: self.kernels[name]})
        return self.kernels[name].image

    def _cache(self) -> Path:
        return self.image_cache or current().image_cache

    def _record_guest(self, key: str, facts: dict[str, object]) -> None:
        def add(manifest: rundir.Manifest) -> None:
            manifest.setdefault("guests", {})[key] = facts

        rundir.RunDir(self.run_dir).update_manifest(add)


@contextmanager
def disk_overlay(image: Image, unique: str, directory: Path) -> Iterator[Path | None]:
    """A per-guest copy-on-write disk in the image cache's overlays/ (libvirt's QEMU user can
    reach it); in the run's ledger before it is made, so a killed run's overlay is deleted by
    recovery."""
    if image.disk is None:
        yield None
        return
    path = directory / f"{unique}.qcow2"  # where images.overlay makes it
    entry = ledger.record("file", path=str(path.absolute()))
    try:
        yield overlay(image, directory, unique)
    finally:
        path.unlink(missing_ok=True)
        ledger.undone(entry)


@contextmanager
def cloud_files(directory: Path, unique: str) -> Iterator[None]:
    """The seed and firmware variables of a guest (cloud_boot.prepare makes them), in the
    ledger before they exist and deleted on every exit path."""
    paths = cloud_boot.guest_files(directory, unique)
    entries = [ledger.record("file", path=str(p.absolute())) for p in paths]
    try:
        yield
    finally:
        for path, entry in zip(paths, entries, strict=True):
            path.unlink(missing_ok=True)
            ledger.undone(entry)


def prepare_images(loaded: LoadedSuite, settings: Settings) -> dict[str, Image]:
    """Every image brought by the user that the suite names, checked before the run starts
    (BadInput: no such image, not a disk image, another architecture); by reference."""
    found: dict[str, Image] = {}
    for name, chosen in run_guests(loaded.suite).items():
        cfg = chosen.config
        if cfg.image in ImageKind.__members__.values():
            continue
        if cfg.cmdline or chosen.kernel != IMAGE_KERNEL:
            raise BadInput(f"guest {name}: an image with its own boot loader boots its own "
                           "kernel with its own command line",
                           hint="drop cmdline/kernel from the guest (set them in the image)")
        if cfg.launcher == "libvirt":
            raise BadInput(f"guest {name}: image {cfg.image} boots with the qemu launcher only",
                           hint="set launcher: qemu (or auto) on the guest")
        if cfg.image not in found:
            found[cfg.image] = cloud_image.resolve(cfg.image, settings.image_cache,
                                                   loaded.path.parent.resolve())
    return found


def prepare_kernels(loaded: LoadedSuite, settings: Settings) -> dict[str, Prepared]:
    """Every kernel the suite chose, fetched, verified and with its mini image, by run guest
    name: before a run starts, so what cannot boot is refused (BadInput) before any boot."""
    prepared: dict[str, Prepared] = {}
    made: dict[str, Prepared] = {}  # one kernel named by several guests is prepared once
    for name, chosen in run_guests(loaded.suite).items():
        if chosen.kernel == IMAGE_KERNEL:
            continue
        key = repr((spec_json(chosen.kernel), str(chosen.config.image)))
        if key not in made:
            made[key] = prepare(chosen.kernel, base_dir=loaded.path.parent.resolve(),
                                cache_root=settings.image_cache, bin_dir=settings.workloads_bin,
                                image_kind=str(chosen.config.image))
        prepared[name] = made[key]
    return prepared


def record_kernels(run_dir: Path, loaded: LoadedSuite, kernels: dict[str, Prepared]) -> None:
    """The manifest's `kernels`: per run guest, the kernel the suite asked for and what it is
    (release, image hash, config hash, where it came from)."""
    chosen = run_guests(loaded.suite)

    def add(manifest: rundir.Manifest) -> None:
        found = manifest.setdefault("kernels", {})
        for name, ready in kernels.items():
            found[name] = {"requested": spec_json(chosen[name].kernel), **ready.provenance()}

    if kernels:
        rundir.RunDir(run_dir).update_manifest(add)


def lab_host_backend(loaded: LoadedSuite, run_dir: Path, *, force: bool = False,
                     settings: Settings | None = None,
                     accel_label: str = ACCEL_LABELS[0],
                     kernels: dict[str, Prepared] | None = None,
                     cloud: dict[str, Image] | None = None) -> LabHostBackend:
    """The backend of a run, everything it needs handed in: the settings (workloads, libvirt
    URI, guest launcher, image cache), the label of KVM rows, and the kernels made ready for
    it (recorded in the manifest here, before any guest boots)."""
    settings = settings or current()
    if accel_label not in ACCEL_LABELS:
        raise ValueError(f"accel label {accel_label!r} is none of {ACCEL_LABELS}")
    record_kernels(run_dir, loaded, kernels or {})
    return LabHostBackend(loaded, run_dir, bin_dir=settings.workloads_bin,
                          uri=settings.libvirt_uri, force=force,
                          launcher=settings.guest_launcher, accel_label=accel_label,
                          image_cache=settings.image_cache, kernels=dict(kernels or {}),
                          cloud=dict(cloud or {}))

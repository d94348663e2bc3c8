"""Switching the host's KVM paging mode: reload the vendor module with ept=/npt= and
kvm.tdp_mmu=, verify from sysfs, and put the original parameters back on every exit path.

KVM has no per-VM switch: the mode is a read-only module parameter, settable only at load
time, and the module unloads only while no process holds /dev/kvm. So a switch refuses while
other VMs run (listing them; `force` overrides, loudly), and a failed reload is followed by a
reload with the original parameters, so a lab host is never left without KVM or in shadow mode.

Each switch is written in the run's ledger before the first modprobe (module, parameters
before and after) and marked undone once the original parameters are back: if the run is
killed in between, recovery (recovery.py) reloads the module with `restore_params`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator import proc
from orchestrator.errors import HarnessError, Unavailable
from orchestrator.host.accel import VENDOR_MODULES, AccelReport, detect
from orchestrator.store import ledger

log = logging.getLogger(__name__)

Runner = Callable[..., proc.Completed]  # proc.run's signature: (argv, *, timeout, check)

# mode -> (two-dimensional paging on?, TDP MMU on?)
MODE_PARAMS = {"tdp": (True, True), "tdp-legacy": (True, False), "shadow": (False, True)}


def kvm_holders(root: Path = Path("/")) -> list[str]:
    """Processes with /dev/kvm open, as 'pid (comm)'."""
    holders = []
    for fd_dir in sorted((root / "proc").glob("[0-9]*/fd")):
        try:
            held = any(link.readlink() == Path("/dev/kvm") for link in fd_dir.iterdir())
        except OSError:
            continue  # the process ended, or is not ours to look at
        if held:
            comm = (fd_dir.parent / "comm").read_text().strip() if (
                fd_dir.parent / "comm").exists() else "?"
            holders.append(f"{fd_dir.parent.name} ({comm})")
    return holders


def _bool(flag: bool) -> str:
    return "1" if flag else "0"


def load_module(vendor: str, tdp: bool, tdp_mmu: bool, runner: Runner, *,
                timeout: float = 120) -> None:
    """Reload KVM with these parameters, each command through `runner` (this host's proc.run,
    or one that runs it on another host: the nested lab's L1)."""
    param = VENDOR_MODULES[vendor]
    # removal may find a module already gone (a failed load before): what counts is the load
    runner(["modprobe", "-r", vendor, "kvm"], timeout=timeout, check=False)
    runner(["modprobe", "kvm", f"tdp_mmu={_bool(tdp_mmu)}"], timeout=timeout)
    runner(["modprobe", vendor, f"{param}={_bool(tdp)}"], timeout=timeout)


def mode_of(tdp: bool, tdp_mmu: bool) -> str:
    """The mode these parameters give (the TDP MMU does not matter to the shadow MMU)."""
    if not tdp:
        return "shadow"
    return "tdp" if tdp_mmu else "tdp-legacy"


def _current(report: AccelReport) -> tuple[bool, bool]:
    vendor = report.kvm_module or ""
    tdp = report.params.get(VENDOR_MODULES.get(vendor, ""), "N").upper() in ("Y", "1")
    tdp_mmu = report.params.get("tdp_mmu", "Y").upper() in ("Y", "1", "?")
    return tdp, tdp_mmu


def _switch(vendor: str, wanted: tuple[bool, bool], root: Path, runner: Runner) -> AccelReport:
    load_module(vendor, *wanted, runner)
    return detect(root)


@contextmanager
def paging_mode(mode: str, *, root: Path = Path("/"), runner: Runner = proc.run,
                force: bool = False) -> Iterator[AccelReport]:
    """Be in `mode` for the with-block, verified from sysfs; restore the original on exit."""
    report = detect(root)
    if report.accel != "kvm" or report.kvm_module not in VENDOR_MODULES:
        raise Unavailable(f"no KVM paging mode to switch here ({report.kvm_module or 'no kvm'})",
                          hint="`orchestrate doctor` explains")
    if report.paging_mode == mode:
        yield report
        return
    vendor, original = report.kvm_module, _current(report)
    holders = kvm_holders(root)
    if holders and not force:
        raise HarnessError(f"refusing to reload {vendor}: /dev/kvm is held by "
                           f"{', '.join(holders)}",
                           hint="stop those VMs, or pass --force-mode-switch (it kills them)")
    if holders:
        log.warning("FORCED reload of %s while %s hold /dev/kvm", vendor, ", ".join(holders))
    wanted = MODE_PARAMS[mode]
    entry = ledger.record("kvm", vendor=vendor, root=str(root.resolve()),
                          before=_params(original, report.paging_mode),
                          after=_params(wanted, mode))
    try:
        switched = _switch(vendor, wanted, root, runner)
        if switched.paging_mode != mode:
            raise HarnessError(f"{vendor} reloaded but sysfs says {switched.paging_mode}, "
                               f"not {mode}", hint="check `dmesg` for why KVM refused")
        log.info("paging mode %s -> %s (verified from sysfs)", report.paging_mode, mode)
        yield switched
    finally:
        _restore(vendor, original, report.paging_mode, root, runner)
        ledger.undone(entry)  # only once restored: a failed restore stays for recovery


def _params(params: tuple[bool, bool], mode: str) -> dict[str, object]:
    return {"tdp": params[0], "tdp_mmu": params[1], "mode": mode}


def restore_params(vendor: str, tdp: bool, tdp_mmu: bool, *, root: Path = Path("/"),
                   runner: Runner = proc.run) -> str:
    """Put KVM back to parameters a dead run recorded; what was done, in words. Idempotent:
    nothing is reloaded when sysfs already shows them. Refuses (HarnessError) while anyone
    holds /dev/kvm: the dead run's own VMs are gone by then, so a holder is someone else's."""
    param = VENDOR_MODULES[vendor]
    settings = f"{vendor} {param}={_bool(tdp)} (kvm tdp_mmu={_bool(tdp_mmu)})"
    mode = mode_of(tdp, tdp_mmu)
    report = detect(root)
    if report.kvm_module == vendor and report.paging_mode == mode:
        return f"{settings} already loaded (paging mode {mode})"
    holders = kvm_holders(root)
    if holders:
        raise HarnessError(f"cannot reload {vendor} to {mode}: /dev/kvm is held by "
                           f"{', '.join(holders)}",
                           hint="stop those VMs; the next `orchestrate gc` tries again")
    _restore(vendor, (tdp, tdp_mmu), mode, root, runner)
    return f"reloaded {settings}: paging mode {mode}, verified from sysfs"


def _restore(vendor: str, original: tuple[bool, bool], mode: str, root: Path,
             runner: Runner) -> None:
    for attempt in (1, 2):
        try:
            if _switch(vendor, original, root, runner).paging_mode == mode:
                log.info("paging mode restored to %s", mode)
                return
        except proc.CommandError as exc:
            log.error("restoring %s (attempt %d) failed: %s", vendor, attempt, exc.one_line())
    raise HarnessError(f"could not restore {vendor} to {mode}: the host is left changed",
                       hint=f"modprobe -r {vendor} kvm && modprobe {vendor} by hand")


"""What a guest of an image brought by the user needs besides its overlay: its copy of OVMF's
variables (UEFI writes boot entries there; the template is never written), its cloud-init
seed with the host key to pin, and after SSH, the wait for cloud-init to finish. When the
guest never answers, the console says why: nothing at all (no boot loader or kernel writing
to ttyS0), or a kernel but no cloud-init."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

from orchestrator.errors import BadInput, HarnessError
from orchestrator.guests.cloud_init import make_seed
from orchestrator.guests.images import Image, private_mode, private_umask, qemu_gid
from orchestrator.guests.spec import OVMF_CODE, OVMF_VARS, DomainSpec, file_tail
from orchestrator.guests.ssh import GuestSession

log = logging.getLogger(__name__)

CONSOLE_LINES = 8


def guest_files(directory: Path, unique: str) -> tuple[Path, Path]:
    """(seed, firmware variables) of a guest: where prepare makes them."""
    return directory / f"{unique}.seed.img", directory / f"{unique}.vars.fd"


def prepare(image: Image, spec: DomainSpec, directory: Path, *, guest: str,
            client_key: str) -> tuple[DomainSpec, Image]:
    """The guest's spec with its firmware, variables and seed, and the image with the host key
    made for this guest (what SSH pins)."""
    if image.firmware == "uefi" and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        raise BadInput(f"the image {image.name} boots with UEFI and OVMF is not installed",
                       hint="apt-get install ovmf (scripts/setup does)")
    seed, variables = guest_files(directory, spec.name)
    public = make_seed(seed, instance=spec.name, hostname=guest, client_key=client_key)
    if image.firmware == "uefi":
        with private_umask():
            shutil.copyfile(OVMF_VARS, variables)
        private_mode(variables, qemu_gid(), writable=True)
    spec = replace(spec, firmware=image.firmware, seed=seed,
                   firmware_vars=variables if image.firmware == "uefi" else None)
    return spec, replace(image, host_key_pub=public)


def diagnose(exc: HarnessError, console_log: Path) -> HarnessError:
    """A boot that never reached our SSH, said from the console's last lines."""
    text = console_log.read_text(errors="replace") if console_log.exists() else ""
    tail = file_tail(console_log, CONSOLE_LINES, sep=" | ")
    if not text.strip():
        why = ("the guest wrote nothing on its serial console: no boot loader or kernel "
               "started (a disk that does not boot, or a kernel without console=ttyS0)")
    elif "Linux version" not in text and "Booting Linux" not in text:
        why = f"the console shows no kernel starting (its last lines: {tail})"
    elif "cloud-init" not in text:
        why = "the image has no cloud-init (its console never mentions it)"
    else:
        why = f"console's last lines: {tail}"
    return HarnessError(f"{exc.one_line()}; {why}",
                        hint=f"full console log: {console_log}; an imported image needs "
                             "cloud-init with the NoCloud datasource, sshd and console=ttyS0")


def wait_for_cloud_init(session: GuestSession, timeout: float) -> str:
    """Until cloud-init has finished its stages; returns its status line. Its keys are in by
    the time SSH answers with the pinned key (so a guest reached is usable), but its later
    stages may still be running. A stage that failed (a module a vendor image lacks) is
    warned about with cloud-init's own words and recorded, not fatal: the keys worked."""
    done = session.run(["cloud-init", "status", "--wait"], timeout=timeout, check=False)
    status = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode == 127:
        raise HarnessError("the image has no cloud-init command",
                           hint="an imported image needs cloud-init (NoCloud)")
    if done.returncode != 0:
        detail = session.run(["cloud-init", "status", "--long"], timeout=60, check=False)
        errors = [line.strip() for line in detail.stdout.splitlines()
                  if "error" in line.lower() or line.strip().startswith("- ")]
        status = f"{status or 'status: error'} ({'; '.join(errors)[:300]})"
        log.warning("cloud-init finished with errors in the guest: %s (its "
                    "/var/log/cloud-init.log says more)", status)
    return status

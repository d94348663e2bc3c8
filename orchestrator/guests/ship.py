"""The guest workloads shipped at run time into a guest whose image does not carry them (an
image brought by the user): copied over SFTP into a per-run directory, checked by SHA-256 in
the guest (`sha256sum`), and run from there."""

from __future__ import annotations

import hashlib
from pathlib import Path

from orchestrator.errors import HarnessError
from orchestrator.guests.ssh import GuestSession


def guest_dir(run_id: str) -> str:
    """Per run, so two runs' binaries never mix; /var/tmp survives nothing we rely on."""
    return f"/var/tmp/orch-{run_id}/bin"  # noqa: S108 (the guest's, made by root)


def ship_workloads(session: GuestSession, bins: Path, run_id: str) -> str:
    """Copies every binary of bins into the guest and checks it there; returns the directory."""
    target = guest_dir(run_id)
    local = sorted(p for p in bins.iterdir() if p.is_file())
    if not local:
        raise HarnessError(f"no guest workloads in {bins}", hint="run `make -C guest-workloads`")
    session.run(["mkdir", "-p", target], timeout=60)
    session.put({p: f"{target}/{p.name}" for p in local})
    done = session.run(["sha256sum", *(f"{target}/{p.name}" for p in local)], timeout=120,
                       check=False)
    got = {Path(line.split()[-1]).name: line.split()[0]
           for line in done.stdout.splitlines() if line.strip()}
    bad = [p.name for p in local
           if got.get(p.name) != hashlib.sha256(p.read_bytes()).hexdigest()]
    if done.returncode != 0 or bad:
        raise HarnessError(f"the workloads shipped into the guest do not match: "
                           f"{', '.join(bad) or done.stderr.strip()[:120]}",
                           hint="is the guest's disk full, or sha256sum missing?")
    return target

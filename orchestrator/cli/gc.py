"""`orchestrate gc`: put right what crashed runs left behind, never touching a live run.

First the runs that died are recovered from their ledgers (recovery.py: processes killed,
guests destroyed, KVM and host settings restored, manifests marked `crashed`); then every
other project guest (`orch-*`) that belongs to no live run is destroyed: a stray of a run
from before ledgers, or of a test that booted one by hand. A live run (its PID and start time
still match) keeps its guests, and gc says which runs are alive.

The guests are listed BEFORE the live runs are read: a run records a guest in its ledger
before it creates it, so a guest that exists at the listing belongs to a run that is visible
at the reading, even one that started in between.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import libvirt

from orchestrator.errors import ExitCode, HarnessError
from orchestrator.guests.libvirt_domain import NAME_PREFIX, connect, destroy_by_name
from orchestrator.run import recovery


def project_guests(uri: str) -> list[str]:
    conn = connect(uri)
    try:
        return sorted(d.name() for d in conn.listAllDomains() if d.name().startswith(NAME_PREFIX))
    finally:
        conn.close()


def destroy_guests(uri: str, names: list[str]) -> list[str]:
    """Destroy these guests; what was done, one line each (a failure is a line too)."""
    conn = connect(uri)
    lines = []
    try:
        for name in names:
            try:
                lines.append(destroy_by_name(conn, name))
            except (HarnessError, libvirt.libvirtError) as exc:
                lines.append(f"could not destroy guest {name}: {exc}")
        return lines
    finally:
        conn.close()


def add_parser(sub: Any) -> None:
    gc = sub.add_parser("gc", help="recover crashed runs; destroy guests no live run owns")
    gc.add_argument("--uri", default=None,
                    help="libvirt URI (default: $ORCH_LIBVIRT_URI, else qemu:///system)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be done")
    gc.set_defaults(func=cmd_gc)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_gc(args: argparse.Namespace) -> int:
    uri = args.uri or args.settings.libvirt_uri
    try:
        listed: list[str] | None = project_guests(uri)
    except HarnessError as exc:
        listed, unreachable = None, exc
    survey = recovery.recover_unless_locked(by=f"orchestrate gc (pid {os.getpid()})", say=_err,
                                            dry_run=args.dry_run, settings=args.settings)
    live = survey.live_domains()
    for state in survey.alive:
        mine = ", ".join(state.guests) or "none"
        print(f"run {state.name} is alive ({state.why}): its guests are left alone: {mine}")
    if listed is None:
        _err(f"orchestrate: {unreachable.one_line()}: stray guests were not looked for")
        return ExitCode.HARNESS_BROKE
    # a dead run's guests were recovered above (or will be, once the lock is free)
    strays = [n for n in listed if n not in live and n not in survey.dead_domains()]
    if args.dry_run:
        print(f"would destroy {len(strays)} guest(s)" + (": " + ", ".join(strays) if strays
                                                         else ""))
        return ExitCode.OK
    done = destroy_guests(uri, strays)
    for line in done:
        if line.startswith("could not"):
            _err(f"orchestrate: {line}")
    print(f"destroyed {len(strays)} guest(s)" + (": " + ", ".join(strays) if strays else ""))
    return ExitCode.HARNESS_BROKE if any(x.startswith("could not") for x in done) \
        else ExitCode.OK

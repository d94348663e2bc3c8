"""`orchestrate gc`: destroy project guests left behind by a crashed run (names start orch-)."""

from __future__ import annotations

import argparse
from typing import Any

import libvirt

from orchestrator.errors import ExitCode
from orchestrator.libvirt_domain import NAME_PREFIX, connect, default_uri, destroy


def collect_strays(uri: str, *, dry_run: bool = False) -> list[str]:
    conn = connect(uri)
    try:
        strays = [d for d in conn.listAllDomains() if d.name().startswith(NAME_PREFIX)]
        names = []
        for dom in strays:
            names.append(dom.name())
            if dry_run:
                continue
            destroy(dom)
            try:
                dom.undefine()  # only persistent ones have a definition left
            except libvirt.libvirtError:
                pass
        return names
    finally:
        conn.close()


def add_parser(sub: Any) -> None:
    gc = sub.add_parser("gc", help="destroy guests left behind by crashed runs")
    gc.add_argument("--uri", default=None, help="libvirt URI (default: qemu:///system)")
    gc.add_argument("--dry-run", action="store_true", help="only list them")
    gc.set_defaults(func=cmd_gc)


def cmd_gc(args: argparse.Namespace) -> int:
    names = collect_strays(args.uri or default_uri(), dry_run=args.dry_run)
    verb = "would destroy" if args.dry_run else "destroyed"
    print(f"{verb} {len(names)} guest(s)" + (": " + ", ".join(names) if names else ""))
    return ExitCode.OK

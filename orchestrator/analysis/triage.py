"""Triage of change points, kept as a plain file in the results root: `triage.jsonl`.

One JSON object a line, appended, never rewritten: {"key", "status", "who", "why", "when"}.
`key` is a change point's `host/cell_id/metric/first_run_after` (history prints it); `status`
is "acknowledged" (a known, accepted change: a new kernel) or "invalid" (not a change: a
broken run, a neighbour's load), or "open" to take a decision back. The newest line for a key
wins, so the file is also the decision's history. `history`, `nightly` (which alerts only on
open change points) and anything reading `history --json` see it; `orchestrate triage` lists
and writes it.
"""

from __future__ import annotations

import argparse
import getpass
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.analysis.changepoints import ChangePoint
from orchestrator.errors import BadInput, ExitCode

FILE = "triage.jsonl"
STATUSES = ("acknowledged", "invalid", "open")


def load(root: Path) -> dict[str, dict[str, Any]]:
    """key -> its newest decision (unreadable lines are skipped: a hand edit gone wrong must
    not stop the nightly)."""
    path = root / FILE
    decisions: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return decisions
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("status") in STATUSES and "key" in entry:
            decisions[str(entry["key"])] = entry
    return decisions


def apply(decisions: dict[str, dict[str, Any]], found: list[ChangePoint]) -> list[ChangePoint]:
    return [replace(cp, status=decisions[cp.key]["status"], triage=decisions[cp.key])
            if cp.key in decisions else cp for cp in found]


def record(root: Path, key: str, status: str, who: str, why: str) -> dict[str, Any]:
    if status not in STATUSES:
        raise BadInput(f"triage status {status!r}", hint=f"one of {', '.join(STATUSES)}")
    if key.count("/") != 3:
        raise BadInput(f"{key!r} is not a change point's key",
                       hint="host/cell_id/metric/run, as `orchestrate history` prints it")
    entry = {"key": key, "status": status, "who": who, "why": why,
             "when": datetime.now(UTC).isoformat(timespec="seconds")}
    root.mkdir(parents=True, exist_ok=True)
    with (root / FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("triage", help="acknowledge a change point, mark it invalid, or list")
    cmd.add_argument("action", choices=("list", "ack", "invalid", "reopen"))
    cmd.add_argument("key", nargs="?", help="the change point's key (`orchestrate history`)")
    cmd.add_argument("--why", default="", help="the reason, kept with the decision")
    cmd.add_argument("--who", default=None, help="who decided (default: the login name)")
    cmd.add_argument("--results-dir", type=Path, default=None)
    cmd.set_defaults(func=cmd_triage)


def cmd_triage(args: argparse.Namespace) -> int:
    root = args.results_dir or args.settings.results
    if args.action == "list":
        decisions = load(root)
        if not decisions:  # silence would look like a broken command
            print(f"no triage decisions in {root} (`orchestrate history` lists change points)")
        for key, entry in sorted(decisions.items()):
            print(f"{entry['status']:<12} {key}  by {entry.get('who')} at "
                  f"{entry.get('when')}: {entry.get('why')}")
        return ExitCode.OK
    if not args.key or not args.why:
        raise BadInput(f"triage {args.action} needs a KEY and --why",
                       hint="orchestrate triage ack HOST/CELL/METRIC/RUN --why 'new kernel'")
    status = {"ack": "acknowledged", "invalid": "invalid", "reopen": "open"}[args.action]
    entry = record(root, args.key, status, args.who or getpass.getuser(), args.why)
    print(f"{entry['status']}: {entry['key']} ({root / FILE})")
    return ExitCode.OK

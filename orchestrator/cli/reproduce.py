"""`orchestrate reproduce SEED`: run a seed's suites where this machine can, then report ours
beside theirs.

A seed's suites are those in suites/ whose `reference:` names it (suite/reference.py). Where
they run: `host` (this host's KVM, every paging mode the suite asks for), `lab` (the nested lab:
real KVM with npt=1/0 inside a TCG-emulated lab host, hours), or `native` (the suite's native
rows only, from a copy of the suite with `paging: [native]`). `auto` takes `host` when KVM is
usable here and `native` otherwise, and says how to get the paging modes: a lab run is never
started unasked, since it takes hours. Each suite is a child `orchestrate run` (or `lab run`)
with its own lock and exit code; whatever it measured is reported, even if it failed.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from orchestrator import proc
from orchestrator.analysis.report import write_report
from orchestrator.errors import BadInput, ExitCode
from orchestrator.host import accel
from orchestrator.paths import PROJECT_ROOT
from orchestrator.settings import Settings
from orchestrator.store import reader
from orchestrator.suite.loader import load_suite

SUITES_DIR = PROJECT_ROOT / "suites"
WHERE = ("auto", "host", "lab", "native")


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("reproduce", help="run a seed's suites here, then report ours beside "
                                           "the thread's published figures")
    cmd.add_argument("seed", help="a seed number (000-004) or the name of a suite in suites/")
    cmd.add_argument("--where", choices=WHERE, default="auto",
                     help="host: this host's KVM; lab: the nested lab (hours); native: native "
                          "rows only; auto (default): host if KVM is usable here, else native")
    cmd.add_argument("--results-dir", type=Path, default=None)
    cmd.add_argument("--suites", type=Path, default=SUITES_DIR,
                     help="where the seed suites are (default: suites/ in the checkout)")
    cmd.add_argument("--dry-run", action="store_true",
                     help="say which suites would run where, and run nothing")
    cmd.add_argument("--open", action="store_true", help="open each report in a web browser")
    cmd.set_defaults(func=cmd_reproduce)


def seed_suites(seed: str, suites_dir: Path) -> list[tuple[Path, str]]:
    """The suites carrying `seed`'s reference data (or the suite named `seed`): (file, the
    suite's name, which its run directories carry)."""
    if not suites_dir.is_dir():
        raise BadInput(f"{suites_dir}: no such directory of suites",
                       hint="--suites DIR names the directory holding the seed suites")
    number = seed.lower().removeprefix("seed").strip("-_ ")
    wanted = number.zfill(3) if number.isdigit() else None  # 0, 000, seed-000: seed 000
    found: list[tuple[Path, str]] = []
    known: dict[str, list[str]] = {}
    for path in sorted(suites_dir.glob("*.yaml")):
        suite = load_suite(path).suite
        for ref in suite.reference:
            known.setdefault(ref.seed, []).append(path.stem)
        if path.stem == seed or any(ref.seed == wanted for ref in suite.reference):
            found.append((path, suite.name))
    if not found:
        listed = "; ".join(f"{s}: {', '.join(names)}" for s, names in sorted(known.items()))
        raise BadInput(f"{seed}: no suite in {suites_dir} carries that seed's reference data",
                       hint=f"seeds with reference data: {listed or 'none'}")
    return found


def where_to_run(choice: str, found: accel.AccelReport) -> tuple[str, str]:
    """(where, why) for `--where choice` on a host whose accelerator is `found`."""
    kvm = found.accel == "kvm"
    if choice == "host" and not kvm:
        raise BadInput("--where host: KVM is not usable here (" + "; ".join(found.reasons) + ")",
                       hint="--where lab runs tdp and shadow in the nested lab (hours); "
                            "--where native runs the native rows only")
    if choice != "auto":
        return choice, f"as asked (--where {choice})"
    if kvm:
        return "host", f"KVM ({found.kvm_module}) is usable here"
    return "native", ("KVM is not usable here (" + "; ".join(found.reasons) + "): native rows "
                      "only; `--where lab` measures tdp and shadow in the nested lab (hours)")


def native_copy(suite: Path, directory: Path) -> Path:
    """The suite with `paging: [native]` (guests kept: they are simply not booted)."""
    yaml = YAML()  # round trip: the copy keeps the suite's comments, which the manifest records
    data = yaml.load(suite.read_text())
    data["paging"] = ["native"]
    copy = directory / suite.name
    with copy.open("w") as out:
        out.write(f"# {suite}, native rows only (orchestrate reproduce --where native)\n")
        yaml.dump(data, out)
    return copy


def _child(where: str, suite: Path, root: Path) -> list[str]:
    verb = ["lab", "run"] if where == "lab" else ["run"]
    return [sys.executable, "-m", "orchestrator.cli", *verb, str(suite), "--results-dir",
            str(root)]


def _new_run(root: Path, before: set[str], name: str) -> Path | None:
    runs = [r for r in reader.list_runs(root, hosts=False)
            if r.get("suite_name") == name and str(r["path"]) not in before]
    return Path(runs[-1]["path"]) if runs else None


def run_one(suite: Path, name: str, where: str, root: Path) -> tuple[int, Path | None]:
    """One child run of the suite called `name`; its exit code and the run directory it made
    (if any)."""
    before = {str(r["path"]) for r in reader.list_runs(root, hosts=False)} \
        if root.is_dir() else set()
    with tempfile.TemporaryDirectory(prefix="orch-reproduce-") as scratch:
        to_run = native_copy(suite, Path(scratch)) if where == "native" else suite
        # its own session: a Ctrl-C here is passed on once, by _wait; if we die, it gets
        # SIGTERM (its interrupt) from the kernel and cleans up as after a Ctrl-C
        code = _wait(proc.spawn(_child(where, to_run, root), death_signal=signal.SIGTERM))
    return code, (_new_run(root, before, name) if root.is_dir() else None)


def _wait(child: subprocess.Popen[bytes]) -> int:
    """The child's exit code. An interrupt is passed on and the child's own cleanup (guests,
    host parameters, its lock) awaited, then raised: nothing runs after it."""
    try:
        return child.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (proc.py makes it this exception)
        child.send_signal(signal.SIGTERM)
        while child.poll() is None:
            try:
                child.wait()
            except KeyboardInterrupt:
                continue  # a second Ctrl-C: the child is already stopping
        raise
    finally:
        proc.reaped(child)


def cmd_reproduce(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    root = (args.results_dir or settings.results).resolve()
    suites = seed_suites(args.seed, args.suites)
    where, why = where_to_run(args.where, accel.detect())
    print(f"reproduce {args.seed}: {', '.join(p.stem for p, _ in suites)} -> {where} ({why})")
    if args.dry_run:
        for suite, _ in suites:
            rows = " (a copy with paging: [native])" if where == "native" else ""
            print("  would run: orchestrate " + " ".join(_child(where, suite, root)[3:]) + rows)
        return ExitCode.OK
    worst = int(ExitCode.OK)
    for suite, name in suites:
        code, run_dir = run_one(suite, name, where, root)
        worst = worst or code
        if run_dir is None:
            print(f"{suite.stem}: no run was recorded (exit {code})")
            continue
        page = write_report([run_dir], run_dir / "report", root)
        print(f"{suite.stem}: exit {code}; report: {page}")
        if args.open:
            webbrowser.open(page.as_uri())
    return worst

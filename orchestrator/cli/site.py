"""`orchestrate site ROOT --out DIR`: the fleet's static site (orchestrator/site/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from orchestrator.analysis import changepoints
from orchestrator.errors import BadInput, ExitCode
from orchestrator.site.build import build


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("site", help="a static site of the fleet's runs: status, trends, "
                                      "regressions (only what changed is rebuilt)")
    cmd.add_argument("root", type=Path, nargs="?", default=None,
                     help="the results root: <host>/<run_id> (collect.yml) or one host's runs "
                          "(default: the results directory)")
    cmd.add_argument("--out", type=Path, required=True, help="the site's directory")
    changepoints.add_threshold_option(cmd)
    cmd.add_argument("--jobs", type=int, default=None,
                     help="processes reading runs on a first build (default: the CPUs)")
    cmd.add_argument("--no-compare", action="store_true",
                     help="do not write compare pages for open regressions")
    cmd.set_defaults(func=cmd_site)


def cmd_site(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold < 1:
        raise BadInput(f"--threshold {args.threshold}: a fraction in [0, 1)",
                       hint="e.g. --threshold 0.05 for 5%")
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs {args.jobs}", hint="a number of processes, 1 or more")
    root = args.root or args.settings.results
    built = build(root, args.out, args.threshold, args.jobs, not args.no_compare)
    counts = ", ".join(f"{n} {k}" for k, n in built.summary["counts"].items())
    print(f"site: {built.out / 'index.html'} (last night {built.summary['latest']}: {counts}; "
          f"{built.summary['open']} open regression(s); {built.runs} runs, {built.read} read; "
          f"{len(built.written)} files written, {len(built.kept)} unchanged, "
          f"{built.seconds:.1f} s)")
    return ExitCode.OK

"""`orchestrate`: verbs only. Parse arguments, call one function, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from orchestrator import (
    accel,
    compare,
    gc,
    history,
    images,
    lab_run,
    nightly,
    report,
    results_cli,
    run_cli,
)
from orchestrator.errors import ExitCode, OrchestratorError
from orchestrator.plan import make_plan, plan_json
from orchestrator.suite_file import load_suite

log = logging.getLogger("orchestrator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Measure page-table virtualization costs: native, EPT/NPT (tdp), shadow.",
    )
    parser.add_argument("--debug", action="store_true", help="log everything, show tracebacks")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    validate = sub.add_parser("validate", help="check a suite file")
    validate.add_argument("suite", type=Path)
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser("plan", help="show the ordered cells a suite expands to")
    plan.add_argument("suite", type=Path)
    plan.add_argument("--json", action="store_true", help="machine-readable cells and counts")
    plan.set_defaults(func=cmd_plan)

    run_cli.add_parser(sub)
    results_cli.add_parser(sub)
    images.add_parser(sub)
    accel.add_parser(sub)
    gc.add_parser(sub)
    report.add_parser(sub)
    compare.add_parser(sub)
    history.add_parser(sub)
    nightly.add_parser(sub)
    lab_run.add_parser(sub)
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_suite(args.suite)
    counts = make_plan(loaded.suite).counts()
    print(f"{args.suite}: ok ({len(loaded.suite.workloads)} workloads, "
          f"{counts['points']} points, {counts['trials']} trials)")
    return ExitCode.OK


def cmd_plan(args: argparse.Namespace) -> int:
    plan = make_plan(load_suite(args.suite).suite)
    if args.json:
        json.dump(plan_json(plan), sys.stdout, indent=1)
        print()
        return ExitCode.OK
    for group in plan.groups:
        print(f"{group.mode.value} / {group.guest}")
        for point in group.points:
            params = " ".join(f"{k}={v}" for k, v in point.params)
            print(f"  {point.workload} ({point.kind}) {params}: "
                  f"{point.warmup} warm-up + {point.trials} trials  [{point.cell_id}]")
    counts = plan.counts()
    print(f"{counts['mode_switches']} mode switches, {counts['boots']} guest boots, "
          f"{counts['points']} points, {counts['trials']} trials "
          f"({counts['measured_trials']} measured)")
    return ExitCode.OK


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # KeyboardInterrupt, not an Exception: nothing on the way up may swallow it, and every
    # ExitStack unwinds exactly as for Ctrl-C (guests destroyed, host mode restored).
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if args.debug
        else "orchestrate: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code: int = args.func(args)
        return code
    except OrchestratorError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"orchestrate: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrate: interrupted; everything measured so far is kept", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception:  # a bug: keep the traceback, print one line pointing at it
        if args.debug:
            raise
        path = _save_traceback()
        print(f"orchestrate: internal error; traceback saved to {path} "
              "(hint: rerun with --debug, and report it)", file=sys.stderr)
        return ExitCode.HARNESS_BROKE


def _save_traceback() -> Path:
    where = Path(os.environ.get("ORCH_CRASH_DIR", tempfile.gettempdir()))
    fd, name = tempfile.mkstemp(prefix="orchestrate-crash-", suffix=".txt", dir=where)
    with os.fdopen(fd, "w") as fh:
        traceback.print_exc(file=fh)
    return Path(name)


if __name__ == "__main__":
    sys.exit(main())

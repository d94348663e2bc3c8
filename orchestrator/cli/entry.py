"""`orchestrate`: verbs only. Parse arguments, read the settings (the `ORCH_*` environment
variables, once, here: verbs find them in `args.settings` and pass them down), call one
function, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import shtab

from orchestrator import proc
from orchestrator.analysis import compare, history, report, summary, triage
from orchestrator.cli import doctor, gc, reproduce, run, site
from orchestrator.errors import ExitCode, OrchestratorError
from orchestrator.fleet import nightly
from orchestrator.guests import images
from orchestrator.lab import run as lab_run
from orchestrator.settings import Settings
from orchestrator.suite.loader import load_suite
from orchestrator.suite.plan import make_plan, plan_json

log = logging.getLogger("orchestrator")
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrate",
        description="Measure page-table virtualization costs: native, EPT/NPT (tdp), shadow.",
    )
    parser.add_argument("--debug", action="store_true", help="log everything, show tracebacks")
    parser.add_argument("--version", action="version", version=f"orchestrate {version()}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    validate = sub.add_parser("validate", help="check a suite file")
    validate.add_argument("suite", type=Path)
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser("plan", help="show the ordered cells a suite expands to")
    plan.add_argument("suite", type=Path)
    plan.add_argument("--json", action="store_true", help="machine-readable cells and counts")
    plan.set_defaults(func=cmd_plan)

    run.add_parser(sub)
    summary.add_parser(sub)
    images.add_parser(sub)
    doctor.add_parser(sub)
    gc.add_parser(sub)
    report.add_parser(sub)
    compare.add_parser(sub)
    history.add_parser(sub)
    triage.add_parser(sub)
    nightly.add_parser(sub)
    lab_run.add_parser(sub)
    reproduce.add_parser(sub)
    site.add_parser(sub)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(func=cmd_completion)
    for verb_parser in _all_subparsers(parser):
        # `orchestrate run --debug` as well as `orchestrate --debug run`; SUPPRESS keeps a
        # top-level --debug from being reset to False by the verb's own default
        verb_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="log everything, show tracebacks")
    return parser


def _all_subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every verb's parser, nested ones (`lab run`, `image build`) included."""
    for action in parser._actions:  # argparse has no public walk over its sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield child
                yield from _all_subparsers(child)


def version() -> str:
    try:
        return metadata.version("orchestrator")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def cmd_completion(args: argparse.Namespace) -> int:
    """Static completion scripts generated from the argument parser itself (shtab), so they
    never drift from the verbs; e.g. `orchestrate completion bash > /etc/bash_completion.d/
    orchestrate`."""
    print(shtab.complete(build_parser(), shell=args.shell))
    return ExitCode.OK


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_suite(args.suite, budget=args.settings)
    counts = make_plan(loaded.suite).counts()
    print(f"{args.suite}: ok ({len(loaded.suite.workloads)} workloads, "
          f"{counts['points']} points, {counts['trials']} trials)")
    return ExitCode.OK


def cmd_plan(args: argparse.Namespace) -> int:
    plan = make_plan(load_suite(args.suite, budget=args.settings).suite)
    if args.json:
        json.dump(plan_json(plan), sys.stdout, indent=1)
        print()
        return ExitCode.OK
    for group in plan.groups:
        print(f"{group.mode.value} / {group.guest}")
        for point in group.points:
            params = " ".join(f"{k}={v}" for k, v in point.params)
            print(f"  {point.workload} ({point.kind}) {params}: "
                  f"{point.warmup} warm-up + {point.trials_text()}  [{point.cell_id}]")
    counts = plan.counts()
    print(f"{counts['mode_switches']} mode switches, {counts['boots']} guest boots, "
          f"{counts['points']} points, {counts['trials']} trials "
          f"({counts['measured_trials']} measured)")
    return ExitCode.OK


def setup_logging(debug: bool) -> None:
    """Our own INFO lines; other libraries only when they warn (paramiko's connection chatter
    and matplotlib's font-cache notice stay out of a nightly log), everything with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug
        else "orchestrate: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("orchestrator").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("matplotlib").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    proc.interrupt_on_sigterm()
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _dispatch(args: argparse.Namespace) -> int:
    crash_dir: Path | None = None
    try:
        args.settings = Settings.from_environ(os.environ)  # the one read: passed down from here
        crash_dir = args.settings.crash_dir
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
    except BrokenPipeError:
        raise  # `orchestrate results | head`: not an error, see _quiet_broken_pipe
    except Exception:  # a bug: keep the traceback, print one line pointing at it
        if args.debug:
            raise
        path = _save_traceback(crash_dir)
        print(f"orchestrate: internal error; traceback saved to {path} "
              "(hint: rerun with --debug, and report it)", file=sys.stderr)
        return ExitCode.HARNESS_BROKE


def _quiet_broken_pipe() -> int:
    """The reader of our stdout went away (`| head`). Point stdout at /dev/null so the
    interpreter's final flush cannot fail again, and exit as a killed-by-SIGPIPE tool does."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _save_traceback(where: Path | None) -> Path:
    """The traceback into a file in `where` ($ORCH_CRASH_DIR; None: the temp directory)."""
    fd, name = tempfile.mkstemp(prefix="orchestrate-crash-", suffix=".txt", dir=where)
    with os.fdopen(fd, "w") as fh:
        traceback.print_exc(file=fh)
    return Path(name)


if __name__ == "__main__":
    sys.exit(main())

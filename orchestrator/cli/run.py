"""`orchestrate run`: fresh runs, --resume, --rerun-failed and --replay."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput
from orchestrator.host import host_facts
from orchestrator.run import runner
from orchestrator.run.backends import (
    ACCEL_LABELS,
    lab_host_backend,
    prepare_images,
    prepare_kernels,
)
from orchestrator.run.execute import no_tracing
from orchestrator.run.lock import run_lock
from orchestrator.run.progress import make_progress
from orchestrator.settings import Settings
from orchestrator.store.reader import resolve_run
from orchestrator.suite.loader import LoadedSuite, load_suite
from orchestrator.tracing.perf import PerfTracer

DEFAULT_SUITE = Path(__file__).with_name("default_suite.yaml")  # package data, beside this file


def add_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run a suite and record every trial")
    run.add_argument("suite", type=Path, nargs="?",
                     help="the suite file (default: the embedded default suite)")
    run.add_argument("--results-dir", type=Path, default=None,
                     help="where run directories go, and where --resume/--rerun-failed/"
                          "--replay look a run up by name (default: ./results or "
                          "$ORCH_RESULTS)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue a run, skipping trials already recorded")
    again.add_argument("--rerun-failed", type=Path, metavar="RUN_DIR",
                       help="re-run only the trials of a run that failed or errored")
    again.add_argument("--replay", type=Path, metavar="RUN_DIR",
                       help="run the exact suite of an earlier run again, as a new run")
    run.add_argument("--force-mode-switch", action="store_true",
                     help="reload KVM for a paging mode even while other VMs use /dev/kvm "
                          "(they will break)")
    # what rows of KVM modes say: `orchestrate lab run` gives `nested-tcg` to the run it starts
    # inside the nested lab's L1 (whose own KVM is emulated); not for users
    run.add_argument("--accel-label", choices=ACCEL_LABELS, default=ACCEL_LABELS[0],
                     help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings  # read once by the front door (cli/entry.py)
    # absolute once, here: libvirtd and the guests' QEMU open paths under it from their own
    # working directories (a relative ./results lost every guest trial once)
    root = (args.results_dir or settings.results).resolve()
    existing: Path | None = args.resume or args.rerun_failed
    if existing is not None:
        run_dir = existing_run(existing, root, explicit=args.results_dir is not None)
        loaded = _suite_for_existing(args.suite, run_dir, settings)
        req = _request(loaded, run_dir.parent, args, settings)
        with run_lock(what=f"resume {run_dir.name}", settings=settings):
            outcome = runner.resume_run(req, run_dir,
                                        only_failed=args.rerun_failed is not None)
    else:
        loaded = _suite_for_new(args, settings, root)
        req = _request(loaded, root, args, settings)
        with run_lock(what=f"suite {loaded.suite.name}", settings=settings):
            outcome = runner.start_run(req)
    _print_summary(outcome)
    return outcome.exit_code


def existing_run(run: Path, root: Path, *, explicit: bool) -> Path:
    """The run that --resume/--rerun-failed continue: a path, or a name (`latest` too) under
    the results root (--results-dir, default ./results or $ORCH_RESULTS). A run outside an
    explicitly given --results-dir is refused: it would silently write somewhere else than
    asked."""
    run_dir = resolve_run(run, root)
    if explicit and run_dir.parent != root:
        raise BadInput(f"{run} is not a run under --results-dir {root} "
                       f"(it is in {run_dir.parent})",
                       hint="name the run as it is under --results-dir, or leave --results-dir "
                            "out: a resumed run stays in its own directory")
    return run_dir


def _suite_for_new(args: argparse.Namespace, settings: Settings, root: Path) -> LoadedSuite:
    if args.replay is not None:
        if args.suite is not None:
            raise BadInput("give either a suite or --replay RUN_DIR, not both",
                           hint="--replay takes the suite stored in the run's manifest")
        return runner.suite_of_run(resolve_run(args.replay, root), settings)
    if args.suite is None:
        print(f"no suite given: running the embedded default suite ({DEFAULT_SUITE})")
        return load_suite(DEFAULT_SUITE, budget=settings)
    return load_suite(args.suite, budget=settings)


def _suite_for_existing(suite: Path | None, run_dir: Path, settings: Settings) -> LoadedSuite:
    stored = runner.suite_of_run(run_dir, settings)
    if suite is not None and load_suite(suite, budget=settings).sha256 != stored.sha256:
        raise BadInput(f"{suite} differs from the suite {run_dir.name} was started with",
                       hint="resume without naming the suite, or start a new run")
    return stored


def _request(loaded: LoadedSuite, root: Path, args: argparse.Namespace,
             settings: Settings) -> runner.RunRequest:
    suite = loaded.suite
    traced = bool(suite.trace.host or suite.trace.guest) or any(w.trace for w in suite.workloads)
    # the kernels the suite chose, fetched and verified now: refused before any run starts
    kernels = prepare_kernels(loaded, settings)
    cloud = prepare_images(loaded, settings)  # images brought by the user: checked now too
    return runner.RunRequest(
        loaded=loaded, results_root=root,
        backend_factory=partial(lab_host_backend, force=args.force_mode_switch,
                                settings=settings, accel_label=args.accel_label,
                                kernels=kernels, cloud=cloud),
        progress=make_progress(), host_facts=host_facts.collect,
        tracer=PerfTracer(suite) if traced else no_tracing, settings=settings,
    )


def _print_summary(outcome: runner.RunOutcome) -> None:
    parts = ", ".join(f"{n} {name}" for name, n in sorted(outcome.counts.items()))
    print(f"run {outcome.run_dir.name}: {parts or 'no trials'}")
    print(f"results: {outcome.run_dir}")

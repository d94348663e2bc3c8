"""`orchestrate nightly SUITE`: one unattended run, as cron starts it on a fleet runner.

The nightly wrapper holds its own lock (two nightlies never overlap; a manual `orchestrate
run` is still kept out by the run's own lock), runs `orchestrate run` as a child process in
its own process group under a global deadline (SIGTERM at the deadline: the run restores the
host and marks itself interrupted; SIGKILL after a grace period), finds the change points of
the suite's history on this host (analysis/changepoints.py: not a threshold between two runs),
reruns just the cells of a change point it has only just seen until enough runs confirm it or
not (fleet/confirm.py, within the same deadline), and keeps only the newest N runs of that
suite.
Everything goes to an append-only log file with UTC timestamps: no terminal, no colour.

The child gets SIGTERM if the wrapper itself dies (PR_SET_PDEATHSIG: even a SIGKILLed wrapper
leaves no run behind, and SIGTERM, not SIGKILL, so that the run still restores the host). Before
the run and after it, runs that died are recovered (recovery.py, under the run lock): one the
deadline had to SIGKILL gets its guests destroyed and the host's KVM and settings restored.

Exit codes: those of `orchestrate run` (0 ok, 1 trials failed, 2 bad input, 3 harness
broke), 4 when a confirmed change point that nobody has triaged (`orchestrate triage`) went the
worse way on this host, 5 when another nightly (or run) holds the lock, 130 when the deadline
(or a signal) stopped the run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from orchestrator import proc
from orchestrator.errors import BadInput, ExitCode, HarnessError, LockHeld, OrchestratorError
from orchestrator.run import recovery
from orchestrator.run.lock import run_lock
from orchestrator.settings import Settings as OrchSettings
from orchestrator.store import rundir
from orchestrator.store.reader import list_runs
from orchestrator.suite.loader import load_suite
from orchestrator.suite.units import parse_duration

LOG_NAME = "nightly.log"
MAX_LOGGED = 20  # change points written to the log, newest first
GOOD_OUTCOMES = {"ok", "skipped"}
PR_SET_CHILD_SUBREAPER = 36
CHILD_ENV = {"NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
MEANING = {
    ExitCode.OK: "ok", ExitCode.TRIALS_FAILED: "some trials failed",
    ExitCode.BAD_INPUT: "bad input", ExitCode.HARNESS_BROKE: "the harness broke",
    ExitCode.REGRESSION: "regression", ExitCode.LOCKED: "lock held",
    ExitCode.INTERRUPTED: "interrupted",
}


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser(
        "nightly", help="one unattended run for cron: lock, deadline, change points, retention")
    cmd.add_argument("suite", type=Path, help="the suite file")
    cmd.add_argument("--results-dir", type=Path, default=None,
                     help="where run directories go (default: ./results or $ORCH_RESULTS)")
    cmd.add_argument("--deadline", default="4h",
                     help="stop the run (SIGTERM) after this long (default 4h)")
    cmd.add_argument("--grace", default="120s",
                     help="after SIGTERM, wait this long before SIGKILL (default 120s)")
    cmd.add_argument("--keep", type=int, default=None, metavar="N",
                     help="keep only the newest N runs of this suite (default: keep all)")
    cmd.add_argument("--log", type=Path, default=None,
                     help=f"append the log here (default: RESULTS_DIR/{LOG_NAME})")
    cmd.add_argument("--threshold", type=float, default=0.05,
                     help="smallest relative change a change point may have "
                          "(default 0.05 = 5%%)")
    cmd.set_defaults(func=cmd_nightly)


# ---- the log -------------------------------------------------------------------------------


class NightlyLog:
    """Append-only, one timestamped line per message; the run's own output is copied in."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = path.open("a", encoding="utf-8", buffering=1)
        self._mutex = threading.Lock()

    def _write(self, text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with self._mutex:
            self._fh.write(f"{stamp} {text}\n")

    def say(self, message: str, *, err: bool = False) -> None:
        """A line of the wrapper's own: into the log, and to stdout/stderr (cron mails it)."""
        self._write(f"nightly: {message}")
        print(f"nightly: {message}", file=sys.stderr if err else sys.stdout, flush=True)

    def copy(self, stream: IO[str], prefix: str) -> None:
        for line in stream:
            self._write(f"{prefix}: {line.rstrip()}")

    def close(self) -> None:
        self._fh.close()


# ---- child processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    deadline_hit: bool
    killed: bool


def orchestrate_argv(*args: str) -> list[str]:
    """The same interpreter's `orchestrate` (its venv), never whatever is first on PATH."""
    return [sys.executable, "-m", "orchestrator.cli", *args]


def run_child(argv: Sequence[str], log: NightlyLog, prefix: str, *, deadline: float,
              grace_s: float) -> ChildResult:
    """Run argv in its own process group, output into the log; stop it at the deadline.

    `deadline` is a time.monotonic() value. At the deadline (or if we are told to stop) the
    group gets SIGTERM, and SIGKILL if it has not exited after `grace_s`. If this process dies,
    the child gets SIGTERM from the kernel (its death signal).
    """
    _become_subreaper()
    child: subprocess.Popen[str] = proc.spawn(
        list(argv), death_signal=signal.SIGTERM, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        env={**os.environ, **CHILD_ENV})
    assert child.stdout is not None  # noqa: S101 - PIPE was asked for
    reader = threading.Thread(target=log.copy, args=(child.stdout, prefix), daemon=True)
    reader.start()
    deadline_hit = killed = False
    try:
        child.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        deadline_hit = True
        killed = _stop(child, log, grace_s, "the deadline")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM to the wrapper (see main)
        killed = _stop(child, log, grace_s, "a signal to the nightly wrapper")
        reader.join(timeout=5)
        raise
    reader.join(timeout=30)
    return ChildResult(child.returncode, deadline_hit, killed)


def _stop(child: subprocess.Popen[str], log: NightlyLog, grace_s: float, why: str) -> bool:
    """SIGTERM to the child's group, SIGKILL after the grace period. True if it was killed."""
    log.say(f"{why}: sending SIGTERM to process group {child.pid}, "
            f"SIGKILL in {grace_s:g}s if it is still there", err=True)
    _signal_group(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.say(f"still running after {grace_s:g}s: sending SIGKILL", err=True)
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()
        orphans = _kill_orphans()
        if orphans:
            log.say(f"killed {len(orphans)} process(es) the run left behind: "
                    f"{', '.join(map(str, orphans))}", err=True)
        return True
    _signal_group(child.pid, signal.SIGKILL)  # leftovers of the group, if any
    return False


def _become_subreaper() -> None:
    """Processes orphaned by a killed run (its workloads run in sessions of their own, so
    the group signal misses them) are reparented to us instead of init, so we can end them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: orphans go to init as usual
        pass


def _kill_orphans() -> list[int]:
    """SIGKILL and reap every remaining child of ours (after the run itself was killed)."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            pids.append(int(entry.name))
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


# ---- runs of one suite ---------------------------------------------------------------------


def suite_runs(root: Path, suite_name: str) -> list[dict[str, Any]]:
    """This suite's runs directly under root (never a fleet's host directories), oldest first."""
    runs = [r for r in list_runs(root, hosts=False) if r.get("suite_name") == suite_name]
    return sorted(runs, key=lambda r: (str(r.get("started_at", "")), r["path"].name))


def is_good(run: dict[str, Any]) -> bool:
    """A run that would have exited 0: finished, and every trial ok or skipped."""
    outcomes = set(run.get("outcomes", {}))
    return run.get("status") in ("done", "ok") and outcomes <= GOOD_OUTCOMES


def previous_good(root: Path, suite_name: str) -> Path | None:
    good = [r["path"] for r in suite_runs(root, suite_name) if is_good(r)]
    return good[-1] if good else None


def apply_retention(root: Path, suite_name: str, keep: int, protect: set[Path]) -> list[Path]:
    """Delete all but the newest `keep` runs of the suite; never one in `protect`."""
    runs = [r["path"] for r in suite_runs(root, suite_name)]
    doomed = [p for p in runs[:max(0, len(runs) - keep)]
              if p.resolve() not in {q.resolve() for q in protect}]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def mark_interrupted(run_dir: Path, why: str) -> None:
    """A run killed before it could write its status: say so in its manifest."""
    rundir.mark_unfinished(run_dir, "interrupted", interrupted_by=why,
                            ended_at=datetime.now(UTC).isoformat(timespec="seconds"))


def final_code(run_rc: int, deadline_hit: bool, compare_rc: int | None) -> ExitCode:
    """One exit code: interrupted > bad input/lock > harness > regression > trials failed."""
    if deadline_hit or run_rc == ExitCode.INTERRUPTED:
        return ExitCode.INTERRUPTED
    if run_rc in (ExitCode.BAD_INPUT, ExitCode.LOCKED):
        return ExitCode(run_rc)
    if run_rc not in (ExitCode.OK, ExitCode.TRIALS_FAILED):
        return ExitCode.HARNESS_BROKE
    if compare_rc not in (None, ExitCode.OK, ExitCode.REGRESSION):
        return ExitCode.HARNESS_BROKE
    if compare_rc == ExitCode.REGRESSION:
        return ExitCode.REGRESSION
    return ExitCode(run_rc)


# ---- the verb ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    suite: Path
    suite_name: str
    root: Path
    deadline_s: float
    grace_s: float
    keep: int | None
    threshold: float
    orch: OrchSettings  # the ORCH_* settings, read once by main (the children read their own)


def _settings(args: argparse.Namespace) -> Settings:
    try:
        deadline_s, grace_s = parse_duration(args.deadline), parse_duration(args.grace)
    except ValueError as exc:
        raise BadInput(str(exc), hint="e.g. --deadline 4h --grace 120s") from None
    if args.keep is not None and args.keep < 1:
        raise BadInput(f"--keep {args.keep}: keep at least the run just made",
                       hint="leave --keep out to keep every run")
    suite = args.suite.resolve()
    orch: OrchSettings = args.settings
    root = (args.results_dir or orch.results).resolve()
    return Settings(suite, load_suite(suite, budget=orch).suite.name, root, deadline_s, grace_s,
                    args.keep, args.threshold, orch)


def cmd_nightly(args: argparse.Namespace) -> int:
    started = time.monotonic()
    orch: OrchSettings = args.settings  # read once by main (cli/entry.py, or ours below)
    root = (args.results_dir or orch.results).resolve()
    log_path = args.log or root / LOG_NAME
    try:
        log = NightlyLog(log_path)
    except OSError as exc:
        raise HarnessError(f"cannot write the nightly log {log_path}: {exc.strerror}",
                           hint="give a writable --log FILE") from None
    try:
        with run_lock(orch.nightly_lock, what=f"nightly {args.suite}", settings=orch):
            log.say(f"start (pid {os.getpid()}): {args.suite} into {root}, "
                    f"deadline {args.deadline}")
            code = _nightly(_settings(args), log, started)
    except LockHeld as exc:
        log.say(f"another nightly run holds the lock {orch.nightly_lock} "
                f"({exc.message.rsplit(': ', 1)[-1]}); not starting", err=True)
        code = ExitCode.LOCKED
    except OrchestratorError as exc:
        log.say(f"error: {exc.one_line()}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        log.say("interrupted by a signal; the run was stopped", err=True)
        code = ExitCode.INTERRUPTED
    finally:
        log.close()
    return code


def _recover(cfg: Settings, log: NightlyLog) -> None:
    """Runs that died (killed, or their host lost power) are put right and marked crashed."""
    recovery.recover_unless_locked([cfg.root], by=f"orchestrate nightly (pid {os.getpid()})",
                                   say=lambda line: log.say(line, err=True), settings=cfg.orch)


def _nightly(cfg: Settings, log: NightlyLog, started: float) -> ExitCode:
    _recover(cfg, log)
    prev = previous_good(cfg.root, cfg.suite_name)
    before = {r["path"].name for r in suite_runs(cfg.root, cfg.suite_name)}
    log.say(f"suite {cfg.suite_name}; {len(before)} earlier run(s) under {cfg.root}; last good: "
            f"{prev.name if prev else 'none yet'}")
    ran = run_child(orchestrate_argv("run", str(cfg.suite), "--results-dir", str(cfg.root)),
                    log, "run", deadline=started + cfg.deadline_s, grace_s=cfg.grace_s)
    new = _new_run(cfg, before)
    if ran.deadline_hit and new is not None:
        mark_interrupted(new, f"nightly deadline {cfg.deadline_s:g}s (killed)")
        log.say(f"deadline of {cfg.deadline_s:g}s reached: run {new.name} was stopped "
                f"({'killed' if ran.killed else 'host state restored'}) and is marked "
                "interrupted; its trials so far are kept", err=True)
    elif ran.deadline_hit:
        log.say(f"deadline of {cfg.deadline_s:g}s reached before the run made its directory",
                err=True)
    elif ran.returncode == ExitCode.LOCKED:
        log.say("another run holds the host's run lock: nothing was measured tonight", err=True)
    if ran.killed or ran.returncode < 0:
        _recover(cfg, log)  # what the killed run could not undo itself
    verdict_rc = _verdict(cfg, log, new, ran, started)
    code = final_code(ran.returncode, ran.deadline_hit, verdict_rc)
    if cfg.keep is not None:
        _retention(cfg, log, {p for p in (prev, new) if p is not None})
    where = new.name if new is not None else "no run directory"
    log.say(f"done: {where}: run exited {ran.returncode}, nightly exits {int(code)} "
            f"({MEANING.get(code, '?')}) after {time.monotonic() - started:.0f}s; "
            f"log {log.path}", err=code != ExitCode.OK)
    return code


def _new_run(cfg: Settings, before: set[str]) -> Path | None:
    made = [r["path"] for r in suite_runs(cfg.root, cfg.suite_name)
            if r["path"].name not in before]
    return made[-1] if made else None


def _verdict(cfg: Settings, log: NightlyLog, new: Path | None, ran: ChildResult,
             started: float) -> int | None:
    """0 or 4 from this host's change points (after confirmation reruns); None: no verdict."""
    if new is None or ran.deadline_hit or ran.returncode not in (0, 1):
        return None
    from orchestrator.analysis.history import describe  # pandas, scipy: once a run is made
    from orchestrator.fleet import confirm

    host = rundir.hostname()
    found = confirm.verdict(cfg.root, cfg.suite_name, cfg.threshold, host)
    waiting = confirm.pending(found)
    if waiting:
        _confirm(cfg, log, waiting, started)
        found = confirm.verdict(cfg.root, cfg.suite_name, cfg.threshold, host)
    for cp in found.change_points[:MAX_LOGGED]:
        log.say(f"change point: {describe(cp)}", err=cp.alerts)
    for cp in confirm.pending(found):
        log.say(f"not confirmed (yet): {cp.key}: no alert")
    verdict = "REGRESSION" if found.alerts else "no regression"
    log.say(f"change points of {cfg.suite_name} on {host} over {len(found.runs)} runs: "
            f"{verdict} ({len(found.alerts)} alert(s); `orchestrate triage` acknowledges one)",
            err=bool(found.alerts))
    return ExitCode.REGRESSION if found.alerts else ExitCode.OK


def _confirm(cfg: Settings, log: NightlyLog, waiting: list[Any], started: float) -> None:
    """Rerun just the cells of the unconfirmed change points, as often as runs are missing."""
    from orchestrator.fleet import confirm

    suite = confirm.reduced_suite(cfg.suite, waiting, cfg.root / confirm.CONFIRM_DIR)
    times = confirm.reruns_needed(waiting)
    log.say(f"{len(waiting)} change point(s) not yet confirmed "
            f"({', '.join(c.key for c in waiting)}): rerunning just their cells {times} time(s)")
    for n in range(times):
        ran = run_child(orchestrate_argv("run", str(suite), "--results-dir", str(cfg.root)),
                        log, f"confirm {n + 1}", deadline=started + cfg.deadline_s,
                        grace_s=cfg.grace_s)
        if ran.deadline_hit or ran.returncode not in (0, 1):
            log.say(f"confirmation rerun {n + 1} did not finish (exit {ran.returncode}"
                    f"{', deadline' if ran.deadline_hit else ''}): no more reruns", err=True)
            return


def _retention(cfg: Settings, log: NightlyLog, protect: set[Path]) -> None:
    assert cfg.keep is not None  # noqa: S101 - the caller checked
    try:
        # never delete under a run that is writing
        with run_lock(what="nightly retention", settings=cfg.orch):
            doomed = apply_retention(cfg.root, cfg.suite_name, cfg.keep, protect)
    except LockHeld:
        log.say("retention skipped: a run holds the run lock")
        return
    if doomed:
        log.say(f"retention (keep {cfg.keep}): deleted {', '.join(p.name for p in doomed)}")


# ---- standalone entry point (cron's wrapper uses it: `python -m orchestrator.fleet.nightly`) ---


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrate")
    add_parser(parser.add_subparsers(dest="verb", required=True, metavar="VERB"))
    args = parser.parse_args(["nightly", *(sys.argv[1:] if argv is None else argv)])
    proc.interrupt_on_sigterm()
    try:
        args.settings = OrchSettings.from_environ(os.environ)  # the one read: passed down
        code: int = args.func(args)
    except OrchestratorError as exc:
        print(f"orchestrate: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return code


if __name__ == "__main__":
    sys.exit(main())

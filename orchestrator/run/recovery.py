"""Runs that died without undoing what they did: found, judged, put right, and said so.

A run is dead when the process its ledger names is gone, is now another process (same PID,
another start time), the host rebooted since, or it ended but left changes it could not undo.
A live run is never touched. A dead run is recovered in this order, each step idempotent
and none raising (a step that fails is reported, stays in the ledger, and is tried again by
the next command):

  1. its processes that survived their death signal are killed (only if PID and start time
     still match; members of their sessions too, as their children may have been orphaned);
  2. its libvirt guests are destroyed (libvirtd owns them: no death signal reaches them);
  3. files it made are deleted (a guest's disk overlay);
  4. KVM is reloaded with the parameters it had before (paging.restore_params, verified from
     sysfs; refused while someone else's VM holds /dev/kvm);
  5. host settings are written back (host_prep.write_back), newest first;
  6. its manifest, if still `running`, says `crashed` (when, by whom, on what evidence), and
     every recovery is appended to the manifest's `recoveries`.

Each step done is one line through `say` and an `undone` line in the run's ledger; a run with
nothing left gets an `end` line and leaves the index. Where dead runs come from: the host's
index of live ledgers (ledger.indexed), and the results roots a command knows, scanned for
manifests still `running` (after a power loss the index, on a tmpfs, is gone; so is everything
else such a run left behind, and only its manifest needs marking).

The caller holds the run lock (`recover`), or `recover_unless_locked` takes it: two commands
never recover at once, and none recovers while another run holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.errors import LockHeld, OrchestratorError
from orchestrator.run.lock import lock_holder, run_lock
from orchestrator.settings import Settings, current
from orchestrator.store import ledger, rundir

log = logging.getLogger(__name__)

Say = Callable[[str], None]
Runner = Callable[..., proc.Completed]
Step = Callable[[dict[str, Any]], str]
GONE_WAIT_S = 30.0  # a killed VM may take a while to release its memory and /dev/kvm


@dataclass
class RunState:
    """What a run's ledger says about it, and the verdict."""

    run_dir: Path
    name: str
    verdict: str  # alive | dead | finished | unknown (not ours to judge) | untrusted
    why: str  # evidence, in words: "pid 123 is gone"
    pid: int | None = None
    open: list[dict[str, Any]] = field(default_factory=list)  # entries not undone, in order
    rebooted: bool = False
    guests: list[str] = field(init=False)  # as found: the guests it owns (or owned, if dead)

    def __post_init__(self) -> None:
        self.guests = [str(e.get("name")) for e in self.open if e.get("kind") == "domain"]


def examine(run_dir: Path) -> RunState:
    """Judge a run by its ledger's last session."""
    name = run_dir.name
    if not (run_dir / ledger.LEDGER).exists():
        return RunState(run_dir, name, "unknown", "it has no ledger (an older version's run)")
    problem = ledger.trusted(run_dir / ledger.LEDGER)
    if problem:
        return RunState(run_dir, name, "untrusted", f"its ledger is {problem}")
    entries = ledger.read(run_dir)
    starts = [i for i, e in enumerate(entries) if e.get("kind") == "run"]
    if not starts:
        return RunState(run_dir, name, "unknown", "its ledger records no run")
    run, session = entries[starts[-1]], entries[starts[-1] + 1:]
    done = {e.get("ref") for e in session if e.get("kind") == "undone"}
    open_ = [e for e in session if e.get("kind") not in ("undone", "end")
             and e["seq"] not in done]
    ended = any(e.get("kind") == "end" for e in session)
    pid, start = run.get("pid"), run.get("start")
    state = RunState(run_dir, name, "dead", "", pid if isinstance(pid, int) else None, open_)
    if run.get("host") != socket.gethostname():
        state.verdict, state.why = "unknown", f"a run of host {run.get('host')!r}, not this one"
    elif run.get("boot_id") != ledger.boot_id():
        state.rebooted, state.why = True, "the host rebooted since it ran"
    elif ended:
        state.verdict = "dead" if open_ else "finished"
        state.why = f"it ended with {len(open_)} change(s) not undone"
    elif not isinstance(pid, int) or not isinstance(start, int):
        state.verdict, state.why = "unknown", "its ledger names no process"
    elif ledger.same_process(pid, start):
        state.verdict, state.why = "alive", f"pid {pid} is running"
    elif ledger.start_time(pid) is None:
        state.why = f"pid {pid} is gone"
    else:
        state.why = f"pid {pid} is another process now"
    return state


# ---- finding runs ---------------------------------------------------------------------------


def candidates(roots: Sequence[Path], say: Say, *, dry_run: bool,
               index: Path | None = None) -> list[Path]:
    """Run directories that may need recovery: every indexed run (a link whose directory is
    gone leaves the index), and every run under `roots` whose manifest still says running."""
    found: dict[Path, None] = {}
    for name, target in ledger.indexed(index):
        if rundir.RunDir(target).is_run() or (target / ledger.LEDGER).exists():
            found[target] = None
        elif not dry_run:
            ledger.unregister(Path(name), index)
            say(f"recovery: run {name}: its directory {target} is gone; dropped from the index")
    for root in roots:  # only runs with a ledger can be judged (older runs have none)
        for run_dir in _subdirs(root):
            if (run_dir / ledger.LEDGER).exists() and _status(run_dir) == "running":
                found[run_dir.resolve()] = None
    return list(found)


def _subdirs(root: Path) -> list[Path]:
    try:
        return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _status(run_dir: Path) -> str | None:
    try:
        status = rundir.read_manifest(run_dir).get("status")
    except OrchestratorError:
        return None
    return status if isinstance(status, str) else None


# ---- recovering -----------------------------------------------------------------------------


@dataclass
class Survey:
    """What a recovery found: live runs (left alone), and the runs it recovered."""

    alive: list[RunState] = field(default_factory=list)
    dead: list[RunState] = field(default_factory=list)

    def live_domains(self) -> dict[str, str]:
        """Guest name -> the live run it belongs to (never a stray)."""
        return {d: s.name for s in self.alive for d in s.guests}

    def dead_domains(self) -> set[str]:
        return {d for s in self.dead for d in s.guests}


def recover(roots: Sequence[Path] = (), *, by: str, say: Say, dry_run: bool = False,
            runner: Runner = proc.run, settings: Settings | None = None) -> Survey:
    """Recover every dead run (the caller holds the run lock); `dry_run` only says what it
    would do. Never raises: every problem is said and left for the next command. `settings`
    (the command's): where the index of live runs is, and the default libvirt URI."""
    survey = Survey()
    try:
        settings = settings or current()
        found = candidates(roots, say, dry_run=dry_run, index=settings.state_dir)
    except Exception as exc:  # noqa: BLE001 - recovery must never stop the command
        say(f"recovery: could not look for dead runs: {exc}")
        return survey
    for run_dir in found:
        try:
            state = examine(run_dir)
        except Exception as exc:  # noqa: BLE001
            say(f"recovery: run {run_dir.name}: could not read its ledger: {exc}")
            continue
        if state.verdict == "alive":
            survey.alive.append(state)
            say(f"recovery: run {state.name} is alive ({state.why}): left alone")
        elif state.verdict == "finished":
            if not dry_run:
                ledger.unregister(run_dir, settings.state_dir)
        elif state.verdict == "untrusted":  # it names processes to kill, files to write
            say(f"recovery: run {state.name}: {state.why}: never acted on")
        elif state.verdict == "unknown":  # an older version's run, or another host's
            log.debug("recovery: run %s: %s: left alone", state.name, state.why)
        else:
            survey.dead.append(state)
            _Recovery(state, by, say, dry_run, runner, settings).run()
    return survey


def recover_unless_locked(roots: Sequence[Path] = (), *, by: str, say: Say,
                          dry_run: bool = False, runner: Runner = proc.run,
                          settings: Settings | None = None) -> Survey:
    """`recover` under the run lock; while another run holds it, recover nothing (only say
    what would be done: that run's own recovery at its start has already seen the rest)."""
    if dry_run:
        return recover(roots, by=by, say=say, dry_run=True, runner=runner, settings=settings)
    # Look first, without the lock: the run lock is taken only when there is something to put
    # right, so `doctor` or `gc` beside a run that is just starting never makes it exit 5.
    look = recover(roots, by=by, say=lambda line: None, dry_run=True, runner=runner,
                   settings=settings)
    if not look.dead:
        for state in look.alive:
            say(f"recovery: run {state.name} is alive ({state.why}): left alone")
        return look
    try:
        with run_lock(what=f"{by}: recovery", settings=settings):
            return recover(roots, by=by, say=say, runner=runner, settings=settings)
    except LockHeld:
        pass
    except OrchestratorError as exc:  # an unsafe lock: said, and nothing is touched
        say(f"recovery: {exc.one_line()}; recovering nothing")
        return recover(roots, by=by, say=lambda line: None, dry_run=True, runner=runner,
                       settings=settings)
    try:
        holder: int | str | None = lock_holder(settings=settings)
    except OrchestratorError:
        holder = "?"
    say(f"recovery: the run lock is held by pid {holder} (a run in progress): "
        "recovering nothing")
    return recover(roots, by=by, say=say, dry_run=True, runner=runner, settings=settings)


class _Recovery:
    """One dead run put right."""

    def __init__(self, state: RunState, by: str, say: Say, dry_run: bool,
                 runner: Runner, settings: Settings) -> None:
        self.state, self.by, self.dry_run, self.runner = state, by, dry_run, runner
        self.settings = settings
        self._say = say
        self.actions: list[str] = []
        self.book: ledger.Ledger | None = None

    def say(self, what: str) -> None:
        self.actions.append(what)
        self._say(f"recovery: run {self.state.name}: {'would: ' if self.dry_run else ''}{what}")

    def run(self) -> None:
        state = self.state
        self._say(f"recovery: run {state.name} is dead ({state.why})"
                  + ("" if self.dry_run else ": recovering it"))
        with self._ledger():
            if state.rebooted:
                self._settle(list(state.open), "gone with the reboot")
            else:
                by_kind = {k: [e for e in state.open if e.get("kind") == k]
                           for k in ("process", "domain", "file", "kvm", "sysfs")}
                self._guarded(partial(self._processes, by_kind["process"]))
                steps: list[tuple[Step, list[dict[str, Any]]]] = [
                    (self._domain, by_kind["domain"]), (self._file, by_kind["file"]),
                    (self._kvm, by_kind["kvm"][::-1]), (self._sysfs, by_kind["sysfs"][::-1])]
                for step, entries in steps:
                    for entry in entries:
                        self._guarded(partial(self._one, step, entry))
            self._mark()
            self._end()

    @contextlib.contextmanager
    def _ledger(self) -> Iterator[None]:
        if not self.dry_run:
            try:
                self.book = ledger.Ledger(self.state.run_dir)
            except OrchestratorError as exc:
                self._say(f"recovery: run {self.state.name}: {exc.one_line()}")
        try:
            yield
        finally:
            if self.book is not None:
                self.book.close()

    def _done(self, entry: dict[str, Any]) -> None:
        """Undone: an `undone` line, so no later command does it again."""
        if self.dry_run or self.book is None:
            return
        try:
            self.book.undone(entry["seq"], by=self.by)
            self.state.open.remove(entry)
        except (OrchestratorError, ValueError) as exc:
            log.warning("recovery: %s", exc)

    def _settle(self, entries: list[dict[str, Any]], why: str) -> None:
        if entries:
            self.say(f"{len(entries)} recorded change(s) {why}")
        for entry in entries:
            self._done(entry)

    def _one(self, step: Step, entry: dict[str, Any]) -> None:
        self.say(step(entry))
        self._done(entry)

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - said, and left for the next command
            text = exc.one_line() if isinstance(exc, OrchestratorError) else repr(exc)
            self.say(f"FAILED: {text} (left for the next command)")

    # -- the steps --

    def _processes(self, entries: list[dict[str, Any]]) -> None:
        sessions = _sessions()
        killed: list[tuple[int, int]] = []
        gone: list[dict[str, Any]] = []
        for entry in entries:
            pid, start = int(entry["pid"]), int(entry["start"])
            now = ledger.start_time(pid)
            if now is not None and now != start:
                # the kernel never hands out a PID still in use as a session id, so no
                # member of the old session is left either
                self.say(f"pid {pid} ({entry.get('argv')}) is another process now: left alone")
                self._done(entry)
                continue
            # itself and its session (proc.spawn makes each child a session leader): what it
            # started may have outlived it, and all of that started after it
            targets = [(p, s) for p, s in sessions.get(pid, []) if s >= start and p != pid]
            if now == start:
                targets.insert(0, (pid, start))
            if not targets:
                gone.append(entry)
                continue
            for target, target_start in targets:
                label = entry.get("argv") if target == pid else f"of {pid}'s session"
                if self.dry_run:
                    self.say(f"kill pid {target} ({label})")
                elif _kill(target, target_start):
                    killed.append((target, target_start))
                    self.say(f"killed pid {target} ({label})")
            self._done(entry)
        if gone:
            self._settle(gone, "had already ended: pid(s) " +
                         ", ".join(str(e["pid"]) for e in gone))
        if killed:
            _wait_gone(killed)

    def _domain(self, entry: dict[str, Any]) -> str:
        name, uri = str(entry["name"]), str(entry.get("uri") or "")
        if self.dry_run:
            return f"destroy guest {name}"
        from orchestrator.guests.libvirt_domain import connect, destroy_by_name

        conn = connect(uri or self.settings.libvirt_uri)
        try:
            return destroy_by_name(conn, name)
        finally:
            conn.close()

    def _file(self, entry: dict[str, Any]) -> str:
        path = Path(str(entry["path"]))
        if self.dry_run:
            return f"delete {path}"
        if not path.exists():
            return f"{path} was already gone"
        path.unlink()
        return f"deleted {path}"

    def _kvm(self, entry: dict[str, Any]) -> str:
        from orchestrator.host.paging import restore_params  # paging needs accel, accel needs us

        vendor, before = str(entry["vendor"]), entry["before"]
        tdp, tdp_mmu = bool(before["tdp"]), bool(before["tdp_mmu"])
        if self.dry_run:
            return f"reload {vendor} for paging mode {before.get('mode')}"
        return restore_params(vendor, tdp, tdp_mmu, root=Path(str(entry.get("root", "/"))),
                              runner=self.runner)

    def _sysfs(self, entry: dict[str, Any]) -> str:
        from orchestrator.host.host_prep import write_back

        path, old = Path(str(entry["path"])), str(entry["old"])
        if "sys" not in path.parts:  # a ledger only ever names host settings under sysfs
            raise OrchestratorError(f"{path} is not a sysfs setting: not written")
        if self.dry_run:
            return f"write {old!r} back to {path}"
        write_back(path, old)
        return f"restored {path} to {old!r}"

    def _mark(self) -> None:
        if self.dry_run:
            if _status(self.state.run_dir) == "running":
                self.say("mark it crashed in its manifest")
            return
        now = datetime.now(UTC).isoformat(timespec="seconds")
        running = False

        def mark(manifest: rundir.Manifest) -> None:
            nonlocal running
            running = manifest.get("status") == "running"
            if running:
                manifest.update(status="crashed", crashed_at=now, crashed_by=self.by,
                                crash_evidence=self.state.why)
            manifest.setdefault("recoveries", []).append(
                {"at": now, "by": self.by, "why": self.state.why, "actions": self.actions})

        try:
            rundir.RunDir(self.state.run_dir).update_manifest(mark)
        except (OrchestratorError, OSError) as exc:
            text = exc.one_line() if isinstance(exc, OrchestratorError) else str(exc)
            self._say(f"recovery: run {self.state.name}: could not update its manifest: {text}")
            return
        if running:
            self._say(f"recovery: run {self.state.name}: marked crashed in its manifest")

    def _end(self) -> None:
        if self.dry_run or self.book is None:
            return
        if self.state.open:
            self._say(f"recovery: run {self.state.name}: {len(self.state.open)} change(s) "
                      "not undone; it stays in the index for the next command")
            return
        try:
            self.book.append("end", by=self.by, left=[])
        except OrchestratorError as exc:
            log.warning("recovery: %s", exc.one_line())
        ledger.unregister(self.state.run_dir, self.settings.state_dir)


# ---- processes ------------------------------------------------------------------------------


def _sessions() -> dict[int, list[tuple[int, int]]]:
    """Session id -> [(pid, start time)] of every live process, from one pass over /proc."""
    table: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) < 20 or fields[0] in ("Z", "X"):
            continue
        table.setdefault(int(fields[3]), []).append((int(entry.name), int(fields[19])))
    return table


def _kill(pid: int, start: int) -> bool:
    """SIGKILL exactly that process: through a pidfd, checked after it was opened, so a PID
    reused in between is never hit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # an old kernel: the small window of a plain kill
        if not ledger.same_process(pid, start):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True
    try:
        if not ledger.same_process(pid, start):
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def _wait_gone(processes: list[tuple[int, int]]) -> None:
    """Until the killed processes are gone (a VM's QEMU lets go of /dev/kvm only then)."""
    deadline = time.monotonic() + GONE_WAIT_S
    while any(ledger.same_process(p, s) for p, s in processes):
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)

"""The one way to run a local command: argv only, logged, with a timeout and a typed error.

This module imports nothing of the package but `errors`, so every layer can use it.
The SSH session (ssh.py) honours the same contract: `CommandError` with argv, exit code and
the tails of stdout/stderr.

Every child is started by `spawn`: in a session of its own (so a timeout can kill its whole
group) and with PR_SET_PDEATHSIG, so it dies with us even when we are SIGKILLed and no
`finally` runs (a native workload used to keep running under PID 1 while the next run
measured). The kernel sends that signal when the *thread* that forked the child exits, so
children are spawned from the thread that waits for them (the orchestrator spawns from its
main thread only). A running run also records each child in its ledger (see ledger.py, which
installs a `ChildWatcher` here): a child that escaped its death signal is killed later by
recovery, after a check of its PID and start time.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from orchestrator.errors import HarnessError

log = logging.getLogger(__name__)

TAIL_CHARS = 2000
PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children go without a death signal
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# looked up once here: the forked child, before exec, should do as little as possible
_PRCTL = _load_prctl()


def _die_with(parent: int, sig: int) -> None:
    """preexec_fn: get `sig` when our parent thread dies; if it died before this ran (the
    child was orphaned at birth), die at once instead of running without a parent."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


class ChildWatcher(Protocol):
    """Told of every child spawned and reaped (a run's ledger records them)."""

    def started(self, pid: int, argv: Sequence[str]) -> object: ...

    def ended(self, token: object) -> None: ...


_watcher: ChildWatcher | None = None
_tokens: dict[int, object] = {}


@contextmanager
def watching(watcher: ChildWatcher) -> Iterator[None]:
    """Tell `watcher` of every child spawned and reaped within the with-block."""
    global _watcher
    previous, _watcher = _watcher, watcher
    try:
        yield
    finally:
        _watcher = previous


class _Interrupts:
    """An interrupt (SIGTERM, Ctrl-C) that arrives while the main thread forks is held until
    the fork is done: raised inside the interpreter's at-fork hooks (logging's lock release)
    it would be printed as "Exception ignored" and lost, and the run would go on."""

    forking = False
    held: int | None = None


def spawn(argv: Sequence[str], *, death_signal: int = signal.SIGKILL,
          **popen: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen in a new session, with `death_signal` when this thread dies, told to
    the watcher. Call `reaped(child)` once it has been waited for. An interrupt during the
    fork kills the new child and is raised once the fork is done."""
    argv = [str(a) for a in argv]
    main = threading.current_thread() is threading.main_thread()
    _Interrupts.forking = main
    try:
        child: subprocess.Popen[Any] = subprocess.Popen(  # noqa: S603 - argv, never a shell
            argv, start_new_session=True,
            preexec_fn=partial(_die_with, os.getpid(), death_signal), **popen)
    finally:
        _Interrupts.forking = False
    if main and _Interrupts.held is not None:
        signum, _Interrupts.held = _Interrupts.held, None
        kill_group(child)
        child.wait()
        raise KeyboardInterrupt(f"signal {signum}")
    watcher = _watcher
    if watcher is not None:
        try:
            _tokens[child.pid] = watcher.started(child.pid, argv)
        except Exception as exc:  # noqa: BLE001 - a record lost must not lose the command
            log.warning("could not record child %d in the run's ledger: %s", child.pid, exc)
    return child


def reaped(child: subprocess.Popen[Any]) -> None:
    """The child was waited for: nothing is left to kill after a crash."""
    token = _tokens.pop(child.pid, None)
    watcher = _watcher
    if token is not None and watcher is not None:
        try:
            watcher.ended(token)
        except Exception as exc:  # noqa: BLE001 - as in spawn
            log.warning("could not record the end of child %d: %s", child.pid, exc)


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM (a deadline, a service stop, `kill`) is Ctrl-C, and either is a
    KeyboardInterrupt in the main thread that no fork can swallow (see `spawn`)."""
    signal.signal(signal.SIGTERM, _on_interrupt)
    signal.signal(signal.SIGINT, _on_interrupt)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    # KeyboardInterrupt, not an Exception: nothing on the way up may swallow it, and every
    # ExitStack unwinds exactly as for Ctrl-C (guests destroyed, host mode restored).
    if _Interrupts.forking:
        _Interrupts.held = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


def stat_fields(path: Path) -> tuple[str, list[str]] | None:
    """A /proc/PID/stat file as (command name, the fields after it), or None if unreadable.
    The name sits in parentheses and may hold spaces and parentheses itself, so the fields
    start after the last ')': state first, then ppid, ... (field 3 onwards of proc(5))."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return None
    head, paren, rest = text.rpartition(")")
    if not paren or "(" not in head:
        return None
    return head[head.index("(") + 1:], rest.split()


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(HarnessError):
    """A command exited non-zero, timed out or could not be started."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        *,
        reason: str = "",
        hint: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout_tail = tail(stdout)
        self.stderr_tail = tail(stderr)
        what = reason or f"exited with {returncode}"
        last = self.stderr_tail.strip().splitlines()[-1:] or [""]
        detail = f": {last[0]}" if last[0] else ""
        super().__init__(f"`{shlex.join(argv)}` {what}{detail}", hint=hint)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Completed:
    """Run argv to completion; on timeout kill its whole process group and raise."""
    argv = [str(a) for a in argv]
    log.debug("+ %s", shlex.join(argv))
    full_env = {**os.environ, **env} if env is not None else None
    try:
        proc = spawn(
            argv,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
        )
    except OSError as exc:
        raise CommandError(argv, None, reason=f"could not start ({exc.strerror})",
                           hint=f"is {argv[0]!r} installed and on PATH?") from exc
    try:
        out, err = proc.communicate(input=input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        reaped(proc)
        raise CommandError(argv, None, out, err, reason=f"timed out after {timeout:g}s") from None
    except BaseException:
        kill_group(proc)  # Ctrl-C or SIGTERM: never leave the child behind
        proc.wait()
        reaped(proc)
        raise
    reaped(proc)
    done = Completed(tuple(argv), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, out, err)
    return done


def kill_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def background(argv: Sequence[str], *, settle_s: float = 0.2,
               output: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    """A command running alongside the caller (a tracer); killed on every exit path.

    Its stdout and stderr are pipes for the caller to read, or go to `output` for a long-lived
    command nobody reads (a full pipe would block it)."""
    argv = [str(a) for a in argv]
    log.debug("+ (background) %s", shlex.join(argv))
    try:
        with contextlib.ExitStack() as files:
            sink: int | IO[str] = subprocess.PIPE
            if output is not None:
                sink = files.enter_context(output.open("a"))
            child: subprocess.Popen[str] = spawn(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, text=True)
    except OSError as exc:
        raise CommandError(argv, None, reason=f"could not start ({exc.strerror})") from exc
    time.sleep(settle_s)  # let it attach before the measured work starts
    try:
        yield child
    finally:
        if child.poll() is None:
            kill_group(child)
        child.wait()
        reaped(child)


def stop_background(child: subprocess.Popen[str], sig: int, *, timeout: float) -> str:
    """Ask a background command to finish (e.g. SIGINT makes perf print), return its stderr."""
    if child.poll() is None:
        child.send_signal(sig)
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(child)
        _, err = child.communicate()
    return err

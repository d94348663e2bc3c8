"""The one way to run a local command: argv only, logged, with a timeout and a typed error.

This module imports nothing of the package but `errors`, so every layer can use it.
The SSH session (ssh.py) honours the same contract: `CommandError` with argv, exit code and
the tails of stdout/stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.errors import HarnessError

log = logging.getLogger(__name__)

TAIL_CHARS = 2000


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
        proc = subprocess.Popen(  # noqa: S603 - argv list, never a shell
            argv,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # so a timeout can kill the children too
        )
    except OSError as exc:
        raise CommandError(argv, None, reason=f"could not start ({exc.strerror})",
                           hint=f"is {argv[0]!r} installed and on PATH?") from exc
    try:
        out, err = proc.communicate(input=input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise CommandError(argv, None, out, err, reason=f"timed out after {timeout:g}s") from None
    except BaseException:
        kill_group(proc)  # Ctrl-C or SIGTERM: never leave the child behind
        proc.wait()
        raise
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
            child = subprocess.Popen(  # noqa: S603 - argv list, never a shell
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
                text=True, start_new_session=True)
    except OSError as exc:
        raise CommandError(argv, None, reason=f"could not start ({exc.strerror})") from exc
    time.sleep(settle_s)  # let it attach before the measured work starts
    try:
        yield child
    finally:
        if child.poll() is None:
            kill_group(child)
        child.wait()


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

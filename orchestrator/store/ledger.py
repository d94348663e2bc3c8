"""What a run changed on the host and what it started, written down BEFORE it does so, so
that a later command can undo it when the run was killed (SIGKILL, the OOM killer) before its
`finally` blocks ran.

One ledger per run directory, `ledger.jsonl`: append-only, one JSON object per line, each
line a single write(). Every line has `seq` (unique in the file), `kind` and `at` (epoch s).

  run      pid, start, boot_id, host, argv    a run (or a resumed run) begins: its session
  process  pid, start, argv                   a child (workload, tracer, QEMU) was started
  domain   name, uri                          a libvirt guest is about to be created
  file     path                               a file is about to be made (a disk overlay)
  kvm      vendor, root, before, after        KVM is about to be reloaded with other params
  sysfs    path, old, new                     a host setting is about to be written
  undone   ref, by                            entry `ref` was undone (by the run, or recovery)
  end      by, left                           the session ended (`left`: entries not undone)

`start` is field 22 of /proc/PID/stat (clock ticks after boot): a PID with another start time
is another process, so a reused PID is never taken for ours; `boot_id` says whether the host
rebooted since (then nothing recorded survives: processes, guests, module parameters and
sysfs values are all gone or reset). Only lines after the last `run` line count: a resumed
run starts a new session in the same file. A child's line is written right after it starts
(its PID is not known before); its death signal (proc.spawn) covers that instant.

Lines about host state are fsync'd. Process lines are not: no process outlives a power loss,
a write() outlives our own death, and a workload is already running when its line is written
(no fsync beside a measurement).

A host-wide index of live ledgers (the settings' state_dir: $ORCH_STATE_DIR, default
/run/orchestrator; made 0700; each function below takes it as `index`) holds
one symbolic link per running run to its run directory, so `gc` and `doctor`, which know no
results root, can find runs that died. A run adds its link when it starts and removes it when
it ends with nothing left to undo. /run is a tmpfs: after a power loss the index is empty, and
so is everything it would have pointed at (results roots are then scanned for runs still
marked `running`; see recovery.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.errors import HarnessError
from orchestrator.settings import STATE_ENV as STATE_ENV
from orchestrator.settings import current

log = logging.getLogger(__name__)

LEDGER = "ledger.jsonl"
DURABLE = {"run", "domain", "file", "kvm", "sysfs", "end"}  # host state: fsync'd
ARGV_CHARS = 160


# ---- who is alive ----------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None if there is no such
    process or it is a zombie (it has let go of its memory, files and /dev/kvm already)."""
    stat = proc.stat_fields(Path(f"/proc/{pid}/stat"))
    fields = stat[1] if stat else []
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 overall: the 20th after comm


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def same_process(pid: int, start: int) -> bool:
    return start_time(pid) == start


def short_argv(argv: Sequence[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= ARGV_CHARS else text[:ARGV_CHARS - 3] + "..."


# ---- the ledger file ------------------------------------------------------------------------


def trusted(path: Path) -> str:
    """'' if a file we are about to act on as root was written by us alone, else why not: a
    ledger names processes to kill and files to write, so nobody else may have written one."""
    return _ours_alone(path, directory=False, closed=0o022, we_make="")


def _ours_alone(path: Path, *, directory: bool, closed: int, we_make: str) -> str:
    """'' if path (not followed if a link) is a regular file or directory, as asked, owned by
    us, with none of the `closed` mode bits set; else why not, in a few words."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or "unreadable"
    if not (stat.S_ISDIR if directory else stat.S_ISREG)(st.st_mode):
        return "not a directory" if directory else "not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by us"
    mode = stat.S_IMODE(st.st_mode)
    if mode & closed:
        what = "open to others" if directory else "writable by others"
        return f"{what} (mode {mode:04o}{we_make})"
    return ""


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every readable line of a run's ledger, in order; a torn last line is skipped."""
    try:
        raw = (run_dir / LEDGER).read_bytes()
    except OSError:
        return []
    entries = []
    for line in raw.split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the empty tail, or a line cut short by a crash
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int):
            entries.append(entry)
    return entries


class Ledger:
    """A run directory's ledger, open for appending (by its run, or by a recovery)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LEDGER
        self._next = max((e["seq"] for e in read(run_dir)), default=-1) + 1
        self._mutex = threading.Lock()
        self.open_entries: dict[int, dict[str, Any]] = {}
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
        except OSError as exc:
            raise HarnessError(f"cannot write the run's ledger {self.path}: {exc.strerror}",
                               hint="the results directory must be writable") from None

    def append(self, kind: str, **fields: Any) -> int:
        """Write one line (fsync'd if it is about host state); its seq."""
        with self._mutex:
            seq = self._next
            self._next += 1
            entry = {"seq": seq, "kind": kind, "at": round(time.time(), 3), **fields}
            line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
            try:
                os.write(self._fd, line.encode())
                if kind in DURABLE:
                    os.fsync(self._fd)
            except OSError as exc:
                raise HarnessError(f"cannot write the run's ledger {self.path}: "
                                   f"{exc.strerror}", hint="is the disk full?") from None
            if kind not in ("run", "undone", "end"):
                self.open_entries[seq] = entry
            return seq

    def undone(self, ref: int, *, by: str = "run") -> None:
        self.append("undone", ref=ref, by=by)
        self.open_entries.pop(ref, None)

    def close(self) -> None:
        os.close(self._fd)


# ---- the running run's session --------------------------------------------------------------


_active: Ledger | None = None


def record(kind: str, **fields: Any) -> int | None:
    """Write down what the running run is about to do; None when no run is recording (a
    unit test, `orchestrate lab`). Raises HarnessError if it cannot be written: the host is
    not changed without a record."""
    book = _active
    return None if book is None else book.append(kind, **fields)


def undone(ref: int | None) -> None:
    """It was undone normally: nothing is left to recover."""
    book = _active
    if book is not None and ref is not None:
        book.undone(ref)


class _ChildLedger:
    """proc.ChildWatcher: a run's children, as they start and are reaped."""

    def __init__(self, book: Ledger) -> None:
        self.book = book

    def started(self, pid: int, argv: Sequence[str]) -> object:
        start = start_time(pid)  # a zombie already? then there is nothing to kill later
        if start is None:
            return None
        return self.book.append("process", pid=pid, start=start, argv=short_argv(argv))

    def ended(self, token: object) -> None:
        if isinstance(token, int):
            self.book.undone(token)


@contextmanager
def recording(run_dir: Path, index: Path | None = None) -> Iterator[Ledger]:
    """The run's session: begun before the run changes anything, registered in the index
    (`index`: the settings' state_dir); ended (and unregistered, if everything was undone) on
    every exit path that runs."""
    global _active
    book = Ledger(run_dir)
    me = os.getpid()
    try:
        book.append("run", pid=me, start=start_time(me), boot_id=boot_id(),
                    host=socket.gethostname(), argv=short_argv(sys.argv))
        register(run_dir, index)
    except HarnessError:
        with contextlib.suppress(HarnessError):
            book.append("end", by="run", left=[])  # nothing was done: nothing to recover
        book.close()
        raise
    previous, _active = _active, book
    try:
        with proc.watching(_ChildLedger(book)):
            yield book
    finally:
        _active = previous
        left = sorted(book.open_entries)
        try:
            book.append("end", by="run", left=left)
        except HarnessError as exc:
            log.error("%s", exc.one_line())
        if left:  # e.g. KVM could not be put back: the next command tries again
            log.error("the run leaves %d change(s) not undone (%s); the next `orchestrate "
                      "run`, `gc` or `doctor` will try again", len(left),
                      ", ".join(book.open_entries[s]["kind"] for s in left))
        else:
            unregister(run_dir, index)
        book.close()


# ---- the host-wide index --------------------------------------------------------------------


def state_dir(index: Path | None = None) -> Path:
    """The index directory: the one given, else the environment's (a library caller's)."""
    return index or current().state_dir


def index_problem(directory: Path) -> str:
    """'' if the index directory is ours alone (it tells a root process what to act on)."""
    return _ours_alone(directory, directory=True, closed=0o077, we_make=", we make it 0700")


def _index(index: Path | None) -> Path:
    directory = state_dir(index)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise HarnessError(f"cannot make the run index {directory}: {exc.strerror}",
                           hint=f"run as root, or set {STATE_ENV} to a writable place"
                           ) from None
    problem = index_problem(directory)
    if problem:
        raise HarnessError(f"refusing the run index {directory}: {problem}",
                           hint="remove it: the orchestrator makes its own (mode 0700)")
    return directory


def register(run_dir: Path, index: Path | None = None) -> None:
    link = _index(index) / run_dir.name
    tmp = link.with_name(f".{run_dir.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.resolve())
    os.replace(tmp, link)  # a resumed run replaces its own earlier link


def unregister(run_dir: Path, index: Path | None = None) -> None:
    try:
        (state_dir(index) / run_dir.name).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove %s from the run index: %s", run_dir.name, exc.strerror)


def indexed(index: Path | None = None) -> list[tuple[str, Path]]:
    """(name, run directory) of every run in the index: live ones, and dead ones not yet
    recovered. Empty if there is no index, or one that is not ours (never trusted)."""
    directory = state_dir(index)
    if not directory.exists():
        return []
    problem = index_problem(directory)
    if problem:
        log.warning("ignoring the run index %s: %s", directory, problem)
        return []
    runs = []
    for link in sorted(directory.iterdir()):
        if link.name.startswith(".") or not link.is_symlink():
            continue
        runs.append((link.name, Path(os.readlink(link))))
    return runs

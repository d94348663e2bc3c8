"""One run at a time per host: runs share the KVM module, hugepage pools and THP settings.

The locks live in a directory of their own, made by us with mode 0700 (default
/run/lock/orchestrator/: `run.lock` for runs, `nightly.lock` for the nightly wrapper), so a
local user cannot plant anything where root opens them: /run/lock itself is world-writable.
A lock file is opened without following a symbolic link and is used only if it is a regular
file with one name, owned by us; nothing is truncated or written before those checks pass
and the flock is held. A directory or file that fails them is refused (`UnsafeLock`, exit 3)
with a hint to remove it: we never made it.

Settings (settings.py, from ORCH_LOCK_DIR, ORCH_LOCK and ORCH_NIGHTLY_LOCK): the directory
(default /run/lock/orchestrator), the run lock's full path (default LOCK_DIR/run.lock) and the
nightly lock's (default LOCK_DIR/nightly.lock). An explicitly configured lock outside the lock
directory gets the same file checks; its directory (and each one above it) must belong to
root or to us and be writable by nobody else unless sticky, like /run/lock or /tmp.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import HarnessError, LockHeld
from orchestrator.settings import LOCK_DIR_ENV, RUN_LOCK_ENV, Settings, current

HOLDER_MAX = 200  # characters of the holder's line shown in a message
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK  # NONBLOCK: a FIFO
_REMOVE = "remove it: it was not made by us (the orchestrator makes its own lock, mode 0600)"
_SETTLE_S = 0.25  # a holder writes its line right after taking the lock; a probe lets go


class UnsafeLock(HarnessError):
    """A lock file or directory that someone else made or could change: never used."""


def lock_dir(settings: Settings | None = None) -> Path:
    return (settings or current()).lock_dir


def default_lock_path(settings: Settings | None = None) -> Path:
    return (settings or current()).run_lock


def nightly_lock_path(settings: Settings | None = None) -> Path:
    return (settings or current()).nightly_lock


@contextmanager
def run_lock(path: Path | None = None, *, what: str = "",
             settings: Settings | None = None) -> Iterator[None]:
    """Hold the host's run lock (flock: released by the kernel even if we are killed), or
    the lock at `path`; `settings` say where the locks are (default: the environment's)."""
    settings = settings or current()
    lock = Path(os.path.abspath(path or settings.run_lock))
    prepare_dir(lock.parent, ours=lock.parent == Path(os.path.abspath(settings.lock_dir)))
    fd = _open_checked(lock, os.O_RDWR | os.O_CREAT)
    try:
        _take(fd, lock)
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:  # made by an older version: 0644
            os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} since {since} {_printable(what)}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(path: Path | None = None, settings: Settings | None = None) -> int | None:
    """The PID of the process holding the lock, or None when it is free (no live run).

    Read-only: a missing lock is free and is not created. The flock is tested with a
    non-blocking shared attempt on an open file description of our own, released at once (a
    run starting in that instant waits it out). Raises `UnsafeLock` for a file we did not
    make, and `LockHeld` in the odd case that the lock is held by a process whose PID is
    neither in the file nor in /proc/locks.
    """
    lock = Path(os.path.abspath(path or default_lock_path(settings)))
    try:
        fd = _open_checked(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        deadline = time.monotonic() + _SETTLE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _pid_in(_holder_line(fd))
                if pid is not None and _alive(pid):
                    return pid
                if time.monotonic() > deadline:
                    return _flock_pid(lock, os.fstat(fd))
                time.sleep(0.02)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)


def prepare_dir(directory: Path, *, ours: bool) -> None:
    """Make the lock's directory if missing (mode 0700) and refuse one others could change.

    `ours` (the lock directory): a real directory, owned by us, writable only by us. Else
    (an explicitly configured lock elsewhere): owned by root or us, writable by nobody else
    unless sticky; a symbolic link on the way must belong to root or us.
    """
    parts = Path(os.path.abspath(directory)).parts
    for depth in range(1, len(parts) + 1):
        here = Path(*parts[:depth])
        _check_dir(here, ours=ours and depth == len(parts))


def _check_dir(here: Path, *, ours: bool) -> None:
    st = _lstat_or_mkdir(here)
    if stat.S_ISLNK(st.st_mode):
        if ours or st.st_uid not in (0, os.geteuid()):
            _refuse_dir(here, f"it is a symbolic link made by {_who(st.st_uid)}", ours=ours)
        try:
            st = os.stat(here)
        except OSError:
            _refuse_dir(here, "it is a symbolic link that leads nowhere", ours=ours)
    problem = _dir_problem(st, ours=ours)
    if problem:
        _refuse_dir(here, problem, ours=ours)


def _lstat_or_mkdir(here: Path) -> os.stat_result:
    try:
        return os.lstat(here)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(here, 0o700)
    except FileExistsError:
        pass  # someone else made it meanwhile: the checks judge it
    except OSError as exc:
        raise HarnessError(f"cannot make the lock directory {here}: {exc.strerror}",
                           hint=f"set {LOCK_DIR_ENV} (or {RUN_LOCK_ENV}) to a writable place"
                           ) from None
    return os.lstat(here)


def _dir_problem(st: os.stat_result, *, ours: bool) -> str:
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        return f"it is {_kind(st.st_mode)}, not a directory"
    if st.st_uid != euid and (ours or st.st_uid != 0):
        return f"it is owned by {_who(st.st_uid)}, not by us ({_who(euid)})"
    open_to_others = stat.S_IMODE(st.st_mode) & 0o022
    if open_to_others and (ours or not st.st_mode & stat.S_ISVTX):
        return f"others can write in it (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def _refuse_dir(here: Path, problem: str, *, ours: bool) -> None:
    hint = (f"remove it: it was not made by us (we make {here} ourselves, mode 0700)" if ours
            else "a lock's directories must belong to root or to us and be writable by nobody "
                 "else unless sticky; put the lock elsewhere")
    raise UnsafeLock(f"refusing the lock directory {here}: {problem}", hint=hint)


def _open_checked(lock: Path, flags: int) -> int:
    """Open without following a link; the fd only if it is a regular file of ours, 1 name."""
    try:
        fd = os.open(lock, flags | _OPEN, 0o600)
    except FileNotFoundError:
        raise
    except OSError as exc:
        _refuse_file(lock, _lstat_problem(lock))
        raise HarnessError(f"cannot open the lock {lock}: {exc.strerror}",
                           hint="run as root, or set ORCH_LOCK to a writable place") from None
    try:
        problem = _file_problem(os.fstat(fd))
        if problem:
            _refuse_file(lock, problem)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lstat_problem(lock: Path) -> str:
    try:
        return _file_problem(os.lstat(lock))
    except OSError:
        return ""


def _file_problem(st: os.stat_result) -> str:
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return f"it is {_kind(st.st_mode)}, not a regular file"
    if st.st_uid != euid:
        return f"the file is owned by {_who(st.st_uid)}, not by us ({_who(euid)})"
    if st.st_nlink != 1:
        return f"it has {st.st_nlink} names (hard links), not 1"
    return ""


def _refuse_file(lock: Path, problem: str) -> None:
    if problem:
        raise UnsafeLock(f"refusing the lock {lock}: {problem}", hint=_REMOVE)


def _take(fd: int, lock: Path) -> None:
    """flock it, or LockHeld naming the holder (a holder that wrote nothing yet: retried)."""
    deadline = time.monotonic() + _SETTLE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _holder_line(fd)
            if holder or time.monotonic() > deadline:
                raise LockHeld(f"another run holds the lock {lock}: {holder or 'unknown'}",
                               hint="wait for it to finish; the lock frees itself when it "
                                    "exits") from None
            time.sleep(0.02)


def _holder_line(fd: int) -> str:
    """The first line of a lock we checked is ours: printable, one line, bounded."""
    text = os.pread(fd, 512, 0).decode(errors="replace")
    return _printable(text.split("\n", 1)[0])


def _printable(text: str) -> str:
    clean = "".join(c if c.isprintable() else "?" for c in text).strip()
    return clean if len(clean) <= HOLDER_MAX else clean[:HOLDER_MAX - 3] + "..."


def _pid_in(line: str) -> int | None:
    words = line.split()
    if len(words) >= 2 and words[0] == "pid" and words[1].isdigit() and int(words[1]) > 0:
        return int(words[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flock_pid(lock: Path, st: os.stat_result) -> int:
    """The holder as the kernel lists it, for a holder that wrote no (live) PID."""
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        listed = Path("/proc/locks").read_text().splitlines()
    except OSError:
        listed = []
    for line in listed:  # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; "1: -> ..." waits
        words = line.split()
        if words[1:2] == ["FLOCK"] and words[5:6] == [where] and words[4].isdigit():
            return int(words[4])
    raise LockHeld(f"the lock {lock} is held by a process that wrote no PID",
                   hint="see `fuser -v` on the lock file")


def _who(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _kind(mode: int) -> str:
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFREG: "a regular file",
             stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
             stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
    return kinds.get(stat.S_IFMT(mode), "not a file")

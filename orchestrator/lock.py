"""One run at a time per host: runs share the KVM module, hugepage pools and THP settings."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.errors import LockHeld


def default_lock_path() -> Path:
    return Path(os.environ.get("ORCH_LOCK", "/run/lock/orchestrator.lock"))


@contextmanager
def run_lock(path: Path | None = None, *, what: str = "") -> Iterator[None]:
    """Hold the host's run lock (flock: released by the kernel even if we are killed)."""
    lock = path or default_lock_path()
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(f"another run holds the lock {lock}: {holder}",
                           hint="wait for it to finish; the lock frees itself when it exits"
                           ) from None
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} since {since} {what}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

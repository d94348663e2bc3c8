"""The locks cannot be turned against root: a real unprivileged user attacks them.

Runs as root. A throwaway system user plays the attacker in a world-writable sticky directory
(1777) that stands in for /run/lock; its steps run as that user through setpriv.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode, LockHeld
from orchestrator.run.lock import (
    HOLDER_MAX,
    UnsafeLock,
    default_lock_path,
    lock_dir,
    lock_holder,
    nightly_lock_path,
    run_lock,
)
from orchestrator.settings import (
    DEFAULT_LOCK_DIR,
    LOCK_DIR_ENV,
    NIGHTLY_LOCK_ENV,
    NIGHTLY_LOCK_NAME,
    RUN_LOCK_ENV,
    RUN_LOCK_NAME,
)

pytestmark = pytest.mark.needs_root  # root's locks, a real attacker (useradd), root-owned files

SECRET = b"root's precious data\n"


@dataclass
class Attacker:
    name: str
    uid: int
    gid: int
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, script: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--", "sh", "-c", script]

    def run(self, script: str) -> None:
        subprocess.run(self.argv(script), check=True, timeout=30)

    def start(self, script: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.argv(script), start_new_session=True)
        self.started.append(proc)
        return proc


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel missing: cannot make a real unprivileged attacker")
    if os.geteuid() != 0:
        pytest.skip("needs root: the attacks are against root's locks")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing (util-linux): cannot run as the attacker")
    name = f"orch-attacker-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", name], check=True, timeout=60)
    try:
        ids = [int(subprocess.run(["id", flag, name], capture_output=True, text=True,
                                  check=True).stdout) for flag in ("-u", "-g")]
        user = Attacker(name, ids[0], ids[1])
        yield user
        for proc in user.started:
            if proc.poll() is None:
                stop(proc)
    finally:
        subprocess.run(["userdel", name], check=True, timeout=60)


@pytest.fixture
def sticky() -> Iterator[Path]:
    """/run/lock's stand-in: world-writable and sticky, reachable by the attacker."""
    where = Path(tempfile.mkdtemp(prefix="orch-sticky-", dir="/tmp"))
    where.chmod(0o1777)
    yield where
    shutil.rmtree(where)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A root-owned 0600 file with content: what a planted symlink points the lock at."""
    target = tmp_path / "secret"
    target.write_bytes(SECRET)
    target.chmod(0o600)
    return target


def assert_untouched(target: Path) -> None:
    assert target.read_bytes() == SECRET
    st = target.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the flock and its sleep
    proc.wait(timeout=10)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_defaults_live_in_a_directory_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (LOCK_DIR_ENV, RUN_LOCK_ENV, NIGHTLY_LOCK_ENV):
        monkeypatch.delenv(name, raising=False)
    assert DEFAULT_LOCK_DIR == "/run/lock/orchestrator" and lock_dir() == Path(DEFAULT_LOCK_DIR)
    assert default_lock_path() == Path(DEFAULT_LOCK_DIR, RUN_LOCK_NAME)
    assert nightly_lock_path() == Path(DEFAULT_LOCK_DIR, NIGHTLY_LOCK_NAME)
    monkeypatch.setenv(LOCK_DIR_ENV, "/x")
    assert (default_lock_path(), nightly_lock_path()) == (Path("/x/run.lock"),
                                                          Path("/x/nightly.lock"))
    monkeypatch.setenv(RUN_LOCK_ENV, "/y/r")
    monkeypatch.setenv(NIGHTLY_LOCK_ENV, "/y/n")
    assert (default_lock_path(), nightly_lock_path()) == (Path("/y/r"), Path("/y/n"))


# ---- (1) a planted symlink -----------------------------------------------------------------


def test_a_planted_symlink_is_refused_and_its_target_untouched(
        attacker: Attacker, sticky: Path, secret: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lock = sticky / "orchestrator.lock"
    attacker.run(f"ln -s {secret} {lock}")
    monkeypatch.setenv(RUN_LOCK_ENV, str(lock))
    with pytest.raises(UnsafeLock, match="is a symbolic link") as caught, run_lock():
        pytest.fail("the lock was taken through the attacker's symlink")
    assert caught.value.exit_code == ExitCode.HARNESS_BROKE
    assert "\n" not in caught.value.one_line() and "not made by us" in caught.value.hint
    with pytest.raises(UnsafeLock, match="is a symbolic link"):
        lock_holder(lock)
    assert_untouched(secret)
    assert lock.is_symlink()  # refused, not "fixed": we touch nothing we did not make


def test_a_symlink_to_a_missing_file_creates_nothing(
        attacker: Attacker, sticky: Path, tmp_path: Path) -> None:
    lock, target = sticky / "orchestrator.lock", tmp_path / "would-be-created"
    attacker.run(f"ln -s {target} {lock}")
    with pytest.raises(UnsafeLock, match="symbolic link"), run_lock(lock):
        pass
    assert not target.exists()


# ---- (2) a file the attacker made, held, with a fake holder line ---------------------------


def test_an_attackers_held_file_is_not_trusted(attacker: Attacker, sticky: Path) -> None:
    lock, ready = sticky / "orchestrator.lock", sticky / "ready"
    held = attacker.start(f"printf 'pid 1 since 2020-01-01T00:00:00+00:00 evil\\n' > {lock}; "
                          f"exec flock {lock} sh -c 'touch {ready}; sleep 60'")
    try:
        wait_for(ready)
        with pytest.raises(UnsafeLock) as caught, run_lock(lock, what="root's run"):
            pytest.fail("the lock was taken on the attacker's file")
        message = caught.value.one_line()
        assert f"uid {attacker.uid} ({attacker.name})" in message and "not by us" in message
        assert "pid 1" not in message and "evil" not in message and "held" not in message
        with pytest.raises(UnsafeLock, match="not by us"):
            lock_holder(lock)
        assert "evil" in lock.read_text()  # not truncated, not written
        assert lock.stat().st_uid == attacker.uid
    finally:
        stop(held)


def test_an_attackers_unheld_file_is_refused_too(attacker: Attacker, sticky: Path) -> None:
    lock = sticky / "orchestrator.lock"
    attacker.run(f"echo 'pid 1 since whenever' > {lock}; chmod 666 {lock}")
    with pytest.raises(UnsafeLock, match="not by us"), run_lock(lock):
        pass
    assert lock.read_text() == "pid 1 since whenever\n"


def test_a_fifo_is_refused_without_hanging(attacker: Attacker, sticky: Path) -> None:
    lock = sticky / "orchestrator.lock"
    attacker.run(f"mkfifo -m 666 {lock}")
    with pytest.raises(UnsafeLock, match="a FIFO, not a regular file"), run_lock(lock):
        pass


def test_a_second_name_for_our_file_is_refused(tmp_path: Path, secret: Path) -> None:
    """A hard link would let the lock truncate another file of root's; one name only."""
    lock = tmp_path / "run.lock"
    os.link(secret, lock)
    with pytest.raises(UnsafeLock, match="2 names"), run_lock(lock):
        pass
    assert_untouched(secret)


# ---- (3) the default directory -------------------------------------------------------------


@pytest.fixture
def redirected(sticky: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ORCH_LOCK(S) unset, the lock directory moved into the sticky stand-in for /run/lock."""
    monkeypatch.delenv(RUN_LOCK_ENV, raising=False)
    monkeypatch.delenv(NIGHTLY_LOCK_ENV, raising=False)
    monkeypatch.setenv(LOCK_DIR_ENV, str(sticky / "orchestrator"))
    return sticky / "orchestrator"


def test_an_attackers_directory_is_refused(attacker: Attacker, redirected: Path) -> None:
    attacker.run(f"mkdir -m 700 {redirected}")
    with pytest.raises(UnsafeLock, match="lock directory .* is owned by uid") as caught, \
            run_lock():
        pass
    assert caught.value.hint.startswith("remove it: it was not made by us")
    assert list(redirected.iterdir()) == []


def test_an_attackers_symlink_for_the_directory_is_refused(
        attacker: Attacker, redirected: Path, tmp_path: Path) -> None:
    ours = tmp_path / "root-dir"
    ours.mkdir(mode=0o700)
    attacker.run(f"ln -s {ours} {redirected}")
    with pytest.raises(UnsafeLock, match="lock directory .* is a symbolic link made by uid"), \
            run_lock():
        pass
    assert list(ours.iterdir()) == []


def test_a_directory_others_can_write_is_refused(redirected: Path) -> None:
    redirected.mkdir()
    redirected.chmod(0o1777)  # ours, but anyone could plant a lock in it
    with pytest.raises(UnsafeLock, match="others can write in it"), run_lock():
        pass


def test_the_directory_is_made_by_us_mode_0700(redirected: Path) -> None:
    with run_lock(what="suite s"):
        st, lock = redirected.lstat(), redirected / RUN_LOCK_NAME
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert re.fullmatch(rf"pid {os.getpid()} since \S+ suite s\n", lock.read_text())
        assert lock_holder() == os.getpid()
    assert lock.read_text() == "" and lock_holder() is None
    with run_lock():  # the second time the directory is there, ours: accepted
        pass


# ---- (4) the nightly lock ------------------------------------------------------------------


def test_the_nightly_lock_is_protected_the_same_way(
        attacker: Attacker, redirected: Path, tmp_path: Path) -> None:
    ours = tmp_path / "root-dir"
    ours.mkdir(mode=0o700)
    attacker.run(f"ln -s {ours} {redirected}")
    assert nightly_lock_path() == redirected / NIGHTLY_LOCK_NAME
    with pytest.raises(UnsafeLock, match="symbolic link"), run_lock(nightly_lock_path()):
        pass
    assert list(ours.iterdir()) == []
    os.unlink(redirected)
    with run_lock(nightly_lock_path(), what="nightly s"):
        assert stat.S_IMODE(redirected.lstat().st_mode) == 0o700
        assert lock_holder(nightly_lock_path()) == os.getpid()


def test_an_explicit_nightly_lock_gets_the_file_checks(
        attacker: Attacker, sticky: Path, secret: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lock = sticky / "orchestrator-nightly.lock"
    monkeypatch.setenv(NIGHTLY_LOCK_ENV, str(lock))
    attacker.run(f"ln -s {secret} {lock}")
    with pytest.raises(UnsafeLock, match="symbolic link"), run_lock(nightly_lock_path()):
        pass
    assert_untouched(secret)


def test_an_explicit_lock_in_an_unsticky_shared_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could swap the lock file under us
    with pytest.raises(UnsafeLock, match="others can write in it"), run_lock(shared / "l"):
        pass


# ---- what stays: exclusion, exit 5, the kernel frees a dead holder's lock ------------------


HOLD = ("import sys, time\nfrom pathlib import Path\nfrom orchestrator.run.lock import run_lock\n"
        "with run_lock(Path(sys.argv[1]), what='the other run'):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")


def test_two_holders_exclude_each_other_and_a_killed_one_frees_it(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with pytest.raises(LockHeld) as caught, run_lock(lock):
            pytest.fail("two holders at once")
        assert caught.value.exit_code == ExitCode.LOCKED and int(caught.value.exit_code) == 5
        assert f"another run holds the lock {lock}: pid {other.pid} since " in \
            caught.value.message and caught.value.message.endswith(" the other run")
        assert lock_holder(lock) == other.pid
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait(timeout=10)
    assert lock_holder(lock) is None  # the kernel let go with the process
    with run_lock(lock, what="after"):
        assert lock_holder(lock) == os.getpid()


def test_a_garbage_holder_line_is_one_bounded_printable_line(tmp_path: Path) -> None:
    lock = tmp_path / "run.lock"
    lock.write_bytes(b"\x1b[31mpid 7\tsince \xff\xfe" + b"A" * 5000 + b"\nsecond line\n")
    lock.chmod(0o600)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "60"])  # held, no line of ours
    try:
        deadline = time.monotonic() + 20
        while lock_holder(lock) is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(LockHeld) as caught, run_lock(lock):
            pass
        message = caught.value.message
        held_by = message.split(": ", 1)[1]
        assert held_by.isprintable() and len(held_by) <= HOLDER_MAX and "second" not in message
        assert held_by.startswith("?[31mpid 7?since \ufffd\ufffdAAA") and held_by.endswith("...")
        assert lock_holder(lock) == holder.pid  # no live pid in the file: the kernel's list
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_missing_lock_is_free_and_not_created(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "nope" / "run.lock") is None
    assert not (tmp_path / "nope").exists()

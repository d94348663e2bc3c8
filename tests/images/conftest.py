"""A real unprivileged user, for checking what others can read (root only: useradd/userdel)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        """argv as this user, with its own group only (no root's supplementary groups)."""
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                               "--clear-groups", "--", *argv], capture_output=True, timeout=60)

    def can_read(self, path: Path) -> bool:
        done = self.run("cat", str(path))
        return done.returncode == 0 and len(done.stdout) == path.stat().st_size


@pytest.fixture(scope="module")
def unprivileged_user() -> Iterator[User]:
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a throwaway user with useradd")
    missing = [t for t in ("useradd", "userdel", "setpriv") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (passwd, util-linux)")
    name = f"orch-nobody-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", name], check=True, timeout=60)
    try:
        uid, gid = (int(subprocess.run(["id", flag, name], capture_output=True, text=True,
                                       check=True, timeout=30).stdout) for flag in ("-u", "-g"))
        yield User(name, uid, gid)
    finally:
        subprocess.run(["userdel", name], check=True, timeout=60)

"""Where a run came from: the project revision and the versions of the tools that measured it."""

from __future__ import annotations

import re
import shutil
from typing import Any

from orchestrator import proc
from orchestrator.paths import PROJECT_ROOT


def git_revision() -> str:
    """The project's commit, with '-dirty' when the work tree differs (so a replay can tell)."""
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        return "unknown"
    try:
        rev = proc.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], timeout=10)
        dirty = proc.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain",
                          "--untracked-files=no"], timeout=10)
    except proc.CommandError:
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


_VERSION_COMMANDS = {
    "qemu": ["qemu-system-x86_64", "--version"],
    "libvirt": ["libvirtd", "--version"],
    "perf": ["perf", "--version"],
    "stress_ng": ["stress-ng", "--version"],
    "trace_cmd": ["trace-cmd", "-h"],
}
_VERSION_RE = re.compile(r"\d+\.\d+(?:\.\d+)?")


def tool_versions() -> dict[str, Any]:
    versions: dict[str, Any] = {}
    for name, argv in _VERSION_COMMANDS.items():
        if shutil.which(argv[0]) is None:
            versions[name] = None
            continue
        try:
            done = proc.run(argv, timeout=10, check=False)
        except proc.CommandError:
            versions[name] = None
            continue
        match = _VERSION_RE.search(done.stdout + done.stderr)
        versions[name] = match.group(0) if match else None
    return versions

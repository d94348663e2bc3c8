"""Measurement conditions on the lab host: THP mode, 2 MiB hugepage pool, CPU governor.

Always recorded; applied only when a suite says `host_prep: {apply: true}`, and then every
value written is put back on every exit path (a lab host is shared: leaving THP off or the
hugepage pool grown would change everyone else's results). Each value is written in the run's
ledger (path, old, new) before it is changed, so that a run killed before its `finally` ran
is put right by recovery (`write_back`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from orchestrator.errors import HarnessError
from orchestrator.store import ledger
from orchestrator.suite.schema import HostPrep

log = logging.getLogger(__name__)

THP = "sys/kernel/mm/transparent_hugepage/enabled"
HUGEPAGES_2M = "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
GOVERNOR_GLOB = "sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
BOOST = ("sys/devices/system/cpu/cpufreq/boost", "sys/devices/system/cpu/intel_pstate/no_turbo")


def read_setting(path: Path) -> str | None:
    """A sysfs, procfs or config file's text, stripped; None where this host has none."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def selected(text: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise' (sysfs marks the active choice with brackets)."""
    if text is None:
        return None
    match = re.search(r"\[([^\]]+)\]", text)
    return match.group(1) if match else text


def conditions(root: Path = Path("/")) -> dict[str, Any]:
    """What the run was measured under, for the manifest."""
    governors = {read_setting(p) for p in sorted(root.glob(GOVERNOR_GLOB))}
    return {
        "thp": selected(read_setting(root / THP)),
        "hugepages_2m": read_setting(root / HUGEPAGES_2M),
        "governor": ",".join(sorted(g for g in governors if g)) or None,
        "boost": {name: read_setting(root / name) for name in BOOST if (root / name).exists()},
    }


@contextmanager
def _written(path: Path, value: str, restore: str) -> Iterator[None]:
    """Write value to a sysfs file; write restore back on exit, whatever happened."""
    entry = ledger.record("sysfs", path=str(path.absolute()), old=restore, new=value)
    try:
        path.write_text(value)
    except OSError as exc:
        ledger.undone(entry)  # nothing was changed
        raise HarnessError(f"cannot set {path} to {value!r}: {exc.strerror}",
                           hint="host_prep.apply needs root; or set apply: false") from exc
    log.info("host prep: %s = %s (was %s)", path, value, restore)
    try:
        yield
    finally:
        try:
            write_back(path, restore)
            ledger.undone(entry)
        except HarnessError as exc:  # reported loudly: the host is left changed
            log.error("%s", exc.one_line())


def write_back(path: Path, value: str) -> None:
    """Put a recorded host setting back (idempotent: writing the same value again is a no-op
    for these files)."""
    try:
        path.write_text(value)
    except OSError as exc:
        raise HarnessError(f"could not restore {path} to {value!r}: {exc.strerror}",
                           hint="write it back by hand") from None


def _need(path: Path, what: str) -> str:
    current = read_setting(path)
    if current is None:
        raise HarnessError(f"this host has no {what} control ({path})",
                           hint=f"remove host_prep.{what} from the suite")
    return current


@contextmanager
def prepared_host(prep: HostPrep, root: Path = Path("/")) -> Iterator[dict[str, Any]]:
    """Apply the suite's host preparation (if asked) and undo it on exit. Yields conditions."""
    with ExitStack() as stack:
        if prep.apply:
            if prep.thp is not None:
                old = selected(_need(root / THP, "thp")) or "madvise"
                stack.enter_context(_written(root / THP, prep.thp.value, old))
            if prep.hugepages_2m is not None:
                old = _need(root / HUGEPAGES_2M, "hugepages_2m")
                stack.enter_context(_written(root / HUGEPAGES_2M, str(prep.hugepages_2m), old))
            if prep.governor is not None:
                for path in sorted(root.glob(GOVERNOR_GLOB)) or [root / GOVERNOR_GLOB]:
                    old = _need(path, "governor")
                    stack.enter_context(_written(path, prep.governor, old))
        yield conditions(root)

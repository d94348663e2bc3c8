"""The results root as the site sees it: every run directory and its fingerprint.

A fleet root holds `<root>/<host>/<run_id>` (ansible/collect.yml); a single host's root holds
its runs directly. The fingerprint is the size and mtime of the files a run's facts come from,
so a rebuild rereads only runs that changed (a run still going, a report written since).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# what the facts of a run are read from (store/rundir.py names them)
SOURCES = ("manifest.json", "trials.jsonl", "trials.parquet", "report/report.html")


@dataclass(frozen=True)
class Found:
    path: Path
    fingerprint: str


def fingerprint(run: str) -> str:
    parts = []
    for name in SOURCES:
        try:
            st = os.stat(f"{run}/{name}")
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _is_run(path: str) -> bool:
    return os.path.isfile(f"{path}/manifest.json")


def _subdirs(path: str, skip: str) -> list[str]:
    """Real subdirectories in name order: never the `latest` symlink, never the site itself
    (compared by real path: the site may be written inside the root)."""
    real = os.path.realpath(path)
    with os.scandir(path) as entries:
        return sorted(e.path for e in entries if e.is_dir(follow_symlinks=False)
                      and not e.name.startswith(".") and os.path.join(real, e.name) != skip)


def find_runs(root: Path, skip: Path | None = None) -> list[Found]:
    """Every run directory under root, one level of host directories included."""
    avoid = os.path.realpath(skip) if skip is not None else ""
    runs = []
    for child in _subdirs(str(root), avoid):
        if _is_run(child):
            runs.append(child)
            continue
        runs += [run for run in _subdirs(child, avoid) if _is_run(run)]
    return [Found(Path(run), fingerprint(run)) for run in runs]


def inside_a_run(path: Path) -> Path | None:
    """The run directory path lies in (or is), if any: a site must never be written there."""
    resolved = path.resolve()
    for candidate in (resolved, *resolved.parents):
        if _is_run(str(candidate)):
            return candidate
    return None

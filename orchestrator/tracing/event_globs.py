"""Event names with globs (`kvmmmu:*`, `vmstat:thp_*`) matched against what a kernel has."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence


def expand_globs(requested: Sequence[str], known: Iterable[str]) -> list[str]:
    """Each name or glob to the known names it matches, in order, without repeats; a name that
    matches nothing stays as it is (it is then reported unavailable, never 0)."""
    known = set(known)
    names: list[str] = []
    for item in requested:
        matches = sorted(fnmatch.filter(known, item)) if any(c in item for c in "*?[") \
            else [item]
        for name in matches or [item]:
            if name not in names:
                names.append(name)
    return names

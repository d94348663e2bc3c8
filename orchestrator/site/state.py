"""The build state beside the site (`.site-state.json`): per run its fingerprint and facts,
per suite the change points found for its runs' fingerprints, per page the digest of its
inputs. A page whose inputs did not change is not rendered nor rewritten."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE = ".site-state.json"
VERSION = 1  # a state of another version is ignored: the next build starts from scratch


@dataclass
class State:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> fingerprint, facts
    detections: dict[str, dict[str, Any]] = field(default_factory=dict)  # suite -> points
    pages: dict[str, str] = field(default_factory=dict)  # site-relative path -> input digest


def digest(inputs: Any) -> str:
    text = json.dumps(inputs, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load(out: Path) -> State:
    try:
        data = json.loads((out / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return State()
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return State()
    return State(data.get("runs", {}), data.get("detections", {}), data.get("pages", {}))


def save(out: Path, state: State) -> None:
    write_atomic(out / FILE, json.dumps({"version": VERSION, "runs": state.runs,
                                         "detections": state.detections,
                                         "pages": state.pages}))


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


@dataclass
class Writer:
    """Writes a page only when its inputs' digest differs from the last build's (or the file
    is gone); remembers every page of this build so stale ones can be removed."""

    out: Path
    state: State
    root: Path = Path()  # the results root: runs are linked relative to it
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def page(self, rel: str, inputs: Any, render: Callable[[], str]) -> None:
        self.seen.add(rel)
        key = digest(inputs)
        if self.state.pages.get(rel) == key and (self.out / rel).exists():
            self.kept.append(rel)
            return
        write_atomic(self.out / rel, render())
        self.state.pages[rel] = key
        self.written.append(rel)

    def prune(self) -> list[str]:
        """Remove pages an earlier build wrote that this one did not (a host gone)."""
        stale = sorted(set(self.state.pages) - self.seen)
        for rel in stale:
            (self.out / rel).unlink(missing_ok=True)
            del self.state.pages[rel]
        return stale

"""The run directory itself: where each of its files lives, and its manifest.

`RunDir` names every path of a run directory, so no other module spells a file name, and owns
the manifest: `create_manifest` writes it once when the run starts, and `update_manifest` is the
only code that changes it afterwards (read, change, write atomically: a crash leaves the old
manifest or the new one, never half of one).

The journal (journal.py), the tables (tables.py) and the read-only loading (reader.py) find
their files through RunDir.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput
from orchestrator.settings import current

MANIFEST = "manifest.json"
JOURNAL = "trials.jsonl"
TORN = "trials.jsonl.torn"  # fragments of torn last lines, moved aside by the journal's writer
TRIALS = "trials.parquet"
EVENTS = "events.parquet"
LOGS = "logs"

DAMAGED = "the run is damaged or was written by another tool; its trials.jsonl still holds " \
          "the trials"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class RunDir:
    """One run directory: the path of each of its files, and its manifest."""

    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def torn(self) -> Path:
        return self.path / TORN

    @property
    def trials(self) -> Path:
        return self.path / TRIALS

    @property
    def events(self) -> Path:
        return self.path / EVENTS

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def traceback(self) -> Path:
        """Where a run keeps the traceback of an internal error."""
        return self.logs / "traceback.txt"

    def is_run(self) -> bool:
        return self.manifest.exists()

    def read_manifest(self) -> Manifest:
        """The manifest as a dict; a missing or damaged one is a one-line BadInput."""
        path = self.manifest
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInput(f"{self.path}: not a run directory (no {MANIFEST})",
                           hint="`orchestrate results` lists the runs") from None
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: corrupt ({exc.msg} at line {exc.lineno})", hint=DAMAGED,
                           ) from None
        except (OSError, ValueError, RecursionError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 JSON"
            raise BadInput(f"{path}: unreadable ({why})", hint=DAMAGED) from None
        if not isinstance(data, dict):
            raise BadInput(f"{path}: not a JSON object", hint=DAMAGED)
        return data

    def create_manifest(self, manifest: Manifest) -> None:
        """Write the manifest of a new run (once: afterwards, update_manifest changes it)."""
        if self.manifest.exists():
            raise FileExistsError(f"{self.manifest}: the run already has a manifest")
        _write_json_atomic(self.manifest, manifest)

    def update_manifest(self, change: Callable[[Manifest], object] | None = None,
                        **changes: Any) -> Manifest:
        """Read the manifest, set `changes`, then let `change` edit it in place, and write it
        back atomically if anything changed. Returns the manifest as written."""
        manifest = self.read_manifest()
        before = copy.deepcopy(manifest)
        manifest.update(changes)
        if change is not None:
            change(manifest)
        if manifest != before:
            _write_json_atomic(self.manifest, manifest)
        return manifest


def new_run_dir(root: Path, suite_name: str, now: datetime | None = None) -> Path:
    """A fresh, empty run directory (with its logs directory) under root."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{suite_name}-{uuid.uuid4().hex[:6]}"
    RunDir(path).logs.mkdir(parents=True)
    return path


def read_manifest(run_dir: Path) -> Manifest:
    """The manifest of the run at run_dir, unchecked (readers use reader.read_run_manifest,
    which also checks the fields they rely on)."""
    return RunDir(run_dir).read_manifest()


def mark_unfinished(run_dir: Path, status: str, **facts: Any) -> None:
    """A run that ended before it could write its own status (killed, or its host died):
    say so in its manifest; a run that did write one keeps it."""

    def unless_ended(manifest: Manifest) -> None:
        if manifest.get("status") == "running":
            manifest.update(status=status, **facts)

    RunDir(run_dir).update_manifest(unless_ended)


def update_latest(root: Path, run_dir: Path) -> None:
    """Point root/latest at run_dir atomically (a rename never leaves the link missing)."""
    tmp = root / f".latest-{uuid.uuid4().hex[:6]}"
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, root / "latest")


def _write_json_atomic(path: Path, data: Manifest) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def default_root() -> Path:
    """Where runs go and are looked up: $ORCH_RESULTS, else ./results (settings.py reads it)."""
    return current().results


def hostname() -> str:
    return socket.gethostname()

"""The lab-host backend: native on the host itself, guests for the virtualized paging modes."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import Unavailable
from orchestrator.suite import RequestedMode
from orchestrator.suite_file import LoadedSuite
from orchestrator.targets import ModeState, Target, native_mode, native_target


@dataclass
class LabHostBackend:
    loaded: LoadedSuite
    run_dir: Path
    bin_dir: Path | None = None

    def enter_mode(self, mode: RequestedMode) -> AbstractContextManager[ModeState]:
        if mode is RequestedMode.NATIVE:
            return native_mode()
        raise Unavailable(f"paging mode {mode.value} needs guests, which are not wired yet",
                          hint="use `paging: [native]` for now")

    def open_target(self, state: ModeState, guest: str) -> AbstractContextManager[Target]:
        return native_target(self.bin_dir)


def lab_host_backend(loaded: LoadedSuite, run_dir: Path) -> LabHostBackend:
    return LabHostBackend(loaded, run_dir)

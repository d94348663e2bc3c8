"""Where a workload runs: the lab host itself (native) or a guest. One small protocol for both.

The executor only sees `Target.run(argv, timeout=...)`; whether that is a local process or an
SSH channel into a guest is the target's business. Both follow proc.py's contract: a finished
command is a `Completed` (any exit status), a timeout or a lost connection a `CommandError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator import proc
from orchestrator.errors import BadInput
from orchestrator.paths import workloads_bin_dir
from orchestrator.suite.schema import RequestedMode


class Target(Protocol):
    name: str  # the guest's name, or "host" for native
    paging_mode: str  # as verified when the target was opened
    accel: str  # native | kvm | tcg | nested-tcg
    bin_dir: str

    def run(self, argv: Sequence[str], *, timeout: float) -> proc.Completed: ...


@dataclass(frozen=True)
class ModeState:
    """A paging mode as entered and verified (the value trial rows carry)."""

    requested: RequestedMode
    verified: str
    accel: str
    details: dict[str, Any]


class Backend(Protocol):
    """Enters paging modes and opens targets; the executor composes them in an ExitStack."""

    def enter_mode(self, mode: RequestedMode) -> AbstractContextManager[ModeState]: ...

    def open_target(self, state: ModeState, guest: str) -> AbstractContextManager[Target]: ...


@dataclass
class NativeTarget:
    """The lab host itself: the bare-metal baseline every virtualization paper needs."""

    bin_dir: str
    name: str = "host"
    paging_mode: str = RequestedMode.NATIVE.value
    accel: str = "native"

    def run(self, argv: Sequence[str], *, timeout: float) -> proc.Completed:
        return proc.run(argv, timeout=timeout, check=False)


@contextmanager
def native_mode(accel: str = "native") -> Iterator[ModeState]:
    yield ModeState(RequestedMode.NATIVE, RequestedMode.NATIVE.value, accel, {})


@contextmanager
def native_target(bin_dir: Path | None = None) -> Iterator[NativeTarget]:
    path = bin_dir or workloads_bin_dir()
    if not path.is_dir():
        raise BadInput(f"the guest workloads are not built ({path} is missing)",
                       hint="run `make -C guest-workloads`")
    yield NativeTarget(str(path))

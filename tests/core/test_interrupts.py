"""An interrupt is never lost: SIGTERM or Ctrl-C that lands while the main thread forks a
child (where the interpreter's at-fork hooks would swallow the exception) is raised once the
fork is done, and the child started in that moment is killed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import proc


@pytest.fixture
def interrupts() -> Iterator[None]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    proc.interrupt_on_sigterm()
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_during_the_fork_is_raised_after_it(
        interrupts: None, monkeypatch: pytest.MonkeyPatch, sig: int) -> None:
    started: list[subprocess.Popen[Any]] = []
    real_popen = subprocess.Popen

    def popen_hit_by_a_signal(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        child = real_popen(*args, **kwargs)
        os.kill(os.getpid(), sig)  # handled at the next bytecode: still inside the fork call
        started.append(child)
        return child

    monkeypatch.setattr(subprocess, "Popen", popen_hit_by_a_signal)
    with pytest.raises(KeyboardInterrupt, match=f"signal {int(sig)}"):
        proc.spawn(["sleep", "60"])
    [child] = started
    assert child.poll() == -signal.SIGKILL  # killed and reaped, not left running


def test_an_interrupt_outside_a_fork_is_raised_at_once(interrupts: None) -> None:
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    child = proc.spawn(["true"])  # and nothing is held over for the next fork
    assert child.wait() == 0

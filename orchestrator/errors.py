"""The error types every layer raises, and the exit codes the CLI maps them to.

Expected failures carry a one-line message and a hint; the CLI prints them without a
traceback. Anything else is a bug and is reported with a traceback file.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    TRIALS_FAILED = 1  # the harness worked; some workload trials failed or errored
    BAD_INPUT = 2  # the user's suite, arguments or files are wrong
    HARNESS_BROKE = 3  # the orchestrator or the host could not do its job
    REGRESSION = 4  # compare found a significant slowdown
    LOCKED = 5  # another run holds the lock
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


class OrchestratorError(Exception):
    """An expected failure: printed as one line plus a hint, never a traceback."""

    exit_code: ExitCode = ExitCode.HARNESS_BROKE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class BadInput(OrchestratorError):
    """The user gave something invalid: a suite file, an argument, a path."""

    exit_code = ExitCode.BAD_INPUT


class HarnessError(OrchestratorError):
    """The host, a guest or a tool failed in a way that stops the harness."""

    exit_code = ExitCode.HARNESS_BROKE


class Unavailable(OrchestratorError):
    """Something the suite asks for cannot be done on this host (with the reason)."""

    exit_code = ExitCode.HARNESS_BROKE


class LockHeld(OrchestratorError):
    exit_code = ExitCode.LOCKED

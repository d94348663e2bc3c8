"""Progress for people (a rich bar with ETA on a terminal) and for cron (plain log lines)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar

from orchestrator.model import TrialRecord
from orchestrator.run.execute import Progress, point_label


class TerminalProgress(Progress):
    def __init__(self) -> None:
        self._console = Console(stderr=True)
        self._bar = RichBar(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self._console, transient=False,
        )
        self._task = self._bar.add_task("trials", total=0)
        self._problems = 0

    def start(self, total: int) -> None:
        self._bar.update(self._task, total=total)
        self._bar.start()

    def trial_done(self, record: TrialRecord) -> None:
        if record.outcome.value != "ok":
            self._problems += 1
            self._console.print(
                f"[yellow]{point_label(record)} trial {record.trial}: "
                f"{record.outcome.value}[/] {record.reason}", markup=True, highlight=False)
        label = f"{record.paging_mode}/{record.guest} {record.workload}"
        self._bar.update(self._task, advance=1, description=label)

    def note(self, text: str) -> None:
        self._console.print(f"[bold yellow]warning:[/] {text}", highlight=False)

    def close(self) -> None:
        self._bar.stop()


def make_progress() -> Progress:
    return TerminalProgress() if sys.stderr.isatty() else Progress()

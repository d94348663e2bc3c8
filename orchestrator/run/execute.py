"""Runs a Plan: enters each paging mode once, opens each guest once per mode, runs the trials.

Every resource is entered on one ExitStack per level, so an exception, Ctrl-C or SIGTERM
(turned into an exception by the CLI) unwinds guests first, then the paging mode. Each trial's
record is appended to the journal the moment it ends. A guest's trials run in the plan's order
(contiguous or interleaved); a point with a precision target stops once it is met
(precision.py), its remaining trials recorded as skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.model import EventCount, Outcome, TrialRecord
from orchestrator.proc import CommandError
from orchestrator.run.precision import PrecisionTargets
from orchestrator.run.targets import Backend, ModeState, Target
from orchestrator.store.journal import Journal
from orchestrator.suite.kinds import KINDS
from orchestrator.suite.plan import Cell, GuestGroup, Plan, Point, cells_of
from orchestrator.suite.schema import RequestedMode, Suite
from orchestrator.tracing.perf import TraceWindow
from orchestrator.workloads import adapters, dirty

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 2  # fresh guests per (mode, guest) before its remaining trials are given up
PROBE_TIMEOUT_S = 30.0


class Progress:
    """What the executor tells the user; the CLI picks a terminal or a plain-log flavour."""

    def __init__(self) -> None:
        self._skipped_points: set[str] = set()

    def start(self, total: int) -> None:
        log.info("%d trials to run", total)

    def trial_done(self, record: TrialRecord) -> None:
        reason = f" ({record.reason})" if record.reason else ""
        level = logging.INFO
        if record.outcome is Outcome.SKIPPED:
            # every skipped point is named once with its reason; its other trials add nothing
            first = record.cell_id not in self._skipped_points
            self._skipped_points.add(record.cell_id)
            level = logging.INFO if first else logging.DEBUG
        log.log(level, "%s trial %d: %s%s", point_label(record), record.trial,
                record.outcome.value, reason)

    def note(self, text: str) -> None:
        log.warning("%s", text)

    def close(self) -> None:
        pass


def point_label(record: TrialRecord) -> str:
    """`tdp/small fork pages=1280 ptes_per_table=512`: which point a log line is about, so a
    plain log (cron, CI) can be read without the run's tables."""
    params = " ".join(f"{name}={value}" for name, value in record.params.items())
    return f"{record.paging_mode}/{record.guest} {record.workload} {params}".rstrip()


# (target, point, where a full capture of this trial may go) -> the trial's event window
Tracer = Callable[[Target, Point, Path | None], AbstractContextManager[TraceWindow]]


@contextmanager
def no_tracing(target: Target, point: Point, capture: Path | None = None
               ) -> Iterator[TraceWindow]:
    yield TraceWindow()


@dataclass
class Selection:
    """Which trials to run: all (fresh run), all but the done ones (resume), or some (rerun)."""

    skip: set[tuple[str, int]] = field(default_factory=set)
    only: set[tuple[str, int]] | None = None
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)
    # the journal's latest attempts (resume, rerun): precision targets go on from their values
    recorded: Mapping[tuple[str, int], Mapping[str, Any]] = field(default_factory=dict)

    def wants(self, cell: Cell) -> bool:
        if cell.key in self.skip:
            return False
        return self.only is None or cell.key in self.only

    def attempt(self, cell: Cell) -> int:
        return self.attempts.get(cell.key, 0) + 1


@dataclass
class Executor:
    suite: Suite
    plan: Plan
    backend: Backend
    journal: Journal
    progress: Progress
    selection: Selection = field(default_factory=Selection)
    tracer: Tracer = no_tracing
    targets: PrecisionTargets = field(init=False)

    def __post_init__(self) -> None:
        self.targets = PrecisionTargets.resumed(self.plan, self.selection.recorded)

    def run(self) -> None:
        self.progress.start(sum(1 for c in self.plan.cells() if self.selection.wants(c)))
        for mode in self.plan.modes:
            groups = [g for g in self.plan.groups if g.mode is mode and self._wanted(g)]
            if groups:
                self._run_mode(mode, groups)

    def _wanted(self, group: GuestGroup) -> bool:
        return any(self.selection.wants(c) for p in group.points for c in cells_of(p))

    def _run_mode(self, mode: RequestedMode, groups: list[GuestGroup]) -> None:
        with ExitStack() as stack:
            try:
                state = stack.enter_context(self.backend.enter_mode(mode))
            except OrchestratorError as exc:
                self.progress.note(f"paging mode {mode.value}: {exc.one_line()}")
                for group in groups:
                    self._record_all(group, None, Outcome.SKIPPED, exc.one_line())
                return
            for group in groups:
                self._run_guest(state, group)

    def _run_guest(self, state: ModeState, group: GuestGroup) -> None:
        """A guest's trials, in order. A guest that stops answering after a failed trial (an
        L2 under nested emulation has been seen to) is replaced by a freshly booted one for
        the trials still to run, at most MAX_REPLACEMENTS times; the trial it was lost in is
        one of them if the suite allows lost_guest_retries."""
        pending = [c for c in self.plan.group_cells(group) if self.selection.wants(c)]
        pending = self._without_finished(pending, state)  # a resumed run's met targets
        retried: dict[tuple[str, int], int] = {}
        replacements = 0
        while pending:
            with ExitStack() as stack:
                try:
                    target = stack.enter_context(self.backend.open_target(state, group.guest))
                except OrchestratorError as exc:
                    self.progress.note(f"guest {group.guest} ({state.verified}): "
                                       f"{exc.one_line()}")
                    self._record_cells(pending, state, Outcome.ERROR, exc.one_line())
                    return
                pending = self._run_cells(state, target, pending, retried, replacements)
            if not pending:
                return
            replacements += 1
            if replacements > MAX_REPLACEMENTS:
                reason = (f"guest {group.guest} stopped answering {replacements} times; "
                          "its remaining trials were not run")
                self.progress.note(reason)
                self._record_cells(pending, state, Outcome.ERROR, reason)
                return
            again = (f" (trial {pending[0].trial} again, as attempt "
                     f"{self.selection.attempt(pending[0])})" if pending[0].key in retried
                     else "")
            self.progress.note(f"guest {group.guest} ({state.verified}) stopped answering; "
                               f"booting a fresh one for its {len(pending)} remaining "
                               f"trials{again}")

    def _run_cells(self, state: ModeState, target: Target, pending: list[Cell],
                   retried: dict[tuple[str, int], int], replacements: int) -> list[Cell]:
        """Runs pending cells in one guest until none is left or the guest stops answering;
        returns the cells still to run."""
        while pending:
            cell = pending.pop(0)
            record = self.targets.judge(cell, self._run_trial(state, target, cell,
                                                              replacements))
            self._record(record)
            if record.info.get("stopped") == "precision":
                pending = self._without_finished(pending, state)
            if record.outcome is Outcome.ERROR and not _answers(target):
                if retried.get(cell.key, 0) < self.suite.lost_guest_retries:
                    retried[cell.key] = retried.get(cell.key, 0) + 1
                    # recorded as this attempt: it runs again as the next one
                    self.selection.attempts[cell.key] = record.attempt
                    pending.insert(0, cell)
                break
        return pending

    def _without_finished(self, pending: list[Cell], state: ModeState) -> list[Cell]:
        """The pending cells of points whose precision target is met are recorded as skipped,
        with why; the others are returned, in order."""
        finished = self.targets.finished
        for cell in pending:
            if cell.point.cell_id in finished:
                self._record_cells([cell], state, Outcome.SKIPPED, finished[cell.point.cell_id])
        return [c for c in pending if c.point.cell_id not in finished]

    def _run_trial(self, state: ModeState, target: Target, cell: Cell,
                   replacements: int) -> TrialRecord:
        point = cell.point
        workload = next(w for w in self.suite.workloads if w.name == point.workload)
        timeout = workload.timeout or self.suite.timeouts.trial
        host_assisted = KINDS[point.kind].host_assisted
        argv = [] if host_assisted else adapters.command(point.kind, point.param_dict,
                                                         target.bin_dir, workload.cpu)
        started = time.time()
        window = TraceWindow()
        try:
            with self.tracer(target, point, self._capture_path(cell)) as window:
                if host_assisted:
                    window.no_guest_side()  # no single guest process to count around
                    parsed = dirty.run_trial(point.kind, target, point.param_dict, timeout)
                else:
                    done = window.collect(target.run(window.wrap(argv), timeout=timeout))
                    parsed = adapters.parse(point.kind, done)
            if window.problem and not parsed.reason:
                parsed = replace(parsed, reason=window.problem)
            if window.info:  # e.g. where the trial's timeline went
                parsed = replace(parsed, info={**parsed.info, **window.info})
        except CommandError as exc:
            what = "timed out" if exc.timed_out else "could not run"
            parsed = adapters.ParsedTrial(Outcome.ERROR, f"{what}: {exc.one_line()}")
        if replacements:  # measured in a guest booted again mid-point: say so on the row
            parsed = replace(parsed, info={**parsed.info, "guest_replacements": replacements})
        return self._trial_record(state, cell, parsed, window.counts, started)

    def _capture_path(self, cell: Cell) -> Path | None:
        """The first measured trial of each point may be captured in full (trace: capture)."""
        first = not cell.warmup and not any(
            c.trial < cell.trial and not c.warmup for c in cells_of(cell.point))
        return self.journal.path.parent / "captures" / (
            f"{cell.point.cell_id}-{cell.trial}.dat") if first else None

    def _trial_record(self, state: ModeState, cell: Cell, parsed: adapters.ParsedTrial,
                      events: tuple[EventCount, ...], started: float) -> TrialRecord:
        point = cell.point
        return TrialRecord(
            cell_id=point.cell_id, trial=cell.trial, warmup=cell.warmup,
            paging_requested=point.mode.value, paging_mode=state.verified, accel=state.accel,
            guest=point.guest, workload=point.workload, kind=point.kind,
            params=point.param_dict, outcome=parsed.outcome, reason=parsed.reason,
            metrics=parsed.metrics, events=events, info=parsed.info, started_at=started,
            duration_s=time.time() - started, attempt=self.selection.attempt(cell),
        )

    def _record_all(self, group: GuestGroup, state: ModeState | None, outcome: Outcome,
                    reason: str) -> None:
        """Every wanted trial of a group that could not run gets a row saying why."""
        cells = [c for c in self.plan.group_cells(group) if self.selection.wants(c)]
        self._record_cells(cells, state or ModeState(group.mode, "unavailable", "none", {}),
                           outcome, reason)

    def _record_cells(self, cells: list[Cell], state: ModeState, outcome: Outcome,
                      reason: str) -> None:
        for cell in cells:
            parsed = adapters.ParsedTrial(outcome, reason)
            self._record(self._trial_record(state, cell, parsed, (), time.time()))

    def _record(self, record: TrialRecord) -> None:
        self.journal.append(record)
        self.progress.trial_done(record)


def _answers(target: Target) -> bool:
    """After a failed trial: is the guest still there to run the next one?"""
    try:
        target.run(["true"], timeout=PROBE_TIMEOUT_S)
    except CommandError:
        return False
    return True

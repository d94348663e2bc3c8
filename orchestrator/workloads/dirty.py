"""Trials the host takes part in: dirty logging and live migration of a guest running the
dirtier (seed: the live-migration thread). Each trial:

- learns the guest's clock offset (guest `wallclock` bracketed by host time), so the dirtier's
  per-interval throughput, stamped with the guest's wall clock, can be lined up with what the
  host did meanwhile;
- starts the dirtier detached in the guest, writing its interval lines to a file (an SSH
  channel does not survive a migration), and waits for its first interval;
- `dirty-log`: after `phase` seconds turns dirty logging on for `phase` seconds through QEMU's
  dirty-rate measurement in dirty-bitmap mode (QMP calc-dirty-rate), then lets it run `phase`
  more; `migrate`: after `phase` seconds migrates the guest to a second QEMU over loopback
  (where its launcher can: LocallyMigratable), then lets it run `phase` more;
- stops the dirtier and reports its throughput before, during and after.

Intervals within MARGIN_S of a switch belong to no phase.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from orchestrator.errors import HarnessError
from orchestrator.model import Metric, Outcome
from orchestrator.proc import CommandError
from orchestrator.suite.kinds import KINDS
from orchestrator.workloads.adapters import ParsedTrial

if TYPE_CHECKING:  # types only: running a trial needs neither paramiko nor a launcher
    from orchestrator.guests.guest import GuestDomain
    from orchestrator.guests.qemu_direct import MigrationResult
    from orchestrator.guests.ssh import GuestSession

INTERVAL_S = 0.1
MARGIN_S = 0.1
OUT = "/tmp/orch-dirtier.out"  # noqa: S108 - a path inside the throwaway guest


@dataclass(frozen=True)
class Interval:
    start: float  # host clock, seconds
    end: float
    pages: int


@runtime_checkable
class DrivenGuest(Protocol):
    """What a host-driven trial needs of its target: a guest whose QEMU the host holds (QMP,
    liveness), and a session that can follow it to another QEMU. The lab host has none."""

    name: str
    accel: str
    bin_dir: str
    info: dict[str, Any]
    session: GuestSession
    domain: GuestDomain

    def reconnect(self, port: int) -> None: ...


@runtime_checkable
class LocallyMigratable(Protocol):
    """A guest domain that can live-migrate to a second QEMU on this host. A launcher offers it
    or not: libvirt refuses a same-host migration, QEMU started directly does not."""

    ssh_port: int

    def migrate_locally(self, *, timeout: float, downtime_ms: int,
                        bandwidth_mib_s: int) -> MigrationResult: ...


def run_trial(kind: str, target: object, params: Mapping[str, Any],
              timeout: float) -> ParsedTrial:
    """One trial of a host-assisted kind (suite/kinds.py), driven by DRIVERS[kind]."""
    if not isinstance(target, DrivenGuest):
        return ParsedTrial(Outcome.SKIPPED, f"{kind} needs a guest (the host drives its QEMU); "
                                            "natively there is nothing to log or migrate")
    program = f"{target.bin_dir}/{KINDS[kind].binary}"
    try:
        return DRIVERS[kind](target, program, params, timeout)
    except (HarnessError, CommandError) as exc:
        return ParsedTrial(Outcome.ERROR, exc.one_line())


def clock_offset(target: DrivenGuest) -> tuple[float, float]:
    """(guest wall clock - host wall clock, its uncertainty): the best of three brackets."""
    brackets = []
    for _ in range(3):
        before = time.time()
        done = target.session.run([f"{target.bin_dir}/wallclock"], timeout=30)
        after = time.time()
        guest = int(done.stdout.strip()) / 1e6
        brackets.append((guest - (before + after) / 2, (after - before) / 2))
    return min(brackets, key=lambda b: b[1])


def parse_intervals(text: str, offset: float) -> list[Interval]:
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if obj.get("type") == "interval":
            end = obj["wall_us"] / 1e6 - offset
            seconds = obj["pages"] / obj["pages_per_s"] if obj["pages_per_s"] else INTERVAL_S
            out.append(Interval(end - seconds, end, int(obj["pages"])))
    return out


def phase_rate(intervals: Sequence[Interval], start: float, end: float) -> float | None:
    """Pages per second over the intervals wholly inside [start, end], margins excluded."""
    inside = [i for i in intervals if i.start >= start + MARGIN_S and i.end <= end - MARGIN_S]
    seconds = sum(i.end - i.start for i in inside)
    return sum(i.pages for i in inside) / seconds if seconds > 0 else None


def _start_dirtier(target: DrivenGuest, program: str, params: Mapping[str, Any],
                   timeout: float) -> None:
    dirtier = (f"{program} --trials 1 --warmup 0 --pages {params['pages']} "
               f"--rate {params['rate']} --duration {int(timeout)} --interval {INTERVAL_S}")
    target.session.run(["sh", "-c", f"rm -f {OUT}; setsid {dirtier} > {OUT} 2>&1 < /dev/null "
                        f"& echo $! > {OUT}.pid"], timeout=60)
    deadline = time.monotonic() + timeout
    while '"interval"' not in target.session.run(["cat", OUT], timeout=60).stdout:
        if time.monotonic() > deadline:
            raise HarnessError("the dirtier never reported an interval",
                               hint=f"look at {OUT} in the guest")
        time.sleep(INTERVAL_S)


def _stop_dirtier(target: DrivenGuest) -> str:
    target.session.run(["sh", "-c", f"kill $(cat {OUT}.pid)"], timeout=60, check=False)
    return target.session.run(["cat", OUT], timeout=60).stdout


def _stop_dirtier_after_error(target: DrivenGuest) -> None:
    """Best effort: the trial's own error is what the row must say, not this one's."""
    if target.domain.is_alive():
        try:
            _stop_dirtier(target)
        except (HarnessError, CommandError):
            pass


def _rates(intervals: Sequence[Interval], on: float, off: float,
           names: tuple[str, str, str]) -> list[Metric]:
    spans = ((intervals[0].start if intervals else on, on), (on, off),
             (off, intervals[-1].end if intervals else off))
    metrics = []
    for name, (lo, hi) in zip(names, spans, strict=True):
        rate = phase_rate(intervals, lo, hi)
        if rate is not None:
            metrics.append(Metric(name, rate, "pages/s"))
    return metrics


def _dirty_log(target: DrivenGuest, program: str, params: Mapping[str, Any],
               timeout: float) -> ParsedTrial:
    if target.accel == "tcg":
        # seen here: QEMU 7.2 dies with SIGSEGV on calc-dirty-rate in dirty-bitmap mode under
        # TCG; and TCG has no KVM dirty log, the thing measured
        return ParsedTrial(Outcome.SKIPPED, "dirty logging needs KVM (under TCG, QEMU's "
                           "dirty-bitmap rate measurement crashes QEMU)")
    phase = max(1, round(float(params["phase"])))  # calc-dirty-rate counts whole seconds
    # a guest with KVM's dirty ring is measured through the ring, others through the bitmap
    mode = "dirty-ring" if target.info.get("dirty_ring") else "dirty-bitmap"
    offset, uncertainty = clock_offset(target)
    _start_dirtier(target, program, params, timeout)
    try:
        time.sleep(phase)
        on = time.time()
        target.domain.qmp("calc-dirty-rate", **{"calc-time": phase, "mode": mode})
        deadline = time.monotonic() + phase + 120
        while (rate := target.domain.qmp("query-dirty-rate"))["status"] != "measured":
            if time.monotonic() > deadline:
                raise HarnessError("QEMU's dirty-rate measurement never finished",
                                   hint="query-dirty-rate stayed " + str(rate["status"]))
            time.sleep(0.1)
        off = time.time()
        time.sleep(phase)
    except BaseException:
        _stop_dirtier_after_error(target)
        raise
    text = _stop_dirtier(target)
    intervals = parse_intervals(text, offset)
    metrics = _rates(intervals, on, off, ("pages_per_s_off", "pages_per_s_on",
                                          "pages_per_s_after"))
    values = {m.name: m.value for m in metrics}
    if {"pages_per_s_off", "pages_per_s_on"} <= values.keys():
        metrics.append(Metric("slowdown_pct", 100 * (1 - values["pages_per_s_on"]
                                                     / values["pages_per_s_off"]), "%"))
    metrics += [Metric("dirty_rate_mib_s", float(rate["dirty-rate"]), "MiB/s"),
                Metric("logging_s", off - on, "s")]
    return _with_phases(metrics, ("pages_per_s_off", "pages_per_s_on"), {
        "clock_offset_s": offset, "clock_uncertainty_s": uncertainty, "mode": rate.get("mode"),
        "intervals": len(intervals)})


def _migrate(target: DrivenGuest, program: str, params: Mapping[str, Any],
             timeout: float) -> ParsedTrial:
    guest = target.domain
    if not isinstance(guest, LocallyMigratable):
        return ParsedTrial(Outcome.SKIPPED, "migrate needs guests started by QEMU directly "
                                            "(libvirt refuses a same-host migration): give "
                                            "the guest `launcher: qemu` in the suite")
    phase = float(params["phase"])
    offset, uncertainty = clock_offset(target)
    _start_dirtier(target, program, params, timeout)
    try:
        time.sleep(phase)
        result = guest.migrate_locally(timeout=timeout,
                                       downtime_ms=int(params["downtime_ms"]),
                                       bandwidth_mib_s=int(params["bandwidth_mib_s"]))
        if result.status == "completed":
            target.reconnect(guest.ssh_port)  # the guest answers on the destination's port
        time.sleep(phase)
    except BaseException:
        _stop_dirtier_after_error(target)
        raise
    text = _stop_dirtier(target)
    stats = result.stats
    if result.status != "completed":
        return ParsedTrial(Outcome.FAILED, f"migration {result.status}: "
                           f"{stats.get('error-desc', 'no reason given')}; the guest runs on "
                           "in the source", info={"migration": stats})
    intervals = parse_intervals(text, offset)
    metrics = _rates(intervals, result.started_at, result.ended_at,
                     ("pages_per_s_before", "pages_per_s_during", "pages_per_s_after"))
    ram = stats.get("ram", {})
    metrics += [
        Metric("total_time_ms", float(stats.get("total-time", 0)), "ms"),
        Metric("downtime_ms", float(stats.get("downtime", 0)), "ms"),
        Metric("setup_time_ms", float(stats.get("setup-time", 0)), "ms"),
        Metric("transferred_mib", ram.get("transferred", 0) / 2**20, "MiB"),
        Metric("pages_transferred", float(ram.get("normal", 0)), "count"),
        Metric("iterations", float(ram.get("dirty-sync-count", 0)), "count"),
    ]
    return _with_phases(metrics, ("pages_per_s_before", "pages_per_s_during"), {
        "clock_offset_s": offset, "clock_uncertainty_s": uncertainty,
        "intervals": len(intervals), "migration_status": result.status})


def _with_phases(metrics: list[Metric], needed: tuple[str, ...],
                 info: dict[str, Any]) -> ParsedTrial:
    missing = [n for n in needed if n not in {m.name for m in metrics}]
    if missing:
        return ParsedTrial(Outcome.ERROR, f"no dirtier interval fell wholly inside the "
                           f"{', '.join(missing)} phase (make `phase` longer)",
                           metrics=tuple(metrics), info=info)
    return ParsedTrial(Outcome.OK, metrics=tuple(metrics), info=info)


# How the host drives each host-assisted kind: (target, its program's path, one point's
# parameters, the trial's timeout) -> the trial.
Driver = Callable[[DrivenGuest, str, Mapping[str, Any], float], ParsedTrial]
DRIVERS: dict[str, Driver] = {"dirty-log": _dirty_log, "migrate": _migrate}

"""Workload adapters: how to invoke each guest workload and how to read what it printed.

The same adapter serves every target (the lab host natively, a guest over SSH): only the
directory holding the binaries differs. Every invocation runs exactly one trial, so the
orchestrator owns per-trial timeouts, tracing windows and durability. Which program a kind runs
is the registry's (suite/kinds.py); an outside tool's argv and parser are here, in TOOLS.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from orchestrator.model import Metric, Outcome
from orchestrator.proc import Completed, tail
from orchestrator.suite.kinds import KINDS

# Exit codes shared by every binary in guest-workloads/.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIP = 0, 1, 2, 3


@dataclass(frozen=True)
class ParsedTrial:
    outcome: Outcome
    reason: str = ""
    metrics: tuple[Metric, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


def command(kind: str, params: Mapping[str, Any], bin_dir: str,
            cpu: int | None = None) -> list[str]:
    """The argv of one trial of `kind` with one value per parameter (a host-assisted kind has
    none: workloads.dirty drives it); `cpu` pins the workload (and what it forks) there."""
    registered = KINDS.get(kind)
    if registered is None or registered.host_assisted:
        raise ValueError(f"no adapter for workload kind {kind!r}")
    if registered.binary is None:
        argv = TOOLS[kind].argv(params)
        return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv
    argv = [f"{bin_dir}/{registered.binary}", "--trials", "1", "--warmup", "0"]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    for name, value in params.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)  # booleans are presence flags (e.g. --cow)
        else:
            argv += [flag, _arg(value)]
    return argv


def _arg(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # full precision, never "1e+00"-style surprises from %g
    return str(value)


def parse(kind: str, done: Completed) -> ParsedTrial:
    tool = TOOLS.get(kind)
    return tool.parse(done) if tool else _parse_binary(done)


def _parse_binary(done: Completed) -> ParsedTrial:
    lines = _json_lines(done.stdout)
    trials = [obj for obj in lines if obj.get("type") == "trial"]
    notes = [obj for obj in lines if obj.get("type") in ("skip", "error")]
    reason = str(notes[-1].get("reason", "")) if notes else _stderr_reason(done)
    if done.returncode == EXIT_SKIP:
        return ParsedTrial(Outcome.SKIPPED, reason or "the workload skipped itself")
    if done.returncode == EXIT_USAGE:
        return ParsedTrial(Outcome.ERROR, f"the workload refused its arguments: {reason}")
    if done.returncode != EXIT_OK:
        return ParsedTrial(Outcome.FAILED, reason or f"exit status {done.returncode}",
                           info=trials[-1].get("info", {}) if trials else {})
    if len(trials) != 1:
        return ParsedTrial(Outcome.ERROR, f"expected one trial record, got {len(trials)}")
    return _trial_metrics(trials[0])


def _trial_metrics(obj: dict[str, Any]) -> ParsedTrial:
    metrics = [
        Metric(name, float(m["value"]), str(m.get("unit", "")))
        for name, m in obj.get("metrics", {}).items()
    ]
    rusage = obj.get("rusage", {})
    for name in ("minflt", "majflt", "nvcsw", "nivcsw"):
        if name in rusage:
            metrics.append(Metric(f"rusage_{name}", float(rusage[name]), "count"))
    info = {**obj.get("info", {}), "clock": obj.get("clock", "")}
    return ParsedTrial(Outcome.OK, metrics=tuple(metrics), info=info)


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _stderr_reason(done: Completed) -> str:
    lines = done.stderr.strip().splitlines()
    return tail(lines[-1], 300) if lines else ""


# ---- stress-ng: a maintained peer, its --yaml metrics parsed --------------------------------


def _stress_ng_argv(params: Mapping[str, Any]) -> list[str]:
    stressor = str(params["stressor"])
    return [
        "stress-ng", f"--{stressor}", str(params["workers"]),
        f"--{stressor}-ops", str(params["ops"]),
        "--metrics", "--yaml", "/dev/stdout",  # stdout is a pipe here, so this is clean
    ]


def _parse_stress_ng(done: Completed) -> ParsedTrial:
    if done.returncode != 0:
        return ParsedTrial(Outcome.FAILED, _stderr_reason(done) or f"exit {done.returncode}")
    try:
        doc = YAML(typ="safe").load(done.stdout)
        entry = doc["metrics"][0]
    except (YAMLError, KeyError, IndexError, TypeError):
        return ParsedTrial(Outcome.ERROR, "stress-ng printed no metrics in its --yaml output")
    metrics = (
        Metric("bogo_ops", float(entry["bogo-ops"]), "count"),
        Metric("bogo_ops_per_s", float(entry["bogo-ops-per-second-real-time"]), "ops/s"),
        Metric("wall_s", float(entry["wall-clock-time"]), "s"),
        Metric("user_s", float(entry["user-time"]), "s"),
        Metric("system_s", float(entry["system-time"]), "s"),
    )
    version = doc.get("system-info", {}).get("stress-ng-version", "")
    return ParsedTrial(Outcome.OK, metrics=metrics, info={"stress_ng_version": str(version)})


@dataclass(frozen=True)
class Tool:
    """An outside program run as a kind (registered with binary None)."""

    argv: Callable[[Mapping[str, Any]], list[str]]  # one point's parameters -> the argv
    parse: Callable[[Completed], ParsedTrial]


TOOLS = {"stress-ng": Tool(_stress_ng_argv, _parse_stress_ng)}

"""Tracing overhead (figures printed, no thresholds): the same fork-dirty trials natively with
guest-side counting on and off, interleaved in one run so machine drift hits both alike.
Goal from the issue: median perturbation <= 3% with counting.
Run: make -C guest-workloads && .venv/bin/python bench/bench_tracing.py
"""

from __future__ import annotations

import json
import statistics

from orchestrator import proc
from orchestrator.paths import workloads_bin_dir
from orchestrator.tracing.perf import DEFAULT_GUEST, TraceWindow

ROUNDS = 15


def fork_us(argv: list[str], window: TraceWindow | None) -> float:
    run = window.wrap(argv) if window else argv
    done = proc.run(run, timeout=300)
    if window:
        done = window.collect(done)
    line = next(json.loads(x) for x in done.stdout.splitlines() if x.startswith("{"))
    return float(line["metrics"]["fork_us"]["value"])


def main() -> None:
    argv = [str(workloads_bin_dir() / "fork-dirty"), "--pages", "128000", "--warmup", "1"]
    known = set(proc.run(["perf", "list", "--raw-dump", "tracepoint", "sw"],
                         timeout=120).stdout.split())
    off, on = [], []
    for _ in range(ROUNDS):
        off.append(fork_us(argv, None))
        on.append(fork_us(argv, TraceWindow(list(DEFAULT_GUEST), known)))
    a, b = statistics.median(off), statistics.median(on)
    print(f"fork-dirty 128,000 pages, {ROUNDS} interleaved trials each: tracing off {a:.0f} us, "
          f"on ({len(DEFAULT_GUEST)} events) {b:.0f} us: {(b / a - 1) * 100:+.1f}% (goal <= 3%)")


if __name__ == "__main__":
    main()

"""`orchestrate report RUN [RUN...]`: one section per workload, each opening with the question
it answers, then its figures, its timings with their intervals, its mode ratios, its counters
(collapsed) and the points it could not measure; report.md and one self-contained report.html
(analysis/page.py renders both from the same blocks).

Honest framing first: a banner when any row ran under TCG (emulated: no paging question is
answered) or in the nested lab; each run's provenance and host stability; several runs side
by side with a run column and their differences named.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.analysis import compatibility, reference
from orchestrator.analysis.intervals import trials_needed
from orchestrator.analysis.page import (
    TIMELINE_MAX_EVENTS,
    Banner,
    Block,
    Details,
    Figure,
    Heading,
    Items,
    Table,
    Text,
    Timeline,
    html_page,
    markdown,
)
from orchestrator.analysis.questions import question
from orchestrator.analysis.stats import (
    PER_UNIT,
    STATS,
    event_table,
    mode_ratios,
    per_unit,
    present_params,
    shown,
    summary,
    unmeasured,
)
from orchestrator.errors import ExitCode
from orchestrator.store import reader

PROVENANCE = ["run_id", "suite_name", "status", "git_rev", "started_at", "ended_at"]
HOST = ["hostname", "cpu_model", "microcode", "kernel_release", "kvm_module", "guest_accel"]
COUNT_UNITS = ("count", "")
TIMING_STATS = ["n", "median", "ci_low", "ci_high", "ci_level"]
DERIVED = [name for _, _, name, _, _ in PER_UNIT]  # drawn after the measured metrics

SUMMARY_NOTE = ("Measured trials only (ok, warm-ups excluded). ci_low..ci_high: the median's "
                "exact binomial order-statistic interval; ci_level: the coverage it reaches "
                f"(95% needs at least {trials_needed()} trials; with fewer, min..max at the "
                "level shown).")
RATIO_NOTE = ("Ratio of medians of two verified paging modes at the same point (native rows "
              "pair with every guest), with a 95% BCa bootstrap interval (2000 resamples, "
              "seeded); n_num, n_den: the trials behind each median.")
TCG_BANNER = ("Emulated: some rows ran under TCG (accel=tcg). Their timings measure QEMU's "
              "software MMU, not a paging mode: they answer no paging question.")
NESTED_BANNER = ("Nested lab: rows with accel=nested-tcg ran under real KVM inside an "
                 "emulated lab host. Ratios between paging modes show how KVM's MMU work "
                 "scales; absolute times are not those of a bare-metal host.")


@dataclass(frozen=True)
class Data:
    """Everything a report is drawn from: the runs' tables and what was computed of them."""

    manifests: list[dict[str, Any]]
    run_dirs: list[Path]
    trials: pd.DataFrame
    events: pd.DataFrame
    params: list[str]
    table: pd.DataFrame  # per point and metric, per-unit costs included
    ratios: pd.DataFrame
    missing: pd.DataFrame
    event_counts: pd.DataFrame  # events per trial, keyed like `table`


def gather(runs: list[str | Path], root: Path | None) -> Data:
    tables = [reader.load(r, root) for r in runs]
    trials = pd.concat([t.trials for t in tables], ignore_index=True)
    events = pd.concat([t.events for t in tables], ignore_index=True)
    params = present_params(trials, sorted({p for t in tables
                                            for p in t.manifest.get("param_columns", {})}))
    keys = params + (["run_id"] if trials["run_id"].nunique() > 1 else [])
    # unreadable journal lines (also warned on stderr by load) go on record in the report
    manifests = [{**t.manifest, "journal_note": t.unreadable_note()} for t in tables]
    table = pd.concat([summary(trials, keys), summary(per_unit(trials), keys)],
                      ignore_index=True)
    return Data(manifests, [t.path for t in tables], trials, events, keys, table,
                mode_ratios(trials, keys), unmeasured(trials, keys),
                event_table(trials, events, keys))


def write_report(runs: list[str | Path], out_dir: Path,
                 root: Path | None = None) -> Path:
    data = gather(runs, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    # matplotlib is imported only when drawing: every other verb starts faster without it
    from orchestrator.analysis.plots import (
        events_plot,
        metric_plots,
        ratio_plot,
        reference_plot,
        unswept_plots,
    )

    figures = [*metric_plots(data.table, data.params, out_dir, data.missing),
               *unswept_plots(data.table, data.params, out_dir)]
    # events against the same axis as the timings: cause beside effect
    event_figures = (metric_plots(data.event_counts, data.params, out_dir)
                     if not data.event_counts.empty else [])
    blocks = [*banners(data), *run_blocks(data)]
    for ref in reference.references(data.manifests):  # a seed's figures beside ours, first
        curves = reference.growth_curves(data.table, ref) if ref.get("series") else []
        figure = reference_plot(curves, str(ref["axis"]), f"seed {ref['seed']}: growth, theirs "
                                f"and ours", out_dir, f"reference-{ref['seed']}-{ref['workload']}"
                                ) if curves else None
        blocks += reference.blocks(data.table, data.ratios, data.trials, data.params, ref,
                                   figure)
    for workload in dict.fromkeys(data.trials["workload"]):
        ratio_fig = ratio_plot(_of(data.ratios, workload), data.params, out_dir,
                               stem=f"{workload}-mode-ratios")
        mine = sorted((p for p in figures if p.name.startswith(f"{workload}-")),
                      key=lambda p: any(f"-{name}-" in p.name for name in DERIVED))
        causes = [p for p in event_figures if p.name.startswith(f"{workload}-")]
        blocks += workload_blocks(data, str(workload), mine + ([ratio_fig] if ratio_fig else []),
                                  causes)
        blocks += timeline_blocks(data, str(workload), out_dir)
    events = events_plot(data.events, out_dir)
    blocks += [Heading("Events per trial"),
               Figure(events) if events else Text("No event was counted in these runs.")]
    data.table.to_csv(out_dir / "summary.csv", index=False)
    title = "report: " + ", ".join(str(m["run_id"]) for m in data.manifests)
    (out_dir / "report.md").write_text(markdown(title, blocks))
    page = out_dir / "report.html"
    page.write_text(html_page(title, blocks))
    return page


TIMELINES_SHOWN = 2  # per workload: the first captured trials; the rest stay in captures/


def gap_ticks(timeline: pd.DataFrame) -> float | None:
    """Median TSC ticks from each guest event to the first host event at or after it."""
    stamps = timeline.dropna(subset=["tsc"])
    host = np.sort(stamps.loc[stamps["side"] == "host", "tsc"].to_numpy("int64"))
    guest = stamps.loc[stamps["side"] == "guest", "tsc"].to_numpy("int64")
    if not len(host) or not len(guest):
        return None
    at = np.searchsorted(host, guest)
    gaps = host[at[at < len(host)]] - guest[at < len(host)]
    return float(np.median(gaps)) if len(gaps) else None


def timeline_rows(timeline: pd.DataFrame) -> tuple[tuple[tuple[str, str, tuple[int, ...]], ...],
                                                  int]:
    """The canvas's rows, guest rows first (above the host's, as in the figure), ticks from the
    trial's first event, in time order; the earliest TIMELINE_MAX_EVENTS events, and how many
    more there were."""
    data = timeline.dropna(subset=["tsc"]).astype({"tsc": "int64"}).sort_values("tsc")
    if data.empty:
        return (), 0
    kept = data.iloc[:TIMELINE_MAX_EVENTS]
    start = int(data["tsc"].iloc[0])
    keys = sorted(dict.fromkeys(zip(kept["side"], kept["event"], strict=True)),
                  key=lambda r: (r[0] != "guest", r[1]))
    rows = tuple((str(side), str(event), tuple(int(t) - start for t in kept.loc[
        (kept["side"] == side) & (kept["event"] == event), "tsc"])) for side, event in keys)
    return rows, len(data) - len(kept)


def timeline_blocks(data: Data, workload: str, out_dir: Path) -> list[Block]:
    """The captured trials' host+guest timelines of this workload (`trace: {timeline: true}`)."""
    from orchestrator.analysis.plots import timeline_plot

    cells = data.trials[data.trials["workload"] == workload].drop_duplicates("cell_id")
    found = sorted(p for run in data.run_dirs for cell in cells["cell_id"]
                   for p in (run / "captures").glob(f"{cell}-*.timeline.parquet"))
    blocks: list[Block] = []
    for path in found[:TIMELINES_SHOWN]:
        timeline = pd.read_parquet(path)
        stem = path.name.removesuffix(".timeline.parquet")  # <cell_id>-<trial>
        cell_id, trial = stem.rsplit("-", 1)
        cell = cells[cells["cell_id"] == cell_id].iloc[0]
        where = f"{cell['paging_mode']}/{cell['guest']} " + " ".join(
            f"{p}={shown(cell[p])}" for p in data.params if p in cell and pd.notna(cell[p]))
        png = timeline_plot(timeline, f"{workload} {where}, trial {trial}", out_dir,
                            f"{stem}-timeline")
        gap = gap_ticks(timeline)
        rows, dropped = timeline_rows(timeline)
        blocks += [Heading(f"Timeline: {workload} {where}", 3), Timeline(png, rows, dropped),
                   Text("Median gap from a guest event to the next host event: "
                        + (f"{gap:,.0f} TSC ticks." if gap is not None else
                           "no guest and host events to pair."))]
    return blocks


def banners(data: Data) -> list[Block]:
    accels = set(data.trials["accel"].dropna())
    found: list[Block] = []
    if "tcg" in accels:
        found.append(Banner(TCG_BANNER))
    if "nested-tcg" in accels:
        found.append(Banner(NESTED_BANNER))
    first = data.manifests[0]
    for other in data.manifests[1:]:
        own = data.trials[data.trials["run_id"] == first["run_id"]]
        theirs = data.trials[data.trials["run_id"] == other["run_id"]]
        differ = compatibility.differences(first, other, own, theirs)
        if differ:
            found.append(Banner(f"Runs {first['run_id']} and {other['run_id']} differ: "
                                + "; ".join(d.text for d in differ)))
    return found


def stability_lines(manifest: dict[str, Any]) -> list[str]:
    """The host's measurement conditions as recorded at the run's start: its warnings, or
    that it was quiet; nothing for a run recorded before these checks existed."""
    found = manifest.get("host_stability")
    if not isinstance(found, dict):
        return []
    noisy = [str(w) for w in found.get("warnings", [])]
    return noisy or ["quiet: governor, turbo, ASLR, THP, KSM, NMI watchdog and other "
                     "processes gave no warning"]


def _provenance_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    host = manifest.get("host", {})
    rows = [(k, str(manifest.get(k, ""))) for k in PROVENANCE]
    rows += [(f"host.{k}", str(host.get(k, ""))) for k in HOST]
    rows += [(f"tools.{k}", str(v)) for k, v in manifest.get("tools", {}).items()]
    rows += _kernel_rows(manifest)
    if manifest.get("journal_note"):
        rows.append(("journal", str(manifest["journal_note"])))
    return rows


def _kernel_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """The kernels measured: each guest's as booted (its `uname -r` and image hash, once per
    guest however many modes booted it) and, in the nested lab, the lab host's (L1's KVM)."""
    rows: dict[str, str] = {}
    for key, facts in sorted((manifest.get("guests") or {}).items()):
        if isinstance(facts, dict) and facts.get("kernel_release"):
            kernel_id = facts.get("kernel_id")
            said = str(facts["kernel_release"]) + (f" (image {kernel_id})" if kernel_id else "")
            rows.setdefault(f"guest {str(key).split('/')[-1]} kernel", said)
    l1 = (manifest.get("lab") or {}).get("l1_kernel")
    if isinstance(l1, dict) and l1.get("release"):
        kernel_id = l1.get("kernel_id")
        rows["lab host (L1) kernel"] = f"{l1['release']} ({l1.get('source', '')}" + (
            f", image {kernel_id})" if kernel_id else ")")
    return list(rows.items())


def run_blocks(data: Data) -> list[Block]:
    blocks: list[Block] = []
    for manifest in data.manifests:
        blocks += [Heading(f"Run {manifest['run_id']}"),
                   Table(pd.DataFrame(_provenance_rows(manifest), columns=["what", "value"]))]
        description = (manifest.get("suite") or {}).get("description")
        if description:
            blocks.append(Text(f"Suite: {description}"))
        stable = stability_lines(manifest)
        if stable:
            blocks += [Text("Host stability at the start:"), Items(tuple(stable))]
    return blocks


def _of(frame: pd.DataFrame, workload: str) -> pd.DataFrame:
    return frame[frame["workload"] == workload] if not frame.empty else frame


def _columns(frame: pd.DataFrame, drop: tuple[str, ...]) -> pd.DataFrame:
    """Without the columns the section names (`drop`) or no row has a value of."""
    keep = [c for c in frame.columns if c not in drop and frame[c].notna().any()]
    return frame[keep]


def fixed_params(frame: pd.DataFrame, params: list[str]) -> dict[str, object]:
    """The parameters that take one value in every row: said once, not in every row."""
    return {p: frame[p].dropna().iloc[0] for p in params
            if p in frame and frame[p].notna().all() and frame[p].nunique() == 1}


def workload_blocks(data: Data, workload: str, figures: list[Path],
                    event_figures: list[Path]) -> list[Block]:
    rows = _of(data.table, workload)
    kind = str(data.trials.loc[data.trials["workload"] == workload, "kind"].iloc[0])
    counters = rows["unit"].isin(COUNT_UNITS)
    timings = rows.loc[~counters, [c for c in rows.columns if c not in STATS or
                                   c in TIMING_STATS]]
    missing = _of(data.missing, workload)
    fixed = fixed_params(rows, data.params)
    settings = ("Fixed in every row: " + ", ".join(f"{k}={shown(v)}" for k, v in fixed.items())
                + ".") if fixed else ""
    return [
        Heading(f"{workload} ({kind})"), Text(question(kind)),
        *(Figure(p) for p in figures),
        Text(f"{SUMMARY_NOTE} {settings}".strip()),
        Table(_columns(timings, ("workload", "kind", *fixed)), empty="no timing was measured"),
        Text(RATIO_NOTE),
        Table(_columns(_of(data.ratios, workload), ("workload", "kind", *fixed)), digits=3,
              empty="no two paging modes measured the same point"),
        Details("Counters (rusage and the workload's counts)", (
            Table(_columns(rows[counters], ("workload", "kind", *fixed)), empty="none"),)),
        Details("Events per trial (the tracer's counts, measured trials only)", (
            *(Figure(p) for p in event_figures),
            Table(_columns(_of(data.event_counts, workload), ("workload", "kind", *fixed)),
                  empty="no event was counted for this workload"),)),
        Text("Not measured:" if not missing.empty else
             "Every planned point was measured."),
        *([Table(_columns(missing, ("workload",)))] if not missing.empty else []),
    ]


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("report", help="tables, figures and a self-contained HTML report")
    cmd.add_argument("runs", nargs="+", help="run directories, names or 'latest'")
    cmd.add_argument("--out", type=Path, default=None,
                     help="output directory (default: RUN/report for one run)")
    cmd.add_argument("--results-dir", type=Path, default=None)
    cmd.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    root = args.results_dir or args.settings.results
    out = args.out or reader.resolve_run(args.runs[0], root) / "report"
    page = write_report(args.runs, out, root)
    print(f"report: {page}")
    return ExitCode.OK

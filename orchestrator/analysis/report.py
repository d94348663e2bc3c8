"""`orchestrate report RUN [RUN...]`: summary tables, figures, report.html and report.md.

report.html is self-contained (figures embedded as data: URIs), so it can be mailed or
archived; a tiny script sets the page title to `ok:<loaded images>` once everything has
loaded, which is what the headless-browser test checks.
"""

from __future__ import annotations

import argparse
import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.analysis.intervals import trials_needed
from orchestrator.analysis.stats import mode_ratios, present_params, summary, unmeasured
from orchestrator.errors import ExitCode
from orchestrator.store import reader, rundir

PROVENANCE = ["run_id", "suite_name", "status", "git_rev", "started_at", "ended_at"]
HOST = ["hostname", "cpu_model", "microcode", "kernel_release", "kvm_module", "guest_accel"]
JOURNAL_NOTE = "_journal_note"  # set on the report's copy of a manifest, never on disk


SUMMARY_NOTE = ("Measured trials only (ok, warm-ups excluded). ci_low..ci_high: the median's "
                "exact binomial order-statistic interval; ci_level: the coverage it reaches "
                f"(95% needs at least {trials_needed()} trials; with fewer, min..max at the "
                "level shown).")
RATIO_NOTE = ("Ratio of medians of two verified paging modes at the same point (native rows "
              "pair with every guest), with a 95% BCa bootstrap interval (2000 resamples, "
              "seeded); n_num, n_den: the trials behind each median.")
UNMEASURED_NOTE = "Planned points without a single measured trial, and why."


@dataclass(frozen=True)
class Section:
    title: str
    note: str
    frame: pd.DataFrame
    digits: int = 4


def write_report(runs: list[str | Path], out_dir: Path,
                 root: Path | None = None) -> Path:
    tables = [reader.load(r, root) for r in runs]
    trials = pd.concat([t.trials for t in tables], ignore_index=True)
    events = pd.concat([t.events for t in tables], ignore_index=True)
    params = present_params(trials, sorted({p for t in tables
                                            for p in t.manifest.get("param_columns", {})}))
    out_dir.mkdir(parents=True, exist_ok=True)
    table = summary(trials, params)
    ratios = mode_ratios(trials, params)
    missing = unmeasured(trials, params)
    # matplotlib is imported only when drawing: every other verb starts faster without it
    from orchestrator.analysis.plots import events_plot, metric_plots, ratio_plot

    figures = metric_plots(table, params, out_dir, missing)
    figures += [p for p in (ratio_plot(ratios, params, out_dir), events_plot(events, out_dir))
                if p]
    table.to_csv(out_dir / "summary.csv", index=False)
    sections = [Section("Summary", SUMMARY_NOTE, table),
                Section("Paging-mode ratios", RATIO_NOTE, ratios, 3),
                Section("Not measured", UNMEASURED_NOTE, missing)]
    # unreadable journal lines (also warned on stderr by load) go on record in the report
    manifests = [{**t.manifest, JOURNAL_NOTE: t.unreadable_note()} for t in tables]
    (out_dir / "report.md").write_text(_markdown(manifests, sections, figures))
    page = out_dir / "report.html"
    page.write_text(_html(manifests, sections, figures))
    return page


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
    if manifest.get(JOURNAL_NOTE):
        rows.append(("journal", str(manifest[JOURNAL_NOTE])))
    return rows


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no data_\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(manifests: list[dict[str, Any]], sections: list[Section],
              figures: list[Path]) -> str:
    parts = ["# Report\n"]
    for manifest in manifests:
        parts.append(f"## Run {manifest['run_id']}\n")
        parts.append(_md_table(pd.DataFrame(_provenance_rows(manifest),
                                            columns=["what", "value"])))
        parts += [f"- host stability: {line}" for line in stability_lines(manifest)]
    parts += [f"![{p.stem}]({p.name})\n" for p in figures]
    for section in sections:
        parts += [f"## {section.title}\n", section.note + "\n", _md_table(section.frame)]
    return "\n".join(parts)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">' \
           f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"


def _html_run(manifest: dict[str, Any]) -> str:
    stability = "".join(f"<li>{html.escape(line)}</li>" for line in stability_lines(manifest))
    return (f"<h2>Run {html.escape(manifest['run_id'])}</h2>"
            + pd.DataFrame(_provenance_rows(manifest), columns=["what", "value"])
            .to_html(index=False)
            + (f"<p>Host stability at the start:</p><ul>{stability}</ul>" if stability else ""))


def _html(manifests: list[dict[str, Any]], sections: list[Section], figures: list[Path]) -> str:
    body = (f"<h1>Report</h1>{''.join(_html_run(m) for m in manifests)}"
            f"<h2>Figures</h2>{''.join(_img(p) for p in figures)}")
    for section in sections:
        number = f"{{:.{section.digits}g}}".format
        body += (f"<h2>{html.escape(section.title)}</h2><p>{html.escape(section.note)}</p>"
                 + (section.frame.to_html(index=False, float_format=number)
                    if not section.frame.empty else "<p><em>none</em></p>"))
    script = ("window.addEventListener('load', () => { const imgs = [...document.images]; "
              "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length; "
              "document.title = (ok === imgs.length ? 'ok:' : 'broken:') + ok; });")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:"
             "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>report</title>"
            f"<style>{style}</style><script>{script}</script></head><body>{body}</body></html>")


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("report", help="tables, figures and a self-contained HTML report")
    cmd.add_argument("runs", nargs="+", help="run directories, names or 'latest'")
    cmd.add_argument("--out", type=Path, default=None,
                     help="output directory (default: RUN/report for one run)")
    cmd.add_argument("--results-dir", type=Path, default=None)
    cmd.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    root = args.results_dir or rundir.default_root()
    out = args.out or reader.resolve_run(args.runs[0], root) / "report"
    page = write_report(args.runs, out, root)
    print(f"report: {page}")
    return ExitCode.OK

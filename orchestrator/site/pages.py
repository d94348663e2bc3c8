"""The site's HTML, rendered from plain data (the same data is each page's input digest):
the index (hosts x suites), a page per suite (its trends per host), the regressions page."""

from __future__ import annotations

import html
from typing import Any

from orchestrator.analysis.page import LOADED

STYLE = ("body{font-family:sans-serif;margin:1.5em;line-height:1.4}"
         "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
         ".ok{background:#e6f4ea}.regression{background:#fde2d0}.broke{background:#f6c6c6}"
         ".missing{background:#eee;color:#666}.badge{font-weight:bold}"
         "figure{display:inline-block;margin:.4em;vertical-align:top;max-width:660px}"
         "figcaption{font-size:11px;color:#333}nav a{margin-right:1em}.note{color:#555}")
LEGEND = {"ok": "ok", "regression": "regression", "broke": "harness broke",
          "missing": "missing"}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def link(href: str | None, text: str) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>' if href else esc(text)


def page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    nav = (f'<nav><a href="{up}index.html">fleet</a><a href="{up}regressions.html">'
           f'regressions</a><a href="{up}summary.json">summary.json</a></nav>')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width'><style>{STYLE}</style>"
            f"<script>{LOADED}</script></head><body>{nav}<h1>{esc(title)}</h1>{body}"
            f"</body></html>")


def index(view: dict[str, Any]) -> str:
    head = "".join(f'<th>{link(s["href"], s["name"])}<br><span class="note">'
                   f'{esc(s["headline"])}</span></th>' for s in view["suites"])
    rows = []
    for host in view["hosts"]:
        cells = "".join(_index_cell(view["cells"][host["name"]][s["name"]])
                        for s in view["suites"])
        rows.append(f"<tr><th>{esc(host['name'])}</th>{cells}</tr>")
    counts = ", ".join(f"{n} {LEGEND[k]}" for k, n in view["counts"].items())
    return page("Fleet", f"<p>Last night: <b>{esc(view['latest'])}</b> (UTC). {esc(counts)}. "
                f"{link('regressions.html', str(view['open']) + ' open regression(s)')} "
                f"across the fleet. Each cell: the host's last run of the suite, its night, "
                f"and the suite's headline series on that host (one cell and metric, named "
                f"under the suite; red dots: change points).</p>"
                f"<table><tr><th>host</th>{head}</tr>{''.join(rows)}</table>", 0)


def _index_cell(cell: dict[str, Any]) -> str:
    state = cell["status"]
    if cell["night"] is None:
        return f'<td class="missing"><span class="badge">{LEGEND[state]}</span></td>'
    extra = f" ({cell['open']} open)" if cell["open"] else ""
    run = f"run {cell['run_status']}" if state == "broke" else ""
    spark = (f'<br><img alt="sparkline" src="{esc(cell["spark"])}"> <span class="note">'
             f'n={cell["n"]}</span>') if cell["spark"] else ""
    return (f'<td class="{state}"><a href="{esc(cell["href"])}"><span class="badge">'
            f'{LEGEND[state]}</span></a>{esc(extra)}<br>{esc(cell["night"])} {esc(run)}'
            f' {link(cell["report"], "last run")}{spark}</td>')


def suite_page(view: dict[str, Any]) -> str:
    parts = [f"<p>Every host on its own (never pooled): one chart per cell and metric, its "
             f"runs' medians with their exact 95 % intervals, the host's own noise band "
             f"(blue: each segment's median &plusmn; 2 robust SDs of its run medians), change "
             f"points as orange ranges from the last run before to the first run after "
             f"(E-Divisive, analysis/changepoints.py), environment changes as dashed lines."
             f"</p><p>Hosts: {', '.join(link('#' + h['anchor'], h['host']) for h in view['hosts'])}"
             f"</p>"]
    for host in view["hosts"]:
        parts.append(f'<h2 id="{esc(host["anchor"])}">{esc(host["host"])}</h2>')
        parts += [f"<p class='note'>environment changed {esc(e['night'])} ({esc(e['at_run'])}): "
                  f"{esc(e['what'])}</p>" for e in host["env"]]
        parts += [_chart(c) for c in host["charts"]]
        parts.append(_runs_table(host["runs"]))
    return page(f"Suite {view['suite']}", "".join(parts), 1)


def _chart(chart: dict[str, Any]) -> str:
    small = f" (n={chart['n']} runs: few)" if chart["n"] < 10 else f" (n={chart['n']} runs)"
    steps = "".join(f"<li>{esc(s)}</li>" for s in chart["steps"])
    return (f'<figure id="{esc(chart["anchor"])}"><img alt="{esc(chart["title"])}" '
            f'src="{esc(chart["src"])}"><figcaption>{esc(chart["title"])}{esc(small)}'
            f'{"<ul>" + steps + "</ul>" if steps else ""}</figcaption></figure>')


def _runs_table(runs: list[dict[str, Any]]) -> str:
    rows = "".join(f"<tr><td>{esc(r['night'])}</td><td>{link(r['href'], r['run_id'])}</td>"
                   f"<td>{esc(r['status'])}</td></tr>" for r in reversed(runs))
    return (f"<details><summary>{len(runs)} runs (newest first; each links its report, or its "
            f"manifest when it has no report)</summary><table><tr><th>night</th><th>run</th>"
            f"<th>status</th></tr>{rows}</table></details>")


def regressions(view: dict[str, Any]) -> str:
    rows = []
    for s in view["steps"]:
        rows.append(
            f"<tr class='regression'><td>{esc(s['night'])}</td><td>{esc(s['host'])}</td>"
            f"<td>{link(s['suite_href'], s['suite'])}</td><td>{esc(s['cell'])}</td>"
            f"<td>{esc(s['stats'])}{_thumb(s['chart'])}</td><td>{link(s['trend'], 'trend')}<br>"
            f"{link(s['compare'], 'compare') if s['compare'] else 'no compare page'}<br>"
            f"{link(s['before_href'], 'last good')} / {link(s['after_href'], 'first bad')}"
            f"</td><td><code>{esc(s['key'])}</code></td></tr>")
    table = ("<table><tr><th>night</th><th>host</th><th>suite</th><th>cell</th>"
             "<th>change</th><th>evidence</th><th>triage key</th></tr>" + "".join(rows)
             + "</table>") if rows else "<p>No open regression.</p>"
    return page("Open regressions", f"<p>{len(view['steps'])} open regression(s) across the "
                f"fleet, newest first: change points the worse way for their unit that nobody "
                f"acknowledged (<code>orchestrate triage ack KEY --why ...</code>). Compare "
                f"pages use trial-level tests of the two runs.</p>{table}", 0)


def _thumb(chart: str | None) -> str:
    return f'<br><img alt="trend" width="320" src="{esc(chart)}">' if chart else ""

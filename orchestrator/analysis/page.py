"""A report as a list of blocks, written once and rendered twice: Markdown and one
self-contained HTML file (figures embedded as data: URIs, so it can be mailed or archived and
opens offline).

Once every image has loaded, a tiny script sets `data-loaded="ok:<images>"` on the body (or
`broken:<decoded>`): the headless-browser test reads it; the tab's title names the runs.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Banner:
    """A warning the reader must not miss (emulated timings, runs that differ)."""

    text: str


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    png: Path


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    empty: str = "none"  # what an empty table says instead of drawing its headers
    digits: int = 4


@dataclass(frozen=True)
class Details:
    """Collapsed in HTML (counters, long lists): there when wanted, not in the way."""

    summary: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Timeline:
    """One trial's events on one axis: the PNG in Markdown, a zoomable canvas in HTML (wheel
    zooms around the pointer, drag pans, double-click resets; drawn by TIMELINE_JS)."""

    png: Path
    rows: tuple[tuple[str, str, tuple[int, ...]], ...]  # (side, label, ticks from the start)
    dropped: int = 0  # events left out of the canvas beyond TIMELINE_MAX_EVENTS (the PNG has all)


Block = Heading | Text | Banner | Items | Figure | Table | Details | Timeline
TIMELINE_MAX_EVENTS = 50_000  # per canvas: keeps a report of many timelines a few MB

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px;line-height:1.4}"
         "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
         ".banner{border-left:6px solid #c85200;background:#fff4e5;padding:.6em 1em}"
         "details{margin:.5em 0}summary{cursor:pointer}"
         ".timeline canvas{width:100%;cursor:grab;border:1px solid #ddd}"
         ".hint{font-size:11px;color:#555}")
TIMELINE_JS = """
function drawTimeline(div) {
  const d = JSON.parse(div.dataset.timeline), c = div.querySelector('canvas');
  const ctx = c.getContext('2d'), rowH = 18, left = 190;
  const span = Math.max(1, ...d.rows.map(r => r.ticks.length ? r.ticks[r.ticks.length - 1] : 0));
  let lo = 0, hi = span, grab = null;
  c.width = Math.max(400, div.clientWidth); c.height = d.rows.length * rowH + 24;
  const plotW = () => c.width - left - 8, at = x => lo + (x - left) / plotW() * (hi - lo);
  function draw() {
    ctx.clearRect(0, 0, c.width, c.height); ctx.font = '11px sans-serif';
    let drawn = 0;
    d.rows.forEach((r, i) => {
      const y = i * rowH + 2;
      ctx.fillStyle = '#333'; ctx.fillText(r.side + ': ' + r.label, 2, y + 12);
      ctx.strokeStyle = r.side === 'guest' ? '#006ba4' : '#c85200'; ctx.beginPath();
      for (const t of r.ticks) {
        if (t < lo || t > hi) continue;
        const x = left + (t - lo) / (hi - lo) * plotW();
        ctx.moveTo(x, y + 2); ctx.lineTo(x, y + rowH - 3); drawn++;
      }
      ctx.stroke();
    });
    ctx.fillStyle = '#333';
    ctx.fillText('TSC ticks ' + Math.round(lo).toLocaleString() + ' .. ' +
                 Math.round(hi).toLocaleString() + ' since the first event', left, c.height - 6);
    div.dataset.drawn = String(drawn);  // events in view: what the browser test reads
  }
  c.addEventListener('wheel', e => {
    e.preventDefault();
    const f = e.deltaY < 0 ? 0.8 : 1.25, x = at(e.offsetX);
    lo = Math.max(0, x - (x - lo) * f); hi = Math.min(span, x + (hi - x) * f);
    if (hi - lo < 10) { hi = lo + 10; }
    draw();
  });
  c.addEventListener('mousedown', e => { grab = e.offsetX; });
  window.addEventListener('mouseup', () => { grab = null; });
  c.addEventListener('mousemove', e => {
    if (grab === null) return;
    const dt = Math.max(-lo, Math.min(span - hi, (grab - e.offsetX) / plotW() * (hi - lo)));
    lo += dt; hi += dt; grab = e.offsetX; draw();
  });
  c.addEventListener('dblclick', () => { lo = 0; hi = span; draw(); });
  draw();
}
window.addEventListener('load', () => document.querySelectorAll('.timeline').forEach(drawTimeline));
"""
LOADED = ("window.addEventListener('load', () => { const imgs = [...document.images]; "
          "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length; "
          "document.body.dataset.loaded = (ok === imgs.length ? 'ok:' : 'broken:') + ok; });")


def _cell(value: object, digits: int) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _md_table(table: Table) -> str:
    if table.frame.empty:
        return f"_{table.empty}_\n"
    cols = [str(c) for c in table.frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(v, table.digits) for v in row) + " |"
              for row in table.frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown(title: str, blocks: list[Block]) -> str:
    return "\n".join([f"# {title}\n", *(_md(b) for b in blocks)])


def _md(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}\n"
    if isinstance(block, Banner):
        return f"> **{block.text}**\n"
    if isinstance(block, Text):
        return block.text + "\n"
    if isinstance(block, Items):
        return "\n".join(f"- {item}" for item in block.items) + "\n"
    if isinstance(block, Figure | Timeline):
        return f"![{block.png.stem}]({block.png.name})\n"
    if isinstance(block, Table):
        return _md_table(block)
    return f"### {block.summary}\n\n" + "\n".join(_md(b) for b in block.blocks)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    svg = path.with_suffix(".svg")
    also = f" (SVG beside it: {svg.name})" if svg.exists() else ""
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.stem + also)}</figcaption></figure>")


def _timeline(block: Timeline) -> str:
    data = json.dumps({"rows": [{"side": side, "label": label, "ticks": list(ticks)}
                                for side, label, ticks in block.rows]}, separators=(",", ":"))
    note = (f" ({block.dropped:,} events beyond the first {TIMELINE_MAX_EVENTS:,} are in the "
            "PNG only)" if block.dropped else "")
    return (f"<div class='timeline' data-timeline='{html.escape(data)}'><canvas></canvas>"
            f"<p class='hint'>Zoom with the mouse wheel, drag to pan, double-click to reset; "
            f"guest rows blue, host rows orange{note}. The same timeline as a figure: "
            f"{html.escape(block.png.name)} (and .svg) beside this page.</p></div>")


def _html(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Banner):
        return f"<p class='banner'>{html.escape(block.text)}</p>"
    if isinstance(block, Text):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Items):
        return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Figure):
        return _img(block.png)
    if isinstance(block, Timeline):
        return _timeline(block)
    if isinstance(block, Table):
        if block.frame.empty:
            return f"<p><em>{html.escape(block.empty)}</em></p>"
        number = f"{{:.{block.digits}g}}".format
        return block.frame.to_html(index=False, float_format=number)
    inner = "".join(_html(b) for b in block.blocks)
    return f"<details><summary>{html.escape(block.summary)}</summary>{inner}</details>"


def html_page(title: str, blocks: list[Block]) -> str:
    body = f"<h1>{html.escape(title)}</h1>" + "".join(_html(b) for b in blocks)
    return (f"<!doctype html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"<script>{LOADED}{TIMELINE_JS}</script></head><body>{body}</body></html>")

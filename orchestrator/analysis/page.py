"""A report as a list of blocks, written once and rendered twice: Markdown and one
self-contained HTML file (figures embedded as data: URIs, so it can be mailed or archived and
opens offline).

Once every image has loaded, a tiny script sets `data-loaded="ok:<images>"` on the body (or
`broken:<decoded>`): the headless-browser test reads it; the tab's title names the runs.
"""

from __future__ import annotations

import base64
import html
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


Block = Heading | Text | Banner | Items | Figure | Table | Details

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px;line-height:1.4}"
         "table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
         ".banner{border-left:6px solid #c85200;background:#fff4e5;padding:.6em 1em}"
         "details{margin:.5em 0}summary{cursor:pointer}")
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
    if isinstance(block, Figure):
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
            f"<script>{LOADED}</script></head><body>{body}</body></html>")

"""Helpers of the site tests: a synthetic history with a planted step, a whole-site link and
image check."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.report.conftest import make_run, noisy

DAY = 86400.0
EMBEDDED = re.compile(r'src="data:image/png;base64,([^"]+)"')
FIRST_NIGHT = 1_790_000_000.0  # 2026-09-21 (UTC): any fixed night works


def env(kernel: str = "6.1.0") -> dict[str, Any]:
    return {"hostname": "", "kernel_release": kernel, "microcode": "0xa"}


def night_run(root: Path, host: str, night: int, *, suite: str = "nightly",
              factor: float = 1.0, kernel: str = "6.1.0", status: str = "done") -> Path:
    """One synthetic night of `suite` on host (fork_us of two cells; c-large scaled by factor),
    collected as <root>/<host>/<run_id>."""
    where = root / host
    where.mkdir(parents=True, exist_ok=True)
    return make_run(where, f"{host}-n{night:03d}", noisy(1000 * night + len(host), sigma=0.01,
                                                         slow_cell="c-large", factor=factor),
                    suite=suite, started=FIRST_NIGHT + night * DAY,
                    manifest={"host": {**env(kernel), "hostname": host}, "status": status})


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)
            if name == "id" and value:
                self.ids.add(value)


def parsed(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def broken_links(site: Path) -> list[str]:
    """Every relative href/src of every HTML page under site that reaches no file (or no
    element, for a #fragment into one of the site's pages)."""
    bad = []
    for page in sorted(site.rglob("*.html")):
        for target in parsed(page).targets:
            if target.startswith(("http:", "https:", "data:", "mailto:")):
                continue
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page.resolve()
            if not file.exists():
                bad.append(f"{page.relative_to(site)}: {target}")
            elif fragment and file.suffix == ".html" and fragment not in parsed(file).ids:
                bad.append(f"{page.relative_to(site)}: {target} (no such id)")
    return bad


def undecodable_images(site: Path) -> list[str]:
    """SVGs must parse as XML, PNGs must decode (matplotlib reads them)."""
    import matplotlib.image as mpimg

    bad = []
    for image in sorted(site.rglob("*.svg")):
        try:
            ET.parse(image)  # noqa: S314 - the site this test just wrote
        except ET.ParseError as exc:
            bad.append(f"{image}: {exc}")
    pngs: list[tuple[str, Any]] = [(str(p), p) for p in sorted(site.rglob("*.png"))]
    for page in sorted(site.rglob("*.html")):  # compare pages embed their figures
        pngs += [(f"{page}: embedded", io.BytesIO(base64.b64decode(data)))
                 for data in EMBEDDED.findall(page.read_text(encoding="utf-8"))]
    for name, image in pngs:
        try:
            mpimg.imread(image, format="png")
        except (OSError, ValueError, SyntaxError) as exc:
            bad.append(f"{name}: {exc}")
    return bad


def summary(site: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((site / "summary.json").read_text())
    return data


def mtimes(site: Path) -> dict[str, int]:
    return {str(p.relative_to(site)): os.stat(p).st_mtime_ns for p in site.rglob("*")
            if p.is_file() and not p.name.startswith(".")}

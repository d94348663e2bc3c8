"""The documentation stays connected and complete: every relative link in README.md, docs/*.md
and suites/README.md reaches an existing file (and heading), and docs/cli.md names every verb
and every option that `orchestrate --help` and each verb's `--help` list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "suites" / "README.md"]
CLI_DOC = ROOT / "docs" / "cli.md"

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
VERB_LINE = re.compile(r"^    ([a-z][a-z-]*)\b", re.MULTILINE)  # a verb in a parser's help
OPTION_LINE = re.compile(r"^  (?:-\w, )?(--[a-z][a-z-]*)", re.MULTILINE)


def prose(path: Path) -> str:
    """The file without its fenced code blocks (their brackets are YAML, not links)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(prose(path))}


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", t)]


def test_the_documents_exist() -> None:
    assert CLI_DOC.is_file()
    assert all(p.is_file() for p in DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_every_doc() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"docs not linked from README.md: {missing}"


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def subverbs(text: str) -> list[str]:
    """The verbs a parser's help lists under its positional arguments."""
    section = text.split("positional arguments:", 1)[-1].split("options:", 1)[0]
    return VERB_LINE.findall(section) if "positional arguments:" in text else []


def test_cli_doc_names_every_verb_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    doc = CLI_DOC.read_text(encoding="utf-8")
    verbs = subverbs(help_text(capsys))
    assert {"run", "results", "report", "compare"} <= set(verbs)  # the parse found them
    missing = []
    for verb in verbs:
        commands = [[verb]]
        nested = subverbs(help_text(capsys, verb))
        commands += [[verb, sub] for sub in nested]
        for command in commands:
            named = "orchestrate " + " ".join(command)
            if named not in doc:
                missing.append(named)
            for option in OPTION_LINE.findall(help_text(capsys, *command)):
                if option != "--help" and option not in doc:
                    missing.append(f"{named} {option}")
    assert not missing, f"docs/cli.md does not mention: {missing}"

"""Reading a suite file: YAML with line numbers in, a validated Suite or one clear error out.

Errors look like `suite.yaml:12:5: workloads[0].params.pages[1]: what is wrong (hint: ...)`,
pointing at the YAML node that pydantic complained about.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from orchestrator.errors import BadInput
from orchestrator.suite import WORKLOAD_KINDS, RequestedMode, Suite


@dataclass(frozen=True)
class LoadedSuite:
    suite: Suite
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def resolved(self) -> dict[str, Any]:
        """The suite with every default filled in, as JSON-able data (for the manifest)."""
        data: dict[str, Any] = json.loads(self.suite.model_dump_json())
        return data


def load_suite(path: Path) -> LoadedSuite:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file", hint="check the path to the suite") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory", hint="give the suite's .yaml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read it ({exc})", hint="is it a text file?") from None
    return parse_suite(text, path)


def parse_suite(text: str, path: Path) -> LoadedSuite:
    tree = _parse_yaml(text, path)
    if not isinstance(tree, CommentedMap):
        what = "empty" if tree is None else ("a list" if isinstance(tree, list) else "a scalar")
        raise BadInput(f"{path}:1:1: the suite is {what}, not a mapping",
                       hint="a suite starts with keys like `name:`, `paging:`, `workloads:`")
    try:
        suite = Suite.model_validate(_plain(tree))
    except ValidationError as exc:
        raise _first_error(exc, tree, path) from None
    return LoadedSuite(suite, path, text)


def _parse_yaml(text: str, path: Path) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        problem = (exc.problem or exc.context or "YAML syntax error").strip()
        raise BadInput(f"{path}:{where}: YAML: {problem}",
                       hint="check indentation, colons and quotes near that line") from None
    except YAMLError as exc:
        raise BadInput(f"{path}:1:1: YAML: {exc}", hint="is this a YAML file?") from None


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers to plain dicts/lists (pydantic wants plain data)."""
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def _first_error(exc: ValidationError, tree: CommentedMap, path: Path) -> BadInput:
    error = exc.errors()[0]
    where = error["loc"]
    if error["type"] == "union_tag_invalid":
        where = (*where, "kind")  # point at the bad `kind:` value, not at the whole item
    line, col, loc = _locate(tree, where, at_key=error["type"] == "extra_forbidden")
    message = _message(error)
    more = exc.error_count() - 1
    suffix = f" [+{more} more]" if more else ""
    return BadInput(f"{path}:{line}:{col}: {loc}: {message}{suffix}", hint=_hint(error, loc))


def _locate(tree: CommentedMap, loc: tuple[int | str, ...], *,
            at_key: bool = False) -> tuple[int, int, str]:
    """Walk the YAML tree along pydantic's error location; return the deepest node's position."""
    node: Any = tree
    line, col = 1, 1
    shown: list[str] = []
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            # a scalar's own position (the wrong value); a nested block's key otherwise
            scalar = not at_key and not isinstance(node[part], CommentedMap | CommentedSeq)
            pos = node.lc.value(part) if scalar else node.lc.key(part)
            line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
            shown.append(f".{part}" if shown else str(part))
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line, col = node.lc.item(part)[0] + 1, node.lc.item(part)[1] + 1
            node = node[part]
            shown.append(f"[{part}]")
        elif isinstance(node, CommentedMap | CommentedSeq):
            # the tag of a union member ("fork-dirty") or a validator's own name: not a node
            continue
        # a missing key: the position stays on its parent
    return line, col, "".join(shown) or "(top level)"


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    msg = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _hint(error: ErrorDetails, loc: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "check the spelling; `orchestrate validate --help` lists the suite keys"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"kind must be one of: {', '.join(WORKLOAD_KINDS)}"
    if loc.startswith("paging"):
        return f"paging modes are: {', '.join(m.value for m in RequestedMode)}"
    if kind == "missing":
        return "add the key; see the suite reference in README.md"
    return "see the suite reference in README.md"

"""Reading a suite file: YAML with line numbers in, a validated Suite or clear errors out.

Each error is one line, `suite.yaml:12:5: workloads[0].params.pages[1]: what is wrong`,
pointing at the YAML node it is about; every error is listed, and one hint follows the last.

The file is hostile until checked: before the YAML becomes a tree its events are scanned for
alias bombs, absurd nesting and numbers of thousands of digits; after the model has validated
it, what it would make is counted, not built (points and trials against a budget), and what
it would allocate is compared with the memory of the guests and of this host.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    ScalarEvent,
)
from ruamel.yaml.parser import RoundTripParser
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from orchestrator.errors import BadInput
from orchestrator.suite.plan import points_per_target, targets
from orchestrator.suite.schema import WORKLOAD_KINDS, ImageKind, RequestedMode, Suite, WorkloadBase
from orchestrator.suite.units import MAX_INT64, format_size

MEMINFO = Path("/proc/meminfo")
# A suite is a page of YAML; a megabyte already holds a written-out sweep of 100,000 values.
# Reading stops there, so `validate /dev/zero` ends too.
MAX_SUITE_CHARS = 1 << 20
MAX_DEPTH = 32  # suites nest 4 deep; the YAML composer recurses per level
# Nodes that aliases may add to the document: sharing a guest's settings costs tens, a
# billion-laughs bomb 10^9 (a 410-byte one ran 20 s and took 728 MB before this check).
MAX_ALIAS_NODES = 100_000
# A numeral longer than this is beyond 64 bits; int() of thousands of digits even raises.
MAX_NUMERAL_CHARS = 40
_NUMERAL = re.compile(r"[-+]?(?:0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*)\Z")
MAX_LISTED = 100  # errors listed; a hostile file can make one per value

# The plan's size is refused beyond these (environment variables raise them; settings.py reads
# them at the edge and the caller passes its settings as the budget).
POINTS_ENV, DEFAULT_MAX_POINTS = "ORCH_MAX_POINTS", 100_000
TRIALS_ENV, DEFAULT_MAX_TRIALS = "ORCH_MAX_TRIALS", 1_000_000
# Left to the kernel, the guest's own services and the harness when a workload's memory is
# compared with a guest's (the mini image's initramfs lives in RAM) or with this host's.
HEADROOM = 256 << 20


class Budget(Protocol):
    """The largest plan a suite may make (a command's Settings is one)."""

    @property
    def max_points(self) -> int: ...
    @property
    def max_trials(self) -> int: ...


@dataclass(frozen=True)
class _Defaults:
    max_points: int = DEFAULT_MAX_POINTS
    max_trials: int = DEFAULT_MAX_TRIALS


DEFAULT_BUDGET: Budget = _Defaults()  # for a caller that passes no budget


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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a suite, at a pydantic-style location in its tree."""

    loc: tuple[int | str, ...]
    message: str
    hint: str
    at_key: bool = False  # point at the key, not its value (an unknown key)
    # the node's only error: _plain handed pydantic None for it, whose complaint is an echo
    sole: bool = False


def load_suite(path: Path, *, meminfo: Path = MEMINFO,
               budget: Budget = DEFAULT_BUDGET) -> LoadedSuite:
    return parse_suite(_read(path), path, meminfo=meminfo, budget=budget)


def _read(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as fh:
            text = fh.read(MAX_SUITE_CHARS + 1)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file", hint="check the path to the suite") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory", hint="give the suite's .yaml file") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError, or a NUL byte in the path
        raise BadInput(f"{path}: cannot read it ({exc})", hint="is it a text file?") from None
    return text


def parse_suite(text: str, path: Path, *, meminfo: Path = MEMINFO,
                budget: Budget = DEFAULT_BUDGET) -> LoadedSuite:
    """The validated suite, or BadInput listing every error found (one per line)."""
    if len(text) > MAX_SUITE_CHARS:
        raise BadInput(f"{path}:1:1: the suite is over {MAX_SUITE_CHARS:,} characters long",
                       hint="a suite is a page of YAML: sweep fewer written-out values")
    tree = _parse_yaml(text, path)
    if not isinstance(tree, CommentedMap):
        what = "empty" if tree is None else ("a list" if isinstance(tree, list) else "a scalar")
        raise BadInput(f"{path}:1:1: the suite is {what}, not a mapping",
                       hint="a suite starts with keys like `name:`, `paging:`, `workloads:`")
    problems: list[Problem] = []
    data = _plain(tree, (), problems)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise _refusal([*problems, *map(_problem, exc.errors())], tree, path) from None
    if not problems:
        problems = [*_unknown_images(suite, path.parent, _imported(budget)),
                    *_too_big(suite, meminfo),
                    *_over_budget(suite, budget)]
    if problems:
        raise _refusal(problems, tree, path)
    return LoadedSuite(suite, path, text)


# ---- YAML: scanned before it is built -------------------------------------------------------


def _parse_yaml(text: str, path: Path) -> Any:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Parser = _GuardedParser
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reused anchor name: valid YAML, not our business
            return yaml.load(text)
    except _Refused as exc:
        mark = exc.event.start_mark
        raise BadInput(f"{path}:{mark.line + 1}:{mark.column + 1}: YAML: {exc.message}",
                       hint=exc.hint) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        problem = (exc.problem or exc.context or "YAML syntax error").strip()
        raise BadInput(f"{path}:{where}: YAML: {problem}",
                       hint="check indentation, colons and quotes near that line") from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise BadInput(f"{path}:{line}:{col}: YAML: character {exc.character!r} is not allowed",
                       hint="write it as an escape in a double-quoted string") from None
    except YAMLError as exc:
        raise BadInput(f"{path}:1:1: YAML: {exc}", hint="is this a YAML file?") from None
    except Exception as exc:  # ruamel's own, e.g. a ValueError for !!timestamp 2024-13-45
        # the parser read user input and nothing else: whatever it raises is about that input
        raise BadInput(f"{path}:1:1: YAML: cannot read it ({type(exc).__name__}: "
                       f"{str(exc)[:200]})", hint="check explicit tags like !!int") from None


class _Refused(Exception):
    def __init__(self, event: Event, message: str, hint: str) -> None:
        super().__init__(message)
        self.event, self.message, self.hint = event, message, hint


class _GuardedParser(RoundTripParser):
    """ruamel's round-trip parser, each event checked before the composer builds with it.

    So an alias bomb, absurd nesting or a numeral of thousands of digits is refused at its
    line while the tree is still small (aliases stay shared references until _plain).
    """

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        self.sizes: dict[str, int] = {}  # anchor -> nodes it stands for, aliases expanded
        self.open: list[tuple[str | None, list[int]]] = []  # collections: anchor, nodes so far
        self.added = 0  # nodes the aliases add

    def get_event(self) -> Any:
        event = super().get_event()
        if isinstance(event, CollectionStartEvent):
            if len(self.open) >= MAX_DEPTH:
                raise _Refused(event, f"nested more than {MAX_DEPTH} levels deep",
                               "a suite nests a few levels: check the brackets")
            self.open.append((event.anchor, [1]))
        elif isinstance(event, CollectionEndEvent):
            anchor, (size,) = self.open.pop()
            self._count(anchor, size)
        elif isinstance(event, ScalarEvent):
            _check_numeral(event)
            self._count(event.anchor, 1)
        elif isinstance(event, AliasEvent):
            self._count(None, self._alias_size(event))
        return event

    def _count(self, anchor: str | None, size: int) -> None:
        if anchor is not None:
            self.sizes[anchor] = size
        if self.open:
            self.open[-1][1][0] += size

    def _alias_size(self, event: AliasEvent) -> int:
        if any(anchor == event.anchor for anchor, _ in self.open):
            raise _Refused(event, f"*{event.anchor} refers to a node that contains it",
                           "an alias must not point into its own anchor")
        size = self.sizes.get(str(event.anchor), 1)  # an undefined one: the composer names it
        self.added += size
        if self.added > MAX_ALIAS_NODES:
            raise _Refused(event, f"the aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                           f"(*{event.anchor} is {size:,})",
                           "write the values out, or share smaller anchors")
        return size


def _check_numeral(event: ScalarEvent) -> None:
    tag = str(event.tag or "")
    plain = event.style is None and not tag
    if (plain or tag.endswith(":int")) and len(event.value) > MAX_NUMERAL_CHARS \
            and _NUMERAL.match(event.value.strip()):
        raise _Refused(event, f"a number of {len(event.value):,} characters is beyond 64 bits",
                       "numbers in a suite fit in 64 bits")


# ---- the tree as plain data for pydantic ----------------------------------------------------


def _plain(node: Any, loc: tuple[int | str, ...], problems: list[Problem]) -> Any:
    """ruamel's round-trip containers and scalars to plain Python (what pydantic expects).

    Numbers beyond 64 bits and strings that are not valid Unicode become problems here
    (and None in the data), so nothing downstream ever sees them.
    """
    if isinstance(node, CommentedMap):
        plain = {}
        for index, (key, value) in enumerate(node.items()):
            word = _key(key, index)
            if not _is_word(key):
                problems.append(Problem((*loc, word), "a key must be a word, not a list, a "
                                        "mapping or a huge number", "keys are the names in the "
                                        "suite reference, docs/suite.md", at_key=True, sole=True))
            plain[word] = _plain(value, (*loc, word), problems)
        return plain
    if isinstance(node, CommentedSeq):
        return [_plain(v, (*loc, i), problems) for i, v in enumerate(node)]
    if isinstance(node, bool | ScalarBoolean):  # ScalarBoolean is an int, not a bool
        return bool(node)
    if isinstance(node, int | float):
        if abs(node) > MAX_INT64:
            problems.append(Problem(loc, f"a number beyond 64 bits (at most {MAX_INT64})",
                                    "numbers in a suite fit in 64 bits", sole=True))
            return None
        return int(node) if isinstance(node, int) else float(node)
    if isinstance(node, str):
        if not _valid_unicode(node):
            problems.append(Problem(loc, "the string holds a lone surrogate (\\ud800-\\udfff)",
                                    "write the character itself, not half of it", sole=True))
            return None
        return str(node)
    return node


def _key(key: Any, index: int) -> str:
    """The key as pydantic sees it; a list, mapping or huge number as a stand-in naming it."""
    return str(key) if _is_word(key) else f"(key #{index + 1})"


def _is_word(key: Any) -> bool:
    # str() of an int of thousands of digits raises, and of a list is no name at all
    return isinstance(key, str | bool | float | None) or (
        isinstance(key, int) and abs(key) <= MAX_INT64)


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- errors: located, every one listed, one hint -------------------------------------------


def _problem(error: ErrorDetails) -> Problem:
    loc = error["loc"]
    if error["type"] == "union_tag_invalid":
        loc = (*loc, "kind")  # point at the bad `kind:` value, not at the whole item
    return Problem(loc, _message(error), _hint(error, _shown_loc(loc)),
                   at_key=error["type"] == "extra_forbidden")


def _refusal(problems: list[Problem], tree: CommentedMap, path: Path) -> BadInput:
    """One BadInput for all problems: a line each, in file order, the first one's hint last."""
    found: dict[tuple[int, int, str, str], str] = {}  # (line, col, loc, message) -> hint
    sole: set[tuple[int, int, str]] = set()
    for problem in problems:
        where = _locate(tree, problem.loc, at_key=problem.at_key)
        if where not in sole:
            found.setdefault((*where, problem.message), problem.hint)
        if problem.sole:
            sole.add(where)
    ordered = sorted(found.items(), key=lambda item: item[0][:2])  # stable: same node, as found
    text = [f"{path}:{line}:{col}: {loc}: {message}"
            for (line, col, loc, message), _ in ordered[:MAX_LISTED]]
    if len(ordered) > MAX_LISTED:
        text.append(f"{path}: ... and {len(ordered) - MAX_LISTED} more errors")
    return BadInput("\n".join(text), hint=ordered[0][1])


def _locate(tree: CommentedMap, loc: tuple[int | str, ...], *,
            at_key: bool = False) -> tuple[int, int, str]:
    """Walk the YAML tree along pydantic's error location; return the deepest node's position."""
    node: Any = tree
    line, col = 1, 1
    shown: list[int | str] = []
    for part in loc:
        if isinstance(node, CommentedMap) and (key := _find_key(node, part)) is not None:
            # a scalar's own position (the wrong value); a nested block's key otherwise
            scalar = not at_key and not isinstance(node[key], CommentedMap | CommentedSeq)
            pos = node.lc.value(key) if scalar else node.lc.key(key)
            line, col = pos[0] + 1, pos[1] + 1
            node = node[key]
            shown.append(part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line, col = node.lc.item(part)[0] + 1, node.lc.item(part)[1] + 1
            node = node[part]
            shown.append(part)
        # else: the tag of a union member ("fork-dirty"), a validator's own name, or a missing
        # key (the position stays on its parent)
    return line, col, _shown_loc(tuple(shown))


def _find_key(node: CommentedMap, part: int | str) -> Any:
    """The tree's key that pydantic's location names (keys were str()-ed for pydantic)."""
    if isinstance(part, str) and part in node:
        return part
    return next((k for i, k in enumerate(node) if _key(k, i) == str(part)), None)


def _shown_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            word = part if len(part) <= 40 else part[:40] + "..."
            text += f".{word}" if text else word
    return text or "(top level)"


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in ("extra_forbidden", "missing"):
        key = str(error["loc"][-1])
        shown = repr(key) if len(key) <= 40 else repr(key[:40]) + "..."
        return f"unknown key {shown}" if kind == "extra_forbidden" else \
            f"missing required key {shown}"
    msg = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _hint(error: ErrorDetails, loc: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "check the spelling; docs/suite.md lists the suite keys"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"kind must be one of: {', '.join(WORKLOAD_KINDS)}"
    if kind == "missing":
        return "add the key; see the suite reference in docs/suite.md"
    if loc.startswith("paging"):
        return f"paging modes are: {', '.join(m.value for m in RequestedMode)}"
    return "see the suite reference in docs/suite.md"


# ---- what a valid suite would make: checked by arithmetic, before anything is built ----------


# an image brought by the user: an imported one's name (in the command's image cache) or a
# disk file's path
DISK_SUFFIXES = (".qcow2", ".img", ".raw")


def _imported(budget: Budget) -> list[str]:
    """The names of the images imported into the command's image cache (a Settings has one:
    `cloud/NAME/image.json`, guests/cloud_image.py); none for a caller without a cache."""
    cache = getattr(budget, "image_cache", None)
    if not isinstance(cache, Path):
        return []
    return sorted(p.parent.name for p in (cache / "cloud").glob("*/image.json"))


def _unknown_images(suite: Suite, base: Path, imported: list[str]) -> list[Problem]:
    problems = []
    for name, guest in suite.guests.items():
        problem = _image_problem(guest.image, base, imported)
        if problem:
            problems.append(Problem(("guests", name, "image"), *problem))
    return problems


def _image_problem(ref: str, base: Path, imported: list[str]) -> tuple[str, str] | None:
    """(message, hint) when `image:` names neither a built image, an imported one, nor a
    disk file that exists."""
    known = [kind.value for kind in ImageKind] + imported
    if ref in known:
        return None
    if "/" in ref or ref.endswith(DISK_SUFFIXES):
        path = Path(ref).expanduser()
        path = path if path.is_absolute() else base / path
        if not ref.endswith(DISK_SUFFIXES):
            return f"image {ref[:60]!r} is not a .qcow2, .img or .raw file", \
                "name a disk image file, or an imported image"
        if not path.is_file():
            return f"image file {str(path)[:80]!r} does not exist", \
                "paths are relative to the suite's directory"
        return None
    return f"unknown image {ref[:40]!r}", \
        f"images: {', '.join(known)}; or `orchestrate image import NAME FILE`, or a disk path"


def _too_big(suite: Suite, meminfo: Path) -> list[Problem]:
    """Workloads whose largest point cannot fit where it runs: a guest, or natively this host."""
    places = _memory_places(suite, meminfo)
    problems: list[Problem] = []
    for index, workload in enumerate(suite.workloads):
        params = getattr(workload, "params")  # noqa: B009 - every kind has params
        need, param = params.peak_bytes(), params.sized_by
        if not places or param is None or need == 0:
            continue
        where, total = min(places, key=lambda place: place[1])
        if need > total - HEADROOM:
            values = getattr(params, param)
            problems.append(Problem(
                ("workloads", index, "params", param, values.index(max(values))),
                f"the largest point needs {_bytes(need)} of memory, more than {where} can "
                f"spare ({_bytes(total)} less {_bytes(HEADROOM)} for its kernel and the harness)",
                "sweep smaller sizes, or give the guest more `memory`"))
    return problems


def _memory_places(suite: Suite, meminfo: Path) -> list[tuple[str, int]]:
    """(where, bytes) for every place a workload runs in: each guest, and natively the host."""
    places = []
    if any(mode is not RequestedMode.NATIVE for mode in suite.paging):
        places = [(f"guest {name!r}", guest.memory) for name, guest in suite.guests.items()]
    host = _host_memory(meminfo)
    if RequestedMode.NATIVE in suite.paging and host is not None:
        places.append(("this host (native mode)", host))
    return places


def _host_memory(meminfo: Path) -> int | None:
    """MemTotal in bytes, or None where there is no /proc/meminfo to read."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+([0-9]+) kB", text, re.MULTILINE)
    return int(match.group(1)) << 10 if match else None


def _bytes(n: int) -> str:
    if n % (1 << 20) == 0:
        return format_size(n)
    return f"{n / (1 << 30):,.1f}GiB" if n >= 1 << 30 else f"{math.ceil(n / (1 << 20)):,}MiB"


def _over_budget(suite: Suite, budget: Budget) -> list[Problem]:
    """The workload that takes the suite's points, or its trials, past the budget."""
    places = len(targets(suite))
    points = [points_per_target(w) * places for w in suite.workloads]
    trials = [p * (w.max_trials + w.warmup) for p, w in zip(points, suite.workloads, strict=True)]
    problems = []
    for what, made, env, default, limit in (
            ("points", points, POINTS_ENV, DEFAULT_MAX_POINTS, budget.max_points),
            ("trials", trials, TRIALS_ENV, DEFAULT_MAX_TRIALS, budget.max_trials)):
        running = list(itertools.accumulate(made))
        index = next((i for i, total in enumerate(running) if total > limit), None)
        if index is not None:
            workload = suite.workloads[index]
            why = (_sweep_sizes(workload, places) if what == "points" else
                   f"{points[index]:,} x {workload.max_trials + workload.warmup:,} trials "
                   "per point")
            problems.append(Problem(
                ("workloads", index),
                f"{workload.name!r} makes {made[index]:,} {what} ({why}): the suite would make "
                f"{running[index]:,}, over the limit of {limit:,}",
                f"sweep fewer values, or raise ${env} (default {default:,})"))
    return problems


def _sweep_sizes(workload: WorkloadBase, places: int) -> str:
    params = getattr(workload, "params")  # noqa: B009 - every kind has params
    swept = [f"{len(values):,} {name}" for name in type(params).model_fields
             if len(values := getattr(params, name)) > 1]
    return f"{' x '.join(swept) or '1 point'} in each of {places} mode/guest pairs"

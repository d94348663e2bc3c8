"""Hostile and absurd suites are refused at `validate` with FILE:LINE:COL, exit 2, no traceback,
before anything is expanded: alias bombs, sweeps beyond the budget, memory that cannot fit,
durations and numbers beyond any use, kernel command lines the kernel cannot take, unknown
images, event names perf would misread; and whatever else parse_suite is fed, only BadInput
ever escapes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import BadInput
from orchestrator.guests.guest import BASE_CMDLINE
from orchestrator.guests.ssh import kernel_key_arg
from orchestrator.settings import Settings
from orchestrator.suite.loader import (
    DEFAULT_MAX_POINTS,
    DEFAULT_MAX_TRIALS,
    MAX_ALIAS_NODES,
    MAX_SUITE_CHARS,
    POINTS_ENV,
    TRIALS_ENV,
    LoadedSuite,
    load_suite,
    parse_suite,
)
from orchestrator.suite.plan import make_plan
from orchestrator.suite.schema import (
    CMDLINE_MAX,
    KERNEL_CMDLINE_MAX,
    ImageKind,
    RequestedMode,
    Suite,
)
from orchestrator.suite.units import MAX_INT64

BASE = """\
name: hostile
paging: [native, tdp]
guests:
  small: {image: mini, memory: 1GiB}
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: [1280, 12800]}
"""

# the classic billion laughs, 9 levels of 9: 10^9 strings once expanded, ~410 bytes of YAML
BOMB = "name: bomb\npaging: [native]\n" + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
) + "workloads: *i\n"


def sweep(values: range) -> str:
    return "[" + ", ".join(map(str, values)) + "]"


# 10,000 pages x 500 densities x 2 = 10^7 points per target: planning this ran out of memory
TEN_MILLION = BASE.replace("{pages: [1280, 12800]}",
                           f"{{pages: {sweep(range(1, 10_001))}, "
                           f"ptes_per_table: {sweep(range(1, 501))}, cow: [false, true]}}")


@pytest.fixture()
def no_budget_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POINTS_ENV, raising=False)
    monkeypatch.delenv(TRIALS_ENV, raising=False)


@pytest.fixture()
def meminfo(tmp_path: Path) -> Path:
    """A host with 64 GiB, so the native checks do not depend on the machine running this."""
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       {64 << 20} kB\nMemFree:        1000 kB\n")
    return path


def parse(text: str, meminfo: Path) -> LoadedSuite:
    """As a command parses it: with the budget its edge read from the environment."""
    return parse_suite(text, Path("suite.yaml"), meminfo=meminfo,
                       budget=Settings.from_environ(os.environ))


def error_of(text: str, meminfo: Path) -> str:
    with pytest.raises(BadInput) as info:
        parse(text, meminfo)
    return info.value.one_line()


# ---- through the CLI, as a user meets them ---------------------------------------------------


@dataclass(frozen=True)
class Validated:
    code: int
    stderr: str
    maxrss_mib: float


def validate(path: Path, verb: str = "validate", env: dict[str, str] | None = None) -> Validated:
    """`orchestrate VERB PATH` in a child process, with that child's own peak memory."""
    err = path.with_suffix(".stderr")
    with err.open("w") as fh:
        child = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *verb.split(), str(path)],
                                 stdout=subprocess.DEVNULL, stderr=fh,
                                 env={**os.environ, **(env or {})})
        guard = threading.Timer(300, child.kill)  # only so that a hang cannot stall the suite
        guard.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)  # this child's rusage, not all children's
        finally:
            guard.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
    return Validated(child.returncode, err.read_text(), usage.ru_maxrss / 1024)


@pytest.fixture(scope="module")
def baseline_mib(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Peak memory of validating a small good suite: the CLI's own imports."""
    path = tmp_path_factory.mktemp("baseline") / "suite.yaml"
    path.write_text(BASE)
    done = validate(path)
    assert done.code == 0, done.stderr
    return done.maxrss_mib


def assert_refused(done: Validated, path: Path, line: int) -> None:
    assert done.code == 2, done.stderr
    assert done.stderr.startswith(f"orchestrate: error: {path}:{line}:"), done.stderr
    assert "Traceback" not in done.stderr


def test_billion_laughs_is_refused_at_its_alias_in_little_memory(tmp_path: Path,
                                                                  baseline_mib: float) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 500
    done = validate(path)
    # 9^5 nodes stand behind *e: with those of line 8's first aliases, past the budget
    assert_refused(done, path, 8)
    assert f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes" in done.stderr
    # before the check this took 728 MB; a refusal costs no more than a good suite
    assert done.maxrss_mib < baseline_mib + 64, (done.maxrss_mib, baseline_mib)


@pytest.mark.parametrize("verb", ["validate", "plan --json"])
def test_ten_million_points_are_refused_before_planning(tmp_path: Path, baseline_mib: float,
                                                        verb: str) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(TEN_MILLION)
    done = validate(path, verb, env={POINTS_ENV: "", TRIALS_ENV: ""})
    assert_refused(done, path, 6)  # the workload's `- name: fork`
    # 10^7 per target: natively and in the one guest under tdp
    assert "'fork' makes 20,000,000 points (10,000 pages x 500 ptes_per_table x 2 cow in each " \
           "of 2 mode/guest pairs)" in done.stderr
    assert f"over the limit of {DEFAULT_MAX_POINTS:,}" in done.stderr
    assert f"${POINTS_ENV}" in done.stderr
    assert done.maxrss_mib < baseline_mib + 64, (done.maxrss_mib, baseline_mib)


@pytest.mark.parametrize(
    ("name", "text", "line", "expected"),
    [
        ("recursive-alias", BASE + "trace: &t {host: [*t]}\n", 9, "refers to a node that contains it"),
        ("deep", BASE + "description: " + "[" * 5000 + "]" * 5000 + "\n", 9, "nested more than"),
        ("huge-numeral", BASE.replace("[1280, 12800]", "[1" + "0" * 5000 + "]"), 8, "beyond 64 bits"),
        ("guest-memory", BASE.replace("12800]", "300000]"), 8, "more than guest 'small' can spare"),
        ("host-memory", BASE.replace("[native, tdp]", "[native]").replace("12800]", str(1 << 45) + "]"),
         8, "more than this host (native mode) can spare"),
        ("timeout", BASE + "    timeout: 1e308s\n", 9, "cannot read duration '1e308s'"),
        ("boot", BASE + "timeouts: {boot: 99999999999999999999h}\n", 9, "longer than the limit of 7 days"),
        ("int64", BASE + "    trials: 9223372036854775808\n", 9, "a number beyond 64 bits"),
        ("cmdline-control", BASE.replace("memory: 1GiB", 'memory: 1GiB, cmdline: "a\\x01b"'), 4,
         "control character"),
        ("cmdline-long", BASE.replace("memory: 1GiB", f"memory: 1GiB, cmdline: {'x' * 3000}"), 4,
         f"over the {CMDLINE_MAX} left for it"),
        ("image", BASE.replace("image: mini", "image: ubuntu"), 4, "unknown image 'ubuntu'"),
        ("event-newline", BASE + 'trace: {host: ["kvm:kvm_exit\\n"]}\n', 9, "is not an event name"),
        ("event-dash", BASE + 'trace: {guest: ["-e"]}\n', 9, "is not an event name"),
        ("timestamp", BASE + "description: !!timestamp 2024-13-45\n", 1, "cannot read it"),
        ("surrogate", BASE + 'description: "\\ud800"\n', 9, "lone surrogate"),
        ("control-char", BASE + "description: a\x07b\n", 9, "is not allowed"),
    ],
)
def test_absurd_files_are_refused_with_their_line(tmp_path: Path, name: str, text: str, line: int,
                                                  expected: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    done = validate(path)
    assert_refused(done, path, line)
    assert expected in done.stderr


# ---- the same rules, in detail ----------------------------------------------------------------


def test_a_shared_anchor_within_the_budget_is_fine(meminfo: Path) -> None:
    text = BASE.replace("  small: {image: mini, memory: 1GiB}\n",
                        "  small: &g {image: mini, memory: 1GiB}\n  other: *g\n")
    suite = parse(text, meminfo).suite
    assert suite.guests["other"] == suite.guests["small"]


def test_nesting_is_refused_at_its_line_not_by_the_interpreters_stack(meminfo: Path) -> None:
    message = error_of(BASE + "trace:\n  host: " + "[" * 100 + "]" * 100 + "\n", meminfo)
    assert message.startswith("suite.yaml:10:")
    assert "nested more than" in message


def test_budget_counts_every_mode_and_guest(meminfo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 points x (native + 2 virtual modes x 2 guests) = 10 points, x 3 trials = 30 trials
    text = BASE.replace("[native, tdp]", "[native, tdp, shadow]").replace(
        "  small: {image: mini, memory: 1GiB}\n",
        "  small: {image: mini, memory: 1GiB}\n  other: {image: mini, memory: 1GiB}\n",
    ) + "    trials: 2\n"
    monkeypatch.setenv(POINTS_ENV, "10")
    monkeypatch.setenv(TRIALS_ENV, "30")
    counts = make_plan(parse(text, meminfo).suite).counts()
    assert (counts["points"], counts["trials"]) == (10, 30)
    monkeypatch.setenv(POINTS_ENV, "9")
    assert "makes 10 points" in error_of(text, meminfo)
    monkeypatch.setenv(POINTS_ENV, "10")
    monkeypatch.setenv(TRIALS_ENV, "29")
    message = error_of(text, meminfo)
    assert "makes 30 trials (10 x 3 trials per point)" in message
    assert f"raise ${TRIALS_ENV} (default {DEFAULT_MAX_TRIALS:,})" in message


def test_the_workload_that_crosses_the_budget_is_named(meminfo: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + "  - name: second\n    kind: noop\n"
    monkeypatch.setenv(POINTS_ENV, "5")  # fork makes 4 points, second 2 more
    message = error_of(text, meminfo)
    assert message.startswith("suite.yaml:9:5: workloads[1]: 'second' makes 2 points")
    assert "the suite would make 6" in message


@pytest.mark.parametrize("value", ["many", "0", "-1", "1e6", "99999999999999999999"])
def test_a_bad_budget_variable_is_bad_input(meminfo: Path, monkeypatch: pytest.MonkeyPatch,
                                            value: str) -> None:
    monkeypatch.setenv(POINTS_ENV, value)
    message = error_of(BASE, meminfo)
    assert message.startswith(f"{POINTS_ENV}=")
    assert "\n" not in message


@st.composite
def suites(draw: st.DrawFn) -> dict[str, Any]:
    guests = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))
    workloads = [{"name": f"w{i}", "kind": "fault", "trials": draw(st.integers(1, 3)),
                  "warmup": draw(st.integers(0, 2)),
                  "params": {"pages": draw(st.lists(st.integers(1, 99), min_size=1, max_size=3,
                                                    unique=True)),
                             "order": draw(st.sampled_from([["seq"], ["seq", "random"]]))}}
                 for i in range(draw(st.integers(1, 3)))]
    modes = draw(st.lists(st.sampled_from([m.value for m in RequestedMode]), min_size=1,
                          max_size=4, unique=True))
    return {"name": "p", "paging": modes, "guests": {g: {} for g in guests},
            "workloads": workloads}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suites())
def test_the_budget_counts_what_the_plan_makes(meminfo: Path, monkeypatch: pytest.MonkeyPatch,
                                               data: dict[str, Any]) -> None:
    """Counted by arithmetic, the budget agrees with the expanded plan to the point."""
    counts = make_plan(Suite.model_validate(data)).counts()
    text = json.dumps(data)
    monkeypatch.setenv(POINTS_ENV, str(counts["points"]))
    monkeypatch.setenv(TRIALS_ENV, str(counts["trials"]))
    parse(text, meminfo)  # exactly at both limits
    for env, total in ((POINTS_ENV, counts["points"]), (TRIALS_ENV, counts["trials"])):
        if total > 1:
            monkeypatch.setenv(env, str(total - 1))
            assert f"the suite would make {total:,}, over the limit of {total - 1:,}" in \
                error_of(text, meminfo)
            monkeypatch.setenv(env, str(total))


def test_memory_fits_up_to_the_headroom(meminfo: Path) -> None:
    # 1 GiB less 256 MiB leaves 768 MiB: 195,000 pages fit (767 MiB with parent's and
    # child's page tables), 196,000 do not (769 MiB)
    parse(BASE.replace("12800]", "195000]"), meminfo)
    message = error_of(BASE.replace("12800]", "196000]"), meminfo)
    assert message.startswith("suite.yaml:8:28: workloads[0].params.pages[1]: the largest point "
                              "needs 769MiB of memory, more than guest 'small' can spare "
                              "(1GiB less 256MiB")


def test_copy_on_write_doubles_what_fork_dirty_needs(meminfo: Path) -> None:
    text = BASE.replace("[1280, 12800]", "[100000]")  # 391 MiB: fits once, not twice
    parse(text, meminfo)
    message = error_of(text.replace("[100000]", "[100000], cow: [false, true]"), meminfo)
    assert "workloads[0].params.pages[0]: the largest point needs 783MiB" in message


def test_the_smallest_guest_is_the_limit(meminfo: Path) -> None:
    text = BASE.replace("  small: {image: mini, memory: 1GiB}\n",
                        "  big: {image: mini, memory: 8GiB}\n  small: {image: mini, memory: 1GiB}\n"
                        ).replace("12800]", "1000000]")
    assert "more than guest 'small' can spare" in error_of(text, meminfo)


def test_hugepage_size_is_checked_against_the_guest(meminfo: Path) -> None:
    text = BASE.replace("kind: fork-dirty", "kind: hugepage").replace(
        "{pages: [1280, 12800]}", "{size: [64MiB, 2GiB]}")
    message = error_of(text, meminfo)
    assert message.startswith("suite.yaml:8:28: workloads[0].params.size[1]: the largest point "
                              "needs 2GiB of memory")


def test_guests_that_no_mode_boots_do_not_limit(meminfo: Path) -> None:
    text = BASE.replace("[native, tdp]", "[native]").replace("12800]", "1000000]")
    parse(text, meminfo)  # 3.8 GiB natively on a 64 GiB host; the 1 GiB guest never boots


def test_native_is_checked_against_this_hosts_memory(tmp_path: Path) -> None:
    small_host = tmp_path / "meminfo"
    small_host.write_text("MemTotal:        1048576 kB\n")  # 1 GiB
    text = BASE.replace("[native, tdp]", "[native]").replace("12800]", "300000]")
    message = error_of(text, small_host)
    assert "more than this host (native mode) can spare (1GiB less 256MiB" in message
    parse(text, tmp_path / "no-such-meminfo")  # no /proc/meminfo to read: nothing to compare


@pytest.mark.parametrize(
    ("duration", "ok"),
    [("168h", True), ("604800s", True), ("169h", False), ("99999999999999999999h", False),
     ("1" * 400 + "s", False), ("1e308s", False), ("300s\n", True), ("３００s", False)],
)
def test_durations_are_bounded(meminfo: Path, duration: str, ok: bool) -> None:
    text = BASE + f"timeouts: {{trial: {json.dumps(duration)}}}\n"
    if ok:
        parse(text, meminfo)
    else:
        assert error_of(text, meminfo).startswith("suite.yaml:9:19: timeouts.trial: ")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    params:", "    trials: {n}\n    params:"),
        ("    params:", "    warmup: {n}\n    params:"),
        ("memory: 1GiB", "memory: 1GiB, dirty_ring: {n}"),
        ("memory: 1GiB", "memory: 1GiB, vcpus: 1, cpu_pins: [{n}]"),
        ("[1280, 12800]", "[1280, {n}]"),
        ("name: hostile", "name: hostile\nlost_guest_retries: {n}"),
        ("name: hostile", "name: hostile\nhost_prep: {{hugepages_2m: {n}}}"),
        ("memory: 1GiB", "memory: {n}"),
    ],
)
@pytest.mark.parametrize("n", [str(MAX_INT64 + 1), str(-MAX_INT64 - 2), "1e300", "-.inf"])
def test_no_number_beyond_64_bits_gets_through(meminfo: Path, old: str, new: str, n: str) -> None:
    text = BASE.replace(old, new.format(n=n))
    with pytest.raises(BadInput) as info:
        parse(text, meminfo)
    assert info.value.message.startswith("suite.yaml:")
    assert "a number beyond 64 bits" in info.value.message


def test_the_largest_64_bit_number_is_still_a_number(meminfo: Path) -> None:
    suite = parse(BASE.replace("[1280, 12800]", f"[1280], seed: {MAX_INT64}").replace(
        "fork-dirty", "fault"), meminfo).suite
    assert suite.workloads[0].params.seed == (MAX_INT64,)  # type: ignore[attr-defined]


def test_sizes_beyond_64_bits_are_refused(meminfo: Path) -> None:
    assert "beyond 64 bits" in error_of(BASE.replace("memory: 1GiB", "memory: 8388608TiB"), meminfo)
    assert "beyond 64 bits" in error_of(BASE.replace("memory: 1GiB", "memory: " + "9" * 30 + "GiB"),
                                        meminfo)


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\x1b", "\x7f", "\x85"])
def test_cmdline_refuses_control_characters(meminfo: Path, char: str) -> None:
    text = BASE.replace("memory: 1GiB", f"memory: 1GiB, cmdline: {json.dumps('pti=on' + char)}")
    assert "guests.small.cmdline: cmdline contains the control character" in error_of(text, meminfo)


def test_cmdline_length_leaves_room_for_what_the_orchestrator_appends(meminfo: Path) -> None:
    longest = "x" * CMDLINE_MAX
    parse(BASE.replace("memory: 1GiB", f"memory: 1GiB, cmdline: {longest}"), meminfo)
    assert "over the" in error_of(BASE.replace("memory: 1GiB", f"memory: 1GiB, cmdline: {longest}x"),
                                  meminfo)
    # what guest.py puts around it: the base words, the debian image's boot_args (the longest
    # an image has), and the run's key (an ed25519 public line as ssh-keygen writes it)
    key_line = "ssh-ed25519 " + "A" * 68 + " orchestrator-run"
    full = " ".join([BASE_CMDLINE, "root=/dev/vda rw net.ifnames=0", longest,
                     kernel_key_arg(key_line)])
    assert len(full.encode()) <= KERNEL_CMDLINE_MAX


def test_cmdline_refuses_an_unmatched_quote(meminfo: Path) -> None:
    parse(BASE.replace("memory: 1GiB", "memory: 1GiB, cmdline: 'dyndbg=\"file x +p\"'"), meminfo)
    assert "unmatched double quote" in error_of(
        BASE.replace("memory: 1GiB", "memory: 1GiB, cmdline: 'dyndbg=\"file x +p'"), meminfo)


def test_every_known_image_is_accepted_and_an_unknown_one_lists_them(meminfo: Path) -> None:
    for kind in ImageKind:
        parse(BASE.replace("image: mini", f"image: {kind.value}"), meminfo)
    message = error_of(BASE.replace("image: mini", "image: minix"), meminfo)
    assert message.startswith("suite.yaml:4:18: guests.small.image: unknown image 'minix'")
    assert f"(hint: images: {', '.join(k.value for k in ImageKind)}" in message


@pytest.mark.parametrize("event", ["kvm:kvm_exit\n", "-e", "--all", "kvm:-x", "kvm:kvm exit", ""])
def test_event_names_perf_would_misread_are_refused(meminfo: Path, event: str) -> None:
    text = BASE + f"trace: {{host: [\"kvmmmu:*\", {json.dumps(event)}]}}\n"
    assert "trace.host[1]: " in error_of(text, meminfo)


@pytest.mark.parametrize("event", ["kvm:kvm_exit", "kvmmmu:*", "vmstat:thp_*", "kvmstat:pf_fixed",
                                   "default", "exceptions:page_fault_user", "kvm:kvm-x"])
def test_event_names_as_the_reference_writes_them(meminfo: Path, event: str) -> None:
    text = BASE + f"trace: {{guest: [{json.dumps(event)}]}}\n"
    assert parse(text, meminfo).suite.trace.guest == (event,)


@pytest.mark.parametrize(("old", "new"), [("name: hostile", 'name: "hostile\\n"'),
                                          ("small: {", '"small\\n": {'),
                                          ("- name: fork", '- name: "fork\\n"')])
def test_names_with_a_trailing_newline_are_refused(meminfo: Path, old: str, new: str) -> None:
    assert "should match pattern" in error_of(BASE.replace(old, new), meminfo)


def test_files_too_long_for_a_suite(tmp_path: Path, meminfo: Path) -> None:
    with pytest.raises(BadInput, match="over 1,048,576 characters"):
        parse(BASE + "#" * MAX_SUITE_CHARS, meminfo)
    with pytest.raises(BadInput, match="over 1,048,576 characters"):
        load_suite(Path("/dev/zero"), meminfo=meminfo)  # reading stops at the limit


def test_unreadable_paths_are_bad_input(tmp_path: Path, meminfo: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(BadInput, match="cannot read it"):
        load_suite(latin1, meminfo=meminfo)
    with pytest.raises(BadInput, match="cannot read it"):
        load_suite(tmp_path / "a\0b.yaml", meminfo=meminfo)


# ---- fuzzing: only BadInput escapes ------------------------------------------------------------

PIECES = ["[", "]", "{", "}", ":", ", ", "- ", "\n", "  ", "&a ", "*a", "!!int ", "!!timestamp ",
          "!!binary ", "!!set ", "<<: ", "? ", "'", '"', "\\", "#", "%YAML 1.1\n", "---\n",
          "0x", "1e999", "9" * 25, "-", ".inf", "~", "\x85", "\ud800", "\\ud800", "\t", "é", "|",
          ">", "@", "`"]


def only_bad_input(text: str, meminfo: Path) -> None:
    try:
        parse(text, meminfo)
    except BadInput as exc:
        assert exc.message and exc.hint


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(BASE)), st.sampled_from(PIECES) | st.text(max_size=3),
                          st.integers(0, 3)), min_size=1, max_size=8))
def test_mutated_suites_raise_only_bad_input(meminfo: Path, edits: list[tuple[int, str, int]]) -> None:
    text = BASE
    for at, piece, cut in edits:
        at = min(at, len(text))
        text = text[:at] + piece + text[at + cut:]
    only_bad_input(text, meminfo)


SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.text(max_size=20) | st.sampled_from(["2GiB", "2GB", "1e308s", "300s", "mini", "tdp",
                                                     "noop", "kvm:*", "-e", "x\n", "8388608TiB"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(["pages", "kind", "name", "size", "x"]),
                                        inner, max_size=3), max_leaves=10)
FIELDS = [("name",), ("paging",), ("guests",), ("guests", "small"), ("guests", "small", "memory"),
          ("guests", "small", "cmdline"), ("guests", "small", "cpu_pins"), ("workloads",),
          ("workloads", 0), ("workloads", 0, "kind"), ("workloads", 0, "trials"),
          ("workloads", 0, "timeout"), ("workloads", 0, "params"), ("workloads", 0, "params", "pages"),
          ("trace",), ("trace", "host"), ("timeouts", ), ("host_prep",), ("lost_guest_retries",)]


def replaced(data: Any, where: tuple[str | int, ...], value: Any) -> None:
    for part in where[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return  # an earlier edit replaced the way there
    if isinstance(data, dict):
        data[where[-1]] = value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
def test_wrong_values_anywhere_raise_only_bad_input(meminfo: Path,
                                                    edits: list[tuple[tuple[str | int, ...], Any]]) -> None:
    data: dict[str, Any] = {"name": "f", "paging": ["native", "tdp"],
                            "guests": {"small": {"image": "mini"}},
                            "workloads": [{"name": "w", "kind": "fork-dirty", "params": {"pages": [1]}}]}
    for where, value in edits:
        replaced(data, where, value)
    only_bad_input(json.dumps(data), meminfo)  # JSON is YAML


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_any_text_raises_only_bad_input(meminfo: Path, text: str) -> None:
    only_bad_input(text, meminfo)


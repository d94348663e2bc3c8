"""Every test gets its own run lock and run index, so tests (and a developer's own runs) never
collide.

Tiers. A test says what it needs with markers (declared in pyproject.toml):
  integration  real QEMU/libvirtd (or sshd as an Ansible runner) on this machine
  needs_root   root: useradd, namespaces, modprobe, writes to /proc/sys, root's image cache
  slow         more than a few seconds: image builds, real suites, the nested lab
  e2e          the nested lab
scripts/test runs them all; scripts/test-fast runs the tests that need none of them (no root,
QEMU or libvirt; well under a minute). A module says it with one `pytestmark` line. As a safety
net, the hook below also marks every test that uses a heavy fixture (directly or through
another fixture), and the few single tests listed, so real machinery cannot slip into the
fast tier unnoticed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

# fixture name -> the markers of every test that uses it
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "libvirtd": ("integration", "needs_root"),  # starts the system libvirtd
    "no_leftover_domains": ("integration", "needs_root"),
    "mini_image": ("slow", "needs_root"),  # builds the mini image into root's shared cache
    "unprivileged_user": ("needs_root",),  # useradd/userdel
    "attacker": ("needs_root",),  # tests/host/test_lock_attacks: useradd/userdel
}

# single tests in modules that otherwise belong to the fast tier (node id without parameters)
TEST_MARKS: dict[str, tuple[str, ...]] = {
    # they resize the host's real hugepage pool (/proc/sys/vm/nr_hugepages)
    "tests/core/test_host_prep.py::test_real_host_hugepage_pool_round_trip": ("needs_root",),
    "tests/workloads/test_binaries.py::test_hugepage_skip_is_honest_when_the_pool_is_empty":
        ("needs_root",),
    "tests/workloads/test_binaries.py::test_hugepage_works_when_pages_are_reserved":
        ("needs_root",),
    # perf counts page faults in the kernel: root (or kernel.perf_event_paranoid <= 1)
    "tests/tracing/test_tracing.py::test_native_page_faults_match_pages_touched": ("needs_root",),
    # seconds each: real suites, many CLI processes (each one imports pandas), grace periods
    "tests/workloads/test_native_suite.py::test_native_smoke_suite_produces_the_tables":
        ("slow",),
    "tests/core/test_journal_damage.py::test_reading_runs_changes_nothing_in_their_directories":
        ("slow",),
    "tests/core/test_journal_damage.py::test_results_report_and_compare_say_which_lines_they_"
    "skipped": ("slow",),
    "tests/core/test_journal_damage.py::test_resume_after_a_torn_tail_loses_no_trial": ("slow",),
    "tests/core/test_suite_hostile.py::test_absurd_files_are_refused_with_their_line": ("slow",),
    "tests/core/test_suite_hostile.py::test_billion_laughs_is_refused_at_its_alias_in_little_"
    "memory": ("slow",),
    "tests/core/test_suite_hostile.py::test_ten_million_points_are_refused_before_planning":
        ("slow",),
    "tests/core/test_results_cli.py::test_results_with_no_runs_says_where_it_looked": ("slow",),
    "tests/report/test_compare.py::test_cli_exit_codes_and_json": ("slow",),
    "tests/fleet/test_nightly_units.py::test_a_run_deaf_to_sigterm_is_killed_with_what_it_left_"
    "behind": ("slow",),
}
ROOT = Path(__file__).resolve().parents[1]


def stale_test_marks() -> list[str]:
    """TEST_MARKS entries whose test no longer exists (renamed, moved): they would mark nothing."""
    stale = []
    for node in TEST_MARKS:
        path, name = node.split("::")
        source = ROOT / path
        if not source.exists() or f"def {name}(" not in source.read_text():
            stale.append(node)
    return stale


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for node in stale_test_marks():
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"tests/conftest.py TEST_MARKS names a test that does not exist: {node}"), 2)
    for item in items:
        wanted = set(TEST_MARKS.get(item.nodeid.split("[")[0], ()))
        for fixture in getattr(item, "fixturenames", ()):
            wanted.update(FIXTURE_MARKS.get(fixture, ()))
        for name in sorted(wanted - {m.name for m in item.iter_markers()}):
            item.add_marker(name)


@pytest.fixture(autouse=True)
def private_run_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lock = tmp_path / "orchestrator.lock"
    monkeypatch.setenv("ORCH_LOCK", str(lock))
    return lock


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host-wide index of live runs (orchestrator/store/ledger.py, default /run/orchestrator):
    each test its own, so tests never meet real runs (and need no root to have one)."""
    state = tmp_path / "orchestrator-state"
    monkeypatch.setenv("ORCH_STATE_DIR", str(state))
    return state


@pytest.fixture(autouse=True)
def our_log_level_restored() -> Iterator[None]:
    """A test that calls cli.main in-process sets the `orchestrator` logger's level for the
    whole pytest process (INFO): put it back, so later tests capture what they always did."""
    ours = logging.getLogger("orchestrator")
    level = ours.level
    yield
    ours.setLevel(level)

"""The ORCH_* settings: read from the environment once, at the edge, and handed down; the
accelerator label of KVM rows is an option of `orchestrate run`, not an environment variable."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from orchestrator.cli import entry as cli
from orchestrator.errors import BadInput, ExitCode
from orchestrator.paths import PROJECT_ROOT
from orchestrator.run.backends import lab_host_backend
from orchestrator.settings import (
    DEFAULT_MAX_POINTS,
    DEFAULT_MAX_TRIALS,
    POINTS_ENV,
    TRIALS_ENV,
    Settings,
)
from orchestrator.suite import loader
from orchestrator.suite.loader import parse_suite
from orchestrator.suite.schema import RequestedMode

PACKAGE = PROJECT_ROOT / "orchestrator"
# Where the environment may be named: the settings themselves, the two front doors that build
# them from it, and the environments of child processes (not settings).
READS_ENVIRONMENT = {"settings.py", "cli/entry.py", "fleet/nightly.py", "proc.py"}

SUITE = """\
name: label
paging: [native, tdp]
guests:
  small: {image: mini, memory: 1GiB}
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: [1280]}
"""


def test_defaults() -> None:
    s = Settings.from_environ({})
    assert s.results == Path("results") and s.libvirt_uri == "qemu:///system"
    assert s.guest_launcher == "libvirt"
    assert s.image_cache == (Path("/var/cache/orchestrator/images") if os.geteuid() == 0
                             else Path.home() / ".cache/orchestrator/images").resolve()
    assert s.workloads_bin == PROJECT_ROOT / "guest-workloads" / "bin"
    assert (s.lock_dir, s.run_lock, s.nightly_lock) == (
        Path("/run/lock/orchestrator"), Path("/run/lock/orchestrator/run.lock"),
        Path("/run/lock/orchestrator/nightly.lock"))
    assert s.state_dir == Path("/run/orchestrator")
    assert (s.max_points, s.max_trials) == (DEFAULT_MAX_POINTS, DEFAULT_MAX_TRIALS)


def test_every_variable_is_honoured(tmp_path: Path) -> None:
    s = Settings.from_environ({
        "ORCH_RESULTS": "r", "ORCH_LIBVIRT_URI": "test:///default",
        "ORCH_GUEST_LAUNCHER": "qemu", "ORCH_IMAGE_CACHE": str(tmp_path / "i"),
        "ORCH_WORKLOADS_BIN": str(tmp_path / "b"), "ORCH_LOCK_DIR": "/l",
        "ORCH_STATE_DIR": "/s", "ORCH_MAX_POINTS": "7", "ORCH_MAX_TRIALS": " 8 ",
        "ORCH_CRASH_DIR": "/c"})
    assert (s.results, s.libvirt_uri, s.guest_launcher) == (Path("r"), "test:///default", "qemu")
    assert (s.image_cache, s.workloads_bin) == (tmp_path / "i", tmp_path / "b")
    assert (s.run_lock, s.nightly_lock) == (Path("/l/run.lock"), Path("/l/nightly.lock"))
    assert (s.state_dir, s.max_points, s.max_trials, s.crash_dir) == (Path("/s"), 7, 8, Path("/c"))
    both = Settings.from_environ({"ORCH_LOCK": "/y/r", "ORCH_NIGHTLY_LOCK": "/y/n"})
    assert (both.run_lock, both.nightly_lock) == (Path("/y/r"), Path("/y/n"))


def test_empty_paths_and_budgets_are_unset() -> None:
    empty = Settings.from_environ(dict.fromkeys(
        ["ORCH_LOCK_DIR", "ORCH_LOCK", "ORCH_NIGHTLY_LOCK", "ORCH_STATE_DIR",
         "ORCH_WORKLOADS_BIN", POINTS_ENV, TRIALS_ENV], ""))
    assert empty == Settings.from_environ({})


def test_a_relative_image_cache_is_made_absolute() -> None:
    assert Settings.from_environ({"ORCH_IMAGE_CACHE": "cache"}).image_cache.is_absolute()


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ORCH_GUEST_LAUNCHER", "xen", "not a guest launcher"),
    (POINTS_ENV, "many", "not a whole number"),
    (TRIALS_ENV, "0", "not a whole number"),
])
def test_a_value_that_cannot_be_right_is_bad_input(name: str, value: str, says: str) -> None:
    with pytest.raises(BadInput, match=says) as caught:
        Settings.from_environ({name: value})
    assert caught.value.one_line().startswith(f"{name}=")


def test_the_suite_stage_documents_the_same_budget() -> None:
    """suite/ imports no settings: its refusal names the variables and defaults itself."""
    assert (loader.POINTS_ENV, loader.DEFAULT_MAX_POINTS) == (POINTS_ENV, DEFAULT_MAX_POINTS)
    assert (loader.TRIALS_ENV, loader.DEFAULT_MAX_TRIALS) == (TRIALS_ENV, DEFAULT_MAX_TRIALS)


def _names_environment(module: Path) -> bool:
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "os" and node.attr in ("environ", "getenv", "environb"):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv") for a in node.names):
            return True
    return False


def test_no_module_below_the_edge_reads_the_environment() -> None:
    readers = {str(m.relative_to(PACKAGE)) for m in PACKAGE.rglob("*.py") if _names_environment(m)}
    assert readers <= READS_ENVIRONMENT, sorted(readers - READS_ENVIRONMENT)


def test_the_edge_hands_its_budget_to_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    monkeypatch.setenv(POINTS_ENV, "1")  # the suite makes 2 points: native, and one guest
    assert cli.main(["validate", str(path)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "the suite would make 2, over the limit of 1" in err and f"${POINTS_ENV}" in err
    monkeypatch.setenv(POINTS_ENV, "2")
    assert cli.main(["validate", str(path)]) == ExitCode.OK


def test_the_accel_label_is_a_hidden_option_of_run() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["run", "s.yaml"]).accel_label == "kvm"
    assert parser.parse_args(["run", "--accel-label", "nested-tcg"]).accel_label == "nested-tcg"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--accel-label", "tcg"])


def _kvm_host(root: Path) -> Path:
    """A host whose KVM (kvm_amd) is already in the tdp mode: entering it reloads nothing."""
    for module, param, value in (("kvm_amd", "npt", "Y"), ("kvm", "tdp_mmu", "Y")):
        params = root / "sys/module" / module / "parameters"
        params.mkdir(parents=True)
        (params / param).write_text(f"{value}\n")
    (root / "dev").mkdir()
    (root / "dev/kvm").touch()
    return root


@pytest.mark.parametrize(("label", "native"), [("kvm", "native"), ("nested-tcg", "tcg")])
def test_rows_carry_the_label_the_backend_was_given(tmp_path: Path, label: str,
                                                    native: str) -> None:
    loaded = parse_suite(SUITE, Path("suite.yaml"))
    backend = lab_host_backend(loaded, tmp_path, settings=Settings.from_environ({}),
                               accel_label=label)
    backend.sysfs_root = _kvm_host(tmp_path / "host")
    with backend.enter_mode(RequestedMode.TDP) as state:
        assert (state.verified, state.accel) == ("tdp", label)
    with backend.enter_mode(RequestedMode.NATIVE) as state:
        assert state.accel == native  # the lab's L1 is emulated: its native rows are TCG ones


def test_the_backend_is_handed_every_setting_it_uses(tmp_path: Path) -> None:
    settings = Settings.from_environ({"ORCH_LIBVIRT_URI": "test:///default",
                                      "ORCH_GUEST_LAUNCHER": "qemu",
                                      "ORCH_IMAGE_CACHE": str(tmp_path / "i"),
                                      "ORCH_WORKLOADS_BIN": str(tmp_path / "b")})
    backend = lab_host_backend(parse_suite(SUITE, Path("suite.yaml")), tmp_path,
                               settings=settings)
    assert (backend.uri, backend.launcher) == ("test:///default", "qemu")
    assert (backend.image_cache, backend.bin_dir) == (tmp_path / "i", tmp_path / "b")


def test_the_image_cache_is_the_systems_as_root_and_the_users_xdg_cache_otherwise(
        tmp_path: Path) -> None:
    """Never the checkout: a fresh clone or `git clean` keeps the images (keyed by recipe)."""
    assert Settings.from_environ({}, euid=0).image_cache == Path("/var/cache/orchestrator/images")
    user = {"HOME": str(tmp_path / "home")}
    assert Settings.from_environ(user, euid=1000).image_cache == (
        tmp_path / "home/.cache/orchestrator/images")
    xdg = {**user, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert Settings.from_environ(xdg, euid=1000).image_cache == tmp_path / "xdg/orchestrator/images"
    relative = {**user, "XDG_CACHE_HOME": "not/absolute"}  # the XDG spec: ignore it
    assert Settings.from_environ(relative, euid=1000).image_cache == (
        tmp_path / "home/.cache/orchestrator/images")
    chosen = {**xdg, "ORCH_IMAGE_CACHE": str(tmp_path / "mine")}
    assert Settings.from_environ(chosen, euid=0).image_cache == tmp_path / "mine"

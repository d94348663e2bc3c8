"""Paging-mode switching on recorded sysfs shapes, with modprobe faked at the proc boundary
(these machines have no VMX/SVM: the Intel ept= path can only be exercised like this), and
what a switch writes in the run's ledger for recovery."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.errors import HarnessError, LockHeld
from orchestrator.host.paging import kvm_holders, paging_mode, restore_params
from orchestrator.run.lock import run_lock
from orchestrator.store import ledger


class FakeModprobe:
    """Rewrites the fake tree's parameter files as the real modprobe would; records calls."""

    def __init__(self, root: Path, vendor: str, *, fail_on: str | None = None) -> None:
        self.root, self.vendor, self.fail_on = root, vendor, fail_on
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float,
                 check: bool = True) -> proc.Completed:
        argv = list(argv)
        self.calls.append(argv)
        if self.fail_on and self.fail_on in argv:
            raise proc.CommandError(argv, 1, "", "modprobe: ERROR: could not insert")
        mod = self.root / "sys/module"
        if argv[1] == "-r":
            for name in argv[2:]:
                if not (mod / name).exists():
                    continue
                for param in (mod / name / "parameters").glob("*"):
                    param.unlink()
                (mod / name / "parameters").rmdir()
                (mod / name).rmdir()
        else:
            name, settings = argv[1], argv[2:]
            (mod / name / "parameters").mkdir(parents=True)
            for setting in settings:
                key, value = setting.split("=")
                (mod / name / "parameters" / key).write_text(
                    "Y\n" if value == "1" else "N\n")
        return proc.Completed(tuple(argv), 0, "", "")


def host(tmp_path: Path, vendor: str, tdp: str = "Y", tdp_mmu: str = "Y") -> Path:
    param = {"kvm_intel": "ept", "kvm_amd": "npt"}[vendor]
    for module, values in ((vendor, {param: tdp}), ("kvm", {"tdp_mmu": tdp_mmu})):
        (tmp_path / "sys/module" / module / "parameters").mkdir(parents=True)
        for key, value in values.items():
            (tmp_path / "sys/module" / module / "parameters" / key).write_text(value + "\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "proc").mkdir()
    return tmp_path


def param(root: Path, module: str, name: str) -> str:
    return (root / "sys/module" / module / "parameters" / name).read_text().strip()


@pytest.mark.parametrize(("vendor", "name"), [("kvm_intel", "ept"), ("kvm_amd", "npt")])
def test_switch_to_shadow_verifies_and_restores(tmp_path: Path, vendor: str, name: str) -> None:
    root = host(tmp_path, vendor)
    modprobe = FakeModprobe(root, vendor)
    with paging_mode("shadow", root=root, runner=modprobe) as verified:
        assert verified.paging_mode == "shadow"
        assert param(root, vendor, name) == "N"
    assert param(root, vendor, name) == "Y" and param(root, "kvm", "tdp_mmu") == "Y"
    assert modprobe.calls[:3] == [["modprobe", "-r", vendor, "kvm"],
                                  ["modprobe", "kvm", "tdp_mmu=1"],
                                  ["modprobe", vendor, f"{name}=0"]]


def test_tdp_legacy_uses_tdp_mmu_off(tmp_path: Path) -> None:
    root = host(tmp_path, "kvm_intel")
    with paging_mode("tdp-legacy", root=root, runner=FakeModprobe(root, "kvm_intel")) as v:
        assert v.paging_mode == "tdp-legacy" and param(root, "kvm", "tdp_mmu") == "N"
    assert param(root, "kvm", "tdp_mmu") == "Y"


def test_already_in_the_mode_touches_nothing(tmp_path: Path) -> None:
    root = host(tmp_path, "kvm_amd")
    modprobe = FakeModprobe(root, "kvm_amd")
    with paging_mode("tdp", root=root, runner=modprobe):
        pass
    assert modprobe.calls == []


@pytest.mark.parametrize("exc", [RuntimeError("guest crashed"), KeyboardInterrupt()])
def test_restored_after_an_error_or_ctrl_c(tmp_path: Path, exc: BaseException) -> None:
    root = host(tmp_path, "kvm_intel")
    with pytest.raises(type(exc)), paging_mode("shadow", root=root,
                                                runner=FakeModprobe(root, "kvm_intel")):
        raise exc
    assert param(root, "kvm_intel", "ept") == "Y"


def test_refuses_while_another_vm_holds_dev_kvm(tmp_path: Path) -> None:
    root = host(tmp_path, "kvm_intel")
    fd_dir = root / "proc/4242/fd"
    fd_dir.mkdir(parents=True)
    (root / "proc/4242/comm").write_text("qemu-system-x86\n")
    os.symlink("/dev/kvm", fd_dir / "11")
    assert kvm_holders(root) == ["4242 (qemu-system-x86)"]
    modprobe = FakeModprobe(root, "kvm_intel")
    with pytest.raises(HarnessError, match=r"held by 4242 \(qemu-system-x86\)") as info, \
            paging_mode("shadow", root=root, runner=modprobe):
        pass
    assert "--force-mode-switch" in info.value.hint and modprobe.calls == []
    with paging_mode("shadow", root=root, runner=modprobe, force=True) as forced:
        assert forced.paging_mode == "shadow"


def test_a_failed_reload_is_followed_by_a_restore(tmp_path: Path) -> None:
    root = host(tmp_path, "kvm_amd")
    modprobe = FakeModprobe(root, "kvm_amd", fail_on="npt=0")
    with pytest.raises(proc.CommandError), paging_mode("shadow", root=root, runner=modprobe):
        pass
    assert param(root, "kvm_amd", "npt") == "Y"  # reloaded with the original parameters
    assert modprobe.calls[-1] == ["modprobe", "kvm_amd", "npt=1"]


def test_lock_second_holder_is_refused_with_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    with run_lock(lock, what="first"), pytest.raises(LockHeld, match="first") as info, \
            run_lock(lock):
        pass
    assert info.value.exit_code == 5
    with run_lock(lock):  # released after the first holder exits
        pass


def test_lock_released_on_exception(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    with pytest.raises(RuntimeError), run_lock(lock):
        raise RuntimeError
    with run_lock(lock):
        pass


def test_a_second_run_exits_5_while_the_lock_is_held(tmp_path: Path,
                                                     private_run_lock: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: l\npaging: [native]\nworkloads: [{name: n, kind: noop}]\n")
    with run_lock(private_run_lock, what="nightly"):
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                               "--results-dir", str(tmp_path / "r")], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 5
    assert "another run holds the lock" in done.stderr and "nightly" in done.stderr
    assert not (tmp_path / "r").exists()  # nothing started, nothing to clean up


# ---- the run's ledger: what recovery needs if the run is killed mid-switch ----------------


def kvm_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ledger.STATE_ENV, str(tmp_path / "state"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return run_dir


def test_a_switch_is_in_the_ledger_before_the_reload_and_undone_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = kvm_run(tmp_path, monkeypatch)
    root = host(tmp_path / "host", "kvm_amd")
    written_first: list[str] = []

    class Watched(FakeModprobe):
        def __call__(self, argv: Sequence[str], *, timeout: float,
                     check: bool = True) -> proc.Completed:
            if not self.calls:
                written_first.extend(e["kind"] for e in ledger.read(run_dir))
            return super().__call__(argv, timeout=timeout, check=check)

    with ledger.recording(run_dir), paging_mode("shadow", root=root,
                                                runner=Watched(root, "kvm_amd")):
        kvm = next(e for e in ledger.read(run_dir) if e["kind"] == "kvm")
    assert "kvm" in written_first  # before the first modprobe
    assert kvm["vendor"] == "kvm_amd" and kvm["root"] == str(root)
    assert kvm["before"] == {"tdp": True, "tdp_mmu": True, "mode": "tdp"}
    assert kvm["after"] == {"tdp": False, "tdp_mmu": True, "mode": "shadow"}
    entries = ledger.read(run_dir)
    assert any(e["kind"] == "undone" and e["ref"] == kvm["seq"] for e in entries)
    assert entries[-1]["kind"] == "end" and entries[-1]["left"] == []
    assert not (tmp_path / "state" / "run").exists()  # a clean end leaves the index


def test_a_restore_that_fails_stays_in_the_ledger_for_recovery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = kvm_run(tmp_path, monkeypatch)
    root = host(tmp_path / "host", "kvm_amd")
    with pytest.raises(HarnessError, match="could not restore"), ledger.recording(run_dir), \
            paging_mode("shadow", root=root, runner=FakeModprobe(root, "kvm_amd",
                                                                 fail_on="npt=1")):
        pass
    end = ledger.read(run_dir)[-1]
    assert end["kind"] == "end" and len(end["left"]) == 1
    assert (tmp_path / "state" / "run").is_symlink()  # the next command tries again


def test_restore_params_reloads_only_when_needed_and_never_under_a_vm(tmp_path: Path) -> None:
    root = host(tmp_path, "kvm_intel", tdp="N")
    modprobe = FakeModprobe(root, "kvm_intel")
    fd_dir = root / "proc/77/fd"
    fd_dir.mkdir(parents=True)
    (root / "proc/77/comm").write_text("qemu-system-x86\n")
    os.symlink("/dev/kvm", fd_dir / "9")
    with pytest.raises(HarnessError, match=r"held by 77 \(qemu-system-x86\)"):
        restore_params("kvm_intel", True, True, root=root, runner=modprobe)
    assert modprobe.calls == []
    (fd_dir / "9").unlink()
    said = restore_params("kvm_intel", True, True, root=root, runner=modprobe)
    assert said == "reloaded kvm_intel ept=1 (kvm tdp_mmu=1): paging mode tdp, verified from sysfs"
    assert param(root, "kvm_intel", "ept") == "Y" and len(modprobe.calls) == 3
    again = restore_params("kvm_intel", True, True, root=root, runner=modprobe)
    assert "already loaded" in again and len(modprobe.calls) == 3  # idempotent

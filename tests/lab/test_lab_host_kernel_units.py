"""`lab run --host-kernel` before L1 boots: what a lab host kernel must have, the refusals
(exit 2, one line with a hint), and the provenance compare reads. Fast: fake kernels as in
tests/guests/test_kernels.py (a bzImage header, real modules copied from this host's kernel)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator.analysis.compatibility import differences
from orchestrator.cli.entry import main
from orchestrator.errors import BadInput
from orchestrator.guests import kernels
from orchestrator.lab.l1 import _qemu_argv
from tests.guests.test_kernels import RELEASE, fake_bzimage, fake_deb, modules_tree

LAB_TREE = ("virtio_net", "virtio_blk", "9pnet_virtio", "9p", "kvm_amd")


def test_a_lab_host_kernel_keeps_kvm_and_the_share_drivers(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path, modules=LAB_TREE)
    kernel = kernels.lab_host_kernel(str(deb), modules=None, base_dir=tmp_path,
                                     cache_root=tmp_path / "cache")
    assert kernel.release == RELEASE and kernel.modules_base is not None
    kept = {p.name for p in (kernel.modules_base / "lib/modules" / RELEASE).rglob("*.ko")}
    assert {"kvm-amd.ko", "kvm.ko", "9p.ko", "9pnet_virtio.ko", "virtio_net.ko"} <= kept
    assert "extra.ko" not in kept  # the rest of a distribution kernel's modules go


def test_a_kernel_without_a_kvm_amd_module_is_refused(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path, modules=("virtio_net", "virtio_blk", "9pnet_virtio", "9p"))
    with pytest.raises(BadInput) as raised:
        kernels.lab_host_kernel(str(deb), modules=None, base_dir=tmp_path,
                                cache_root=tmp_path / "cache")
    assert "has no kvm_amd module" in raised.value.message
    assert "CONFIG_KVM_AMD=m" in raised.value.hint


def test_a_built_lab_host_kernel_needs_its_modules(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage")
    with pytest.raises(BadInput) as raised:
        kernels.lab_host_kernel(str(image), modules=None, base_dir=tmp_path,
                                cache_root=tmp_path / "cache")
    assert "--host-kernel-modules" in raised.value.hint
    modules_tree(tmp_path / "mods", modules=LAB_TREE)
    kernel = kernels.lab_host_kernel(str(image), modules=str(tmp_path / "mods"),
                                     base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert kernel.source == f"built {image}" and kernel.modules_base == tmp_path / "mods"


def test_l1_gets_the_chosen_kernels_modules_as_a_read_only_share(tmp_path: Path) -> None:
    argv = _qemu_argv(tmp_path / "bzImage", tmp_path / "initrd", tmp_path, 2222, 4096, 2,
                      tmp_path / "mods")
    share = next(a for a in argv if "mount_tag=kmods" in a)
    assert f"path={tmp_path / 'mods' / 'lib' / 'modules'}" in share and "readonly=on" in share
    plain = _qemu_argv(tmp_path / "bzImage", tmp_path / "initrd", tmp_path, 2222, 4096, 2)
    assert not any("kmods" in a for a in plain)
    # the kernel command line (a fact `compare` checks) is the same either way
    assert argv[argv.index("-append") + 1] == plain[plain.index("-append") + 1]


@pytest.mark.parametrize(("args", "said"), [
    (["--host-kernel-modules", "/tmp"], "--host-kernel-modules without --host-kernel"),
    (["--host-kernel", "/nonexistent/bzImage"], "does not exist"),
])
def test_the_front_door_refuses_a_bad_host_kernel_before_l1_boots(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: k\npaging: [tdp]\nguests:\n  g: {image: mini}\n"
                     "workloads:\n  - {name: f, kind: fork-dirty, params: {pages: 1280}}\n")
    code = main(["lab", "run", str(suite), "--results-dir", str(tmp_path / "results"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and said in err and "(hint: " in err
    assert not (tmp_path / "results").exists()


def test_two_builds_of_one_lab_host_release_differ_as_host_kernel() -> None:
    def manifest(kernel_id: str) -> dict[str, object]:
        return {"host": {"kernel_release": "6.8.0"},
                "lab": {"l1_kernel": {"release": "6.8.0", "kernel_id": kernel_id}}}

    none = pd.DataFrame()
    found = differences(manifest("aaaa11112222"), manifest("bbbb33334444"), none, none)
    assert [(d.key, d.text) for d in found] == [
        ("host-kernel", "lab host kernel build: aaaa11112222 vs bbbb33334444")]

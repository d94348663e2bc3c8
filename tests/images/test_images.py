"""Images from Debian packages: contents, pinned host keys, caching by recipe hash. Building one
takes seconds (mini) to minutes (debian): those tests are slow."""

from __future__ import annotations

import gzip
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import BadInput
from orchestrator.guests.images import build_debian, build_mini, load_image
from orchestrator.store import reader
from tests.guests.conftest import project_domains
from tests.guests.test_kernel_sweep import GENERIC

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workloads() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    return ROOT / "guest-workloads" / "bin"


def cpio_listing(initrd: Path) -> list[str]:
    data = gzip.decompress(initrd.read_bytes())
    done = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True,
                          check=True, timeout=120)
    return done.stdout.decode().split()


@pytest.mark.slow
def test_mini_contents(workloads: Path, tmp_path: Path) -> None:
    image = build_mini(tmp_path, workloads)
    names = set(cpio_listing(image.initrd))
    assert {"init", "bin/busybox", "usr/sbin/dropbear", "usr/bin/perf",
            "etc/dropbear/dropbear_ed25519_host_key", "etc/modules-order"} <= names
    assert {f"opt/workloads/bin/{p.name}" for p in workloads.iterdir()} <= names
    assert image.host_key_pub.startswith("ssh-ed25519 ")
    assert (image.directory / "host_key.pub").read_text().strip() == image.host_key_pub


@pytest.mark.slow
def test_mini_modules_load_after_their_dependencies(workloads: Path, tmp_path: Path) -> None:
    image = build_mini(tmp_path, workloads)
    order_file = tmp_path / "order"
    data = gzip.decompress(image.initrd.read_bytes())
    subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "etc/modules-order"], input=data,
                   stdout=order_file.open("wb"), check=True, timeout=60)
    order = order_file.read_text().split()
    for module in order:
        deps = subprocess.run(["modinfo", "-k", image.kernel_release, "-F", "depends", module],
                              capture_output=True, text=True, check=True).stdout.strip()
        for dep in filter(None, deps.split(",")):
            assert order.index(dep) < order.index(module), (dep, module)
    assert "virtio_net" in order and "virtio_pci" in order


@pytest.mark.slow
def test_cache_hit_and_miss(workloads: Path, tmp_path: Path) -> None:
    first = build_mini(tmp_path / "cache", workloads)
    stamp = first.initrd.stat().st_mtime_ns
    again = build_mini(tmp_path / "cache", workloads)
    assert again.directory == first.directory and again.initrd.stat().st_mtime_ns == stamp
    changed = tmp_path / "bins"
    shutil.copytree(workloads, changed)
    (changed / "noop").write_bytes((changed / "noop").read_bytes() + b"\0")
    other = build_mini(tmp_path / "cache", changed)
    assert other.recipe_hash != first.recipe_hash
    assert other.host_key_pub != first.host_key_pub  # every image its own host key


def test_missing_image_is_bad_input_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not built") as info:
        load_image("mini", tmp_path)
    assert "orchestrate image build mini" in info.value.hint
    with pytest.raises(BadInput, match="unknown image"):
        load_image("gentoo", tmp_path)


SUITE = """\
name: debian-test
paging: [tdp]
guests:
  deb: {image: debian, vcpus: 1, memory: 1GiB, cmdline: "pti=off"}
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: 1280}
    trials: 1
    warmup: 0
  - name: stress
    kind: stress-ng
    params: {stressor: fork, ops: 100}
    trials: 1
    warmup: 0
timeouts: {boot: 600s, trial: 120s}
"""


def run_suite(text: str, tmp_path: Path) -> reader.RunTables:
    """`orchestrate run` of the suite text as a user would type it; its run, every trial ok."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                           "--results-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    run = reader.load(tmp_path / "r" / "latest")
    assert set(run.trials["outcome"]) == {"ok"}
    return run


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.needs_root
def test_debian_image_builds_and_boots(workloads: Path, tmp_path: Path) -> None:
    image = build_debian(None, workloads)  # the shared cache: built once per machine
    assert image.disk is not None and image.disk.exists()
    assert "openssh-server" in (image.directory / "packages.txt").read_text()
    for secret in (image.disk, image.initrd, image.directory):  # the disk holds the host key
        assert stat.S_IMODE(secret.stat().st_mode) & 0o007 == 0, secret
    base_stamp = image.disk.stat().st_mtime_ns
    subprocess.run(["bash", str(ROOT / "scripts/libvirtd-up")], check=True, timeout=120)
    run = run_suite(SUITE, tmp_path)
    assert set(run.trials["kind"]) == {"fork-dirty", "stress-ng"}
    facts = run.manifest["guests"]["tcg/deb"]
    assert facts["pti"] == "off" and "root=/dev/vda" in facts["kernel_cmdline"]
    assert facts["runner"] == "orch-runner"
    assert image.disk.stat().st_mtime_ns == base_stamp  # the run wrote to an overlay only
    assert not list((image.directory.parent / "overlays").glob("*.qcow2"))
    assert not [d for d in project_domains("qemu:///system") if "-deb-" in d]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.needs_root
def test_a_debian_guest_boots_the_kernel_its_suite_chose(workloads: Path, tmp_path: Path) -> None:
    """The debian image's disk (an overlay of it) on another Debian kernel than its own, through
    an initramfs made for that kernel: the rows say the chosen kernel's `uname -r`."""
    image = build_debian(None, workloads)
    base_stamp = image.disk.stat().st_mtime_ns if image.disk else 0
    run = run_suite(SUITE.replace("cmdline: \"pti=off\"}",
                                  f"launcher: qemu, kernel: linux-image-{GENERIC}}}"), tmp_path)
    assert set(run.trials["guest_kernel"]) == {GENERIC}
    assert run.manifest["kernels"]["deb"]["release"] == GENERIC
    assert image.disk is not None and image.disk.stat().st_mtime_ns == base_stamp

"""Guest kernels made ready before a run: unpacking a .deb, verifying a built kernel, and the
refusals (exit 2, one line with a hint) of what cannot boot a guest.

Fast: tiny fake kernels (a bzImage header, real virtio modules copied from this host's kernel)
and fake .debs made with `dpkg-deb -b`; real packages only in test_kernel_sweep.py.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli.entry import main
from orchestrator.errors import BadInput
from orchestrator.guests import kernels
from orchestrator.guests.images import installed_kernel
from orchestrator.suite.kernel_choice import BuiltKernel

RELEASE = "6.1.0-99-test"
pytestmark = pytest.mark.skipif(not shutil.which("dpkg-deb") or not shutil.which("modinfo"),
                                reason="needs dpkg-deb and kmod")


def host_modules() -> Path:
    try:
        release, _ = installed_kernel()
    except Exception:  # noqa: BLE001 - no Debian kernel here: the fakes cannot be made
        pytest.skip("needs an installed Debian kernel to copy virtio modules from")
    return Path("/lib/modules") / release


def fake_bzimage(path: Path, release: str = RELEASE) -> Path:
    """A file with a bzImage's setup header: 'HdrS' at 0x202, the version string it points
    to (at 0x20E, relative to 0x200)."""
    data = bytearray(0x800)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x300)
    text = f"{release} (test@example) #1 SMP".encode()
    data[0x500:0x500 + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def modules_tree(base: Path, release: str = RELEASE, *, modules: tuple[str, ...] = (
        "virtio_net", "virtio_blk"), builtin: tuple[str, ...] = ("virtio_pci",),
        depmod: bool = True) -> Path:
    """INSTALL_MOD_PATH-like: base/lib/modules/RELEASE with real .ko files of this host."""
    tree = base / "lib/modules" / release
    tree.mkdir(parents=True)
    host = host_modules()
    wanted: set[str] = set()
    todo = list(modules)
    while todo:  # the modules and everything they need
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            done = subprocess.run(["modinfo", "-k", host.name, "-F", "depends", name],
                                  capture_output=True, text=True, check=True)
            todo += filter(None, done.stdout.strip().split(","))
    for name in wanted:
        done = subprocess.run(["modinfo", "-k", host.name, "-F", "filename", name],
                              capture_output=True, text=True, check=True)
        src = Path(done.stdout.strip())
        if src.suffix == ".ko":
            shutil.copy(src, tree / src.name)
    (tree / "modules.builtin").write_text(
        "".join(f"kernel/drivers/virtio/{name}.ko\n" for name in builtin))
    if depmod:
        subprocess.run(["depmod", "-b", str(base), release], check=True, capture_output=True)
    return base


def fake_deb(tmp: Path, release: str = RELEASE, *, package: str = "linux-image-test",
             config: str = "CONFIG_VIRTIO_NET=m\n", **tree: object) -> Path:
    root = tmp / "debroot"
    fake_bzimage(root / "boot" / f"vmlinuz-{release}", release)
    (root / "boot" / f"config-{release}").write_text(config)
    modules_tree(root, release, **tree)  # type: ignore[arg-type]
    some = next((root / "lib/modules" / release).glob("*.ko"), None)
    if some is not None:  # a module no image needs (a copy under another name)
        (some.parent / "kernel").mkdir(exist_ok=True)
        shutil.copy(some, some.parent / "kernel/extra.ko")
    for name in ("modules.dep", "modules.dep.bin", "modules.alias"):  # as a package ships
        (root / "lib/modules" / release / name).unlink(missing_ok=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@e>\n"
        "Description: a fake kernel\n")
    deb = tmp / f"{package}_1.0_amd64.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(root)
    return deb


def test_a_local_deb_is_unpacked_once_verified_and_cached(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path)
    cache = tmp_path / "cache"
    kernel = kernels.resolve(str(deb), base_dir=tmp_path, cache_root=cache)
    assert kernel.release == RELEASE
    assert kernel.source == f"deb {deb}"
    assert kernel.kernel_id == kernels.digest(kernel.image) and len(kernel.kernel_id) == 12
    assert kernel.config is not None and kernel.config_hash == kernels.digest(kernel.config)
    assert kernel.builtin == ("virtio_pci",)
    unpacked = cache / "kernels" / f"deb-{kernels.digest(deb, 16)}"
    assert kernel.modules_base == unpacked / "root"
    tree = unpacked / "root/lib/modules" / RELEASE
    assert (tree / "modules.dep").exists()  # depmod ran
    kept = {p.name for p in tree.rglob("*.ko")}  # only what a mini image carries
    assert {"virtio_net.ko", "virtio_blk.ko", "net_failover.ko", "failover.ko"} <= kept
    assert "extra.ko" not in kept
    stamp = (unpacked / "kernel.json").stat().st_mtime_ns
    again = kernels.resolve(str(deb), base_dir=tmp_path, cache_root=cache)
    assert again == kernel and (unpacked / "kernel.json").stat().st_mtime_ns == stamp
    assert (cache / "kernels").stat().st_mode & 0o007 == 0  # private like the images


def test_relative_paths_count_from_the_suite_directory(tmp_path: Path) -> None:
    fake_deb(tmp_path)
    kernel = kernels.resolve("linux-image-test_1.0_amd64.deb", base_dir=tmp_path,
                             cache_root=tmp_path / "cache")
    assert kernel.release == RELEASE


def test_a_built_kernel_is_used_in_place(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "linux/arch/x86/boot/bzImage")
    mods = modules_tree(tmp_path / "mods")
    config = tmp_path / "linux/.config"
    config.write_text("CONFIG_VIRTIO_PCI=y\n")
    spec = BuiltKernel(image=str(image), modules=str(mods), config=str(config))
    kernel = kernels.resolve(spec, base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert (kernel.release, kernel.image, kernel.modules_base) == (RELEASE, image, mods)
    assert kernel.config_hash == kernels.digest(config)
    # the modules directory itself (lib/modules/RELEASE) names the same tree
    inner = BuiltKernel(image=str(image), modules=str(mods / "lib/modules" / RELEASE))
    assert kernels.resolve(inner, base_dir=tmp_path,
                           cache_root=tmp_path / "cache").modules_base == mods


def test_two_builds_of_one_release_have_different_ids(tmp_path: Path) -> None:
    one = fake_bzimage(tmp_path / "a/bzImage")
    two = fake_bzimage(tmp_path / "b/bzImage")
    two.write_bytes(two.read_bytes() + b"patched")
    config = tmp_path / "config"
    config.write_text("CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_NET=y\nCONFIG_VIRTIO_BLK=y\n")
    ids = {kernels.resolve(BuiltKernel(image=str(p), config=str(config)), base_dir=tmp_path,
                           cache_root=tmp_path / "cache").kernel_id for p in (one, two)}
    assert len(ids) == 2


def test_everything_built_in_needs_no_modules(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage")
    config = tmp_path / "config"
    config.write_text("CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_NET=y\nCONFIG_VIRTIO_BLK=y\n")
    kernel = kernels.resolve(BuiltKernel(image=str(image), config=str(config)),
                             base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert kernel.builtin == kernels.REQUIRED and kernel.modules_base is None


# ---- refusals: BadInput (exit 2), one line, a hint --------------------------------------------


def refused(spec: str | BuiltKernel, tmp_path: Path) -> BadInput:
    with pytest.raises(BadInput) as caught:
        kernels.resolve(spec, base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert "\n" not in caught.value.one_line() and caught.value.hint
    return caught.value


def test_a_file_that_is_not_a_kernel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"\x7fELF" + bytes(0x800))
    error = refused(BuiltKernel(image=str(tmp_path / "vmlinux")), tmp_path)
    assert "not a bzImage" in error.message and "HdrS" in error.message


def test_a_missing_modules_tree_is_refused(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage")
    error = refused(BuiltKernel(image=str(image), modules=str(tmp_path / "nomods")), tmp_path)
    assert "modules tree" in error.message and "does not exist" in error.message


def test_a_modules_tree_of_another_release_is_refused(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage")
    mods = modules_tree(tmp_path / "mods", "6.1.0-98-other")
    error = refused(BuiltKernel(image=str(image), modules=str(mods)), tmp_path)
    assert f"no lib/modules/{RELEASE}" in error.message


def test_a_modules_tree_without_depmod_is_refused(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage")
    mods = modules_tree(tmp_path / "mods", depmod=False)
    error = refused(BuiltKernel(image=str(image), modules=str(mods)), tmp_path)
    assert "modules.dep" in error.message and "depmod -b" in error.hint


def test_a_kernel_without_virtio_is_refused(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path, modules=("virtio_blk",), builtin=())
    error = refused(str(deb), tmp_path)
    assert "lacks virtio_pci, virtio_net" in error.message
    assert "CONFIG_VIRTIO_NET" in error.hint


def test_built_in_virtio_counts_from_modules_builtin(tmp_path: Path) -> None:
    deb = fake_deb(tmp_path, modules=(), builtin=("virtio_pci", "virtio_net", "virtio_blk"))
    kernel = kernels.resolve(str(deb), base_dir=tmp_path, cache_root=tmp_path / "cache")
    assert kernel.builtin == kernels.REQUIRED


def test_a_file_that_is_not_a_package_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.deb").write_text("not an ar archive\n")
    assert "is not a Debian package" in refused(str(tmp_path / "junk.deb"), tmp_path).message


def test_a_package_without_a_kernel_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "DEBIAN/control").write_text("Package: linux-headers-x\nVersion: 1\nArchitecture: "
                                         "amd64\nMaintainer: t <t@e>\nDescription: x\n")
    subprocess.run(["dpkg-deb", "-b", str(root), str(tmp_path / "h.deb")], check=True,
                   capture_output=True)
    assert "holds no kernel" in refused(str(tmp_path / "h.deb"), tmp_path).message


def test_a_package_apt_cannot_fetch_is_refused(tmp_path: Path) -> None:
    if not shutil.which("apt-get"):
        pytest.skip("needs apt-get")
    error = refused("linux-image-0.0.0-0-nosuchflavour", tmp_path)
    assert "apt-get download failed" in error.message
    assert "apt-cache search linux-image" in error.hint
    assert not list((tmp_path / "cache/kernels/debs").iterdir())  # nothing half-fetched kept


def test_run_refuses_a_bad_kernel_before_any_boot(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The front door: exit 2, one line with a hint, no traceback, and no run directory."""
    (tmp_path / "vmlinux").write_bytes(bytes(0x800))
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: k\npaging: [tdp]\nguests:\n  g:\n    kernel: {image: vmlinux}\n"
                     "workloads:\n  - {name: f, kind: fork-dirty, params: {pages: 1280}}\n")
    code = main(["run", str(suite), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "not a bzImage" in err and "(hint: " in err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())

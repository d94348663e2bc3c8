"""Secrets stay secret: what holds a guest's SSH host private key (the mini initrd, the debian
disk), an overlay, the run's and the lab's keys are root's (and libvirt's QEMU group's) alone,
from the moment they are made; a cached image that others could read is made private."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.guests import images
from orchestrator.guests.images import (
    Image,
    build_mini,
    dropbear_host_key,
    load_from,
    overlay,
    private_dir,
    qemu_gid,
    write_cpio,
)
from orchestrator.guests.ssh import new_run_key
from tests.images.conftest import User

ROOT = Path(__file__).resolve().parents[2]
KEY_IN_INITRD = "etc/dropbear/dropbear_ed25519_host_key"


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def others_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o007


def fake_image(directory: Path, *, mode: int) -> Path:
    """A cached image as builds before this change left it: everything world-readable."""
    directory.mkdir(parents=True)
    for name in ("initrd.img", "vmlinuz", "host_key.pub"):
        (directory / name).write_bytes(b"x")
        (directory / name).chmod(mode)
    image = Image("mini", directory, directory / "vmlinuz", directory / "initrd.img",
                  "ssh-ed25519 AAAA", "6.1.0", "0123456789abcdef")
    (directory / "image.json").write_text(json.dumps(image.to_dict()))
    directory.chmod(0o755)
    return directory


# ---- no root, no QEMU: the fast tier ---------------------------------------------------------


def test_an_initramfs_is_private_from_its_creation(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/secret").write_text("key\n")
    with umask(0):  # even where everything made is world-writable by default
        write_cpio(root, tmp_path / "initrd.img")
    assert stat.S_IMODE((tmp_path / "initrd.img").stat().st_mode) == 0o600
    assert not (tmp_path / "initrd.cpio").exists()
    assert gzip.decompress((tmp_path / "initrd.img").read_bytes()).find(b"key\n") > 0


def test_a_cached_image_others_could_read_is_made_private_on_load(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = fake_image(tmp_path / "cache" / "mini-0123456789abcdef", mode=0o644)
    with caplog.at_level(logging.WARNING):
        image = load_from(directory)
    assert others_bits(image.initrd) == 0 and others_bits(directory) == 0
    assert "--force" in caplog.text and "initrd.img" in caplog.text
    assert others_bits(image.directory / "host_key.pub") == 4  # public: stays readable
    caplog.clear()
    load_from(directory)  # nothing to say the second time
    assert not caplog.records


def test_a_private_image_loads_quietly_and_unchanged(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    directory = fake_image(tmp_path / "mini-x", mode=0o600)
    directory.chmod(0o700)
    with caplog.at_level(logging.WARNING):
        load_from(directory)
    assert not caplog.records
    assert stat.S_IMODE((directory / "initrd.img").stat().st_mode) & 0o077 in (0, 0o040)


def test_a_shared_or_foreign_cache_directory_is_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # /tmp-like: narrowing it would break everyone else
    private_dir(shared, None)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    made = tmp_path / "made" / "cache"
    private_dir(made, None)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_the_qemu_group_is_only_used_where_this_process_may(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('# group = "libvirt-qemu"\ngroup = "+0"\n')
    monkeypatch.setattr(images, "QEMU_CONF", conf)
    assert qemu_gid() is None  # root's group is no group to share with
    conf.write_text('group = "no-such-group-here"\n')
    assert qemu_gid() is None


def test_an_overlay_is_private(tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing (qemu-utils)")
    base = tmp_path / "cache" / "debian-x" / "disk.qcow2"
    base.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True,
                   timeout=60)
    image = Image("debian", base.parent, base, base, "ssh-ed25519 AAAA", "6.1.0", "x",
                  disk=base)
    with umask(0):
        path = overlay(image, tmp_path / "cache" / "overlays", "g1")
    assert others_bits(path) == 0 and others_bits(path.parent) == 0
    assert stat.S_IMODE(path.stat().st_mode) in (0o600, 0o660)


def test_the_run_key_and_the_lab_host_key_are_private(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None or shutil.which("dropbearkey") is None:
        pytest.skip("ssh-keygen or dropbearkey missing")
    with umask(0):
        key, public = new_run_key(tmp_path / "ssh")
        dropbear_host_key(tmp_path / "lab_host_key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and public.startswith("ssh-ed25519 ")
    assert stat.S_IMODE((tmp_path / "lab_host_key").stat().st_mode) == 0o600


# ---- image builds (slow), and a real other user (root) ---------------------------------------


@pytest.fixture(scope="module")
def workloads() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    return ROOT / "guest-workloads" / "bin"


def key_bytes(initrd: Path) -> bytes:
    done = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", KEY_IN_INITRD],
                          input=gzip.decompress(initrd.read_bytes()), capture_output=True,
                          check=True, timeout=60)
    assert len(done.stdout) > 32
    return done.stdout


def holds(path: Path, secret: bytes) -> bool:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return secret in data


@pytest.mark.slow
def test_a_build_replaces_an_image_whose_key_others_could_read(workloads: Path,
                                                               tmp_path: Path) -> None:
    first = build_mini(tmp_path, workloads)
    assert others_bits(first.initrd) == 0 and others_bits(first.directory) == 0
    first.initrd.chmod(0o644)  # as every build before this change left it
    again = build_mini(tmp_path, workloads)
    assert again.host_key_pub != first.host_key_pub  # the old key may have been copied
    assert others_bits(again.initrd) == 0


@pytest.mark.slow
@pytest.mark.needs_root
def test_no_other_user_can_read_the_mini_images_keys(workloads: Path,
                                                     unprivileged_user: User) -> None:
    image = build_mini(None, workloads)  # the shared cache, as guests use it (built once)
    secret = key_bytes(image.initrd)
    holders = [p for p in sorted(image.directory.iterdir()) if holds(p, secret)]
    assert image.initrd in holders
    gid = qemu_gid()
    for path in [*holders, image.directory, image.directory.parent]:
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) & 0o007 == 0, f"{path}: {oct(st.st_mode)}"
        assert st.st_uid == 0 and st.st_gid in (0, gid), path
    assert unprivileged_user.can_read(Path("/etc/passwd"))  # the user can read what is public
    for path in holders:
        assert not unprivileged_user.can_read(path), path
    done = unprivileged_user.run("ls", str(image.directory))
    assert done.returncode != 0  # not even the names


@pytest.mark.slow
@pytest.mark.needs_root
def test_libvirts_qemu_group_can_still_read_the_image(workloads: Path,
                                                     unprivileged_user: User) -> None:
    """Also where libvirt does not chown the files it hands QEMU (dynamic_ownership = 0)."""
    gid = qemu_gid()
    if gid is None:
        pytest.skip("no libvirt QEMU group on this machine")
    image = build_mini(None, workloads)
    done = subprocess.run(["setpriv", f"--reuid={unprivileged_user.uid}", f"--regid={gid}",
                           "--clear-groups", "--", "cat", str(image.initrd)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == image.initrd.stat().st_size

"""A `debian` guest on a kernel the suite chose: the image's disk (each guest boots its own
overlay of it, as always) with the chosen kernel and a small initramfs made for that kernel.

Debian's initrd in the image is built for the image's kernel, so it cannot load another
kernel's modules. The initramfs made here (images/debian-kernel/init) carries the chosen
kernel's virtio, ext4 and NIC modules with what they need, loads them, mounts the disk and
hands over to the image's systemd; the modules stay loaded, so the guest's network and disk
work without a modules tree of that release on the disk (nothing is written to it). Cached
in the cache's kernels/ by the hash of all it is made of, beside the per-kernel mini images,
with the image's disk linked in (a second name of the same file: no copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from orchestrator.guests.images import (
    BootKernel,
    Image,
    has_module,
    initramfs_root,
    load_from,
    load_image,
    module_order,
    module_path,
    private_umask,
    staged,
    write_cpio,
)
from orchestrator.paths import PROJECT_ROOT

INIT = PROJECT_ROOT / "images" / "debian-kernel" / "init"
# the disk's driver, its file system's, the NIC's (SSH): loaded before the switch to systemd
# (ext4 asks the crypto API for crc32c, a soft dependency modinfo's "depends" does not list)
MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_net")


def debian_around(boot: BootKernel, cache_root: Path) -> Image:
    """The debian image (built by `orchestrate image build debian`) booting `boot`."""
    debian = load_image("debian", cache_root)
    wanted = [m for m in MODULES if has_module(boot.release, m, boot.modules_base)]
    files = [module_path(boot.release, name, boot.modules_base)
             for name in module_order(boot.release, wanted, boot.modules_base)]
    digest = hashlib.sha256(b"debian-kernel-v1\n")
    for part in (debian.recipe_hash, boot.kernel_id, INIT.read_text(), *map(str, files)):
        digest.update(part.encode() + b"\n")
    out = cache_root / "kernels" / f"debian-{digest.hexdigest()[:16]}"
    if (out / "image.json").exists():
        return load_from(out)
    with staged(out) as (staging, root):
        initramfs_root(root, boot.release, init=INIT, executables=["/bin/busybox"],
                       modules=wanted, dirs=("proc", "sys", "dev", "newroot"),
                       modules_base=boot.modules_base)
        with private_umask():
            write_cpio(root, staging / "initrd.img")
            shutil.copyfile(boot.image, staging / "vmlinuz")
            # the very disk (a second name in the same cache): guests boot overlays of it
            os.link(debian.directory / "disk.qcow2", staging / "disk.qcow2")
            image = replace(debian, directory=out, kernel=out / "vmlinuz",
                            initrd=out / "initrd.img", kernel_release=boot.release,
                            recipe_hash=digest.hexdigest()[:16], kernel_id=boot.kernel_id,
                            base_hash=debian.recipe_hash)
            (staging / "image.json").write_text(json.dumps(image.to_dict(), indent=2))
    return load_from(out)

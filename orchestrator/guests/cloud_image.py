"""Images brought by the user: a vendor's cloud image (Ubuntu, Fedora, Debian) or a golden image.

`orchestrate image import NAME FILE` checks that FILE is a disk image (qemu-img says what it
is; a raw file must hold a partition table, since any file reads as "raw"), converts it to
qcow2 into `cloud/NAME/` of the image cache with its SHA-256 (of the file as given, so it
can be compared with the vendor's SHA256SUMS) in `image.json` beside it. How it boots is read
from its partition table once, at import: an EFI system partition means UEFI (OVMF), anything
else BIOS. An ESP whose fallback loader is for another architecture (BOOTAA64.EFI, ...) is
refused; a BIOS-only image's architecture cannot be read this cheaply and is not checked.

Such an image has no kernel file and no host key of its own: it boots through its own boot
loader, and every guest gets a host key made for it (cloud_init.py), so `Image.kernel` is
os.devnull and `host_key_pub` is "" until a guest is booted.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import uuid
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.errors import BadInput, ExitCode
from orchestrator.guests.images import (
    Image,
    private_dir,
    private_mode,
    private_umask,
    qemu_gid,
)

SUFFIXES = (".qcow2", ".img", ".raw")
FORMATS = ("qcow2", "raw")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BUILT = ("mini", "debian")  # the names `image build` makes: never an imported image's
ESP_GUID = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").bytes_le
# the removable-media loaders of UEFI (\EFI\BOOT\BOOT<ARCH>.EFI) that are not x86_64's
OTHER_ARCH_LOADERS = {"BOOTAA64.EFI": "aarch64", "BOOTIA32.EFI": "i386", "BOOTARM.EFI": "arm",
                      "BOOTRISCV64.EFI": "riscv64", "BOOTLOONGARCH64.EFI": "loongarch64"}
SECTOR = 512


def cloud_dir(cache: Path) -> Path:
    return cache / "cloud"


def disk_info(path: Path) -> dict[str, Any]:
    """qemu-img's view of a file; BadInput when it is not a disk image at all."""
    if not path.is_file():
        raise BadInput(f"{path}: no such file", hint="give the path of a .qcow2, .img or .raw")
    done = proc.run(["qemu-img", "info", "--output=json", str(path)], timeout=60, check=False)
    try:
        info: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {}
    except json.JSONDecodeError:
        info = {}
    if info.get("format") not in FORMATS:
        raise BadInput(f"{path} is not a disk image (qemu-img: "
                       f"{info.get('format') or done.stderr.strip()[:80] or 'unreadable'})",
                       hint="import a .qcow2 or raw (.img/.raw) disk image")
    return info


def read_sectors(path: Path, fmt: str, first: int, count: int, out: Path) -> None:
    """Sectors [first, first+count) of the disk into the raw file `out`, in the largest
    blocks that fit (qemu-img dd counts in blocks)."""
    block = next(b for b in (1 << 20, 4096, SECTOR) if not (first * SECTOR) % b
                 and not (count * SECTOR) % b)
    per = block // SECTOR
    proc.run(["qemu-img", "dd", "-f", fmt, "-O", "raw", f"bs={block}", f"skip={first // per}",
              f"count={count // per}", f"if={path}", f"of={out}"], timeout=300)


def partitions(head: bytes) -> tuple[bool, list[tuple[bool, int, int]]] | None:
    """(gpt?, [(is_esp, first sector, sectors)]) from the disk's first 34 sectors; None when
    there is no partition table (no MBR signature)."""
    if len(head) < 2 * SECTOR or head[510:512] != b"\x55\xaa":
        return None
    if head[SECTOR:SECTOR + 8] == b"EFI PART":
        entries_lba, count, size = struct.unpack_from("<QII", head, SECTOR + 72)
        found = []
        for i in range(min(count, 128)):
            at = entries_lba * SECTOR + i * size
            if at + 48 > len(head):
                break
            kind, first, last = head[at:at + 16], *struct.unpack_from("<QQ", head, at + 32)
            if kind != bytes(16):
                found.append((kind == ESP_GUID, first, last - first + 1))
        return True, found
    mbr = []
    for i in range(4):
        at = 0x1BE + 16 * i
        code = head[at + 4]
        first, sectors = struct.unpack_from("<II", head, at + 8)
        if code:
            mbr.append((code == 0xEF, first, sectors))
    return False, mbr


def inspect(path: Path, fmt: str) -> str:
    """The image's firmware, "uefi" or "bios", from its partition table; BadInput for a file
    without one, or an ESP whose loader is for another architecture."""
    with tempfile.TemporaryDirectory(prefix="orch-inspect-") as tmp:
        head = Path(tmp) / "head"
        read_sectors(path, fmt, 0, 34, head)
        table = partitions(head.read_bytes())
        if table is None:
            raise BadInput(f"{path} holds no partition table: not a bootable disk image",
                           hint="import a cloud image (a whole disk with its boot loader)")
        esp = next(((first, size) for is_esp, first, size in table[1] if is_esp), None)
        if esp is None:
            return "bios"
        part = Path(tmp) / "esp"
        read_sectors(path, fmt, esp[0], min(esp[1], 1 << 20), part)  # at most 512 MiB
        _check_arch(path, part)
    return "uefi"


def _check_arch(path: Path, esp: Path) -> None:
    done = proc.run(["mdir", "-b", "-i", str(esp), "::/EFI/BOOT"], timeout=60, check=False,
                    env={"MTOOLS_SKIP_CHECK": "1"})
    names = {Path(line.strip()).name.upper() for line in done.stdout.splitlines()}
    foreign = sorted(OTHER_ARCH_LOADERS[n] for n in names if n in OTHER_ARCH_LOADERS)
    if foreign and "BOOTX64.EFI" not in names:
        raise BadInput(f"{path} is an image for {', '.join(foreign)}, not x86_64",
                       hint="download the amd64/x86_64 build of the image")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name) or name in BUILT:
        raise BadInput(f"{name!r} cannot name an imported image",
                       hint="letters, digits, '.', '_', '-' (up to 64), and not mini or debian")
    return name


def check_file(path: Path) -> dict[str, Any]:
    """A file a guest may boot: the right suffix and a disk image (its qemu-img info)."""
    if path.suffix not in SUFFIXES:
        raise BadInput(f"{path}: not a .qcow2, .img or .raw file",
                       hint="cloud images come as .qcow2 or .img (qcow2 or raw inside)")
    return disk_info(path)


def import_image(name: str, source: Path, cache: Path, *, force: bool = False) -> Image:
    """Checks source and keeps a qcow2 copy of it as cloud/NAME in the cache."""
    check_name(name)
    info = check_file(source)
    out = cloud_dir(cache) / name
    if out.exists() and not force:
        raise BadInput(f"an image named {name} is already imported",
                       hint=f"`orchestrate image rm {name}` first, or --force")
    firmware = inspect(source, info["format"])
    gid = qemu_gid()
    private_dir(out.parent, gid)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{name}-") as tmp:
        staging = Path(tmp) / "image"
        staging.mkdir()
        with private_umask():  # a golden image may hold secrets of its own
            proc.run(["qemu-img", "convert", "-f", info["format"], "-O", "qcow2", str(source),
                      str(staging / "disk.qcow2")], timeout=1800)
        meta = {"kind": "cloud", "name": name, "firmware": firmware,
                "sha256": sha256_of(source), "source": str(source.resolve()),
                "source_format": info["format"], "virtual_size": info.get("virtual-size", 0),
                "imported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        (staging / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
        private_mode(staging / "disk.qcow2", gid)
        (staging / "image.json").chmod(0o644)
        private_mode(staging, gid)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return load_cloud(name, cache)


def _image(meta: dict[str, Any], disk: Path, fmt: str) -> Image:
    return Image("cloud", disk.parent, Path(os.devnull), Path(os.devnull), "", "",
                 meta["sha256"][:16], disk=disk, kernel_id="disk-" + meta["sha256"][:12],
                 firmware=meta["firmware"], name=meta["name"], disk_format=fmt)


def load_cloud(name: str, cache: Path) -> Image:
    meta_file = cloud_dir(cache) / name / "image.json"
    if not meta_file.is_file():
        raise BadInput(f"no image named {name!r}",
                       hint=f"`orchestrate image import {name} FILE`, or see `orchestrate "
                            "image list`")
    meta = json.loads(meta_file.read_text())
    return _image(meta, meta_file.parent / "disk.qcow2", "qcow2")


def load_path(path: Path) -> Image:
    """A disk file named by a suite, used in place (each guest gets an overlay over it)."""
    info = check_file(path)
    firmware = inspect(path, info["format"])
    digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}".encode()).hexdigest()
    meta = {"sha256": digest, "firmware": firmware, "name": path.name}
    return _image(meta, path.resolve(), info["format"])


def is_file_ref(ref: str) -> bool:
    """Whether a suite's `image:` names a file (a path) rather than an image by name."""
    return "/" in ref or ref.endswith(SUFFIXES)


def resolve(ref: str, cache: Path, base_dir: Path) -> Image:
    """A suite guest's image that is neither mini nor debian: a path (relative to the suite's
    directory) or an imported image's name."""
    if is_file_ref(ref):
        path = Path(ref).expanduser()
        return load_path(path if path.is_absolute() else base_dir / path)
    return load_cloud(ref, cache)


def listing(cache: Path) -> list[dict[str, Any]]:
    """Every image in the cache: built ones (newest per kind and hash) and imported ones."""
    rows = []
    for meta_file in sorted(cache.glob("*-*/image.json")):
        data = json.loads(meta_file.read_text())
        disk = meta_file.parent / ("disk.qcow2" if data.get("disk") else "initrd.img")
        rows.append({"name": meta_file.parent.name, "kind": data["kind"],
                     "size": _size(meta_file.parent), "hash": data["recipe_hash"],
                     "kernel": data.get("kernel_release", ""),
                     "when": _when(disk if disk.exists() else meta_file)})
    for meta_file in sorted(cloud_dir(cache).glob("*/image.json")):
        data = json.loads(meta_file.read_text())
        rows.append({"name": data["name"], "kind": f"cloud ({data['firmware']})",
                     "size": _size(meta_file.parent), "hash": data["sha256"][:16],
                     "kernel": "", "when": data["imported_at"]})
    return rows


def _size(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir() if p.is_file())


def _when(path: Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    return stamp.isoformat(timespec="seconds")


def remove(name: str, cache: Path) -> Path:
    """Deletes an imported image, or a built one by its directory name (mini-HASH)."""
    target = cloud_dir(cache) / name if NAME.fullmatch(name) else None
    if target is None or not (target / "image.json").is_file():
        target = cache / name if NAME.fullmatch(name) else None
    if target is None or not (target / "image.json").is_file():
        raise BadInput(f"no image named {name!r} in {cache}",
                       hint="`orchestrate image list` shows the names")
    shutil.rmtree(target)
    return target


# ---- the verbs ---------------------------------------------------------------------------


def add_verbs(verbs: Any) -> None:
    imp = verbs.add_parser("import", help="keep a cloud image (qcow2 or raw disk) in the cache")
    imp.add_argument("name", help="what suites call it (`image: NAME`)")
    imp.add_argument("file", type=Path, help="the .qcow2, .img or .raw disk image")
    imp.add_argument("--force", action="store_true", help="replace an image of that name")
    imp.add_argument("--cache", type=Path, default=None, help="image cache directory")
    imp.set_defaults(func=cmd_import)
    lst = verbs.add_parser("list", help="the images in the cache")
    lst.add_argument("--cache", type=Path, default=None, help="image cache directory")
    lst.set_defaults(func=cmd_list)
    rm = verbs.add_parser("rm", help="delete an image from the cache")
    rm.add_argument("name", help="an imported image's name, or a built one's (mini-HASH)")
    rm.add_argument("--cache", type=Path, default=None, help="image cache directory")
    rm.set_defaults(func=cmd_rm)


def _cache(args: argparse.Namespace) -> Path:
    cache: Path = args.cache or args.settings.image_cache
    return cache.resolve()


def cmd_import(args: argparse.Namespace) -> int:
    image = import_image(args.name, args.file, _cache(args), force=args.force)
    size = image.disk.stat().st_size / 2**20 if image.disk else 0
    print(f"{args.name}: {image.firmware} boot, sha256 {image.recipe_hash}..., "
          f"{size:.0f} MiB qcow2 in {image.directory}")
    return ExitCode.OK


def cmd_list(args: argparse.Namespace) -> int:
    rows = listing(_cache(args))
    if not rows:
        print(f"no images in {_cache(args)} (hint: `orchestrate image build mini`)")
        return ExitCode.OK
    print(f"{'NAME':24} {'KIND':12} {'SIZE':>9} {'HASH':16} {'KERNEL':22} WHEN")
    for row in rows:
        print(f"{row['name']:24} {row['kind']:12} {row['size'] / 2**20:8.0f}M {row['hash']:16} "
              f"{row['kernel'] or '-':22} {row['when']}")
    return ExitCode.OK


def cmd_rm(args: argparse.Namespace) -> int:
    print(f"removed {remove(args.name, _cache(args))}")
    return ExitCode.OK

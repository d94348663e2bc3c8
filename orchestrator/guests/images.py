"""Guest images from Debian packages, cached by a hash of their recipe and inputs.

`mini` is Debian's own kernel plus an initramfs: busybox, dropbear (an SSH server with a host
key generated at build time, so the orchestrator can pin it), perf, the virtio modules and the
guest workloads. It boots to SSH in seconds, even under TCG. The per-run SSH public key comes
in on the kernel command line (`orch.ssh_key=<base64>`), so one image serves every run.

An image's initrd (mini) and disk (debian) hold the guest's SSH host private key: anyone who
reads them can impersonate the guest despite the pinned host key. They are made under umask 077
(never readable by others, not even for a moment) and published readable by root and by
libvirt's QEMU group only (0640 root:libvirt-qemu, or 0600 where there is no such group); the
cache and image directories are 0750 (0700) likewise. A cached image found readable by others is
made private on load, and rebuilt (a new host key) by `image build`: its key may have leaked.
"""

from __future__ import annotations

import argparse
import grp
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.errors import BadInput, ExitCode, HarnessError
from orchestrator.paths import PROJECT_ROOT
from orchestrator.settings import current
from orchestrator.suite.schema import ImageKind

log = logging.getLogger(__name__)

RECIPE_DIR = PROJECT_ROOT / "images" / "mini"
GUEST_BIN = "/opt/workloads/bin"
# The drivers the guest needs; /init loads them and their dependencies, dependencies first.
MODULES = ["virtio_pci", "virtio_net", "virtio_blk", "i6300esb"]
EXECUTABLES = ["/bin/busybox", "/usr/sbin/dropbear", "/usr/bin/perf"]


DEBIAN_DIR = PROJECT_ROOT / "images" / "debian"
DEBIAN_PACKAGES = ["systemd-sysv", "openssh-server", "linux-image-amd64", "stress-ng", "sysbench",
                   "linux-perf", "udev", "iproute2", "ifupdown", "isc-dhcp-client", "procps",
                   "kmod"]
DEBIAN_DISK = "4G"

# What may hold the guest's SSH host private key: readable by root and libvirt's QEMU only.
PRIVATE_FILES = frozenset({"initrd.img", "disk.qcow2"})
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
# libvirt's QEMU processes run as this group unless qemu.conf says `group = ...`: Debian's, then
# Fedora's default
QEMU_GROUPS = ("libvirt-qemu", "qemu")


@dataclass(frozen=True)
class BootKernel:
    """A kernel to assemble a mini image around (orchestrator.guests.kernels makes them)."""

    release: str
    image: Path  # the bzImage
    modules_base: Path | None  # holds lib/modules/RELEASE (modinfo -b); None: all built in
    kernel_id: str
    builtin: tuple[str, ...] = ()  # drivers of MODULES built into the image


@dataclass(frozen=True)
class Image:
    kind: str
    directory: Path
    kernel: Path
    initrd: Path
    host_key_pub: str  # "ssh-ed25519 AAAA..." as generated at build time: pinned by SSH
    kernel_release: str
    recipe_hash: str
    login_user: str = "root"
    disk: Path | None = None  # a qcow2 base image; each guest boots from an overlay of it
    boot_args: str = ""  # what this image needs on the kernel command line
    kernel_id: str = ""  # sha256 of its kernel (12 hex digits): set when a suite chose it
    base_hash: str = ""  # the recipe but the kernel and its modules (mini): same guest otherwise
    # an image brought by the user (cloud_image.py) boots through its own loader: "uefi" or
    # "bios"; "" = direct kernel boot of `kernel` and `initrd` (mini, debian)
    firmware: str = ""
    name: str = ""  # an imported image's name, or a disk file's
    disk_format: str = "qcow2"  # of `disk` (a disk file named by a suite may be raw)

    def to_dict(self) -> dict[str, Any]:
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}


def default_cache_root() -> Path:
    """$ORCH_IMAGE_CACHE, absolute (settings.py): a library caller's default; commands pass
    their settings' image_cache as cache_root."""
    return current().image_cache


# ---- permissions: key material readable by root and libvirt's QEMU only ---------------------


def qemu_gid() -> int | None:
    """The group libvirt's QEMU runs as (qemu.conf's `group`, else the distribution's), if this
    process may give files to it; None: files stay the owner's alone (0600/0700)."""
    names: tuple[str, ...] = QEMU_GROUPS
    try:
        found = re.search(r'^\s*group\s*=\s*"([^"]+)"', QEMU_CONF.read_text(), re.MULTILINE)
    except OSError:  # no libvirt, or not root (the file is 0600)
        found = None
    if found:
        names = (found.group(1),)
    for name in names:
        try:
            gid = int(name[1:]) if name.startswith("+") else grp.getgrnam(name).gr_gid
        except (KeyError, ValueError):
            continue
        if gid == 0 or (os.geteuid() != 0 and gid not in os.getgroups()):
            return None
        return gid
    return None


def private_mode(path: Path, gid: int | None, *, writable: bool = False) -> None:
    """Readable (writable) by the owner and QEMU's group only: 0640 (0660) with the group, else
    0600; a directory 0750, else 0700. Never widens for others, not even for a moment: what
    is too open is closed before the group changes. Does nothing where all is right."""
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        want = 0o700 if gid is None else 0o750
    else:
        want = 0o600 if gid is None else (0o660 if writable else 0o640)
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~want:
        mode &= want & 0o700
        path.chmod(mode)
    if gid is not None and st.st_gid != gid:
        os.chown(path, -1, gid)
    if mode != want:
        path.chmod(want)


def private_dir(path: Path, gid: int | None) -> None:
    """Makes path (0700 from the start) or narrows it, unless it is not ours to narrow: a shared
    directory (sticky, like /tmp) or another user's is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        st = path.stat()
        if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
            return
    private_mode(path, gid)


@contextmanager
def private_umask() -> Iterator[None]:
    """Files made in here (by this process and its children) are the owner's alone."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def exposed(directory: Path) -> list[Path]:
    """The image's files that hold key material and that others may read."""
    return [p for p in sorted(directory.iterdir())
            if p.name in PRIVATE_FILES and p.stat().st_mode & 0o007]


def secure_image(directory: Path) -> list[Path]:
    """Narrows a cached image made before its keys were kept private (or changed since): its
    directory and key-holding files. Returns the files others could read until now."""
    found = exposed(directory)
    gid = qemu_gid()
    try:
        private_mode(directory, gid)
        for path in sorted(directory.iterdir()):
            if path.name in PRIVATE_FILES:
                private_mode(path, gid)
    except OSError as exc:
        log.warning("cannot make the image %s private (%s): run as its owner", directory, exc)
    return found


def installed_kernel() -> tuple[str, Path]:
    """The newest Debian kernel in /boot whose modules are installed."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*-amd64"))
    for kernel in reversed(kernels):
        release = kernel.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / release / "modules.dep").exists():
            return release, kernel
    raise HarnessError("no Debian kernel with modules found in /boot",
                       hint="apt-get install linux-image-amd64 (scripts/setup does)")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe_hash(release: str, kernel: Path, bin_dir: Path,
                modules: Sequence[Path] = ()) -> str:
    """Everything that goes into the image: a change in any of them is a new image."""
    digest = hashlib.sha256(b"mini-v3\n")  # v3: image.json says base_hash
    digest.update(release.encode())
    for path in [kernel, RECIPE_DIR / "init", *map(Path, EXECUTABLES),
                 *sorted(bin_dir.iterdir()), *modules]:
        digest.update(f"{path.name}:{_file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def _modinfo(release: str, base: Path | None) -> list[str]:
    return ["modinfo", *(["-b", str(base)] if base else []), "-k", release]


def base_hash(bin_dir: Path) -> str:
    """A mini image's recipe without its kernel: what two images around different kernels
    must share to be the same guest otherwise (compare judges a kernel by this)."""
    digest = hashlib.sha256(b"mini-base-v1\n")
    for path in [RECIPE_DIR / "init", *map(Path, EXECUTABLES), *sorted(bin_dir.iterdir())]:
        digest.update(f"{path.name}:{_file_digest(path)}\n".encode())
    digest.update(" ".join(MODULES).encode())
    return digest.hexdigest()[:16]


def has_module(release: str, name: str, base: Path | None) -> bool:
    return proc.run([*_modinfo(release, base), "-F", "filename", name], timeout=30,
                    check=False).returncode == 0


def _module_files(release: str, wanted: Sequence[str], base: Path | None) -> list[Path]:
    """The files of the modules an image would carry (for its recipe hash)."""
    return [module_path(release, name, base) for name in module_order(release, list(wanted),
                                                                       base)]


def module_path(release: str, name: str, base: Path | None = None) -> Path:
    """The module's file (`base`: the root holding lib/modules/RELEASE, else /)."""
    done = proc.run([*_modinfo(release, base), "-F", "filename", name], timeout=30)
    return Path(done.stdout.strip().splitlines()[0])


def module_order(release: str, wanted: list[str], base: Path | None = None) -> list[str]:
    """wanted plus their dependencies (modinfo -F depends), each after what it needs; a module
    built into the kernel (modinfo says "(builtin)") is left out: there is nothing to load."""
    order: list[str] = []
    builtin: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in builtin:
            return
        if str(module_path(release, name, base)) == "(builtin)":
            builtin.add(name)
            return
        done = proc.run([*_modinfo(release, base), "-F", "depends", name], timeout=30)
        for dep in filter(None, done.stdout.strip().split(",")):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def shared_libraries(binary: str) -> list[Path]:
    """What the dynamic loader needs for binary (ldd), including the loader itself."""
    done = proc.run(["ldd", binary], timeout=30, check=False)
    libs = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            libs.append(Path(parts[0]))
    return libs


def install_file(src: Path, root: Path, dest: str | None = None, mode: int | None = None) -> None:
    target = root / (dest or str(src)).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, target, follow_symlinks=True)
    if mode is not None:
        target.chmod(mode)


def install_module(src: Path, root: Path, name: str) -> None:
    """A module as /lib/modules/NAME.ko, uncompressed (busybox insmod reads plain .ko)."""
    target = root / "lib/modules" / f"{name}.ko"
    if src.suffix == ".zst":
        proc.run(["zstd", "-dqf", str(src), "-o", str(target)], timeout=120)
    elif src.suffix in (".xz", ".gz"):
        opener = lzma.open if src.suffix == ".xz" else gzip.open
        with opener(src, "rb") as packed, target.open("wb") as out:
            shutil.copyfileobj(packed, out)
    else:
        install_file(src, root, f"/lib/modules/{name}.ko")


def initramfs_root(root: Path, release: str, *, init: Path, executables: Sequence[str],
                   modules: Sequence[str], dirs: Sequence[str],
                   modules_base: Path | None = None) -> None:
    """The frame of every initramfs made here (the guests' and the nested lab host's): empty
    directories, executables with their shared libraries, kernel modules with their
    dependencies (in load order in /etc/modules-order, for /init), and /init itself."""
    for empty in ("etc", *dirs):
        (root / empty).mkdir(parents=True, exist_ok=True)
    for binary in executables:
        install_file(Path(binary), root)
        for lib in shared_libraries(binary):
            install_file(lib, root)
    ordered = module_order(release, list(modules), modules_base)
    (root / "lib/modules").mkdir(parents=True, exist_ok=True)
    for name in ordered:
        install_module(module_path(release, name, modules_base), root, name)
    (root / "etc/modules-order").write_text("\n".join(ordered) + "\n")
    install_file(init, root, "/init", 0o755)


def _populate_root(root: Path, release: str, bin_dir: Path,
                   modules_base: Path | None = None, modules: Sequence[str] = MODULES) -> None:
    initramfs_root(root, release, init=RECIPE_DIR / "init", executables=EXECUTABLES,
                   modules=modules, dirs=("proc", "sys", "dev", "tmp", "run", "root/.ssh",
                                          "var/tmp", "etc/dropbear"),
                   modules_base=modules_base)
    for workload in sorted(bin_dir.iterdir()):
        install_file(workload, root, f"{GUEST_BIN}/{workload.name}", 0o755)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shells").write_text("/bin/sh\n")
    (root / "root").chmod(0o700)
    (root / "root/.ssh").chmod(0o700)


def dropbear_host_key(key: Path) -> str:
    """A new ed25519 host key for dropbear at `key` (0600: dropbearkey makes it so); its
    public line "ssh-ed25519 AAAA...", which SSH then pins."""
    proc.run(["dropbearkey", "-t", "ed25519", "-f", str(key)], timeout=60)
    public = proc.run(["dropbearkey", "-y", "-f", str(key)], timeout=60).stdout
    line = next(x for x in public.splitlines() if x.startswith("ssh-ed25519 "))
    return " ".join(line.split()[:2])


def write_cpio(root: Path, out: Path) -> None:
    """newc cpio of root, gzip-compressed (the kernel unpacks it as the initramfs); both files
    are 0600 from their creation on (an initramfs may carry keys)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join([".", *names]) + "\n"
    raw = out.with_suffix(".cpio")
    with private_umask():
        proc.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "-F", str(raw)],
                 timeout=300, input_text=listing, cwd=root)
    out.unlink(missing_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with raw.open("rb") as src, os.fdopen(fd, "wb") as sink, \
            gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=sink, mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()


def require_workloads(bin_dir: Path | None) -> Path:
    """The built guest workloads every image carries (a clear error if they are not built)."""
    bins = bin_dir or current().workloads_bin
    if not bins.is_dir() or not any(bins.iterdir()):
        raise BadInput(f"no guest workloads in {bins}", hint="run `make -C guest-workloads`")
    return bins


def build_mini(cache_root: Path | None = None, bin_dir: Path | None = None,
               *, force: bool = False, boot: BootKernel | None = None) -> Image:
    """The mini image around this host's newest Debian kernel, or around `boot` (a kernel a
    suite chose: its image goes in kernels/ of the cache, where load_image never looks)."""
    bins = require_workloads(bin_dir)
    release, kernel = (boot.release, boot.image) if boot else installed_kernel()
    base = boot.modules_base if boot else None
    modules = [m for m in MODULES if not boot or m not in boot.builtin]
    if boot and "i6300esb" in modules and not has_module(release, "i6300esb", base):
        modules.remove("i6300esb")  # the watchdog is a safety net, not a need
    digest = recipe_hash(release, kernel, bins, _module_files(release, modules, base)
                         if boot else ())
    cache = cache_root or default_cache_root()
    out = (cache / "kernels" if boot else cache) / f"mini-{digest}"
    if _cached(out, force):
        return load_from(out)
    with staged(out) as (staging, root):
        # the guest's own modes (under the caller's umask)
        _populate_root(root, release, bins, base, modules)
        with private_umask():
            key_line = dropbear_host_key(root / "etc/dropbear/dropbear_ed25519_host_key")
            (staging / "host_key.pub").write_text(key_line + "\n")
            write_cpio(root, staging / "initrd.img")
            shutil.copyfile(kernel, staging / "vmlinuz")
            image = Image("mini", out, out / "vmlinuz", out / "initrd.img", key_line, release,
                          digest, kernel_id=boot.kernel_id if boot else "",
                          base_hash=base_hash(bins))
            (staging / "image.json").write_text(json.dumps(image.to_dict(), indent=2))
    return load_from(out)


@contextmanager
def staged(out: Path) -> Iterator[tuple[Path, Path]]:
    """(staging, root): an image is made in `staging` (from a file tree in `root`, if it needs
    one), in a private temporary directory beside `out`, and published as `out` when the
    with-block ends without an error (see _publish); nothing is left behind otherwise."""
    private_dir(out.parent, qemu_gid())
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # 0700: nothing in it is reachable
        staging, root = Path(tmp) / "image", Path(tmp) / "root"
        staging.mkdir()
        yield staging, root
        _publish(staging, out)


def _cached(out: Path, force: bool) -> bool:
    """A usable cached image: built, and its host key never readable by others (one that was may
    have been copied: it is built again, with a new key)."""
    if force or not (out / "image.json").exists():
        return False
    leaked = secure_image(out)
    if leaked:
        log.warning("the cached image %s was readable by others (%s): its host key may have "
                    "leaked; building it again with a new one", out.name,
                    ", ".join(p.name for p in leaked))
    return not leaked


def load_from(directory: Path) -> Image:
    leaked = secure_image(directory)
    if leaked:
        log.warning("the image %s was readable by others (%s): made private now, but its host "
                    "key may have leaked (hint: `orchestrate image build %s --force` makes a new "
                    "one)", directory, ", ".join(p.name for p in leaked),
                    directory.name.split("-")[0])
    data = json.loads((directory / "image.json").read_text())
    disk = directory / "disk.qcow2" if data.get("disk") else None
    return Image(data["kind"], directory, directory / "vmlinuz", directory / "initrd.img",
                 data["host_key_pub"], data["kernel_release"], data["recipe_hash"],
                 data["login_user"], disk, data.get("boot_args", ""),
                 data.get("kernel_id", ""), data.get("base_hash", ""))


def load_image(kind: str, cache_root: Path | None = None) -> Image:
    """The newest built image of a kind (the executor never builds behind the user's back)."""
    if kind not in {k.value for k in ImageKind}:
        raise BadInput(f"unknown image {kind!r}", hint="images: " + ", ".join(ImageKind))
    root = cache_root or default_cache_root()
    built = sorted(root.glob(f"{kind}-*/image.json"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise BadInput(f"the {kind} image is not built",
                       hint=f"run `orchestrate image build {kind}`")
    return load_from(built[-1].parent)


def add_parser(sub: Any) -> None:
    from orchestrator.guests import cloud_image  # it builds on this module

    image = sub.add_parser("image", help="build, import, list and remove guest images")
    verbs = image.add_subparsers(dest="image_verb", required=True)
    build = verbs.add_parser("build", help="build (or find in the cache) an image")
    build.add_argument("kind", choices=[k.value for k in ImageKind])
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.add_argument("--cache", type=Path, default=None, help="image cache directory")
    build.set_defaults(func=cmd_build)
    cloud_image.add_verbs(verbs)


def cmd_build(args: argparse.Namespace) -> int:
    build = build_debian if args.kind == ImageKind.DEBIAN else build_mini
    image = build(args.cache or args.settings.image_cache, args.settings.workloads_bin,
                  force=args.force)
    size = (image.disk or image.initrd).stat().st_size / 2**20
    print(f"{image.kind} {image.recipe_hash}: {image.directory} (kernel {image.kernel_release}, "
          f"{'disk' if image.disk else 'initrd'} {size:.1f} MiB)")
    return ExitCode.OK


# ---- debian: a bookworm root file system from Debian packages, as a qcow2 --------------------


def debian_hash(bin_dir: Path) -> str:
    """The recipe: packages, recipe files, workloads. The mirror's package versions are not in
    the hash (they move daily); the built image records what it got in packages.txt."""
    digest = hashlib.sha256(b"debian-v1\n")
    digest.update(" ".join(DEBIAN_PACKAGES).encode())
    for path in [*sorted(DEBIAN_DIR.iterdir()), *sorted(bin_dir.iterdir())]:
        digest.update(f"{path.name}:{_file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def _debian_rootfs(root: Path, bin_dir: Path) -> str:
    """mmdebstrap into root, then the orchestrator's pieces; returns the host key line."""
    proc.run(["mmdebstrap", "--quiet", "--variant=minbase",
              "--include=" + ",".join(DEBIAN_PACKAGES), "bookworm", str(root)], timeout=1800)
    install_file(DEBIAN_DIR / "orch-ssh-key", root, "/usr/local/sbin/orch-ssh-key", 0o755)
    install_file(DEBIAN_DIR / "orch-ssh-key.service", root,
             "/etc/systemd/system/orch-ssh-key.service", 0o644)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "orch-ssh-key.service").symlink_to("/etc/systemd/system/orch-ssh-key.service")
    install_file(DEBIAN_DIR / "interfaces", root, "/etc/network/interfaces", 0o644)
    install_file(DEBIAN_DIR / "sshd_config", root, "/etc/ssh/sshd_config", 0o644)
    (root / "etc/hostname").write_text("orch-guest\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    for workload in sorted(bin_dir.iterdir()):
        install_file(workload, root, f"{GUEST_BIN}/{workload.name}", 0o755)
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    key = root / "etc/ssh/ssh_host_ed25519_key"
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orch-guest", "-f",
              str(key)], timeout=60)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def _debian_disk(root: Path, staging: Path) -> str:
    """Kernel and initrd out beside the disk (direct kernel boot); ext4 -> qcow2."""
    kernel = max((root / "boot").glob("vmlinuz-*"))
    release = kernel.name.removeprefix("vmlinuz-")
    shutil.copyfile(kernel, staging / "vmlinuz")  # not copy2: the modes are _publish's
    shutil.copyfile(root / "boot" / f"initrd.img-{release}", staging / "initrd.img")
    raw = staging / "disk.raw"
    proc.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(root), str(raw),
              DEBIAN_DISK], timeout=900)
    proc.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(staging / "disk.qcow2")],
             timeout=900)
    raw.unlink()
    packages = proc.run(["chroot", str(root), "dpkg-query", "-W"], timeout=120).stdout
    (staging / "packages.txt").write_text(packages)
    return release


def build_debian(cache_root: Path | None = None, bin_dir: Path | None = None,
                 *, force: bool = False) -> Image:
    bins = require_workloads(bin_dir)
    digest = debian_hash(bins)
    out = (cache_root or default_cache_root()) / f"debian-{digest}"
    if _cached(out, force):
        return load_from(out)
    with staged(out) as (staging, root):
        key_line = _debian_rootfs(root, bins)  # the root file system keeps Debian's own modes
        with private_umask():  # the disk (and the raw file before it) holds the host key
            (staging / "host_key.pub").write_text(key_line + "\n")
            release = _debian_disk(root, staging)
            image = Image("debian", out, out / "vmlinuz", out / "initrd.img", key_line,
                          release, digest, disk=out / "disk.qcow2",
                          boot_args="root=/dev/vda rw net.ifnames=0")
            (staging / "image.json").write_text(json.dumps(image.to_dict(), indent=2))
    return load_from(out)


def _publish(staging: Path, out: Path) -> None:
    """Key-holding files to root and QEMU's group only, the rest (the kernel, public key,
    metadata) world-readable inside a directory only they can enter; then in place at once."""
    gid = qemu_gid()
    for path in staging.iterdir():
        if path.name in PRIVATE_FILES:
            private_mode(path, gid)
        else:
            path.chmod(0o644)
    private_mode(staging, gid)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def overlay(image: Image, directory: Path, name: str) -> Path:
    """A throw-away copy-on-write layer over the image's disk: runs never change the image. The
    guest writes into it (and its reads of the key come through it): root's and QEMU's only."""
    if image.disk is None:
        raise BadInput(f"the {image.kind} image has no disk", hint="only debian has one")
    if not image.disk.is_file():  # a disk file named by a suite, moved since the run began
        raise BadInput(f"the image disk {image.disk} is gone", hint="check the guest's image:")
    gid = qemu_gid()
    private_dir(directory, gid)
    path = directory / f"{name}.qcow2"
    with private_umask():
        proc.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", image.disk_format, "-b",
                  str(image.disk), str(path)], timeout=60)
    private_mode(path, gid, writable=True)
    return path

"""The kernel a guest boots, made ready before a run: fetched, unpacked, verified, cached.

A suite's `kernel:` (suite/kernel_choice.py) becomes a `Kernel`: a bzImage, the base directory
of its modules (`modinfo -b BASE -k RELEASE` finds them), its .config if known, and the ids
rows carry (a hash of the image, so two builds of one version never merge). Debian packages
come from `apt-get download` and, like local .debs, are unpacked once into the image cache's
`kernels/` directory, keyed by the .deb's hash (depmod run there, as the package's postinst
would). Whatever cannot boot a guest is refused here, before any boot, with one line: a file
that is no bzImage, a missing modules tree, a package apt cannot fetch, a kernel without the
virtio drivers the guest's network and disk need.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.errors import BadInput
from orchestrator.guests.debian_kernel import debian_around
from orchestrator.guests.images import (
    MODULES,
    BootKernel,
    Image,
    build_mini,
    module_order,
    module_path,
    private_dir,
    qemu_gid,
)
from orchestrator.proc import CommandError
from orchestrator.suite.kernel_choice import PACKAGE_RE, BuiltKernel, kind_of

log = logging.getLogger(__name__)

BZIMAGE_MAGIC_AT, BZIMAGE_MAGIC = 0x202, b"HdrS"
VERSION_PTR_AT = 0x20E  # setup header: offset (from 0x200) of the version string
# what a mini guest cannot do without: PCI transport, its NIC (SSH), its disk driver
REQUIRED = ("virtio_pci", "virtio_net", "virtio_blk")
CONFIG_OPTIONS = {"virtio_pci": "CONFIG_VIRTIO_PCI", "virtio_net": "CONFIG_VIRTIO_NET",
                  "virtio_blk": "CONFIG_VIRTIO_BLK"}
# what a debian guest's initramfs loads from a chosen kernel (guests/debian_kernel.py)
DEBIAN_GUEST_MODULES = ("crc32c_generic", "ext4")
# what the nested lab host (L1) loads from a host kernel chosen for it: its shares' and NIC's
# drivers, and KVM (reloaded with npt=1 / npt=0, so a module, never built in)
LAB_HOST_MODULES = ("virtio_pci", "virtio_net", "9pnet_virtio", "9p", "kvm_amd")
KEPT = list(dict.fromkeys([*MODULES, *DEBIAN_GUEST_MODULES, *LAB_HOST_MODULES]))
DEB_LAYOUT = "kernels-deb-v5"  # v4: a mini image's, a debian guest's and the lab host's


@dataclass(frozen=True)
class Kernel:
    source: str  # "package linux-image-...", "deb PATH", "built PATH"
    release: str  # from the image's own header
    image: Path
    modules_base: Path | None  # holds lib/modules/RELEASE; None: everything built in
    config: Path | None
    kernel_id: str  # sha256 of the image, 12 hex digits
    config_hash: str  # sha256 of the .config, 12 hex digits, or ""
    builtin: tuple[str, ...] = ()  # REQUIRED drivers built into the image

    def provenance(self) -> dict[str, Any]:
        return {"source": self.source, "release": self.release, "kernel_id": self.kernel_id,
                "config_hash": self.config_hash, "image": str(self.image),
                "modules": str(self.modules_base or ""), "config": str(self.config or "")}


def digest(path: Path, length: int = 12) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:length]


def bzimage_release(path: Path) -> str:
    """The release a bzImage says it is (its setup header's version string); BadInput if the
    file is not a bzImage."""
    try:
        with path.open("rb") as fh:
            head = fh.read(0x400)
            magic_ok = head[BZIMAGE_MAGIC_AT:BZIMAGE_MAGIC_AT + 4] == BZIMAGE_MAGIC
            pointer = struct.unpack_from("<H", head, VERSION_PTR_AT)[0] if magic_ok else 0
            fh.seek(pointer + 0x200)
            text = fh.read(256).split(b"\0")[0].decode("ascii", "replace")
    except (OSError, struct.error) as exc:
        raise BadInput(f"kernel image {path}: cannot read it ({exc})",
                       hint="give the bzImage `make` built (arch/x86/boot/bzImage)") from None
    if not magic_ok:
        raise BadInput(f"kernel image {path} is not a bzImage (no 'HdrS' at 0x202)",
                       hint="give arch/x86/boot/bzImage, not vmlinux or a compressed file")
    release = text.split(" ")[0]
    if not release:
        raise BadInput(f"kernel image {path} names no release in its header",
                       hint="give the bzImage `make` built (arch/x86/boot/bzImage)")
    return release


def resolve(spec: str | BuiltKernel, *, base_dir: Path, cache_root: Path) -> Kernel:
    """The kernel a suite names, ready to boot (fetched and unpacked if need be) and verified."""
    return verified(_resolved(spec, base_dir=base_dir, cache_root=cache_root))


def _resolved(spec: str | BuiltKernel, *, base_dir: Path, cache_root: Path) -> Kernel:
    kind = kind_of(spec)
    if isinstance(spec, BuiltKernel):
        kernel = _built(spec, base_dir)
    elif kind == "package":
        kernel = _unpacked(fetch_package(spec, cache_root), cache_root, f"package {spec}")
    elif kind == "deb":
        deb = _path(spec, base_dir, "the .deb")
        kernel = _unpacked(deb, cache_root, f"deb {deb}")
    else:
        raise ValueError("the image's own kernel needs no resolving")
    return kernel


def _path(text: str, base_dir: Path, what: str) -> Path:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else (base_dir / path)
    if not path.exists():
        raise BadInput(f"{what} {path} does not exist",
                       hint="relative paths count from the suite file's directory")
    return path.resolve()


def _built(spec: BuiltKernel, base_dir: Path) -> Kernel:
    image = _path(spec.image, base_dir, "kernel image")
    release = bzimage_release(image)
    modules = None
    if spec.modules is not None:
        tree = _path(spec.modules, base_dir, "modules tree")
        modules = _modules_base(tree, release)
    config = _path(spec.config, base_dir, "kernel config") if spec.config else None
    return Kernel(f"built {image}", release, image, modules, config, digest(image),
                  digest(config) if config else "")


def _modules_base(tree: Path, release: str) -> Path:
    """The INSTALL_MOD_PATH holding lib/modules/RELEASE (given itself, or that directory)."""
    for base in (tree, tree.parent.parent.parent):
        found = base / "lib" / "modules" / release
        if found.is_dir() and (base == tree or found == tree):
            if not (found / "modules.dep").exists():
                raise BadInput(f"modules tree {found} has no modules.dep",
                               hint=f"run `depmod -b {base} {release}` (modules_install does)")
            return base
    raise BadInput(f"modules tree {tree} has no lib/modules/{release} (the image's release)",
                   hint="give the INSTALL_MOD_PATH of `make modules_install` for this very build")


def fetch_package(name: str, cache_root: Path) -> Path:
    """The package's .deb from apt (`apt-get download`), kept in the cache's kernels/debs."""
    debs = kernels_dir(cache_root) / "debs"
    private_dir(debs, qemu_gid())
    cached = sorted(debs.glob(f"{name}_*.deb"))
    if cached:
        return cached[-1]
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        done = proc.run(["apt-get", "download", name], timeout=900, check=False, cwd=Path(tmp))
        got = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if done.returncode != 0 or not got:
            why = next((line for line in reversed(done.stderr.splitlines())
                        if line.startswith("E:")), f"exit status {done.returncode}")
            raise BadInput(f"kernel package {name}: apt-get download failed: {why}",
                           hint="check the name (`apt-cache search linux-image`) and apt's "
                                "sources (`apt-get update`)")
        target = debs / got[0].name
        got[0].rename(target)
    log.info("fetched %s", target.name)
    return target


def kernels_dir(cache_root: Path) -> Path:
    """Beside the images: downloaded packages, unpacked kernels, per-kernel mini images."""
    path = cache_root / "kernels"
    private_dir(path, qemu_gid())
    return path


def _unpacked(deb: Path, cache_root: Path, source: str) -> Kernel:
    """A .deb unpacked once into kernels/deb-HASH (its boot/ and lib/modules/, depmod run)."""
    out = kernels_dir(cache_root) / f"deb-{digest(deb, 16)}"
    meta = _meta(out)
    if meta.get("layout") != DEB_LAYOUT or meta.get("modules") != KEPT:
        _unpack(deb, out)
        meta = _meta(out)
    image = out / "root" / meta["image"]
    config = out / "root" / meta["config"] if meta["config"] else None
    return Kernel(source, meta["release"], image, out / "root", config, digest(image),
                  digest(config) if config else "")


def _meta(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / "kernel.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _prune(root: Path, release: str) -> None:
    """Only the modules a mini image or the lab host loads (and what they need) stay: a
    distribution kernel's modules are ~400 MiB, these a few MiB."""
    tree = root / "lib/modules" / release
    present = [m for m in KEPT if _has(root, release, m)]
    try:
        keep = {module_path(release, name, root)
                for name in module_order(release, present, root)}
    except CommandError:  # a dependency is missing: keep everything, verified() will judge
        return
    for module in list(tree.rglob("*.ko*")):
        if module not in keep:
            module.unlink()


def _has(root: Path, release: str, name: str) -> bool:
    done = proc.run(["modinfo", "-b", str(root), "-k", release, "-F", "filename", name],
                    timeout=30, check=False)
    return done.returncode == 0


def _unpack(deb: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        done = proc.run(["dpkg-deb", "-x", str(deb), str(root)], timeout=900, check=False)
        if done.returncode != 0:
            raise BadInput(f"{deb} is not a Debian package ({done.stderr.strip()[:120]})",
                           hint="give a linux-image-*.deb")
        images = sorted((root / "boot").glob("vmlinuz-*"))
        if not images:
            raise BadInput(f"{deb} holds no kernel (no boot/vmlinuz-*)",
                           hint="give a linux-image-* package, not its -dbg or headers")
        release = images[-1].name.removeprefix("vmlinuz-")
        if (root / "lib/modules" / release).is_dir():
            proc.run(["depmod", "-b", str(root), release], timeout=300)
            _prune(root, release)
        config = root / "boot" / f"config-{release}"
        meta = {"layout": DEB_LAYOUT, "modules": KEPT, "deb": deb.name, "release": release,
                "image": str(images[-1].relative_to(root)),
                "config": str(config.relative_to(root)) if config.exists() else ""}
        (Path(tmp) / "kernel.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        Path(tmp).rename(out)
        Path(tmp).mkdir()  # for TemporaryDirectory's own clean-up


def verified(kernel: Kernel) -> Kernel:
    """The kernel, checked: a bzImage of the release it claims, its modules tree that very
    release's, and every REQUIRED driver a module or built in."""
    release = _one_release(kernel)
    builtin = tuple(name for name in REQUIRED if _built_in(kernel, name))
    missing = [name for name in REQUIRED if name not in builtin and not _module(kernel, name)]
    if missing:
        raise BadInput(f"kernel {release} ({kernel.source}) lacks {', '.join(missing)}: "
                       "neither a module nor built in",
                       hint="a mini guest needs virtio: enable " + ", ".join(
                           CONFIG_OPTIONS[m] for m in missing) + " (=y or =m)"
                            + ("" if kernel.modules_base else ", or give modules:"))
    return Kernel(**{**asdict(kernel), "builtin": builtin})


def _one_release(kernel: Kernel) -> str:
    release = bzimage_release(kernel.image)
    if release != kernel.release:
        raise BadInput(f"kernel image {kernel.image} is {release}, its modules are "
                       f"{kernel.release}", hint="give the modules of this very build")
    return release


def _built_in(kernel: Kernel, name: str) -> bool:
    if _listed_builtin(kernel, name):
        return True
    if kernel.config is not None:
        return f"{CONFIG_OPTIONS[name]}=y" in kernel.config.read_text().splitlines()
    return False


def _module(kernel: Kernel, name: str) -> bool:
    if kernel.modules_base is None:
        return False
    done = proc.run(["modinfo", "-b", str(kernel.modules_base), "-k", kernel.release,
                     "-F", "filename", name], timeout=30, check=False)
    return done.returncode == 0 and done.stdout.strip().endswith((".ko", ".ko.xz", ".ko.zst",
                                                                  ".ko.gz"))


@dataclass(frozen=True)
class Prepared:
    """A chosen kernel, verified, and the mini image assembled around it."""

    kernel: Kernel
    image: Image

    def provenance(self) -> dict[str, Any]:
        return {**self.kernel.provenance(), "image_recipe": self.image.recipe_hash}


def prepare(spec: str | BuiltKernel, *, base_dir: Path, cache_root: Path,
            bin_dir: Path | None = None, image_kind: str = "mini") -> Prepared:
    """The kernel resolved and verified, and its image: a mini image around it, or the debian
    image's disk booting it (built once, then cached by the hash of everything in it)."""
    kernel = resolve(spec, base_dir=base_dir, cache_root=cache_root)
    log.info("guest kernel %s (%s, id %s): assembling its %s image", kernel.release,
             kernel.source, kernel.kernel_id, image_kind)
    boot = BootKernel(kernel.release, kernel.image, kernel.modules_base, kernel.kernel_id,
                      kernel.builtin)
    if image_kind == "debian":
        return Prepared(kernel, debian_around(boot, cache_root))
    return Prepared(kernel, build_mini(cache_root, bin_dir, boot=boot))


def lab_host_kernel(spec: str, *, modules: str | None, base_dir: Path,
                    cache_root: Path) -> Kernel:
    """A kernel for the nested lab host (`orchestrate lab run --host-kernel`): a Debian package,
    a .deb, or a bzImage you built (with `modules`, its INSTALL_MOD_PATH). Its image and
    modules must be one release, kvm_amd a module (the lab reloads it with npt=1 or npt=0),
    L1's share drivers modules or built in."""
    if spec.endswith(".deb") or PACKAGE_RE.match(spec):
        if modules is not None:
            raise BadInput("--host-kernel-modules is for a kernel you built",
                           hint="a package or .deb brings its own modules")
        kernel = _resolved(spec, base_dir=base_dir, cache_root=cache_root)
    else:
        kernel = _resolved(BuiltKernel(image=spec, modules=modules), base_dir=base_dir,
                           cache_root=cache_root)
    _one_release(kernel)
    if not _module(kernel, "kvm_amd"):
        raise BadInput(f"host kernel {kernel.release} ({kernel.source}) has no kvm_amd module",
                       hint="the lab reloads KVM with npt=1 / npt=0: build CONFIG_KVM_AMD=m"
                            + ("" if kernel.modules_base else " and give --host-kernel-modules"))
    missing = [m for m in LAB_HOST_MODULES[:-1]
               if not _module(kernel, m) and not _listed_builtin(kernel, m)]
    if missing:
        raise BadInput(f"host kernel {kernel.release} ({kernel.source}) lacks "
                       f"{', '.join(missing)}: neither a module nor built in",
                       hint="the lab host's shares are virtio 9p: CONFIG_NET_9P_VIRTIO, "
                            "CONFIG_9P_FS (=y or =m)")
    return kernel


def _listed_builtin(kernel: Kernel, name: str) -> bool:
    if kernel.modules_base is None:
        return False
    listed = kernel.modules_base / "lib/modules" / kernel.release / "modules.builtin"
    return listed.exists() and name in {
        Path(line.strip()).name.removesuffix(".ko").replace("-", "_")
        for line in listed.read_text().splitlines()}

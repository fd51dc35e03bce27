#!/usr/bin/env python3
"""Build and cache the vdc test guest: a Debian kernel plus a busybox initramfs.

    python tests/guest/build.py [--cache-dir DIR] [--print-paths]

or, from Python, ``build_guest(cache_dir=None) -> GuestPaths``.

Nothing is pinned by hand: the kernel is the ABI package that Debian's ``linux-image-amd64``
currently depends on (the generic kernel: it has 9p, the cloud kernel has not). It is fetched
with ``apt-get download`` (after one ``apt-get update`` if that fails) and unpacked with
``dpkg-deb -x``. Outputs go to ``DIR/<key>`` where DIR defaults to
``${VDC_CACHE_DIR:-/var/cache/vdc}/guest`` and the key is the kernel package, its version and
a hash of this script, init.sh and udhcpc.sh: a warm run only checks that the directory
exists; a changed script builds a new one. A build happens in a temporary directory that is
renamed into place at the end, under a lock, so a killed build never leaves a half cache.

Outputs (``GuestPaths``):

* ``vmlinuz``: the kernel's bzImage (iPXE, OVMF, ``-kernel`` under SeaBIOS; XZ decompression
  costs about 4 s under TCG);
* ``vmlinux``: the same kernel uncompressed, for PVH direct boot (``-kernel vmlinux``), the
  fastest way to boot under TCG;
* ``initrd``: gzip-compressed newc cpio with busybox-static, the needed modules and ``/init``
  (init.sh, whose header lists the ``vdc.*`` kernel parameters and the markers it prints);
* ``disk``: a raw disk image that SeaBIOS boots by itself: MBR, one FAT16 partition with
  SYSLINUX, the kernel and the initrd, command line ``DISK_CMDLINE``. Attach it with
  ``snapshot=on`` (or a qcow2 overlay); it is shared by every test.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (Path(__file__).resolve(), HERE / "init.sh", HERE / "udhcpc.sh")
META_PACKAGE = "linux-image-amd64"
DISK_CMDLINE = "console=ttyS0 quiet"
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")

# Loaded in this order, each after its dependencies. libata drivers come before sr_mod:
# insmod waits for their port probe, so sr_mod then finds the CD drives at once.
MODULES = (
    "ata_piix",
    "ahci",
    "sr_mod",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "9pnet_virtio",
    "9p",
    "qemu_fw_cfg",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "evdev",
    "button",
    "e1000",
    "e1000e",
    "efivarfs",
)
# Must exist, as a module or built in: the guest is useless for its tests without them.
REQUIRED = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "9pnet_virtio", "9p")
REQUIRED += ("qemu_fw_cfg", "isofs", "evdev", "button", "tpm_tis", "tpm_crb")


@dataclass(frozen=True)
class GuestPaths:
    dir: Path
    vmlinuz: Path
    vmlinux: Path
    initrd: Path
    disk: Path
    kernel_version: str  # e.g. 6.1.0-56-amd64 (the modules' directory name)
    kernel_package: str  # e.g. linux-image-6.1.0-56-amd64
    package_version: str  # e.g. 6.1.192-2
    disk_cmdline: str  # the kernel command line baked into the disk image

    def as_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"guest: {msg}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    return Path(os.environ.get("VDC_CACHE_DIR") or "/var/cache/vdc") / "guest"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("check", True)
    kw.setdefault("text", True)
    kw.setdefault("capture_output", True)
    try:
        return subprocess.run(cmd, **kw)
    except subprocess.CalledProcessError as e:
        raise BuildError(f"{' '.join(cmd)} failed (rc {e.returncode}): {e.stderr.strip()}") from e
    except FileNotFoundError as e:
        raise BuildError(f"{cmd[0]} not found: install it (scripts/install-deps.sh)") from e


def scripts_hash() -> str:
    h = hashlib.sha256()
    for p in SOURCES:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


# --- which kernel ------------------------------------------------------------------------


def _apt_fingerprint() -> str:
    """Changes whenever apt's answer may change: package lists and apt configuration."""
    h = hashlib.sha256()
    for top in (Path("/var/lib/apt/lists"), Path("/etc/apt")):
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(root, name))
                    h.update(f"{root}/{name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _apt_resolve() -> tuple[str, str] | None:
    """(ABI package, version) that linux-image-amd64's candidate depends on, or None."""
    r = run(["apt-cache", "show", "--no-all-versions", META_PACKAGE], check=False)
    if r.returncode != 0:
        return None
    m = re.search(
        r"^Depends:.*?\b(linux-image-[0-9][^\s,(]*)\s*(?:\(=\s*([^)\s]+)\))?", r.stdout, re.M
    )
    if not m:
        return None
    pkg, version = m.group(1), m.group(2)
    if not version:  # not an exact dependency: ask for the candidate
        r = run(["apt-cache", "policy", pkg], check=False)
        m = re.search(r"^\s*Candidate:\s*(\S+)", r.stdout, re.M)
        if not m or m.group(1) == "(none)":
            return None
        version = m.group(1)
    return pkg, version


def resolve_kernel(base: Path, *, refresh: bool = False) -> tuple[str, str] | None:
    """The answer is remembered with a fingerprint of apt's lists (apt-cache takes about 1 s
    here because the package cache is disabled), so a warm run does not ask apt."""
    memo = base / "resolve.json"
    fp = _apt_fingerprint()
    if not refresh:
        with contextlib.suppress(OSError, ValueError, KeyError):
            d = json.loads(memo.read_text())
            if d["fingerprint"] == fp:
                return d["package"], d["version"]
    res = _apt_resolve()
    if res:
        with contextlib.suppress(OSError):
            tmp = memo.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": fp, "package": res[0], "version": res[1]}))
            tmp.replace(memo)
    return res


def cache_key(pkg: str, version: str) -> str:
    return f"{pkg}_{version.replace(':', '%3a')}_{scripts_hash()}"


def load(dir_: Path) -> GuestPaths | None:
    try:
        d = json.loads((dir_ / "manifest.json").read_text())
        paths = GuestPaths(
            dir=dir_,
            vmlinuz=dir_ / d["vmlinuz"],
            vmlinux=dir_ / d["vmlinux"],
            initrd=dir_ / d["initrd"],
            disk=dir_ / d["disk"],
            kernel_version=d["kernel_version"],
            kernel_package=d["kernel_package"],
            package_version=d["package_version"],
            disk_cmdline=d["disk_cmdline"],
        )
    except (OSError, ValueError, KeyError):
        return None
    if all(p.is_file() for p in (paths.vmlinuz, paths.vmlinux, paths.initrd, paths.disk)):
        return paths
    return None


def newest_build(base: Path) -> GuestPaths | None:
    """The newest complete build made by these very scripts, whatever its kernel."""
    builds = sorted(base.glob(f"*_{scripts_hash()}"), key=lambda p: p.stat().st_mtime)
    return next((paths for p in reversed(builds) if (paths := load(p))), None)


# --- the build ---------------------------------------------------------------------------


@contextlib.contextmanager
def locked(base: Path) -> Iterator[None]:
    with open(base / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def download(base: Path, pkg: str, version: str) -> Path:
    """The .deb in base/downloads; apt-get writes into a scratch directory first, so a killed
    download never leaves a truncated .deb under the final name."""
    dl = base / "downloads"
    dl.mkdir(exist_ok=True)
    deb = dl / f"{pkg}_{version.split(':')[-1]}_amd64.deb"
    if deb.is_file():
        return deb
    log(f"downloading {pkg}={version} with apt-get download")
    scratch = Path(tempfile.mkdtemp(prefix=".partial-", dir=dl))
    try:
        cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", f"{pkg}={version}"]
        run(cmd, cwd=scratch)
        found = list(scratch.glob(f"{pkg}_*.deb"))
        if len(found) != 1:
            raise BuildError(f"apt-get download {pkg}={version} left {found} in {scratch}")
        found[0].rename(deb)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"downloaded {deb.name}, {deb.stat().st_size / 1e6:.0f} MB")
    return deb


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel from an XZ-compressed bzImage (PVH boot needs the ELF)."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise BuildError("no XZ payload in the bzImage (not Debian's generic kernel?)")
    d = lzma.LZMADecompressor()
    elf = d.decompress(bzimage[start:])
    if not d.eof or not elf.startswith(b"\x7fELF"):
        raise BuildError("the bzImage's XZ payload is not a complete ELF kernel")
    return elf


def module_files(root: Path, kver: str) -> list[Path]:
    """Absolute module paths in load order, dependencies first, no duplicates."""
    mdir = root / "lib/modules" / kver
    builtin = {
        Path(line).name.split(".")[0].replace("-", "_")
        for line in (mdir / "modules.builtin").read_text().split()
    }
    out: list[Path] = []
    found: set[str] = set()
    for name in MODULES:
        r = run(["modprobe", "-d", str(root), "-S", kver, "--show-depends", name], check=False)
        if r.returncode != 0:
            if name in REQUIRED:
                raise BuildError(f"module {name} missing: {r.stderr.strip()}")
            log(f"module {name} not available, skipped")
            continue
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["insmod"] and Path(parts[1]) not in out:
                out.append(Path(parts[1]))
        found.add(name)
    have = found | builtin | {p.name.split(".")[0].replace("-", "_") for p in out}
    missing = [m for m in REQUIRED if m.replace("-", "_") not in have]
    if missing:
        raise BuildError(f"kernel {kver} lacks {', '.join(missing)}")
    return out


class Cpio:
    """A newc archive written directly: device nodes need no mknod, timestamps are 0."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        fields = (self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0)
        fields += (*rdev, len(name) + 1, 0)
        self.ino += 1
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.buf.write(head + b"\0" * (-len(head) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        if not name or name in self.dirs:
            return
        self.dir(os.path.dirname(name))
        if name not in self.dirs:
            self.dirs.add(name)
            self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.dir(os.path.dirname(name))
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initrd(root: Path, kver: str, out: Path) -> int:
    busybox = shutil.which("busybox") or "/bin/busybox"
    bb = Path(busybox).read_bytes()
    if b"/ld-linux" in bb[:4096]:  # a dynamic busybox has an ELF interpreter
        raise BuildError("busybox-static is needed (apt-get install busybox-static)")
    c = Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "root", "etc"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", bb, 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", (HERE / "init.sh").read_bytes(), 0o755)
    c.file("udhcpc.sh", (HERE / "udhcpc.sh").read_bytes(), 0o755)
    c.file("etc/hostname", b"vdc-guest\n")
    listed = []
    mods = module_files(root, kver)
    for p in mods:
        rel = p.relative_to(root).as_posix()
        data = p.read_bytes()
        if rel.endswith(".xz"):
            data, rel = lzma.decompress(data), rel[:-3]
        elif rel.endswith(".zst"):
            raise BuildError(f"{rel}: zstd-compressed modules are not supported")
        c.file(rel, data)
        listed.append(rel)
    c.file("modules.list", ("\n".join(listed) + "\n").encode())
    out.write_bytes(gzip.compress(c.finish(), compresslevel=9, mtime=0))
    return len(mods)


def build_disk(vmlinuz: Path, initrd: Path, out: Path, work: Path) -> None:
    """MBR (SYSLINUX's mbr.bin) + one bootable FAT16 partition at 1 MiB with SYSLINUX,
    all made with mtools and sfdisk on plain files: no loop device, no mount."""
    mib = 1 << 20
    need = vmlinuz.stat().st_size + initrd.stat().st_size
    part_size = max(32 * mib, -(-(need + 8 * mib) // mib) * mib)
    start = 2048  # sectors
    part = work / "part.img"
    with open(part, "wb") as f:
        f.truncate(part_size)
    run(["mkfs.vfat", "-F", "16", "-n", "VDCBOOT", "-h", str(start), "-i", "0dc0ffee", str(part)])
    cfg = work / "syslinux.cfg"
    cfg.write_text(
        "DEFAULT vdc\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL vdc\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND {DISK_CMDLINE}\n"
    )
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for src, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.gz"), (cfg, "syslinux.cfg")):
        run(["mcopy", "-i", str(part), str(src), f"::/{name}"], env=env)
    run(["syslinux", "--install", str(part)], env=env)  # Debian's syslinux uses mtools

    with open(out, "wb") as f:
        f.truncate(start * 512 + part_size)
    run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(out)],
        input=f"label: dos\nlabel-id: 0x0dc0ffee\nstart={start}, type=e, bootable\n",
    )
    mbr = SYSLINUX_MBR.read_bytes()[:440]
    with open(out, "r+b") as f:
        f.write(mbr)
        f.seek(start * 512)
        with open(part, "rb") as p:  # sparse: holes where the partition is all zeros
            while chunk := p.read(64 << 10):
                if chunk.count(0) == len(chunk):
                    f.seek(len(chunk), os.SEEK_CUR)
                else:
                    f.write(chunk)
    part.unlink()


def _build(base: Path, key: str, pkg: str, version: str, deb: Path) -> GuestPaths:
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=base))
    try:
        t = time.monotonic()
        log(f"unpacking {deb.name} with dpkg-deb -x")
        root = tmp / "root"
        run(["dpkg-deb", "-x", str(deb), str(root)])
        kvers = sorted(p.name for p in (root / "lib/modules").iterdir())
        if len(kvers) != 1:
            raise BuildError(f"expected one kernel in {deb.name}, found {kvers}")
        kver = kvers[0]
        run(["depmod", "-b", str(root), kver])
        log(f"kernel {kver} unpacked in {time.monotonic() - t:.1f} s")

        out = tmp / "out"
        out.mkdir()
        shutil.copyfile(root / "boot" / f"vmlinuz-{kver}", out / "vmlinuz")
        t = time.monotonic()
        (out / "vmlinux").write_bytes(extract_vmlinux((out / "vmlinuz").read_bytes()))
        log(f"vmlinux extracted for PVH boot in {time.monotonic() - t:.1f} s")

        n = build_initrd(root, kver, out / "initrd.gz")
        size = (out / "initrd.gz").stat().st_size
        log(f"initrd.gz: busybox, /init and {n} modules, {size / 1e6:.1f} MB")
        shutil.rmtree(root)

        build_disk(out / "vmlinuz", out / "initrd.gz", out / "disk.raw", tmp)
        log("disk.raw: MBR + FAT16 + SYSLINUX, boots by itself under SeaBIOS")

        manifest = {
            "vmlinuz": "vmlinuz",
            "vmlinux": "vmlinux",
            "initrd": "initrd.gz",
            "disk": "disk.raw",
            "kernel_version": kver,
            "kernel_package": pkg,
            "package_version": version,
            "disk_cmdline": DISK_CMDLINE,
            "scripts_hash": scripts_hash(),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        final = base / key
        os.rename(out, final)  # the one step that makes the build visible
        paths = load(final)
        assert paths is not None
        return paths
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prune(base: Path, keep: str) -> None:
    """Remove leftovers of killed builds and all but the three newest older builds."""
    for p in [*base.glob(".tmp-*"), *base.glob("downloads/.partial-*")]:
        shutil.rmtree(p, ignore_errors=True)
    old = sorted(
        (p for p in base.iterdir() if p.name != keep and (p / "manifest.json").is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    for p in old[:-3]:
        log(f"removing old build {p.name}")
        shutil.rmtree(p, ignore_errors=True)
    pkg = keep.split("_")[0]
    for deb in (base / "downloads").glob("linux-image-*.deb"):
        if not deb.name.startswith(pkg + "_"):
            deb.unlink(missing_ok=True)


def build_guest(cache_dir: Path | None = None) -> GuestPaths:
    """Build the test guest if needed and return its paths (a warm call takes milliseconds)."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    res = resolve_kernel(base)
    if res and (paths := load(base / cache_key(*res))):
        return paths

    t0 = time.monotonic()
    with locked(base):
        updated = False
        if res is None:
            log("apt cannot resolve linux-image-amd64: running apt-get update")
            try:
                apt_update()
            except BuildError:
                if paths := newest_build(base):  # offline: the last good build will do
                    log(f"apt-get update failed; using the newest build, {paths.dir.name}")
                    return paths
                raise
            updated = True
            res = resolve_kernel(base, refresh=True)
            if res is None:
                raise BuildError("apt-cache cannot resolve linux-image-amd64's kernel package")
        if paths := load(base / cache_key(*res)):  # built by another process meanwhile
            return paths
        pkg, version = res
        log(f"building the test guest from {pkg} {version} in {base}")
        try:
            deb = download(base, pkg, version)
        except BuildError as e:
            if updated:
                raise
            log(f"download failed ({e}); running apt-get update once and retrying")
            apt_update()
            pkg, version = resolve_kernel(base, refresh=True) or (pkg, version)
            if paths := load(base / cache_key(pkg, version)):
                return paths
            deb = download(base, pkg, version)
        key = cache_key(pkg, version)
        paths = _build(base, key, pkg, version, deb)
        _prune(base, key)
    log(f"built {paths.dir} in {time.monotonic() - t0:.1f} s")
    return paths


def apt_update() -> None:
    t = time.monotonic()
    run(["apt-get", "update", "-q"])
    log(f"apt-get update done in {time.monotonic() - t:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache-dir", type=Path, help="default: ${VDC_CACHE_DIR:-/var/cache/vdc}/guest"
    )
    ap.add_argument("--print-paths", action="store_true", help="print the outputs as JSON")
    args = ap.parse_args(argv)
    try:
        paths = build_guest(args.cache_dir)
    except BuildError as e:
        print(f"guest: error: {e}", file=sys.stderr)
        return 1
    if args.print_paths:
        print(json.dumps(paths.as_json(), indent=2))
    else:
        log(f"ready: {paths.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

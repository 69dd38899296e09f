#!/usr/bin/env python3
"""Turn a research VM's root file tree (a ``podman export`` tar) into its bootable disk images.

Runs on the Ansible controller (role research_image), without mounts or loop devices:

- the root is unpacked, the container's leftovers are replaced by a VM's files
  (``/etc/resolv.conf``, ``/etc/hosts``, ``/etc/hostname``, an empty ``/etc/machine-id``), the
  kernel and Debian's initramfs are moved out of ``/boot`` onto the boot partition, and every
  time stamp later than ``--epoch`` is clamped to it (SOURCE_DATE_EPOCH);
- one raw disk file: an MBR (syslinux's ``mbr.bin``), partition 1 FAT32 (bootable) with
  syslinux, the kernel, the initramfs and ``syslinux.cfg``; partition 2 ext4 made from the tree
  with ``mkfs.ext4 -d``, with a fixed UUID and hash seed, and ``--free-mb`` of free space for
  job scratch (sparse: the images store no zeros);
- ``qemu-img convert`` makes the qcow2 (QEMU, compressed) and the VDI (VirtualBox), whose
  creation and modification UUIDs are set from the disk's content, so that the same disk
  always gives the same VDI.

SeaBIOS (QEMU's q35) and VirtualBox's BIOS both boot it: the MBR loads the active partition's
syslinux boot sector, which loads the kernel and initramfs; ``root=UUID=...`` finds the root on
virtio-blk or SATA/AHCI alike. Prints a JSON summary on its last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

SECTOR = 512
MIB = 1 << 20
#: Partition 1 starts at 1 MiB, as every current partitioning tool aligns it.
BOOT_START = MIB
SYSLINUX_MBR = ("/usr/lib/SYSLINUX/mbr.bin", "/usr/lib/syslinux/mbr/mbr.bin")
# Where the VDI header keeps its creation and modification UUIDs (VDI 1.1 header).
VDI_UUID_CREATE = 0x188
VDI_UUID_MODIFY = 0x198
VDI_SIGNATURE = b"\x7f\x10\xda\xbe"


def run(argv: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(
            f"build_disk: {' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )


def unpack(tar_path: Path, root: Path) -> None:
    """Unpack the container's export with owners, modes and extended attributes kept."""
    root.mkdir(mode=0o755)
    run(
        [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "-xpf",
            str(tar_path),
            "-C",
            str(root),
        ]
    )


def make_vm_files(root: Path, hostname: str, drop: list[str]) -> None:
    """Replace what a container leaves behind with a VM's files."""
    for rel in drop:  # mount points of the build container (the local apt repository)
        path = root / rel.lstrip("/")
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for rel in ("etc/resolv.conf", "etc/hosts", "etc/hostname", "etc/machine-id", ".dockerenv"):
        path = root / rel
        if path.is_symlink() or path.exists():
            path.unlink()
    # QEMU's user-mode NAT and VirtualBox's NAT both answer DNS at 10.0.2.3.
    (root / "etc/resolv.conf").write_text(
        "# Written by the research VM image build (role research_image): the hypervisor's NAT\n"
        "# (QEMU user-mode networking, VirtualBox NAT) answers DNS here.\nnameserver 10.0.2.3\n"
    )
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    (root / "etc/hostname").write_text(hostname + "\n")
    # Empty: systemd gives every VM its own machine id at boot.
    (root / "etc/machine-id").write_text("")
    for rel in ("etc/resolv.conf", "etc/hosts", "etc/hostname", "etc/machine-id"):
        os.chmod(root / rel, 0o644)
    # ldconfig's auxiliary cache records inode numbers and change times of the build: not
    # reproducible, and only a cache (ldconfig rebuilds it).
    aux = root / "var/cache/ldconfig/aux-cache"
    if aux.exists():
        aux.unlink()
    # Runtime directories are tmpfs in the VM; the container's content means nothing there.
    for rel in ("run", "tmp", "var/tmp"):
        directory = root / rel
        for child in directory.iterdir() if directory.is_dir() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def take_boot_files(root: Path, dest: Path) -> str:
    """Move the one kernel and its initramfs out of the root's /boot; returns the version."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        sys.exit(f"build_disk: expected one kernel in /boot, found {[k.name for k in kernels]}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        sys.exit(f"build_disk: /boot has no initrd.img-{version} (update-initramfs did not run)")
    shutil.move(str(kernels[0]), dest / "vmlinuz")
    shutil.move(str(initrd), dest / "initrd.img")
    # The symlinks Debian's kernel package keeps at / point at the moved files.
    for link in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        path = root / link
        if path.is_symlink():
            path.unlink()
    return version


def clamp_times(top: Path, epoch: int) -> None:
    """Every time stamp later than ``epoch`` becomes ``epoch`` (SOURCE_DATE_EPOCH)."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames, "."]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if st.st_mtime > epoch or st.st_atime > epoch:
                os.utime(path, (epoch, min(int(st.st_mtime), epoch)), follow_symlinks=False)


def fix_inode_times(disk: Path, offset: int, top: Path, epoch: int, env: dict[str, str]) -> int:
    """Set every inode's change and access time to ``epoch`` in the ext4 file system at
    ``offset``: ``mkfs.ext4 -d`` copies the source's ctime, which no call can set (it is the
    time the build unpacked the root). Returns how many paths were left out (names debugfs
    cannot quote)."""
    commands, skipped = [f"sif / {field} @{epoch}" for field in ("ctime", "atime")], 0
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = "/" + os.path.relpath(os.path.join(dirpath, name), top)
            if '"' in path or "\n" in path or "\\" in path:
                skipped += 1
                continue
            for field in ("ctime", "atime"):
                commands.append(f'sif "{path}" {field} @{epoch}')
    commands.append(f"sif /lost+found ctime @{epoch}")
    script = disk.parent / "debugfs.cmds"
    script.write_text("\n".join(commands) + "\n")
    run(["debugfs", "-w", "-f", str(script), f"{disk}?offset={offset}"], env)
    script.unlink()
    return skipped


def used_bytes(top: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_blocks * 512
    return total


def mbr(boot_sectors: int, root_start: int, root_sectors: int, disk_id: int) -> bytes:
    """syslinux's MBR code with a partition table: 1 FAT32 (LBA, active), 2 Linux."""
    code = next((Path(p).read_bytes() for p in SYSLINUX_MBR if Path(p).exists()), None)
    if code is None:
        sys.exit(f"build_disk: syslinux's mbr.bin is missing ({', '.join(SYSLINUX_MBR)})")
    code = code[:440].ljust(440, b"\0")

    def entry(active: bool, kind: int, start: int, sectors: int) -> bytes:
        chs = b"\xfe\xff\xff"  # beyond CHS: the BIOS and the boot code use LBA
        return (
            bytes([0x80 if active else 0])
            + chs
            + bytes([kind])
            + chs
            + struct.pack("<II", start, sectors)
        )

    table = (
        entry(True, 0x0C, BOOT_START // SECTOR, boot_sectors)
        + entry(False, 0x83, root_start, root_sectors)
        + bytes(32)
    )
    return code + struct.pack("<I", disk_id) + b"\0\0" + table + b"\x55\xaa"


def syslinux_cfg(root_uuid: str, cmdline_extra: str) -> str:
    append = f"root=UUID={root_uuid} rw console=tty0 console=ttyS0,115200n8 {cmdline_extra}".strip()
    return (
        "# The research VM's boot entry (role research_image).\n"
        "DEFAULT research-vm\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL research-vm\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND {append}\n"
    )


def set_vdi_uuids(path: Path, seed: bytes) -> str:
    """Give the VDI UUIDs derived from the disk's content (qemu-img picks random ones)."""
    with open(path, "r+b") as fh:
        header = fh.read(VDI_UUID_MODIFY + 16)
        if header[64:68] != VDI_SIGNATURE:
            sys.exit(f"build_disk: {path} is not a VDI file")
        ident = uuid.UUID(bytes=hashlib.sha256(b"vdi-create" + seed).digest()[:16], version=4)
        modify = uuid.UUID(bytes=hashlib.sha256(b"vdi-modify" + seed).digest()[:16], version=4)
        # VirtualBox stores UUIDs in the little-endian layout of Windows GUIDs.
        fh.seek(VDI_UUID_CREATE)
        fh.write(ident.bytes_le)
        fh.seek(VDI_UUID_MODIFY)
        fh.write(modify.bytes_le)
    return str(ident)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build(args: argparse.Namespace) -> dict[str, object]:
    out = Path(args.out_dir)
    epoch = int(args.epoch)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), E2FSPROGS_FAKE_TIME=str(epoch), TZ="UTC")
    with tempfile.TemporaryDirectory(dir=out, prefix=".work-") as tmp:
        work = Path(tmp)
        root = work / "root"
        boot = work / "boot"
        boot.mkdir()
        unpack(Path(args.rootfs_tar), root)
        make_vm_files(root, args.hostname, args.drop)
        kernel = take_boot_files(root, boot)
        (boot / "syslinux.cfg").write_text(syslinux_cfg(args.root_uuid, args.cmdline_extra))
        clamp_times(root, epoch)
        clamp_times(boot, epoch)

        used = used_bytes(root)
        boot_bytes = int(args.boot_mb) * MIB
        # ext4 metadata (inode tables, journal) takes about 6%, plus the free space asked for.
        root_bytes = -(-(used * 108 // 100 + 64 * MIB + int(args.free_mb) * MIB) // MIB) * MIB
        root_start = BOOT_START + boot_bytes
        total = root_start + root_bytes
        disk = work / "disk.raw"
        with open(disk, "wb") as fh:
            fh.truncate(total)

        # The FAT volume is made in its own file, then copied into the disk at 1 MiB: mkfs.fat
        # sizes clusters by the whole file, so it would pick clusters too big for FAT32 in place.
        fat = work / "boot.img"
        run(
            [
                "mkfs.vfat",
                "-C",
                "-F",
                "32",
                "-n",
                "GRIDBOOT",
                "--invariant",
                "-h",
                str(BOOT_START // SECTOR),
                str(fat),
                str(boot_bytes // 1024),
            ],
            env,
        )
        run(["syslinux", "--install", str(fat)], env)
        for name in ("vmlinuz", "initrd.img", "syslinux.cfg"):
            run(["mcopy", "-m", "-i", str(fat), str(boot / name), f"::{name}"], env)
        with open(fat, "rb") as src, open(disk, "r+b") as dst:
            dst.seek(BOOT_START)
            shutil.copyfileobj(src, dst, 4 * MIB)
        fat.unlink()
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                "grid-root",
                "-U",
                args.root_uuid,
                "-E",
                f"offset={root_start},hash_seed={args.root_uuid},root_owner=0:0",
                "-d",
                str(root),
                str(disk),
                f"{root_bytes // 1024}k",
            ],
            env,
        )
        skipped = fix_inode_times(disk, root_start, root, epoch, env)
        with open(disk, "r+b") as fh:
            disk_id = int(args.root_uuid.replace("-", "")[:8], 16)
            fh.write(mbr(boot_bytes // SECTOR, root_start // SECTOR, root_bytes // SECTOR, disk_id))
        raw_sha = sha256_file(disk)

        qcow2 = out / f"{args.stem}.qcow2"
        vdi = out / f"{args.stem}.vdi"
        run(
            [
                "qemu-img",
                "convert",
                "-q",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                "compression_type=zlib",
                str(disk),
                str(qcow2),
            ],
            env,
        )
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vdi", str(disk), str(vdi)], env)
        vdi_uuid = set_vdi_uuids(vdi, bytes.fromhex(raw_sha))
        for path in (qcow2, vdi):
            os.chmod(path, 0o644)
        return {
            "kernel": kernel,
            "disk_bytes": total,
            "boot_bytes": boot_bytes,
            "root_bytes": root_bytes,
            "root_used_bytes": used,
            "inode_times_not_fixed": skipped,
            "raw_sha256": raw_sha,
            "qcow2": {
                "file": qcow2.name,
                "bytes": qcow2.stat().st_size,
                "sha256": sha256_file(qcow2),
            },
            "vdi": {
                "file": vdi.name,
                "bytes": vdi.stat().st_size,
                "sha256": sha256_file(vdi),
                "uuid": vdi_uuid,
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs-tar", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--stem", required=True, help="image file name without its extension")
    parser.add_argument("--root-uuid", required=True)
    parser.add_argument("--hostname", default="research-vm")
    parser.add_argument("--boot-mb", type=int, default=128)
    parser.add_argument("--free-mb", type=int, default=2048)
    parser.add_argument("--epoch", type=int, required=True, help="SOURCE_DATE_EPOCH")
    parser.add_argument("--cmdline-extra", default="")
    parser.add_argument("--drop", action="append", default=[], help="empty mount point to remove")
    args = parser.parse_args()
    uuid.UUID(args.root_uuid)  # a malformed UUID stops here, with its message
    summary = build(args)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The research VM image build: sizes, cold and cached build times, reproducibility, boot time.

Runs the real `ansible-playbook playbooks/build_image.yml` on the lab inventory, publication
off, with its own build caches under ~/.cache/desktop-grid/images-bench/ (a and b):

1. a cold build into cache a, then the same command again (cached: it must change nothing);
2. a second cold build from the same inputs into cache b, and a comparison of the two builds'
   raw disk, qcow2 and VDI digests. When they differ, the MBR, the boot partition and the root
   partition are compared separately, and for a differing root the files whose content or
   metadata differ are listed (debugfs), so that the cause is named;
3. boots under the agent's QEMU driver (tests/image_boot.py): KVM when it really runs guests,
   and TCG; time from QEMU's start to systemd, to the seed read and to the boot report (the
   DHCP address), then the ACPI power button.

Prints figures; asserts nothing but that each step ran. Needs root, podman, the Debian 13 base
image and its apt repository (scripts/testhosts.sh), QEMU and minisign (scripts/test-deps.sh).

Usage: python bench/image_build.py [--keep] [--no-boot] [--no-second-build]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from image_boot import boot  # noqa: E402

from cvmc.agent.adapters.qemu import QemuDriver  # noqa: E402

VM = "its-u11-boinc-20120415"
HOME = Path(os.environ.get("HOME", "/root")) / ".cache/desktop-grid"
BENCH = HOME / "images-bench"
KEY_PUB = HOME / "lab-grid-image-signing.key.pub"
MIB = 1 << 20


def playbook(cache: Path) -> tuple[float, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(ROOT / "inventories/lab"),
        str(ROOT / "playbooks/build_image.yml"),
        "-e",
        "research_image_publish=false",
        "-e",
        f"research_image_cache_dir={cache}",
    ]
    start = time.monotonic()
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if run.returncode != 0:
        sys.exit(f"build_image.yml failed:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
    return seconds, run.stdout


def changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP", 1)[1]))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_raw(image: Path, out: Path) -> None:
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True)


def partitions(raw: Path) -> list[tuple[int, int]]:
    """(start, size) in bytes of the MBR's partitions."""
    with open(raw, "rb") as fh:
        table = fh.read(512)[446:510]
    parts = []
    for i in range(4):
        entry = table[i * 16 : i * 16 + 16]
        start, count = int.from_bytes(entry[8:12], "little"), int.from_bytes(entry[12:16], "little")
        if count:
            parts.append((start * 512, count * 512))
    return parts


def region_digest(raw: Path, start: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(raw, "rb") as fh:
        fh.seek(start)
        left = size
        while left:
            chunk = fh.read(min(MIB, left))
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def root_listing(raw: Path, start: int, size: int, work: Path) -> dict[str, str]:
    """path -> 'mode uid gid size mtime sha256' of every file in the ext4 root (debugfs rdump;
    symlinks by their target, as rdump cannot give them their times)."""
    image = f"{raw}?offset={start}"
    names = [
        line.split("/")[5]
        for line in subprocess.run(
            ["debugfs", "-R", "ls -p /", image], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if line.count("/") >= 6
    ]
    tree = work / "tree"
    tree.mkdir()
    tops = " ".join(f"/{n}" for n in names if n not in (".", "..", "lost+found"))
    subprocess.run(
        ["debugfs", "-R", f"rdump {tops} {tree}", image], capture_output=True, check=True
    )
    listing = {}
    for dirpath, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                listing[str(path.relative_to(tree))] = f"-> {os.readlink(path)}"
                continue
            content = sha256(path) if path.is_file() else ""
            listing[str(path.relative_to(tree))] = (
                f"{oct(st.st_mode)} {st.st_uid} {st.st_gid} {st.st_size} "
                f"{int(st.st_mtime)} {content}"
            )
    shutil.rmtree(tree)
    return listing


def compare(a: Path, b: Path, work: Path) -> list[str]:
    """Where two builds' disks differ: MBR, partitions, and the differing root files."""
    notes = []
    raws = []
    for name, build in (("a", a), ("b", b)):
        raw = work / f"{name}.raw"
        to_raw(build / f"{VM}.qcow2", raw)
        raws.append(raw)
    if region_digest(raws[0], 0, 512) != region_digest(raws[1], 0, 512):
        notes.append("MBR differs")
    for index, ((start, size), (start_b, size_b)) in enumerate(
        zip(partitions(raws[0]), partitions(raws[1]), strict=True), start=1
    ):
        if (start, size) != (start_b, size_b):
            notes.append(
                f"partition {index} has another place or size: {start}+{size} vs {start_b}+{size_b}"
            )
        elif region_digest(raws[0], start, size) != region_digest(raws[1], start, size):
            notes.append(f"partition {index} differs")
            if index == 2:
                left = root_listing(raws[0], start, size, work)
                right = root_listing(raws[1], start, size, work)
                files = sorted(p for p in set(left) | set(right) if left.get(p) != right.get(p))
                notes.append(f"  {len(files)} root files differ in content or metadata:")
                notes.extend(f"    {p}: {left.get(p)} | {right.get(p)}" for p in files[:40])
                if not files:
                    notes.append(
                        "  (same names, content, modes, owners and modification times: the "
                        "difference is elsewhere, e.g. inode change times or ext4's own "
                        "structures)"
                    )
    for raw in raws:
        raw.unlink()
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the bench's build caches")
    parser.add_argument("--no-boot", action="store_true")
    parser.add_argument("--no-second-build", action="store_true")
    args = parser.parse_args()
    for cache in (BENCH / "a", BENCH / "b"):
        shutil.rmtree(cache, ignore_errors=True)
    cold, out = playbook(BENCH / "a")
    warm, out_warm = playbook(BENCH / "a")
    build_a = (BENCH / "a" / VM).resolve()
    record = json.loads((build_a / "build.json").read_text())
    disk = record["disk"]
    print(f"cold build (build_image.yml, publication off): {cold:.0f} s, changed={changed(out)}")
    print(f"cached run (same inputs): {warm:.1f} s, changed={changed(out_warm)}")
    print(f"cache key: {record['inputs']['hash']}")
    print(
        f"qcow2 (compressed): {disk['qcow2']['bytes'] / MIB:.0f} MiB; "
        f"vdi: {disk['vdi']['bytes'] / MIB:.0f} MiB; "
        f"virtual disk {disk['disk_bytes'] / 2**30:.2f} GiB"
    )
    print(
        f"root used: {disk['root_used_bytes'] / MIB:.0f} MiB of {disk['root_bytes'] / MIB:.0f} MiB "
        f"(free for job scratch: {(disk['root_bytes'] - disk['root_used_bytes']) / MIB:.0f} MiB); "
        f"kernel {disk['kernel']}"
    )

    if not args.no_second_build:
        cold_b, _ = playbook(BENCH / "b")
        build_b = (BENCH / "b" / VM).resolve()
        disk_b = json.loads((build_b / "build.json").read_text())["disk"]
        print(f"second cold build from the same inputs: {cold_b:.0f} s")
        same = {
            "raw disk": disk["raw_sha256"] == disk_b["raw_sha256"],
            "qcow2": disk["qcow2"]["sha256"] == disk_b["qcow2"]["sha256"],
            "vdi": disk["vdi"]["sha256"] == disk_b["vdi"]["sha256"],
        }
        print(
            "same sha256 in both builds: "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in same.items())
        )
        if not all(same.values()):
            with tempfile.TemporaryDirectory(dir=BENCH, prefix=".compare-") as tmp:
                for note in compare(build_a, build_b, Path(tmp)):
                    print(note)

    if not args.no_boot:
        probe = QemuDriver(tempfile.mkdtemp(prefix="cvmc-probe-"), disk_key=os.urandom(32))
        accels = (["kvm"] if probe.probe_kvm() else []) + ["tcg"]
        if "kvm" not in accels:
            print("KVM: /dev/kvm does not run guests here (the agent's probe), so TCG only")
        for accel in accels:
            with tempfile.TemporaryDirectory(dir=BENCH, prefix=".boot-") as tmp:
                vm = boot(build_a, f"{VM}.qcow2", VM, KEY_PUB, Path(tmp), accel=accel)
                try:
                    systemd = vm.wait_for("Welcome to Debian GNU/Linux 13", 600)
                    report = vm.wait_for("grid-boot: ", 900)
                    line = re.search(r"grid-boot: .*", vm.console())
                    seed = re.search(r"seed_read_at=(\S+)", line.group(0) if line else "")
                    off = vm.power_button(600)
                finally:
                    vm.driver.destroy("cvmc-slot0")
                print(
                    f"boot ({accel}, 1 vCPU, 512 MiB): systemd at {systemd:.0f} s after QEMU "
                    f"started; seed read {seed.group(1) if seed else '?'} s after the kernel "
                    f"started; boot report (DHCP address) at {report:.0f} s; ACPI power-off "
                    f"{off:.0f} s after the button"
                )
                print(f"  {line.group(0) if line else '(no report)'}")
    if not args.keep:
        shutil.rmtree(BENCH, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

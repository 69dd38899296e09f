"""The research VM image, for real: built by playbooks/build_image.yml from the lab's grid
model, published to a coordinator's images directory, signed, and booted under QEMU exactly as
the desktop agent boots it.

The build runs podman and Debian's packages from the local apt repository
(scripts/testhosts.sh builds both); it is cached under ~/.cache/desktop-grid/images, so only
the first run of a machine pays for it (about 4 min here). The boot uses the agent's own image
store (signature and digest checked, LUKS-encrypted base), its QEMU driver (q35, SeaBIOS,
virtio-blk, user-mode NAT; KVM when it really runs guests, else TCG) and its NoCloud seed
factory, with a seed written by ``cvmc.gridmodel.seed``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from ansible_run import ROOT, ansible_playbook
from image_boot import boot

from cvmc.coordinator.adapters.catalogue_dir import DirectoryCatalogue
from cvmc.protocol import parse_manifest

VM = "its-u11-boinc-20120415"
IMAGE = f"{VM}.qcow2"
CACHE = Path(os.environ.get("HOME", "/root")) / ".cache/desktop-grid/images"
KEY = Path(os.environ.get("HOME", "/root")) / ".cache/desktop-grid/lab-grid-image-signing.key"
BASE_IMAGE = "localhost/desktop-grid/debian13:latest"
APT_REPO = Path("/var/cache/desktop-grid/apt/trixie")


def _missing() -> str | None:
    """What this machine lacks to build and boot the image, or None."""
    for tool in (
        "podman",
        "qemu-system-x86_64",
        "qemu-img",
        "minisign",
        "syslinux",
        "mcopy",
        "mkfs.vfat",
        "mkfs.ext4",
    ):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/testhosts.sh and scripts/test-deps.sh"
    if os.geteuid() != 0:
        return "the build needs root here: podman's build containers, the root's file owners"
    image = subprocess.run(["podman", "image", "exists", BASE_IMAGE], check=False)
    if image.returncode != 0 or not list((APT_REPO / "pool").glob("linux-image-*.deb")):
        return (
            f"{BASE_IMAGE} or its apt repository with a kernel is missing: run scripts/testhosts.sh"
        )
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


@dataclass
class Built:
    inventory: Path
    images_dir: Path
    build_dir: Path
    runs: list[subprocess.CompletedProcess[str]]
    seconds: list[float]


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters by host."""
    hosts = {}
    for line in output.split("PLAY RECAP", 1)[1].splitlines()[1:]:
        match = re.match(r"(\S+)\s+:\s+(.*)", line)
        if match:
            hosts[match.group(1)] = {
                k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))
            }
    return hosts


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Build (or find in the cache) the lab's image and publish it to a local coordinator dir,
    twice: the lab's grid model, with a grid_coordinator host of its own on this machine."""
    tmp = tmp_path_factory.mktemp("image")
    inventory = tmp / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(ROOT / "inventories/lab/group_vars")
    images_dir = tmp / "srv-images"
    (inventory / "hosts.yml").write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "grid_coordinator": {
                            "hosts": {
                                "img-pub-test": {
                                    "ansible_connection": "local",
                                    "ansible_python_interpreter": "/usr/bin/python3",
                                    "grid_coordinator_images_dir": str(images_dir),
                                }
                            }
                        }
                    }
                }
            }
        )
    )
    runs, seconds = [], []
    for _ in range(2):
        start = time.monotonic()
        run = ansible_playbook(ROOT / "playbooks/build_image.yml", [inventory], timeout=1800)
        seconds.append(time.monotonic() - start)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        runs.append(run)
    build_dir = (CACHE / VM).resolve()
    return Built(inventory, images_dir, build_dir, runs, seconds)


def test_a_second_run_with_the_same_inputs_builds_and_changes_nothing(built: Built) -> None:
    second = recap(built.runs[1].stdout)
    assert set(second) == {"localhost", "img-pub-test"}  # no build container this time
    assert all(counts["changed"] == 0 and counts["failed"] == 0 for counts in second.values()), (
        second
    )
    assert "(cached)" in built.runs[1].stdout
    first = recap(built.runs[0].stdout)
    cold = any(host.startswith("img-build-") for host in first)
    print(
        f"\nbuild_image.yml: first run {built.seconds[0]:.0f} s ({'cold' if cold else 'cached'}), "
        f"second run {built.seconds[1]:.1f} s (cached, changed=0)"
    )


def test_the_build_leaves_no_container_and_a_complete_cache_entry(built: Built) -> None:
    names = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"img-build-{VM}" not in names
    record = json.loads((built.build_dir / "build.json").read_text())
    assert record["vm_name"] == VM
    assert record["image"] == IMAGE
    assert built.build_dir.name == record["inputs"]["hash"]
    for name in (IMAGE, f"{VM}.vdi"):
        for suffix in ("", ".minisig", ".manifest.json", ".manifest.json.minisig"):
            assert (built.build_dir / f"{name}{suffix}").is_file(), name + suffix
    assert not list(CACHE.glob(".build-*")), "a temporary build directory was left behind"


def test_the_disk_images_are_a_valid_qcow2_and_vdi_of_one_disk(built: Built) -> None:
    infos = {}
    for fmt in ("qcow2", "vdi"):
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", str(built.build_dir / f"{VM}.{fmt}")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        infos[fmt] = json.loads(out)
        assert infos[fmt]["format"] == fmt
    assert infos["qcow2"]["virtual-size"] == infos["vdi"]["virtual-size"]
    compare = subprocess.run(
        [
            "qemu-img",
            "compare",
            "-f",
            "qcow2",
            "-F",
            "vdi",
            str(built.build_dir / IMAGE),
            str(built.build_dir / f"{VM}.vdi"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr
    disk = json.loads((built.build_dir / "build.json").read_text())["disk"]
    print(
        f"\nqcow2 {disk['qcow2']['bytes'] / 2**20:.0f} MiB, "
        f"vdi {disk['vdi']['bytes'] / 2**20:.0f} MiB, "
        f"root used {disk['root_used_bytes'] / 2**20:.0f} MiB "
        f"of {disk['root_bytes'] / 2**20:.0f} MiB, "
        f"disk {disk['disk_bytes'] / 2**30:.2f} GiB"
    )


def debugfs(raw: Path, offset: int, request: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", request, f"{raw}?offset={offset}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_image_holds_no_identity_secret_or_build_source(built: Built, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(built.build_dir / IMAGE), str(raw)], check=True
    )
    with open(raw, "rb") as fh:
        table = fh.read(512)[446:510]
    root = int.from_bytes(table[16 + 8 : 16 + 12], "little") * 512  # partition 2
    names = {
        path: debugfs(raw, root, f"ls -p {path}").split()
        for path in ("/etc/condor/tokens.d", "/etc/condor/passwords.d", "/etc/apt/sources.list.d")
    }
    # Only "." and "..": no token and no pool key; the identity comes from the seed.
    assert len(names["/etc/condor/tokens.d"]) == 2, names
    assert len(names["/etc/condor/passwords.d"]) == 2, names
    sources = "".join(names["/etc/apt/sources.list.d"])
    assert "debian.sources" in sources
    assert "desktop-grid-local" not in sources
    assert debugfs(raw, root, "cat /etc/machine-id") == ""  # each VM gets its own at boot
    assert "nameserver 10.0.2.3" in debugfs(raw, root, "cat /etc/resolv.conf")
    assert "deb.debian.org" in debugfs(raw, root, "cat /etc/apt/sources.list.d/debian.sources")
    assert "STARTD_NOCLAIM_SHUTDOWN = 1200" in debugfs(
        raw, root, "cat /etc/condor/config.d/30-desktop-grid-execute.conf"
    )


def test_the_manifests_verify_with_the_lab_key_and_not_with_another(
    built: Built, tmp_path: Path
) -> None:
    public = Path(f"{KEY}.pub")
    other = tmp_path / "other"
    subprocess.run(
        ["minisign", "-G", "-W", "-p", f"{other}.pub", "-s", str(other)],
        capture_output=True,
        check=True,
    )
    for name in (IMAGE, f"{VM}.vdi"):
        manifest = built.build_dir / f"{name}.manifest.json"
        good = subprocess.run(
            ["minisign", "-V", "-p", str(public), "-m", str(manifest)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert good.returncode == 0, good.stderr
        assert "Signature and comment signature verified" in good.stdout
        bad = subprocess.run(
            ["minisign", "-V", "-p", f"{other}.pub", "-m", str(manifest)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert bad.returncode != 0
        parsed = parse_manifest(manifest.read_bytes())
        assert (parsed.vm_name, parsed.file) == (VM, name)


def test_the_coordinator_lists_the_published_image(built: Built) -> None:
    published = sorted(p.name for p in built.images_dir.iterdir())
    # Only the format the VM type names (grid_vm_types[].image) reaches the catalogue.
    assert published == sorted(
        [IMAGE, f"{IMAGE}.minisig", f"{IMAGE}.manifest.json", f"{IMAGE}.manifest.json.minisig"]
    )
    for name in published:
        assert (built.images_dir / name).read_bytes() == (built.build_dir / name).read_bytes()
        assert oct((built.images_dir / name).stat().st_mode & 0o777) == "0o644"
    entries = DirectoryCatalogue(str(built.images_dir), "/images/").entries()
    assert [(e["vm_name"], e["url"]) for e in entries] == [(VM, f"/images/{IMAGE}")]


def test_the_image_boots_under_qemu_as_the_agent_starts_it(built: Built, tmp_path: Path) -> None:
    vm = boot(built.images_dir, IMAGE, VM, Path(f"{KEY}.pub"), tmp_path)
    try:
        systemd = vm.wait_for("Welcome to Debian GNU/Linux 13", 600)
        reported = vm.wait_for("grid-boot: ", 900)
        report = re.search(
            r"grid-boot: vm_name=(\S+) ipv4=(\S+) seed_read_at=(\S+) condor_start_at=(\S+)",
            vm.console(),
        )
        assert report is not None, vm.console()[-4000:]
        vm_name, addresses, seed_read, condor_start = report.groups()
        assert vm_name == VM  # /run/grid/vm_name, written from the seed's cidata disk
        assert re.fullmatch(r"en\w+=10\.0\.2\.\d+/24", addresses), addresses  # slirp's DHCP
        # condor began to start only after grid-seed had read the seed.
        assert seed_read != "-", report.group(0)
        assert condor_start != "-", report.group(0)
        assert float(condor_start) >= float(seed_read), report.group(0)
        assert "Failed to start systemd-remount-fs" not in vm.console()
        # The agent's vacate: the ACPI power button, and the VM powers itself off.
        off = vm.power_button(300)
        assert "reboot: Power down" in vm.console()
    finally:
        vm.driver.destroy("cvmc-slot0")
    print(
        f"\naccel={vm.accel}: systemd at {systemd:.0f} s, seed read {seed_read} s after the kernel "
        f"started, boot report (DHCP address) at {reported:.0f} s; ACPI power-off in {off:.0f} s"
    )

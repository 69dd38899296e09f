"""VirtualBox: contract tests against VBoxManage's documented syntax and recorded output of
6.1, 7.0 and 7.1, and a live test that runs only where VBoxManage is on PATH.

VirtualBox cannot be installed here. The recorded outputs below follow the formats printed
by VBoxManageInfo.cpp (``outputMachineReadableString``: quoted values with ``\\`` and ``"``
escaped since 7.0, quoted keys for storage slots, bare numbers) and VBoxManageList.cpp
(``"name" {uuid}``); the option names come from the VBoxManage reference of each version.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from cvmc.agent.adapters import vbox_parse
from cvmc.agent.adapters.process import Result
from cvmc.agent.adapters.virtualbox import VirtualBoxDriver
from cvmc.agent.ports import HypervisorError, PlainSource, VmSpec

SHOWVMINFO_61 = r"""name="cvmc-slot0"
groups="/"
ostype="Linux 2.6 / 3.x / 4.x (64-bit)"
UUID="5f1c3a52-9a3e-4b8e-8d8c-2b7c58e1a001"
CfgFile="/home/cvmc/.cvmc/virtualbox/vms/cvmc-slot0/cvmc-slot0.vbox"
memory=512
cpus=1
hwvirtex="on"
VMState="running"
VMStateChangeTime="2026-11-23T01:02:03.000000000"
storagecontrollername0="SATA"
"SATA-0-0"="/home/cvmc/.cvmc/virtualbox/vms/cvmc-slot0/slot.vdi"
"SATA-ImageUUID-0-0"="0e3b3c3e-1111-2222-3333-444455556666"
nic1="nat"
BandwidthGroup0=cvmc-net,network,10mbps
description="cvmc slot 0: its-u11-boinc-20120415
second line with a "quote" inside"
GuestMemoryBalloon=0
"""

SHOWVMINFO_70 = (
    'name="cvmc-slot1"\r\n'
    "Encryption:     disabled\r\n"
    'groups="/"\r\n'
    'ostype="Linux 2.6 / 3.x / 4.x / 5.x (64-bit)"\r\n'
    'UUID="7a0e2f11-0000-4c4c-9d9d-000000000002"\r\n'
    'CfgFile="C:\\\\Users\\\\cvmc\\\\AppData\\\\Local\\\\cvmc\\\\vms\\\\cvmc-slot1\\\\cvmc-slot1.vbox"\r\n'
    "memory=768\r\n"
    "cpus=1\r\n"
    'VMState="aborted-saved"\r\n'
    'description="a \\"quoted\\" word and a back\\\\slash"\r\n'
    '"SATA-0-0"="C:\\\\Users\\\\cvmc\\\\slot.vdi"\r\n'
)

SHOWVMINFO_71 = """name="cvmc-slot0"
Platform Architecture="x86"
platformArchitecture="x86"
UUID="9b9b9b9b-aaaa-bbbb-cccc-000000000003"
memory=512
cpus=2
VMState="poweroff"
VMStateChangeTime="2026-11-23T07:00:04.512000000"
"key=with=equals"="x"
firmware="BIOS"
"""

LIST_RUNNING = """"cvmc-slot0" {5f1c3a52-9a3e-4b8e-8d8c-2b7c58e1a001}
"someone's \\"own\\" VM" {aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}
"cvmc-slot1" {7A0E2F11-0000-4C4C-9D9D-000000000002}
"""


def test_showvminfo_61() -> None:
    info = vbox_parse.parse_machinereadable(SHOWVMINFO_61)
    assert vbox_parse.vm_state(info) == "running"
    assert info["memory"] == "512"
    assert info["cpus"] == "1"
    assert info["SATA-0-0"].endswith("slot.vdi")
    assert info["description"] == (
        'cvmc slot 0: its-u11-boinc-20120415\nsecond line with a "quote" inside'
    )
    assert info["GuestMemoryBalloon"] == "0"  # parsing goes on after the multi-line value
    assert info["BandwidthGroup0"] == "cvmc-net,network,10mbps"


def test_showvminfo_70_with_escapes_and_crlf() -> None:
    info = vbox_parse.parse_machinereadable(SHOWVMINFO_70)
    assert vbox_parse.vm_state(info) == "aborted-saved"
    assert info["CfgFile"] == r"C:\Users\cvmc\AppData\Local\cvmc\vms\cvmc-slot1\cvmc-slot1.vbox"
    assert info["description"] == 'a "quoted" word and a back\\slash'
    assert info["SATA-0-0"] == r"C:\Users\cvmc\slot.vdi"
    assert "Encryption" not in info  # a human line in between is skipped


def test_showvminfo_71_new_keys() -> None:
    info = vbox_parse.parse_machinereadable(SHOWVMINFO_71)
    assert vbox_parse.vm_state(info) == "poweroff"
    assert info["platformArchitecture"] == "x86"
    assert info["key=with=equals"] == "x"
    assert info["cpus"] == "2"


def test_list_runningvms() -> None:
    vms = vbox_parse.parse_list(LIST_RUNNING)
    assert vms["cvmc-slot0"] == "5f1c3a52-9a3e-4b8e-8d8c-2b7c58e1a001"
    assert vms["cvmc-slot1"] == "7a0e2f11-0000-4c4c-9d9d-000000000002"
    assert len(vms) == 3


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("7.0.14r161095\n", (7, 0, 14)),
        ("6.1.50_Ubuntur161033", (6, 1, 50)),
        ("7.1.4r165100", (7, 1, 4)),
    ],
)
def test_versions(text: str, version: tuple[int, int, int]) -> None:
    assert vbox_parse.parse_version(text) == version


# VBoxManage's documented options per subcommand (VirtualBox manual, chapter "VBoxManage").
DOCUMENTED: dict[str, set[str]] = {
    "createvm": {"--name", "--basefolder", "--ostype", "--register"},
    "modifyvm": {
        "--memory",
        "--cpus",
        "--ioapic",
        "--acpi",
        "--nic1",
        "--description",
        "--nicbandwidthgroup1",
        "--nic-bandwidth-group1",
        # "--cpuexecutioncap <1-100>" (6.1 and 7.x); "--vm-process-priority
        # default|flat|low|normal|high" (7.x; the VMProcPriority setting).
        "--cpuexecutioncap",
        "--vm-process-priority",
    },
    "storagectl": {"--name", "--add", "--controller", "--portcount", "--hostiocache"},
    "createmedium": {"--filename", "--diffparent", "--format"},
    "storageattach": {"--storagectl", "--port", "--device", "--type", "--medium"},
    "bandwidthctl": {"--type", "--limit"},
    "startvm": {"--type"},
    "encryptmedium": {"--newpassword", "--newpasswordid", "--cipher"},
    "controlvm": {"--removeonsuspend"},
    "closemedium": {"--delete"},
    "unregistervm": {"--delete"},
    "showvminfo": {"--machinereadable"},
}


class RecordedVBoxManage:
    """Checks each call against the documented syntax and answers with recorded output."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.calls: list[list[str]] = []
        self.vms: dict[str, str] = {}
        self.running: set[str] = set()

    def __call__(self, argv: Sequence[str], timeout: float) -> Result:
        args = list(argv[1:])
        self.calls.append(args)
        if args == ["--version"]:
            return Result(0, self.version + "\n", "")
        command = args[0]
        options = {a for a in args if a.startswith("--")}
        assert command == "list" or options <= DOCUMENTED[command], (command, options)
        if command == "createvm":
            self.vms[args[args.index("--name") + 1]] = "00000000-0000-0000-0000-00000000000a"
        if command == "startvm":
            assert args[args.index("--type") + 1] == "headless"
            self.running.add(args[1])
        if command == "controlvm" and args[2] in ("poweroff",):
            self.running.discard(args[1])
        if command == "controlvm":
            assert args[2] in ("acpipowerbutton", "poweroff", "addencpassword")
        if command == "unregistervm":
            self.vms.pop(args[1], None)
        if command == "list":
            names = self.running if args[1] == "runningvms" else self.vms
            return Result(
                0, "".join(f'"{n}" {{{self.vms.get(n, "0" * 36)}}}\n' for n in sorted(names)), ""
            )
        if command == "showvminfo":
            state = "running" if args[1] in self.running else "poweroff"
            return Result(0, f'name="{args[1]}"\nVMState="{state}"\nmemory=512\n', "")
        if command == "storagectl":
            assert args[args.index("--hostiocache") + 1] == "off"
        if command == "bandwidthctl":
            assert args[2] == "add"
            assert args[args.index("--type") + 1] == "network"
        return Result(0, "", "")


class Bytes(PlainSource):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


@pytest.mark.parametrize(
    ("version", "nic_option"),
    [
        ("6.1.50r161033", "--nicbandwidthgroup1"),
        ("7.0.14r161095", "--nic-bandwidth-group1"),
        ("7.1.4r165100", "--nic-bandwidth-group1"),
    ],
)
def test_driver_command_lines(tmp_path: Path, version: str, nic_option: str) -> None:
    fake = RecordedVBoxManage(version)
    driver = VirtualBoxDriver(str(tmp_path), disk_key=bytes(32), runner=fake)
    sha = "c" * 64
    driver.prepare_base(sha, "vdi", Bytes(b"<<< VirtualBox Disk Image >>>" + bytes(1000)))
    assert fake.calls[-1][:2] == ["encryptmedium", str(tmp_path / "bases" / f"{sha}.vdi")]
    assert fake.calls[-1][fake.calls[-1].index("--cipher") + 1] == "AES-XTS256-PLAIN64"
    assert driver.has_base(sha)
    spec = VmSpec(
        "cvmc-slot0",
        0,
        "its-u11-boinc-20120415",
        sha,
        "vdi",
        2,
        700,
        20_000_000,
        10_000_000,
        "/seeds/slot0.iso",
        20,
        cpu_cap_percent=50,
    )
    driver.create(spec)
    driver.start("cvmc-slot0")
    assert driver.is_running("cvmc-slot0")
    driver.request_shutdown("cvmc-slot0")
    driver.power_off("cvmc-slot0")
    driver.destroy("cvmc-slot0")
    flat = [" ".join(c) for c in fake.calls]
    assert any(
        c.startswith("modifyvm cvmc-slot0 --memory 700 --cpus 2") and "--nic1 nat" in c
        for c in flat
    )
    modify = next(c for c in fake.calls if c[:2] == ["modifyvm", "cvmc-slot0"] and "--cpus" in c)
    assert modify[modify.index("--cpuexecutioncap") + 1] == "50"  # the type's cap
    # grid_vm_low_priority (the default): a low process priority where VBoxManage has it (7.x).
    if nic_option == "--nic-bandwidth-group1":
        assert modify[modify.index("--vm-process-priority") + 1] == "low"
    else:
        assert "--vm-process-priority" not in modify
    assert "bandwidthctl cvmc-slot0 add cvmc-net --type network --limit 10m" in flat
    assert f"modifyvm cvmc-slot0 {nic_option} cvmc-net" in flat
    assert any(
        c.startswith("createmedium disk --filename") and f"--diffparent {tmp_path}" in c
        for c in flat
    )
    assert "startvm cvmc-slot0 --type headless" in flat
    assert any(c.startswith("controlvm cvmc-slot0 addencpassword cvmc ") for c in flat)
    assert "controlvm cvmc-slot0 acpipowerbutton" in flat
    assert flat[-1] == "unregistervm cvmc-slot0 --delete"
    assert driver.list_vms() == []


def test_driver_refuses_foreign_vm_names(tmp_path: Path) -> None:
    driver = VirtualBoxDriver(
        str(tmp_path), disk_key=bytes(32), runner=RecordedVBoxManage("7.0.14")
    )
    with pytest.raises(HypervisorError, match="not a cvmc VM"):
        driver.power_off("someone's own VM")


def test_a_failed_create_leaves_no_vm(tmp_path: Path) -> None:
    fake = RecordedVBoxManage("7.0.14")

    def failing(argv: Sequence[str], timeout: float) -> Result:
        if argv[1] == "storagectl":
            raise HypervisorError("VBoxManage storagectl failed (exit 1): VBOX_E_OBJECT_IN_USE")
        return fake(argv, timeout)

    driver = VirtualBoxDriver(str(tmp_path), disk_key=bytes(32), runner=failing)
    driver.prepare_base("d" * 64, "vdi", Bytes(bytes(100)))
    spec = VmSpec(
        "cvmc-slot0",
        0,
        "its-u11-boinc-20120415",
        "d" * 64,
        "vdi",
        1,
        512,
        20_000_000,
        10_000_000,
        "/s.iso",
        20,
    )
    with pytest.raises(HypervisorError, match="storagectl"):
        driver.create(spec)
    assert fake.vms == {}  # unregistered again


@pytest.mark.live
@pytest.mark.skipif(
    shutil.which(os.environ.get("CVMC_VBOXMANAGE", "VBoxManage")) is None,
    reason="VBoxManage is not on PATH (VirtualBox cannot be installed here)",
)
def test_live_virtualbox_parsers_and_version(tmp_path: Path) -> None:
    """On a machine with VirtualBox: the real VBoxManage's output goes through our parsers."""
    driver = VirtualBoxDriver(
        str(tmp_path),
        disk_key=os.urandom(32),
        vboxmanage=os.environ.get("CVMC_VBOXMANAGE", "VBoxManage"),
    )
    assert driver.version_tuple() >= (6, 1, 0)
    assert isinstance(driver.list_vms(), list)
    for name in vbox_parse.parse_list(driver._vbm("list", "vms")):
        info = vbox_parse.parse_machinereadable(
            driver._vbm("showvminfo", name, "--machinereadable")
        )
        assert info.get("name") == name
        assert vbox_parse.vm_state(info) != "unknown"


def test_no_cap_and_normal_priority_add_no_options(tmp_path: Path) -> None:
    """A type without cpu_cap_percent, with grid_vm_low_priority false: neither option."""
    fake = RecordedVBoxManage("7.1.4r165100")
    driver = VirtualBoxDriver(str(tmp_path), disk_key=bytes(32), runner=fake, low_priority=False)
    sha = "d" * 64
    driver.prepare_base(sha, "vdi", Bytes(b"<<< VirtualBox Disk Image >>>" + bytes(1000)))
    spec = VmSpec("cvmc-slot1", 1, "t", sha, "vdi", 1, 512, 8_000, 8_000, "/seeds/s1.iso", 20)
    driver.create(spec)
    modify = next(c for c in fake.calls if c[:2] == ["modifyvm", "cvmc-slot1"] and "--cpus" in c)
    assert "--cpuexecutioncap" not in modify
    assert "--vm-process-priority" not in modify

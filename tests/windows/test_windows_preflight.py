"""The Windows preflight verdict: pure evaluation of preflight.ps1's JSON against the grid model.

The samples in samples/ have the shape preflight.ps1 prints, with the values WMI, bcdedit and
the registry give on those desktop models (composed from the documented behaviour: under a
running hypervisor WMI reports VT-x as absent; Windows 11 24H2 turns memory integrity on by
default). They are not captured from real hosts: no Windows runs here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cvmc.gridmodel import preflight

SAMPLES = Path(__file__).parent / "samples"
# The example inventory's model: smallest VM type 2048 MB, reserve 1024 MB, desktops of 8 GiB.
VM_TYPES = [
    {"name": "its-u11-boinc-20120415", "memory_mb": 2048},
    {"name": "its-el9-htc-20261101", "memory_mb": 4096},
]
MODEL: dict[str, Any] = {
    "vm_types": VM_TYPES,
    "reserve_mb": 1024,
    "desktop_min_memory_mb": 8192,
    "required_disk_mb": 51200,
    "min_os_build": 19045,
}


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return data


def verdict(report: dict[str, Any], **over: Any) -> preflight.PreflightVerdict:
    return preflight.evaluate(report, **{**MODEL, **over})


def test_a_ready_desktop_passes() -> None:
    result = verdict(sample("optiplex-7090-win11-ready"))
    assert result["ok"] is True
    assert result["reasons"] == []
    assert result["holders"] == []
    assert result["remediable"] is False
    assert result["required_memory_mb"] == 2048 + 1024
    assert result["os_build"] == 22631
    assert result["virtualbox_version"] is None


@pytest.mark.parametrize(
    ("name", "reason", "holders", "remediable"),
    [
        (
            "elitedesk-800g4-win10-hyperv",
            "VT-x/AMD-V is held by Hyper-V",
            ["Hyper-V"],
            True,
        ),
        (
            "thinkcentre-m75q-win11-24h2-hvci",
            "VT-x/AMD-V is held by memory integrity (HVCI), virtualization-based security (VBS)",
            ["memory integrity (HVCI)", "virtualization-based security (VBS)"],
            True,
        ),
        (
            "latitude-5420-wsl2-sandbox",
            "VT-x/AMD-V is held by WSL2 / Virtual Machine Platform, Windows Sandbox",
            ["WSL2 / Virtual Machine Platform", "Windows Sandbox"],
            True,
        ),
        (
            # Memory integrity locked on by policy: the launch type is already off, and the
            # hypervisor still runs, so bcdedit cannot help.
            "elitedesk-hvci-locked",
            "VT-x/AMD-V is held by memory integrity (HVCI), virtualization-based security (VBS)",
            ["memory integrity (HVCI)", "virtualization-based security (VBS)"],
            False,
        ),
    ],
)
def test_a_hypervisor_holding_vtx_fails_with_its_holders(
    name: str, reason: str, holders: list[str], remediable: bool
) -> None:
    result = verdict(sample(name))
    assert result["ok"] is False
    assert result["reasons"] == [reason]
    assert result["holders"] == holders
    assert result["remediable"] is remediable


def test_an_unidentified_hypervisor_is_still_a_holder() -> None:
    report = sample("elitedesk-800g4-win10-hyperv")
    report["features"]["Microsoft-Hyper-V-Hypervisor"] = False
    report["hypervisorlaunchtype"] = None
    result = verdict(report)
    assert result["reasons"] == ["VT-x/AMD-V is held by an unidentified hypervisor"]


def test_a_holder_enabled_but_not_yet_running_is_reported() -> None:
    report = sample("optiplex-7090-win11-ready")
    report["features"]["VirtualMachinePlatform"] = True  # enabled, reboot pending
    result = verdict(report)
    assert result["ok"] is False
    assert result["reasons"] == [
        "VT-x/AMD-V will be held after the next boot by WSL2 / Virtual Machine Platform"
    ]
    assert result["remediable"] is True


def test_firmware_disabled_vtx_is_not_remediable() -> None:
    result = verdict(sample("prodesk-400g5-firmware-off"))
    assert result["reasons"] == ["VT-x/AMD-V is disabled in the firmware (BIOS/UEFI setup)"]
    assert result["remediable"] is False


def test_a_cpu_without_vtx_fails() -> None:
    report = sample("optiplex-7090-win11-ready")
    report["cpu"]["vm_monitor_mode_extensions"] = False
    report["cpu"]["virtualization_firmware_enabled"] = None
    assert verdict(report)["reasons"] == ["the CPU has no VT-x/AMD-V (or Windows cannot see it)"]


def test_too_little_ram_fails_against_the_installed_minimum() -> None:
    result = verdict(sample("optiplex-3020-win10-4gb"))
    assert result["ok"] is False
    assert result["reasons"] == [
        "4096 MB of RAM installed is below grid_desktop_min_memory_mb (8192 MB)"
    ]


def test_visible_ram_below_smallest_type_plus_reserve_fails() -> None:
    report = sample("optiplex-3020-win10-4gb")
    result = verdict(report, desktop_min_memory_mb=0, reserve_mb=2048)
    assert result["reasons"] == [
        "3991 MB of RAM is less than the smallest VM type (2048 MB) plus the reserve (2048 MB)"
    ]
    assert result["required_memory_mb"] == 4096
    # Exactly enough passes.
    report["memory"]["visible_mb"] = 4096
    assert verdict(report, desktop_min_memory_mb=0, reserve_mb=2048)["ok"] is True


def test_installed_ram_slightly_above_visible_counts_for_the_minimum() -> None:
    # An 8 GiB desktop shows ~7.9 GB to Windows (firmware, integrated graphics); it is admitted.
    result = verdict(sample("prodesk-400g5-firmware-off"))
    assert not any("RAM" in reason for reason in result["reasons"])


def test_an_old_build_fails() -> None:
    result = verdict(sample("optiplex-7050-win10-1909"))
    assert result["reasons"] == ["OS build 18363 is older than 19045"]


def test_a_server_is_not_a_desktop() -> None:
    result = verdict(sample("server-2022"))
    assert result["reasons"] == [
        "Microsoft Windows Server 2022 Standard is not a Windows workstation (product type 1)"
    ]


def test_the_image_store_counts_as_free_disk_on_a_rerun() -> None:
    report = sample("optiplex-7090-joined-store-full")
    result = verdict(report)
    assert result["ok"] is True
    assert result["virtualbox_version"] == "7.1.4"
    report["disk"]["store_used_mb"] = 0
    result = verdict(report)
    assert result["reasons"] == [
        "14004 MB free on C: (plus 0 MB the image store holds) is less than the 51200 MB "
        "the image store needs"
    ]


def test_several_problems_are_all_listed() -> None:
    report = sample("optiplex-3020-win10-4gb")
    report["os"]["build"] = 17763
    report["cpu"]["virtualization_firmware_enabled"] = False
    report["disk"]["free_mb"] = 100
    assert len(verdict(report)["reasons"]) == 4


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("cpu"), r"^preflight: missing cpu \(a preflight.ps1 report\?\)"),
        (lambda r: r["memory"].pop("visible_mb"), r"^preflight.memory: missing visible_mb"),
        (lambda r: r.update(schema=2), r"^preflight.schema: 2 is not a known schema"),
        (lambda r: r["memory"].update(visible_mb="16 GB"), r"^preflight.memory.visible_mb: "),
        (
            lambda r: r["cpu"].update(virtualization_firmware_enabled="yes"),
            r"^preflight.cpu.virtualization_firmware_enabled: 'yes' is not true, false or null",
        ),
        (lambda r: r.update(os="Windows"), r"^preflight.os: must be a mapping"),
    ],
)
def test_a_malformed_report_names_the_key(mutate: Any, message: str) -> None:
    report = sample("optiplex-7090-win11-ready")
    mutate(report)
    with pytest.raises(ValueError, match=message):
        verdict(report)


def test_bad_model_input_names_the_variable() -> None:
    report = sample("optiplex-7090-win11-ready")
    with pytest.raises(ValueError, match=r"^grid_vm_types: give a non-empty list"):
        verdict(report, vm_types=[])
    with pytest.raises(ValueError, match=r"^grid_vm_types\[0\].memory_mb: None"):
        verdict(report, vm_types=[{"name": "x"}])
    with pytest.raises(ValueError, match=r"^grid_host_memory_reserve_mb: -1 is below 0"):
        verdict(report, reserve_mb=-1)


def test_every_sample_has_exactly_the_report_keys() -> None:
    """The samples are what preflight.ps1 prints: no key more or less than the schema."""
    for path in sorted(SAMPLES.glob("*.json")):
        report = json.loads(path.read_text())
        assert tuple(report) == preflight.REPORT_KEYS[""], path.name
        for section, keys in preflight.REPORT_KEYS.items():
            if section:
                assert tuple(report[section]) == keys, (path.name, section)
        assert set(report["features"]) == set(preflight.HOLDER_FEATURES), path.name


def test_evaluation_does_not_modify_the_report() -> None:
    report = sample("thinkcentre-m75q-win11-24h2-hvci")
    before = copy.deepcopy(report)
    verdict(report)
    assert report == before

"""Judge a Windows desktop's preflight report against the grid model.

The desktop role runs ``preflight.ps1`` over WinRM; it prints one JSON object (the *report*,
schema below). This module decides, without any I/O, whether the desktop can carry research
VMs, and why not. The role skips a failing desktop (it is listed in the run's summary) rather
than failing the run.

Report (``schema: 1``; every key is required, ``null`` where Windows could not tell)::

    {"schema": 1, "hostname": "CHEM-LAB-01",
     "os": {"caption": "...", "build": 22631, "ubr": 4460, "product_type": 1,
            "architecture": "64-bit"},
     "cpu": {"name": "...", "manufacturer": "GenuineIntel",
             "vm_monitor_mode_extensions": true, "virtualization_firmware_enabled": true,
             "slat": true},
     "hypervisor_present": false,
     "hypervisorlaunchtype": "Off",            # bcdedit's value, null when not set
     "features": {"Microsoft-Hyper-V-Hypervisor": false, "VirtualMachinePlatform": false,
                  "Containers-DisposableClientVM": false, "HypervisorPlatform": false},
     "vbs": {"status": 0, "services_running": []},   # Win32_DeviceGuard
     "hvci_enabled": false,
     "memory": {"installed_mb": 16384, "visible_mb": 16225},
     "disk": {"drive": "C:", "free_mb": 183202, "store_used_mb": 0},
     "virtualbox": {"version": null}}

When a hypervisor runs (``hypervisor_present``), Windows itself is a guest of it and WMI reports
the VT-x/AMD-V flags of that guest (false), so the firmware's setting cannot be read: the verdict
is then "held", with the features that launch the hypervisor named as holders.

Raises ``ValueError`` naming ``name`` (and the key) for a malformed report or model input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

__all__ = [
    "HOLDER_FEATURES",
    "REPORT_KEYS",
    "PreflightVerdict",
    "evaluate",
    "smallest_vm_memory_mb",
]

#: Optional Windows features that launch the hypervisor and so hold VT-x, with the words the
#: summary uses for them.
HOLDER_FEATURES: dict[str, str] = {
    "Microsoft-Hyper-V-Hypervisor": "Hyper-V",
    "VirtualMachinePlatform": "WSL2 / Virtual Machine Platform",
    "Containers-DisposableClientVM": "Windows Sandbox",
    "HypervisorPlatform": "Windows Hypervisor Platform",
}

#: Win32_DeviceGuard.SecurityServicesRunning: 2 is memory integrity (HVCI).
_HVCI_SERVICE = 2
#: Win32_DeviceGuard.VirtualizationBasedSecurityStatus: 2 is "running".
_VBS_RUNNING = 2

#: Top-level keys of a report, and the keys of its nested objects.
REPORT_KEYS: dict[str, tuple[str, ...]] = {
    "": (
        "schema",
        "hostname",
        "os",
        "cpu",
        "hypervisor_present",
        "hypervisorlaunchtype",
        "features",
        "vbs",
        "hvci_enabled",
        "memory",
        "disk",
        "virtualbox",
    ),
    "os": ("caption", "build", "ubr", "product_type", "architecture"),
    "cpu": (
        "name",
        "manufacturer",
        "vm_monitor_mode_extensions",
        "virtualization_firmware_enabled",
        "slat",
    ),
    "vbs": ("status", "services_running"),
    "memory": ("installed_mb", "visible_mb"),
    "disk": ("drive", "free_mb", "store_used_mb"),
    "virtualbox": ("version",),
}


class PreflightVerdict(TypedDict):
    """What the role does with a desktop, and why."""

    ok: bool
    reasons: list[str]
    holders: list[str]
    remediable: bool
    os_build: int
    memory_mb: int
    required_memory_mb: int
    free_disk_mb: int
    required_disk_mb: int
    virtualbox_version: str | None


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: must be a mapping, got {type(value).__name__}")
    return value


def _check_keys(report: Mapping[str, Any], name: str) -> None:
    for section, keys in REPORT_KEYS.items():
        where = report if not section else _mapping(report.get(section), f"{name}.{section}")
        missing = [key for key in keys if key not in where]
        if missing:
            prefix = f"{name}.{section}" if section else name
            raise ValueError(f"{prefix}: missing {', '.join(missing)} (a preflight.ps1 report?)")
    if report["schema"] != 1:
        raise ValueError(f"{name}.schema: {report['schema']!r} is not a known schema (1)")
    _mapping(report.get("features"), f"{name}.features")


def _int(value: object, name: str, *, minimum: int = 0, allow_none: bool = False) -> int:
    if value is None and allow_none:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not a whole number")
    if value < minimum:
        raise ValueError(f"{name}: {value} is below {minimum}")
    return value


def _flag(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{name}: {value!r} is not true, false or null")


def smallest_vm_memory_mb(vm_types: Sequence[Mapping[str, Any]], *, name: str) -> int:
    """The memory of the smallest VM type in the catalogue (``grid_vm_types``)."""
    if isinstance(vm_types, str) or not isinstance(vm_types, Sequence) or not vm_types:
        raise ValueError(f"{name}: give a non-empty list of VM types")
    sizes = [
        _int(_mapping(t, f"{name}[{i}]").get("memory_mb"), f"{name}[{i}].memory_mb", minimum=1)
        for i, t in enumerate(vm_types)
    ]
    return min(sizes)


def _holders(report: Mapping[str, Any], name: str) -> list[str]:
    features = _mapping(report["features"], f"{name}.features")
    holders = [label for key, label in HOLDER_FEATURES.items() if features.get(key) is True]
    vbs = _mapping(report["vbs"], f"{name}.vbs")
    running = vbs["services_running"] or []
    if not isinstance(running, Sequence) or isinstance(running, str):
        raise ValueError(f"{name}.vbs.services_running: {running!r} is not a list")
    if report["hvci_enabled"] is True or _HVCI_SERVICE in running:
        holders.append("memory integrity (HVCI)")
    if vbs["status"] == _VBS_RUNNING:
        holders.append("virtualization-based security (VBS)")
    launch = report["hypervisorlaunchtype"]
    if isinstance(launch, str) and launch.lower() == "auto" and not holders:
        holders.append("hypervisorlaunchtype Auto")
    return holders


def evaluate(
    report: Mapping[str, Any],
    *,
    vm_types: Sequence[Mapping[str, Any]],
    reserve_mb: int,
    desktop_min_memory_mb: int,
    required_disk_mb: int,
    min_os_build: int,
    name: str = "preflight",
) -> PreflightVerdict:
    """Judge ``report`` (one desktop's preflight JSON) against the grid model.

    The desktop passes when it is a 64-bit Windows workstation of at least ``min_os_build``;
    VT-x/AMD-V is present, enabled in firmware and held by no hypervisor; its visible memory
    holds the smallest VM type plus ``reserve_mb`` and its installed memory is at least
    ``desktop_min_memory_mb``; and its free disk, counting what the image store already
    uses, is at least ``required_disk_mb``. ``remediable`` says that turning the hypervisor's
    launch off (``bcdedit /set hypervisorlaunchtype off`` and a reboot) may free VT-x.
    """
    report = _mapping(report, name)
    _check_keys(report, name)
    reserve_mb = _int(reserve_mb, "grid_host_memory_reserve_mb")
    desktop_min_memory_mb = _int(desktop_min_memory_mb, "grid_desktop_min_memory_mb")
    required_disk_mb = _int(required_disk_mb, "required_disk_mb")
    min_os_build = _int(min_os_build, "min_os_build", minimum=1)
    smallest = smallest_vm_memory_mb(vm_types, name="grid_vm_types")
    reasons: list[str] = []

    os_info = report["os"]
    build = _int(os_info["build"], f"{name}.os.build", allow_none=True)
    if os_info["product_type"] != 1:
        reasons.append(f"{os_info['caption']} is not a Windows workstation (product type 1)")
    if os_info["architecture"] is not None and "64" not in str(os_info["architecture"]):
        reasons.append(f"{os_info['architecture']} Windows; VirtualBox needs 64-bit")
    if build < min_os_build:
        reasons.append(f"OS build {build or 'unknown'} is older than {min_os_build}")

    cpu = report["cpu"]
    vmx = _flag(cpu["vm_monitor_mode_extensions"], f"{name}.cpu.vm_monitor_mode_extensions")
    firmware = _flag(
        cpu["virtualization_firmware_enabled"], f"{name}.cpu.virtualization_firmware_enabled"
    )
    present = _flag(report["hypervisor_present"], f"{name}.hypervisor_present")
    holders = _holders(report, name)
    if present:
        holders = holders or ["an unidentified hypervisor"]
        reasons.append(f"VT-x/AMD-V is held by {', '.join(holders)}")
    else:
        # No hypervisor runs, so WMI sees the real CPU; a holder configured but not running
        # (until the next boot) is still reported, because it will take VT-x at that boot.
        if vmx is not True:
            reasons.append("the CPU has no VT-x/AMD-V (or Windows cannot see it)")
        elif firmware is not True:
            reasons.append("VT-x/AMD-V is disabled in the firmware (BIOS/UEFI setup)")
        if holders:
            reasons.append(f"VT-x/AMD-V will be held after the next boot by {', '.join(holders)}")
    # bcdedit's hypervisorlaunchtype off stops every holder from launching the hypervisor
    # at the next boot; once it is off already, nothing more can be done from here.
    launch = report["hypervisorlaunchtype"]
    remediable = bool(holders) and str(launch or "auto").lower() != "off"

    memory = report["memory"]
    visible = _int(memory["visible_mb"], f"{name}.memory.visible_mb")
    installed = _int(memory["installed_mb"], f"{name}.memory.installed_mb", allow_none=True)
    installed = installed or visible
    required_memory = smallest + reserve_mb
    if visible < required_memory:
        reasons.append(
            f"{visible} MB of RAM is less than the smallest VM type ({smallest} MB) plus the "
            f"reserve ({reserve_mb} MB)"
        )
    if installed < desktop_min_memory_mb:
        reasons.append(
            f"{installed} MB of RAM installed is below grid_desktop_min_memory_mb "
            f"({desktop_min_memory_mb} MB)"
        )

    disk = report["disk"]
    free = _int(disk["free_mb"], f"{name}.disk.free_mb")
    used = _int(disk["store_used_mb"], f"{name}.disk.store_used_mb", allow_none=True)
    if free + used < required_disk_mb:
        reasons.append(
            f"{free} MB free on {disk['drive']} (plus {used} MB the image store holds) is "
            f"less than the {required_disk_mb} MB the image store needs"
        )

    version = report["virtualbox"]["version"]
    return PreflightVerdict(
        ok=not reasons,
        reasons=reasons,
        holders=holders,
        remediable=remediable,
        os_build=build,
        memory_mb=visible,
        required_memory_mb=required_memory,
        free_disk_mb=free,
        required_disk_mb=required_disk_mb,
        virtualbox_version=str(version) if version is not None else None,
    )

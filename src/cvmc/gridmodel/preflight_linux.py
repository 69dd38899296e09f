"""A Linux desktop's preflight verdict: the pure judgement behind ``grid_linux_preflight``.

The role ``linux_desktop`` reads the desktop without changing it and hands the report here,
on the controller. The report (schema 1)::

    {"schema": 1,
     "cpu": {"vmx": bool, "svm": bool},     # the flags in /proc/cpuinfo
     "dev_kvm": bool,                       # /dev/kvm exists (the kvm module is loaded)
     "memory_mb": int,                      # MemTotal of /proc/meminfo
     "disk": {"path": str, "free_mb": int, "store_used_mb": int}}

Whether KVM really runs a vCPU is not decided here: that needs QEMU, which the role installs
after preflight, and it is asked with the agent's own probe (``cvmc kvm-probe``). Without
VT-x/AMD-V, VMs run under TCG (software emulation, slow): a warning, unless
``grid_policy.require_hw_virtualization`` asks for hardware virtualisation, which makes it a
reason to skip the desktop. Memory: MemTotal is what the kernel sees, a little less than what
is installed (the firmware and the kernel keep some), so it is compared with
``grid_desktop_min_memory_mb`` with a 5 % allowance; the smallest VM type plus the reserve must
fit MemTotal itself. Disk: free space plus what the image store holds already (a rerun) must
reach the image budget plus the reserve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from cvmc.gridmodel.preflight import smallest_vm_memory_mb

__all__ = ["MEMTOTAL_ALLOWANCE", "LinuxPreflightVerdict", "evaluate_linux"]

#: MemTotal may fall this far below the installed RAM (kernel and firmware reservations).
MEMTOTAL_ALLOWANCE = 0.05


class LinuxPreflightVerdict(TypedDict):
    """What the role does with a Linux desktop, and why."""

    ok: bool
    reasons: list[str]
    warnings: list[str]
    hw_virtualization: bool
    memory_mb: int
    required_memory_mb: int
    free_disk_mb: int
    required_disk_mb: int


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: must be a mapping, got {type(value).__name__}")
    return value


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: {value!r} is not a whole number of at least 0")
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not true or false")
    return value


def evaluate_linux(
    report: Mapping[str, Any],
    *,
    vm_types: Sequence[Mapping[str, Any]],
    reserve_mb: int,
    desktop_min_memory_mb: int,
    required_disk_mb: int,
    require_hw_virtualization: bool,
    name: str = "preflight",
) -> LinuxPreflightVerdict:
    """Judge one Linux desktop's preflight report against the grid model."""
    report = _mapping(report, name)
    if report.get("schema") != 1:
        raise ValueError(f"{name}.schema: {report.get('schema')!r} is not 1")
    unknown = sorted(set(report) - {"schema", "cpu", "dev_kvm", "memory_mb", "disk"})
    if unknown:
        raise ValueError(f"{name}.{unknown[0]}: unknown key")
    cpu = _mapping(report.get("cpu"), f"{name}.cpu")
    vmx = _bool(cpu.get("vmx"), f"{name}.cpu.vmx")
    svm = _bool(cpu.get("svm"), f"{name}.cpu.svm")
    dev_kvm = _bool(report.get("dev_kvm"), f"{name}.dev_kvm")
    memory = _int(report.get("memory_mb"), f"{name}.memory_mb")
    disk = _mapping(report.get("disk"), f"{name}.disk")
    free = _int(disk.get("free_mb"), f"{name}.disk.free_mb")
    used = _int(disk.get("store_used_mb"), f"{name}.disk.store_used_mb")
    reserve_mb = _int(reserve_mb, "grid_host_memory_reserve_mb")
    desktop_min_memory_mb = _int(desktop_min_memory_mb, "grid_desktop_min_memory_mb")
    required_disk_mb = _int(required_disk_mb, "required_disk_mb")
    require = _bool(require_hw_virtualization, "grid_policy.require_hw_virtualization")
    smallest = smallest_vm_memory_mb(vm_types, name="grid_vm_types")

    reasons: list[str] = []
    warnings: list[str] = []
    hw = vmx or svm
    if not hw:
        what = (
            "the CPU shows no VT-x/AMD-V (no vmx or svm flag in /proc/cpuinfo: absent, or "
            "disabled in the firmware)"
        )
        if require:
            reasons.append(f"{what}, and grid_policy.require_hw_virtualization is true")
        else:
            warnings.append(f"{what}; VMs will run under TCG, software emulation, slowly")
    elif not dev_kvm:
        what = "VT-x/AMD-V is there but /dev/kvm is not (the kvm module is not loaded)"
        if require:
            reasons.append(f"{what}, and grid_policy.require_hw_virtualization is true")
        else:
            warnings.append(f"{what}; VMs will run under TCG, software emulation, slowly")

    required_memory = smallest + reserve_mb
    if memory < required_memory:
        reasons.append(
            f"{memory} MB of RAM is less than the smallest VM type ({smallest} MB) plus the "
            f"reserve ({reserve_mb} MB)"
        )
    if memory < desktop_min_memory_mb * (1 - MEMTOTAL_ALLOWANCE):
        reasons.append(
            f"{memory} MB of RAM (MemTotal) is below grid_desktop_min_memory_mb "
            f"({desktop_min_memory_mb} MB, less {MEMTOTAL_ALLOWANCE:.0%} the kernel keeps)"
        )
    if free + used < required_disk_mb:
        reasons.append(
            f"{free} MB free on {disk.get('path', '?')} (plus {used} MB the image store holds) "
            f"is less than the {required_disk_mb} MB the image store needs"
        )
    return LinuxPreflightVerdict(
        ok=not reasons,
        reasons=reasons,
        warnings=warnings,
        hw_virtualization=hw and dev_kvm,
        memory_mb=memory,
        required_memory_mb=required_memory,
        free_disk_mb=free,
        required_disk_mb=required_disk_mb,
    )

"""Hardware virtualisation: is VT-x/AMD-V there, enabled, and free for our hypervisor?

- Linux: the ``vmx``/``svm`` CPU flags; for QEMU, ``/dev/kvm`` readable and writable by the
  service account; for VirtualBox, a loaded ``kvm_intel``/``kvm_amd`` module holds VT-x.
- Windows: ``IsProcessorFeaturePresent(PF_VIRT_FIRMWARE_ENABLED)`` says whether firmware
  enables it; the registry says whether Hyper-V (``hypervisorlaunchtype``, the vmcompute
  service), VBS or memory integrity (HVCI) run, which hold VT-x and make VirtualBox fall back
  to its slow path or fail, the most common cause of failed VMs VirtualBox users report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from cvmc.agent.domain.engine import HwVirt
from cvmc.agent.ports import HostProbe

__all__ = ["LinuxProbe", "WindowsProbe", "cpu_flags"]

PF_VIRT_FIRMWARE_ENABLED = 21
DEVICE_GUARD = r"SYSTEM\CurrentControlSet\Control\DeviceGuard"
HVCI = DEVICE_GUARD + r"\Scenarios\HypervisorEnforcedCodeIntegrity"


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


class LinuxProbe(HostProbe):
    def __init__(self, hypervisor: str, root: str = "/") -> None:
        self.hypervisor = hypervisor
        self.root = root

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def hw_virt(self) -> HwVirt:
        try:
            with open(self._path("proc", "cpuinfo"), encoding="utf-8") as fh:
                flags = cpu_flags(fh.read())
        except OSError:
            flags = set()
        present = bool(flags & {"vmx", "svm"})
        detail = "vmx" if "vmx" in flags else "svm" if "svm" in flags else "no vmx/svm flag"
        if self.hypervisor == "qemu":
            kvm = self._path("dev", "kvm")
            if present and not os.access(kvm, os.R_OK | os.W_OK):
                return HwVirt(True, held_by=None, detail=f"{detail}; {kvm} not accessible")
            return HwVirt(present and os.path.exists(kvm), None, detail)
        for module in ("kvm_intel", "kvm_amd"):
            if os.path.isdir(self._path("sys", "module", module)):
                return HwVirt(present, held_by=f"KVM ({module} loaded)", detail=detail)
        return HwVirt(present, None, detail)


RegistryReader = Callable[[str, str], Any]


def _winreg_reader(key: str, value: str) -> Any:  # noqa: ANN401 - registry values vary
    import winreg  # noqa: PLC0415 - Windows only  # type: ignore[import-not-found,unused-ignore]

    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key) as handle:  # type: ignore[attr-defined,unused-ignore]
            return winreg.QueryValueEx(handle, value)[0]  # type: ignore[attr-defined,unused-ignore]
    except OSError:
        return None


class WindowsProbe(HostProbe):
    def __init__(self, kernel32: Any = None, registry: RegistryReader | None = None) -> None:  # noqa: ANN401
        if kernel32 is None and sys.platform == "win32":  # pragma: no cover - Windows only
            kernel32 = __import__("ctypes").windll.kernel32
        self.kernel32 = kernel32
        self.registry = registry or _winreg_reader

    def hw_virt(self) -> HwVirt:
        enabled = bool(self.kernel32.IsProcessorFeaturePresent(PF_VIRT_FIRMWARE_ENABLED))
        held = []
        if self.registry(DEVICE_GUARD, "EnableVirtualizationBasedSecurity") == 1:
            held.append("VBS")
        if self.registry(HVCI, "Enabled") == 1:
            held.append("memory integrity (HVCI)")
        if self.registry(r"SYSTEM\CurrentControlSet\Services\vmcompute", "Start") in (2, 3):
            held.append("Hyper-V (vmcompute)")
        detail = "VT-x/AMD-V enabled in firmware" if enabled else "VT-x/AMD-V off or absent"
        return HwVirt(enabled or bool(held), ", ".join(held) or None, detail)

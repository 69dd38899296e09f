"""Ansible filters judging a desktop's preflight report: cvmc.gridmodel.preflight (Windows) and
cvmc.gridmodel.preflight_linux (Linux)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import preflight, preflight_linux

DOCUMENTATION = r"""
name: grid_windows_preflight
short_description: Judge a Windows desktop's preflight report against the grid model
description:
  - Takes the JSON object that the windows_desktop role's C(preflight.ps1) prints (parsed) and
    returns the verdict C({ok, reasons, holders, remediable, ...}).
  - A desktop passes when it is a 64-bit Windows workstation of at least O(min_os_build), its
    VT-x/AMD-V is present, enabled in firmware and held by no hypervisor (Hyper-V, VBS or memory
    integrity, WSL2, Windows Sandbox, Windows Hypervisor Platform), its visible RAM holds the
    smallest VM type plus O(reserve_mb), its installed RAM reaches O(desktop_min_memory_mb),
    and its free disk plus what the image store already holds reaches O(required_disk_mb).
  - C(remediable) is true when C(bcdedit /set hypervisorlaunchtype off) and a reboot may free
    VT-x.
  - Errors (a malformed report or model input) name O(name) and the key.
  - Its Linux twin, C(grid_linux_preflight), takes the linux_desktop role's report (CPU flags,
    C(/dev/kvm), MemTotal, free disk; C(cvmc.gridmodel.preflight_linux)) with the same model
    inputs, O(required_disk_mb) and C(grid_policy.require_hw_virtualization) in place of
    O(min_os_build), and returns C({ok, reasons, warnings, hw_virtualization, ...}).
positional: >-
  _input, vm_types, reserve_mb, desktop_min_memory_mb, required_disk_mb, min_os_build, name
options:
  _input:
    description: The parsed preflight report (schema 1).
    type: dict
    required: true
  vm_types:
    description: The VM type catalogue, C(grid_vm_types).
    type: list
    elements: dict
    required: true
  reserve_mb:
    description: C(grid_host_memory_reserve_mb).
    type: int
    required: true
  desktop_min_memory_mb:
    description: C(grid_desktop_min_memory_mb).
    type: int
    required: true
  required_disk_mb:
    description: Free disk the image store needs, in MB.
    type: int
    required: true
  min_os_build:
    description: Oldest Windows build accepted (19045 is Windows 10 22H2).
    type: int
    required: true
  name:
    description: Name used at the start of error messages.
    type: str
    default: preflight
"""

EXAMPLES = r"""
- name: Judge the desktop
  ansible.builtin.set_fact:
    verdict: >-
      {{ report | grid_windows_preflight(grid_vm_types, grid_host_memory_reserve_mb,
         grid_desktop_min_memory_mb, 40960, 19045) }}
"""

RETURN = r"""
_value:
  description:
    - "C({ok: bool, reasons: [str], holders: [str], remediable: bool, os_build: int,
      memory_mb: int, required_memory_mb: int, free_disk_mb: int, required_disk_mb: int,
      virtualbox_version: str|null})"
  type: dict
"""


@filter_errors
def grid_windows_preflight(  # noqa: PLR0917 - an Ansible filter's arguments are positional
    report: Mapping[str, Any],
    vm_types: Sequence[Mapping[str, Any]],
    reserve_mb: int,
    desktop_min_memory_mb: int,
    required_disk_mb: int,
    min_os_build: int,
    name: str = "preflight",
) -> preflight.PreflightVerdict:
    return preflight.evaluate(
        report,
        vm_types=vm_types,
        reserve_mb=reserve_mb,
        desktop_min_memory_mb=desktop_min_memory_mb,
        required_disk_mb=required_disk_mb,
        min_os_build=min_os_build,
        name=name,
    )


@filter_errors
def grid_linux_preflight(  # noqa: PLR0917 - an Ansible filter's arguments are positional
    report: Mapping[str, Any],
    vm_types: Sequence[Mapping[str, Any]],
    reserve_mb: int,
    desktop_min_memory_mb: int,
    required_disk_mb: int,
    require_hw_virtualization: bool,
    name: str = "preflight",
) -> preflight_linux.LinuxPreflightVerdict:
    """Judge a Linux desktop's preflight report (roles/linux_desktop, tasks/preflight.yml)."""
    return preflight_linux.evaluate_linux(
        report,
        vm_types=vm_types,
        reserve_mb=reserve_mb,
        desktop_min_memory_mb=desktop_min_memory_mb,
        required_disk_mb=required_disk_mb,
        require_hw_virtualization=require_hw_virtualization,
        name=name,
    )


class FilterModule:
    def filters(self) -> dict[str, Callable[..., object]]:
        return {
            "grid_windows_preflight": grid_windows_preflight,
            "grid_linux_preflight": grid_linux_preflight,
        }

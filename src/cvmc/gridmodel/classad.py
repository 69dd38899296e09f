"""HTCondor ClassAd pieces of the grid model: VM type names, job Requirements, machine attributes.

A research job asks for a VM type by its ``vm_name``; the research VM's startd advertises the
type's ``vm_name`` with its OpSys, Arch, Cpus and Memory. Every value that ends up inside a
ClassAd expression is validated against a strict pattern first, so nothing can inject into it.

Every function is pure (standard library only, no I/O) and raises ``ValueError`` with a message
that starts with the name of the variable being checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypedDict

__all__ = [
    "ATTR_VALUE_PATTERN",
    "VM_NAME_PATTERN",
    "MachineAttrs",
    "validate_vm_name",
    "vm_machine_attrs",
    "vm_requirements",
]

#: A vm_name: 3-63 characters of lowercase ASCII letters and digits, starting with a letter, with
#: single hyphens, dots or underscores only between letters/digits ("its-u11-boinc-20120415").
#: Anchored at both ends (\A...\Z), so match, search and fullmatch all test the whole string.
VM_NAME_PATTERN = re.compile(r"\A(?=[a-z0-9._-]{3,63}\Z)[a-z][a-z0-9]*(?:[-._][a-z0-9]+)*\Z")

_VM_NAME_RULE = (
    "3-63 characters: lowercase letters a-z, digits and single '-', '.' or '_' between them, "
    "starting with a letter (like 'its-u11-boinc-20120415')"
)

#: OpSys and Arch values: HTCondor's upper-case names such as LINUX, WINDOWS, X86_64.
ATTR_VALUE_PATTERN = re.compile(r"\A[A-Z0-9_]+\Z")


class MachineAttrs(TypedDict):
    """The ClassAd attributes a research VM's startd advertises for its type."""

    vm_name: str
    OpSys: str
    Arch: str
    Cpus: int
    Memory: int


def validate_vm_name(value: object, *, name: str = "vm_name") -> str:
    """``value`` if it is a valid vm_name; else ``ValueError`` quoting it and the rule."""
    if not isinstance(value, str) or not VM_NAME_PATTERN.match(value):
        raise ValueError(f"{name}: {value!r} is not a valid vm_name; it must be {_VM_NAME_RULE}")
    return value


def _field(vm_type: object, key: str, name: str) -> object:
    if not isinstance(vm_type, Mapping):
        raise ValueError(f"{name}: expected a VM type mapping, got {type(vm_type).__name__}")
    if key not in vm_type:
        raise ValueError(f"{name}: the VM type has no {key!r}")
    return vm_type[key]


def _attr_value(vm_type: Mapping[str, object], key: str, name: str) -> str:
    value = _field(vm_type, key, name)
    if not isinstance(value, str) or not ATTR_VALUE_PATTERN.match(value):
        raise ValueError(
            f"{name}.{key}: {value!r} is not a valid ClassAd {key} value; use upper-case "
            "letters, digits and '_' only (like LINUX or X86_64)"
        )
    return value


def _positive_int(vm_type: Mapping[str, object], key: str, name: str) -> int:
    value = _field(vm_type, key, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}.{key}: {value!r} is not a positive integer")
    return value


def vm_requirements(vm_type: Mapping[str, object], *, name: str = "grid_vm_types") -> str:
    """The job Requirements expression that matches only research VMs of this type.

    ``vm_type`` has ``name`` (a vm_name), ``os`` (e.g. ``LINUX``) and ``arch`` (e.g. ``X86_64``).
    """
    vm_name = validate_vm_name(_field(vm_type, "name", name), name=f"{name}.name")
    os_name = _attr_value(vm_type, "os", name)
    arch = _attr_value(vm_type, "arch", name)
    return (
        f'(TARGET.vm_name == "{vm_name}") && (TARGET.Arch == "{arch}") && '
        f'(TARGET.OpSys == "{os_name}") && (TARGET.Disk >= DiskUsage) && '
        "((TARGET.Memory * 1024) >= ImageSize) && ((RequestMemory * 1024) >= ImageSize) && "
        "(TARGET.HasFileTransfer)"
    )


def vm_machine_attrs(vm_type: Mapping[str, object], *, name: str = "grid_vm_types") -> MachineAttrs:
    """The attributes a research VM's startd advertises for this type.

    ``vm_type`` has ``name``, ``os``, ``arch``, ``cpus`` and ``memory_mb``.
    """
    vm_name = validate_vm_name(_field(vm_type, "name", name), name=f"{name}.name")
    return {
        "vm_name": vm_name,
        "OpSys": _attr_value(vm_type, "os", name),
        "Arch": _attr_value(vm_type, "arch", name),
        "Cpus": _positive_int(vm_type, "cpus", name),
        "Memory": _positive_int(vm_type, "memory_mb", name),
    }

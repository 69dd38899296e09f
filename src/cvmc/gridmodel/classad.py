"""HTCondor ClassAd pieces of the grid model: VM type names, job Requirements, machine attributes.

A research job asks for a VM type by its ``vm_name``; the research VM's startd advertises the
type's ``vm_name`` with its OpSys, Arch, Cpus and Memory (``vm_machine_attrs``), inside the slot
ad that ``vm_slot_ad`` writes out whole. Every value that ends up inside a ClassAd expression is
validated against a strict pattern first, so nothing can inject into it.

Every function is pure (standard library only, no I/O) and raises ``ValueError`` with a message
that starts with the name of the variable being checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypedDict

__all__ = [
    "ATTR_VALUE_PATTERN",
    "CONDOR_VERSION_PATTERN",
    "DEFAULT_VM_CONDOR_VERSION",
    "VM_NAME_PATTERN",
    "VM_START",
    "WITHIN_RESOURCE_LIMITS",
    "MachineAttrs",
    "validate_attr_value",
    "validate_condor_version",
    "validate_vm_name",
    "vm_machine_attrs",
    "vm_requirements",
    "vm_slot_ad",
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

#: An HTCondor version as ``condor_version`` prints it: MAJOR.MINOR.PATCH, 1-3 digits each.
CONDOR_VERSION_PATTERN = re.compile(r"\A[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z")

#: The HTCondor the research VM image runs: Debian 13's ``condor`` package.
DEFAULT_VM_CONDOR_VERSION = "23.9.6"

#: The research VM's START (roles/research_vm/templates/condor/execute.conf.j2), as its startd
#: advertises it: jobs that name no VM type, or this one.
VM_START = "(TARGET.vm_name =?= undefined) || (TARGET.vm_name =?= MY.vm_name)"

#: A partitionable slot's WithinResourceLimits, as HTCondor 23.9.6's startd advertises it.
WITHIN_RESOURCE_LIMITS = (
    "(MY.Cpus > 0 && TARGET.RequestCpus <= MY.Cpus && MY.Memory > 0 && "
    "TARGET.RequestMemory <= MY.Memory && MY.Disk > 0 && TARGET.RequestDisk <= MY.Disk && "
    "(TARGET.RequestGPUs =?= undefined || MY.GPUs >= TARGET.RequestGPUs))"
)

#: What the research VM's starter can do, as Debian 13's HTCondor 23.9.6 advertises it (every
#: HTCondor since 9.0 has these). Submit adds clauses on some of them: TARGET.HasFileTransfer
#: always, TARGET.HasSelfCheckpointTransfers for self-checkpointing jobs,
#: TARGET.HasFileTransferPluginMethods for URL transfers.
_STARTER_ABILITIES = {
    "HasFileTransfer": "true",
    "HasFileTransferPluginMethods": (
        '"box,https,gdrive,dav,davs,http,onedrive,data,ftp,file,s3,gs"'
    ),
    "HasIOProxy": "true",
    "HasJICLocalConfig": "true",
    "HasJICLocalStdin": "true",
    "HasJobDeferral": "true",
    "HasJobTransferPlugins": "true",
    "HasMPI": "true",
    "HasPerFileEncryption": "true",
    "HasReconnect": "true",
    "HasSelfCheckpointTransfers": "true",
    "HasSshd": "false",
    "HasTDP": "true",
    "HasTransferInputRemaps": "true",
    "HasVM": "false",
}


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


def validate_condor_version(value: object, *, name: str = "condor_version") -> str:
    """``value`` if it is an HTCondor version such as ``23.9.6``; else ``ValueError``."""
    if not isinstance(value, str) or not CONDOR_VERSION_PATTERN.match(value):
        raise ValueError(
            f"{name}: {value!r} is not an HTCondor version; write MAJOR.MINOR.PATCH, 1-3 digits "
            f"each (like {DEFAULT_VM_CONDOR_VERSION!r})"
        )
    return value


def _field(vm_type: object, key: str, name: str) -> object:
    if not isinstance(vm_type, Mapping):
        raise ValueError(f"{name}: expected a VM type mapping, got {type(vm_type).__name__}")
    if key not in vm_type:
        raise ValueError(f"{name}: the VM type has no {key!r}")
    return vm_type[key]


def validate_attr_value(value: object, *, name: str, attr: str) -> str:
    """``value`` if it can be the ClassAd ``attr`` (OpSys, Arch) value, like LINUX or X86_64."""
    if not isinstance(value, str) or not ATTR_VALUE_PATTERN.match(value):
        raise ValueError(
            f"{name}: {value!r} is not a valid ClassAd {attr} value; use upper-case "
            "letters, digits and '_' only (like LINUX or X86_64)"
        )
    return str(value)


def _attr_value(vm_type: Mapping[str, object], key: str, name: str) -> str:
    return validate_attr_value(_field(vm_type, key, name), name=f"{name}.{key}", attr=key)


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


def vm_slot_ad(attrs: MachineAttrs, *, condor_version: str, disk_kb: int) -> dict[str, str]:
    """The slot ad of a research VM of one type, as its startd advertises it.

    ``attrs`` is the type's ``vm_machine_attrs``; ``condor_version`` the HTCondor the VM runs;
    ``disk_kb`` the slot's Disk in KiB. The result maps each attribute to its value in ClassAd
    syntax, as ``condor_status -long`` prints it (strings quoted, ``Requirements`` an
    expression): the attributes that job Requirements and a slot's matchmaking read. It leaves
    out what depends on one VM's host and image: names, addresses, ``FileSystemDomain`` (a VM
    shares no file system with a submit node, so jobs fall back to file transfer), and
    ``OpSysAndVer`` and the like. ``Cpus`` and ``Memory`` are the type's; the VM's startd may
    see less (the desktop's free memory, its OS's reserve).
    """
    version = validate_condor_version(condor_version, name="condor_version")
    vm_name = validate_vm_name(attrs["vm_name"])
    values = {"OpSys": attrs["OpSys"], "Arch": attrs["Arch"]}
    for key, value in values.items():
        if not ATTR_VALUE_PATTERN.match(value):
            raise ValueError(f"{key}: {value!r} is not a valid ClassAd {key} value")
    numbers = {"Cpus": attrs["Cpus"], "Memory": attrs["Memory"], "Disk": disk_kb}
    for key, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(f"{key}: {number!r} is not a positive integer")
    return {
        "MyType": '"Machine"',
        "TargetType": '"Job"',
        # A real startd: "$CondorVersion: 23.9.6 2026-07-12 PackageID: 23.9.6+dfsg-2.1+b10 $".
        # Jobs read split(TARGET.CondorVersion)[1]; the date and build here are placeholders.
        "CondorVersion": f'"$CondorVersion: {version} 1970-01-01 BuildID: cvmc-coordinator $"',
        "vm_name": f'"{vm_name}"',
        "vm_type_cpus": str(attrs["Cpus"]),
        "vm_type_memory_mb": str(attrs["Memory"]),
        "OpSys": f'"{values["OpSys"]}"',
        "Arch": f'"{values["Arch"]}"',
        "Cpus": str(attrs["Cpus"]),
        "Memory": str(attrs["Memory"]),
        "Disk": str(disk_kb),
        "GPUs": "0",
        "TotalCpus": f"{attrs['Cpus']}.0",  # a real startd advertises it as a real number
        "TotalMemory": str(attrs["Memory"]),
        "TotalDisk": str(disk_kb),
        "TotalGPUs": "0",
        "PartitionableSlot": "true",
        "SlotType": '"Partitionable"',
        "SlotTypeID": "1",
        "SlotID": "1",
        **_STARTER_ABILITIES,
        "Start": VM_START,
        "WithinResourceLimits": WITHIN_RESOURCE_LIMITS,
        "Requirements": "START && (WithinResourceLimits)",
    }

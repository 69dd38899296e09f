"""The grid file the role renders from the grid model (docs/coordinator.md, "Grid file").

``{"name", "vm_types", "max_vms_per_desktop", "desktops": [{"name", "index", "department"}]}``,
checked with the grid model's own functions (``cvmc.gridmodel``), so a VM type or desktop name
means here what it means everywhere else. A VM type's ``disk_gb`` is optional here: where the
grid model gives it, jobs asking for more disk than that are not demand for the type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cvmc.gridmodel.addressing import desktop_id
from cvmc.gridmodel.classad import MachineAttrs, vm_machine_attrs

__all__ = ["GridDesktop", "GridFile", "VmType", "parse_grid", "parse_grid_text"]

_DEPARTMENT = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
#: The largest disk_gb a VM type may give (64 TiB).
MAX_DISK_GB = 65536


@dataclass(frozen=True)
class VmType:
    name: str
    cpus: int
    memory_mb: int
    machine: MachineAttrs  # the ClassAd attributes its startd advertises
    disk_kb: int | None = None  # the VM's disk (grid disk_gb, in KiB); None: not given


@dataclass(frozen=True)
class GridDesktop:
    name: str
    index: int
    department: str


@dataclass(frozen=True)
class GridFile:
    name: str
    vm_types: tuple[VmType, ...]
    max_vms_per_desktop: int
    desktops: tuple[GridDesktop, ...]
    #: grid_policy.require_hw_virtualization: lease only to desktops with VT-x/AMD-V.
    require_hw_virtualization: bool = True

    def vm_type(self, name: str) -> VmType | None:
        return next((t for t in self.vm_types if t.name == name), None)

    def desktop(self, name: str) -> GridDesktop | None:
        """The registered desktop ``name`` (compared by ``desktop_id``: case, domain)."""
        try:
            key = desktop_id(name)
        except ValueError:
            return None
        return self._by_id().get(key)

    def _by_id(self) -> dict[str, GridDesktop]:
        cached: dict[str, GridDesktop] | None = self.__dict__.get("_index")
        if cached is None:
            cached = {desktop_id(d.name): d for d in self.desktops}
            object.__setattr__(self, "_index", cached)
        return cached


def parse_grid(raw: object, *, name: str = "grid file") -> GridFile:
    """A checked ``GridFile``; ``ValueError`` names the bad field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: expected a JSON object")
    grid_name = raw.get("name")
    if not isinstance(grid_name, str) or not grid_name:
        raise ValueError(f"{name}.name: {grid_name!r} is not a grid name")
    types_raw = raw.get("vm_types")
    if not isinstance(types_raw, list) or not types_raw:
        raise ValueError(f"{name}.vm_types: expected a non-empty list of VM types")
    vm_types: list[VmType] = []
    for i, item in enumerate(types_raw):
        attrs = vm_machine_attrs(item, name=f"{name}.vm_types[{i}]")
        if any(t.name == attrs["vm_name"] for t in vm_types):
            raise ValueError(f"{name}.vm_types[{i}].name: {attrs['vm_name']!r} appears twice")
        disk_gb = item.get("disk_gb")
        if disk_gb is not None and (
            isinstance(disk_gb, bool)
            or not isinstance(disk_gb, int)
            or not 1 <= disk_gb <= MAX_DISK_GB
        ):
            raise ValueError(
                f"{name}.vm_types[{i}].disk_gb: {disk_gb!r} is not an integer from 1 to "
                f"{MAX_DISK_GB}"
            )
        disk_kb = None if disk_gb is None else disk_gb * 1024 * 1024
        vm_types.append(VmType(attrs["vm_name"], attrs["Cpus"], attrs["Memory"], attrs, disk_kb))
    max_vms = raw.get("max_vms_per_desktop")
    if isinstance(max_vms, bool) or not isinstance(max_vms, int) or not 1 <= max_vms <= 64:
        raise ValueError(f"{name}.max_vms_per_desktop: {max_vms!r} is not an integer from 1 to 64")
    desktops = _parse_desktops(raw.get("desktops"), name)
    require_hw = raw.get("require_hw_virtualization", True)
    if not isinstance(require_hw, bool):
        raise ValueError(f"{name}.require_hw_virtualization: {require_hw!r} is not a boolean")
    return GridFile(grid_name, tuple(vm_types), max_vms, tuple(desktops), require_hw)


def _parse_desktops(desktops_raw: object, name: str) -> list[GridDesktop]:
    if not isinstance(desktops_raw, list):
        raise ValueError(f"{name}.desktops: expected a list")
    desktops: list[GridDesktop] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(desktops_raw):
        label = f"{name}.desktops[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{label}: expected an object with name, index and department")
        key = desktop_id(item.get("name"), name=f"{label}.name")  # type: ignore[arg-type]
        if key in seen:
            raise ValueError(f"{label}.name: {item['name']!r} is the same desktop as {seen[key]!r}")
        seen[key] = str(item["name"])
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"{label}.index: {index!r} is not a desktop index")
        department = item.get("department", "default")
        if not isinstance(department, str) or not _DEPARTMENT.match(department):
            raise ValueError(f"{label}.department: {department!r} is not a department name")
        desktops.append(GridDesktop(str(item["name"]), index, department))
    return desktops


def parse_grid_text(text: str, *, name: str = "grid file") -> GridFile:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name}: not JSON ({exc})") from None
    return parse_grid(raw, name=name)

"""The grid file the role renders from the grid model (docs/coordinator.md, "Grid file").

``{"name", "vm_types", "max_vms_per_desktop", "require_hw_virtualization",
"enrol_tokens_not_before", "vpn_layout", "backfill",
"wake_on_lan", "desktops": [{"name", "index", "department"}]}``.
``vpn_layout`` (``grid_plan.layout``, optional) lets the coordinator name the desktop and slot of
a VM by its tunnel address (``cvmc.gridmodel.addressing.slot_of_address``). Everything in it
but the desktops' departments comes from the grid model, and is checked by the grid model's
own functions (``cvmc.gridmodel``: the VM type catalogue, ``grid_max_vms_per_desktop``'s
range, the grid's name, the enrolment watermark's range), the very ones the ``grid`` role's
gate runs, so a model the gate passes is never refused here. Messages name the file, then
the model variable (``/etc/cvmc-coordinator/grid.json:
grid_vm_types[its-u11-boinc-20120415].cpus: ...``).

The file carries no bandwidth classes, so VM types' caps stay unresolved (the coordinator never
needs them). A VM type's ``disk_gb`` is optional: where the grid model gives it, jobs asking for
more disk than that are not demand for the type (``VmType.disk_kb``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cvmc.gridmodel import catalogue, limits, wake
from cvmc.gridmodel.addressing import desktop_id, plan_capacity, slot_resolver
from cvmc.gridmodel.backfill import OFF, Backfill, parse_backfill
from cvmc.gridmodel.catalogue import VmType

__all__ = [
    "DEPARTMENT",
    "DEPARTMENT_PATTERN",
    "GridDesktop",
    "GridFile",
    "VmType",
    "parse_grid",
    "parse_grid_text",
]

#: A department's name (JSON Schema's pattern; ``DEPARTMENT`` matches a whole string).
DEPARTMENT_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"
DEPARTMENT = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


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
    #: grid_coordinator_enrol_tokens_not_before: enrolment tokens issued earlier are refused.
    enrol_tokens_not_before: int = 0
    #: grid_plan.layout: the OpenVPN instances' slices; empty: VMs' addresses name no slot.
    vpn_layout: tuple[Mapping[str, object], ...] = ()
    #: grid_backfill: the type desktops with no lease for real demand run (off by default).
    backfill: Backfill = OFF
    #: grid_wake_on_lan: waking sleeping desktops when demand exceeds supply (off by default).
    wake_on_lan: wake.WakeOnLan = wake.OFF

    def vm_slot(self, address: str) -> tuple[str, int] | None:
        """(desktop id, slot) of the registered desktop's VM whose tunnel address is
        ``address``; None without a layout, or for an address of no registered desktop's slot."""
        if not self.vpn_layout:
            return None
        cached = self.__dict__.get("_slots")
        if cached is None:
            cached = (
                slot_resolver(self.vpn_layout, self.max_vms_per_desktop),
                {d.index: desktop_id(d.name) for d in self.desktops},
            )
            object.__setattr__(self, "_slots", cached)
        resolve, by_index = cached
        found = resolve(address)
        if found is None or found[0] not in by_index:
            return None
        return by_index[found[0]], found[1]

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
    """A checked ``GridFile``; ``ValueError`` names the file, then the bad field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: expected a JSON object")
    try:
        grid_name = limits.grid_name(raw.get("name"))
        vm_types = catalogue.parse_vm_types(raw.get("vm_types"))
        max_vms = limits.setting(raw.get("max_vms_per_desktop"), "grid_max_vms_per_desktop")
        # roles/grid_coordinator renders it from grid_policy.require_hw_virtualization.
        require_hw = limits.flag(
            raw.get("require_hw_virtualization", True),
            name="grid_policy.require_hw_virtualization",
        )
        # roles/grid_coordinator renders it from grid_coordinator_enrol_tokens_not_before.
        not_before = limits.setting(
            raw.get("enrol_tokens_not_before", 0), "grid_coordinator_enrol_tokens_not_before"
        )
        # roles/grid_coordinator renders it from grid_plan.layout; absent: blind to jobs' VMs.
        layout = raw.get("vpn_layout", [])
        if layout != []:
            plan_capacity(layout, max_vms, name="grid_plan.layout")  # checks every slice
        # roles/grid_coordinator renders it from grid_backfill; absent: off.
        backfill = parse_backfill(
            raw.get("backfill", {}),
            vm_types=[t.name for t in vm_types],
            max_vms_per_desktop=max_vms,
        )
        # roles/grid_coordinator renders it from grid_wake_on_lan; absent: off.
        wake_on_lan = wake.parse_wake_on_lan(raw.get("wake_on_lan", {}))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    desktops = _parse_desktops(raw.get("desktops"), name)
    return GridFile(
        grid_name,
        vm_types,
        max_vms,
        tuple(desktops),
        require_hw,
        not_before,
        tuple(dict(item) for item in layout),
        backfill,
        wake_on_lan,
    )


def _parse_desktops(desktops_raw: object, name: str) -> list[GridDesktop]:
    """The registered desktops, in grid_desktop_registry's order, each with its department.

    Names and indices are the registry's (the gate checks them with cvmc.gridmodel.addressing);
    the department is the desktop's inventory group dept_*, which the model does not carry, so
    only this parser checks it.
    """
    if not isinstance(desktops_raw, list):
        raise ValueError(f"{name}: desktops: expected a list")
    desktops: list[GridDesktop] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(desktops_raw):
        label = f"grid_desktop_registry[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{name}: {label}: expected an object with name, index and department")
        try:
            key = desktop_id(item.get("name"), name=f"{label}.name")  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if key in seen:
            raise ValueError(
                f"{name}: {label}.name: {item['name']!r} is the same desktop as {seen[key]!r}"
            )
        seen[key] = str(item["name"])
        index = item.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"{name}: {label}.index: {index!r} is not a desktop index")
        department = item.get("department", "default")
        if not isinstance(department, str) or not DEPARTMENT.match(department):
            raise ValueError(
                f"{name}: desktops[{i}].department: {department!r} is not a department name "
                "(the desktop's inventory group dept_*: 1-64 letters, digits, '_', '.' or '-')"
            )
        desktops.append(GridDesktop(str(item["name"]), index, department))
    return desktops


def parse_grid_text(text: str, *, name: str = "grid file") -> GridFile:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name}: not JSON ({exc})") from None
    return parse_grid(raw, name=name)

"""The grid file reads the grid model with the gate's own functions.

tests/unit/test_gate_parity.py checks the grid file against the gate case by case, rendered by
roles/grid_coordinator; these check what the coordinator makes of the file.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from coordinator.coord_support import BOINC, BULK, GRID

from cvmc.coordinator.domain import grid as grid_file
from cvmc.coordinator.domain.grid import parse_grid, parse_grid_text
from cvmc.gridmodel import catalogue


def test_its_vm_types_are_the_grid_models() -> None:
    grid = parse_grid(GRID)
    assert grid_file.VmType is catalogue.VmType
    assert [t.name for t in grid.vm_types] == [BOINC, BULK]
    boinc = grid.vm_type(BOINC)
    assert boinc is not None
    assert boinc.machine == {
        "vm_name": BOINC,
        "OpSys": "LINUX",
        "Arch": "X86_64",
        "Cpus": 1,
        "Memory": 512,
    }
    # The grid file carries no bandwidth classes: the coordinator never needs caps.
    assert (boinc.bandwidth_class, boinc.caps) == (None, None)


def _with(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(GRID)
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_with(name=""), r"^grid\.json: grid_name: '' is not a grid name"),
        (_with(max_vms_per_desktop=65), r"^grid\.json: grid_max_vms_per_desktop: 65 is out of"),
        (_with(max_vms_per_desktop=True), r"^grid\.json: grid_max_vms_per_desktop: True is true"),
        (
            _with(vm_types=[{**GRID["vm_types"][0], "cpus": -2}]),
            rf"^grid\.json: grid_vm_types\[{BOINC}\]\.cpus: -2 is out of range",
        ),
        (
            _with(vm_types=[{**GRID["vm_types"][0], "image": "http://x/y.qcow2"}]),
            rf"^grid\.json: grid_vm_types\[{BOINC}\]\.image: 'http://x/y\.qcow2' is not a plain",
        ),
        (
            _with(vm_types=[{**GRID["vm_types"][0], "memory_mb": 2}]),
            rf"^grid\.json: grid_vm_types\[{BOINC}\]\.memory_mb: 2 is out of range",
        ),
        (_with(vm_types=[]), r"^grid\.json: grid_vm_types: the catalogue is empty"),
        (
            _with(require_hw_virtualization="yes"),
            r"^grid\.json: grid_policy\.require_hw_virtualization: 'yes' is not true or false",
        ),
        (
            _with(desktops=[{"name": "d1", "index": True, "department": "default"}]),
            r"^grid\.json: grid_desktop_registry\[0\]\.index: True is not a desktop index",
        ),
        (
            _with(desktops=[{"name": "d1", "index": 0, "department": "dept chem"}]),
            r"^grid\.json: desktops\[0\]\.department: 'dept chem' is not a department name",
        ),
        (_with(vpn_layout={"name": "a"}), r"^grid\.json: grid_plan\.layout: expected a list"),
        (_with(vpn_layout=None), r"^grid\.json: grid_plan\.layout: expected a list, got NoneType"),
        (
            _with(vpn_layout=[{"name": "a", "port": 1194, "network": "10.64.0.0/33"}]),
            r"^grid\.json: grid_plan\.layout\[a\]\.network: ",
        ),
    ],
)
def test_a_bad_grid_file_names_the_file_then_the_variable(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grid_text(json.dumps(raw), name="grid.json")


def test_a_vms_tunnel_address_names_its_desktop_and_slot() -> None:
    """With the plan's layout (grid_plan.layout), the coordinator maps a running job's VM
    address to the registered desktop and slot; without it, or for any other address, none."""
    layout = [
        {"name": "vpn-a", "port": 1194, "network": "10.64.0.0/18"},
        {"name": "vpn-b", "port": 1195, "network": "10.64.64.0/18"},
    ]
    grid = parse_grid(_with(vpn_layout=layout))
    # desk05: index 5, slice 1 (vpn-b), position 2: 10.64.64.0 + 2 + 2 * 2 slots + slot 1.
    assert grid.vm_slot("10.64.64.7") == ("desk05", 1)
    assert grid.vm_slot("10.64.0.2") == ("desk00", 0)
    assert grid.vm_slot("10.64.0.30") is None  # a slot of index 28, which no desktop has
    assert grid.vm_slot("10.64.0.1") is None  # the server
    assert grid.vm_slot("192.0.2.1") is None
    assert parse_grid(GRID).vm_slot("10.64.0.2") is None  # no layout in the file

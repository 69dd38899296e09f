"""The table of bad grid models and the message each must produce.

One table, used twice: tests/unit/test_validate.py runs every case through the pure checks
(cvmc.gridmodel.validate), and tests/integration/test_validation_role.py runs every case
through the real `grid` role with ansible-playbook, where it must also stop the play before
a later task can change anything. The base model is the lab inventory's group_vars/all.

`vars` are grid_* variables given as extra vars (they replace the lab's value). `hosts`
names a group of tests/fixtures/desktops.yml to use as the desktop group instead of the
lab's. A case with `argspec=True` is caught by meta/argument_specs.yml before the cross-field
checks run, so it exists only at the role level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LAB_VM = {
    "name": "its-u11-boinc-20120415",
    "image": "its-u11-boinc-20120415.qcow2",
    "cpus": 1,
    "memory_mb": 512,
    "os": "LINUX",
    "arch": "X86_64",
}


@dataclass(frozen=True)
class Case:
    id: str
    vars: dict[str, Any]
    expect: str
    hosts: str | None = None
    argspec: bool = False
    model: dict[str, Any] = field(default_factory=dict)


CASES: list[Case] = [
    Case(
        "research-cidr-too-small",
        {"grid_research_network": "10.64.0.0/26"},
        "holds 28 desktops with 2 VMs each (grid_max_vms_per_desktop), but the plan needs 40",
    ),
    Case(
        "research-cidr-host-bits",
        {"grid_research_network": "10.64.0.1/20"},
        "grid_research_network: '10.64.0.1/20' is not an IPv4 network in CIDR form",
    ),
    Case(
        "research-overlaps-campus",
        {"grid_campus_networks": ["10.89.66.0/24", "10.64.0.0/12"]},
        "grid_research_network (10.64.0.0/20) overlaps grid_campus_networks[1] (10.64.0.0/12)",
    ),
    Case(
        "vpn-slices-overlap",
        {
            "grid_vpn_instances": [
                {"name": "rvpn0", "port": 1194, "network": "10.64.0.0/21"},
                {"name": "rvpn1", "port": 1195, "network": "10.64.4.0/22"},
            ]
        },
        "grid_vpn_instances[rvpn0] (10.64.0.0/21) overlaps grid_vpn_instances[rvpn1] "
        "(10.64.4.0/22): VPN slices must not overlap",
    ),
    Case(
        "vpn-slice-outside-research",
        {
            "grid_vpn_instances": [
                {"name": "rvpn0", "port": 1194, "network": "10.64.0.0/21"},
                {"name": "rvpn1", "port": 1195, "network": "10.65.0.0/21"},
            ]
        },
        "grid_vpn_instances[rvpn1].network: 10.65.0.0/21 is not inside grid_research_network",
    ),
    Case(
        "vpn-duplicate-port",
        {"grid_vpn_instances": [{"name": "rvpn0", "port": 1194}, {"name": "rvpn1", "port": 1194}]},
        "grid_vpn_instances[1].port: 1194 is used twice",
    ),
    Case(
        "bandwidth-unit-typo",
        {
            "grid_bandwidth_classes": [
                {"name": "standard", "down": "20mbitt", "up": "10mbit"},
                {"name": "bulk", "down": "40mbit", "up": "20mbit"},
            ]
        },
        "grid_bandwidth_classes[standard].down: unknown unit 'mbitt'",
    ),
    Case(
        "bandwidth-without-unit",
        {
            "grid_bandwidth_classes": [
                {"name": "standard", "down": "20", "up": "10mbit"},
                {"name": "bulk", "down": "40mbit", "up": "20mbit"},
            ]
        },
        "grid_bandwidth_classes[standard].down: '20' needs a unit",
    ),
    Case(
        "bandwidth-unknown-default-class",
        {"grid_bandwidth_default_class": "premium"},
        "grid_bandwidth_default_class: 'premium' is not a class in grid_bandwidth_classes",
    ),
    Case(
        "reserve-at-least-desktop-ram",
        {"grid_host_memory_reserve_mb": 2048},
        "grid_host_memory_reserve_mb: 2048 MB is at least a desktop's whole RAM",
    ),
    Case(
        "vm-type-too-big-for-smallest-desktop",
        {"grid_vm_types": [{**LAB_VM, "memory_mb": 4096}]},
        "grid_vm_types[its-u11-boinc-20120415].memory_mb: 4096 MB plus "
        "grid_host_memory_reserve_mb (1024 MB) does not fit the smallest desktop",
    ),
    Case(
        "malformed-vm-name",
        {"grid_vm_types": [{**LAB_VM, "name": "ITS U11 boinc!"}]},
        "grid_vm_types[0].name: 'ITS U11 boinc!' is not a valid vm_name",
    ),
    Case(
        "duplicate-vm-type",
        {"grid_vm_types": [LAB_VM, {**LAB_VM, "memory_mb": 768}]},
        "grid_vm_types[1].name: 'its-u11-boinc-20120415' is used twice",
    ),
    Case(
        "vm-type-without-image",
        {"grid_vm_types": [{**LAB_VM, "image": ""}]},
        "grid_vm_types[its-u11-boinc-20120415].image: the VM type has no image",
    ),
    Case(
        "vm-type-missing-image-key",
        {"grid_vm_types": [{k: v for k, v in LAB_VM.items() if k != "image"}]},
        "missing required arguments: image found in grid_vm_types",
        argspec=True,
    ),
    Case(
        "policy-time-out-of-range",
        {
            "grid_policy": {
                "blackouts": [
                    {"name": "w", "days": ["mon"], "start": "25:00", "end": "17:00"},
                ]
            }
        },
        "grid_policy.blackouts[0].start: '25:00' is not a time of day",
    ),
    Case(
        "policy-empty-window",
        {
            "grid_policy": {
                "blackouts": [
                    {"name": "w", "days": ["mon"], "start": "07:00", "end": "07:00"},
                ]
            }
        },
        "grid_policy.blackouts[0]: start and end are both '07:00', an empty or endless window",
    ),
    Case(
        "policy-unknown-day",
        {
            "grid_policy": {
                "blackouts": [
                    {"name": "w", "days": ["mon", "funday"], "start": "07:00", "end": "17:00"},
                ]
            }
        },
        "grid_policy.blackouts[0].days: 'funday' is not a day",
    ),
    Case(
        "policy-bad-holiday",
        {"grid_policy": {"blackouts": [], "holidays": ["2026-02-30"]}},
        "grid_policy.holidays[0]: '2026-02-30' is not a date",
    ),
    Case(
        "duplicate-desktop-names",
        {},
        "desktops: 'lab-desktop-1' and 'LAB-Desktop-1.lab.example' are the same desktop name",
        hosts="duplicate_desktops",
        model={"desktops": ["lab-desktop-1", "lab-desktop-2", "LAB-Desktop-1.lab.example"]},
    ),
    Case(
        "desktop-not-registered",
        {},
        "grid_desktop_registry: 1 desktop(s) have no fixed index yet (lab-desktop-3)",
        hosts="unregistered_desktops",
        model={"desktops": ["lab-desktop-1", "lab-desktop-2", "lab-desktop-3"]},
    ),
    Case(
        "registry-duplicate-index",
        {
            "grid_desktop_registry": [
                {"name": "lab-desktop-1", "index": 0},
                {"name": "lab-desktop-2", "index": 0},
            ]
        },
        "grid_desktop_registry: 'lab-desktop-1' and 'lab-desktop-2' both have index 0",
    ),
    Case(
        "coordinator-not-https",
        {"grid_coordinator_url": "http://lab-coordinator"},
        "grid_coordinator_url: 'http://lab-coordinator' must be an https:// URL",
    ),
]


def model_key(var: str) -> str:
    """grid_research_network -> research_network (the pure model's key)."""
    return var.removeprefix("grid_")


CASES += [
    Case(
        "vpn-endpoint-malformed",
        {"grid_vpn_endpoint": "lab gateway!"},
        "grid_vpn_endpoint: 'lab gateway!' is not a host name or address",
    ),
    Case(
        "pool-service-inside-research",
        {"grid_pool_services": [{"name": "htcondor", "addresses": ["10.64.1.1"], "tcp": [9618]}]},
        "grid_pool_services[htcondor].addresses: 10.64.1.1 is inside grid_research_network",
    ),
    Case(
        "pool-service-bad-port",
        {
            "grid_pool_services": [
                {"name": "htcondor", "addresses": ["10.89.64.11"], "tcp": [70000]}
            ]
        },
        "grid_pool_services[htcondor]: port 70000 is not a port number",
    ),
    Case(
        "nat-into-campus",
        {"grid_nat_allow": ["10.89.66.0/25"]},
        "grid_nat_allow[0] (10.89.66.0/25) overlaps grid_campus_networks[0] (10.89.66.0/24): "
        "NAT must never lead into the campus LAN",
    ),
]

CASES += [
    Case(
        "duplicate-vm-identity",
        {
            "grid_desktop_registry": [
                {"name": "lab-desktop-1", "index": 0},
                {"name": "LAB-Desktop-1.lab.example", "index": 1},
            ]
        },
        "grid_desktop_registry: 'lab-desktop-1' and 'LAB-Desktop-1.lab.example' are the same "
        "desktop",
    ),
]

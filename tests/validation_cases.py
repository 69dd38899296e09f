"""The table of bad grid models and the message each must produce.

One table, used three times: tests/unit/test_validate.py runs every case through the pure
checks (cvmc.gridmodel.validate, the gate's authority), tests/unit/test_gate_parity.py renders
each case's agent configuration and coordinator grid file as the roles would and checks that
whatever the agent or the coordinator refuses, the gate refuses first, and
tests/integration/test_validation_role.py runs every case through the real `grid` role with
ansible-playbook, where it must also stop the play before a later task can change anything.
The base model is the lab inventory's group_vars/all.

`vars` are grid_* variables given as extra vars (they replace the lab's value). `hosts`
names a group of tests/fixtures/desktops.yml to use as the desktop group instead of the
lab's. `expect` is part of the gate's message. `role_expect` is what the role prints instead,
for a case that meta/argument_specs.yml refuses before the gate runs (the gate refuses it too).
`refused_by` names the consumers that refuse the case's model on their own, later: "agent"
(its configuration, cvmc.agent.domain.config) and "coordinator" (its grid file,
cvmc.coordinator.domain.grid, which also carries grid_plan.layout, so that whatever the plan's
derivation refuses cannot be rendered for it); the parity test checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AGENT = "agent"
COORDINATOR = "coordinator"
BOTH = (AGENT, COORDINATOR)

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
    role_expect: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    refused_by: tuple[str, ...] = ()


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
        refused_by=(COORDINATOR,),
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
        refused_by=BOTH,
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
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-unknown-default-class",
        {"grid_bandwidth_default_class": "premium"},
        "grid_bandwidth_default_class: 'premium' is not a class in grid_bandwidth_classes",
        refused_by=BOTH,
    ),
    Case(
        "reserve-at-least-desktop-ram",
        {"grid_host_memory_reserve_mb": 2048},
        "grid_host_memory_reserve_mb: 2048 MB is at least a desktop's whole RAM",
        refused_by=(AGENT,),
    ),
    Case(
        "vm-type-too-big-for-smallest-desktop",
        {"grid_vm_types": [{**LAB_VM, "memory_mb": 4096}]},
        "grid_vm_types[its-u11-boinc-20120415].memory_mb: 4096 MB plus "
        "grid_host_memory_reserve_mb (1024 MB) does not fit the smallest desktop",
        refused_by=(AGENT,),
    ),
    Case(
        "malformed-vm-name",
        {"grid_vm_types": [{**LAB_VM, "name": "ITS U11 boinc!"}]},
        "grid_vm_types[0].name: 'ITS U11 boinc!' is not a valid vm_name",
        refused_by=BOTH,
    ),
    Case(
        "duplicate-vm-type",
        {"grid_vm_types": [LAB_VM, {**LAB_VM, "memory_mb": 768}]},
        "grid_vm_types[1].name: 'its-u11-boinc-20120415' is used twice",
        refused_by=BOTH,
    ),
    Case(
        "vm-type-without-image",
        {"grid_vm_types": [{**LAB_VM, "image": ""}]},
        "grid_vm_types[its-u11-boinc-20120415].image: the VM type has no image",
        refused_by=BOTH,
    ),
    Case(
        "vm-type-missing-image-key",
        {"grid_vm_types": [{k: v for k, v in LAB_VM.items() if k != "image"}]},
        "grid_vm_types[its-u11-boinc-20120415].image: missing; name the type's signed image",
        role_expect="missing required arguments: image found in grid_vm_types",
        refused_by=BOTH,
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
        refused_by=(AGENT,),
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
        refused_by=(AGENT,),
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
        refused_by=(AGENT,),
    ),
    Case(
        "policy-bad-holiday",
        {"grid_policy": {"blackouts": [], "holidays": ["2026-02-30"]}},
        "grid_policy.holidays[0]: '2026-02-30' is not a date",
        refused_by=(AGENT,),
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
        refused_by=(AGENT,),
    ),
    Case(
        "images-insecure-http-string",
        {"grid_images_allow_insecure_http": "yes"},
        "grid_images_allow_insecure_http: 'yes' is not true or false",
        refused_by=(AGENT,),
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
    Case(
        "operators-everyone",
        {"grid_operator_networks": ["10.89.66.0/24", "0.0.0.0/0"]},
        "grid_operator_networks[1]: 0.0.0.0/0 is every address",
    ),
    Case(
        "operators-in-research-network",
        {"grid_operator_networks": ["10.64.1.0/24"]},
        "research VMs must never read the coordinator's admin view",
    ),
    Case(
        "operators-not-a-network",
        {"grid_operator_networks": ["ops.example.edu"]},
        "grid_operator_networks[0]: 'ops.example.edu' is not an IPv4 network",
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
        refused_by=(COORDINATOR,),
    ),
]


def _policy(**changes: Any) -> dict[str, Any]:
    """The lab's grid_policy with ``changes``."""
    return {
        "grid_policy": {
            "blackouts": [
                {
                    "name": "owner-workday",
                    "applies": "user_present",
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "07:00",
                    "end": "17:00",
                }
            ],
            "holidays": [],
            "require_hw_virtualization": False,
            "min_battery_percent": 50,
            **changes,
        }
    }


def _classes(**standard: Any) -> dict[str, Any]:
    """The lab's bandwidth classes with the standard class changed."""
    return {
        "grid_bandwidth_classes": [
            {"name": "standard", "down": "20mbit", "up": "10mbit", **standard},
            {"name": "bulk", "down": "40mbit", "up": "20mbit"},
        ]
    }


def _vm(**changes: Any) -> dict[str, Any]:
    """The lab's first VM type, changed, as the whole catalogue."""
    return {"grid_vm_types": [{**LAB_VM, **changes}]}


VM = "grid_vm_types[its-u11-boinc-20120415]"

# Issue 13: inputs the gate passed while the agent or the coordinator refused them later, on
# every desktop, after the gateways and the coordinator had changed; and their kin.
CASES += [
    # -- the VM type catalogue: one parser for gate, agent and coordinator
    Case(
        "vm-cpus-negative",
        _vm(cpus=-2),
        f"{VM}.cpus: -2 is out of range; give a whole number from 1 to 32",
        refused_by=BOTH,
    ),
    Case(
        "vm-cpus-yaml-bool",
        _vm(cpus=True),
        f"{VM}.cpus: True is true or false, not a whole number",
        refused_by=BOTH,
    ),
    Case(
        "vm-cpus-string",
        _vm(cpus="2"),
        f"{VM}.cpus: '2' is not a whole number",
        refused_by=BOTH,
    ),
    Case(
        "vm-cpus-float",
        _vm(cpus=2.0),
        f"{VM}.cpus: 2.0 is not a whole number",
        refused_by=BOTH,
    ),
    Case(
        "vm-cpus-huge",
        _vm(cpus=4096),
        f"{VM}.cpus: 4096 is out of range",
        refused_by=BOTH,
    ),
    Case(
        "vm-memory-in-gb",
        _vm(memory_mb=2),
        f"{VM}.memory_mb: 2 is out of range; give a whole number from 256 to 262144",
        refused_by=BOTH,
    ),
    Case(
        "vm-memory-in-kb",
        _vm(memory_mb=4194304),
        f"{VM}.memory_mb: 4194304 is out of range",
        refused_by=BOTH,
    ),
    Case(
        "vm-disk-zero",
        _vm(disk_gb=0),
        f"{VM}.disk_gb: 0 is out of range; give a whole number from 1 to 65536",
        refused_by=BOTH,
    ),
    Case(
        "vm-disk-huge",
        _vm(disk_gb=65537),
        f"{VM}.disk_gb: 65537 is out of range",
        refused_by=BOTH,
    ),
    Case(
        "vm-cpu-cap-zero",
        _vm(cpu_cap_percent=0),
        f"{VM}.cpu_cap_percent: 0 is out of range; give a whole number from 1 to 100",
        refused_by=BOTH,
    ),
    Case(
        "vm-cpu-cap-over-100",
        _vm(cpu_cap_percent=150),
        f"{VM}.cpu_cap_percent: 150 is out of range",
        refused_by=BOTH,
    ),
    Case(
        "vm-image-url",
        _vm(image="http://images.example.org/its-u11-boinc-20120415.qcow2"),
        f"{VM}.image: 'http://images.example.org/its-u11-boinc-20120415.qcow2' is not a plain "
        "file name",
        refused_by=BOTH,
    ),
    Case(
        "vm-image-path-traversal",
        _vm(image="../x.qcow2"),
        f"{VM}.image: '../x.qcow2' is not a plain file name",
        refused_by=BOTH,
    ),
    Case(
        "vm-image-windows-path",
        _vm(image="C:\\images\\its.vdi"),
        "its.vdi' is not a plain file name; give the signed image's file name",
        refused_by=BOTH,
    ),
    Case(
        "vm-unknown-key",
        _vm(disk_size_gb=40),
        f"{VM}.disk_size_gb: unknown key",
        role_expect="grid_vm_types.disk_size_gb. Supported parameters include",
        refused_by=BOTH,
    ),
    Case(
        "vm-os-lower-case",
        _vm(os="linux"),
        f"{VM}.os: 'linux' is not a valid ClassAd os value",
        refused_by=BOTH,
    ),
    Case(
        "vm-unknown-bandwidth-class",
        _vm(bandwidth_class="gold"),
        f"{VM}.bandwidth_class: 'gold' is not a class in grid_bandwidth_classes",
        refused_by=BOTH,  # the coordinator's grid file carries no classes
    ),
    Case(
        "vm-names-differ-only-in-case",
        {"grid_vm_types": [LAB_VM, {**LAB_VM, "name": "ITS-U11-BOINC-20120415"}]},
        "grid_vm_types[1].name: 'ITS-U11-BOINC-20120415' is not a valid vm_name",
        refused_by=BOTH,
    ),
    Case(
        "vm-catalogue-empty",
        {"grid_vm_types": []},
        "grid_vm_types: the catalogue is empty",
        refused_by=BOTH,
    ),
    # -- scalar settings: strict types, documented ranges
    Case(
        "max-vms-zero",
        {"grid_max_vms_per_desktop": 0},
        "grid_max_vms_per_desktop: 0 is out of range; give a whole number from 1 to 64",
        refused_by=BOTH,
    ),
    Case(
        "max-vms-above-64",
        {"grid_max_vms_per_desktop": 65, "grid_research_network": "10.64.0.0/16"},
        "grid_max_vms_per_desktop: 65 is out of range",
        refused_by=BOTH,  # the agent's own check used to be >= 1 only
    ),
    Case(
        "max-vms-yaml-bool",
        {"grid_max_vms_per_desktop": True},
        "grid_max_vms_per_desktop: True is true or false, not a whole number",
        refused_by=BOTH,
    ),
    Case(
        "max-vms-string",
        {"grid_max_vms_per_desktop": "2"},
        "grid_max_vms_per_desktop: '2' is not a whole number",
        refused_by=BOTH,
    ),
    Case(
        "reserve-yaml-bool",
        {"grid_host_memory_reserve_mb": True},
        "grid_host_memory_reserve_mb: True is true or false, not a whole number",
        refused_by=(AGENT,),
    ),
    Case(
        "reserve-negative",
        {"grid_host_memory_reserve_mb": -1},
        "grid_host_memory_reserve_mb: -1 is out of range; give a whole number of at least 0",
        refused_by=(AGENT,),
    ),
    Case(
        "desktop-min-memory-string",
        {"grid_desktop_min_memory_mb": "8192"},
        "grid_desktop_min_memory_mb: '8192' is not a whole number",
        refused_by=(AGENT,),
    ),
    Case(
        "planned-desktops-zero",
        {"grid_planned_desktops": 0},
        "grid_planned_desktops: 0 is out of range; give a whole number of at least 1",
    ),
    Case(
        "grid-name-not-a-name",
        {"grid_name": "lab grid!"},
        "grid_name: 'lab grid!' is not a grid name",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "grid-name-empty",
        {"grid_name": ""},
        "grid_name: '' is not a grid name",
        refused_by=(COORDINATOR,),
    ),
    # -- the policy
    Case(
        "battery-above-100",
        _policy(min_battery_percent=150),
        "grid_policy.min_battery_percent: 150 is out of range; give a whole number from 0 to 100",
        refused_by=(AGENT,),
    ),
    Case(
        "battery-yaml-bool",
        _policy(min_battery_percent=True),
        "grid_policy.min_battery_percent: True is true or false, not a whole number",
        refused_by=(AGENT,),
    ),
    Case(
        "hw-virtualization-string",
        _policy(require_hw_virtualization="yes"),
        "grid_policy.require_hw_virtualization: 'yes' is not true or false",
        refused_by=(AGENT,),  # the coordinator's role renders it through | bool
    ),
    Case(
        "keep-awake-string",
        _policy(keep_awake="yes"),
        "grid_policy.keep_awake: 'yes' is not true or false",
        refused_by=(AGENT,),
    ),
    Case(
        "owner-idle-beyond-a-day",
        _policy(owner_idle_minutes=2000),
        "grid_policy.owner_idle_minutes: 2000 is out of range; give a whole number from 0 to 1440",
        refused_by=(AGENT,),
    ),
    Case(
        "suspend-beyond-the-job-lease",
        _policy(suspend_minutes=45),
        "grid_policy.suspend_minutes: 45 is out of range; give a whole number from 0 to 30",
        refused_by=(AGENT,),
    ),
    Case(
        "suspend-without-an-owner-blackout",
        _policy(
            suspend_minutes=10,
            blackouts=[
                {
                    "name": "maintenance",
                    "applies": "always",
                    "days": ["sun"],
                    "start": "02:00",
                    "end": "04:00",
                }
            ],
        ),
        "grid_policy.suspend_minutes: 10 saves a VM when its owner comes back, but no blackout "
        "of grid_policy.blackouts applies to user_present",
        refused_by=(AGENT,),
    ),
    Case(
        "policy-unknown-key",
        _policy(min_battery=20),
        "grid_policy.min_battery: unknown key",
        role_expect="grid_policy.min_battery. Supported parameters include",
        refused_by=(AGENT,),
    ),
    Case(
        "policy-full-day-name",
        {
            "grid_policy": {
                "blackouts": [
                    {"name": "w", "days": ["Monday"], "start": "07:00", "end": "17:00"},
                ]
            }
        },
        "grid_policy.blackouts[0].days: 'Monday' is not a day; use mon, tue",
        refused_by=(AGENT,),
    ),
    Case(
        "policy-time-with-spaces",
        {
            "grid_policy": {
                "blackouts": [
                    {"name": "w", "days": ["mon"], "start": " 07:00", "end": "17:00"},
                ]
            }
        },
        "grid_policy.blackouts[0].start: ' 07:00' is not a time of the form HH:MM",
        refused_by=(AGENT,),
    ),
    Case(
        "policy-holidays-not-a-list",
        _policy(holidays="2026-12-25"),
        "grid_policy.holidays: must be a list of dates",
        refused_by=(AGENT,),
    ),
    Case(
        "policy-blackouts-null",
        _policy(blackouts=None),
        "grid_policy.blackouts: must be a list of windows",
        refused_by=(AGENT,),
    ),
    # -- bandwidth: tc's byte units are ambiguous
    Case(
        "bandwidth-everyday-mbps",
        _classes(down="20Mbps"),
        "grid_bandwidth_classes[standard].down: '20Mbps' is ambiguous: tc(8) reads 'mbps' as "
        "megabytes per second (8 times 'mbit'), but in everyday use 'bps' means bits per second; "
        "write '20mbit' for 20 megabits per second, or '160mbit' for 20 megabytes per second",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-megabytes",
        _classes(up="2.5MBps"),
        "grid_bandwidth_classes[standard].up: '2.5MBps' is ambiguous",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-kbps",
        _classes(up="512kbps"),
        "write '512kbit' for 512 kilobits per second, or '4096kbit' for 512 kilobytes",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-bare-int",
        _classes(down=20),
        "grid_bandwidth_classes[standard].down: 20 needs a unit",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-not-whole-kbit",
        _classes(down="1kibit"),
        "grid_bandwidth_classes[standard].down: '1kibit' is 1024 bit/s, not a whole number of "
        "kbit/s",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-class-name-with-space",
        {
            "grid_bandwidth_classes": [{"name": "gold class", "down": "20mbit", "up": "1mbit"}],
            "grid_bandwidth_default_class": "gold class",
            "grid_vm_types": [LAB_VM],
        },
        "grid_bandwidth_classes[0].name: 'gold class' is not a bandwidth class name",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-class-twice",
        {
            "grid_bandwidth_classes": [
                {"name": "standard", "down": "20mbit", "up": "10mbit"},
                {"name": "Standard", "down": "40mbit", "up": "20mbit"},
            ],
            "grid_vm_types": [LAB_VM],
        },
        "grid_bandwidth_classes[1].name: 'Standard' is used twice",
        refused_by=BOTH,
    ),
    Case(
        "bandwidth-no-classes",
        {"grid_bandwidth_classes": [], "grid_vm_types": [LAB_VM]},
        "grid_bandwidth_classes: the list is empty",
        refused_by=BOTH,
    ),
    # -- the coordinator, the VPN, the registry
    Case(
        "coordinator-url-query",
        {"grid_coordinator_url": "https://lab-coordinator/?tenant=1"},
        "grid_coordinator_url: 'https://lab-coordinator/?tenant=1' must be an https:// URL",
        refused_by=(AGENT,),
    ),
    Case(
        "enrol-token-ttl-too-short",
        {"grid_coordinator_enrol_token_ttl_s": 299},
        "grid_coordinator_enrol_token_ttl_s: 299 is out of range; give a whole number from 300 "
        "to 7776000",
    ),
    Case(
        "enrol-token-ttl-above-90-days",
        {"grid_coordinator_enrol_token_ttl_s": 7_776_001},
        "grid_coordinator_enrol_token_ttl_s: 7776001 is out of range",
    ),
    Case(
        "enrol-tokens-not-before-negative",
        {"grid_coordinator_enrol_tokens_not_before": -1},
        "grid_coordinator_enrol_tokens_not_before: -1 is out of range",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "vpn-instance-name-too-long",
        {"grid_vpn_instances": [{"name": "research-vpn-0", "port": 1194}]},
        "grid_vpn_instances[0].name: 'research-vpn-0' is not an instance name",
    ),
    Case(
        "vpn-slice-larger-than-16",
        {
            "grid_research_network": "172.16.0.0/12",
            "grid_vpn_instances": [{"name": "rvpn0", "port": 1194}],
        },
        "grid_vpn_instances[rvpn0].network: 172.16.0.0/12 is larger than /16",
    ),
    Case(
        "vpn-port-yaml-bool",
        {"grid_vpn_instances": [{"name": "rvpn0", "port": True}]},
        "grid_vpn_instances[rvpn0].port: True is true or false, not a whole number",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "registry-index-yaml-bool",
        {
            "grid_desktop_registry": [
                {"name": "lab-desktop-1", "index": True},
                {"name": "lab-desktop-2", "index": 1},
            ]
        },
        "grid_desktop_registry[lab-desktop-1].index: True is not an integer",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "registry-name-no-vpn-identity",
        {
            "grid_desktop_registry": [
                {"name": "lab-desktop-1", "index": 0},
                {"name": "lab-desktop-2", "index": 1},
                {"name": "lab_desktop_3", "index": 2},
            ]
        },
        "grid_desktop_registry[lab_desktop_3]: 'lab_desktop_3' slot 1 gives 'lab_desktop_3-vm1', "
        "not a usable identity",
    ),
    Case(
        "pki-dir-relative",
        {"grid_vpn_pki_dir": "etc/openvpn/grid/pki"},
        "grid_vpn_pki_dir: 'etc/openvpn/grid/pki' is not an absolute directory path",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "pki-dir-climbs-out",
        {"grid_vpn_pki_dir": "/etc/openvpn/../../root"},
        "grid_vpn_pki_dir: '/etc/openvpn/../../root' must not contain '..'",
        refused_by=(COORDINATOR,),
    ),
]

CASES += [
    Case(
        "job-policy-unknown-key",
        {"grid_job_policy": {"max_start": 5}},
        "grid_job_policy: unknown key(s) max_start; known: accounting_groups, max_releases, "
        "max_starts, release_after_s, remove_held_after_days",
        role_expect="grid_job_policy.max_start. Supported parameters include",
    ),
    Case(
        "job-policy-release-too-soon",
        {"grid_job_policy": {"release_after_s": 5}},
        "grid_job_policy.release_after_s: 5 is out of range; give a whole number from 60 to 604800",
    ),
    Case(
        "job-policy-groups-string",
        {"grid_job_policy": {"accounting_groups": "yes"}},
        "grid_job_policy.accounting_groups: 'yes' is not true or false",
    ),
]

CASES += [
    Case(
        "backfill-unknown-type",
        {"grid_backfill": {"vm_type": "einstein-at-home"}},
        "grid_backfill.vm_type: 'einstein-at-home' is not a type in grid_vm_types (known: "
        "its-u11-boinc-20120415, lab-el9-bulk-20261101)",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "backfill-more-than-a-desktop-holds",
        {"grid_backfill": {"vm_type": LAB_VM["name"], "max_per_desktop": 3}},
        "grid_backfill.max_per_desktop: 3 is out of range; give a whole number from 1 to 2",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "backfill-unknown-key",
        {"grid_backfill": {"type": LAB_VM["name"]}},
        "grid_backfill.type: unknown key (known: vm_type, max_per_desktop)",
        role_expect="grid_backfill.type. Supported parameters include",
        refused_by=(COORDINATOR,),
    ),
]

CASES += [
    Case(
        "wake-on-lan-string",
        {"grid_wake_on_lan": {"enabled": "yes"}},
        "grid_wake_on_lan.enabled: 'yes' is not true or false",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "wake-on-lan-prefix-too-wide",
        {"grid_wake_on_lan": {"enabled": True, "subnet_prefix": 8}},
        "grid_wake_on_lan.subnet_prefix: 8 is out of range; give a whole number from 16 to 30",
        refused_by=(COORDINATOR,),
    ),
    Case(
        "wake-on-lan-unknown-key",
        {"grid_wake_on_lan": {"enable": True}},
        "grid_wake_on_lan.enable: unknown key (known: enabled, subnet_prefix, max_per_round)",
        role_expect="grid_wake_on_lan.enable. Supported parameters include",
        refused_by=(COORDINATOR,),
    ),
]

CASES += [
    Case(
        "cache-not-admitted",
        {"grid_cache": {"address": "10.89.68.30", "port": 3128, "domains": [".cern.ch"]}},
        "grid_cache.address: 10.89.68.30:3128 is not admitted by grid_pool_services",
    ),
    Case(
        "cache-without-domains",
        {"grid_cache": {"address": "10.89.68.30", "port": 3128, "domains": []}},
        "grid_cache.domains: list the domains the cache may fetch from",
    ),
    Case(
        "cache-unknown-key",
        {"grid_cache": {"adress": "10.89.68.30"}},
        "grid_cache.adress: unknown key (known: address, port, domains)",
        role_expect="grid_cache.adress. Supported parameters include",
    ),
]

"""The agent's configuration reads the grid model with the gate's own functions.

tests/unit/test_gate_parity.py checks the agent against the gate case by case; these check
what the agent alone decides (the file's shape) and that its grid types are the grid model's.
"""

from __future__ import annotations

from typing import Any

import pytest
from agent.agent_fakes import lab_config_dict

from cvmc.agent.domain import config as agent_config
from cvmc.agent.domain.config import GRID_KEYS, ConfigError, parse_config
from cvmc.gridmodel import catalogue, policy

BOINC = "its-u11-boinc-20120415"


def test_the_vm_types_are_the_grid_models() -> None:
    config = parse_config(lab_config_dict())
    assert agent_config.VmType is catalogue.VmType
    vm = config.vm_types[BOINC]
    assert isinstance(vm, catalogue.VmType)
    assert (vm.disk_gb, vm.disk_declared) == (catalogue.DEFAULT_DISK_GB, False)
    assert vm.caps == catalogue.BandwidthClass("standard", 20_000_000, 10_000_000)


def test_the_policy_is_the_grid_models() -> None:
    config = parse_config(lab_config_dict())
    assert isinstance(config.policy.windows, policy.Policy)
    assert (
        config.policy.require_hw_virtualization is config.policy.windows.require_hw_virtualization
    )
    assert config.policy.min_battery_percent == config.policy.windows.min_battery_percent == 50


def test_absent_grid_keys_take_the_grid_roles_defaults() -> None:
    raw = lab_config_dict()
    for key in ("policy", "host_memory_reserve_mb", "bandwidth_default_class"):
        del raw["grid"][key]
    config = parse_config(raw)
    assert config.policy.reserve_mb == 1024
    assert config.policy.require_hw_virtualization is True
    assert config.policy.windows.blackouts == ()
    assert config.vm_types[BOINC].bandwidth_class == "standard"


@pytest.mark.parametrize("key", ["max_vms_per_desktop", "vm_types", "coordinator_url"])
def test_required_grid_keys(key: str) -> None:
    raw = lab_config_dict()
    del raw["grid"][key]
    with pytest.raises(ConfigError, match=rf"^grid_{key}: missing from the grid section"):
        parse_config(raw)


def test_an_unknown_grid_key_is_refused() -> None:
    raw = lab_config_dict()
    raw["grid"]["max_vm_per_desktop"] = 2
    with pytest.raises(ConfigError, match=r"^grid\.max_vm_per_desktop: unknown key"):
        parse_config(raw)
    assert set(GRID_KEYS) == set(lab_config_dict()["grid"])


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("max_vms_per_desktop",), 65, r"^grid_max_vms_per_desktop: 65 is out of range"),
        (("max_vms_per_desktop",), True, r"^grid_max_vms_per_desktop: True is true or false"),
        (("host_memory_reserve_mb",), True, r"^grid_host_memory_reserve_mb: True is true"),
        (("desktop_min_memory_mb",), "8192", r"^grid_desktop_min_memory_mb: '8192' is not"),
        (("policy", "min_battery_percent"), 150, r"^grid_policy\.min_battery_percent: 150 is"),
        (("policy", "require_hw_virtualization"), "yes", r"^grid_policy\.require_hw_virt"),
        (("vm_types", 0, "cpus"), -2, r"^grid_vm_types\[its-u11-boinc-20120415\]\.cpus: -2"),
        (("vm_types", 0, "memory_mb"), 2, r"\.memory_mb: 2 is out of range; give a whole number"),
        (("vm_types", 0, "disk_gb"), 0, r"\.disk_gb: 0 is out of range"),
        (("vm_types", 0, "image"), "http://x/y.qcow2", r"\.image: 'http://x/y\.qcow2' is not a"),
        (("bandwidth_classes", 0, "down"), "20Mbps", r"^grid_bandwidth_classes\[standard\]\.down"),
        (("coordinator_url",), "https://lab-coordinator/?x", r"^grid_coordinator_url: "),
    ],
)
def test_the_issues_examples_are_refused_here_too(
    path: tuple[Any, ...], value: object, message: str
) -> None:
    raw = lab_config_dict()
    node: Any = raw["grid"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_vm_low_priority_defaults_on_and_takes_only_a_bool() -> None:
    """grid_vm_low_priority: absent means the lowest priority; a string is refused by name."""
    raw = lab_config_dict()
    raw["grid"].pop("vm_low_priority", None)
    assert parse_config(raw).vm_low_priority is True
    raw["grid"]["vm_low_priority"] = False
    assert parse_config(raw).vm_low_priority is False
    raw["grid"]["vm_low_priority"] = "no"
    with pytest.raises(ConfigError, match=r"^grid_vm_low_priority: 'no' is not true or false"):
        parse_config(raw)

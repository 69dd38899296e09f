"""The agent's configuration: the grid model's shape plus a few desktop-local settings.

The configuration file is JSON with two sections. ``grid`` carries the grid model's variables
without their ``grid_`` prefix, exactly as in the inventory (``policy``,
``host_memory_reserve_mb``, ``max_vms_per_desktop``, ``vm_types``, ``bandwidth_classes``,
``bandwidth_default_class``, ``coordinator_url`` and, optionally, ``desktop_min_memory_mb``
and ``images_allow_insecure_http``),
so the desktop roles render it straight from the model. ``agent`` carries what only a desktop
knows: where its state lives, which hypervisor it drives, its image budget and the image
signing keys it trusts.

Parsing is pure: every problem is a :class:`ConfigError` whose message starts with the key
(``grid_policy.blackouts[0].start: ...`` or ``agent.image_budget_mb: ...``). The ``grid``
section is checked by the grid model's own functions only (``cvmc.gridmodel``: ``limits``,
``policy``, ``catalogue``, ``validate.fit_problems``), the very ones the ``grid`` role's gate
runs, so a model the gate passes is never refused here; only the ``agent`` section's rules
live in this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from cvmc.gridmodel import catalogue, limits, policy, validate
from cvmc.gridmodel.catalogue import VmType

__all__ = [
    "HYPERVISORS",
    "AgentConfig",
    "AgentSettings",
    "ConfigError",
    "PolicyConfig",
    "VmType",
    "parse_config",
]

HYPERVISORS: tuple[str, ...] = ("qemu", "virtualbox")
QEMU_ACCELS: tuple[str, ...] = ("auto", "kvm", "tcg")
_PUBKEY = re.compile(r"\A[A-Za-z0-9+/]{54}==?\Z|\A[A-Za-z0-9+/]{56}\Z")
#: The grid section's keys: what roles/windows_desktop renders from the grid model.
GRID_KEYS: tuple[str, ...] = (
    "policy",
    "host_memory_reserve_mb",
    "max_vms_per_desktop",
    "vm_types",
    "bandwidth_classes",
    "bandwidth_default_class",
    "desktop_min_memory_mb",
    "coordinator_url",
    "images_allow_insecure_http",
    "vm_low_priority",
)
#: Defaults of an absent grid key: the grid role's (roles/grid/defaults/main.yml).
_GRID_DEFAULTS: dict[str, Any] = {
    "policy": {},
    "host_memory_reserve_mb": 1024,
    "bandwidth_default_class": "standard",
    "images_allow_insecure_http": False,
    "vm_low_priority": True,
}
P = ParamSpec("P")
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key it is about."""


@dataclass(frozen=True)
class PolicyConfig:
    """Everything the policy engine needs: the windows and the desktop's limits."""

    windows: policy.Policy
    reserve_mb: int
    max_vms: int
    require_hw_virtualization: bool
    min_battery_percent: int


@dataclass(frozen=True)
class AgentSettings:
    """Desktop-local settings (the ``agent`` section)."""

    state_dir: str
    hypervisor: str
    image_budget_mb: int
    trusted_keys: tuple[str, ...]
    heartbeat_s: float = 60.0
    heartbeat_max_backoff_s: float = 900.0
    poll_s: float = 1.0
    vacate_deadline_s: float = 3.0
    start_timeout_s: float = 120.0
    coordinator_ca_file: str | None = None
    enrol_token_file: str | None = None
    identity_dir: str | None = None
    qemu_binary: str = "qemu-system-x86_64"
    qemu_img: str = "qemu-img"
    qemu_accel: str = "auto"
    vboxmanage: str = "VBoxManage"
    log_file: str | None = None


@dataclass(frozen=True)
class AgentConfig:
    """The whole, validated configuration."""

    policy: PolicyConfig
    vm_types: Mapping[str, VmType]
    coordinator_url: str
    agent: AgentSettings
    #: grid_images_allow_insecure_http: image URLs (and redirects) may be http:// (a lab).
    images_allow_insecure_http: bool = False
    #: grid_vm_low_priority: VMs run at the lowest CPU and I/O priority.
    vm_low_priority: bool = True


def _mapping(raw: object, name: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: must be a mapping (JSON object), got {type(raw).__name__}")
    return raw


def _int(raw: Mapping[str, Any], key: str, name: str, *, minimum: int, default: int | None) -> int:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{name}.{key}: missing; give a whole number")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}.{key}: {value!r} is not a whole number")
    if value < minimum:
        raise ConfigError(f"{name}.{key}: {value} is below the minimum of {minimum}")
    return value


def _float(raw: Mapping[str, Any], key: str, name: str, *, minimum: float, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}.{key}: {value!r} is not a number of seconds")
    if value < minimum:
        raise ConfigError(f"{name}.{key}: {value} is below the minimum of {minimum}")
    return float(value)


def _str(raw: Mapping[str, Any], key: str, name: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}.{key}: missing or empty; give a string")
    return value


def _opt_str(raw: Mapping[str, Any], key: str, name: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}.{key}: {value!r} is not a non-empty string")
    return value


def _bool(raw: Mapping[str, Any], key: str, name: str, *, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name}.{key}: {value!r} is not true or false")
    return value


def _wrap(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return func(*args, **kwargs)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _grid_value(grid: Mapping[str, Any], key: str) -> object:
    if key in grid:
        return grid[key]
    if key in _GRID_DEFAULTS:
        return _GRID_DEFAULTS[key]
    raise ConfigError(f"grid_{key}: missing from the grid section")


def parse_policy_config(grid: Mapping[str, Any]) -> PolicyConfig:
    """The policy engine's inputs from the grid section."""
    windows = _wrap(policy.parse_policy, _grid_value(grid, "policy"), name="grid_policy")
    reserve = _wrap(
        limits.setting, _grid_value(grid, "host_memory_reserve_mb"), "grid_host_memory_reserve_mb"
    )
    max_vms = _wrap(
        limits.setting, _grid_value(grid, "max_vms_per_desktop"), "grid_max_vms_per_desktop"
    )
    return PolicyConfig(
        windows=windows,
        reserve_mb=reserve,
        max_vms=max_vms,
        require_hw_virtualization=windows.require_hw_virtualization,
        min_battery_percent=windows.min_battery_percent,
    )


def parse_vm_types(grid: Mapping[str, Any]) -> dict[str, VmType]:
    """The VM type catalogue with each type's caps (``cvmc.gridmodel.catalogue``)."""
    bandwidth = _wrap(
        catalogue.parse_bandwidth,
        _grid_value(grid, "bandwidth_classes"),
        _grid_value(grid, "bandwidth_default_class"),
    )
    types = _wrap(catalogue.parse_vm_types, _grid_value(grid, "vm_types"), bandwidth=bandwidth)
    return {vm_type.name: vm_type for vm_type in types}


def _trusted_keys(agent: Mapping[str, Any]) -> tuple[str, ...]:
    keys = agent.get("trusted_keys")
    if not isinstance(keys, Sequence) or isinstance(keys, str) or not keys:
        raise ConfigError(
            "agent.trusted_keys: give at least one minisign public key (the base64 line of a "
            "minisign .pub file); only images signed by these keys ever run"
        )
    result = []
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not _PUBKEY.match(key.strip()):
            raise ConfigError(
                f"agent.trusted_keys[{i}]: {key!r} is not a minisign public key "
                "(56 base64 characters starting with 'RW')"
            )
        result.append(key.strip())
    return tuple(result)


def parse_settings(agent: Mapping[str, Any]) -> AgentSettings:
    """The ``agent`` section."""
    name = "agent"
    hypervisor = agent.get("hypervisor", "qemu")
    if hypervisor not in HYPERVISORS:
        raise ConfigError(
            f"agent.hypervisor: {hypervisor!r} is not one of {', '.join(HYPERVISORS)}"
        )
    accel = agent.get("qemu_accel", "auto")
    if accel not in QEMU_ACCELS:
        raise ConfigError(f"agent.qemu_accel: {accel!r} is not one of {', '.join(QEMU_ACCELS)}")
    known = set(AgentSettings.__dataclass_fields__)
    unknown = sorted(set(agent) - known)
    if unknown:
        raise ConfigError(
            f"agent.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})"
        )
    heartbeat = _float(agent, "heartbeat_s", name, minimum=5.0, default=60.0)
    return AgentSettings(
        state_dir=_str(agent, "state_dir", name),
        hypervisor=str(hypervisor),
        image_budget_mb=_int(agent, "image_budget_mb", name, minimum=64, default=None),
        trusted_keys=_trusted_keys(agent),
        heartbeat_s=heartbeat,
        heartbeat_max_backoff_s=_float(
            agent, "heartbeat_max_backoff_s", name, minimum=heartbeat, default=max(900.0, heartbeat)
        ),
        poll_s=_float(agent, "poll_s", name, minimum=0.05, default=1.0),
        vacate_deadline_s=_float(agent, "vacate_deadline_s", name, minimum=0.0, default=3.0),
        start_timeout_s=_float(agent, "start_timeout_s", name, minimum=1.0, default=120.0),
        coordinator_ca_file=_opt_str(agent, "coordinator_ca_file", name),
        enrol_token_file=_opt_str(agent, "enrol_token_file", name),
        identity_dir=_opt_str(agent, "identity_dir", name),
        qemu_binary=_str(agent, "qemu_binary", name, default="qemu-system-x86_64"),
        qemu_img=_str(agent, "qemu_img", name, default="qemu-img"),
        qemu_accel=str(accel),
        vboxmanage=_str(agent, "vboxmanage", name, default="VBoxManage"),
        log_file=_opt_str(agent, "log_file", name),
    )


def parse_config(raw: object) -> AgentConfig:
    """Validate the whole configuration; raise :class:`ConfigError` naming the first bad key."""
    top = _mapping(raw, "config")
    unknown = sorted(set(top) - {"grid", "agent"})
    if unknown:
        raise ConfigError(f"config.{unknown[0]}: unknown section (use 'grid' and 'agent')")
    grid = _mapping(top.get("grid"), "grid")
    agent = _mapping(top.get("agent"), "agent")
    unknown = sorted(str(key) for key in grid if key not in GRID_KEYS)
    if unknown:
        raise ConfigError(
            f"grid.{unknown[0]}: unknown key of the grid section (known: {', '.join(GRID_KEYS)})"
        )
    policy_config = parse_policy_config(grid)
    vm_types = parse_vm_types(grid)
    url = _wrap(limits.coordinator_url, _grid_value(grid, "coordinator_url"))
    insecure_http = _wrap(
        limits.flag,
        _grid_value(grid, "images_allow_insecure_http"),
        name=limits.INSECURE_HTTP_VARIABLE,
    )
    low_priority = _wrap(
        limits.flag, _grid_value(grid, "vm_low_priority"), name=limits.LOW_PRIORITY_VARIABLE
    )
    if "desktop_min_memory_mb" in grid:
        smallest = _wrap(
            limits.setting, grid["desktop_min_memory_mb"], "grid_desktop_min_memory_mb"
        )
        problems = validate.fit_problems(grid["vm_types"], policy_config.reserve_mb, smallest)
        if problems:
            raise ConfigError(problems[0])
    return AgentConfig(
        policy=policy_config,
        vm_types=vm_types,
        coordinator_url=url.rstrip("/"),
        agent=parse_settings(agent),
        images_allow_insecure_http=insecure_http,
        vm_low_priority=low_priority,
    )

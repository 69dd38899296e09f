"""Cross-field checks of the whole grid model.

``meta/argument_specs.yml`` of the ``grid`` role checks each variable's type and shape; the
functions here check what no single variable can show on its own: a research network too
small for the planned pool, networks that overlap, a VM type that does not fit the smallest
desktop, and so on. Each ``check_*`` function covers one concern and returns a list of
messages (empty when the concern is fine). Every message starts with the variable it is
about, so an operator can go straight to the line to fix.

The model is a plain mapping of the ``grid_*`` variables without their ``grid_`` prefix
(see ``MODEL_KEYS``); the role assembles it from the inventory.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cvmc.gridmodel import addressing, bandwidth, classad, policy

Model = Mapping[str, Any]
_HOST = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")

MODEL_KEYS: tuple[str, ...] = (
    "name",
    "research_network",
    "campus_networks",
    "vpn_instances",
    "max_vms_per_desktop",
    "planned_desktops",
    "bandwidth_classes",
    "bandwidth_default_class",
    "vm_types",
    "policy",
    "host_memory_reserve_mb",
    "desktop_min_memory_mb",
    "coordinator_url",
    "vpn_endpoint",
    "pool_services",
    "nat_allow",
    "desktop_registry",
    "desktops",
)


def _network_problem(value: object, name: str) -> str | None:
    try:
        ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        return f"{name}: {value!r} is not an IPv4 network in CIDR form ({exc})"
    return None


def check_network(model: Model) -> list[str]:
    """Research network, campus networks, VPN slices and the address plan's capacity."""
    research = str(model["research_network"])
    bad = _network_problem(research, "grid_research_network")
    if bad:
        return [bad]
    problems = _research_problems(research, model["campus_networks"])
    problems += _instance_problems(model["vpn_instances"])
    if problems:
        return problems
    slots = int(model["max_vms_per_desktop"])
    try:
        layout = addressing.vpn_layout(
            [{k: v for k, v in inst.items() if v is not None} for inst in model["vpn_instances"]],
            research,
            slots,
            name="grid_vpn_instances",
        )
    except ValueError as exc:
        return [str(exc)]
    return _slice_problems(research, layout) or _capacity_problems(model, research, layout)


def _research_problems(research: str, campus_networks: Sequence[object]) -> list[str]:
    problems: list[str] = []
    if not ipaddress.IPv4Network(research).is_private:
        problems.append(
            f"grid_research_network: {research} is not a private range; the research network "
            "must be an isolated RFC 1918 network (for example 10.64.0.0/16)"
        )
    campus: list[tuple[str, str]] = []
    for i, net in enumerate(campus_networks):
        label = f"grid_campus_networks[{i}]"
        bad = _network_problem(net, label)
        if bad:
            problems.append(bad)
        else:
            campus.append((label, str(net)))
    problems.extend(
        f"{overlap}: the research network must not overlap the campus LAN it is isolated from"
        for overlap in addressing.find_overlaps([("grid_research_network", research), *campus])
        if overlap.startswith("grid_research_network")
    )
    return problems


def _instance_problems(instances: Sequence[Mapping[str, Any]]) -> list[str]:
    problems = _duplicates(instances, "name", "grid_vpn_instances")
    problems += _duplicates(instances, "port", "grid_vpn_instances")
    for inst in instances:
        if inst.get("network") is not None:
            bad = _network_problem(inst["network"], f"grid_vpn_instances[{inst['name']}].network")
            if bad:
                problems.append(bad)
    return problems


def _slice_problems(research: str, layout: Sequence[Mapping[str, Any]]) -> list[str]:
    slices = [(f"grid_vpn_instances[{inst['name']}]", inst["network"]) for inst in layout]
    problems = [
        f"{overlap}: VPN slices must not overlap" for overlap in addressing.find_overlaps(slices)
    ]
    problems.extend(
        f"{label}.network: {net} is not inside grid_research_network {research}"
        for label, net in slices
        if not addressing.network_contains(research, net)
    )
    return problems


def _capacity_problems(
    model: Model, research: str, layout: Sequence[Mapping[str, Any]]
) -> list[str]:
    slots = int(model["max_vms_per_desktop"])
    capacity = addressing.plan_capacity(list(layout), slots)
    registry = model.get("desktop_registry") or []
    wanted = max(
        int(model["planned_desktops"]),
        len(registry),
        1 + max((int(entry["index"]) for entry in registry), default=-1),
    )
    if capacity >= wanted:
        return []
    return [
        f"grid_research_network: {research} split into {len(layout)} VPN slices "
        f"({', '.join(inst['network'] for inst in layout)}) holds {capacity} desktops with "
        f"{slots} VMs each (grid_max_vms_per_desktop), but the plan needs {wanted} "
        "(grid_planned_desktops and grid_desktop_registry); use a larger network or "
        "fewer VMs per desktop"
    ]


def _duplicates(items: Sequence[Mapping[str, Any]], key: str, name: str) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, item in enumerate(items):
        value = item.get(key)
        norm = str(value).lower()
        if norm in seen:
            problems.append(
                f"{name}[{i}].{key}: {value!r} is used twice (also by {name}[{seen[norm]}])"
            )
        else:
            seen[norm] = i
    return problems


def check_bandwidth(model: Model) -> list[str]:
    """Each bandwidth class's caps parse, the default exists, VM types name known classes."""
    problems: list[str] = []
    classes = model["bandwidth_classes"]
    problems.extend(_duplicates(classes, "name", "grid_bandwidth_classes"))
    for cls in classes:
        for direction in ("down", "up"):
            label = f"grid_bandwidth_classes[{cls['name']}].{direction}"
            try:
                bandwidth.parse_rate(cls[direction], name=label)
            except ValueError as exc:
                problems.append(str(exc))
    names = {cls["name"] for cls in classes}
    default = model["bandwidth_default_class"]
    if default not in names:
        problems.append(
            f"grid_bandwidth_default_class: {default!r} is not a class in grid_bandwidth_classes "
            f"({', '.join(sorted(names)) or 'none defined'})"
        )
    for vm in model["vm_types"]:
        wanted = vm.get("bandwidth_class")
        if wanted is not None and wanted not in names:
            problems.append(
                f"grid_vm_types[{vm['name']}].bandwidth_class: {wanted!r} is not a class in "
                f"grid_bandwidth_classes ({', '.join(sorted(names))})"
            )
    return problems


def check_vm_types(model: Model) -> list[str]:
    """VM type names, images and sizes against the smallest desktop."""
    problems: list[str] = []
    vm_types = model["vm_types"]
    if not vm_types:
        return ["grid_vm_types: the catalogue is empty; define at least one VM type"]
    problems.extend(_duplicates(vm_types, "name", "grid_vm_types"))
    reserve = int(model["host_memory_reserve_mb"])
    smallest = int(model["desktop_min_memory_mb"])
    for i, vm in enumerate(vm_types):
        label = f"grid_vm_types[{i}]"
        try:
            classad.validate_vm_name(vm["name"], name=f"{label}.name")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        label = f"grid_vm_types[{vm['name']}]"
        if not str(vm.get("image") or "").strip():
            problems.append(f"{label}.image: the VM type has no image; name its signed image file")
        try:
            classad.vm_requirements(vm, name=label)
        except ValueError as exc:
            problems.append(str(exc))
        memory = int(vm["memory_mb"])
        if memory + reserve > smallest:
            problems.append(
                f"{label}.memory_mb: {memory} MB plus grid_host_memory_reserve_mb ({reserve} MB) "
                f"does not fit the smallest desktop (grid_desktop_min_memory_mb: {smallest} MB)"
            )
    return problems


def check_memory(model: Model) -> list[str]:
    """The host memory reserve leaves room on every desktop."""
    problems: list[str] = []
    reserve = int(model["host_memory_reserve_mb"])
    smallest = int(model["desktop_min_memory_mb"])
    if reserve >= smallest:
        problems.append(
            f"grid_host_memory_reserve_mb: {reserve} MB is at least a desktop's whole RAM "
            f"(grid_desktop_min_memory_mb: {smallest} MB); no VM could ever start"
        )
    return problems


def check_policy(model: Model) -> list[str]:
    """Blackout windows and holidays are well-formed and possible."""
    try:
        policy.parse_policy(model["policy"], name="grid_policy")
    except ValueError as exc:
        return [str(exc)]
    return []


def check_desktops(model: Model) -> list[str]:
    """Desktop names are distinct and every desktop has a fixed index in the registry."""
    problems: list[str] = []
    by_id: dict[str, str] = {}
    for host in model.get("desktops") or []:
        key = addressing.desktop_id(host)
        if key in by_id:
            problems.append(
                f"desktops: {by_id[key]!r} and {host!r} are the same desktop name "
                f"({key!r}, compared without case and domain); remove one from the inventory"
            )
        else:
            by_id[key] = host
    registry = model.get("desktop_registry") or []
    try:
        addressing.assign_indices(
            registry, [e["name"] for e in registry], name="grid_desktop_registry"
        )
    except ValueError as exc:
        problems.append(str(exc))
        return problems
    registered = {addressing.desktop_id(e["name"]) for e in registry}
    missing = sorted(h for k, h in by_id.items() if k not in registered)
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        problems.append(
            f"grid_desktop_registry: {len(missing)} desktop(s) have no fixed index yet ({shown}); "
            "run playbooks/register_desktops.yml to give them one"
        )
    return problems


def check_coordinator(model: Model) -> list[str]:
    """The coordinator is reached over HTTPS only."""
    url = str(model["coordinator_url"])
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return [
            f"grid_coordinator_url: {url!r} must be an https:// URL with a host name; agents "
            "send credentials to it"
        ]
    return []


def check_services(model: Model) -> list[str]:
    """What the research network may reach: the pool's services, and NAT's allow list.

    These are the only exceptions to the research network's isolation, so they are checked
    closely: pool services name addresses and ports, and NAT never leads into the campus LAN
    or back into the research network.
    """
    problems: list[str] = []
    research = str(model["research_network"])
    research_ok = _network_problem(research, "grid_research_network") is None
    endpoint = str(model["vpn_endpoint"])
    if not _HOST.match(endpoint):
        problems.append(
            f"grid_vpn_endpoint: {endpoint!r} is not a host name or address research VMs can dial"
        )
    problems.extend(_duplicates(model["pool_services"], "name", "grid_pool_services"))
    for service in model["pool_services"]:
        label = f"grid_pool_services[{service['name']}]"
        if not service.get("addresses"):
            problems.append(f"{label}.addresses: list at least one address of the service")
        for addr in service.get("addresses") or []:
            cidr = str(addr) if "/" in str(addr) else f"{addr}/32"
            bad = _network_problem(cidr, f"{label}.addresses")
            if bad:
                problems.append(bad)
            elif research_ok and ipaddress.IPv4Network(cidr).overlaps(
                ipaddress.IPv4Network(research)
            ):
                problems.append(
                    f"{label}.addresses: {addr} is inside grid_research_network {research}; pool "
                    "services live outside the research network"
                )
        ports = [*(service.get("tcp") or []), *(service.get("udp") or [])]
        if not ports:
            problems.append(f"{label}: list the tcp and/or udp ports research VMs may reach")
        problems.extend(
            f"{label}: port {port!r} is not a port number (1-65535)"
            for port in ports
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
        )
    forbidden = [("grid_research_network", research)] if research_ok else []
    forbidden += [
        (f"grid_campus_networks[{i}]", str(net))
        for i, net in enumerate(model["campus_networks"])
        if _network_problem(net, "") is None
    ]
    for i, net in enumerate(model["nat_allow"]):
        label = f"grid_nat_allow[{i}]"
        bad = _network_problem(net, label)
        if bad:
            problems.append(bad)
            continue
        problems.extend(
            f"{overlap}: NAT must never lead into the campus LAN or the research network"
            for overlap in addressing.find_overlaps([(label, str(net)), *forbidden])
            if overlap.startswith(label)
        )
    return problems


CHECKS: dict[str, Callable[[Model], list[str]]] = {
    "network": check_network,
    "bandwidth": check_bandwidth,
    "vm_types": check_vm_types,
    "memory": check_memory,
    "policy": check_policy,
    "desktops": check_desktops,
    "coordinator": check_coordinator,
    "services": check_services,
}


def model_problems(model: Model, concern: str | None = None) -> list[str]:
    """Run one concern's checks (or all of them) and return every problem found."""
    missing = [key for key in MODEL_KEYS if key not in model]
    if missing:
        raise ValueError(f"grid model: missing keys {', '.join(missing)}")
    if concern is not None and concern not in CHECKS:
        raise ValueError(f"concern: {concern!r} is not one of {', '.join(CHECKS)}")
    selected = [CHECKS[concern]] if concern else list(CHECKS.values())
    problems: list[str] = []
    for check in selected:
        problems.extend(check(model))
    return problems

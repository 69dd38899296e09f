"""The gate: every check of the whole grid model, one concern at a time.

``meta/argument_specs.yml`` of the ``grid`` role checks each variable's type and shape first,
but Ansible validates a copy and converts loosely (a YAML ``yes`` passes as the integer 1); the
authority is here. These functions apply every rule that any consumer of the model applies --
the agent's configuration parser (``cvmc.agent.domain.config``) and the coordinator's grid file
parser (``cvmc.coordinator.domain.grid``) call the very same functions
(``cvmc.gridmodel.catalogue``, ``limits``, ``policy``) -- plus what no single variable can show
on its own: a research network too small for the planned pool, networks that overlap, a VM type
that does not fit the smallest desktop, and so on. So a model this passes is one the agent and
the coordinator accept, by construction (tests/unit/test_gate_parity.py renders both from the
case table and checks it).

Each ``check_*`` function covers one concern and returns a list of messages (empty when the
concern is fine). Every message starts with the variable it is about, so an operator can go
straight to the line to fix.

The model is a plain mapping of the ``grid_*`` variables without their ``grid_`` prefix (see
``MODEL_KEYS``); the role assembles it from the inventory.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cvmc.gridmodel import (
    addressing,
    backfill,
    cache,
    catalogue,
    jobpolicy,
    limits,
    plan,
    policy,
    vpn,
    wake,
)

Model = Mapping[str, Any]
_HOST = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
#: An OpenVPN instance name: the Linux gateway names its devices tun-NAME and ifb-NAME, and an
#: interface name holds 15 characters.
_INSTANCE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,10}\Z")
#: The largest VPN slice: the Linux gateway's tc class ids (a tunnel address's offset in its
#: slice) hold 16 bits (cvmc.gridmodel.vpn.tc_minor).
_LARGEST_SLICE_PREFIX = 16

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
    "backfill",
    "wake_on_lan",
    "cache",
    "policy",
    "job_policy",
    "host_memory_reserve_mb",
    "desktop_min_memory_mb",
    "coordinator_url",
    "images_allow_insecure_http",
    "vm_low_priority",
    "coordinator_enrol_token_ttl_s",
    "coordinator_enrol_tokens_not_before",
    "vpn_endpoint",
    "vpn_pki_dir",
    "vpn_pki_host",
    "pool_services",
    "nat_allow",
    "operator_networks",
    "desktop_registry",
    "desktops",
)


def _problem(func: Callable[[], object]) -> list[str]:
    """[] if ``func()`` passes, else its ValueError's message."""
    try:
        func()
    except ValueError as exc:
        return [str(exc)]
    return []


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _items(value: object) -> Sequence[object]:
    """``value`` if it is a list, else [] (its shape is its own check's problem)."""
    return value if isinstance(value, Sequence) and not isinstance(value, str | bytes) else []


def _not_a_list(value: object, name: str, what: str) -> list[str]:
    return [] if _is_list(value) else [f"{name}: {value!r} is not a list; give a list of {what}"]


def _network_problem(value: object, name: str) -> str | None:
    if not isinstance(value, str):
        return f"{name}: {value!r} is not an IPv4 network in CIDR form (like 10.64.0.0/16)"
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        return f"{name}: {value!r} is not an IPv4 network in CIDR form ({exc})"
    return None


def check_network(model: Model) -> list[str]:
    """Research network, campus networks, VPN slices and the address plan's capacity.

    Of these, only grid_max_vms_per_desktop reaches the agent's configuration and the
    coordinator's grid file (checked there with the same ``limits.setting``); the networks,
    instances and the plan are the gateways' and are checked here alone.
    """
    problems = _problem(
        lambda: limits.setting(model["max_vms_per_desktop"], "grid_max_vms_per_desktop")
    )
    problems += _problem(lambda: limits.setting(model["planned_desktops"], "grid_planned_desktops"))
    research = model["research_network"]
    bad = _network_problem(research, "grid_research_network")
    if bad:
        return [*problems, bad]
    problems += _research_problems(str(research), model["campus_networks"])
    problems += _instance_problems(model["vpn_instances"])
    if problems:
        return problems
    slots = int(model["max_vms_per_desktop"])
    try:
        layout = addressing.vpn_layout(
            [{k: v for k, v in inst.items() if v is not None} for inst in model["vpn_instances"]],
            str(research),
            slots,
            name="grid_vpn_instances",
        )
    except ValueError as exc:
        return [str(exc)]
    return _slice_problems(str(research), layout) or _capacity_problems(
        model, str(research), layout
    )


def _research_problems(research: str, campus_networks: object) -> list[str]:
    problems: list[str] = []
    if not ipaddress.IPv4Network(research).is_private:
        problems.append(
            f"grid_research_network: {research} is not a private range; the research network "
            "must be an isolated RFC 1918 network (for example 10.64.0.0/16)"
        )
    if not _is_list(campus_networks):
        return [*problems, *_not_a_list(campus_networks, "grid_campus_networks", "CIDRs")]
    campus: list[tuple[str, str]] = []
    for i, net in enumerate(_items(campus_networks)):
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


def _instance_problems(instances: object) -> list[str]:
    name = "grid_vpn_instances"
    if not _is_list(instances):
        return _not_a_list(instances, name, "OpenVPN instances {name, port, network}")
    items = _items(instances)
    if not items:
        return [f"{name}: the list is empty; define at least one OpenVPN instance"]
    problems: list[str] = []
    for i, inst in enumerate(items):
        if not isinstance(inst, Mapping):
            problems.append(f"{name}[{i}]: {inst!r} is not a mapping of name, port and network")
            continue
        inst_name = inst.get("name")
        if not isinstance(inst_name, str) or not _INSTANCE_NAME.match(inst_name):
            problems.append(
                f"{name}[{i}].name: {inst_name!r} is not an instance name; use 1-11 letters, "
                "digits, '_' or '-' (the gateway names its devices tun-NAME and ifb-NAME)"
            )
            continue
        problems.extend(
            f"{name}[{inst_name}].{key}: unknown key (known: name, port, network)"
            for key in sorted(str(k) for k in inst if k not in ("name", "port", "network"))
        )
        problems += _problem(
            functools.partial(
                limits.whole_number,
                inst.get("port"),
                name=f"{name}[{inst_name}].port",
                minimum=1,
                maximum=65535,
            )
        )
        if inst.get("network") is not None:
            bad = _network_problem(inst["network"], f"{name}[{inst_name}].network")
            if bad:
                problems.append(bad)
    if problems:
        return problems
    return _duplicates(items, "name", name) + _duplicates(items, "port", name)


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
    problems.extend(
        f"{label}.network: {net} is larger than /{_LARGEST_SLICE_PREFIX}; the gateway's tc "
        "class ids hold 16 bits, so use more VPN instances or a smaller research network"
        for label, net in slices
        if ipaddress.IPv4Network(net).prefixlen < _LARGEST_SLICE_PREFIX
    )
    return problems


def _capacity_problems(
    model: Model, research: str, layout: Sequence[Mapping[str, Any]]
) -> list[str]:
    slots = int(model["max_vms_per_desktop"])
    capacity = addressing.plan_capacity(list(layout), slots)
    registry = model.get("desktop_registry") or []
    indices = [
        entry["index"]
        for entry in _items(registry)
        if isinstance(entry, Mapping)
        and isinstance(entry.get("index"), int)
        and not isinstance(entry.get("index"), bool)
    ]
    wanted = max(
        int(model["planned_desktops"]),
        len(indices),
        1 + max(indices, default=-1),
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


def _duplicates(items: Sequence[object], key: str, name: str) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue  # its own check's problem
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
    """Each bandwidth class's name and caps, and the default class (``catalogue``'s rules)."""
    return catalogue.bandwidth_problems(
        model["bandwidth_classes"], model["bandwidth_default_class"]
    )


def check_vm_types(model: Model) -> list[str]:
    """The VM type catalogue (``catalogue``'s rules) and each type against the smallest desktop.

    The fit needs grid_desktop_min_memory_mb, which the coordinator's grid file does not carry;
    the agent's configuration carries it and checks the fit with :func:`fit_problems` too.
    """
    problems = catalogue.vm_type_problems(
        model["vm_types"], bandwidth_classes=model["bandwidth_classes"]
    )
    return problems + fit_problems(
        model["vm_types"], model["host_memory_reserve_mb"], model["desktop_min_memory_mb"]
    )


def check_backfill(model: Model) -> list[str]:
    """``grid_backfill``: off, or a type of the catalogue, at most ``grid_max_vms_per_desktop``
    per desktop (``cvmc.gridmodel.backfill``; the coordinator's grid file parser calls it too).

    A malformed catalogue or VM count is its own concern's problem; the names of the
    catalogue's well-formed entries and a VM count in range are what this compares against.
    """
    names = {
        vm["name"]
        for vm in _items(model["vm_types"])
        if isinstance(vm, Mapping) and isinstance(vm.get("name"), str)
    }
    try:
        most = limits.setting(model["max_vms_per_desktop"], "grid_max_vms_per_desktop")
    except ValueError:
        most = limits.RANGES["grid_max_vms_per_desktop"].maximum or 1
    return _problem(
        lambda: backfill.parse_backfill(model["backfill"], vm_types=names, max_vms_per_desktop=most)
    )


def fit_problems(vm_types: object, reserve_mb: object, desktop_min_mb: object) -> list[str]:
    """Every VM type whose memory plus the host reserve exceeds the smallest desktop.

    Only well-formed values are compared; a malformed one is its own check's problem.
    """
    try:
        reserve = limits.setting(reserve_mb, "grid_host_memory_reserve_mb")
        smallest = limits.setting(desktop_min_mb, "grid_desktop_min_memory_mb")
    except ValueError:
        return []
    problems: list[str] = []
    for vm in _items(vm_types):
        if not isinstance(vm, Mapping) or not isinstance(vm.get("name"), str):
            continue
        memory = vm.get("memory_mb")
        if isinstance(memory, bool) or not isinstance(memory, int):
            continue
        if memory + reserve > smallest:
            problems.append(
                f"grid_vm_types[{vm['name']}].memory_mb: {memory} MB plus "
                f"grid_host_memory_reserve_mb ({reserve} MB) does not fit the smallest desktop "
                f"(grid_desktop_min_memory_mb: {smallest} MB)"
            )
    return problems


def check_memory(model: Model) -> list[str]:
    """The host memory reserve and the smallest desktop: in range, with room left for VMs."""
    problems = _problem(
        lambda: limits.setting(model["host_memory_reserve_mb"], "grid_host_memory_reserve_mb")
    )
    problems += _problem(
        lambda: limits.setting(model["desktop_min_memory_mb"], "grid_desktop_min_memory_mb")
    )
    if problems:
        return problems
    reserve = int(model["host_memory_reserve_mb"])
    smallest = int(model["desktop_min_memory_mb"])
    if reserve >= smallest:
        problems.append(
            f"grid_host_memory_reserve_mb: {reserve} MB is at least a desktop's whole RAM "
            f"(grid_desktop_min_memory_mb: {smallest} MB); no VM could ever start"
        )
    return problems


def check_policy(model: Model) -> list[str]:
    """Blackout windows, holidays, the hardware virtualisation flag and the battery threshold,
    and whether VMs run at the lowest CPU and I/O priority (``grid_vm_low_priority``)."""
    problems = _problem(lambda: policy.parse_policy(model["policy"], name="grid_policy"))
    problems += _problem(
        lambda: limits.flag(model["vm_low_priority"], name=limits.LOW_PRIORITY_VARIABLE)
    )
    return problems


def check_jobs(model: Model) -> list[str]:
    """The pool's job policy: hold, release and removal limits, and accounting groups
    (``cvmc.gridmodel.jobpolicy``). The groups' names are the inventory's dept_* groups, which
    the role checks (roles/grid/tasks/checks.yml)."""
    return _problem(lambda: jobpolicy.parse(model["job_policy"]))


def check_desktops(model: Model) -> list[str]:
    """Desktop names are distinct and every desktop has a fixed index in the registry.

    The coordinator's grid file lists the registry's desktops with each one's department (its
    inventory group dept_*); the model carries no departments, so the coordinator alone checks
    them.
    """
    problems: list[str] = []
    by_id: dict[str, str] = {}
    desktops = model.get("desktops") or []
    for host in _items(desktops):
        if not isinstance(host, str):
            problems.append(f"desktops: {host!r} is not a host name")
            continue
        try:
            key = addressing.desktop_id(host, name="desktops")
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if key in by_id:
            problems.append(
                f"desktops: {by_id[key]!r} and {host!r} are the same desktop name "
                f"({key!r}, compared without case and domain); remove one from the inventory"
            )
        else:
            by_id[key] = host
    registry = model.get("desktop_registry")
    if registry is None:
        registry = []
    if not _is_list(registry):
        return [*problems, *_not_a_list(registry, "grid_desktop_registry", "{name, index}")]
    try:
        entries = addressing.assign_indices(
            registry,
            [e["name"] if isinstance(e, Mapping) else e for e in registry],
            name="grid_desktop_registry",
        )
    except ValueError as exc:
        problems.append(str(exc))
        return problems
    slots = model.get("max_vms_per_desktop")
    last_slot = slots - 1 if isinstance(slots, int) and not isinstance(slots, bool) else 0
    for entry in entries:
        # Each VM slot's VPN certificate is named <desktop id>-vm<slot> (cvmc.gridmodel.vpn).
        problems += _problem(
            functools.partial(
                vpn.identity_cn,
                entry["name"],
                max(last_slot, 0),
                name=f"grid_desktop_registry[{entry['name']}]",
            )
        )
    registered = {addressing.desktop_id(e["name"]) for e in entries}
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
    """What the coordinator's grid file and every agent carry: the grid's name, the
    coordinator's URL (HTTPS only; agents send credentials to it), whether image URLs may
    be plain http (``limits.image_url``'s switch, a lab's only), the enrolment tokens'
    lifetime and restore watermark, and Wake-on-LAN (``cvmc.gridmodel.wake``)."""
    problems = _problem(lambda: limits.grid_name(model["name"]))
    problems += _problem(
        lambda: limits.flag(model["images_allow_insecure_http"], name=limits.INSECURE_HTTP_VARIABLE)
    )
    problems += _problem(lambda: limits.coordinator_url(model["coordinator_url"]))
    for key in ("coordinator_enrol_token_ttl_s", "coordinator_enrol_tokens_not_before"):
        problems += _problem(functools.partial(limits.setting, model[key], "grid_" + key))
    problems += _problem(lambda: wake.parse_wake_on_lan(model["wake_on_lan"]))
    return problems


def check_services(model: Model) -> list[str]:
    """What the research network may reach: the pool's services, and NAT's allow list.

    These are the only exceptions to the research network's isolation, so they are checked
    closely: pool services name addresses and ports, and NAT never leads into the campus LAN
    or back into the research network. Neither the agent nor the coordinator reads them.
    Also the operators' networks, which the research network must never be one of.
    """
    problems: list[str] = []
    research = model["research_network"]
    research_ok = _network_problem(research, "grid_research_network") is None
    endpoint = model["vpn_endpoint"]
    if not isinstance(endpoint, str) or not _HOST.match(endpoint):
        problems.append(
            f"grid_vpn_endpoint: {endpoint!r} is not a host name or address research VMs can dial"
        )
    services = model["pool_services"]
    if services is None:
        services = []
    problems += _not_a_list(services, "grid_pool_services", "{name, addresses, tcp, udp}")
    services = services if _is_list(services) else []
    for i, service in enumerate(services):
        if not isinstance(service, Mapping) or not isinstance(service.get("name"), str):
            problems.append(
                f"grid_pool_services[{i}]: {service!r} is not a mapping of name, addresses, tcp "
                "and udp"
            )
            continue
        problems += _service_problems(service, str(research) if research_ok else None)
    problems += _duplicates(services, "name", "grid_pool_services")
    research_net = [("grid_research_network", str(research))] if research_ok else []
    campus = [
        (f"grid_campus_networks[{i}]", str(net))
        for i, net in enumerate(_items(model["campus_networks"]))
        if _network_problem(net, "") is None
    ]
    problems += _cidr_list_problems(
        model["nat_allow"],
        "grid_nat_allow",
        research_net + campus,
        "NAT must never lead into the campus LAN or the research network",
    )
    # The networks that may read the coordinator's metrics, dashboard and admin API (central
    # IT, the Prometheus hosts): never every address, and never the research network (a
    # research VM must not read the pool's inventory).
    problems += _cidr_list_problems(
        model["operator_networks"],
        "grid_operator_networks",
        research_net,
        "research VMs must never read the coordinator's admin view",
        every_address="name the operators' own networks",
    )
    return problems


def _cidr_list_problems(
    value: object,
    name: str,
    forbidden: list[tuple[str, str]],
    why: str,
    *,
    every_address: str | None = None,
) -> list[str]:
    """A list of CIDRs (None: none): each an IPv4 network that overlaps none of
    ``forbidden`` (``why`` says what that would mean). With ``every_address``, a /0 is refused
    with that advice."""
    if value is None:
        value = []
    problems = _not_a_list(value, name, "CIDRs")
    for i, net in enumerate(_items(value)):
        label = f"{name}[{i}]"
        bad = _network_problem(net, label)
        if bad:
            problems.append(bad)
            continue
        if every_address is not None and ipaddress.IPv4Network(str(net)).prefixlen == 0:
            problems.append(f"{label}: {net} is every address; {every_address}")
            continue
        problems.extend(
            f"{overlap}: {why}"
            for overlap in addressing.find_overlaps([(label, str(net)), *forbidden])
            if overlap.startswith(label)
        )
    return problems


def _service_problems(service: Mapping[str, Any], research: str | None) -> list[str]:
    label = f"grid_pool_services[{service['name']}]"
    problems: list[str] = []
    addresses = service.get("addresses")
    if not addresses:
        problems.append(f"{label}.addresses: list at least one address of the service")
    elif not _is_list(addresses):
        problems += _not_a_list(addresses, f"{label}.addresses", "addresses or CIDRs")
        addresses = []
    for addr in addresses or []:
        text = str(addr) if isinstance(addr, str) else None
        cidr = None if text is None else text if "/" in text else f"{text}/32"
        bad = _network_problem(cidr if cidr is not None else addr, f"{label}.addresses")
        if bad:
            problems.append(bad)
        elif research is not None and ipaddress.IPv4Network(str(cidr)).overlaps(
            ipaddress.IPv4Network(research)
        ):
            problems.append(
                f"{label}.addresses: {addr} is inside grid_research_network {research}; pool "
                "services live outside the research network"
            )
    ports: list[object] = []
    for proto in ("tcp", "udp"):
        listed = service.get(proto) or []
        if _is_list(listed):
            ports.extend(listed)
        else:
            problems += _not_a_list(listed, f"{label}.{proto}", "port numbers")
    if not ports:
        problems.append(f"{label}: list the tcp and/or udp ports research VMs may reach")
    problems.extend(
        f"{label}: port {port!r} is not a port number (1-65535)"
        for port in ports
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    )
    return problems


def check_cache(model: Model) -> list[str]:
    """``grid_cache``: off, or an address research VMs can reach, that a ``grid_pool_services``
    entry admits (its address and TCP port), outside the research network, with the domains it
    may fetch from (``cvmc.gridmodel.cache``)."""
    try:
        parsed = cache.parse_cache(model["cache"])
    except ValueError as exc:
        return [str(exc)]
    if not parsed.enabled:
        return []
    research = model["research_network"]
    if _network_problem(research, "") is None and ipaddress.IPv4Address(
        parsed.address
    ) in ipaddress.IPv4Network(str(research)):
        return [
            f"grid_cache.address: {parsed.address} is inside grid_research_network {research}; "
            "the cache is a pool service, outside the research network"
        ]
    services = [s for s in _items(model["pool_services"] or []) if isinstance(s, Mapping)]
    if not cache.admitted(parsed, services):
        return [
            f"grid_cache.address: {parsed.address}:{parsed.port} is not admitted by "
            "grid_pool_services, so the gateways would drop research VMs' requests to it; add "
            f"{{name: cache, addresses: [{parsed.address}], tcp: [{parsed.port}]}}"
        ]
    return []


def check_pki(model: Model) -> list[str]:
    """Where the VPN PKI lives: an absolute directory (the plan's rule, ``plan.pki_paths``).

    Whether ``grid_vpn_pki_host`` names a Linux host of the inventory needs the inventory, so
    the role checks that part (roles/grid/tasks/checks.yml).
    """
    return _problem(lambda: plan.pki_paths(model["vpn_pki_dir"], model["vpn_pki_host"], []))


CHECKS: dict[str, Callable[[Model], list[str]]] = {
    "network": check_network,
    "bandwidth": check_bandwidth,
    "vm_types": check_vm_types,
    "backfill": check_backfill,
    "memory": check_memory,
    "policy": check_policy,
    "jobs": check_jobs,
    "desktops": check_desktops,
    "coordinator": check_coordinator,
    "services": check_services,
    "cache": check_cache,
    "pki": check_pki,
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

"""The VPN address plan: research network slices, OpenVPN instances and tunnel addresses.

The research network (for example ``10.64.0.0/16``) is split into one slice per OpenVPN server
instance. Every desktop has a stable integer index from the desktop registry and ``slots`` tunnel
addresses, one per VM it may run. With ``K`` instances, desktop index ``i`` is served by instance
``i % K`` at position ``p = i // K``; its slot ``s`` gets host offset ``2 + p * slots + s`` inside
that instance's slice. Offset 0 is the slice's network address, offset 1 the OpenVPN server's own
address and the last address the broadcast address, none of which is ever given to a VM.

A desktop's addresses therefore depend only on its own index, the layout and ``slots``: adding or
removing other desktops never renumbers anyone (``assign_indices`` keeps existing indices).

Every function is pure (standard library only, no I/O) and raises ``ValueError`` with a message
that starts with the name of the variable being checked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypedDict

__all__ = [
    "MIN_SLICE_PREFIX",
    "RegistryEntry",
    "TunnelAddress",
    "VpnInstance",
    "as_named_networks",
    "assign_indices",
    "desktop_id",
    "find_overlaps",
    "netmask",
    "network_contains",
    "openvpn_netmask",
    "plan_capacity",
    "slice_capacity",
    "slot_of_address",
    "slot_resolver",
    "split_network",
    "tunnel_address",
    "tunnel_addresses",
    "vpn_layout",
]

#: The smallest slice (largest prefix length) the plan accepts: a /29 has 8 addresses, 5 of them
#: usable for tunnels after the network, server and broadcast addresses.
MIN_SLICE_PREFIX = 29

#: Host offsets inside a slice that are never given to a VM: the network address (0), the
#: OpenVPN server (1) and, at the other end, the broadcast address.
_RESERVED_ADDRESSES = 3
_FIRST_TUNNEL_OFFSET = 2

_CIDR_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}/\d{1,2}")


class VpnInstance(TypedDict):
    """One OpenVPN server instance of the layout, as returned by :func:`vpn_layout`."""

    name: str
    port: int
    network: str
    server: str
    netmask: str
    prefix: int
    openvpn_server: str
    capacity: int


class TunnelAddress(TypedDict):
    """One VM slot's tunnel address, as returned by :func:`tunnel_address`."""

    instance: str
    port: int
    address: str
    netmask: str
    prefix: int
    server: str
    cidr: str


class RegistryEntry(TypedDict):
    """One desktop of the registry: its name and its stable index."""

    name: str
    index: int


# --------------------------------------------------------------------------------------------
# small validators


def _parse_network(value: object, name: str) -> ipaddress.IPv4Network:
    """Parse a strict IPv4 CIDR string (host bits must be zero)."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _CIDR_RE.fullmatch(text):
        raise ValueError(
            f"{name}: {value!r} is not an IPv4 network in CIDR form (like 10.64.0.0/16)"
        )
    try:
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.IPv4Network(text, strict=False)
    except ValueError as exc:
        raise ValueError(f"{name}: {value!r} is not a valid IPv4 CIDR ({exc})") from None
    raise ValueError(
        f"{name}: {value!r} has host bits set; the network address of that range is "
        f"{loose.with_prefixlen}"
    )


def _check_int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not an integer")
    if value < minimum:
        raise ValueError(f"{name}: {value} is below the minimum of {minimum}")
    return value


def _check_str(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: {value!r} is not a non-empty string")
    return value


def _check_slots(slots: object, name: str) -> int:
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(
            f"{name}: slots (VMs per desktop) must be a positive integer, got {slots!r}"
        )
    return slots


def _check_list(value: object, name: str) -> Sequence[object]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{name}: expected a list, got {type(value).__name__}")
    return value


def _check_mapping(value: object, name: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a mapping, got {type(value).__name__}")
    return value


def slice_capacity(network: ipaddress.IPv4Network, slots: int) -> int:
    """Desktops of ``slots`` VMs that one slice holds: (addresses - 3) // slots."""
    return max(0, (network.num_addresses - _RESERVED_ADDRESSES) // slots)


# --------------------------------------------------------------------------------------------
# networks


def split_network(network: str, count: int, *, name: str = "grid_research_network") -> list[str]:
    """Split ``network`` into ``count`` equal slices and return them as CIDR strings.

    The slices' prefix is ``prefix + ceil(log2(count))``; only the first ``count`` slices are
    returned (with 3 instances the fourth quarter stays free). Slices smaller than /29 are refused.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{name}: the number of slices must be a positive integer, got {count!r}")
    net = _parse_network(network, name)
    extra_bits = (count - 1).bit_length()  # == ceil(log2(count)) for count >= 1, exactly
    new_prefix = net.prefixlen + extra_bits
    if new_prefix > MIN_SLICE_PREFIX:
        raise ValueError(
            f"{name}: {net.with_prefixlen} split into {count} slices gives /{new_prefix} slices, "
            f"smaller than /{MIN_SLICE_PREFIX}; use a larger network or fewer VPN instances"
        )
    subnets = net.subnets(prefixlen_diff=extra_bits)
    return [next(subnets).with_prefixlen for _ in range(count)]


def netmask(cidr: str, *, name: str = "value") -> str:
    """Dotted netmask of a CIDR: ``10.64.0.0/18`` -> ``255.255.192.0``."""
    return str(_parse_network(cidr, name).netmask)


def openvpn_netmask(cidr: str, *, name: str = "value") -> str:
    """OpenVPN ``server`` directive form: ``10.64.0.0/18`` -> ``10.64.0.0 255.255.192.0``."""
    net = _parse_network(cidr, name)
    return f"{net.network_address} {net.netmask}"


def network_contains(outer: str, inner: str, *, name: str = "value") -> bool:
    """True if every address of ``inner`` lies inside ``outer`` (a network contains itself)."""
    outer_net = _parse_network(outer, f"{name} (outer)")
    inner_net = _parse_network(inner, f"{name} (inner)")
    return inner_net.subnet_of(outer_net)


def as_named_networks(items: object, *, name: str = "value") -> list[tuple[str, str]]:
    """Normalise ``[[label, cidr], ...]`` or ``[{name: label, network: cidr}, ...]`` to tuples."""
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(_check_list(items, name)):
        where = f"{name}[{i}]"
        if isinstance(item, Mapping):
            if "name" not in item or "network" not in item:
                raise ValueError(f"{where}: a mapping item needs the keys 'name' and 'network'")
            label, cidr = item["name"], item["network"]
        elif isinstance(item, Sequence) and not isinstance(item, str | bytes) and len(item) == 2:
            label, cidr = item[0], item[1]
        else:
            raise ValueError(
                f"{where}: expected a [label, cidr] pair or a mapping with name and network, "
                f"got {item!r}"
            )
        pairs.append((_check_str(label, f"{where}.name"), _check_str(cidr, f"{where}.network")))
    return pairs


def find_overlaps(named_networks: Sequence[tuple[str, str]]) -> list[str]:
    """Messages ``"A (cidr) overlaps B (cidr)"`` for every overlapping pair, in input order.

    Pairs are reported as (first, second) with the first earlier in the input; [] if none overlap.
    The labels name the variables: an invalid CIDR raises ``ValueError`` starting with its label.
    """
    parsed = [(label, cidr, _parse_network(cidr, label)) for label, cidr in named_networks]
    messages: list[str] = []
    for i, (label_a, cidr_a, net_a) in enumerate(parsed):
        for label_b, cidr_b, net_b in parsed[i + 1 :]:
            if net_a.overlaps(net_b):
                messages.append(f"{label_a} ({cidr_a}) overlaps {label_b} ({cidr_b})")
    return messages


# --------------------------------------------------------------------------------------------
# the layout


def vpn_layout(
    instances: Sequence[Mapping[str, object]],
    research_network: str,
    slots: int,
    *,
    name: str = "grid_vpn_instances",
    network_name: str = "grid_research_network",
) -> list[VpnInstance]:
    """The OpenVPN instances with their slices, server addresses and capacities.

    ``instances`` items have ``name``, ``port`` and optionally ``network``. Either every item has
    a network or none has: then the research network is split into equal slices (see
    :func:`split_network`). Overlaps and containment are not checked here (see
    :func:`find_overlaps` and :func:`network_contains`).
    """
    items = _check_list(instances, name)
    if not items:
        raise ValueError(f"{name}: the list is empty; define at least one OpenVPN instance")
    slots = _check_slots(slots, name)
    checked: list[tuple[str, int, object]] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        item = _check_mapping(raw, f"{name}[{i}]")
        inst_name = _check_str(item.get("name"), f"{name}[{i}].name")
        if inst_name in seen:
            raise ValueError(f"{name}[{i}].name: {inst_name!r} is used by more than one instance")
        seen.add(inst_name)
        port = item.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"{name}[{inst_name}].port: {port!r} is not a port number (1-65535)")
        checked.append((inst_name, port, item.get("network")))

    missing = [inst_name for inst_name, _, network in checked if network is None]
    if len(missing) == len(checked):
        networks: list[object] = list(
            split_network(research_network, len(checked), name=network_name)
        )
    elif missing:
        raise ValueError(
            f"{name}: set network on every instance or on none; missing on: {', '.join(missing)}"
        )
    else:
        networks = [network for _, _, network in checked]

    layout: list[VpnInstance] = []
    for (inst_name, port, _), network in zip(checked, networks, strict=True):
        label = f"{name}[{inst_name}].network"
        net = _parse_network(network, label)
        if net.prefixlen > MIN_SLICE_PREFIX:
            raise ValueError(f"{label}: {net.with_prefixlen} is smaller than /{MIN_SLICE_PREFIX}")
        capacity = slice_capacity(net, slots)
        if capacity < 1:
            raise ValueError(
                f"{label}: {net.with_prefixlen} cannot hold one desktop of {slots} VMs "
                f"({net.num_addresses - _RESERVED_ADDRESSES} usable tunnel addresses)"
            )
        layout.append(
            VpnInstance(
                name=inst_name,
                port=port,
                network=net.with_prefixlen,
                server=str(net.network_address + 1),
                netmask=str(net.netmask),
                prefix=net.prefixlen,
                openvpn_server=f"{net.network_address} {net.netmask}",
                capacity=capacity,
            )
        )
    return layout


def _layout_slices(
    layout: Sequence[Mapping[str, object]], name: str
) -> list[tuple[str, int, ipaddress.IPv4Network]]:
    items = _check_list(layout, name)
    if not items:
        raise ValueError(f"{name}: the layout is empty; it needs at least one OpenVPN instance")
    slices: list[tuple[str, int, ipaddress.IPv4Network]] = []
    for i, raw in enumerate(items):
        item = _check_mapping(raw, f"{name}[{i}]")
        inst_name = _check_str(item.get("name"), f"{name}[{i}].name")
        port = _check_int(item.get("port"), f"{name}[{inst_name}].port", minimum=1)
        net = _parse_network(item.get("network"), f"{name}[{inst_name}].network")
        slices.append((inst_name, port, net))
    return slices


def plan_capacity(
    layout: Sequence[Mapping[str, object]], slots: int, *, name: str = "grid_vpn_layout"
) -> int:
    """How many desktops (indices 0, 1, ..., N-1) the whole plan holds with round-robin placement.

    Desktop ``i`` needs position ``i // K`` in slice ``i % K``, so the slices fill evenly and the
    smallest slice limits the plan: with equal slices (the derived layout) the plan holds
    ``K * min_cap`` desktops. With unequal slices the desktops ``K * min_cap + t`` still fit for
    the slices ``t`` before the first smallest one, so the exact count is
    ``K * min_cap + (index of the first slice whose capacity is min_cap)``; desktop N is the
    first one that does not fit.
    """
    slots = _check_slots(slots, name)
    capacities = [slice_capacity(net, slots) for _, _, net in _layout_slices(layout, name)]
    smallest = min(capacities)
    return len(capacities) * smallest + capacities.index(smallest)


def tunnel_address(
    layout: Sequence[Mapping[str, object]],
    slots: int,
    index: int,
    slot: int,
    *,
    name: str = "grid_desktop_registry",
    layout_name: str = "grid_vpn_layout",
) -> TunnelAddress:
    """The tunnel address of VM ``slot`` of the desktop with registry index ``index``."""
    slots = _check_slots(slots, name)
    slices = _layout_slices(layout, layout_name)
    return _tunnel_address(slices, layout, slots, index, slot, name=name, layout_name=layout_name)


def _tunnel_address(
    slices: Sequence[tuple[str, int, ipaddress.IPv4Network]],
    layout: Sequence[Mapping[str, object]],
    slots: int,
    index: int,
    slot: int,
    *,
    name: str,
    layout_name: str,
) -> TunnelAddress:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"{name}: desktop index must be a non-negative integer, got {index!r}")
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < slots:
        raise ValueError(f"{name}: slot must be an integer in 0..{slots - 1}, got {slot!r}")
    inst_name, port, net = slices[index % len(slices)]
    position = index // len(slices)
    capacity = slice_capacity(net, slots)
    if position >= capacity:
        raise ValueError(
            f"{name}: the address plan is full: desktop index {index} needs position {position} "
            f"in VPN instance {inst_name} ({net.with_prefixlen}), which holds {capacity} desktops "
            f"of {slots} VMs; the whole plan holds "
            f"{plan_capacity(layout, slots, name=layout_name)} desktops"
        )
    address = net.network_address + _FIRST_TUNNEL_OFFSET + position * slots + slot
    return TunnelAddress(
        instance=inst_name,
        port=port,
        address=str(address),
        netmask=str(net.netmask),
        prefix=net.prefixlen,
        server=str(net.network_address + 1),
        cidr=f"{address}/{net.prefixlen}",
    )


def slot_of_address(
    layout: Sequence[Mapping[str, object]],
    slots: int,
    address: str,
    *,
    layout_name: str = "grid_vpn_layout",
) -> tuple[int, int] | None:
    """The (desktop index, slot) whose tunnel address is ``address``: :func:`tunnel_address`
    inverted. None for an address no VM slot of the plan has (not IPv4, outside every slice,
    a slice's network, server or broadcast address, or beyond its capacity)."""
    return slot_resolver(layout, slots, layout_name=layout_name)(address)


def slot_resolver(
    layout: Sequence[Mapping[str, object]],
    slots: int,
    *,
    layout_name: str = "grid_vpn_layout",
) -> Callable[[str], tuple[int, int] | None]:
    """:func:`slot_of_address` with the layout checked and parsed once, for many addresses."""
    slots = _check_slots(slots, layout_name)
    nets = [net for _, _, net in _layout_slices(layout, layout_name)]

    def resolve(address: str) -> tuple[int, int] | None:
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            return None
        for i, net in enumerate(nets):
            if ip not in net:
                continue
            offset = int(ip) - int(net.network_address) - _FIRST_TUNNEL_OFFSET
            position, slot = divmod(offset, slots)
            if offset < 0 or position >= slice_capacity(net, slots):
                return None
            return position * len(nets) + i, slot
        return None

    return resolve


# --------------------------------------------------------------------------------------------
# the desktop registry


def desktop_id(hostname: str, *, name: str = "value") -> str:
    """A desktop's identity: its short name (before the first dot), lowercased."""
    if not isinstance(hostname, str):
        raise ValueError(f"{name}: {hostname!r} is not a host name")
    short = hostname.strip().split(".", 1)[0].lower()
    if not short or any(ch.isspace() for ch in short):
        raise ValueError(f"{name}: {hostname!r} is not a host name")
    return short


def _check_registry(registry: object, name: str) -> list[RegistryEntry]:
    entries: list[RegistryEntry] = []
    by_id: dict[str, str] = {}
    by_index: dict[int, str] = {}
    for i, raw in enumerate(_check_list(registry, name)):
        item = _check_mapping(raw, f"{name}[{i}]")
        entry_name = _check_str(item.get("name"), f"{name}[{i}].name")
        key = desktop_id(entry_name, name=f"{name}[{i}].name")
        index = _check_int(item.get("index"), f"{name}[{entry_name}].index", minimum=0)
        if key in by_id:
            raise ValueError(
                f"{name}: {by_id[key]!r} and {entry_name!r} are the same desktop ({key!r}, "
                "compared without case and domain)"
            )
        if index in by_index:
            raise ValueError(
                f"{name}: {by_index[index]!r} and {entry_name!r} both have index {index}"
            )
        by_id[key] = entry_name
        by_index[index] = entry_name
        entries.append(RegistryEntry(name=entry_name, index=index))
    return entries


def assign_indices(
    registry: Sequence[Mapping[str, object]],
    names: Sequence[str],
    *,
    name: str = "grid_desktop_registry",
) -> list[RegistryEntry]:
    """The registry for the desktops ``names``: existing indices kept, new desktops appended.

    Every existing entry whose desktop is still in ``names`` keeps its name and index; each new
    desktop (in sorted order) gets the lowest index no kept entry uses; entries of desktops no
    longer in ``names`` are dropped. Desktops are compared by :func:`desktop_id`. Sorted by index.
    """
    entries = _check_registry(registry, name)
    wanted: dict[str, str] = {}
    for i, host in enumerate(_check_list(names, f"{name} (names)")):
        key = desktop_id(_check_str(host, f"{name} (names)[{i}]"), name=f"{name} (names)[{i}]")
        if key in wanted:
            raise ValueError(
                f"{name}: the desktop names {wanted[key]!r} and {host!r} are the same desktop "
                f"({key!r}, compared without case and domain)"
            )
        wanted[key] = str(host)
    kept = [entry for entry in entries if desktop_id(entry["name"]) in wanted]
    kept_ids = {desktop_id(entry["name"]) for entry in kept}
    used = {entry["index"] for entry in kept}
    result = list(kept)
    next_index = 0
    for key in sorted(k for k in wanted if k not in kept_ids):
        while next_index in used:
            next_index += 1
        used.add(next_index)
        result.append(RegistryEntry(name=wanted[key], index=next_index))
    return sorted(result, key=lambda entry: entry["index"])


def tunnel_addresses(
    registry: Sequence[Mapping[str, object]],
    layout: Sequence[Mapping[str, object]],
    slots: int,
    *,
    name: str = "grid_desktop_registry",
    layout_name: str = "grid_vpn_layout",
) -> dict[str, list[TunnelAddress]]:
    """Desktop name (as in the registry) -> its tunnel addresses, one per slot."""
    slots = _check_slots(slots, name)
    entries = _check_registry(registry, name)
    if not entries:
        return {}
    slices = _layout_slices(layout, layout_name)
    return {
        entry["name"]: [
            _tunnel_address(
                slices,
                layout,
                slots,
                entry["index"],
                slot,
                name=f"{name}[{entry['name']}]",
                layout_name=layout_name,
            )
            for slot in range(slots)
        ]
        for entry in entries
    }

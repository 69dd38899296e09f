"""Ansible filters for the VPN address plan: thin wrappers around cvmc.gridmodel.addressing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

DOCUMENTATION = r"""
name: grid_tunnel_addresses
short_description: The desktop grid's VPN address plan
description:
  - The research network is split into one slice per OpenVPN instance. Desktop index C(i) goes
    to instance C(i % K) at position C(p = i // K); its VM slot C(s) gets host offset
    C(2 + p * slots + s) of that slice (offset 0 is the network, 1 the OpenVPN server and the
    last address the broadcast address). A desktop's addresses depend only on its own index.
  - C(grid_split_network(count)) splits a CIDR into C(count) equal slices (not below /29).
  - C(grid_vpn_layout(research_network, slots)) turns C(grid_vpn_instances) (name, port,
    optional network) into the layout (name, port, network, server, netmask, prefix,
    openvpn_server, capacity); without networks the research network is split evenly.
  - C(grid_plan_capacity(slots)) is how many desktops a layout holds with round-robin placement.
  - C(grid_overlaps) lists "A (cidr) overlaps B (cidr)" for a list of [label, cidr] pairs or of
    C({name, network}) dicts.
  - C(grid_network_contains(inner)) tells whether the input network contains C(inner).
  - C(grid_tunnel_address(slots, index, slot)) is one slot's tunnel address from a layout.
  - C(grid_tunnel_addresses(layout, slots)) maps each registry desktop to its addresses.
  - C(grid_registry_assign(names)) updates the desktop registry; existing indices are kept,
    new desktops get the lowest free index and removed desktops are dropped.
  - C(grid_desktop_id) is a host's lowercase short name; C(grid_netmask) a CIDR's dotted netmask;
    C(grid_openvpn_netmask) the C(network netmask) form of OpenVPN's C(server) directive.
  - Errors name the variable being checked.
positional: _input, layout, slots
options:
  _input:
    description: For C(grid_tunnel_addresses), the desktop registry (list of C({name, index})).
    type: list
    elements: dict
    required: true
  layout:
    description: The layout from C(grid_vpn_layout).
    type: list
    elements: dict
    required: true
  slots:
    description: Tunnel addresses (VMs) per desktop.
    type: int
    required: true
"""

EXAMPLES = r"""
- name: Lay out the VPN instances and give every desktop its tunnel addresses
  ansible.builtin.set_fact:
    grid_vpn_layout: "{{ grid_vpn_instances | grid_vpn_layout(grid_research_network, 2) }}"
    grid_desktop_registry: "{{ grid_desktop_registry | grid_registry_assign(groups['desktops']) }}"

- name: Show this desktop's addresses
  ansible.builtin.debug:
    msg: >-
      {{ (grid_desktop_registry | grid_tunnel_addresses(grid_vpn_layout, 2))
         [inventory_hostname] }}

- name: The OpenVPN server directive of a slice
  ansible.builtin.debug:
    msg: "server {{ '10.64.0.0/18' | grid_openvpn_netmask }}"  # server 10.64.0.0 255.255.192.0
"""

RETURN = r"""
_value:
  description:
    - C(grid_tunnel_addresses) returns a dict of desktop name to a list (one per slot) of
      C({instance, port, address, netmask, prefix, server, cidr}).
    - The other filters return what their description says (list, dict, int, bool or str).
  type: raw
"""


# Ansible loads filter plugins by path; put this folder on sys.path for the shared helper.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from _gridmodel_path import ensure_cvmc_importable, filter_errors  # noqa: E402

ensure_cvmc_importable()
from cvmc.gridmodel import addressing  # noqa: E402

Layout = Sequence[Mapping[str, object]]


@filter_errors
def grid_split_network(network: str, count: int, name: str = "grid_research_network") -> list[str]:
    return addressing.split_network(network, count, name=name)


@filter_errors
def grid_vpn_layout(
    instances: Layout, research_network: str, slots: int, name: str = "grid_vpn_instances"
) -> list[addressing.VpnInstance]:
    return addressing.vpn_layout(instances, research_network, slots, name=name)


@filter_errors
def grid_plan_capacity(layout: Layout, slots: int, name: str = "grid_vpn_layout") -> int:
    return addressing.plan_capacity(layout, slots, name=name)


@filter_errors
def grid_overlaps(items: object, name: str = "value") -> list[str]:
    return addressing.find_overlaps(addressing.as_named_networks(items, name=name))


@filter_errors
def grid_network_contains(outer: str, inner: str, name: str = "value") -> bool:
    return addressing.network_contains(outer, inner, name=name)


@filter_errors
def grid_tunnel_address(
    layout: Layout, slots: int, index: int, slot: int, name: str = "grid_desktop_registry"
) -> addressing.TunnelAddress:
    return addressing.tunnel_address(layout, slots, index, slot, name=name)


@filter_errors
def grid_tunnel_addresses(
    registry: Layout, layout: Layout, slots: int, name: str = "grid_desktop_registry"
) -> dict[str, list[addressing.TunnelAddress]]:
    return addressing.tunnel_addresses(registry, layout, slots, name=name)


@filter_errors
def grid_registry_assign(
    registry: Layout, names: Sequence[str], name: str = "grid_desktop_registry"
) -> list[addressing.RegistryEntry]:
    return addressing.assign_indices(registry, names, name=name)


@filter_errors
def grid_desktop_id(hostname: str, name: str = "value") -> str:
    return addressing.desktop_id(hostname, name=name)


@filter_errors
def grid_openvpn_netmask(cidr: str, name: str = "value") -> str:
    return addressing.openvpn_netmask(cidr, name=name)


@filter_errors
def grid_netmask(cidr: str, name: str = "value") -> str:
    return addressing.netmask(cidr, name=name)


class FilterModule:
    """The address plan filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {
            "grid_split_network": grid_split_network,
            "grid_vpn_layout": grid_vpn_layout,
            "grid_plan_capacity": grid_plan_capacity,
            "grid_overlaps": grid_overlaps,
            "grid_network_contains": grid_network_contains,
            "grid_tunnel_address": grid_tunnel_address,
            "grid_tunnel_addresses": grid_tunnel_addresses,
            "grid_registry_assign": grid_registry_assign,
            "grid_desktop_id": grid_desktop_id,
            "grid_openvpn_netmask": grid_openvpn_netmask,
            "grid_netmask": grid_netmask,
        }

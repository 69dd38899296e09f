"""Ansible filters for the VPN address plan: thin wrappers around cvmc.gridmodel.addressing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import addressing

DOCUMENTATION = r"""
name: grid_registry_assign
short_description: Helpers of the desktop grid's VPN address plan
description:
  - The research network is split into one slice per OpenVPN instance. Desktop index C(i) goes
    to instance C(i % K) at position C(p = i // K); its VM slot C(s) gets host offset
    C(2 + p * slots + s) of that slice (offset 0 is the network, 1 the OpenVPN server and the
    last address the broadcast address). A desktop's addresses depend only on its own index.
  - The layout, its capacity and every VM's tunnel address are derived once, in C(grid_plan)
    (role C(grid)); roles read C(grid_plan) and C(grid_vm_identities) and never re-derive them.
    These filters are the helpers that remain.
  - C(grid_split_network(count)) splits a CIDR into C(count) equal slices (not below /29).
  - C(grid_overlaps) lists "A (cidr) overlaps B (cidr)" for a list of [label, cidr] pairs or of
    C({name, network}) dicts.
  - C(grid_network_contains(inner)) tells whether the input network contains C(inner).
  - C(grid_registry_assign(names)) updates the desktop registry; existing indices are kept,
    new desktops get the lowest free index and removed desktops are dropped.
  - C(grid_desktop_id) is a host's lowercase short name; C(grid_netmask) a CIDR's dotted netmask;
    C(grid_openvpn_netmask) the C(network netmask) form of OpenVPN's C(server) directive.
  - Errors name the variable being checked.
positional: _input, names
options:
  _input:
    description: For C(grid_registry_assign), the desktop registry (list of C({name, index})).
    type: list
    elements: dict
    required: true
  names:
    description: The desktops the registry must hold (C(grid_registry_assign)).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Give every desktop of the group a fixed index
  ansible.builtin.set_fact:
    grid_desktop_registry: "{{ grid_desktop_registry | grid_registry_assign(groups['desktops']) }}"

- name: The OpenVPN server directive of a slice
  ansible.builtin.debug:
    msg: "server {{ '10.64.0.0/18' | grid_openvpn_netmask }}"  # server 10.64.0.0 255.255.192.0
"""

RETURN = r"""
_value:
  description: What each filter's description says (list, dict, bool or str).
  type: raw
"""


Layout = Sequence[Mapping[str, object]]


@filter_errors
def grid_split_network(network: str, count: int, name: str = "grid_research_network") -> list[str]:
    return addressing.split_network(network, count, name=name)


@filter_errors
def grid_overlaps(items: object, name: str = "value") -> list[str]:
    return addressing.find_overlaps(addressing.as_named_networks(items, name=name))


@filter_errors
def grid_network_contains(outer: str, inner: str, name: str = "value") -> bool:
    return addressing.network_contains(outer, inner, name=name)


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
            "grid_overlaps": grid_overlaps,
            "grid_network_contains": grid_network_contains,
            "grid_registry_assign": grid_registry_assign,
            "grid_desktop_id": grid_desktop_id,
            "grid_openvpn_netmask": grid_openvpn_netmask,
            "grid_netmask": grid_netmask,
        }

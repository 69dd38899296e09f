"""Ansible filters for VPN identities, caps and client configs: wraps cvmc.gridmodel.vpn."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import seed, vpn

DOCUMENTATION = r"""
name: grid_vpn_client_config
short_description: Client configs, tc class ids and seeds of the research VMs
description:
  - The VM identities and the cap classes are derived once, in C(grid_plan) (role C(grid));
    roles read C(grid_vm_identities), C(grid_desktop_vm_identities) and C(grid_plan.classes).
  - C(grid_vpn_client_config) renders the OpenVPN client configuration of one research VM.
    The VM writes it from its cloud-init seed at boot.
  - C(grid_identity_classes) maps each VM identity's common name to its cap class, from
    C(grid_desktop_classes) and C(grid_plan) (the default class for unlisted desktops). The
    gateways cap by this map, never by the class a VM announces.
  - C(grid_tc_minor) gives the HTB class minor of a tunnel address, which is its offset in
    its slice.
  - C(grid_seed_user_data) renders a research VM's NoCloud C(user-data) from a mapping of
    C(vm_name), C(slot), C(client_config), C(ca_cert), C(client_cert), C(client_key),
    C(tls_crypt_key) and optionally C(condor_token). C(grid_seed_meta_data) renders
    C(meta-data) from an instance id and a host name.
  - Errors name the variable given as O(name).
positional: _input
options:
  _input:
    description: >-
      The remote host (client config), the tunnel address (tc minor) or the identity (seed).
    type: raw
    required: true
  name:
    description: Name of the variable being checked, used at the start of error messages.
    type: str
"""

EXAMPLES = r"""
- name: A VM's client configuration
  ansible.builtin.copy:
    dest: /run/grid/vpn/client.conf
    content: "{{ grid_vpn_endpoint | grid_vpn_client_config(1194, 'udp', 'standard') }}"
    mode: "0600"
"""

RETURN = r"""
_value:
  description: A config text, a seed text, or an int.
  type: raw
"""


@filter_errors
def grid_vpn_client_config(
    remote: str, port: int, protocol: str, cap_class: str, name: str = "value"
) -> str:
    return vpn.client_config(
        remote=remote, port=port, protocol=protocol, cap_class=cap_class, name=name
    )


@filter_errors
def grid_identity_classes(
    identities: Sequence[Mapping[str, object]],
    desktop_classes: object,
    plan: Mapping[str, Any],
    name: str = "grid_desktop_classes",
) -> dict[str, str]:
    return vpn.identity_classes(
        identities, desktop_classes, list(plan["classes"]), str(plan["default_class"]), name=name
    )


@filter_errors
def grid_tc_minor(address: str, slice_cidr: str, name: str = "value") -> int:
    return vpn.tc_minor(address, slice_cidr, name=name)


@filter_errors
def grid_seed_user_data(identity: Mapping[str, object], name: str = "seed") -> str:
    return seed.user_data(seed.identity_files(**identity, name=name))  # type: ignore[arg-type]


@filter_errors
def grid_seed_meta_data(instance_id: str, hostname: str) -> str:
    return seed.meta_data(instance_id, hostname)


class FilterModule:
    """The VPN filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {
            "grid_vpn_client_config": grid_vpn_client_config,
            "grid_identity_classes": grid_identity_classes,
            "grid_tc_minor": grid_tc_minor,
            "grid_seed_user_data": grid_seed_user_data,
            "grid_seed_meta_data": grid_seed_meta_data,
        }

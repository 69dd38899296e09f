"""Ansible filters for VPN identities, caps and client configs: wraps cvmc.gridmodel.vpn."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

DOCUMENTATION = r"""
name: grid_vpn_identities
short_description: VPN identities, cap classes and client configs of the research VMs
description:
  - C(grid_vpn_identities) lists every VM identity of every registered desktop, sorted by
    common name. Each is C({cn, desktop, slot, instance, port, address, netmask, server}), and
    C(cn) is C(<desktop id>-vm<slot>).
  - C(grid_vpn_cap_classes) maps each bandwidth class name to its caps, in bits per second
    and in tc units (C({name, down_bits, up_bits, down, up})).
  - C(grid_vpn_client_config) renders the OpenVPN client configuration of one research VM.
    The VM writes it from its cloud-init seed at boot.
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
      The registry (identities), the classes (cap classes), or the remote host (client
      config).
    type: raw
    required: true
  name:
    description: Name of the variable being checked, used at the start of error messages.
    type: str
"""

EXAMPLES = r"""
- name: Every VM identity of the grid
  ansible.builtin.set_fact:
    identities: >-
      {{ grid_desktop_registry | grid_vpn_identities(
           grid_vpn_instances | grid_vpn_layout(grid_research_network, grid_max_vms_per_desktop),
           grid_max_vms_per_desktop) }}

- name: A VM's client configuration
  ansible.builtin.copy:
    dest: /run/grid/vpn/client.conf
    content: "{{ grid_vpn_endpoint | grid_vpn_client_config(1194, 'udp', 'standard') }}"
    mode: "0600"
"""

RETURN = r"""
_value:
  description: A list of identities, a dict of cap classes, a config text, or an int.
  type: raw
"""


# Ansible loads filter plugins by path; put this folder on sys.path for the shared helper.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))
from _gridmodel_path import ensure_cvmc_importable, filter_errors  # noqa: E402

ensure_cvmc_importable()
from cvmc.gridmodel import seed, vpn  # noqa: E402


@filter_errors
def grid_vpn_identities(
    registry: Sequence[Mapping[str, object]],
    layout: Sequence[Mapping[str, object]],
    slots: int,
    name: str = "grid_desktop_registry",
) -> list[vpn.VpnIdentity]:
    return vpn.vpn_identities(registry, layout, slots, name=name)


@filter_errors
def grid_vpn_cap_classes(
    classes: Sequence[Mapping[str, object]], name: str = "grid_bandwidth_classes"
) -> dict[str, vpn.CapClass]:
    return vpn.cap_classes(classes, name=name)


@filter_errors
def grid_vpn_client_config(
    remote: str, port: int, protocol: str, cap_class: str, name: str = "value"
) -> str:
    return vpn.client_config(
        remote=remote, port=port, protocol=protocol, cap_class=cap_class, name=name
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
            "grid_vpn_identities": grid_vpn_identities,
            "grid_vpn_cap_classes": grid_vpn_cap_classes,
            "grid_vpn_client_config": grid_vpn_client_config,
            "grid_tc_minor": grid_tc_minor,
            "grid_seed_user_data": grid_seed_user_data,
            "grid_seed_meta_data": grid_seed_meta_data,
        }

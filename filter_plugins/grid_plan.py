"""Ansible filters for the grid's plan: thin wrappers around cvmc.gridmodel.plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import plan

DOCUMENTATION = r"""
name: grid_plan
short_description: The grid's plan, derived once from the grid model
description:
  - C(grid_plan) derives what every role needs from the model, namely the OpenVPN layout
    (C(layout), C(slots), C(capacity), C(ports)), the bandwidth classes in bits and tc units
    (C(classes), C(default_class)), each VM type's class (C(vm_classes)) and the VPN PKI's
    host and files (C(pki)). The role C(grid) defines C(grid_plan) with it, once; roles read
    C(grid_plan) and never call this filter themselves.
  - C(grid_plan_identities) lists the VM identities of the registered desktops (or of one
    desktop, O(desktop)), each with its certificate's and key's paths on the PKI host.
  - Errors name the model variable at fault.
positional: _input
options:
  _input:
    description: >-
      The model (C(grid_*) variables without their prefix) for C(grid_plan); the plan for
      C(grid_plan_identities).
    type: dict
    required: true
  vpn_gateways:
    description: The inventory's group C(vpn_gateways) (C(grid_plan)).
    type: list
    elements: str
  coordinators:
    description: >-
      The inventory's group C(grid_coordinator) (C(grid_plan)); its first host keeps the VPN
      PKI when C(grid_vpn_pki_host) is empty.
    type: list
    elements: str
  registry:
    description: The desktop registry (C(grid_plan_identities)).
    type: list
    elements: dict
  desktop:
    description: Only this desktop's identities (C(grid_plan_identities)).
    type: str
"""

EXAMPLES = r"""
- name: Show the plan's OpenVPN instances
  ansible.builtin.debug:
    msg: "{{ grid_plan.layout | map(attribute='network') | list }}"

- name: List this desktop's VM identities
  ansible.builtin.debug:
    msg: "{{ grid_plan | grid_plan_identities(grid_desktop_registry, desktop=inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: The plan (a dict), or a list of identities.
  type: raw
"""


@filter_errors
def grid_plan(
    model: Mapping[str, object],
    vpn_gateways: Sequence[str] = (),
    coordinators: Sequence[str] = (),
) -> plan.Plan:
    return plan.grid_plan(model, vpn_gateways=vpn_gateways, coordinators=coordinators)


@filter_errors
def grid_plan_identities(
    grid_plan: Mapping[str, object],
    registry: Sequence[Mapping[str, object]],
    desktop: str | None = None,
) -> list[plan.PlannedIdentity]:
    return plan.plan_identities(grid_plan, registry, desktop=desktop)


class FilterModule:
    """The plan filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {"grid_plan": grid_plan, "grid_plan_identities": grid_plan_identities}

"""Ansible filter for the grid model's cross-field checks: wraps cvmc.gridmodel.validate."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import validate

DOCUMENTATION = r"""
name: grid_model_problems
short_description: Cross-field problems of the desktop grid's model
description:
  - Runs the checks of one concern of the grid model (or all of them) and returns every
    problem found, as a list of messages that each start with the variable they are about.
    An empty list means the concern is fine.
  - Concerns are C(network), C(bandwidth), C(vm_types), C(memory), C(policy), C(desktops)
    and C(coordinator), in the order the C(grid) role checks them.
  - The input is the model as one mapping of the C(grid_*) variables without their prefix,
    as C(roles/grid/vars/main.yml) builds it.
positional: _input, concern
options:
  _input:
    description: The grid model mapping.
    type: dict
    required: true
  concern:
    description: One concern to check; all of them when omitted.
    type: str
"""

EXAMPLES = r"""
- name: Check the network part of the model
  ansible.builtin.assert:
    that: __grid_problems | length == 0
    fail_msg: "{{ __grid_problems }}"
  vars:
    __grid_problems: "{{ __grid_model | grid_model_problems('network') }}"
"""

RETURN = r"""
_value:
  description: Problems found; empty when the model is fine.
  type: list
  elements: str
"""


@filter_errors
def grid_model_problems(model: Mapping[str, Any], concern: str | None = None) -> list[str]:
    return validate.model_problems(model, concern)


class FilterModule:
    """The grid model filter."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {"grid_model_problems": grid_model_problems}

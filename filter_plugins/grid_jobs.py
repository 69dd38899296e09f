"""Ansible filters for the pool's job policy: thin wrappers around cvmc.gridmodel.jobpolicy."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import jobpolicy

DOCUMENTATION = r"""
name: grid_job_policy_schedd
short_description: The schedd's SYSTEM_PERIODIC_* knobs for grid_job_policy
description:
  - Returns a list of C([knob, value]) pairs for the schedd, from O(_input), the grid model's
    C(grid_job_policy); a part turned off (0) yields no knob.
  - The companion filter C(grid_job_policy_groups) returns the negotiator's C(GROUP_*) knobs, one
    accounting group per department (a desktop's first C(dept_*) inventory group) with its share
    of the registered desktops as dynamic quota, or C([]) when C(accounting_groups) is off.
  - Errors name C(grid_job_policy).
positional: _input
options:
  _input:
    description: The grid model's C(grid_job_policy).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Render the schedd's job policy
  ansible.builtin.debug:
    msg: "{{ grid_job_policy | grid_job_policy_schedd }}"

- name: Render the negotiator's accounting groups
  ansible.builtin.debug:
    msg: >-
      {{ grid_job_policy
         | grid_job_policy_groups(grid_desktop_registry | map(attribute='name'), groups) }}
"""

RETURN = r"""
_value:
  description: Knob and value pairs, in the order they are written.
  type: list
  elements: list
"""


@filter_errors
def grid_job_policy_schedd(policy: object) -> list[list[str]]:
    return [list(knob) for knob in jobpolicy.schedd_config(jobpolicy.parse(policy))]


@filter_errors
def grid_job_policy_groups(
    policy: object, desktops: Sequence[str], groups: Mapping[str, Sequence[str]]
) -> list[list[str]]:
    return [
        list(knob)
        for knob in jobpolicy.negotiator_config(jobpolicy.parse(policy), desktops, groups)
    ]


class FilterModule:
    """The job policy filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {
            "grid_job_policy_schedd": grid_job_policy_schedd,
            "grid_job_policy_groups": grid_job_policy_groups,
        }

"""Ansible filter for the coordinator's one-time enrolment tokens: cvmc.gridmodel.enrolment."""

from __future__ import annotations

from collections.abc import Callable

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import enrolment

DOCUMENTATION = r"""
name: grid_enrol_token
short_description: Mint a desktop's one-time enrolment token for the coordinator
description:
  - Returns C(cvmc1.<generation>.<mac>), an HMAC-SHA256 of the desktop name and generation
    under the shared enrolment key. The coordinator checks it without a round trip, accepts
    each desktop and generation once, and refuses a token used on another desktop.
  - Mint a higher O(generation) to enrol a reinstalled desktop again.
  - Errors name C(grid_coordinator_enrol_key) (or O(name)).
positional: _input, desktop, generation, name
options:
  _input:
    description: The enrolment key, at least 32 characters (keep it in ansible-vault).
    type: str
    required: true
  desktop:
    description: The desktop's name as the agent reports it (its inventory name).
    type: str
    required: true
  generation:
    description: Enrolment generation, 1 to 999999.
    type: int
    default: 1
  name:
    description: Name of the key variable, used at the start of error messages.
    type: str
    default: grid_coordinator_enrol_key
"""

EXAMPLES = r"""
- name: Write the agent's one-time enrolment token
  ansible.windows.win_copy:
    dest: C:\ProgramData\cvmc\enrol.token
    content: "{{ grid_coordinator_enrol_key | grid_enrol_token(inventory_hostname) }}"
  no_log: true
"""

RETURN = r"""
_value:
  description: The token, such as C(cvmc1.1.Xq3...) (51 characters for generation 1).
  type: str
"""


@filter_errors
def grid_enrol_token(
    key: str, desktop: str, generation: int = 1, name: str = "grid_coordinator_enrol_key"
) -> str:
    return enrolment.enrol_token(key, desktop, generation, name=name)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., object]]:
        return {"grid_enrol_token": grid_enrol_token}

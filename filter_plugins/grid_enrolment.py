"""Ansible filter for the coordinator's one-time enrolment tokens: cvmc.gridmodel.enrolment."""

from __future__ import annotations

import time
from collections.abc import Callable

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import enrolment

DOCUMENTATION = r"""
name: grid_enrol_token
short_description: Mint a desktop's one-time enrolment token for the coordinator
description:
  - Returns C(cvmc2.<generation>.<issued>.<expires>.<mac>), an HMAC-SHA256 of the desktop
    name, generation, issue and expiry times under the shared enrolment key. The coordinator
    checks it without a round trip, accepts only the desktop's next generation, once, before it
    expires, and refuses a token used on another desktop or for a revoked desktop.
  - Mint the next O(generation) to enrol a reinstalled desktop again.
  - With O(reuse), returns that token unchanged while it is this desktop's token for
    O(generation) under the key and at least half of O(ttl_s) is left, so that a second
    converge writes the same token (C(changed=0)).
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
  ttl_s:
    description: Lifetime in seconds (C(grid_coordinator_enrol_token_ttl_s)), 300 to 7776000.
    type: int
    default: 604800
  reuse:
    description: The token written before, if any (empty mints a new one).
    type: str
    default: ""
  not_before:
    description:
      - C(grid_coordinator_enrol_tokens_not_before); a token issued before it is never reused.
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Write the agent's one-time enrolment token
  ansible.windows.win_copy:
    dest: C:\ProgramData\cvmc\enrol.token
    content: >-
      {{ grid_coordinator_enrol_key | grid_enrol_token(inventory_hostname,
         ttl_s=grid_coordinator_enrol_token_ttl_s, reuse=previous_token,
         not_before=grid_coordinator_enrol_tokens_not_before) }}
  no_log: true
"""

RETURN = r"""
_value:
  description: The token, such as C(cvmc2.1.1796380800.1796985600.Xq3...) (73 characters for
    generation 1 in this century).
  type: str
"""


@filter_errors
def grid_enrol_token(  # noqa: PLR0917 - the filter's documented options
    key: str,
    desktop: str,
    generation: int = 1,
    name: str = "grid_coordinator_enrol_key",
    ttl_s: int = enrolment.DEFAULT_TTL_S,
    reuse: str = "",
    not_before: int = 0,
) -> str:
    now = time.time()
    if reuse and enrolment.reusable_token(
        key, reuse, desktop, generation, now=now, ttl_s=ttl_s, not_before=not_before
    ):
        return reuse.strip()
    return enrolment.enrol_token(
        key, desktop, generation, issued_at=int(now), ttl_s=ttl_s, name=name
    )


class FilterModule:
    def filters(self) -> dict[str, Callable[..., object]]:
        return {"grid_enrol_token": grid_enrol_token}

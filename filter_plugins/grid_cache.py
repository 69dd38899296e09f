"""Ansible filter for the research VMs' caching proxy: a thin wrapper of cvmc.gridmodel.cache."""

from __future__ import annotations

from collections.abc import Callable

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import cache

DOCUMENTATION = r"""
name: grid_cache_settings
short_description: The grid model's caching proxy, with its defaults and what VMs are given
description:
  - Returns O(_input), the grid model's C(grid_cache), checked, with its keys' defaults filled in
    (C(address), C(port), C(domains)), and C(enabled), C(proxy_url) (C(http://ADDRESS:PORT), or
    empty without a cache) and C(environment), the proxy variables a research VM gives its jobs
    and its HTCondor daemons (empty without a cache).
  - Errors name C(grid_cache).
positional: _input
options:
  _input:
    description: The grid model's C(grid_cache).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Show the proxy research VMs are given
  ansible.builtin.debug:
    msg: "{{ (grid_cache | grid_cache_settings).proxy_url }}"
"""

RETURN = r"""
_value:
  description: enabled, address, port, domains, proxy_url and environment.
  type: dict
"""


@filter_errors
def grid_cache_settings(raw: object) -> dict[str, object]:
    return cache.settings(raw)


class FilterModule:
    """The caching proxy filter."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {"grid_cache_settings": grid_cache_settings}

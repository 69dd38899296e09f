"""Ansible filter for a research VM's memory: a thin wrapper around cvmc.gridmodel.memory."""

from __future__ import annotations

from collections.abc import Callable

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import memory

DOCUMENTATION = r"""
name: grid_vm_memory_mb
short_description: Memory (MB) to give a research VM on a desktop
description:
  - Returns C(min(type_memory_mb, free_mb - reserve_mb)), the VM type's memory capped at what the
    desktop has free beyond the owner's reserve.
  - Returns C(0), meaning "do not start the VM", when that is below O(minimum_mb).
  - Fails on negative inputs or a type memory below 1 MB; errors name the variable given as
    O(name).
positional: _input, free_mb, reserve_mb, minimum_mb
options:
  _input:
    description: The VM type's memory in MB.
    type: int
    required: true
  free_mb:
    description: Memory the desktop has free, in MB.
    type: int
    required: true
  reserve_mb:
    description: Memory kept for the desktop's owner, in MB.
    type: int
    required: true
  minimum_mb:
    description: Smallest VM worth starting, in MB.
    type: int
    default: 256
  name:
    description: Name of the variable being checked, used at the start of error messages.
    type: str
    default: vm_memory_mb
"""

EXAMPLES = r"""
- name: Memory for the VM on this desktop
  ansible.builtin.set_fact:
    vm_memory: >-
      {{ vm_type.memory_mb | grid_vm_memory_mb(ansible_memfree_mb, grid_host_memory_reserve_mb) }}
"""

RETURN = r"""
_value:
  description: Memory for the VM in MB, or 0 when the VM should not start.
  type: int
"""


@filter_errors
def grid_vm_memory_mb(
    type_memory_mb: int,
    free_mb: int,
    reserve_mb: int,
    minimum_mb: int = memory.DEFAULT_MINIMUM_MB,
    name: str = "vm_memory_mb",
) -> int:
    return memory.vm_memory_mb(
        type_memory_mb, free_mb, reserve_mb, minimum_mb=minimum_mb, name=name
    )


class FilterModule:
    """The memory filter."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {"grid_vm_memory_mb": grid_vm_memory_mb}

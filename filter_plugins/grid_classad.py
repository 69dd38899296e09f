"""Ansible filters for HTCondor ClassAds: thin wrappers around cvmc.gridmodel.classad."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import classad

DOCUMENTATION = r"""
name: grid_vm_requirements
short_description: HTCondor ClassAd pieces of a research VM type
description:
  - C(grid_vm_requirements) returns the job Requirements expression that matches only research
    VMs of the given type (its vm_name, Arch and OpSys, enough disk and memory, file transfer).
  - C(grid_vm_name) validates a vm_name (3-63 characters of lowercase letters and digits with
    single C(-), C(.) or C(_) between them, starting with a letter) and returns it unchanged.
  - C(grid_vm_machine_attrs) returns the attributes a research VM's startd advertises for its
    type, C({vm_name, OpSys, Arch, Cpus, Memory}).
  - Every value placed in an expression is validated first, so nothing can inject into it.
    Errors name the variable given as O(name).
positional: _input, name
options:
  _input:
    description:
      - A VM type C({name, os, arch}) (plus C(cpus) and C(memory_mb) for
        C(grid_vm_machine_attrs)), or a vm_name string for C(grid_vm_name).
    type: raw
    required: true
  name:
    description: Name of the variable being checked, used at the start of error messages.
    type: str
    default: grid_vm_types
"""

EXAMPLES = r"""
- name: Requirements of a job for the BOINC VM type
  ansible.builtin.debug:
    msg: "{{ boinc | grid_vm_requirements('grid_vm_types[its-u11-boinc-20120415]') }}"
  vars:
    boinc: {name: its-u11-boinc-20120415, os: LINUX, arch: X86_64}

- name: Check every VM type's name
  ansible.builtin.assert:
    that: (item.name | grid_vm_name('grid_vm_types[' ~ idx ~ '].name')) == item.name
  loop: "{{ grid_vm_types }}"
  loop_control:
    index_var: idx
"""

RETURN = r"""
_value:
  description:
    - C(grid_vm_requirements) returns the ClassAd expression (str).
    - C(grid_vm_name) returns the validated name (str).
    - C(grid_vm_machine_attrs) returns a dict C({vm_name, OpSys, Arch, Cpus, Memory}).
  type: raw
"""


@filter_errors
def grid_vm_requirements(vm_type: Mapping[str, object], name: str = "grid_vm_types") -> str:
    return classad.vm_requirements(vm_type, name=name)


@filter_errors
def grid_vm_name(value: str, name: str = "vm_name") -> str:
    return classad.validate_vm_name(value, name=name)


@filter_errors
def grid_vm_machine_attrs(
    vm_type: Mapping[str, object], name: str = "grid_vm_types"
) -> classad.MachineAttrs:
    return classad.vm_machine_attrs(vm_type, name=name)


class FilterModule:
    """The ClassAd filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {
            "grid_vm_requirements": grid_vm_requirements,
            "grid_vm_name": grid_vm_name,
            "grid_vm_machine_attrs": grid_vm_machine_attrs,
        }

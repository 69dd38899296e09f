"""The grid_coordinator role's ``grid_coordinator_workers`` in the service's unit: rendered by
Ansible's templar from the role's own defaults and vars, and the unit's command read by the
coordinator's own command-line parser."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from role_templates import render_role_template, unit_directives

from cvmc.coordinator.entrypoints.cli import _parser


def exec_start(**extra: Any) -> list[str]:
    variables = {
        "htcondor_central_manager": "cm.grid.example.org",
        "grid_pool_services": [],
        "inventory_hostname": "coordinator",
        "ansible_managed": "Ansible managed",
        **extra,
    }
    unit = render_role_template(
        "grid_coordinator", "cvmc-coordinator.service.j2", variables, ("sandbox.j2",)
    )
    (command,) = unit_directives(unit, "Service")["ExecStart"]
    return shlex.split(command)


@pytest.mark.parametrize(("workers", "expected"), [(None, 1), (1, 1), (2, 2), (8, 8)])
def test_the_unit_serves_with_the_roles_workers(workers: int | None, expected: int) -> None:
    extra = {} if workers is None else {"grid_coordinator_workers": workers}
    argv = exec_start(**extra)
    args = _parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.workers == expected
    assert ("--workers" in argv) == (expected > 1)  # the default unit is as before

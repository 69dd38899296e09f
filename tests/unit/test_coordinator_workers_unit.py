"""The grid_coordinator role's ``grid_coordinator_workers``: in the service's unit, rendered by
Ansible's templar from the role's own defaults and vars, and the unit's command read by the
coordinator's own command-line parser; and the role's check of it (``tasks/assert.yml``)."""

from __future__ import annotations

import functools
import shlex
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from role_templates import ROOT, render_role_template, unit_directives

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


@functools.cache
def _plugins() -> None:
    init_plugin_loader()


def _worker_checks() -> list[str]:
    tasks = yaml.safe_load((ROOT / "roles/grid_coordinator/tasks/assert.yml").read_text())
    (task,) = [t for t in tasks if t["name"] == "Check the service's worker processes"]
    assert "grid_coordinator_workers" in task["ansible.builtin.assert"]["fail_msg"]
    return list(task["ansible.builtin.assert"]["that"])


@pytest.mark.parametrize(
    ("workers", "url", "ok"),
    [
        (1, "sqlite:////var/lib/cvmc-coordinator/coordinator.db", True),
        (2, "sqlite:////var/lib/cvmc-coordinator/coordinator.db", False),
        (2, "postgresql+psycopg://cvmc@db.example.org/cvmc", True),
        (64, "postgresql://cvmc@db.example.org/cvmc", True),
        (65, "postgresql+psycopg://cvmc@db.example.org/cvmc", False),
        (0, "postgresql+psycopg://cvmc@db.example.org/cvmc", False),
    ],
)
def test_the_role_stops_on_workers_that_serve_cannot_run(workers: int, url: str, ok: bool) -> None:
    """The role's own check, evaluated by Ansible's templar as the assert module does: more
    than one worker needs PostgreSQL (``serve`` refuses it on SQLite), and 1 to 64."""
    _plugins()
    templar = Templar(
        loader=DataLoader(),
        variables={"grid_coordinator_workers": workers, "grid_coordinator_database_url": url},
    )
    held = [bool(templar.evaluate_expression(trust_as_template(c))) for c in _worker_checks()]
    assert all(held) == ok

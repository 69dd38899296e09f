"""Render a role's templates with Ansible's own templar, from the role's defaults and vars, as
the template action would; and read a rendered systemd unit's directives. Shared by the tests
that check the roles' units (tests/unit/test_linux_desktop_unit.py, test_vm_token_units.py)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _plugins() -> None:
    init_plugin_loader()


def _load(path: Path) -> dict[str, Any]:
    _plugins()
    return dict(DataLoader().load_from_file(str(path), trusted_as_template=True) or {})


def render_role_template(
    role: str, template: str, variables: dict[str, Any], includes: tuple[str, ...] = ()
) -> str:
    """``roles/<role>/templates/<template>`` rendered with the role's defaults and vars, then
    ``variables``; each of ``includes`` (a template of the role) is inlined where the template
    includes it, as the template action resolves includes from the role's templates/."""
    _plugins()
    base = ROOT / "roles" / role
    merged = {**_load(base / "defaults/main.yml"), **_load(base / "vars/main.yml"), **variables}
    text = (base / "templates" / template).read_text()
    for name in includes:
        text = text.replace(f"{{% include '{name}' %}}", (base / "templates" / name).read_text())
    templar = Templar(loader=DataLoader(), variables=merged)
    return str(templar.template(trust_as_template(text)))


def render_role_text(role: str, text: str, variables: dict[str, Any]) -> str:
    """``text`` (a task's ``content:``, say) rendered with the role's defaults and vars, then
    ``variables``."""
    _plugins()
    base = ROOT / "roles" / role
    merged = {**_load(base / "defaults/main.yml"), **_load(base / "vars/main.yml"), **variables}
    templar = Templar(loader=DataLoader(), variables=merged)
    return str(templar.template(trust_as_template(text)))


def unit_directives(unit: str, section: str) -> dict[str, list[str]]:
    """The directives of one ``[section]`` of a systemd unit, each with all of its values."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in unit.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif "=" in line and not line.startswith("#") and current == section:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found

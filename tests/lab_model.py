"""The lab inventory's grid model, loaded the way Ansible's group_vars would give it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def inventory_vars(inventory: str) -> dict[str, Any]:
    """Merge inventories/<inventory>/group_vars/all/*.yml in file order."""
    merged: dict[str, Any] = {}
    for path in sorted((ROOT / "inventories" / inventory / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def model_vars(inventory: str) -> dict[str, Any]:
    """The grid role's defaults, then inventories/<inventory>/group_vars/all (as Ansible merges
    them: the inventory leaves out what the role's defaults hold)."""
    defaults = yaml.safe_load((ROOT / "roles" / "grid" / "defaults" / "main.yml").read_text())
    return {**defaults, **inventory_vars(inventory)}


def inventory_desktops(inventory: str) -> list[str]:
    """Every host under the `desktops` group of inventories/<inventory>/hosts.yml."""
    tree = yaml.safe_load((ROOT / "inventories" / inventory / "hosts.yml").read_text())

    def walk(group: dict[str, Any] | None, inside: bool) -> list[str]:
        if not group:
            return []
        hosts = list((group.get("hosts") or {}).keys()) if inside else []
        for name, child in (group.get("children") or {}).items():
            hosts += walk(child, inside or name == "desktops")
        return hosts

    return walk(tree["all"], False)


def model_from_vars(grid_vars: dict[str, Any], desktops: list[str]) -> dict[str, Any]:
    """The mapping roles/grid/vars/main.yml builds, with the role's defaults filled in."""
    defaults = yaml.safe_load((ROOT / "roles" / "grid" / "defaults" / "main.yml").read_text())
    merged = {**defaults, **grid_vars}
    model = {key.removeprefix("grid_"): value for key, value in merged.items()}
    model.pop("desktop_group", None)
    model["desktops"] = desktops
    return model


def lab_model() -> dict[str, Any]:
    return model_from_vars(inventory_vars("lab"), inventory_desktops("lab"))

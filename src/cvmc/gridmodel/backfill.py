"""Backfill (``grid_backfill``): what a desktop runs when no job wants it.

``{"vm_type": NAME, "max_per_desktop": N}``. ``vm_type`` names a type of ``grid_vm_types``
(the seed's own VM is a BOINC image); ``""``, the default, turns backfill off. A desktop that
holds no lease for real demand gets up to ``max_per_desktop`` backfill leases (1 by default,
at most ``grid_max_vms_per_desktop``). Real demand preempts them at once, and the owner's
policy applies to them as to any VM (docs/coordinator.md, "Backfill").

The ``grid`` role's gate and the coordinator's grid file parser both call :func:`parse_backfill`,
so a model the gate passes is never refused by the coordinator. Pure; every error is a
``ValueError`` whose message starts with the variable it is about.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cvmc.gridmodel import limits

__all__ = ["BACKFILL_KEYS", "OFF", "Backfill", "parse_backfill"]

BACKFILL_KEYS: tuple[str, ...] = ("vm_type", "max_per_desktop")


@dataclass(frozen=True)
class Backfill:
    """The checked setting; ``vm_type`` empty: off."""

    vm_type: str = ""
    max_per_desktop: int = 1

    @property
    def enabled(self) -> bool:
        return bool(self.vm_type)


#: The default: no backfill.
OFF = Backfill()


def parse_backfill(
    raw: object,
    *,
    vm_types: Collection[str],
    max_vms_per_desktop: int,
    name: str = "grid_backfill",
) -> Backfill:
    """``raw`` checked against the catalogue's type names and ``grid_max_vms_per_desktop``."""
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{name}: {raw!r} is not a mapping; give {{vm_type: NAME or '', max_per_desktop: N}}"
        )
    limits.refuse_unknown_keys(raw, BACKFILL_KEYS, name)
    vm_type = raw.get("vm_type", OFF.vm_type)
    if not isinstance(vm_type, str):
        raise ValueError(f"{name}.vm_type: {vm_type!r} is not a VM type's name (or '' for off)")
    if vm_type and vm_type not in vm_types:
        known = ", ".join(sorted(vm_types)) or "none"
        raise ValueError(
            f"{name}.vm_type: {vm_type!r} is not a type in grid_vm_types (known: {known}); "
            "backfill runs one of the catalogue's signed images"
        )
    most = limits.setting(max_vms_per_desktop, "grid_max_vms_per_desktop")
    count = limits.whole_number(
        raw.get("max_per_desktop", OFF.max_per_desktop),
        name=f"{name}.max_per_desktop",
        minimum=1,
        maximum=most,
    )
    return Backfill(vm_type, count)

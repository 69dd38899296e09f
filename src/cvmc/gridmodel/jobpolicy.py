"""The pool's job policy (``grid_job_policy``): what the schedd does with jobs that a desktop
grid treats badly, and the negotiator's accounting groups per department.

A desktop grid evicts jobs whenever an owner comes back, so a job may start many times; a
transfer cut short by a vanishing VM holds a job although nothing is wrong with it; and a held
job nobody looks at stays in the queue for ever. The policy answers each with HTCondor's own
knobs, rendered by role ``condor_submit`` (``SYSTEM_PERIODIC_*``) and role
``condor_central_manager`` (``GROUP_*``):

- ``max_starts``: a job that went back to idle after more than this many starts is held, with
  a reason that says so (0: never);
- ``release_after_s`` and ``max_releases``: a job held by HTCondor for a cause a vanished VM
  explains (:data:`TRANSIENT_HOLD_CODES`) is released after that many seconds, at most that many
  times (``max_releases`` 0: never);
- ``remove_held_after_days``: a job held that long is removed (0: never);
- ``accounting_groups``: each department (a desktop's inventory group ``dept_*``, as the
  coordinator reads it) becomes an accounting group whose dynamic quota is its share of the
  registered desktops; surplus flows to whoever has demand (off by default).

Pure (standard library only); every error is a ``ValueError`` that names the variable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cvmc.gridmodel import limits

__all__ = [
    "DEFAULTS",
    "TRANSIENT_HOLD_CODES",
    "VARIABLE",
    "JobPolicy",
    "department_of",
    "negotiator_config",
    "parse",
    "schedd_config",
]

VARIABLE = "grid_job_policy"

#: The policy a model that says nothing gets (the ``grid`` role's default, documented there).
DEFAULTS: Mapping[str, int | bool] = {
    "max_starts": 20,
    "release_after_s": 1200,
    "max_releases": 3,
    "remove_held_after_days": 14,
    "accounting_groups": False,
}

#: HoldReasonCode values a vanished research VM explains (HTCondor's condor_holdcodes.h):
#: FailedToCreateProcess (6), TransferOutputError (12), TransferInputError (13).
TRANSIENT_HOLD_CODES: tuple[int, ...] = (6, 12, 13)

_RANGES: Mapping[str, limits.Range] = {
    "max_starts": limits.Range(0, 10_000, "starts before a job is held; 0 never holds"),
    "release_after_s": limits.Range(60, 7 * 86_400, "seconds a transient hold lasts"),
    "max_releases": limits.Range(0, 100, "automatic releases of one job; 0 never releases"),
    "remove_held_after_days": limits.Range(0, 3650, "days before a held job goes; 0 never"),
}

#: A department: the inventory group ``dept_*`` of a desktop; HTCondor group names take the
#: same characters (letters, digits, ``_``), so the group is named exactly as the department.
_DEPARTMENT = re.compile(r"\Adept_[A-Za-z0-9_]{1,58}\Z")


@dataclass(frozen=True)
class JobPolicy:
    """A checked ``grid_job_policy``."""

    max_starts: int
    release_after_s: int
    max_releases: int
    remove_held_after_days: int
    accounting_groups: bool


def parse(value: object, *, name: str = VARIABLE) -> JobPolicy:
    """``value`` (a mapping with any of :data:`DEFAULTS`' keys) checked and completed."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: {value!r} is not a mapping of " + ", ".join(sorted(DEFAULTS)))
    unknown = sorted(str(k) for k in value if k not in DEFAULTS)
    if unknown:
        raise ValueError(
            f"{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}"
        )
    merged = {**DEFAULTS, **value}
    numbers = {
        key: limits.whole_number(
            merged[key], name=f"{name}.{key}", minimum=bounds.minimum, maximum=bounds.maximum
        )
        for key, bounds in _RANGES.items()
    }
    groups = limits.flag(merged["accounting_groups"], name=f"{name}.accounting_groups")
    return JobPolicy(accounting_groups=groups, **numbers)


def schedd_config(policy: JobPolicy) -> list[tuple[str, str]]:
    """The schedd's ``SYSTEM_PERIODIC_*`` knobs for ``policy``, in order (knob, value); a part
    turned off (0) yields no knob, so HTCondor's own default applies."""
    knobs: list[tuple[str, str]] = []
    if policy.max_starts:
        knobs += [
            ("SYSTEM_PERIODIC_HOLD", f"JobStatus == 1 && NumJobStarts > {policy.max_starts}"),
            (
                "SYSTEM_PERIODIC_HOLD_REASON",
                f'strcat("started ", NumJobStarts, " times, more than grid_job_policy.'
                f"max_starts ({policy.max_starts}); condor_release it once the cause is "
                f'fixed")',
            ),
        ]
    if policy.max_releases:
        codes = ", ".join(str(c) for c in TRANSIENT_HOLD_CODES)
        knobs.append(
            (
                "SYSTEM_PERIODIC_RELEASE",
                f"JobStatus == 5 && member(HoldReasonCode, {{ {codes} }}) && "
                f"ifThenElse(isUndefined(NumSystemHolds), 0, NumSystemHolds) <= "
                f"{policy.max_releases} && "
                f"(time() - EnteredCurrentStatus) > {policy.release_after_s}",
            )
        )
    if policy.remove_held_after_days:
        seconds = policy.remove_held_after_days * 86_400
        knobs.append(
            (
                "SYSTEM_PERIODIC_REMOVE",
                f"JobStatus == 5 && (time() - EnteredCurrentStatus) > {seconds}",
            )
        )
    return knobs


def department_of(host: str, groups: Mapping[str, Sequence[str]]) -> str:
    """A desktop's department: the first (by name) inventory group ``dept_*`` that holds it,
    else ``default``, the rule the coordinator's grid file follows."""
    for group in sorted(g for g in groups if g.startswith("dept_")):
        if host in groups[group]:
            return group
    return "default"


def negotiator_config(
    policy: JobPolicy,
    desktops: Iterable[str],
    groups: Mapping[str, Sequence[str]],
    *,
    name: str = VARIABLE,
) -> list[tuple[str, str]]:
    """The negotiator's accounting groups for ``policy``: one group per department, with a
    dynamic quota equal to its share of ``desktops`` (the registered desktops); desktops of no
    department leave their share to jobs of no group. [] when groups are off or no desktop has
    a department."""
    if not policy.accounting_groups:
        return []
    names = list(desktops)
    if not names:
        return []
    counts: dict[str, int] = {}
    for host in names:
        dept = department_of(host, groups)
        if dept != "default":
            counts[dept] = counts.get(dept, 0) + 1
    for dept in counts:
        if not _DEPARTMENT.match(dept):
            raise ValueError(
                f"{name}.accounting_groups: inventory group {dept!r} is not an HTCondor group "
                "name (dept_ then 1-58 letters, digits or _)"
            )
    if not counts:
        return []
    ordered = sorted(counts)
    knobs = [("GROUP_NAMES", ", ".join(ordered))]
    for dept in ordered:
        # Rounded down, so that the quotas never sum past 1 (HTCondor would scale them).
        share = math.floor(counts[dept] * 1_000_000 / len(names)) / 1_000_000
        knobs.append((f"GROUP_QUOTA_DYNAMIC_{dept}", f"{share:.6f}"))
    knobs.append(("GROUP_ACCEPT_SURPLUS", "True"))
    return knobs

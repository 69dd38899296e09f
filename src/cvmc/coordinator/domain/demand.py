"""Demand: how many jobs want each VM type, from job ClassAds.

The seed's rule holds: a job without ``vm_name`` never starts a VM. With
``match_unnamed_jobs``, such a job counts for the first VM type (in the grid's order) whose
machine ad it matches (``classad2``'s real matchmaking, in the demand adapter); this module only
counts. Idle jobs (``JobStatus == 1``) always count; running ones (``JobStatus == 2``) count
with ``count_running_jobs``, so a VM that runs a job is not revoked as "above demand".
A running job also names the VM it runs on: the address the schedd authenticated its startd
at (``StartdPrincipal``), which is the VM's tunnel address, pinned by the gateway to the VM's
certificate. ``Demand.claimed`` holds those addresses, so that the allocation revokes VMs
without a job first (``cvmc.coordinator.domain.leases``).

A job counts for a type only if one VM of the type can hold it (``fits``): its RequestCpus,
RequestMemory (MB), RequestDisk (KiB, where the grid gives the type's disk) and RequestGPUs
(research VMs have none), each evaluated by the adapter against the type's slot ad, are within
the type's. A job that names a type it does not fit is counted as ``unfit`` for that type and
starts nothing: a VM started for it would never run it.

A request the ad leaves UNDEFINED does not limit the job (condor_submit always writes
RequestCpus, RequestMemory and RequestDisk, so that happens only in hand-made ads). A request
that evaluates to ERROR, to something that is not a number (a string, a boolean), to a negative
or non-finite number, or beyond ``MAX_REQUEST`` makes the job unfit: HTCondor's own slots refuse
such a job too (their WithinResourceLimits is then not true), so no VM could run it.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from cvmc.gridmodel.classad import VM_NAME_PATTERN

__all__ = [
    "ERROR",
    "IDLE",
    "MAX_REQUEST",
    "RUNNING",
    "UNKNOWN_NAMES",
    "UNKNOWN_NAME_CHARS",
    "Capacity",
    "Demand",
    "JobView",
    "Request",
    "Requests",
    "count_demand",
    "fits",
    "request_value",
    "startd_address",
]

IDLE = 1
RUNNING = 2

#: How many distinct unknown ``vm_name`` values ``Demand.unknown_names`` keeps, and how many
#: characters of each (a job's attribute is the researcher's text: bounded before it is shown).
UNKNOWN_NAMES = 20
UNKNOWN_NAME_CHARS = 63

#: The largest request taken as a number (2**53: every integer up to it is exact as a float).
MAX_REQUEST = float(2**53)


class _Error(Enum):
    ERROR = "error"


#: A request that evaluated to ERROR or to something that is not a usable number.
ERROR = _Error.ERROR

#: One evaluated request: a number, None (UNDEFINED: not asked) or ERROR.
Request = float | None | _Error


def request_value(value: object) -> Request:
    """A request from an evaluated ClassAd value, bounded: ``None`` stays ``None`` (UNDEFINED);
    an int or float from 0 to ``MAX_REQUEST`` is kept; anything else (an enum member such as
    classad2's ``Value.Error``, a boolean, a string, a list) is ``ERROR``."""
    if value is None:
        return None
    if isinstance(value, bool | Enum) or not isinstance(value, int | float):
        return ERROR  # classad2's Value.Error is an IntEnum: never a number here
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_REQUEST:
        return ERROR
    return number


@dataclass(frozen=True)
class Requests:
    """A job's requests, evaluated against one VM type's slot ad (``request_value`` each)."""

    cpus: Request = None
    memory_mb: Request = None
    disk_kb: Request = None
    gpus: Request = None


@dataclass(frozen=True)
class Capacity:
    """What one VM of a type offers a job."""

    cpus: int
    memory_mb: int
    disk_kb: int | None = None  # None: the grid gives no disk size; RequestDisk is not checked
    gpus: int = 0


def fits(requests: Requests, capacity: Capacity) -> bool:
    """Whether one VM of ``capacity`` can hold a job with ``requests`` (see the module's doc)."""
    pairs: tuple[tuple[Request, int | None], ...] = (
        (requests.cpus, capacity.cpus),
        (requests.memory_mb, capacity.memory_mb),
        (requests.disk_kb, capacity.disk_kb),
        (requests.gpus, capacity.gpus),
    )
    for value, limit in pairs:
        if value is ERROR:
            return False
        if value is None or limit is None:
            continue
        if value > limit:
            return False
    return True


def startd_address(principal: object) -> str | None:
    """The IPv4 address in a running job's ``StartdPrincipal``
    (``execute-side@matchsession/10.64.0.2``), or None: no principal, or no address in it."""
    if not isinstance(principal, str) or len(principal) > 512 or "/" not in principal:
        return None
    tail = principal.rsplit("/", 1)[1]
    try:
        return str(ipaddress.IPv4Address(tail))
    except ValueError:
        return None


@dataclass(frozen=True)
class JobView:
    status: int
    vm_name: str | None  # None: the job names no VM type
    ad: object = field(default=None, compare=False)  # the job's ClassAd, for matching
    #: A running job's VM: the address its startd authenticated from (``startd_address``).
    startd: str | None = None


@dataclass(frozen=True)
class Demand:
    by_type: Mapping[str, int] = field(default_factory=dict)
    idle: int = 0  # idle jobs seen (named or not)
    unnamed: int = 0  # jobs without vm_name (not counted unless matched)
    matched: int = 0  # unnamed jobs counted through ClassAd matching
    unknown: int = 0  # jobs naming a vm_name that is not in the grid
    #: Those jobs by the name they give (at most ``UNKNOWN_NAMES`` names, each cut to
    #: ``UNKNOWN_NAME_CHARS``): a researcher's typo, shown to the operator.
    unknown_names: Mapping[str, int] = field(default_factory=dict)
    unfit: Mapping[str, int] = field(default_factory=dict)  # jobs a type cannot hold, by type
    #: The addresses of the VMs that run a job (running jobs' startds), whatever their type.
    claimed: frozenset[str] = frozenset()


def count_demand(
    jobs: Iterable[JobView],
    known_types: Iterable[str],
    *,
    count_running: bool,
    match: Callable[[JobView], str | None] | None = None,
    fit: Callable[[JobView, str], bool] | None = None,
) -> Demand:
    """Count ``jobs`` by VM type. ``match`` names the type an unnamed job matches (or None);
    ``fit`` says whether a type can hold a job (``fits`` in the adapter); without it every
    job fits."""
    known = set(known_types)
    counts: Counter[str] = Counter()
    unfit: Counter[str] = Counter()
    unknown_names: Counter[str] = Counter()
    idle = unnamed = matched = unknown = 0
    claimed: set[str] = set()
    for job in jobs:
        if job.status == RUNNING and job.startd is not None:
            claimed.add(job.startd)
        if job.status == IDLE:
            idle += 1
        elif not (count_running and job.status == RUNNING):
            continue
        name = job.vm_name
        if name is None:
            unnamed += 1
            name = match(job) if match is not None else None
            if name is None:
                continue
            matched += 1
        if not VM_NAME_PATTERN.match(name) or name not in known:
            unknown += 1
            shown = name[:UNKNOWN_NAME_CHARS]
            if shown in unknown_names or len(unknown_names) < UNKNOWN_NAMES:
                unknown_names[shown] += 1
            continue
        if fit is not None and not fit(job, name):
            unfit[name] += 1
            continue
        counts[name] += 1
    return Demand(
        dict(counts),
        idle,
        unnamed,
        matched,
        unknown,
        dict(unknown_names),
        dict(unfit),
        frozenset(claimed),
    )

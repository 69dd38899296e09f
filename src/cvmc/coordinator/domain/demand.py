"""Demand: how many jobs want each VM type, from job ClassAds.

The seed's rule holds: a job without ``vm_name`` never starts a VM. With
``match_unnamed_jobs``, such a job counts for the first VM type (in the grid's order) whose
machine ad it matches (``classad2``'s real matchmaking, in the demand adapter); this module only
counts. Idle jobs (``JobStatus == 1``) always count; running ones (``JobStatus == 2``) count
with ``count_running_jobs``, so a VM that runs a job is not revoked as "above demand".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cvmc.gridmodel.classad import VM_NAME_PATTERN

__all__ = ["IDLE", "RUNNING", "Demand", "JobView", "count_demand"]

IDLE = 1
RUNNING = 2


@dataclass(frozen=True)
class JobView:
    status: int
    vm_name: str | None  # None: the job names no VM type
    ad: object = field(default=None, compare=False)  # the job's ClassAd, for matching


@dataclass(frozen=True)
class Demand:
    by_type: Mapping[str, int] = field(default_factory=dict)
    idle: int = 0  # idle jobs seen (named or not)
    unnamed: int = 0  # jobs without vm_name (not counted unless matched)
    matched: int = 0  # unnamed jobs counted through ClassAd matching
    unknown: int = 0  # jobs naming a vm_name that is not in the grid


def count_demand(
    jobs: Iterable[JobView],
    known_types: Iterable[str],
    *,
    count_running: bool,
    match: Callable[[JobView], str | None] | None = None,
) -> Demand:
    known = set(known_types)
    counts: Counter[str] = Counter()
    idle = unnamed = matched = unknown = 0
    for job in jobs:
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
            continue
        counts[name] += 1
    return Demand(dict(counts), idle, unnamed, matched, unknown)

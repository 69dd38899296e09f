"""Demand from HTCondor job ClassAds: live schedds (``htcondor2``) or a ``condor_q -long`` file.

Both read the same attributes (``PROJECTION``) and count with ``count_demand``. Unnamed jobs are
matched, when ``match_unnamed_jobs`` is on, with ``classad2``'s own symmetric matchmaking (the
job's Requirements against the machine, and the machine's against the job) against each VM
type's machine ad (``cvmc.gridmodel.classad.vm_machine_attrs`` plus what every research VM's
startd has: file transfer, a disk, Requirements = true).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import classad2

from cvmc.coordinator.domain.demand import Demand, JobView, count_demand
from cvmc.coordinator.domain.grid import VmType
from cvmc.coordinator.ports import DemandSource

__all__ = [
    "PROJECTION",
    "ClassAdMatcher",
    "JobAdsFileDemand",
    "ScheddDemand",
    "jobs_from_ads",
    "parse_job_ads",
]

#: The job attributes the demand adapter reads (Schedd.query projection).
PROJECTION = [
    "ClusterId",
    "ProcId",
    "JobStatus",
    "vm_name",
    "RequestCpus",
    "RequestMemory",
    "RequestDisk",
    "Requirements",
    "ImageSize",
    "DiskUsage",
    "Owner",
]
CONSTRAINT = "JobStatus == 1 || JobStatus == 2"
#: The research VM's disk as its startd reports it (KiB): big enough for any job's DiskUsage.
VM_DISK_KB = 100 * 1024 * 1024


def _vm_name(ad: Any) -> str | None:  # noqa: ANN401 - a classad2.ClassAd
    try:
        value = ad.eval("vm_name")
    except (KeyError, ValueError, TypeError):
        return None
    return value if isinstance(value, str) else None


def jobs_from_ads(ads: Iterable[Any]) -> list[JobView]:
    jobs = []
    for ad in ads:
        try:
            status = int(ad.eval("JobStatus"))
        except (KeyError, ValueError, TypeError):
            continue
        jobs.append(JobView(status=status, vm_name=_vm_name(ad), ad=ad))
    return jobs


def parse_job_ads(text: str) -> list[Any]:
    """Job ads from ``condor_q -long`` output (ads separated by blank lines), via classad2."""
    return list(classad2.parseAds(text, classad2.ParserType.Old))


class ClassAdMatcher:
    """The first VM type (grid order) whose machine ad a job's Requirements match."""

    def __init__(self, vm_types: Sequence[VmType]) -> None:
        self.machines: list[tuple[str, Any]] = []
        for vm in vm_types:
            machine = classad2.ClassAd()
            for key, value in vm.machine.items():
                machine[key] = value
            machine["Disk"] = VM_DISK_KB
            machine["HasFileTransfer"] = True
            machine["Requirements"] = classad2.ExprTree("true")
            self.machines.append((vm.name, machine))

    def __call__(self, job: JobView) -> str | None:
        ad: Any = job.ad
        if ad is None:
            return None
        for name, machine in self.machines:
            try:
                if ad.symmetricMatch(machine):
                    return name
            except (ValueError, TypeError, RuntimeError):
                return None
        return None


class _AdsDemand(DemandSource):
    def __init__(
        self, vm_types: Sequence[VmType], *, match_unnamed: bool, count_running: bool
    ) -> None:
        self.vm_types = list(vm_types)
        self.match = ClassAdMatcher(vm_types) if match_unnamed else None
        self.count_running = count_running

    def _count(self, ads: Iterable[Any]) -> Demand:
        return count_demand(
            jobs_from_ads(ads),
            [t.name for t in self.vm_types],
            count_running=self.count_running,
            match=self.match,
        )

    def demand(self) -> Demand:
        raise NotImplementedError


class JobAdsFileDemand(_AdsDemand):
    """Demand from a file of job ads in ``condor_q -long`` format (the lab, molecule)."""

    def __init__(self, path: str, vm_types: Sequence[VmType], **kwargs: bool) -> None:
        super().__init__(vm_types, **kwargs)
        self.path = path

    def demand(self) -> Demand:
        with open(self.path, encoding="utf-8") as fh:
            text = fh.read()
        return self._count(parse_job_ads(text))


class ScheddDemand(_AdsDemand):
    """Demand from the pool's schedds through ``htcondor2`` (``Schedd.query``)."""

    def __init__(
        self, collector: str, schedds: Sequence[str], vm_types: Sequence[VmType], **kwargs: bool
    ) -> None:
        super().__init__(vm_types, **kwargs)
        self.collector = collector
        self.schedds = list(schedds)

    def demand(self) -> Demand:
        import htcondor2  # noqa: PLC0415 - loads the HTCondor config; only where used

        try:
            collector = (
                htcondor2.Collector(self.collector) if self.collector else htcondor2.Collector()
            )
            ads = collector.locateAll(htcondor2.DaemonType.Schedd)
            if self.schedds:
                wanted = set(self.schedds)
                ads = [ad for ad in ads if ad.get("Name") in wanted]
                if not ads:
                    raise OSError(f"demand.schedds: none of {sorted(wanted)} is in the collector")
            jobs: list[Any] = []
            for ad in ads:
                jobs.extend(
                    htcondor2.Schedd(ad).query(constraint=CONSTRAINT, projection=PROJECTION)
                )
        except htcondor2.HTCondorException as exc:
            raise OSError(f"htcondor: {exc}") from None
        return self._count(jobs)

"""Demand from HTCondor job ClassAds: live schedds (``htcondor2``) or a ``condor_q -long`` file.

Both read the same attributes (``PROJECTION``) and count with ``count_demand``. Each VM type has
one machine ad, ``machine_ad``: the slot ad a research VM of the type advertises
(``cvmc.gridmodel.classad.vm_slot_ad``, with ``demand.vm_condor_version`` as its
CondorVersion). Two things read it:

- ``FitCheck``: a job's RequestCpus, RequestMemory, RequestDisk and RequestGPUs, evaluated by
  ``classad2`` with the job as MY and the machine ad as TARGET (RequestMemory is often an
  expression), must be within the type's (``cvmc.coordinator.domain.demand.fits``);
- ``ClassAdMatcher``, when ``match_unnamed_jobs`` is on: ``classad2``'s own symmetric
  matchmaking of an unnamed job (the job's Requirements against the machine, and the machine's
  START and WithinResourceLimits against the job).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import classad2

from cvmc.coordinator.domain.demand import (
    ERROR,
    RUNNING,
    Capacity,
    Demand,
    JobView,
    Request,
    Requests,
    count_demand,
    fits,
    request_value,
    startd_address,
)
from cvmc.coordinator.domain.grid import VmType
from cvmc.coordinator.ports import DemandSource
from cvmc.gridmodel.classad import DEFAULT_VM_CONDOR_VERSION, vm_slot_ad

__all__ = [
    "PROJECTION",
    "VM_DISK_KB",
    "ClassAdMatcher",
    "FitCheck",
    "JobAdsFileDemand",
    "ScheddDemand",
    "job_requests",
    "jobs_from_ads",
    "machine_ad",
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
    "RequestGPUs",
    "Requirements",
    "MemoryUsage",  # condor_submit's default RequestMemory reads it, and so ResidentSetSize
    "ResidentSetSize",
    "ImageSize",
    "DiskUsage",
    "Owner",
    "StartdPrincipal",  # a running job's VM: the address its startd authenticated from
]
CONSTRAINT = "JobStatus == 1 || JobStatus == 2"
#: The slot's Disk (KiB) of a VM type whose disk the grid does not give: 100 GiB, so that any
#: ordinary job's RequestDisk fits (such a type's RequestDisk is not checked by ``FitCheck``).
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
            status = ad.eval("JobStatus")
        except (KeyError, ValueError, TypeError):
            continue
        # classad2's Value.Error and Value.Undefined are ints (IntEnum): not a JobStatus.
        if isinstance(status, bool | Enum) or not isinstance(status, int):
            continue
        startd = None
        if status == RUNNING:
            try:
                startd = startd_address(ad.eval("StartdPrincipal"))
            except (KeyError, ValueError, TypeError):
                startd = None
        jobs.append(JobView(status=status, vm_name=_vm_name(ad), ad=ad, startd=startd))
    return jobs


def parse_job_ads(text: str) -> list[Any]:
    """Job ads from ``condor_q -long`` output (ads separated by blank lines), via classad2."""
    return list(classad2.parseAds(text, classad2.ParserType.Old))


def machine_ad(vm: VmType, condor_version: str = DEFAULT_VM_CONDOR_VERSION) -> Any:  # noqa: ANN401
    """The slot ad of a research VM of type ``vm`` running HTCondor ``condor_version``, as a
    ``classad2.ClassAd`` parsed from ``vm_slot_ad``'s ``condor_status -long`` text."""
    attrs = vm_slot_ad(
        vm.machine,
        condor_version=condor_version,
        disk_kb=vm.disk_kb if vm.disk_kb is not None else VM_DISK_KB,
    )
    text = "\n".join(f"{key} = {value}" for key, value in attrs.items())
    return classad2.parseOne(text, classad2.ParserType.Old)


def _request(ad: Any, attr: str, machine: Any) -> Request:  # noqa: ANN401 - classad2.ClassAd
    try:
        expr = ad.lookup(attr)
    except KeyError:
        return None  # not in the ad: UNDEFINED
    try:
        value = expr.eval(scope=ad, target=machine)
    except (ValueError, TypeError, RuntimeError):
        return ERROR
    if value is classad2.Value.Undefined:
        return None
    return request_value(value)


def job_requests(ad: Any, machine: Any) -> Requests:  # noqa: ANN401 - classad2.ClassAds
    """A job's requests, evaluated with the job as MY and ``machine`` as TARGET, bounded."""
    return Requests(
        cpus=_request(ad, "RequestCpus", machine),
        memory_mb=_request(ad, "RequestMemory", machine),
        disk_kb=_request(ad, "RequestDisk", machine),
        gpus=_request(ad, "RequestGPUs", machine),
    )


class FitCheck:
    """Whether one VM of a type can hold a job (``fits``; a job without an ad always does)."""

    def __init__(
        self, vm_types: Sequence[VmType], *, condor_version: str = DEFAULT_VM_CONDOR_VERSION
    ) -> None:
        self.types: dict[str, tuple[Any, Capacity]] = {
            vm.name: (machine_ad(vm, condor_version), Capacity(vm.cpus, vm.memory_mb, vm.disk_kb))
            for vm in vm_types
        }

    def __call__(self, job: JobView, vm_name: str) -> bool:
        machine, capacity = self.types[vm_name]
        if job.ad is None:
            return True
        return fits(job_requests(job.ad, machine), capacity)


class ClassAdMatcher:
    """The first VM type (grid order) whose machine ad a job matches, both ways."""

    def __init__(
        self, vm_types: Sequence[VmType], *, condor_version: str = DEFAULT_VM_CONDOR_VERSION
    ) -> None:
        self.machines: list[tuple[str, Any]] = [
            (vm.name, machine_ad(vm, condor_version)) for vm in vm_types
        ]

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
        self,
        vm_types: Sequence[VmType],
        *,
        match_unnamed: bool,
        count_running: bool,
        condor_version: str = DEFAULT_VM_CONDOR_VERSION,
    ) -> None:
        self.vm_types = list(vm_types)
        self.match = (
            ClassAdMatcher(vm_types, condor_version=condor_version) if match_unnamed else None
        )
        self.fit = FitCheck(vm_types, condor_version=condor_version)
        self.count_running = count_running

    def _count(self, ads: Iterable[Any]) -> Demand:
        return count_demand(
            jobs_from_ads(ads),
            [t.name for t in self.vm_types],
            count_running=self.count_running,
            match=self.match,
            fit=self.fit,
        )

    def demand(self) -> Demand:
        raise NotImplementedError


class JobAdsFileDemand(_AdsDemand):
    """Demand from a file of job ads in ``condor_q -long`` format (molecule coordinator)."""

    def __init__(
        self,
        path: str,
        vm_types: Sequence[VmType],
        *,
        match_unnamed: bool,
        count_running: bool,
        condor_version: str = DEFAULT_VM_CONDOR_VERSION,
    ) -> None:
        super().__init__(
            vm_types,
            match_unnamed=match_unnamed,
            count_running=count_running,
            condor_version=condor_version,
        )
        self.path = path

    def demand(self) -> Demand:
        with open(self.path, encoding="utf-8") as fh:
            text = fh.read()
        return self._count(parse_job_ads(text))


class ScheddDemand(_AdsDemand):
    """Demand from the pool's schedds through ``htcondor2`` (``Schedd.query``)."""

    def __init__(
        self,
        collector: str,
        schedds: Sequence[str],
        vm_types: Sequence[VmType],
        *,
        match_unnamed: bool,
        count_running: bool,
        condor_version: str = DEFAULT_VM_CONDOR_VERSION,
    ) -> None:
        super().__init__(
            vm_types,
            match_unnamed=match_unnamed,
            count_running=count_running,
            condor_version=condor_version,
        )
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

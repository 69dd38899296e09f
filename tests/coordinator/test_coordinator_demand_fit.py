"""Demand that fits: the pure rules (requests, fits, unfit counting), the VM types' slot ad, and
the coordinator's setting for the HTCondor version the VMs run."""

from __future__ import annotations

import enum
import math
from typing import Any

import classad2
import pytest
from coordinator.coord_support import BOINC, BULK, GRID

from cvmc.coordinator.domain.config import ConfigError, DemandConfig, parse_config
from cvmc.coordinator.domain.demand import (
    ERROR,
    MAX_REQUEST,
    Capacity,
    JobView,
    Requests,
    count_demand,
    fits,
    request_value,
)
from cvmc.coordinator.domain.grid import parse_grid
from cvmc.gridmodel import classad

BOINC_TYPE = parse_grid(GRID).vm_types[0]


class _IntEnum(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (0, 0.0),
        (1, 1.0),
        (512, 512.0),
        (1.5, 1.5),
        (2**53, MAX_REQUEST),
        (2**54, ERROR),
        (-1, ERROR),
        (math.inf, ERROR),
        (math.nan, ERROR),
        (True, ERROR),
        ("512", ERROR),
        ([1], ERROR),
        (_IntEnum.ONE, ERROR),  # like classad2's Value.Error, which is an int
        (classad2.Value.Error, ERROR),
    ],
)
def test_request_values_are_bounded(value: object, expected: object) -> None:
    assert request_value(value) == expected


SMALL = Capacity(cpus=1, memory_mb=512)


@pytest.mark.parametrize(
    ("requests", "capacity", "expected"),
    [
        (Requests(1, 512, 45, None), SMALL, True),
        (Requests(1, 513, 45, None), SMALL, False),
        (Requests(2, 256, 45, None), SMALL, False),
        (Requests(64, 200000, 45, None), SMALL, False),
        # No disk size for the type: RequestDisk is not checked.
        (Requests(1, 256, 524288000, None), SMALL, True),
        (Requests(1, 256, 524288000, None), Capacity(1, 512, 20 * 1024 * 1024), False),
        (Requests(1, 256, 20 * 1024 * 1024, None), Capacity(1, 512, 20 * 1024 * 1024), True),
        # Research VMs have no GPUs: asking for none fits, for one does not.
        (Requests(1, 256, 45, 0), SMALL, True),
        (Requests(1, 256, 45, 1), SMALL, False),
        # UNDEFINED does not limit the job; ERROR makes it unfit.
        (Requests(None, None, None, None), SMALL, True),
        (Requests(1, None, 45, None), SMALL, True),
        (Requests(1, ERROR, 45, None), SMALL, False),
        (Requests(ERROR, 1, 45, None), SMALL, False),
        (Requests(1, 1, ERROR, None), SMALL, False),
        (Requests(1, 1, ERROR, None), Capacity(1, 512, None), False),
    ],
)
def test_fits(requests: Requests, capacity: Capacity, expected: bool) -> None:
    assert fits(requests, capacity) is expected


def test_jobs_a_type_cannot_hold_are_unfit_not_demand() -> None:
    big = object()
    jobs = [
        JobView(1, BOINC),
        JobView(1, BOINC, ad=big),
        JobView(1, BOINC, ad=big),
        JobView(2, BOINC, ad=big),  # running: counted only with count_running
        JobView(1, BULK),
        JobView(1, "retired-image-2019", ad=big),  # unknown: never asked whether it fits
        JobView(1, None, ad=big),  # unnamed, matched to BULK, does not fit it
        JobView(5, BOINC, ad=big),  # held: never counted
    ]
    asked: list[tuple[int, str]] = []

    def fit(job: JobView, name: str) -> bool:
        asked.append((job.status, name))
        return job.ad is not big

    demand = count_demand(jobs, [BOINC, BULK], count_running=False, match=lambda job: BULK, fit=fit)
    assert dict(demand.by_type) == {BOINC: 1, BULK: 1}
    assert dict(demand.unfit) == {BOINC: 2, BULK: 1}
    assert (demand.idle, demand.unnamed, demand.matched, demand.unknown) == (6, 1, 1, 1)
    assert "retired-image-2019" not in {name for _, name in asked}
    running = count_demand(jobs, [BOINC, BULK], count_running=True, match=None, fit=fit)
    assert dict(running.unfit) == {BOINC: 3}
    # Without a fit check every job fits (and nothing is unfit).
    assert count_demand(jobs, [BOINC, BULK], count_running=False).unfit == {}


# -- the slot ad of a VM type -----------------------------------------------------------------


def slot(version: str = "23.9.6", disk_kb: int = 1024) -> Any:
    attrs = classad.vm_slot_ad(BOINC_TYPE.machine, condor_version=version, disk_kb=disk_kb)
    return classad2.parseOne("\n".join(f"{k} = {v}" for k, v in attrs.items()))


def test_the_slot_ad_carries_the_vms_condor_version() -> None:
    for version in ("23.9.6", "25.0.14", "8.9.7"):
        ad = slot(version)
        assert classad2.ExprTree("split(CondorVersion)[1]").eval(scope=ad) == version
    # The clause condor_submit writes for relative-path transfers reads it.
    clause = classad2.ExprTree('versioncmp(split(TARGET.CondorVersion)[1],"8.9.7") >= 0')
    job = classad2.ClassAd()
    assert clause.eval(scope=job, target=slot("23.9.6")) is True
    assert clause.eval(scope=job, target=slot("8.9.6")) is False
    # Without a CondorVersion, the same clause is an ERROR (the defect this fixes).
    bare = slot()
    del bare["CondorVersion"]
    assert clause.eval(scope=job, target=bare) is classad2.Value.Error


def test_the_slot_ad_is_what_a_research_vm_advertises() -> None:
    ad = slot(disk_kb=20 * 1024 * 1024)
    assert ad["vm_name"] == BOINC
    assert (ad["OpSys"], ad["Arch"], ad["Cpus"], ad["Memory"]) == ("LINUX", "X86_64", 1, 512)
    assert (ad["Disk"], ad["GPUs"], ad["HasFileTransfer"]) == (20 * 1024 * 1024, 0, True)
    assert ad["HasSelfCheckpointTransfers"] is True
    assert str(ad.lookup("Requirements")) == "START && (WithinResourceLimits)"
    # The machine's side of matchmaking: START (the seed's rule) and the slot's resources.
    job = classad2.ClassAd(
        {"RequestCpus": 1, "RequestMemory": 512, "RequestDisk": 45, "vm_name": BOINC}
    )
    assert ad.lookup("Requirements").eval(scope=ad, target=job) is True
    job["vm_name"] = BULK
    assert ad.lookup("Requirements").eval(scope=ad, target=job) is False
    del job["vm_name"]
    assert ad.lookup("Requirements").eval(scope=ad, target=job) is True
    job["RequestMemory"] = 513
    assert ad.lookup("Requirements").eval(scope=ad, target=job) is False


@pytest.mark.parametrize("version", ["23.9.6", "25.0.14", "8.9.7", "0.0.0", "999.999.999"])
def test_condor_versions_that_are_accepted(version: str) -> None:
    assert classad.validate_condor_version(version) == version


@pytest.mark.parametrize(
    "version",
    [
        "",
        "23.9",
        "23",
        "23.9.6.1",
        "v23.9.6",
        "23.9.6 ",
        " 23.9.6",
        "23.9.6\n",
        "1000.0.0",
        "23.9.x",
        '23.9.6" || true || "',
        "2" * 1000,
        23,
        None,
    ],
)
def test_condor_versions_that_are_refused(version: object) -> None:
    with pytest.raises(ValueError, match=r"^condor_version: .* is not an HTCondor version"):
        classad.validate_condor_version(version)
    with pytest.raises(ValueError, match="HTCondor version"):
        classad.vm_slot_ad(BOINC_TYPE.machine, condor_version=version, disk_kb=1)  # type: ignore[arg-type]


def test_the_slot_ad_refuses_values_that_would_inject() -> None:
    attrs = dict(BOINC_TYPE.machine)
    with pytest.raises(ValueError, match="OpSys"):
        classad.vm_slot_ad(
            {**attrs, "OpSys": 'LINUX" || true || "'},  # type: ignore[typeddict-item]
            condor_version="23.9.6",
            disk_kb=1,
        )
    with pytest.raises(ValueError, match="Disk"):
        classad.vm_slot_ad(BOINC_TYPE.machine, condor_version="23.9.6", disk_kb=0)


# -- configuration and grid file ----------------------------------------------------------------


def test_vm_condor_version_setting() -> None:
    assert DemandConfig().vm_condor_version == "23.9.6"
    assert parse_config({}).demand.vm_condor_version == classad.DEFAULT_VM_CONDOR_VERSION
    config = parse_config({"demand": {"vm_condor_version": "25.0.14"}})
    assert config.demand.vm_condor_version == "25.0.14"
    for bad in ("25.0", "latest", 25, "25.0.14; rm -rf /", "9" * 100):
        with pytest.raises(ConfigError, match=r"^demand\.vm_condor_version: ") as info:
            parse_config({"demand": {"vm_condor_version": bad}})
        assert info.value.key == "demand.vm_condor_version"


def test_the_grid_files_disk_size_is_optional_and_bounded() -> None:
    assert BOINC_TYPE.disk_kb is None
    raw = {**GRID, "vm_types": [{**GRID["vm_types"][0], "disk_gb": 20}]}
    assert parse_grid(raw).vm_types[0].disk_kb == 20 * 1024 * 1024
    for bad in (0, -1, True, "20", 1.5, 65537):
        raw = {**GRID, "vm_types": [{**GRID["vm_types"][0], "disk_gb": bad}]}
        with pytest.raises(
            ValueError, match=r"^grid file: grid_vm_types\[its-u11-boinc-20120415\]\.disk_gb: "
        ):
            parse_grid(raw)

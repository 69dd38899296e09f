"""The demand adapter against recorded ``condor_q -long`` job ads (parsed by the real classad2),
and live against a pool when CONDOR_CONFIG names one."""

from __future__ import annotations

import os
from pathlib import Path

import classad2
import pytest
from coordinator.coord_support import BOINC, BULK, GRID

from cvmc.coordinator.adapters.condor_demand import (
    PROJECTION,
    ClassAdMatcher,
    JobAdsFileDemand,
    ScheddDemand,
    jobs_from_ads,
    parse_job_ads,
)
from cvmc.coordinator.domain.demand import count_demand
from cvmc.coordinator.domain.grid import parse_grid

FIXTURE = Path(__file__).parent / "fixtures" / "condor_q_long.txt"
TYPES = parse_grid(GRID).vm_types


def test_recorded_ads_parse_with_classad2() -> None:
    ads = parse_job_ads(FIXTURE.read_text())
    assert len(ads) == 12
    assert ads[0]["vm_name"] == BOINC
    assert ads[0].eval("RequestDisk") == 2750


def test_jobs_without_vm_name_never_start_vms_by_default() -> None:
    demand = JobAdsFileDemand(
        str(FIXTURE), TYPES, match_unnamed=False, count_running=False
    ).demand()
    # 3 idle BOINC, 2 idle bulk; the held job, the completed one, the running one, the three
    # unnamed jobs and the retired vm_name do not count.
    assert dict(demand.by_type) == {BOINC: 3, BULK: 2}
    assert (demand.idle, demand.unnamed, demand.matched, demand.unknown) == (9, 3, 0, 1)


def test_running_jobs_count_so_their_vms_are_not_revoked() -> None:
    demand = JobAdsFileDemand(str(FIXTURE), TYPES, match_unnamed=False, count_running=True).demand()
    assert dict(demand.by_type) == {BOINC: 4, BULK: 2}


def test_unnamed_jobs_are_classad_matched_against_each_vm_type() -> None:
    demand = JobAdsFileDemand(str(FIXTURE), TYPES, match_unnamed=True, count_running=False).demand()
    # 43.1 (400 MB, LINUX) fits the first type; 43.0 (700 MB) only the 768 MB bulk type;
    # 44.0 wants WINDOWS: no VM type matches it.
    assert dict(demand.by_type) == {BOINC: 4, BULK: 3}
    assert demand.matched == 2


def test_matcher_uses_the_real_requirements() -> None:
    matcher = ClassAdMatcher(TYPES)
    jobs = {
        (int(ad["ClusterId"]), int(ad["ProcId"])): job
        for ad, job in zip(
            parse_job_ads(FIXTURE.read_text()),
            jobs_from_ads(parse_job_ads(FIXTURE.read_text())),
            strict=True,
        )
    }
    assert matcher(jobs[(43, 1)]) == BOINC
    assert matcher(jobs[(43, 0)]) == BULK
    assert matcher(jobs[(44, 0)]) is None
    big = classad2.parseOne(
        "JobStatus = 1\nRequestMemory = 4096\nRequirements = (TARGET.Memory >= RequestMemory)"
    )
    assert matcher(jobs_from_ads([big])[0]) is None


def test_the_projection_is_enough() -> None:
    """Schedd.query returns only PROJECTION: the same ads cut down to it count the same."""
    ads = parse_job_ads(FIXTURE.read_text())
    cut = []
    for ad in ads:
        small = classad2.ClassAd()
        for key in PROJECTION:
            if key in ad:
                small[key] = ad.lookup(key)
        cut.append(small)
    names = [t.name for t in TYPES]
    for count_running in (False, True):
        full = count_demand(
            jobs_from_ads(ads), names, count_running=count_running, match=ClassAdMatcher(TYPES)
        )
        projected = count_demand(
            jobs_from_ads(cut), names, count_running=count_running, match=ClassAdMatcher(TYPES)
        )
        assert full == projected


def test_missing_file_is_an_oserror(tmp_path: Path) -> None:
    source = JobAdsFileDemand(
        str(tmp_path / "none"), TYPES, match_unnamed=False, count_running=True
    )
    with pytest.raises(OSError, match="none"):
        source.demand()


@pytest.mark.live
def test_live_pool_demand() -> None:
    """Runs where CONDOR_CONFIG names a reachable pool (its schedds answer Schedd.query)."""
    # htcondor2 sets CONDOR_CONFIG to /dev/null when it finds none at import.
    if os.environ.get("CONDOR_CONFIG", "/dev/null") == "/dev/null":
        pytest.skip("live: CONDOR_CONFIG is not set; point it at a pool's config to run this")
    source = ScheddDemand("", [], TYPES, match_unnamed=True, count_running=True)
    try:
        demand = source.demand()
    except OSError as exc:
        pytest.skip(f"live: the pool named by CONDOR_CONFIG does not answer: {exc}")
    assert set(demand.by_type) <= {t.name for t in TYPES}
    assert all(isinstance(n, int) and n > 0 for n in demand.by_type.values())
    idle_only = ScheddDemand("", [], TYPES, match_unnamed=False, count_running=False).demand()
    for name, count in idle_only.by_type.items():
        assert count <= demand.by_type[name]  # running and matched jobs only add

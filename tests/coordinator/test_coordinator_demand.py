"""The demand adapter against recorded ``condor_q -long`` job ads (parsed by the real classad2),
and live against a pool when CONDOR_CONFIG names one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import classad2
import pytest
from coordinator.coord_support import BOINC, BULK, GRID

from cvmc.coordinator.adapters.condor_demand import (
    PROJECTION,
    ClassAdMatcher,
    FitCheck,
    JobAdsFileDemand,
    ScheddDemand,
    job_requests,
    jobs_from_ads,
    machine_ad,
    parse_job_ads,
)
from cvmc.coordinator.domain.demand import JobView, Requests, count_demand, startd_address
from cvmc.coordinator.domain.grid import VmType, parse_grid
from cvmc.gridmodel.classad import VM_START

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


@pytest.mark.parametrize(
    ("principal", "address"),
    [
        ("execute-side@matchsession/10.64.0.2", "10.64.0.2"),  # what HTCondor 24 writes
        ("condor@pool/10.64.128.9", "10.64.128.9"),
        ("execute-side@matchsession/fd00::2", None),  # the research network is IPv4
        ("execute-side@matchsession/10.64.0.256", None),
        ("execute-side@matchsession/", None),
        ("execute-side@matchsession", None),
        ("x/" + "1" * 600, None),
        (None, None),
        (7, None),
    ],
)
def test_startd_address(principal: object, address: str | None) -> None:
    assert startd_address(principal) == address


def test_running_jobs_name_the_vms_that_run_them() -> None:
    """Hand-written ads: each running job's StartdPrincipal names its VM's address; idle
    jobs name none; the job's vm_name, or its lack, does not matter."""
    text = (
        f'JobStatus = 2\nvm_name = "{BOINC}"\n'
        'StartdPrincipal = "execute-side@matchsession/10.64.0.2"\n\n'
        'JobStatus = 2\nStartdPrincipal = "execute-side@matchsession/10.64.0.3"\n\n'
        f'JobStatus = 2\nvm_name = "{BOINC}"\nStartdPrincipal = "unauthenticated@unmapped"\n\n'
        f'JobStatus = 1\nvm_name = "{BOINC}"\n'
        'StartdPrincipal = "execute-side@matchsession/10.64.0.4"\n'
    )
    for count_running in (False, True):
        demand = count_demand(
            jobs_from_ads(parse_job_ads(text)), [BOINC], count_running=count_running
        )
        assert demand.claimed == {"10.64.0.2", "10.64.0.3"}


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


# -- real ads: HTCondor 23.9.6 and the 25.0.14 wheel (fixtures/htcondor/README.md) ---------------

REAL = Path(__file__).parent / "fixtures" / "htcondor"
VERSIONS = ["23.9.6", "25.0.14"]
#: The job descriptions, in submission order (fixtures/htcondor/jobs).
SUBMITS = sorted(path.stem for path in (REAL / "jobs").glob("*.sub"))


def real_jobs(version: str) -> dict[str, Any]:
    """The recorded job ads of ``version``'s submit, by job description (``01-fit``, ...)."""
    ads = parse_job_ads((REAL / f"condor_q_long_{version}.txt").read_text())
    ads.sort(key=lambda ad: ad["ClusterId"])
    return dict(zip(SUBMITS, ads, strict=True))


def real_slot() -> Any:
    text = (REAL / "condor_status_slot_23.9.6.txt").read_text()
    return classad2.parseOne(text, classad2.ParserType.Old)


def with_disk(gb: int) -> tuple[VmType, ...]:
    raw = {**GRID, "vm_types": [{**t, "disk_gb": gb} for t in GRID["vm_types"]]}
    return parse_grid(raw).vm_types


@pytest.mark.parametrize("version", VERSIONS)
def test_real_ads_were_submitted_by_that_version(version: str) -> None:
    for ad in real_jobs(version).values():
        assert ad["CondorVersion"].split()[1] == version
        assert ad["JobStatus"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_real_jobs_too_big_for_their_type_are_unfit(version: str) -> None:
    path = str(REAL / f"condor_q_long_{version}.txt")
    demand = JobAdsFileDemand(path, TYPES, match_unnamed=False, count_running=False).demand()
    # BOINC (1 CPU, 512 MB): 01, 04 (RequestMemory an expression), 06 (no disk size given) and
    # the seed's job 07 fit; 02 (64 CPUs, 200000 MB) and 12 (a GPU) do not. BULK (768 MB): 10
    # fits, 11 (1024 MB) does not.
    assert dict(demand.by_type) == {BOINC: 4, BULK: 1}
    assert dict(demand.unfit) == {BOINC: 2, BULK: 1}
    assert (demand.idle, demand.unnamed, demand.matched, demand.unknown) == (12, 4, 0, 0)
    # With the types' disk sizes (20 GB), 06's 500 GB makes it unfit too.
    sized = JobAdsFileDemand(path, with_disk(20), match_unnamed=False, count_running=False)
    assert dict(sized.demand().unfit) == {BOINC: 3, BULK: 1}


@pytest.mark.parametrize("version", VERSIONS)
def test_requests_are_evaluated_against_the_machine_ad(version: str) -> None:
    jobs = real_jobs(version)
    boinc = machine_ad(TYPES[0])
    default = jobs["04-named-default-request"]
    assert str(default.lookup("RequestMemory")).startswith("ifthenelse(MemoryUsage")
    # ImageSize 45 KiB and no MemoryUsage yet: (45 + 1023) / 1024 = 1 MB.
    assert job_requests(default, boinc) == Requests(1, 1, default["DiskUsage"], None)
    # A job that ran before and used 4 GB: the same expression now asks for 4096 MB.
    grown = classad2.parseOne(str(default))
    grown["MemoryUsage"] = 4096
    assert job_requests(grown, boinc).memory_mb == 4096
    check = FitCheck(TYPES)
    assert check(JobView(1, BOINC, grown), BOINC) is False
    assert job_requests(jobs["02-too-big"], boinc) == Requests(64, 200000, 45, None)
    assert job_requests(jobs["06-named-big-disk"], boinc).disk_kb == 500 * 1024 * 1024
    assert job_requests(jobs["12-named-gpu"], boinc).gpus == 1


def test_undefined_and_error_requests() -> None:
    """UNDEFINED does not limit a job; ERROR, a string or a negative number make it unfit."""
    check = FitCheck(TYPES)
    for text, fits_boinc in [
        ("RequestCpus = 1", True),
        ("RequestCpus = 1\nRequestMemory = NoSuchAttribute", True),
        ("RequestCpus = 1\nRequestMemory = 1/0", False),
        ('RequestCpus = 1\nRequestMemory = "512"', False),
        ("RequestCpus = -1", False),
        ("RequestCpus = 1\nRequestDisk = TARGET.Disk + 1", True),  # no disk size for the type
        ("RequestCpus = TARGET.Cpus\nRequestMemory = TARGET.Memory", True),
        ("RequestCpus = TARGET.Cpus + 1", False),
    ]:
        ad = classad2.parseOne(f'JobStatus = 1\nvm_name = "{BOINC}"\n{text}')
        assert check(jobs_from_ads([ad])[0], BOINC) is fits_boinc, text
    sized = FitCheck(with_disk(20))
    ad = classad2.parseOne(f'JobStatus = 1\nvm_name = "{BOINC}"\nRequestDisk = TARGET.Disk + 1')
    assert sized(jobs_from_ads([ad])[0], BOINC) is False


def test_a_job_status_that_is_not_an_integer_is_skipped() -> None:
    """classad2's ERROR and UNDEFINED are IntEnum members: int() would make them 1 (idle)."""
    ads = [
        classad2.parseOne(f'JobStatus = {status}\nvm_name = "{BOINC}"')
        for status in ("1/0", "undefined", "true", '"1"', "1.0", "1")
    ]
    assert [job.status for job in jobs_from_ads(ads)] == [1]


@pytest.mark.parametrize("version", VERSIONS)
def test_real_unnamed_jobs_match_with_the_version_in_the_machine_ad(version: str) -> None:
    path = str(REAL / f"condor_q_long_{version}.txt")
    demand = JobAdsFileDemand(path, TYPES, match_unnamed=True, count_running=False).demand()
    # 03 (plain), 08 (self-checkpointing: HasSelfCheckpointTransfers and CondorVersion) and 09
    # (preserve_relative_paths: CondorVersion) match BOINC; 05 (8 CPUs) matches no type.
    assert demand.matched == 3
    assert dict(demand.by_type) == {BOINC: 4 + 3, BULK: 1}
    matcher = ClassAdMatcher(TYPES)
    jobs = real_jobs(version)
    assert [matcher(JobView(1, None, jobs[n])) for n in SUBMITS if "unnamed" in n] == [
        BOINC,
        None,
        BOINC,
        BOINC,
    ]
    # The versioncmp clause reads the configured version: a VM on 8.9.6 would not do.
    old = ClassAdMatcher(TYPES, condor_version="8.9.6")
    assert old(JobView(1, None, jobs["09-unnamed-relative-paths"])) is None
    assert old(JobView(1, None, jobs["03-unnamed"])) == BOINC


@pytest.mark.parametrize("version", VERSIONS)
def test_the_machine_ad_decides_like_the_real_slot(version: str) -> None:
    """Every recorded job matches the synthetic BOINC ad exactly when it matches the slot of a
    real 23.9.6 startd configured as a BOINC research VM."""
    real = real_slot()
    ours = machine_ad(TYPES[0])
    verdicts = {name: ad.symmetricMatch(real) for name, ad in real_jobs(version).items()}
    assert verdicts == {name: ad.symmetricMatch(ours) for name, ad in real_jobs(version).items()}
    assert [name for name, ok in verdicts.items() if ok] == [
        "01-fit",
        "03-unnamed",
        "04-named-default-request",
        "07-seed-job",
        "08-unnamed-checkpoint",
        "09-unnamed-relative-paths",
    ]


def test_the_machine_ad_is_what_the_real_slot_advertises() -> None:
    """Each attribute of the synthetic ad has the real slot's value, but for the disk (the real
    one is the container's free space) and the build in CondorVersion."""
    real = real_slot()
    ours = machine_ad(TYPES[0], "23.9.6")
    for key in ours:
        if key in ("Disk", "TotalDisk"):
            assert real[key] > 0
        elif key == "CondorVersion":
            assert ours[key].split()[1] == real[key].split()[1] == "23.9.6"
        else:
            assert str(ours.lookup(key)) == str(real.lookup(key)), key


def test_the_machine_ads_start_is_the_research_vms() -> None:
    template = Path(__file__).parents[2] / "roles/research_vm/templates/condor/execute.conf.j2"
    (line,) = [x for x in template.read_text().splitlines() if x.startswith("START = ")]
    start = classad2.ExprTree(line.removeprefix("START = "))
    assert str(start) == str(classad2.ExprTree(VM_START))
    assert str(machine_ad(TYPES[0]).lookup("Start")) == str(start)


def test_a_version_ge_clause_needs_the_version() -> None:
    """The clause issue 12 reports from HTCondor 25 (not in the recorded ads): hand-written on a
    real 23.9.6 job ad."""
    ad = real_jobs("23.9.6")["03-unnamed"]
    requirements = str(ad.lookup("Requirements"))
    for wanted, matched in (("23.0.0", BOINC), ("23.9.6", BOINC), ("24.0.0", None)):
        ad["Requirements"] = classad2.ExprTree(
            f'{requirements} && versionGE(split(TARGET.CondorVersion)[1], "{wanted}")'
        )
        assert ClassAdMatcher(TYPES)(JobView(1, None, ad)) == matched, wanted


@pytest.mark.parametrize("version", VERSIONS)
def test_the_projection_is_enough_for_real_ads(version: str) -> None:
    ads = list(real_jobs(version).values())
    cut = []
    for ad in ads:
        small = classad2.ClassAd()
        for key in PROJECTION:
            if key in ad:
                small[key] = ad.lookup(key)
        cut.append(small)
    names = [t.name for t in TYPES]
    for types in (TYPES, with_disk(20)):
        kwargs: dict[str, Any] = {
            "count_running": True,
            "match": ClassAdMatcher(types),
            "fit": FitCheck(types),
        }
        full = count_demand(jobs_from_ads(ads), names, **kwargs)
        assert full == count_demand(jobs_from_ads(cut), names, **kwargs)
        assert full.unfit

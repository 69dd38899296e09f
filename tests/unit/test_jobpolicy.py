"""The pool's job policy (cvmc.gridmodel.jobpolicy): parsing, and the knobs it renders,
evaluated by HTCondor's own ClassAd engine (the ``htcondor`` wheel's classad2) against job ads.

kind: real (HTCondor's ClassAd library evaluates the expressions the schedd will run).
"""

from __future__ import annotations

import re
import time

import classad2
import pytest

from cvmc.gridmodel import jobpolicy


def knobs(**policy: object) -> dict[str, str]:
    return dict(jobpolicy.schedd_config(jobpolicy.parse(policy)))


def evaluate(expr: str, **job: object) -> object:
    return classad2.ExprTree(expr).eval(scope=classad2.ClassAd(job))


def test_defaults_fill_missing_keys() -> None:
    assert jobpolicy.parse({}) == jobpolicy.JobPolicy(20, 1200, 3, 14, False)
    assert jobpolicy.parse({"max_starts": 5}).max_starts == 5


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "grid_job_policy: [] is not a mapping of accounting_groups, max_releases"),
        ({"max_start": 1}, "grid_job_policy: unknown key(s) max_start"),
        ({"max_starts": -1}, "grid_job_policy.max_starts: -1 is out of range"),
        ({"max_starts": True}, "grid_job_policy.max_starts: True is true or false"),
        ({"max_starts": "5"}, "grid_job_policy.max_starts: '5' is not a whole number"),
        ({"release_after_s": 59}, "grid_job_policy.release_after_s: 59 is out of range"),
        ({"max_releases": 101}, "grid_job_policy.max_releases: 101 is out of range"),
        ({"remove_held_after_days": 3651}, "remove_held_after_days: 3651 is out of range"),
        ({"accounting_groups": "no"}, "grid_job_policy.accounting_groups: 'no' is not true"),
    ],
)
def test_bad_policies_are_refused_naming_the_variable(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        jobpolicy.parse(value)


def test_an_idle_job_that_started_too_often_is_held_with_its_reason() -> None:
    k = knobs(max_starts=10)
    hold = k["SYSTEM_PERIODIC_HOLD"]
    assert evaluate(hold, JobStatus=1, NumJobStarts=11) is True
    assert evaluate(hold, JobStatus=1, NumJobStarts=10) is False
    # A running job is never held by this rule: it may finish this time.
    assert evaluate(hold, JobStatus=2, NumJobStarts=50) is False
    reason = evaluate(k["SYSTEM_PERIODIC_HOLD_REASON"], NumJobStarts=11)
    assert reason == (
        "started 11 times, more than grid_job_policy.max_starts (10); "
        "condor_release it once the cause is fixed"
    )


@pytest.mark.parametrize("code", jobpolicy.TRANSIENT_HOLD_CODES)
def test_a_transient_hold_is_released_after_its_delay_a_limited_number_of_times(
    code: int,
) -> None:
    release = knobs(release_after_s=600, max_releases=2)["SYSTEM_PERIODIC_RELEASE"]
    now = int(time.time())  # time() in the expressions is the real clock, read now
    held = {"JobStatus": 5, "HoldReasonCode": code, "NumSystemHolds": 1}
    assert evaluate(release, **held, EnteredCurrentStatus=now - 601) is True
    assert evaluate(release, **held, EnteredCurrentStatus=now - 30) is False
    # An ad without NumSystemHolds (a job never held before) counts as 0.
    no_count = {"JobStatus": 5, "HoldReasonCode": code, "EnteredCurrentStatus": now - 601}
    assert evaluate(release, **no_count) is True
    assert evaluate(release, **{**held, "NumSystemHolds": 3}, EnteredCurrentStatus=0) is False


@pytest.mark.parametrize(
    ("code", "why"),
    [(1, "held by its owner"), (26, "held by this policy"), (34, "out of resources")],
)
def test_other_holds_are_never_released(code: int, why: str) -> None:
    release = knobs()["SYSTEM_PERIODIC_RELEASE"]
    job = {"JobStatus": 5, "HoldReasonCode": code, "EnteredCurrentStatus": 0}
    assert evaluate(release, **job) is False, why


def test_a_job_held_too_long_is_removed() -> None:
    remove = knobs(remove_held_after_days=2)["SYSTEM_PERIODIC_REMOVE"]
    now = int(time.time())
    assert evaluate(remove, JobStatus=5, EnteredCurrentStatus=now - 2 * 86_400 - 60) is True
    assert evaluate(remove, JobStatus=5, EnteredCurrentStatus=now - 86_400) is False
    assert evaluate(remove, JobStatus=1, EnteredCurrentStatus=0) is False


def test_parts_turned_off_render_no_knob() -> None:
    assert knobs(max_starts=0, max_releases=0, remove_held_after_days=0) == {}
    assert set(knobs(max_starts=0)) == {"SYSTEM_PERIODIC_RELEASE", "SYSTEM_PERIODIC_REMOVE"}


GROUPS = {
    "dept_chem": ["c1", "c2", "c3"],
    "dept_phys": ["p1", "c3"],
    "windows_desktops": ["c1", "c2", "c3", "p1", "x1"],
}


def test_departments_follow_the_coordinators_rule() -> None:
    # The first dept_* group by name, else "default" (roles/grid_coordinator/vars/main.yml).
    assert jobpolicy.department_of("c3", GROUPS) == "dept_chem"
    assert jobpolicy.department_of("p1", GROUPS) == "dept_phys"
    assert jobpolicy.department_of("x1", GROUPS) == "default"


def test_accounting_groups_get_their_share_of_the_desktops() -> None:
    policy = jobpolicy.parse({"accounting_groups": True})
    got = dict(jobpolicy.negotiator_config(policy, ["c1", "c2", "c3", "p1", "x1"], GROUPS))
    assert got == {
        "GROUP_NAMES": "dept_chem, dept_phys",
        "GROUP_QUOTA_DYNAMIC_dept_chem": "0.600000",
        "GROUP_QUOTA_DYNAMIC_dept_phys": "0.200000",
        "GROUP_ACCEPT_SURPLUS": "True",
    }


def test_quotas_never_sum_past_one() -> None:
    groups = {f"dept_{i}": [f"d{i}"] for i in range(7)}
    policy = jobpolicy.parse({"accounting_groups": True})
    got = dict(jobpolicy.negotiator_config(policy, [f"d{i}" for i in range(7)], groups))
    shares = [float(v) for k, v in got.items() if k.startswith("GROUP_QUOTA_DYNAMIC_")]
    assert len(shares) == 7
    assert sum(shares) <= 1.0


def test_accounting_groups_off_or_without_departments_render_nothing() -> None:
    assert jobpolicy.negotiator_config(jobpolicy.parse({}), ["c1"], GROUPS) == []
    policy = jobpolicy.parse({"accounting_groups": True})
    assert jobpolicy.negotiator_config(policy, ["x1"], GROUPS) == []
    assert jobpolicy.negotiator_config(policy, [], GROUPS) == []


def test_a_department_that_is_no_group_name_is_refused() -> None:
    policy = jobpolicy.parse({"accounting_groups": True})
    with pytest.raises(ValueError, match=r"grid_job_policy\.accounting_groups: inventory group"):
        jobpolicy.negotiator_config(policy, ["c1"], {"dept_" + "x" * 59: ["c1"]})

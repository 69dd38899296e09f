"""What the roles render, loaded by HTCondor's own config parser, and asserted on.

kind: contract (HTCondor 25.0 through the wheel's parser and ClassAd engine; its daemons
cannot run here, while Debian 13's 23.9 daemons run in molecule `condor` and the lab).
The configuration comes from the real roles run by the real ansible-playbook (conftest.py).
"""

from __future__ import annotations

import math

import classad2
import pytest
import yaml
from condor.condor_config import load
from condor.playbook import ROOT, Run, fresh_key, run

from cvmc.gridmodel import classad

pytestmark = pytest.mark.slow

IDTOKENS_ONLY = {"FS", "IDTOKENS"}
LEVELS = ("DEFAULT", "CLIENT", "READ", "DAEMON", "NEGOTIATOR", "WRITE", "ADMINISTRATOR")


def methods(value: object) -> set[str]:
    return {m.strip().upper() for m in str(value).split(",") if m.strip()}


def daemons(value: object) -> set[str]:
    return set(str(value).replace(",", " ").split())


def lab_vm_types() -> list[dict[str, object]]:
    grid = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/grid.yml").read_text())
    types: list[dict[str, object]] = grid["grid_vm_types"]
    return types


# --------------------------------------------------------------------------------------------
# Security: every host


@pytest.mark.parametrize(
    ("host", "subsystem"),
    [("lab-cm", "COLLECTOR"), ("lab-submit", "SCHEDD"), ("condor-test-vm", "STARTD")],
)
def test_idtokens_with_encryption_and_integrity_required(
    lab_render: Run, host: str, subsystem: str
) -> None:
    names = [f"SEC_{level}_{what}" for level in LEVELS for what in ("ENCRYPTION", "INTEGRITY")]
    names += [
        f"SEC_{level}_AUTHENTICATION_METHODS"
        for level in ("DEFAULT", "DAEMON", "NEGOTIATOR", "CLIENT", "READ")
    ]
    names += ["SEC_DEFAULT_AUTHENTICATION", "TRUST_DOMAIN", "CONDOR_HOST", "SECURITY_MODEL"]
    values = load(lab_render.config_d(host), names, subsystem)
    for level in LEVELS:
        assert str(values[f"SEC_{level}_ENCRYPTION"]).upper() == "REQUIRED", level
        assert str(values[f"SEC_{level}_INTEGRITY"]).upper() == "REQUIRED", level
    for level in ("DEFAULT", "DAEMON", "NEGOTIATOR"):
        assert methods(values[f"SEC_{level}_AUTHENTICATION_METHODS"]) == IDTOKENS_ONLY, level
    # Read-only clients may also be anonymous; no other method (no KERBEROS, SSL, SCITOKENS).
    for level in ("CLIENT", "READ"):
        assert methods(values[f"SEC_{level}_AUTHENTICATION_METHODS"]) == {
            *IDTOKENS_ONLY,
            "ANONYMOUS",
        }
    assert str(values["SEC_DEFAULT_AUTHENTICATION"]).upper() == "REQUIRED"
    # security:recommended was applied (its model), then our overrides read last.
    assert values["SECURITY_MODEL"] is not None
    assert values["TRUST_DOMAIN"] == "lab-cm"
    assert values["CONDOR_HOST"] == "lab-cm"


def test_anonymous_read_says_who_needs_it(lab_render: Run) -> None:
    """On by default because the coordinator's demand reader reads without a token; the
    rendered fragment says so, next to the setting."""
    text = (lab_render.config_d("lab-cm") / "90-desktop-grid-security.conf").read_text()
    assert "Anonymous READ is on (htcondor_anonymous_read)" in text
    assert "coordinator's demand reader" in text


@pytest.fixture(scope="module")
def no_anonymous_render(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("no-anonymous") / "root"
    result = run(
        "render.yml",
        root,
        {
            "htcondor_pool_signing_key": fresh_key(),
            "condor_submit_vm_token_issuer_user": "",
            "htcondor_anonymous_read": False,
        },
    )
    assert result.rc == 0, result.output
    return result


@pytest.mark.parametrize(
    ("host", "subsystem"),
    [("lab-cm", "COLLECTOR"), ("lab-submit", "SCHEDD"), ("condor-test-vm", "STARTD")],
)
def test_anonymous_read_off_leaves_no_anonymous_level(
    no_anonymous_render: Run, host: str, subsystem: str
) -> None:
    names = [f"SEC_{level}_AUTHENTICATION_METHODS" for level in LEVELS]
    names += [f"SEC_{level}_AUTHENTICATION" for level in LEVELS]
    values = load(no_anonymous_render.config_d(host), names, subsystem)
    for level in LEVELS:
        if values[f"SEC_{level}_AUTHENTICATION_METHODS"] is not None:
            assert "ANONYMOUS" not in methods(values[f"SEC_{level}_AUTHENTICATION_METHODS"])
    for level in ("DEFAULT", "CLIENT", "READ"):
        assert str(values[f"SEC_{level}_AUTHENTICATION"]).upper() == "REQUIRED", level
    text = (no_anonymous_render.config_d(host) / "90-desktop-grid-security.conf").read_text()
    assert "Anonymous READ is off" in text


def test_signing_key_on_the_holders_only(lab_render: Run, lab_key: str) -> None:
    for host in ("lab-cm", "lab-submit"):
        key = lab_render.tree(host) / "etc/condor/passwords.d/POOL"
        assert key.read_text() == lab_key
        assert key.stat().st_mode & 0o777 == 0o600
        assert (key.parent.stat().st_mode & 0o777) == 0o700
    assert not (lab_render.tree("condor-test-vm") / "etc/condor/passwords.d/POOL").exists()
    assert lab_key not in lab_render.output


# --------------------------------------------------------------------------------------------
# Central manager


def test_central_manager_daemons_and_vm_advertising(lab_render: Run) -> None:
    values = load(
        lab_render.config_d("lab-cm"),
        ["DAEMON_LIST", "ALLOW_ADVERTISE_STARTD", "ALLOW_ADVERTISE_MASTER", "ENABLE_CCB_SERVER"],
        "COLLECTOR",
    )
    assert daemons(values["DAEMON_LIST"]) == {"MASTER", "COLLECTOR", "NEGOTIATOR"}
    for name in ("ALLOW_ADVERTISE_STARTD", "ALLOW_ADVERTISE_MASTER"):
        principals = str(values[name]).split()
        # Research VMs only with their token's identity, only from the research network.
        assert "research-vm@lab-cm/10.64.0.0/20" in principals
        assert "condor@*" in principals
    assert str(values["ENABLE_CCB_SERVER"]).lower() == "true"


def test_flock_from_lets_only_the_named_schedds_advertise(lab_render: Run) -> None:
    values = load(
        lab_render.config_d("lab-cm"), ["FLOCK_FROM", "ALLOW_ADVERTISE_SCHEDD"], "COLLECTOR"
    )
    assert values["FLOCK_FROM"] == "submit.ligo.example.org"
    assert "flock@lab-cm/submit.ligo.example.org" in str(values["ALLOW_ADVERTISE_SCHEDD"]).split()


def test_central_manager_sized_for_the_example_campus(example_render: Run) -> None:
    """12,000 desktops x 2 VMs behind CCB: 4 connections each, 25% headroom, plus 4096."""
    startds = 12_000 * 2
    values = load(
        example_render.config_d("cm.grid.example.edu"),
        [
            "COLLECTOR_MAX_FILE_DESCRIPTORS",
            "SHARED_PORT_MAX_FILE_DESCRIPTORS",
            "COLLECTOR_QUERY_WORKERS",
            "NEGOTIATOR_CONSIDER_PREEMPTION",
            "NEGOTIATOR_INTERVAL",
        ],
        "COLLECTOR",
    )
    expected = math.ceil(startds * 4 * 5 / 4) + 4096
    assert int(str(values["COLLECTOR_MAX_FILE_DESCRIPTORS"])) == expected == 124_096
    assert int(str(values["SHARED_PORT_MAX_FILE_DESCRIPTORS"])) == expected
    assert int(str(values["COLLECTOR_QUERY_WORKERS"])) == 8
    assert str(values["NEGOTIATOR_CONSIDER_PREEMPTION"]).lower() == "false"
    assert int(str(values["NEGOTIATOR_INTERVAL"])) == 60
    dropin = example_render.tree("cm.grid.example.edu") / (
        "etc/systemd/system/condor.service.d/10-desktop-grid-central-manager.conf"
    )
    assert f"LimitNOFILE={expected + 8192}" in dropin.read_text().splitlines()


def test_submit_nodes_sized_for_the_example_campus(example_render: Run) -> None:
    """Two submit nodes share 24,000 VMs: 15,000 running jobs each (their share + 25%)."""
    for host in ("submit1.grid.example.edu", "submit2.grid.example.edu"):
        values = load(
            example_render.config_d(host),
            ["DAEMON_LIST", "MAX_JOBS_RUNNING", "SCHEDD_MAX_FILE_DESCRIPTORS", "JOB_START_COUNT"],
            "SCHEDD",
        )
        assert daemons(values["DAEMON_LIST"]) == {"MASTER", "SCHEDD"}
        assert int(str(values["MAX_JOBS_RUNNING"])) == 15_000
        assert int(str(values["SCHEDD_MAX_FILE_DESCRIPTORS"])) == 15_000 * 2 + 4096
        assert int(str(values["JOB_START_COUNT"])) == 50


def test_example_campus_shares_the_pool_by_department(example_render: Run) -> None:
    """grid_job_policy.accounting_groups: one group per dept_* group, quota its desktop share."""
    names = ["GROUP_NAMES", "GROUP_ACCEPT_SURPLUS"]
    names += [f"GROUP_QUOTA_DYNAMIC_{d}" for d in ("dept_chemistry", "dept_physics")]
    values = load(example_render.config_d("cm.grid.example.edu"), names, "NEGOTIATOR")
    assert [g.strip() for g in str(values["GROUP_NAMES"]).split(",")] == [
        "dept_chemistry",
        "dept_physics",
    ]
    # 4 and 3 of the example's 7 registered desktops.
    assert math.isclose(
        float(str(values["GROUP_QUOTA_DYNAMIC_dept_chemistry"])), 4 / 7, abs_tol=1e-6
    )
    assert math.isclose(float(str(values["GROUP_QUOTA_DYNAMIC_dept_physics"])), 3 / 7, abs_tol=1e-6)
    assert str(values["GROUP_ACCEPT_SURPLUS"]).lower() == "true"


# --------------------------------------------------------------------------------------------
# Submit node


def test_submit_node_flocks_and_knows_condor_c_remotes(lab_render: Run) -> None:
    values = load(
        lab_render.config_d("lab-submit"),
        ["DAEMON_LIST", "FLOCK_TO", "DESKTOP_GRID_CONDOR_C_LIGO", "MAX_JOBS_RUNNING"],
        "SCHEDD",
    )
    assert daemons(values["DAEMON_LIST"]) == {"MASTER", "SCHEDD"}
    assert values["FLOCK_TO"] == "cm.ligo.example.org, cm.osg.example.org:9618"
    # What a job's grid_resource gets (docs/cross-pool.md).
    assert values["DESKTOP_GRID_CONDOR_C_LIGO"] == (
        "condor schedd.ligo.example.org cm.ligo.example.org:9618"
    )
    assert int(str(values["MAX_JOBS_RUNNING"])) >= 80


def test_submit_requirement_refuses_unknown_vm_names(lab_render: Run) -> None:
    values = load(
        lab_render.config_d("lab-submit"),
        [
            "SUBMIT_REQUIREMENT_NAMES",
            "SUBMIT_REQUIREMENT_KnownVmName",
            "SUBMIT_REQUIREMENT_KnownVmName_REASON",
        ],
        "SCHEDD",
    )
    assert "KnownVmName" in str(values["SUBMIT_REQUIREMENT_NAMES"]).split()
    requirement = classad2.ExprTree(str(values["SUBMIT_REQUIREMENT_KnownVmName"]))
    for vm_type in lab_vm_types():
        job = classad2.ClassAd({"vm_name": vm_type["name"]})
        assert requirement.eval(scope=job) is True
    assert requirement.eval(scope=classad2.ClassAd({"Cmd": "/bin/true"})) is True
    # The seed slide's typo (no hyphen) is refused at submit time, with a reason naming it.
    typo = classad2.ClassAd({"vm_name": "its-u11-boinc20120415"})
    assert requirement.eval(scope=typo) is False
    reason = classad2.ExprTree(str(values["SUBMIT_REQUIREMENT_KnownVmName_REASON"]))
    assert reason.eval(scope=typo) == (
        "vm_name its-u11-boinc20120415 is not a VM type of this grid; "
        "known: its-u11-boinc-20120415, lab-el9-bulk-20261101"
    )


# --------------------------------------------------------------------------------------------
# Research VM (execute side)


EXECUTE_NAMES = [
    "DAEMON_LIST",
    "STARTD_ATTRS",
    "START",
    "STARTD_NOCLAIM_SHUTDOWN",
    "RESERVED_MEMORY",
    "NUM_SLOTS_TYPE_1",
    "SLOT_TYPE_1",
    "SLOT_TYPE_1_PARTITIONABLE",
    "CGROUP_MEMORY_LIMIT_POLICY",
    "MAXJOBRETIREMENTTIME",
    "MachineMaxVacateTime",
    "SHUTDOWN_GRACEFUL_TIMEOUT",
    "CCB_ADDRESS",
    "NETWORK_INTERFACE",
    "SEC_TOKEN_SYSTEM_DIRECTORY",
]


def execute_config(run: Run) -> dict[str, object]:
    values = load(run.config_d("condor-test-vm"), EXECUTE_NAMES, "STARTD")
    attrs = str(values["STARTD_ATTRS"]).split()
    values.update(load(run.config_d("condor-test-vm"), attrs, "STARTD"))
    return values


def test_execute_side_settings(lab_render: Run) -> None:
    values = execute_config(lab_render)
    assert daemons(values["DAEMON_LIST"]) == {"MASTER", "STARTD"}
    assert "vm_name" in str(values["STARTD_ATTRS"]).split()
    assert values["vm_name"] == '"its-u11-boinc-20120415"'
    # Slot memory stays within the VM: one partitionable slot, the VM's OS keeps 256 MB.
    assert int(str(values["NUM_SLOTS_TYPE_1"])) == 1
    assert values["SLOT_TYPE_1"] == "100%"
    assert str(values["SLOT_TYPE_1_PARTITIONABLE"]).lower() == "true"
    assert int(str(values["RESERVED_MEMORY"])) == 256
    assert str(values["CGROUP_MEMORY_LIMIT_POLICY"]).lower() == "hard"
    # Vacate is graceful and quick; the startd leaves when unclaimed.
    assert int(str(values["MAXJOBRETIREMENTTIME"])) == 0
    assert int(str(values["MachineMaxVacateTime"])) == 60
    assert int(str(values["SHUTDOWN_GRACEFUL_TIMEOUT"])) > 60
    assert int(str(values["STARTD_NOCLAIM_SHUTDOWN"])) == 1200
    # Not routable from the pool in the lab: CCB through the collector.
    assert values["CCB_ADDRESS"] == "lab-cm"
    assert values["NETWORK_INTERFACE"] == "tun0"
    assert values["SEC_TOKEN_SYSTEM_DIRECTORY"] == "/run/grid/condor/tokens.d"  # noqa: S105


def test_the_vms_jobs_daemons_and_cvmfs_use_the_grid_cache(
    example_render: Run, lab_render: Run
) -> None:
    """The example campus has a cache (grid_cache): its research VM image gives every job the
    proxy through the starter (as HTCondor's parser reads it), its daemons through systemd (the
    http:// transfer plugin), and CVMFS through default.local. The lab has none: no trace."""
    proxy = "http://10.10.20.30:3128"
    values = load(example_render.config_d("condor-test-vm"), ["STARTER_JOB_ENVIRONMENT"])
    # The V2 syntax: the whole list in double quotes, pairs separated by spaces.
    quoted = str(values["STARTER_JOB_ENVIRONMENT"])
    assert quoted[0] + quoted[-1] == '""', quoted
    env = dict(pair.split("=", 1) for pair in quoted.strip('"').split())
    assert {env[k] for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")} == {proxy}
    assert env["no_proxy"] == "localhost,127.0.0.1"
    tree = example_render.tree("condor-test-vm")
    dropin = (tree / "etc/systemd/system/condor.service.d/30-research-vm.conf").read_text()
    assert f"Environment=http_proxy={proxy}\n" in dropin
    cvmfs = (tree / "etc/cvmfs/default.local").read_text()
    assert f'CVMFS_HTTP_PROXY="{proxy}"\n' in cvmfs

    lab = load(lab_render.config_d("condor-test-vm"), ["STARTER_JOB_ENVIRONMENT"])
    assert lab["STARTER_JOB_ENVIRONMENT"] is None
    lab_tree = lab_render.tree("condor-test-vm")
    assert (
        "proxy"
        not in (lab_tree / "etc/systemd/system/condor.service.d/30-research-vm.conf").read_text()
    )
    assert not (lab_tree / "etc/cvmfs").exists()


def machine_ad(run: Run, vm_type: dict[str, object]) -> classad2.ClassAd:
    """The VM's slot ad: what the rendered STARTD_ATTRS advertise, parsed as ClassAd values,
    over what a startd measures itself in a VM of its type (OpSys, Arch, Cpus, Memory less
    RESERVED_MEMORY, Disk, file transfer)."""
    values = execute_config(run)
    detected = dict(classad.vm_machine_attrs(vm_type))
    detected["Memory"] = int(str(detected["Memory"])) - int(str(values["RESERVED_MEMORY"]))
    ad = classad2.ClassAd({**detected, "Disk": 10_000_000, "HasFileTransfer": True})
    for attr in str(values["STARTD_ATTRS"]).split():
        ad[attr] = classad2.ExprTree(str(values[attr])).eval()
    ad["Start"] = classad2.ExprTree(str(values["START"]))
    ad["Requirements"] = classad2.ExprTree("MY.Start")
    return ad


def job_ad(vm_type: dict[str, object] | None, request_mb: int = 128) -> classad2.ClassAd:
    job = classad2.ClassAd(
        {"RequestMemory": request_mb, "ImageSize": request_mb * 1024, "DiskUsage": 1000}
    )
    if vm_type is None:
        job["Requirements"] = classad2.ExprTree("TARGET.HasFileTransfer")
    else:
        job["vm_name"] = vm_type["name"]
        job["Requirements"] = classad2.ExprTree(classad.vm_requirements(vm_type))
    return job


def test_seed_requirements_match_the_rendered_vm_and_reject_another_type(lab_render: Run) -> None:
    boinc, bulk = lab_vm_types()
    machine = machine_ad(lab_render, boinc)
    assert machine["vm_name"] == boinc["name"]
    # Both sides: the job's Requirements and the machine's START.
    assert job_ad(boinc).symmetricMatch(machine)
    assert not job_ad(bulk).symmetricMatch(machine)
    assert job_ad(bulk).lookup("Requirements").eval(scope=job_ad(bulk), target=machine) is False
    # The seed's rule: a job without vm_name may use a running VM.
    assert job_ad(None).symmetricMatch(machine)
    # A job naming another type but without Requirements on it is refused by START alone.
    stray = classad2.ClassAd({"vm_name": bulk["name"], "Requirements": True})
    assert not stray.symmetricMatch(machine)
    # The slot's memory is what the VM has less its OS reserve: a job asking for all of the
    # type's memory does not match.
    assert not job_ad(boinc, request_mb=int(str(boinc["memory_mb"]))).symmetricMatch(machine)


def test_submit_node_applies_the_pools_job_policy(lab_render: Run) -> None:
    """grid_job_policy's defaults reach the schedd, and HTCondor's engine evaluates them."""
    names = ["SYSTEM_PERIODIC_HOLD", "SYSTEM_PERIODIC_RELEASE", "SYSTEM_PERIODIC_REMOVE"]
    values = load(lab_render.config_d("lab-submit"), names, "SCHEDD")
    hold = classad2.ExprTree(str(values["SYSTEM_PERIODIC_HOLD"]))
    assert hold.eval(scope=classad2.ClassAd({"JobStatus": 1, "NumJobStarts": 21})) is True
    assert hold.eval(scope=classad2.ClassAd({"JobStatus": 1, "NumJobStarts": 20})) is False
    release = classad2.ExprTree(str(values["SYSTEM_PERIODIC_RELEASE"]))
    transfer_failed = {"JobStatus": 5, "HoldReasonCode": 13, "EnteredCurrentStatus": 0}
    assert release.eval(scope=classad2.ClassAd(transfer_failed)) is True
    by_owner = {"JobStatus": 5, "HoldReasonCode": 1, "EnteredCurrentStatus": 0}
    assert release.eval(scope=classad2.ClassAd(by_owner)) is False
    remove = classad2.ExprTree(str(values["SYSTEM_PERIODIC_REMOVE"]))
    assert remove.eval(scope=classad2.ClassAd({"JobStatus": 5, "EnteredCurrentStatus": 0})) is True

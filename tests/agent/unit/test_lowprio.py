"""The CPU cap's arithmetic, how the agent finds its cgroup (v2, or v1's cpu controller), what
it writes in each, and where no delegated cgroup exists (the QEMU driver's cap).

The priorities themselves are read back from the kernel for a real QEMU in
tests/agent/integration/test_agent_qemu.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvmc.agent.adapters.lowprio import CgroupCap, cpu_max, cpu_quota, v1_cpu_cgroup


@pytest.mark.parametrize(
    ("percent", "cpus", "expected"),
    [
        (50, 1, "50000 100000"),
        (50, 2, "100000 100000"),
        (1, 1, "1000 100000"),
        (100, 4, "400000 100000"),
    ],
)
def test_cpu_max_is_per_virtual_cpu(percent: int, cpus: int, expected: str) -> None:
    assert cpu_max(percent, cpus) == expected


@pytest.mark.parametrize("percent", [0, 101])
def test_cpu_max_refuses_out_of_range(percent: int) -> None:
    with pytest.raises(ValueError, match=rf"^cpu_cap_percent: {percent} is out of range"):
        cpu_max(percent, 1)


# /proc/self/mountinfo of a hybrid host (Debian 10, Ubuntu 20.04) and of a v1 host whose cpu
# and cpuacct share a hierarchy; and a container whose cgroupfs is a subtree of the host's.
HYBRID_MOUNTINFO = """\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev shared:15 - cgroup cgroup rw,cpuset
32 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
"""
HYBRID_CGROUP = """\
12:cpuset:/
4:cpu,cpuacct:/system.slice/cvmc-agent.service
1:name=systemd:/system.slice/cvmc-agent.service
0::/system.slice/cvmc-agent.service
"""


def test_v1_cpu_cgroup_finds_the_cpu_hierarchy_not_cpuset() -> None:
    assert v1_cpu_cgroup(HYBRID_MOUNTINFO, HYBRID_CGROUP) == Path(
        "/sys/fs/cgroup/cpu,cpuacct/system.slice/cvmc-agent.service"
    )


def test_v1_cpu_cgroup_maps_a_mounted_subtree() -> None:
    mountinfo = (
        "40 30 0:30 /machine.slice/lab /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n"
    )
    cgroups = "3:cpu:/machine.slice/lab/system.slice/cvmc-agent.service\n"
    assert v1_cpu_cgroup(mountinfo, cgroups) == Path(
        "/sys/fs/cgroup/cpu/system.slice/cvmc-agent.service"
    )


@pytest.mark.parametrize(
    ("mountinfo", "cgroups"),
    [
        ("", "0::/user.slice\n"),  # pure v2: no v1 line at all
        (HYBRID_MOUNTINFO.replace("rw,cpu,cpuacct", "rw,cpuacct"), HYBRID_CGROUP),  # not mounted
        (HYBRID_MOUNTINFO, "12:cpuset:/\n0::/\n"),  # no cpu line
        ("garbage\n- cgroup\n", HYBRID_CGROUP),
    ],
)
def test_v1_cpu_cgroup_is_none_without_a_v1_cpu_controller(mountinfo: str, cgroups: str) -> None:
    assert v1_cpu_cgroup(mountinfo, cgroups) is None


def fake_proc(tmp_path: Path, mountinfo: str, cgroups: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text(cgroups)
    return proc


def test_no_cgroup_at_all_means_no_cap_and_a_reason(tmp_path: Path) -> None:
    """No cgroup.controllers (not v2) and no v1 cpu controller: apply() says why, writes
    nothing."""
    mount = tmp_path / "cgroup"
    mount.mkdir()
    proc = fake_proc(tmp_path, "", "0::/\n")
    cap = CgroupCap(mount=str(mount), proc=str(proc))
    assert cap.base is None
    assert cap.apply("cvmc-slot0", 1, 50, 1) == (
        f"no cgroup v2 hierarchy at {mount}, and no cgroup v1 cpu controller"
    )
    assert list(mount.iterdir()) == []
    cap.remove("cvmc-slot0")  # a no-op


def test_a_hybrid_host_uses_the_v1_cpu_controller(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, HYBRID_MOUNTINFO, HYBRID_CGROUP)
    cap = CgroupCap(mount=str(tmp_path / "no-v2-here"), proc=str(proc))
    assert cap.v1
    assert cap.base == Path("/sys/fs/cgroup/cpu,cpuacct/system.slice/cvmc-agent.service")


def test_v1_writes_the_cfs_quota_and_period_then_moves_the_pid(tmp_path: Path) -> None:
    """What the cap writes into its v1 child group (a plain directory stands in for the
    cgroupfs here; the kernel's own is exercised with real QEMU in test_agent_qemu.py)."""
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    cap = CgroupCap(base=str(tmp_path), v1=True)
    assert cap.unavailable() is None
    assert cap.apply("cvmc-slot1", 4242, 40, 2) is None
    group = tmp_path / "cvmc-slot1"
    assert (group / "cpu.cfs_quota_us").read_text() == str(cpu_quota(40, 2)[0]) == "80000"
    assert (group / "cpu.cfs_period_us").read_text() == "100000"
    assert (group / "cgroup.procs").read_text() == "4242"
    assert (group / "cpu.shares").read_text() == "1024"  # the default weight without low
    assert not (tmp_path / "agent").exists()  # v1 has no "no internal processes" rule


@pytest.mark.parametrize(
    ("v1", "weight_file", "lowest"), [(True, "cpu.shares", "2"), (False, "cpu.weight", "1")]
)
def test_low_priority_puts_the_vm_cgroup_at_the_lowest_weight(
    tmp_path: Path, v1: bool, weight_file: str, lowest: str
) -> None:
    """A group is weighed against its siblings as one task: nice 19 inside it does not lower
    it, so with grid_vm_low_priority the group itself gets the kernel's lowest weight."""
    if v1:
        (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    else:
        (tmp_path / "cgroup.controllers").write_text("cpu io memory\n")
        (tmp_path / "cgroup.subtree_control").write_text("")
        (tmp_path / "cgroup.procs").write_text("")
    cap = CgroupCap(base=str(tmp_path), v1=v1)
    assert cap.apply("cvmc-slot0", 4242, 50, 1, low=True) is None
    assert (tmp_path / "cvmc-slot0" / weight_file).read_text() == lowest
    assert cap.apply("cvmc-slot0", 4242, 50, 1, low=False) is None  # a reused group: written again
    assert (tmp_path / "cvmc-slot0" / weight_file).read_text() != lowest


def test_v1_without_cfs_bandwidth_says_so(tmp_path: Path) -> None:
    cap = CgroupCap(base=str(tmp_path), v1=True)
    assert cap.apply("cvmc-slot0", 1, 50, 1) == (
        f"{tmp_path} has no cpu.cfs_quota_us (no CFS bandwidth control)"
    )
    assert list(tmp_path.iterdir()) == []

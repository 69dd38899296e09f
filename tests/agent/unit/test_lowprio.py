"""The cgroup v2 cap's arithmetic and where no delegated cgroup exists (the QEMU driver's cap).

The priorities themselves are read back from the kernel for a real QEMU in
tests/agent/integration/test_agent_qemu.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvmc.agent.adapters.lowprio import CgroupCap, cpu_max


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


def test_no_cgroup_v2_means_no_cap_and_a_reason(tmp_path: Path) -> None:
    """A mount without cgroup.controllers (v1, hybrid, none): apply() says why, writes nothing."""
    cap = CgroupCap(mount=str(tmp_path))
    assert cap.base is None
    assert cap.apply("cvmc-slot0", 1, 50, 1) == f"no cgroup v2 hierarchy at {tmp_path}"
    assert list(tmp_path.iterdir()) == []
    cap.remove("cvmc-slot0")  # a no-op

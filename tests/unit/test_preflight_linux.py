"""A Linux desktop's preflight verdict (cvmc.gridmodel.preflight_linux), pure code.

The reports are in the shape roles/linux_desktop/tasks/preflight.yml builds; molecule
`linux_desktop` builds real ones from its containers (and they pass there).
"""

from __future__ import annotations

from typing import Any

import pytest

from cvmc.gridmodel.preflight_linux import evaluate_linux

VM_TYPES = [
    {
        "name": "small-vm",
        "image": "s.qcow2",
        "cpus": 1,
        "memory_mb": 512,
        "os": "LINUX",
        "arch": "X86_64",
    },
    {
        "name": "big-vm",
        "image": "b.qcow2",
        "cpus": 2,
        "memory_mb": 2048,
        "os": "LINUX",
        "arch": "X86_64",
    },
]


def report(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "cpu": {"vmx": True, "svm": False},
        "dev_kvm": True,
        "memory_mb": 15_800,
        "disk": {"path": "/var/lib", "free_mb": 100_000, "store_used_mb": 0},
    }
    base.update(over)
    return base


def judge(rep: dict[str, Any], *, require: bool = True, disk: int = 51_200) -> dict[str, Any]:
    return dict(
        evaluate_linux(
            rep,
            vm_types=VM_TYPES,
            reserve_mb=1024,
            desktop_min_memory_mb=16_384,
            required_disk_mb=disk,
            require_hw_virtualization=require,
        )
    )


def test_a_ready_desktop_passes() -> None:
    verdict = judge(report())
    assert verdict["ok"]
    assert verdict["reasons"] == verdict["warnings"] == []
    assert verdict["hw_virtualization"]
    assert verdict["required_memory_mb"] == 512 + 1024


def test_amd_svm_counts_as_much_as_intel_vmx() -> None:
    assert judge(report(cpu={"vmx": False, "svm": True}))["ok"]


def test_no_vt_x_is_a_reason_when_the_policy_requires_it_and_a_tcg_warning_otherwise() -> None:
    rep = report(cpu={"vmx": False, "svm": False})
    required = judge(rep, require=True)
    assert not required["ok"]
    assert "require_hw_virtualization is true" in required["reasons"][0]
    relaxed = judge(rep, require=False)
    assert relaxed["ok"]
    assert "TCG" in relaxed["warnings"][0]
    assert not relaxed["hw_virtualization"]


def test_flags_without_dev_kvm_mean_the_module_is_not_loaded() -> None:
    verdict = judge(report(dev_kvm=False), require=False)
    assert verdict["ok"]
    assert "/dev/kvm" in verdict["warnings"][0]
    assert not judge(report(dev_kvm=False), require=True)["ok"]


def test_memtotal_gets_the_kernels_allowance_but_not_more() -> None:
    # A 16 GiB desktop shows about 15.6 GiB as MemTotal: admitted.
    assert judge(report(memory_mb=15_600))["ok"]
    small = judge(report(memory_mb=8_000))
    assert not small["ok"]
    assert "grid_desktop_min_memory_mb (16384 MB" in small["reasons"][0]


def test_the_smallest_type_plus_the_reserve_must_fit() -> None:
    verdict = evaluate_linux(
        report(memory_mb=1200),
        vm_types=VM_TYPES,
        reserve_mb=1024,
        desktop_min_memory_mb=1000,
        required_disk_mb=1,
        require_hw_virtualization=True,
    )
    assert verdict["reasons"] == [
        "1200 MB of RAM is less than the smallest VM type (512 MB) plus the reserve (1024 MB)"
    ]


def test_the_image_store_counts_as_free_on_a_rerun() -> None:
    full = report(disk={"path": "/var/lib", "free_mb": 1000, "store_used_mb": 50_500})
    assert judge(full)["ok"]
    assert "1000 MB free on /var/lib" in judge(full, disk=60_000)["reasons"][0]


@pytest.mark.parametrize(
    ("rep", "message"),
    [
        (report(schema=2), "preflight.schema: 2 is not 1"),
        (report(cpu={"vmx": "yes", "svm": False}), "preflight.cpu.vmx: 'yes' is not true or false"),
        (report(memory_mb=True), "preflight.memory_mb: True is not a whole number"),
        (report(extra=1), "preflight.extra: unknown key"),
        (report(disk={"free_mb": -1, "store_used_mb": 0}), "preflight.disk.free_mb: -1"),
    ],
)
def test_a_malformed_report_names_the_key(rep: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        judge(rep)

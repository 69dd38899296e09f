"""The VM type catalogue and the bandwidth classes: one parser for gate, agent and coordinator."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cvmc.gridmodel import catalogue as c
from cvmc.gridmodel import limits, memory

VM: dict[str, Any] = {
    "name": "its-u11-boinc-20120415",
    "image": "its-u11-boinc-20120415.qcow2",
    "cpus": 1,
    "memory_mb": 512,
}
CLASSES = [
    {"name": "standard", "down": "20mbit", "up": "10mbit"},
    {"name": "bulk", "down": "40mbit", "up": "1.5mbit"},
]
LABEL = "grid_vm_types[its-u11-boinc-20120415]"


@pytest.mark.parametrize(("cap", "parsed"), [(None, None), (1, 1), (50, 50), (100, 100)])
def test_cpu_cap_percent_is_optional_and_bounded(cap: int | None, parsed: int | None) -> None:
    """No cap by default; 1-100 percent of each virtual CPU (the bad values: validation_cases)."""
    raw = dict(VM) if cap is None else {**VM, "cpu_cap_percent": cap}
    (vm,) = c.parse_vm_types([raw])
    assert vm.cpu_cap_percent == parsed
    assert c.vm_type_problems([{**VM, "cpu_cap_percent": "50"}]) == [
        f"{LABEL}.cpu_cap_percent: '50' is not a whole number"
    ]


def test_a_type_with_its_defaults_and_caps() -> None:
    bandwidth = c.parse_bandwidth(CLASSES, "standard")
    (vm,) = c.parse_vm_types([VM], bandwidth=bandwidth)
    assert vm == c.VmType(
        name="its-u11-boinc-20120415",
        image="its-u11-boinc-20120415.qcow2",
        cpus=1,
        memory_mb=512,
        os="LINUX",
        arch="X86_64",
        disk_gb=c.DEFAULT_DISK_GB,
        disk_declared=False,
        bandwidth_class="standard",
        caps=c.BandwidthClass("standard", 20_000_000, 10_000_000),
    )
    assert (vm.down_bits, vm.up_bits) == (20_000_000, 10_000_000)
    assert vm.disk_kb is None
    assert vm.machine == {
        "vm_name": "its-u11-boinc-20120415",
        "OpSys": "LINUX",
        "Arch": "X86_64",
        "Cpus": 1,
        "Memory": 512,
    }


def test_a_type_names_its_class_and_its_disk() -> None:
    bandwidth = c.parse_bandwidth(CLASSES, "standard")
    (vm,) = c.parse_vm_types(
        [{**VM, "bandwidth_class": "bulk", "disk_gb": 40}], bandwidth=bandwidth
    )
    assert (vm.bandwidth_class, vm.down_bits, vm.up_bits) == ("bulk", 40_000_000, 1_500_000)
    assert (vm.disk_gb, vm.disk_declared, vm.disk_kb) == (40, True, 40 * 1024 * 1024)


def test_a_null_optional_field_is_an_absent_one() -> None:
    """As in the argument spec: YAML `disk_gb:` with no value means the default."""
    nulls = {**VM, "os": None, "arch": None, "disk_gb": None, "bandwidth_class": None}
    assert c.parse_vm_types([nulls]) == c.parse_vm_types([VM])
    for key in ("name", "cpus", "memory_mb"):
        assert c.vm_type_problems([{**VM, key: None}]), key


def test_without_classes_the_caps_stay_unknown() -> None:
    """The coordinator's grid file carries no bandwidth classes."""
    (vm,) = c.parse_vm_types([VM])
    assert (vm.bandwidth_class, vm.caps) == (None, None)
    (named,) = c.parse_vm_types([{**VM, "bandwidth_class": "bulk"}])
    assert (named.bandwidth_class, named.caps) == ("bulk", None)
    with pytest.raises(ValueError, match=r"^grid_vm_types\[its-u11-boinc-20120415\]: its caps"):
        _ = vm.down_bits
    with pytest.raises(ValueError, match="without grid_bandwidth_classes"):
        _ = vm.up_bits


@pytest.mark.parametrize(
    ("key", "low", "high"),
    [("cpus", 1, 32), ("memory_mb", memory.DEFAULT_MINIMUM_MB, 262144), ("disk_gb", 1, 65536)],
)
def test_ranges_are_inclusive_and_documented(key: str, low: int, high: int) -> None:
    assert (c.RANGES[key].minimum, c.RANGES[key].maximum) == (low, high)
    assert c.RANGES[key].why
    for good in (low, high):
        assert getattr(c.parse_vm_types([{**VM, key: good}])[0], key) == good
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match=f"^{re.escape(LABEL)}.{key}: {bad} is out of range"):
            c.parse_vm_types([{**VM, key: bad}])


@pytest.mark.parametrize("key", ["cpus", "memory_mb", "disk_gb"])
@pytest.mark.parametrize("bad", [True, False, "2", 2.0, [], {}])
def test_numbers_are_ints_never_bools_strings_or_floats(key: str, bad: object) -> None:
    problems = c.vm_type_problems([{**VM, key: bad}])
    assert len(problems) == 1
    assert problems[0].startswith(f"{LABEL}.{key}: {bad!r} ")


@pytest.mark.parametrize(
    "image",
    [
        "http://images.example.org/x.qcow2",
        "../x.qcow2",
        ".hidden.qcow2",
        "images/x.qcow2",
        "C:\\images\\x.vdi",
        "x y.qcow2",
        "x.qcow2\n",
        "x" * 256,
        5,
    ],
)
def test_an_image_is_a_plain_file_name(image: object) -> None:
    with pytest.raises(ValueError, match=r"\.image: .* is not a plain file name"):
        c.parse_vm_types([{**VM, "image": image}])


def test_missing_and_empty_images_have_their_own_words() -> None:
    without = {k: v for k, v in VM.items() if k != "image"}
    assert c.vm_type_problems([without]) == [
        f"{LABEL}.image: missing; name the type's signed image file"
    ]
    assert c.vm_type_problems([{**VM, "image": " "}]) == [
        f"{LABEL}.image: the VM type has no image; name its signed image file"
    ]


def test_every_problem_of_a_type_at_once() -> None:
    problems = c.vm_type_problems(
        [{**VM, "cpus": 0, "memory_mb": 2, "os": "linux", "disk_size_gb": 40}],
        bandwidth_classes=CLASSES,
    )
    assert [p.split(":")[0] for p in problems] == [
        f"{LABEL}.disk_size_gb",
        f"{LABEL}.cpus",
        f"{LABEL}.memory_mb",
        f"{LABEL}.os",
    ]
    with pytest.raises(ValueError, match=r"\.disk_size_gb: unknown key"):
        c.parse_vm_types([{**VM, "cpus": 0, "disk_size_gb": 40}])


@pytest.mark.parametrize(
    ("types", "message"),
    [
        ([], "grid_vm_types: the catalogue is empty"),
        ("its", "grid_vm_types: 'its' is not a list"),
        ({"name": "x"}, "grid_vm_types: {'name': 'x'} is not a list"),
        (["x"], "grid_vm_types[0]: 'x' is not a mapping"),
        ([VM, dict(VM)], "grid_vm_types[1].name: 'its-u11-boinc-20120415' is used twice"),
        ([{**VM, "name": "ITS-U11"}], "grid_vm_types[0].name: 'ITS-U11' is not a valid vm_name"),
    ],
)
def test_the_catalogue_itself(types: object, message: str) -> None:
    problems = c.vm_type_problems(types)
    assert problems
    assert problems[0].startswith(message)


def test_a_type_names_a_known_class_when_classes_are_given() -> None:
    typed = [{**VM, "bandwidth_class": "gold"}]
    assert c.vm_type_problems(typed) == []  # the grid file: a name is all it can check
    assert c.vm_type_problems(typed, bandwidth_classes=CLASSES) == [
        f"{LABEL}.bandwidth_class: 'gold' is not a class in grid_bandwidth_classes (bulk, standard)"
    ]
    assert c.vm_type_problems([{**VM, "bandwidth_class": "gold class"}])[0].startswith(
        f"{LABEL}.bandwidth_class: 'gold class' is not a bandwidth class name"
    )


@pytest.mark.parametrize(
    ("classes", "default", "message"),
    [
        ([], "standard", "grid_bandwidth_classes: the list is empty"),
        ("standard", "standard", "grid_bandwidth_classes: 'standard' is not a list"),
        ([{"name": "standard", "down": "20mbit"}], "standard", "[standard].up: missing"),
        ([{"name": "standard", "down": "20Mbps", "up": "1mbit"}], "standard", "is ambiguous"),
        ([{"name": "standard", "down": 20, "up": "1mbit"}], "standard", "20 needs a unit"),
        ([{"name": "standard", "down": "1001bit", "up": "1mbit"}], "standard", "not a whole"),
        ([{**CLASSES[0], "burst": "1mbit"}], "standard", "[standard].burst: unknown key"),
        ([CLASSES[0], {**CLASSES[0], "name": "STANDARD"}], "standard", "[1].name: 'STANDARD'"),
        ([{**CLASSES[0], "name": "a" * 33}], "standard", "is not a bandwidth class name"),
        (CLASSES, "premium", "grid_bandwidth_default_class: 'premium' is not a class"),
        (CLASSES, True, "grid_bandwidth_default_class: True is not a class"),
    ],
)
def test_bad_bandwidth_classes(classes: object, default: object, message: str) -> None:
    problems = c.bandwidth_problems(classes, default)
    assert any(message in p for p in problems), problems
    assert all(
        p.startswith(("grid_bandwidth_classes", "grid_bandwidth_default_class")) for p in problems
    )
    with pytest.raises(ValueError, match=r"^grid_bandwidth_"):
        c.parse_bandwidth(classes, default)


def test_a_class_with_a_bad_cap_still_counts_as_defined() -> None:
    """One problem per mistake: the default and the types may still name the class."""
    classes = [{"name": "standard", "down": "20mbitt", "up": "1mbit"}]
    problems = c.bandwidth_problems(classes, "standard")
    assert problems == [
        "grid_bandwidth_classes[standard].down: unknown unit 'mbitt' in '20mbitt' "
        "(use bit, kbit, mbit, gbit, tbit, kibit, mibit, gibit, tibit)"
    ]
    typed = [{**VM, "bandwidth_class": "standard"}]
    assert c.vm_type_problems(typed, bandwidth_classes=classes) == []


def test_parse_classes_needs_no_default() -> None:
    assert c.parse_classes(CLASSES)["bulk"] == c.BandwidthClass("bulk", 40_000_000, 1_500_000)
    with pytest.raises(ValueError, match=r"^grid_bandwidth_classes\[0\]\.name: "):
        c.parse_classes([{"name": "", "down": "1mbit", "up": "1mbit"}])


def test_limits_and_catalogue_ranges_read_alike() -> None:
    assert c.RANGES["cpus"].describe() == "a whole number from 1 to 32"
    assert limits.RANGES["grid_planned_desktops"].describe() == "a whole number of at least 1"

"""ClassAd pieces, checked against HTCondor's own ClassAd library (classad2 from the wheel)."""

from __future__ import annotations

import itertools
import string

import classad2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.gridmodel import classad as c

BOINC = {
    "name": "its-u11-boinc-20120415",
    "os": "LINUX",
    "arch": "X86_64",
    "cpus": 1,
    "memory_mb": 2048,
}

SEED_REQUIREMENTS = (
    '(TARGET.vm_name == "its-u11-boinc-20120415") && (TARGET.Arch == "X86_64") && '
    '(TARGET.OpSys == "LINUX") && (TARGET.Disk >= DiskUsage) && '
    "((TARGET.Memory * 1024) >= ImageSize) && ((RequestMemory * 1024) >= ImageSize) && "
    "(TARGET.HasFileTransfer)"
)


def job_ad(vm_type: dict[str, object], *, request_mb: int = 1024) -> classad2.ClassAd:
    """A job asking for ``vm_type`` with an image of ``request_mb`` MB (ImageSize is in KiB)."""
    job = classad2.ClassAd(
        {"RequestMemory": request_mb, "ImageSize": request_mb * 1024, "DiskUsage": 50_000}
    )
    job["Requirements"] = classad2.ExprTree(c.vm_requirements(vm_type))
    return job


def machine_ad(vm_type: dict[str, object], **overrides: object) -> classad2.ClassAd:
    """A research VM's startd ad for ``vm_type``; ``None`` in overrides removes an attribute."""
    machine = classad2.ClassAd(dict(c.vm_machine_attrs(vm_type)))
    machine.update({"Disk": 10_000_000, "HasFileTransfer": True, "Requirements": True})
    for key, value in overrides.items():
        if value is None:
            del machine[key]
        else:
            machine[key] = value
    return machine


def matches(job: classad2.ClassAd, machine: classad2.ClassAd) -> bool:
    """The job's Requirements evaluated with the machine as TARGET, both ways of asking."""
    direct = job.lookup("Requirements").eval(scope=job, target=machine)
    via_match = machine.matches(job)
    assert via_match == (direct is True)
    assert job.symmetricMatch(machine) == via_match
    return bool(via_match)


# --------------------------------------------------------------------------------------------
# vm_name


@pytest.mark.parametrize(
    "good", ["its-u11-boinc-20120415", "abc", "a.b", "vm_1-x.y", "a" * 63, "x9-2-3"]
)
def test_valid_vm_names(good: str) -> None:
    assert c.validate_vm_name(good) == good
    assert c.VM_NAME_PATTERN.match(good)


@pytest.mark.parametrize(
    "bad",
    [
        "ab",
        "a" * 64,
        "Its-u11",
        "1abc",
        "-abc",
        "abc-",
        "ab--c",
        "ab-.c",
        "ab c",
        "abc\n",
        "äbc",
        'x") || true || ("',
        "",
        None,
        42,
    ],
)
def test_invalid_vm_names(bad: object) -> None:
    with pytest.raises(ValueError, match="is not a valid vm_name") as info:
        c.validate_vm_name(bad, name="grid_vm_types[0].name")
    message = str(info.value)
    assert message.startswith(f"grid_vm_types[0].name: {bad!r} is not a valid vm_name")
    assert "3-63 characters" in message


def _reference_valid(name: str) -> bool:
    """An independent statement of the vm_name rule."""
    allowed = set(string.ascii_lowercase + string.digits + "-._")
    separators = set("-._")
    return (
        3 <= len(name) <= 63
        and set(name) <= allowed
        and name[0] in string.ascii_lowercase
        and name[-1] not in separators
        and not any(x in separators and y in separators for x, y in itertools.pairwise(name))
    )


@given(st.text(alphabet="abz09-._A \n\"'|", max_size=70))
def test_vm_name_rule_matches_reference(name: str) -> None:
    try:
        c.validate_vm_name(name)
    except ValueError:
        assert not _reference_valid(name)
    else:
        assert _reference_valid(name)


# --------------------------------------------------------------------------------------------
# Requirements


def test_vm_requirements_is_the_seed_expression() -> None:
    assert c.vm_requirements(BOINC) == SEED_REQUIREMENTS
    # HTCondor parses it and prints it back unchanged
    assert str(classad2.ExprTree(SEED_REQUIREMENTS)) == SEED_REQUIREMENTS


def test_job_matches_a_research_vm_of_its_type() -> None:
    assert matches(job_ad(BOINC), machine_ad(BOINC)) is True


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"vm_name": "its-u11-other-20120415"}, "another vm_name"),
        ({"Arch": "INTEL"}, "another Arch"),
        ({"OpSys": "WINDOWS"}, "another OpSys"),
        ({"Memory": 512}, "too little memory for the 1024 MB image"),
        ({"Disk": 10}, "too little disk"),
        ({"HasFileTransfer": None}, "no HasFileTransfer attribute"),
        ({"HasFileTransfer": False}, "file transfer off"),
        ({"vm_name": None}, "an ordinary machine without vm_name"),
    ],
)
def test_job_does_not_match(overrides: dict[str, object], why: str) -> None:
    assert matches(job_ad(BOINC), machine_ad(BOINC, **overrides)) is False, why


def test_job_whose_image_exceeds_its_request_matches_nothing() -> None:
    job = job_ad(BOINC)
    job["ImageSize"] = 2048 * 1024  # 2 GB image, RequestMemory stays 1024 MB
    assert matches(job, machine_ad(BOINC, Memory=4096)) is False


def test_machine_of_another_type_does_not_match() -> None:
    other = {**BOINC, "name": "its-u11-atlas-20130101"}
    assert matches(job_ad(other), machine_ad(other)) is True
    assert matches(job_ad(BOINC), machine_ad(other)) is False
    assert matches(job_ad(other), machine_ad(BOINC)) is False


@pytest.mark.parametrize(
    ("vm_type", "message"),
    [
        (
            {**BOINC, "name": 'x") || true || ("'},
            r"^grid_vm_types\[boinc\]\.name: 'x\"\) \|\| true \|\| \(\"' is not a valid vm_name",
        ),
        (
            {**BOINC, "os": 'LINUX") || (true'},
            r"^grid_vm_types\[boinc\]\.os: .* not a valid ClassAd os value",
        ),
        ({**BOINC, "arch": "x86_64"}, r"^grid_vm_types\[boinc\]\.arch: 'x86_64'"),
        ({**BOINC, "arch": ""}, r"^grid_vm_types\[boinc\]\.arch: ''"),
        ({"name": "abc", "os": "LINUX"}, r"^grid_vm_types\[boinc\]: the VM type has no 'arch'"),
    ],
)
def test_vm_requirements_rejects_injection_and_bad_values(
    vm_type: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        c.vm_requirements(vm_type, name="grid_vm_types[boinc]")


def test_vm_machine_attrs() -> None:
    assert c.vm_machine_attrs({**BOINC, "cpus": 2}) == {
        "vm_name": "its-u11-boinc-20120415",
        "OpSys": "LINUX",
        "Arch": "X86_64",
        "Cpus": 2,
        "Memory": 2048,
    }
    with pytest.raises(ValueError, match=r"^grid_vm_types\.cpus: 0 is not a positive integer"):
        c.vm_machine_attrs({**BOINC, "cpus": 0})
    with pytest.raises(ValueError, match=r"^grid_vm_types: the VM type has no 'memory_mb'"):
        c.vm_machine_attrs({k: v for k, v in BOINC.items() if k != "memory_mb"})


vm_names = st.builds(
    lambda first, parts: first + "".join(parts),
    st.sampled_from(string.ascii_lowercase),
    st.lists(
        st.tuples(
            st.sampled_from(["", "-", ".", "_"]),
            st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6),
        ).map("".join),
        min_size=1,
        max_size=6,
    ),
).filter(lambda n: len(n) <= 63 and len(n) >= 3)


@given(vm_names, vm_names)
def test_each_type_matches_only_its_own_vms(name_a: str, name_b: str) -> None:
    type_a = {**BOINC, "name": name_a}
    type_b = {**BOINC, "name": name_b}
    assert matches(job_ad(type_a), machine_ad(type_a)) is True
    assert matches(job_ad(type_a), machine_ad(type_b)) is (name_a == name_b)

"""A research VM's memory: the type's size, capped by what is free beyond the owner's reserve."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.gridmodel.memory import DEFAULT_MINIMUM_MB, vm_memory_mb


@pytest.mark.parametrize(
    ("type_mb", "free_mb", "reserve_mb", "expected"),
    [
        (2048, 8192, 2048, 2048),  # plenty free: the type's size
        (2048, 3072, 2048, 1024),  # capped by free - reserve
        (2048, 2304, 2048, 256),  # exactly the minimum still starts
        (2048, 2303, 2048, 0),  # one MB below the minimum: do not start
        (2048, 1024, 2048, 0),  # free is below the reserve
        (200, 8192, 1024, 0),  # the type itself is below the minimum
        (1, 0, 0, 0),
    ],
)
def test_vm_memory_mb(type_mb: int, free_mb: int, reserve_mb: int, expected: int) -> None:
    assert vm_memory_mb(type_mb, free_mb, reserve_mb) == expected


def test_minimum_is_configurable() -> None:
    assert DEFAULT_MINIMUM_MB == 256
    assert vm_memory_mb(200, 8192, 1024, minimum_mb=128) == 200
    assert vm_memory_mb(2048, 3000, 2048, minimum_mb=1024) == 0
    assert vm_memory_mb(2048, 2048, 2048, minimum_mb=0) == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, 4096, 1024), {}, r"^vm_memory_mb: type_memory_mb must be at least 1, got 0"),
        ((1024, -1, 1024), {}, r"^vm_memory_mb: free_mb must not be negative, got -1"),
        ((1024, 4096, -5), {}, r"^vm_memory_mb: reserve_mb must not be negative, got -5"),
        ((1024, 4096, 0), {"minimum_mb": -1}, r"^vm_memory_mb: minimum_mb must not be negative"),
        ((True, 4096, 0), {}, r"^vm_memory_mb: type_memory_mb must be a whole number of MB"),
        ((1024, "4096", 0), {}, r"^vm_memory_mb: free_mb must be a whole number of MB"),
        ((1024, 4096, 0.5), {}, r"^vm_memory_mb: reserve_mb must be a whole number of MB"),
    ],
)
def test_vm_memory_mb_rejects(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        vm_memory_mb(*args, **kwargs)  # type: ignore[arg-type]


def test_error_names_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^grid_vm_types\[boinc\]\.memory_mb: type_memory_mb"):
        vm_memory_mb(0, 4096, 1024, name="grid_vm_types[boinc].memory_mb")


mb = st.integers(0, 1 << 20)


@given(st.integers(1, 1 << 20), mb, mb, st.integers(0, 4096))
def test_vm_memory_mb_properties(type_mb: int, free_mb: int, reserve_mb: int, minimum: int) -> None:
    result = vm_memory_mb(type_mb, free_mb, reserve_mb, minimum_mb=minimum)
    assert result <= type_mb
    assert result <= max(0, free_mb - reserve_mb)
    assert result == 0 or result >= minimum


@given(st.integers(1, 1 << 20), mb, mb, mb)
def test_more_free_memory_never_gives_less(
    type_mb: int, free_mb: int, reserve_mb: int, extra: int
) -> None:
    less = vm_memory_mb(type_mb, free_mb, reserve_mb)
    more = vm_memory_mb(type_mb, free_mb + extra, reserve_mb)
    assert more >= less
    # a type of at least the minimum that fits beside the reserve gets its full size
    if type_mb >= DEFAULT_MINIMUM_MB and free_mb - reserve_mb >= type_mb:
        assert less == type_mb

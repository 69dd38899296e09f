"""How much memory a research VM gets on a desktop, leaving the desktop's owner a reserve.

Pure (standard library only, no I/O); raises ``ValueError`` with a message that starts with the
name of the variable being checked.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MINIMUM_MB", "vm_memory_mb"]

#: Below this a VM is not worth starting.
DEFAULT_MINIMUM_MB = 256


def _check(value: object, label: str, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: {label} must be a whole number of MB, got {value!r}")
    if value < minimum:
        what = "must not be negative" if minimum == 0 else f"must be at least {minimum}"
        raise ValueError(f"{name}: {label} {what}, got {value}")
    return value


def vm_memory_mb(
    type_memory_mb: int,
    free_mb: int,
    reserve_mb: int,
    *,
    minimum_mb: int = DEFAULT_MINIMUM_MB,
    name: str = "vm_memory_mb",
) -> int:
    """Memory (MB) for a VM: its type's memory, capped at what is free beyond the reserve.

    Returns ``min(type_memory_mb, free_mb - reserve_mb)``, or 0 -- meaning "do not start the
    VM" -- when that is below ``minimum_mb``.
    """
    type_memory_mb = _check(type_memory_mb, "type_memory_mb", name, minimum=1)
    free_mb = _check(free_mb, "free_mb", name, minimum=0)
    reserve_mb = _check(reserve_mb, "reserve_mb", name, minimum=0)
    minimum_mb = _check(minimum_mb, "minimum_mb", name, minimum=0)
    memory = min(type_memory_mb, free_mb - reserve_mb)
    return memory if memory >= minimum_mb and memory > 0 else 0

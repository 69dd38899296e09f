"""Suspend instead of shut down (``grid_policy.suspend_minutes``): how much disk a saved VM
takes, and whether the desktop's disk holds it.

A saved VM is its RAM (QEMU sends each page once, and an untouched page as a marker) plus its
devices' state, so it is never much larger than the VM's memory. The hypervisor stops a save
that grows beyond :func:`state_limit_bytes`, and the agent saves only while the disk keeps
:data:`KEEP_FREE_MB` free after the largest state the VM can write.
"""

from __future__ import annotations

__all__ = ["DEVICE_STATE_MB", "KEEP_FREE_MB", "state_fits", "state_limit_bytes"]

#: Room for the devices' state and the stream's framing beyond the VM's RAM.
DEVICE_STATE_MB = 64
#: Free space a save must leave on the agent's file system (as a VM start needs).
KEEP_FREE_MB = 1024


def state_limit_bytes(memory_mb: int) -> int:
    """The most a VM of ``memory_mb`` can write when it is saved."""
    return (max(memory_mb, 0) + DEVICE_STATE_MB) << 20


def state_fits(free_mb: int, memory_mb: int) -> str | None:
    """None when ``free_mb`` holds a saved VM of ``memory_mb`` and keeps ``KEEP_FREE_MB``;
    else why not, for the log."""
    need = (state_limit_bytes(memory_mb) >> 20) + KEEP_FREE_MB
    if free_mb >= need:
        return None
    return (
        f"{max(free_mb, 0)} MiB free; saving a {memory_mb} MB VM needs {need} MiB "
        f"(its memory, {DEVICE_STATE_MB} MiB of device state and {KEEP_FREE_MB} MiB kept free)"
    )

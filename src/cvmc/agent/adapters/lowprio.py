"""Low impact while a VM runs (Linux): the lowest CPU and I/O priority for the VM's process,
and an optional CPU cap through a delegated cgroup v2.

Priority: :func:`lower_priority` runs in the child between ``fork`` and ``exec`` (Popen's
``preexec_fn``), so QEMU and every thread it starts (vCPUs, I/O) begin at nice 19 in the idle
I/O class: nice and the I/O class are per thread on Linux and inherited, so setting them on the
running process from outside would miss threads already started. Both calls are allowed to an
unprivileged user for its own process (lowering priority needs no capability). It makes only
two system calls, no allocation beyond the call itself and no lock, so it is safe in the child
of a threaded agent; a refused call (a seccomp filter) is left as it is, never fatal.

Cap: :class:`CgroupCap` writes ``cpu.max`` (``quota period``) for a child cgroup of the
agent's own cgroup and moves the VM's process into it. That needs cgroup v2 and a cgroup the
agent may write (a systemd unit with ``Delegate=cpu`` and a writable ``/sys/fs/cgroup``);
elsewhere :meth:`CgroupCap.apply` returns why not and the VM runs uncapped (logged, never a
failure). QEMU has no CPU throttle of its own outside live migration.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import sys
from pathlib import Path

__all__ = [
    "IOPRIO_CLASS_BE",
    "IOPRIO_CLASS_IDLE",
    "LOW_NICE",
    "CgroupCap",
    "cpu_max",
    "ioprio_get",
    "ioprio_set",
    "lower_priority",
]

#: The lowest CPU priority (``nice 19``).
LOW_NICE = 19
#: ``ioprio`` classes (linux/ioprio.h): the class sits above a 13-bit level.
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_BE = 2
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1
#: x86_64 and aarch64 system call numbers (asm/unistd.h).
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}  # (ioprio_set, ioprio_get)
_PERIOD_US = 100_000

# Linux only; the module is imported on Windows too (the agent's composition root), where the
# QEMU driver is never built, so nothing is loaded there.
_LINUX = sys.platform.startswith("linux")
_libc = (
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if _LINUX else None
)
_NR = _SYSCALLS.get(platform.machine()) if _LINUX else None


def ioprio_set(pid: int, klass: int, level: int) -> int:
    """``ioprio_set`` for the thread or process ``pid`` (0: this one); the call's result."""
    if _NR is None or _libc is None:
        return -1
    return int(
        _libc.syscall(_NR[0], _IOPRIO_WHO_PROCESS, pid, (klass << _IOPRIO_CLASS_SHIFT) | level)
    )


def ioprio_get(pid: int) -> tuple[int, int]:
    """The I/O priority class and level of ``pid`` (``ioprio_get``), e.g. ``(3, 0)`` for idle."""
    if _NR is None or _libc is None:
        raise OSError(f"ioprio_get: no system call number for {platform.machine()}")
    value = int(_libc.syscall(_NR[1], _IOPRIO_WHO_PROCESS, pid))
    if value < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ioprio_get({pid}): {os.strerror(err)}")
    return value >> _IOPRIO_CLASS_SHIFT, value & ((1 << _IOPRIO_CLASS_SHIFT) - 1)


def lower_priority() -> None:
    """This process to nice 19 and the idle I/O class (a ``preexec_fn``; see the docstring)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, LOW_NICE)
    ioprio_set(0, IOPRIO_CLASS_IDLE, 0)


def cpu_max(percent: int, cpus: int) -> str:
    """``cpu.max`` for ``percent`` of each of ``cpus`` virtual CPUs (VirtualBox's
    ``--cpuexecutioncap`` is also per virtual CPU): ``"quota period"`` in microseconds."""
    if not 1 <= percent <= 100:
        raise ValueError(f"cpu_cap_percent: {percent} is out of range; give 1 to 100")
    return f"{_PERIOD_US * percent * max(cpus, 1) // 100} {_PERIOD_US}"


class CgroupCap:
    """CPU caps for VM processes in child cgroups of ``base`` (default: this process's own
    cgroup v2 directory)."""

    def __init__(self, base: str | None = None, mount: str = "/sys/fs/cgroup") -> None:
        self.mount = Path(mount)
        self.base = Path(base) if base is not None else self._own()

    def _own(self) -> Path | None:
        if not (self.mount / "cgroup.controllers").exists():
            return None  # not cgroup v2 (v1 or hybrid)
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith("0::"):
                return self.mount / line[3:].lstrip("/")
        return None

    def unavailable(self) -> str | None:
        """Why no cap can be set here, or None when it can."""
        if self.base is None:
            return f"no cgroup v2 hierarchy at {self.mount}"
        controllers = self.base / "cgroup.controllers"
        try:
            if "cpu" not in controllers.read_text().split():
                return f"the cpu controller is not delegated to {self.base}"
        except OSError as exc:
            return f"{controllers}: {exc.strerror}"
        if not os.access(self.base / "cgroup.subtree_control", os.W_OK):
            return f"{self.base} is not writable (no Delegate=cpu, or a read-only cgroupfs)"
        return None

    def _enable_cpu(self, base: Path) -> None:
        subtree = base / "cgroup.subtree_control"
        if "cpu" in subtree.read_text().split():
            return
        # No internal processes: whatever runs in the base itself (the agent) moves to a leaf.
        leaf = base / "agent"
        leaf.mkdir(exist_ok=True)
        for pid in (base / "cgroup.procs").read_text().split():
            try:
                (leaf / "cgroup.procs").write_text(pid)
            except OSError:
                continue  # gone, or not ours to move
        subtree.write_text("+cpu")

    def apply(self, name: str, pid: int, percent: int, cpus: int) -> str | None:
        """Cap ``pid`` at ``percent`` of ``cpus`` CPUs in the child cgroup ``name``; None when
        done, else why not (nothing is left half-done that matters: an empty child cgroup)."""
        why = self.unavailable()
        if why is not None or self.base is None:
            return why
        try:
            self._enable_cpu(self.base)
            group = self.base / name
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(cpu_max(percent, cpus))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            return f"{exc.filename or self.base}: {exc.strerror}"
        return None

    def remove(self, name: str) -> None:
        """Remove the child cgroup ``name`` (empty once its VM is gone); a no-op elsewhere."""
        if self.base is None:
            return
        with contextlib.suppress(OSError):
            (self.base / name).rmdir()

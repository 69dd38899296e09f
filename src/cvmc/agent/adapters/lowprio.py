"""Low impact while a VM runs (Linux): the lowest CPU and I/O priority for the VM's process,
and an optional CPU cap through a delegated cgroup (v2, or v1's ``cpu`` controller).

Priority: :func:`lower_priority` runs in the child between ``fork`` and ``exec`` (Popen's
``preexec_fn``), so QEMU and every thread it starts (vCPUs, I/O) begin at nice 19 in the idle
I/O class: nice and the I/O class are per thread on Linux and inherited, so setting them on the
running process from outside would miss threads already started. Both calls are allowed to an
unprivileged user for its own process (lowering priority needs no capability). It makes only
two system calls, no allocation beyond the call itself and no lock, so it is safe in the child
of a threaded agent; a refused call (a seccomp filter) is left as it is, never fatal.

Cap: :class:`CgroupCap` makes a child cgroup of the agent's own cgroup, sets its CPU
bandwidth and moves the VM's process into it. On cgroup v2 (unified) that is ``cpu.max``
(``quota period``); on cgroup v1 or a hybrid host (older distributions, some desktops'
kernels) it is the v1 ``cpu`` controller's ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``, the
same CFS bandwidth limit under older names. Either needs a cgroup the agent may write (a
systemd unit with ``Delegate=cpu`` and a writable ``/sys/fs/cgroup``); elsewhere
:meth:`CgroupCap.apply` returns why not and the VM runs uncapped (logged, never a failure).
QEMU has no CPU throttle of its own outside live migration.
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
    "V1_LOWEST_SHARES",
    "V2_LOWEST_WEIGHT",
    "CgroupCap",
    "cpu_max",
    "cpu_quota",
    "ioprio_get",
    "ioprio_set",
    "lower_priority",
    "v1_cpu_cgroup",
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
#: A cgroup's CPU weight, the kernel's minimum and its default: v1 ``cpu.shares``, v2
#: ``cpu.weight``. A group left from an earlier VM is written again either way.
V1_LOWEST_SHARES, V1_DEFAULT_SHARES = 2, 1024
V2_LOWEST_WEIGHT, V2_DEFAULT_WEIGHT = 1, 100

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


def cpu_quota(percent: int, cpus: int) -> tuple[int, int]:
    """(quota, period) in microseconds for ``percent`` of each of ``cpus`` virtual CPUs
    (VirtualBox's ``--cpuexecutioncap`` is also per virtual CPU)."""
    if not 1 <= percent <= 100:
        raise ValueError(f"cpu_cap_percent: {percent} is out of range; give 1 to 100")
    return _PERIOD_US * percent * max(cpus, 1) // 100, _PERIOD_US


def cpu_max(percent: int, cpus: int) -> str:
    """cgroup v2 ``cpu.max`` for :func:`cpu_quota`: ``"quota period"``."""
    quota, period = cpu_quota(percent, cpus)
    return f"{quota} {period}"


def v1_cpu_cgroup(mountinfo: str, cgroups: str) -> Path | None:
    """This process's directory in the cgroup v1 ``cpu`` hierarchy, from the text of
    ``/proc/self/mountinfo`` and ``/proc/self/cgroup``; None without a v1 ``cpu`` controller.

    A v1 hierarchy may bind several controllers (``cpu,cpuacct``): the controller is a whole
    token of the mount's super options and of the cgroup line's controller list. A mount of a
    subtree (a container's, field 4 not ``/``) is mapped by stripping that root."""
    path = None
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "cpu" in parts[1].split(","):
            path = parts[2]
    if path is None:
        return None
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
            continue
        if "cpu" not in tail[2].split(","):
            continue
        root, mount_point = fields[3], fields[4]
        if root != "/":
            if path != root and not path.startswith(root.rstrip("/") + "/"):
                continue
            path = path[len(root) :]
        return Path(mount_point) / path.lstrip("/")
    return None


class CgroupCap:
    """CPU caps for VM processes in child cgroups of ``base`` (default: this process's own
    cgroup: its cgroup v2 directory, else its directory in the cgroup v1 ``cpu`` hierarchy).
    ``v1`` says which interface ``base`` speaks when it is given; ``proc`` is where this
    process's ``cgroup`` and ``mountinfo`` are read."""

    def __init__(
        self,
        base: str | None = None,
        mount: str = "/sys/fs/cgroup",
        *,
        v1: bool = False,
        proc: str = "/proc/self",
    ) -> None:
        self.mount = Path(mount)
        self.v1 = v1
        self._proc = Path(proc)
        self.base = Path(base) if base is not None else self._own()

    def _own(self) -> Path | None:
        proc = self._proc
        try:
            cgroups = (proc / "cgroup").read_text()
        except OSError:
            return None
        if (self.mount / "cgroup.controllers").exists():
            for line in cgroups.splitlines():
                if line.startswith("0::"):
                    return self.mount / line[3:].lstrip("/")
            return None
        try:
            mountinfo = (proc / "mountinfo").read_text()
        except OSError:
            return None
        base = v1_cpu_cgroup(mountinfo, cgroups)
        self.v1 = base is not None
        return base

    def unavailable(self) -> str | None:
        """Why no cap can be set here, or None when it can."""
        if self.base is None:
            return f"no cgroup v2 hierarchy at {self.mount}, and no cgroup v1 cpu controller"
        if self.v1:
            return self._v1_unavailable(self.base)
        controllers = self.base / "cgroup.controllers"
        try:
            if "cpu" not in controllers.read_text().split():
                return f"the cpu controller is not delegated to {self.base}"
        except OSError as exc:
            return f"{controllers}: {exc.strerror}"
        if not os.access(self.base / "cgroup.subtree_control", os.W_OK):
            return f"{self.base} is not writable (no Delegate=cpu, or a read-only cgroupfs)"
        return None

    @staticmethod
    def _v1_unavailable(base: Path) -> str | None:
        if not (base / "cpu.cfs_quota_us").exists():
            return f"{base} has no cpu.cfs_quota_us (no CFS bandwidth control)"
        if not os.access(base, os.W_OK):
            return f"{base} is not writable (no Delegate=cpu, or a read-only cgroupfs)"
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

    def apply(
        self, name: str, pid: int, percent: int, cpus: int, *, low: bool = False
    ) -> str | None:
        """Cap ``pid`` at ``percent`` of ``cpus`` CPUs in the child cgroup ``name``; None when
        done, else why not (nothing is left half-done that matters: an empty child cgroup).

        With ``low`` (``grid_vm_low_priority``) the group also gets the lowest CPU weight. The
        scheduler weighs a group against its siblings as one entity of the group's weight, so
        a VM at nice 19 alone in a group of the default weight competes as a nice-0 task would:
        measured in bench/vm_impact.py, the owner's task took x1.82 beside a capped VM at
        default weight, x1.0 beside one at nice 19 without a group."""
        why = self.unavailable()
        if why is not None or self.base is None:
            return why
        try:
            group = self.base / name
            if self.v1:
                # No "no internal processes" rule in v1: the agent stays where it is.
                quota, period = cpu_quota(percent, cpus)
                group.mkdir(exist_ok=True)
                (group / "cpu.cfs_period_us").write_text(str(period))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
                shares = V1_LOWEST_SHARES if low else V1_DEFAULT_SHARES
                (group / "cpu.shares").write_text(str(shares))
            else:
                self._enable_cpu(self.base)
                group.mkdir(exist_ok=True)
                (group / "cpu.max").write_text(cpu_max(percent, cpus))
                weight = V2_LOWEST_WEIGHT if low else V2_DEFAULT_WEIGHT
                (group / "cpu.weight").write_text(str(weight))
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

"""Allocation rounds in a process of their own.

A round for 20,000 desktops is up to a second of CPU: it reads every desktop and lease,
allocates, and writes the changes (docs/performance.md). In the web process it would hold the
interpreter's lock while heartbeats wait, and take a share of the one core that process can
use. ``ProcessRounds`` runs ``Coordinator.allocation_round`` every ``leases.allocate_s`` in one
child process instead. The child is spawned (not forked: the web process has threads) once,
builds its own coordinator through the composition root's factory, polls demand and writes
leases itself, and answers each round with a ``RoundReport``. The web process copies the
report into its metrics, demand and dashboard counts. A child that dies is started again at
the next round, and the failure is logged.

On PostgreSQL several ``serve`` processes (``--workers``, several hosts) share a database, and
each has its rounds child; only the child that holds the leader lock runs rounds
(``cvmc.coordinator.adapters.pg_leader``). The others report that they follow, and try again
every ``leases.leader_retry_s``.

The child dies with its parent, even when the parent is killed with SIGKILL and has no chance
to stop it: on Linux the kernel sends it SIGKILL when the parent goes (``PR_SET_PDEATHSIG``),
and everywhere a thread of the child checks once a second that its parent is still the process
that started it, and ends the child when it is not (an orphan is adopted by another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cvmc.coordinator.service.coordinator import Coordinator, RoundReport

__all__ = ["ProcessRounds"]

log = logging.getLogger("cvmc.coordinator.rounds")

#: The child's coordinator (one per child process).
_child: Coordinator | None = None


#: ``prctl(2)``'s option that asks for a signal when the parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: How often the child checks that its parent is alive, in seconds.
PARENT_CHECK_S = 1.0


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)  # the parent is gone; nothing of the child's is worth keeping
        time.sleep(PARENT_CHECK_S)


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (the process that started it) ends.

    On Linux the kernel kills it at once (``PR_SET_PDEATHSIG``, SIGKILL); everywhere a daemon
    thread checks the parent's pid once a second. The check right after ``prctl`` covers a
    parent that died before it.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker, if this process started it.

    The tracker (started with the first spawned child) ignores SIGTERM and SIGINT and ends only
    when its pipe closes, that is just after the process that started it. systemd, stopping the
    unit, sends SIGTERM to all of its processes and waits for the last: where it cannot watch
    the control group empty (cgroup v1 in a container) it waits for one that outlives the main
    process until ``TimeoutStopSec`` (90 s). Stopped here, before the end, it never does.
    """
    from multiprocessing import resource_tracker  # noqa: PLC0415

    tracker = resource_tracker._resource_tracker  # no public way to stop it
    if getattr(tracker, "_pid", None) is None:
        return  # not started, or started by a parent (a worker's children share its tracker)
    stop = getattr(tracker, "_stop", None)  # a private API: if gone, it ends after us as before
    if callable(stop):
        with contextlib.suppress(Exception):
            stop()


def _child_start(factory: Callable[[], Coordinator], parent: int) -> None:
    global _child  # noqa: PLW0603 - the child process's one coordinator
    die_with_parent(parent)
    # Only its parent ends the child (close(), or the kernel when the parent dies): SIGTERM to
    # the whole unit (systemctl stop) or SIGINT to the terminal's group would end it before the
    # parent's shutdown, which would then start it again while stopping.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    _child = factory()


def _child_round() -> RoundReport:
    assert _child is not None, "the rounds process has no coordinator"
    _child.allocation_round()
    return _child.round_report()


class ProcessRounds:
    """Allocation rounds in one spawned child process (see the module's docstring)."""

    def __init__(self, factory: Callable[[], Coordinator]) -> None:
        self._factory = factory  # picklable: it is sent to the child
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, coordinator: Coordinator) -> None:
        """Run rounds every ``leases.allocate_s`` until cancelled."""
        loop = asyncio.get_running_loop()
        leases = coordinator.config.leases
        while True:
            started = time.monotonic()
            try:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(
                        max_workers=1,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_child_start,
                        initargs=(self._factory, os.getpid()),
                    )
                coordinator.absorb(await loop.run_in_executor(self._pool, _child_round))
            except BrokenProcessPool:
                log.error("the allocation rounds process died; starting a new one")
                self.close(wait=False)
            except Exception:
                log.exception("allocation round failed")
            # The leader runs a round every allocate_s; another process tries to take over
            # every leader_retry_s (PostgreSQL's leader lock; SQLite's one process leads).
            interval = leases.allocate_s if coordinator.leader else leases.leader_retry_s
            await asyncio.sleep(max(interval - (time.monotonic() - started), 0.05))

    def close(self, *, wait: bool = True) -> None:
        """Stop the child; ``wait``: for it to end, and then the resource tracker (the end of
        the service: see ``stop_resource_tracker``)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
        if wait:
            stop_resource_tracker()

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
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cvmc.coordinator.service.coordinator import Coordinator, RoundReport

__all__ = ["ProcessRounds"]

log = logging.getLogger("cvmc.coordinator.rounds")

#: The child's coordinator (one per child process).
_child: Coordinator | None = None


def _child_start(factory: Callable[[], Coordinator]) -> None:
    global _child  # noqa: PLW0603 - the child process's one coordinator
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
        interval = coordinator.config.leases.allocate_s
        while True:
            started = time.monotonic()
            try:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(
                        max_workers=1,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_child_start,
                        initargs=(self._factory,),
                    )
                coordinator.absorb(await loop.run_in_executor(self._pool, _child_round))
            except BrokenProcessPool:
                log.error("the allocation rounds process died; starting a new one")
                self.close(wait=False)
            except Exception:
                log.exception("allocation round failed")
            await asyncio.sleep(max(interval - (time.monotonic() - started), 0.05))

    def close(self, *, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

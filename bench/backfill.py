"""Backfill (``grid_backfill``): what it costs the coordinator's round, and how long real demand
waits for a desktop that runs backfill. Prints figures.

1. The allocation round (pure ``allocate``, no database) on N desktops with 2 slots each:
   backfill off with no demand (the baseline); the round that fills every desktop with one
   backfill lease; the steady round (every desktop runs backfill, no demand); and demand
   arriving for a quarter of the desktops, with every desktop running backfill (the round
   preempts those) and without backfill (the same demand on idle desktops).
2. ``--qemu``: the real agent and QEMU on a one-slot desktop with the tiny test guest, against
   the loopback coordinator (heartbeat 5 s, as in the lab): the time from the reply that
   replaces the backfill lease by a real one to the real lease's VM running in that slot.
   A real coordinator adds up to one heartbeat interval before that reply.

    .venv/bin/python bench/backfill.py [--desktops 20000] [--runs 5] [--qemu 3]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from cvmc.coordinator.domain.grid import parse_grid  # noqa: E402
from cvmc.coordinator.domain.leases import Allocation, DesktopView, LeaseView, allocate  # noqa: E402

SPARE, REAL = "its-u11-boinc-20120415", "lab-el9-bulk-20261101"


def allocation(n: int, runs: int) -> None:
    grid = parse_grid(
        {
            "name": "bench",
            "max_vms_per_desktop": 2,
            "vm_types": [
                {"name": SPARE, "image": f"{SPARE}.qcow2", "cpus": 1, "memory_mb": 512},
                {"name": REAL, "image": f"{REAL}.qcow2", "cpus": 1, "memory_mb": 768},
            ],
            "desktops": [],
            "backfill": {"vm_type": SPARE, "max_per_desktop": 1},
        }
    )
    spare = grid.vm_type(SPARE)
    desktops = [
        DesktopView(f"d-{i}", f"dept_{i % 40}", True, True, True, 2, 8000) for i in range(n)
    ]
    running = [
        LeaseView(f"b-{i}", f"d-{i}", SPARE, 1, 512, 0.0, 300.0, "running", 0, backfill=True)
        for i in range(n)
    ]

    def round_(leases: list[LeaseView], demand: int, backfill: bool) -> Callable[[], Allocation]:
        def go() -> Allocation:
            ids = itertools.count()
            return allocate(
                demand={REAL: demand},
                types=grid.vm_types,
                desktops=desktops,
                leases=leases,
                now=1000.0,
                ttl_s=300.0,
                max_vms_per_desktop=2,
                new_id=lambda: f"l-{next(ids)}",
                backfill=spare if backfill else None,
                backfill_max=1,
            )

        return go

    quarter = n // 4
    cases: list[tuple[str, Callable[[], Allocation], tuple[int, int]]] = [
        ("no demand, backfill off (baseline)", round_([], 0, False), (0, 0)),
        ("no demand: fill every desktop with backfill", round_([], 0, True), (n, 0)),
        ("steady: every desktop runs backfill, no demand", round_(running, 0, True), (0, 0)),
        (
            f"{quarter} jobs arrive, every desktop on backfill",
            round_(running, quarter, True),
            (quarter, quarter),
        ),
        (f"{quarter} jobs arrive, no backfill (before)", round_([], quarter, False), (quarter, 0)),
    ]
    print(f"allocate, {n} desktops with 2 slots, median of {runs} runs:")
    for label, go, (new, revoked) in cases:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = go()
            times.append(time.perf_counter() - t0)
        if (len(out.new), len(out.revoked)) != (new, revoked):
            raise SystemExit(f"{label}: {len(out.new)} new, {len(out.revoked)} revoked")
        print(f"  {label}: {statistics.median(times) * 1000:.0f} ms "
              f"({len(out.new)} new, {len(out.revoked)} revoked)")  # fmt: skip
    tracemalloc.start()
    cases[3][1]()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  Python peak of the preempting round: {peak / 2**20:.1f} MiB")


def preemption(runs: int) -> None:
    from agent.agent_fakes import FakeSessions  # noqa: PLC0415
    from agent.agent_lab import lab_desktop  # noqa: PLC0415

    from cvmc.agent import compose  # noqa: PLC0415
    from cvmc.agent.domain.config import parse_config  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="cvmc-backfill-"))
    lab = lab_desktop(tmp, any_logon=True, poll_s=0.5, heartbeat_s=5, vacate_deadline_s=60)
    lab.config["grid"]["max_vms_per_desktop"] = 1
    components = compose.build(parse_config(lab.config))
    components.sessions = FakeSessions()
    agent = components.agent("bench-pc01")
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)

    def wait(what: str, predicate: Callable[[], bool], timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.05)

    def runs_lease(lease_id: str) -> bool:
        slot = agent.slots[0]
        return (
            slot.lease is not None
            and slot.lease.lease_id == lease_id
            and (slot.state.value == "running")
        )

    latencies = []
    thread.start()
    try:
        for run in range(runs):
            spare: dict[str, Any] = {**lab.lease(f"b-{run}", SPARE), "backfill": True}
            lab.coordinator.leases = [spare]
            spare_id, real_id = f"b-{run}", f"l-{run}"
            wait("the backfill VM", functools.partial(runs_lease, spare_id))
            time.sleep(3)  # let it boot
            lab.coordinator.leases = [lab.lease(real_id, SPARE)]
            t0 = time.monotonic()
            wait("the real lease's VM", functools.partial(runs_lease, real_id))
            latencies.append(time.monotonic() - t0)
            lab.coordinator.leases = []
            wait("the slot to be idle", lambda: agent.slots[0].state.value == "idle", 120)
    finally:
        stop.set()
        thread.join(timeout=90)
        lab.close()
    declined = [d for beat in lab.coordinator.heartbeats for d in beat["declined"]]
    if declined:
        raise SystemExit(f"declined: {declined}")
    print(f"real agent and QEMU, one slot, heartbeat 5 s, {runs} runs:")
    print("  backfill lease replaced -> real lease's VM running: median "
          f"{statistics.median(latencies):.1f} s, max {max(latencies):.1f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--desktops", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--qemu", type=int, default=0, help="preemption runs on QEMU (0: none)")
    args = parser.parse_args()
    allocation(args.desktops, args.runs)
    if args.qemu:
        preemption(args.qemu)


if __name__ == "__main__":
    main()

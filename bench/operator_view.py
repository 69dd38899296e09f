"""The operator's view at campus scale: what its queries and pages cost.

Builds a coordinator (the composition root, on SQLite and/or PostgreSQL) whose database holds N
enrolled desktops in 10 departments with mixed hardware (5 % whose VT-x Hyper-V holds, 2 % with
none, 3 % with too little memory, agents of three versions), a running lease on every fourth
desktop, ``--declines`` decline events in the last hour with the agent's detail, and core-
seconds for every department and VM type. Rows are written through SQLAlchemy in one
transaction, as the service would leave them.

Prints, for each backend, the median and worst of ``--repeat`` runs of:

- ``Store.counts`` (what every allocation round, and a follower once per round, reads: the
  dashboard's and ``/metrics``' figures, now with the hardware groups, recent declines,
  core-seconds, departments' states and agent versions);
- the dashboard page (``render_dashboard`` with six hours of history, one sample per 5 s
  round: 4,320 samples) and its size;
- ``Coordinator.admin_summary`` (``GET /admin/v1/summary``) and ``/metrics``' families;
- one page of ``GET /admin/v1/desktops`` (``limit`` 1000) and the desktops page (500).

Asserts nothing: figures go to docs/performance.md.

Usage: python bench/operator_view.py [--desktops 20000] [--declines 5000] [--repeat 7]
       [--backend sqlite|postgresql|both] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from cvmc.coordinator.adapters.dashboard import render_dashboard, render_desktops
from cvmc.coordinator.adapters.database import make_engine, migrate
from cvmc.coordinator.adapters.schema import decline_events, desktops, leases, usage
from cvmc.coordinator.compose import build
from cvmc.coordinator.domain.config import parse_config
from cvmc.coordinator.domain.leases import Allocation
from cvmc.gridmodel.addressing import desktop_id as canonical

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pg_scratch import scratch_database

TYPES = [
    {"name": f"vm-type-{i}", "image": f"vm-type-{i}.qcow2", "cpus": 1 + i % 4,
     "memory_mb": 1024 * (1 + i % 4), "os": "LINUX", "arch": "X86_64"}
    for i in range(6)
]  # fmt: skip
DEFAULT_PG = "postgresql+psycopg://cvmc_test:cvmc_test@127.0.0.1:5432/cvmc_test"


def setup(work: Path, url: str, n: int, n_declines: int) -> Any:  # noqa: ANN401 - Coordinator
    key = work / "enrol.key"
    key.write_text("bench-enrol-key-0123456789abcdefghijklmnopqrstuvwxyz\n")
    key.chmod(0o600)
    grid = {
        "name": "bench",
        "vm_types": TYPES,
        "max_vms_per_desktop": 2,
        "desktops": [
            {"name": f"pc{i:05d}", "index": i, "department": f"dept_{i % 10}"}
            for i in range(n + n // 10)  # a tenth never enrolled
        ],
    }
    (work / "grid.json").write_text(json.dumps(grid))
    (work / "jobs.ads").write_text("")
    (work / "images").mkdir()
    config = parse_config(
        {
            "database": {"url": url},
            "enrolment": {"key_file": str(key)},
            "images": {"dir": str(work / "images")},
            "demand": {"source": "job_ads_file", "job_ads_file": str(work / "jobs.ads")},
            "grid": {"model_file": str(work / "grid.json")},
        }
    )
    engine = make_engine(config.database)
    migrate(engine)
    rng = random.Random(7)  # noqa: S311 - a data pattern
    now = time.time()
    rows, lease_rows, event_rows = [], [], []
    for i in range(n):
        draw = rng.random()
        held = "Hyper-V" if draw < 0.05 else None
        hw_virt = draw >= 0.07
        memory = 2048 if 0.07 <= draw < 0.10 else rng.choice([8192, 16384, 32768])
        desk = f"d-{i:05d}"
        rows.append(
            {
                "id": desk, "name": canonical(f"pc{i:05d}"), "department": f"dept_{i % 10}",
                "generation": 1, "salt": secrets.token_bytes(32), "last_seq": 1,
                "enrolled_at": now - 86400, "revoked_at": None,
                "last_seen": now - rng.uniform(0, 400), "platform": "linux",
                "agent_version": rng.choice(["0.1.0", "0.1.1", "0.2.0"]),
                "users": int(rng.random() < 0.3), "may_start": True, "may_run": True,
                "hw_virt": hw_virt, "hw_virt_held_by": held, "cpus": rng.choice([4, 8, 16]),
                "memory_free_mb": memory // 2, "memory_total_mb": memory, "max_vms": 2,
                "busy_slots": int(i % 4 == 0), "unleased_vms": 0, "policy": "allowed",
            }
        )  # fmt: skip
        if i % 4 == 0:
            vm = TYPES[i % len(TYPES)]
            lease_rows.append(
                {
                    "id": f"l-{i:05d}", "desktop_id": desk, "vm_name": vm["name"],
                    "cpus": vm["cpus"], "memory_mb": vm["memory_mb"], "created_at": now - 600,
                    "start_by": now + 600, "state": "running", "slot": 0,
                }
            )  # fmt: skip
    for j in range(n_declines):
        event_rows.append(
            {
                "at": now - rng.uniform(0, 3500), "desktop_id": f"d-{rng.randrange(n):05d}",
                "vm_name": TYPES[j % len(TYPES)]["name"],
                "reason": rng.choice(["memory", "image_unavailable", "hw_virt", "expired"]),
                "detail": "image vm-type: the minisign signature does not verify " + "x" * 40,
            }
        )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(desktops), rows)
        conn.execute(insert(leases), lease_rows)
        if event_rows:
            conn.execute(insert(decline_events), event_rows)
        conn.execute(
            insert(usage),
            [
                {"department": f"dept_{d}", "vm_name": t["name"], "core_seconds": 3.6e6 * d}
                for d in range(10)
                for t in TYPES
            ],
        )
    engine.dispose()
    coordinator = build(config)
    for k in range(6 * 720):  # six hours of rounds, one every 5 s
        demand = {str(t["name"]): 100 + k % 50 for t in TYPES}
        coordinator.store.apply(
            Allocation(), now - 6 * 3600 + 5 * k, (demand, demand, demand), 86400
        )
    return coordinator


def timed(repeat: int, func: Callable[[], object]) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), result


def bench(backend: str, url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        coordinator = setup(Path(tmp), url, args.desktops, args.declines)
        print(
            f"{backend}: {args.desktops} desktops set up in {time.perf_counter() - started:.1f} s"
        )
        now = time.time()
        store = coordinator.store
        offline = coordinator.config.leases.offline_after_s

        def row(what: str, func: Callable[[], object], *, size: bool = False) -> object:
            median, worst, result = timed(args.repeat, func)
            extra = f", {len(str(result)) / 1024:.0f} KiB" if size else ""
            print(
                f"  {what:<38} median {median * 1000:8.1f} ms, worst {worst * 1000:8.1f} ms{extra}"
            )
            return result

        coordinator.counts = row("Store.counts", lambda: store.counts(now, offline))
        history = store.history(now - 6 * 3600)
        row(
            "dashboard page (4,320 samples)",
            lambda: render_dashboard(coordinator, history, now),
            size=True,
        )
        row("admin summary", coordinator.admin_summary, size=True)
        row("/metrics families", coordinator.metrics_snapshot)
        desks = row(
            "admin desktops (limit 1000)",
            lambda: coordinator.admin_desktops(department=None, limit=1000, offset=0),
            size=True,
        )
        assert isinstance(desks, list)
        row(
            "desktops page (500)",
            lambda: render_desktops(coordinator, desks[:500], None, 0),
            size=True,
        )
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--desktops", type=int, default=20000)
    parser.add_argument("--declines", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {args.desktops} desktops, {args.declines} declines")
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            bench("sqlite", f"sqlite:///{tmp}/bench.db", args)
    if args.backend in ("postgresql", "both"):
        with scratch_database(args.postgres_url) as url:  # its own database, dropped after
            bench("postgresql", url, args)


if __name__ == "__main__":
    main()

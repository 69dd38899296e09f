"""What naming the VMs that run a job costs the coordinator's allocation round, at campus scale.

A round maps each running job's VM address (``StartdPrincipal``) to a desktop and slot through
the grid file's address plan (``GridFile.vm_slot``), picks the leases of those slots
(``claimed_leases``) and trims with them (``allocate(claimed=...)``). This times the three on a
registry of N desktops with 2 slots each, every slot running a VM, half of them running a job,
and demand dropping to a quarter (so the trim revokes three quarters of the VMs). Pure Python:
no database, no HTCondor.

    .venv/bin/python bench/trim_claimed.py [--desktops 12000]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

from cvmc.coordinator.domain.grid import parse_grid
from cvmc.coordinator.domain.leases import DesktopView, LeaseView, allocate, claimed_leases
from cvmc.gridmodel.addressing import tunnel_address, vpn_layout

VM = "its-u11-boinc-20120415"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desktops", type=int, default=12_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n, slots = args.desktops, 2
    instances = [{"name": f"vpn{i}", "port": 1194 + i} for i in range(4)]
    layout = vpn_layout(instances, "10.64.0.0/16", slots)
    raw = {
        "name": "bench",
        "max_vms_per_desktop": slots,
        "vm_types": [{"name": VM, "image": f"{VM}.qcow2", "cpus": 1, "memory_mb": 512}],
        "desktops": [
            {"name": f"pc-{i:05d}", "index": i, "department": f"dept_{i % 40}"} for i in range(n)
        ],
        "vpn_layout": layout,
    }
    grid = parse_grid(raw)
    desktops = [
        DesktopView(f"d-{i}", f"dept_{i % 40}", True, True, True, 2, 8000, name=f"pc-{i:05d}")
        for i in range(n)
    ]
    leases = [
        LeaseView(f"l-{i}-{s}", f"d-{i}", VM, 1, 512, float(i), 1e12, "running", slot=s)
        for i in range(n)
        for s in range(slots)
    ]
    # Half the VMs run a job: every desktop's slot 0.
    addresses = [tunnel_address(layout, slots, i, 0)["address"] for i in range(n)]
    times: dict[str, list[float]] = {"map": [], "claimed": [], "trim": [], "trim_blind": []}
    for _ in range(args.runs):
        fresh = parse_grid(raw)  # its address map is built at its first vm_slot
        t0 = time.perf_counter()
        found = {slot for slot in map(fresh.vm_slot, addresses) if slot is not None}
        t1 = time.perf_counter()
        claimed = claimed_leases(leases, desktops, found)
        t2 = time.perf_counter()
        kwargs = {
            "demand": {VM: len(leases) // 4},
            "types": grid.vm_types,
            "desktops": desktops,
            "leases": leases,
            "now": 2e12,
            "ttl_s": 300.0,
            "max_vms_per_desktop": slots,
            "new_id": lambda: "x",
        }
        result = allocate(**kwargs, claimed=claimed)  # type: ignore[arg-type]
        t3 = time.perf_counter()
        allocate(**kwargs)  # type: ignore[arg-type]
        t4 = time.perf_counter()
        kept_claimed = sum(1 for lease in result.kept(leases) if lease.id in claimed)
        if (len(found), len(claimed), kept_claimed) != (n, n, len(leases) // 4):
            raise SystemExit(  # every job's VM is named, and every VM kept runs a job
                f"wrong answer: {len(found)} slots, {len(claimed)} leases, {kept_claimed} kept"
            )
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            times[key].append(value)
    tracemalloc.start()
    found = {slot for slot in map(grid.vm_slot, addresses) if slot is not None}
    claimed_leases(leases, desktops, found)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    med = {key: statistics.median(values) * 1000 for key, values in times.items()}
    print(
        f"{n} desktops, {len(leases)} running VMs, {len(addresses)} running jobs, demand "
        f"{len(leases) // 4}; median of {args.runs} runs:"
    )
    print(f"  map job addresses to slots (GridFile.vm_slot, first call parses the plan): "
          f"{med['map']:.1f} ms")  # fmt: skip
    print(f"  claimed_leases: {med['claimed']:.1f} ms")
    print(
        f"  allocate with claimed: {med['trim']:.1f} ms; blind (before): {med['trim_blind']:.1f} ms"
    )
    print(f"  Python peak for the mapping and claimed set: {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

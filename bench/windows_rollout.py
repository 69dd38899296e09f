"""Controller-side cost of the windows_desktop role per desktop, at campus scale. Prints
figures; asserts nothing.

1. A desktop's VM identities: the role filters the registry down to the desktop's own entry
   before calling grid_vpn_identities, instead of deriving every identity of the campus and
   selecting its own. Both are timed on a registry of N desktops; a rollout does this once per
   desktop, so the second figure times N is the controller's cost.
2. The preflight verdict (cvmc.gridmodel.preflight.evaluate) per desktop.

Usage: python bench/windows_rollout.py [--desktops 12000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cvmc.gridmodel import addressing, preflight, vpn  # noqa: E402


def timed(func: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--desktops", type=int, default=12000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    grid = yaml.safe_load((ROOT / "inventories/example/group_vars/all/grid.yml").read_text())
    slots = grid["grid_max_vms_per_desktop"]
    layout = addressing.vpn_layout(grid["grid_vpn_instances"], grid["grid_research_network"], slots)
    registry = [
        {"name": f"dept{i % 40:02d}-pc{i:05d}.ad.example.edu", "index": i}
        for i in range(args.desktops)
    ]
    host = registry[-1]["name"]

    def every_then_select() -> object:
        return [i for i in vpn.vpn_identities(registry, layout, slots) if i["desktop"] == host]

    def own_entry_only() -> object:
        return vpn.vpn_identities([e for e in registry if e["name"] == host], layout, slots)

    assert every_then_select() == own_entry_only()
    full = timed(every_then_select, args.repeat)
    own = timed(own_entry_only, args.repeat)
    report = json.loads((ROOT / "tests/windows/samples/optiplex-7090-win11-ready.json").read_text())
    verdict = timed(
        lambda: [
            preflight.evaluate(
                report,
                vm_types=grid["grid_vm_types"],
                reserve_mb=1024,
                desktop_min_memory_mb=8192,
                required_disk_mb=51200,
                min_os_build=19045,
            )
            for _ in range(1000)
        ],
        args.repeat,
    )
    n = args.desktops
    print(f"desktops in the registry: {n}")
    print(
        f"identities, every desktop then select: {full * 1000:.1f} ms per desktop, "
        f"{full * n / 60:.1f} min for a rollout of {n}"
    )
    print(
        f"identities, own entry only (the role):  {own * 1000:.2f} ms per desktop, "
        f"{own * n:.1f} s for a rollout of {n}"
    )
    print(f"preflight verdict: {verdict / 1000 * 1e6:.1f} us per desktop")


if __name__ == "__main__":
    main()

"""Controller-side cost of the windows_desktop role per desktop, at campus scale. Prints
figures; asserts nothing.

1. A desktop's VM identities: the role reads grid_desktop_vm_identities, which derives only
   the desktop's own registry entry (cvmc.gridmodel.plan.plan_identities with desktop=...),
   instead of deriving every identity of the campus and selecting its own. Both are timed on
   a registry of N desktops; a rollout does this once per desktop, so the second figure
   times N is the controller's cost.
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

from cvmc.gridmodel import plan, preflight, vpn  # noqa: E402


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
    model = {k.removeprefix("grid_"): v for k, v in grid.items()}
    grid_plan = plan.grid_plan(
        {**model, "vpn_pki_dir": "/etc/openvpn/grid/pki", "vpn_pki_host": "pki"}
    )
    slots, layout = grid_plan["slots"], grid_plan["layout"]
    registry = [
        {"name": f"dept{i % 40:02d}-pc{i:05d}.ad.example.edu", "index": i}
        for i in range(args.desktops)
    ]
    host = str(registry[-1]["name"])

    def every_then_select() -> object:
        return [i for i in vpn.vpn_identities(registry, layout, slots) if i["desktop"] == host]

    def own_entry_only() -> object:
        return plan.plan_identities(grid_plan, registry, desktop=host)

    assert every_then_select() == [
        {k: v for k, v in i.items() if k not in ("cert", "key")}
        for i in plan.plan_identities(grid_plan, registry, desktop=host)
    ]
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

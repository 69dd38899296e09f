"""How fast the grid model is checked and derived at campus scale. Prints figures; asserts nothing.

1. The pure functions (cvmc.gridmodel) on the example campus grown to N desktops: a full
   validation, every tunnel address, and registering a batch of new desktops.
2. `ansible-playbook playbooks/validate.yml` on a generated inventory of N desktops: the cost
   an operator sees before every run of site.yml.

Usage: python bench/grid_model.py [--desktops 12000] [--batch 500] [--repeat 5] [--no-ansible]
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from lab_model import inventory_vars, model_from_vars  # noqa: E402

from cvmc.gridmodel import addressing  # noqa: E402
from cvmc.gridmodel.validate import model_problems  # noqa: E402


def desktop_names(count: int) -> list[str]:
    return [f"dept{i % 40:02d}-pc{i:05d}.ad.example.edu" for i in range(count)]


def timed(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds over `repeat` runs, and peak traced memory (MiB) of one run."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def bench_pure(desktops: int, batch: int, repeat: int) -> list[tuple[str, float, float]]:
    names = desktop_names(desktops)
    grid_vars = inventory_vars("example")
    registry = [{"name": n, "index": i} for i, n in enumerate(names)]
    grid_vars["grid_desktop_registry"] = registry
    model = model_from_vars(grid_vars, names)
    assert model_problems(model) == [], model_problems(model)
    layout = addressing.vpn_layout(
        grid_vars["grid_vpn_instances"], grid_vars["grid_research_network"], 2
    )
    new_names = names + desktop_names(desktops + batch)[desktops:]
    rows = []
    seconds, peak = timed(lambda: model_problems(copy.deepcopy(model)), repeat)
    rows.append((f"validate the whole model ({desktops} desktops)", seconds, peak))
    seconds, peak = timed(lambda: addressing.tunnel_addresses(registry, layout, 2), repeat)
    rows.append((f"tunnel addresses ({desktops} desktops x 2 slots)", seconds, peak))
    seconds, peak = timed(lambda: addressing.assign_indices(registry, new_names), repeat)
    rows.append((f"register {batch} new desktops into {desktops}", seconds, peak))
    return rows


def bench_ansible(desktops: int) -> list[tuple[str, float, float]]:
    """Wall seconds and peak RSS (MiB) of ansible-playbook on an inventory of N desktops.

    The baseline is a play that only loads that inventory and prints one line, so the
    difference is what validation itself costs.
    """
    names = desktop_names(desktops)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inv = Path(tmp) / "inventory"
        shutil.copytree(ROOT / "inventories/example/group_vars", inv / "group_vars")
        members: dict[str, None] = dict.fromkeys(names)
        # The example's PKI host (its coordinator) is a host of the inventory, as the gate asks.
        hosts = {
            "all": {
                "children": {
                    "desktops": {"hosts": members},
                    "grid_coordinator": {"hosts": {"coordinator.grid.example.edu": None}},
                }
            }
        }
        (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
        registry = {"grid_desktop_registry": [{"name": n, "index": i} for i, n in enumerate(names)]}
        (inv / "group_vars/all/desktop_registry.yml").write_text(yaml.safe_dump(registry))
        baseline = Path(tmp) / "baseline.yml"
        baseline.write_text(
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            "    - ansible.builtin.debug: {msg: loaded}\n"
        )
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
        ansible = str(Path(sys.executable).parent / "ansible-playbook")
        for label, playbook in (
            ("baseline: load the inventory, one debug task", baseline),
            ("playbooks/validate.yml", ROOT / "playbooks/validate.yml"),
        ):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.Popen(
                [ansible, "-i", str(inv), str(playbook)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            out, _ = proc.communicate()
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{playbook} failed:\n{out[-3000:]}")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            rows.append((f"{label} ({desktops} desktops)", seconds, cpu))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desktops", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-ansible", action="store_true")
    args = parser.parse_args()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(f"{'measure':<52} {'median s':>10} {'peak MiB':>10}")
    for label, seconds, peak in bench_pure(args.desktops, args.batch, args.repeat):
        print(f"{label:<52} {seconds:>10.4f} {peak:>10.1f}")
    if not args.no_ansible:
        print(f"\n{'ansible-playbook':<60} {'wall s':>8} {'cpu s':>8}")
        for label, seconds, cpu in bench_ansible(args.desktops):
            print(f"{label:<60} {seconds:>8.2f} {cpu:>8.2f}")


if __name__ == "__main__":
    main()

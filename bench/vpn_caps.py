"""Accuracy of the per-VM caps with 1, 3 and 6 VMs at once, and the gateway's CPU per GB.

It brings up the VPN scenario's containers with six research VMs (bench/vpn_caps/molecule,
which runs molecule/vpn's playbooks), then, for each count of VMs, runs iperf3 from that many
VMs to the pool host at the same time, down (pool to VM) and then up (VM to pool). For each VM
it prints measured / configured. For each round it prints the gateway container's CPU seconds
(its cgroup's cpuacct) per GB moved through the tunnels. Prints figures; asserts nothing.

Usage: python bench/vpn_caps.py [--seconds 10] [--keep] [--no-create]
Needs root and podman (scripts/testhosts.sh prepares both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench" / "vpn_caps"
sys.path.insert(0, str(ROOT / "src"))

from cvmc.gridmodel import vpn  # noqa: E402

GATEWAY = "vpn-gw"


def molecule(*args: str) -> None:
    # molecule starts ansible-config, ansible-galaxy and ansible-playbook by name: the venv's
    # bin goes first on PATH, so `.venv/bin/python bench/vpn_caps.py` needs no activated venv.
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
    }
    binary = str(Path(venv_bin) / "molecule")
    subprocess.run([binary, *args], cwd=HERE, env=env, check=True, stdout=subprocess.DEVNULL)


def scenario() -> dict[str, Any]:
    # The grid role's defaults first: the lab leaves out what they hold.
    lab: dict[str, Any] = yaml.safe_load((ROOT / "roles/grid/defaults/main.yml").read_text())
    for path in sorted((ROOT / "inventories/lab/group_vars/all").glob("*.yml")):
        lab.update(yaml.safe_load(path.read_text()) or {})
    lab.update(yaml.safe_load((ROOT / "molecule/vpn/vars/scenario.yml").read_text()))
    return lab


def caps_by_vm(model: dict[str, Any]) -> dict[str, tuple[str, vpn.CapClass]]:
    """Each VM's cap: its identity's class (grid_desktop_classes), never its VM type's."""
    classes = vpn.cap_classes(model["grid_bandwidth_classes"])
    vms = model["vpn_test_vms"].values()
    identities = [{"cn": vm["cn"], "desktop": vm["cn"].rsplit("-vm", 1)[0]} for vm in vms]
    of_cn = vpn.identity_classes(
        identities,
        model.get("grid_desktop_classes", {}),
        list(classes),
        model["grid_bandwidth_default_class"],
    )
    return {
        host: (of_cn[vm["cn"]], classes[of_cn[vm["cn"]]])
        for host, vm in model["vpn_test_vms"].items()
    }


def gateway_cpu_seconds() -> float:
    """CPU time of everything in the gateway container (its cgroup), in seconds."""
    inspect = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.CgroupPath}}", GATEWAY],
        capture_output=True,
        text=True,
        check=True,
    )
    path = inspect.stdout.strip()
    for candidate in (
        Path("/sys/fs/cgroup/cpuacct") / path.lstrip("/") / "cpuacct.usage",
        Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.stat",
    ):
        if candidate.exists():
            text = candidate.read_text()
            if candidate.name == "cpuacct.usage":
                return int(text) / 1e9
            stats = dict(line.split() for line in text.splitlines())
            return int(stats["usage_usec"]) / 1e6
    raise SystemExit(f"no cgroup CPU accounting found for {GATEWAY} ({path})")


def run_round(hosts: list[str], model: dict[str, Any], seconds: int, reverse: bool) -> list[Any]:
    procs = []
    for host in hosts:
        port = str(model["vpn_test_vms"][host]["iperf_port"])
        argv = ["podman", "exec", host, "iperf3", "--client", model["vpn_test_pool_host"]]
        argv += ["--port", port, "--time", str(seconds), "--omit", "2", "--json"]
        if reverse:
            argv.append("--reverse")
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        results.append(json.loads(out)["end"]["sum_received"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="iperf3 duration per round")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--no-create", action="store_true", help="reuse running containers")
    args = parser.parse_args()

    model = scenario()
    caps = caps_by_vm(model)
    hosts = sorted(model["vpn_test_vms"])
    if not args.no_create:
        subprocess.run(["bash", str(ROOT / "scripts/testhosts.sh")], check=True)
        molecule("destroy")
        for step in ("create", "prepare", "converge"):
            molecule(step)
    try:
        print("VMs dir  vm       class           cap     measured  ratio")
        totals = []
        for count in (1, 3, 6):
            for reverse in (True, False):
                direction = "down" if reverse else "up"
                cpu_before = gateway_cpu_seconds()
                started = time.monotonic()
                results = run_round(hosts[:count], model, args.seconds, reverse)
                wall = time.monotonic() - started
                cpu = gateway_cpu_seconds() - cpu_before
                moved = sum(r["bytes"] for r in results)
                totals.append((count, direction, cpu, moved, wall))
                for host, result in zip(hosts[:count], results, strict=True):
                    name, cap = caps[host]
                    bits = cap["down_bits"] if reverse else cap["up_bits"]
                    measured = result["bits_per_second"]
                    print(
                        f"{count:>3} {direction:<4} {host:<8} {name:<9} {bits / 1e6:>6.1f}Mb/s "
                        f"{measured / 1e6:>8.2f}Mb/s {measured / bits:>6.3f}"
                    )
        print()
        print("VMs dir   GB moved  gw CPU s  CPU s/GB  wall s")
        for count, direction, cpu, moved, wall in totals:
            gb = moved / 1e9
            print(f"{count:>3} {direction:<4} {gb:>9.3f} {cpu:>9.2f} {cpu / gb:>9.1f} {wall:>7.1f}")
    finally:
        if not args.keep:
            molecule("destroy")


if __name__ == "__main__":
    main()

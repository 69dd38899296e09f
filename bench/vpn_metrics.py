"""What one run of the gateway's tunnel exporter (roles/openvpn_gateway/files/grid_vpn_metrics.py,
every minute from grid-vpn-metrics.timer) costs at the largest slice a VPN instance can have
(a /16: 65,534 clients): reading the status file, mapping the caps' drop counters to identities
and rendering the textfile. Runs in a child process per size, so that its peak RSS is its own.
Prints figures; asserts nothing.

Usage: python bench/vpn_metrics.py [--clients 1000 20000 65534] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "roles/openvpn_gateway/files/grid_vpn_metrics.py"
HEADER = (
    "HEADER,CLIENT_LIST,Common Name,Real Address,Virtual Address,Virtual IPv6 Address,"
    "Bytes Received,Bytes Sent,Connected Since,Connected Since (time_t),Username,Client ID,"
    "Peer ID,Data Channel Cipher"
)


def status_text(clients: int) -> str:
    """A status-version 2 file as OpenVPN 2.6 writes it, with `clients` clients in 10.64.0.0/16."""
    net = ipaddress.IPv4Network("10.64.0.0/16")
    lines = ["TITLE,OpenVPN 2.6.14 x86_64-pc-linux-gnu", "TIME,2026-12-05 12:00:00,1796472000"]
    lines.append(HEADER)
    names = [f"desktop-{i // 2:05d}-vm{i % 2}" for i in range(clients)]
    for i, name in enumerate(names):
        addr = net.network_address + 2 + i
        lines.append(
            f"CLIENT_LIST,{name},198.51.100.{i % 250}:{40000 + i % 20000},{addr},,"
            f"{i * 1000003},{i * 7000001},2026-12-05 11:00:00,1796468400,UNDEF,{i},{i},AES-256-GCM"
        )
    lines.append(
        "HEADER,ROUTING_TABLE,Virtual Address,Common Name,Real Address,Last Ref,Last Ref (time_t)"
    )
    for i, name in enumerate(names):
        addr = net.network_address + 2 + i
        lines.append(f"ROUTING_TABLE,{addr},{name},198.51.100.{i % 250}:40000,x,1796471998")
    lines += ["GLOBAL_STATS,Max bcast/mcast queue length,0", "GLOBAL_STATS,dco_enabled,0", "END"]
    return "\n".join(lines) + "\n"


def child(clients: int, repeat: int) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("grid_vpn_metrics", SCRIPT)
    assert spec
    assert spec.loader
    metrics = importlib.util.module_from_spec(spec)
    sys.modules["grid_vpn_metrics"] = metrics
    spec.loader.exec_module(metrics)
    text = status_text(clients)
    # Every client's cap class dropped something, both ways: the largest textfile.
    drops = {minor: minor for minor in range(2, clients + 2)}
    best_parse = best_render = float("inf")
    out = ""
    for _ in range(repeat):
        start = time.perf_counter()
        status = metrics.parse_status(text)
        mid = time.perf_counter()
        inst = metrics.Instance("r0", "10.64.0.0/16", 65534, status, {"down": drops, "up": drops})
        out = metrics.render([inst], {"crl": 1.8e9, "server": 1.9e9, "ca": 2e9}, time.time())
        end = time.perf_counter()
        best_parse, best_render = min(best_parse, mid - start), min(best_render, end - mid)
    return {
        "status_mib": len(text) / 2**20,
        "parse_s": best_parse,
        "render_s": best_render,
        "textfile_mib": len(out) / 2**20,
        "samples": sum(1 for line in out.splitlines() if not line.startswith("#")),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 20000, 65534])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeat)))
        return 0
    print("clients  status MiB  parse s  render s  textfile MiB  samples  peak RSS MiB")
    for clients in args.clients:
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(clients), "--repeat", str(args.repeat)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(done.stdout)
        print(
            f"{clients:7d}  {r['status_mib']:10.1f}  {r['parse_s']:7.3f}  {r['render_s']:8.3f}"
            f"  {r['textfile_mib']:12.1f}  {r['samples']:7d}  {r['peak_rss_mib']:12.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

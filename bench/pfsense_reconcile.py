"""pfSense backend: planning at campus scale, and a converge over HTTP against the double.

Prints figures; asserts nothing. (1) In memory: render every pfSense object for 12,000
desktops x 2 slots (24,000 client-specific overrides) with the role's filter, then plan the
overrides against a firewall that already holds them all (the no-change run). (2) Over real
HTTP on loopback against tests/pfsense/contract_server.py (every request contract-checked):
a first converge and a second, no-change run for --desktops desktops, with request counts.
A real pfSense answers more slowly than the double; the request counts carry over.

Usage: python bench/pfsense_reconcile.py [--desktops 500]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from pfsense.conftest import API_KEY, model_inputs, rest, role_filter  # noqa: E402
from pfsense.contract_server import Firewall, serve  # noqa: E402

PKI = {
    "ca_crt": "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
    "server_crt": "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
    "server_key": "-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n",
    "crl": "-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n",
    "tls_crypt": "-----BEGIN OpenVPN Static key V1-----\n00\n-----END OpenVPN Static key V1-----\n",
}
SECRETS = {"server_key": PKI["server_key"], "tls_crypt": PKI["tls_crypt"]}
OWNER = "[grid:test-grid]"


def _objects(desktops: int) -> dict[str, Any]:
    return dict(role_filter.gateway_objects(model_inputs(PKI, desktops=desktops)))


def _render_and_plan(desktops: int) -> tuple[float, float]:
    start = time.perf_counter()
    objects = _objects(desktops)
    render = time.perf_counter() - start
    csos = rest.decode_refs(objects["openvpn_cso"], SECRETS)
    resolved = [rest.resolve(o, lambda _ref: "1")[0] for o in csos]
    current = [{**o, "id": i} for i, o in enumerate(copy.deepcopy(resolved))]
    start = time.perf_counter()
    plan = rest.plan_kind(rest.KIND_BY_NAME["openvpn_cso"], resolved, current, OWNER)
    planned = time.perf_counter() - start
    assert not plan.changed
    return render, planned


def in_memory(desktops: int = 12000) -> None:
    runs = [_render_and_plan(desktops) for _ in range(3)]
    tracemalloc.start()
    _render_and_plan(desktops)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"identities + render every object, {desktops} desktops ({2 * desktops} overrides): "
        f"median {statistics.median(r for r, _ in runs):.2f} s"
    )
    print(
        f"plan {2 * desktops} overrides, nothing to change: "
        f"median {statistics.median(p for _, p in runs):.2f} s; peak traced memory "
        f"{peak / 2**20:.1f} MiB (identities + render + plan)"
    )


def over_http(desktops: int) -> None:
    objects = {k: rest.decode_refs(v, SECRETS) for k, v in _objects(desktops).items()}
    firewall = Firewall(api_key=API_KEY)
    with serve(firewall) as url:
        for label in ("first converge", "second run (no change)"):
            client = rest.PfsenseClient(url, API_KEY, rest.OpenUrlTransport())
            start = time.perf_counter()
            result = rest.Reconciler(client, OWNER).run(copy.deepcopy(objects))
            wall = time.perf_counter() - start
            print(
                f"{label}, {desktops} desktops ({2 * desktops} overrides): {wall:.2f} s, "
                f"{result.requests} requests, changed={result.changed}, "
                f"applied={result.applied}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desktops", type=int, default=500)
    args = parser.parse_args()
    in_memory()
    over_http(args.desktops)


if __name__ == "__main__":
    main()

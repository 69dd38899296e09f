"""Live: the pfsense_* modules' client and reconciler against a real pfSense firewall.

Runs only when PFSENSE_URL and PFSENSE_API_KEY name a firewall with pfrest 2.4.0 or later
(PFSENSE_CA_PATH: the CA of its web certificate, if not in the system store). It manages its
own limiters and alias under the owner ``grid:live-test`` (nothing of the grid's), converges
twice (the second run must change nothing), then removes them again and applies.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from pfsense.conftest import rest

pytestmark = pytest.mark.live

URL = os.environ.get("PFSENSE_URL", "")
KEY = os.environ.get("PFSENSE_API_KEY", "")
needs_firewall = pytest.mark.skipif(
    not (URL and KEY), reason="PFSENSE_URL and PFSENSE_API_KEY are not set: no real pfSense to test"
)
OWNER = "[grid:live-test]"


def _run(objects: dict[str, list[dict[str, Any]]]) -> Any:
    transport = rest.OpenUrlTransport(ca_path=os.environ.get("PFSENSE_CA_PATH") or None)
    client = rest.PfsenseClient(URL, KEY, transport)
    return rest.Reconciler(client, OWNER).run(objects)


@needs_firewall
def test_live_converge_twice_then_remove() -> None:
    objects: dict[str, list[dict[str, Any]]] = {
        "limiter": [
            {
                "name": "gridlive_in",
                "enabled": True,
                "mask": "srcaddress",
                "maskbits": 32,
                "description": f"{OWNER} up",
                "aqm": "droptail",
                "sched": "wf2q+",
                "bandwidth": [{"bw": 10, "bwscale": "Mb"}],
            },
            {
                "name": "gridlive_out",
                "enabled": True,
                "mask": "dstaddress",
                "maskbits": 32,
                "description": f"{OWNER} down",
                "aqm": "droptail",
                "sched": "wf2q+",
                "bandwidth": [{"bw": 20, "bwscale": "Mb"}],
            },
        ],
        "alias": [
            {
                "name": "gridlive_campus",
                "type": "network",
                "descr": f"{OWNER} campus",
                "address": ["192.0.2.0/24"],
            }
        ],
    }
    try:
        first = _run(objects)
        assert first.version
        second = _run(objects)
        assert not second.changed, second.after
    finally:
        removed = _run({"limiter": [], "alias": []})
    assert not _run({"limiter": [], "alias": []}).changed
    assert removed.applied or not first.changed

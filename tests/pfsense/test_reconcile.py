"""The pfsense_* modules' client and reconciler against the contract double, over real HTTP.

Contract tests: the double rejects any request outside pfrest v2.4.0's published contract, so
every request these runs send has been checked against it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pfsense.conftest import API_KEY, model_inputs, rest, role_filter
from pfsense.contract_server import Contract, Firewall

OWNER = "[grid:test-grid]"


def reconcile(
    url: str,
    objects: dict[str, Any],
    *,
    key: str = API_KEY,
    check: bool = False,
    min_version: str = "2.4.0",
) -> Any:
    client = rest.PfsenseClient(url, key, rest.OpenUrlTransport(timeout=10))
    secrets = objects.get("__secrets__", {})
    return rest.Reconciler(client, OWNER, check_mode=check, min_version=min_version).run(
        {
            kind: rest.decode_refs(copy.deepcopy(items), secrets)
            for kind, items in objects.items()
            if kind != "__secrets__"
        }
    )


def without_server_fields(view: Any) -> Any:
    if isinstance(view, dict):
        return {k: without_server_fields(v) for k, v in view.items() if k not in ("tracker", "id")}
    if isinstance(view, list):
        return [without_server_fields(v) for v in view]
    return view


def objects_for(pki: dict[str, str], **over: Any) -> dict[str, Any]:
    objects = dict(role_filter.gateway_objects(model_inputs(pki, **over)))
    return {
        **objects,
        "__secrets__": {"server_key": pki["server_key"], "tls_crypt": pki["tls_crypt"]},
    }


def test_converges_then_reports_no_change(
    pf_url: str, firewall: Firewall, pki: dict[str, str], contract: Contract
) -> None:
    objects = objects_for(pki)
    first = reconcile(pf_url, objects)
    assert first.changed
    assert first.applied
    assert firewall.pending(contract) == []
    store = firewall.store
    assert len(store["OpenVPNServer"]) == 2
    assert len(store["OpenVPNClientSpecificOverride"]) == 6  # 3 desktops x 2 slots
    cso = {o["common_name"]: o for o in store["OpenVPNClientSpecificOverride"]}
    vpnids = {o["description"].split()[-1]: str(o["vpnid"]) for o in store["OpenVPNServer"]}
    # desktop 1 is on instance rvpn1 (index mod 2) at offset 2 of its /17 slice
    assert cso["lab-desktop-1-vm0"]["tunnel_network"] == "10.64.128.2/17"
    assert cso["lab-desktop-1-vm0"]["server_list"] == [vpnids["rvpn1"]]
    limiters = {o["name"]: o for o in store["TrafficShaperLimiter"]}
    assert limiters["grid_standard_in"]["mask"] == "srcaddress"
    assert limiters["grid_standard_out"]["mask"] == "dstaddress"
    assert limiters["grid_standard_in"]["bandwidth"][0] | {"bwsched": "none"} == {
        "bw": 10,
        "bwscale": "Mb",
        "bwsched": "none",
    }
    assert limiters["grid_bulk_out"]["bandwidth"][0]["bw"] == 100
    rules = store["FirewallRule"]
    assert rules[0]["source"] == "grid_cap_bulk"
    assert rules[0]["dnpipe"] == "grid_bulk_in"
    assert [r["type"] for r in rules][-1] == "block"
    assert rules[-1]["destination"] == "any"
    campus = next(r for r in rules if r["destination"] == "grid_campus")
    assert campus["type"] == "block"
    assert firewall.singletons["OutboundNATMode"]["mode"] == "hybrid"
    crl = store["CertificateRevocationList"][0]
    assert crl["caref"] == store["CertificateAuthority"][0]["refid"]

    requests_before = len(firewall.requests)
    second = reconcile(pf_url, objects)
    assert not second.changed
    assert not second.applied
    writes = [r for r in firewall.requests[requests_before:] if r[0] != "GET"]
    assert writes == []


def test_removing_a_desktop_removes_its_overrides_and_updates_the_crl(
    pf_url: str, firewall: Firewall, pki: dict[str, str]
) -> None:
    reconcile(pf_url, objects_for(pki))
    revoked = {**pki, "crl": "-----BEGIN X509 CRL-----\nMAB=\n-----END X509 CRL-----\n"}
    fewer = objects_for(revoked, desktops=3, desktop_classes={})
    fewer["openvpn_cso"] = [
        o for o in fewer["openvpn_cso"] if not o["common_name"].startswith("lab-desktop-2-")
    ]
    result = reconcile(pf_url, fewer)
    assert result.changed
    assert result.applied
    names = sorted(o["common_name"] for o in firewall.store["OpenVPNClientSpecificOverride"])
    assert names == [
        "lab-desktop-0-vm0",
        "lab-desktop-0-vm1",
        "lab-desktop-1-vm0",
        "lab-desktop-1-vm1",
    ]
    assert firewall.store["CertificateRevocationList"][0]["text"] == revoked["crl"]
    # the bulk class lost its only desktop: its alias and rules are gone, its limiters stay
    assert not any(a["name"] == "grid_cap_bulk" for a in firewall.store["FirewallAlias"])
    assert not reconcile(pf_url, fewer).changed


def test_check_mode_changes_nothing(pf_url: str, firewall: Firewall, pki: dict[str, str]) -> None:
    result = reconcile(pf_url, objects_for(pki), check=True)
    assert result.changed
    assert not result.applied
    assert all(not items for items in firewall.store.values())
    assert all(r[0] == "GET" for r in firewall.requests)
    assert any("limiter grid_standard_in" in line for line in result.after)
    assert not any("BEGIN PRIVATE KEY" in line for line in result.after)  # secrets redacted


def test_hand_made_limiter_with_our_name_is_refused_naming_it(
    pf_url: str, firewall: Firewall, pki: dict[str, str]
) -> None:
    firewall.store["TrafficShaperLimiter"] = [
        {
            "name": "grid_standard_in",
            "description": "made by hand",
            "mask": "none",
            "aqm": "droptail",
            "sched": "wf2q+",
            "number": 1,
            "bandwidth": [{"bw": 1, "bwscale": "Mb"}],
        }
    ]
    with pytest.raises(
        rest.PfsenseError, match=r"limiter 'grid_standard_in' \(id 0\) exists but is not managed"
    ):
        reconcile(pf_url, objects_for(pki))
    assert all(r[0] == "GET" for r in firewall.requests)  # refused before any write


def test_hand_made_rule_using_our_limiter_is_refused_naming_it(
    pf_url: str, firewall: Firewall, pki: dict[str, str], contract: Contract
) -> None:
    reconcile(pf_url, objects_for(pki))
    firewall.store["FirewallRule"].append(
        {
            "type": "pass",
            "interface": ["lan"],
            "ipprotocol": "inet",
            "source": "any",
            "destination": "any",
            "descr": "speed test",
            "dnpipe": "grid_standard_in",
            "tracker": 1,
        }
    )
    firewall.apply(contract)
    with pytest.raises(
        rest.PfsenseError, match=r"rule .*'speed test' uses the grid's limiter 'grid_standard_in'"
    ):
        reconcile(pf_url, objects_for(pki, desktop_classes={}))


def test_failure_part_way_leaves_the_applied_firewall_and_undoes_staged_writes(
    pf_url: str, firewall: Firewall, pki: dict[str, str], contract: Contract
) -> None:
    reconcile(pf_url, objects_for(pki))
    applied_before = copy.deepcopy(firewall.applied)
    staged_before = copy.deepcopy(firewall.firewall_view(contract))
    csos_before = copy.deepcopy(firewall.store["OpenVPNClientSpecificOverride"])
    # a new desktop, a new cap and a new pool service: overrides are created (they apply at
    # once on pfSense), a limiter is patched, aliases are created and our rules are deleted to
    # be re-created in their new order; then creating a rule fails
    services = [
        *model_inputs(pki)["pool_services"],
        {"name": "cvmfs", "addresses": ["10.10.20.30"], "tcp": [3128]},
    ]
    changed = objects_for(
        pki,
        desktops=4,
        pool_services=services,
        classes=[
            {"name": "standard", "down": "30mbit", "up": "10mbit"},
            {"name": "bulk", "down": "100mbit", "up": "50mbit"},
        ],
    )
    firewall.fail_on = ("POST", "/api/v2/firewall/rule")
    with pytest.raises(rest.PfsenseError, match=r"HTTP 500.*not applied"):
        reconcile(pf_url, changed)
    assert firewall.applied == applied_before  # never applied
    # staged writes undone (re-created rules get a new tracker from the server, as on pfSense)
    assert without_server_fields(firewall.firewall_view(contract)) == without_server_fields(
        staged_before
    )
    assert firewall.store["OpenVPNClientSpecificOverride"] == csos_before
    assert not any(
        r[0] == "POST" and r[1] == "/api/v2/firewall/apply" for r in firewall.requests[-40:]
    )
    # and the next run gets there
    assert reconcile(pf_url, changed).applied


def test_wrong_api_key_names_the_setting(pf_url: str) -> None:
    with pytest.raises(rest.PfsenseError, match=r"pfsense_gateway_api_key: .*refused the API key"):
        reconcile(pf_url, {}, key="not-the-key")


def test_old_api_version_is_refused(pf_url: str, firewall: Firewall) -> None:
    firewall.version = "v2.3.1"
    with pytest.raises(rest.PfsenseError, match=r"REST API v2\.3\.1, older than 2\.4\.0"):
        reconcile(pf_url, {})
    assert firewall.requests == [("GET", "/api/v2/system/restapi/version", 0)]


def test_plan_re_creates_rules_when_their_order_changes() -> None:
    kind = rest.KIND_BY_NAME["rule"]
    a = {"descr": f"{OWNER} a", "type": "pass"}
    b = {"descr": f"{OWNER} b", "type": "pass"}
    current = [{**b, "id": 0}, {**a, "id": 1}, {"descr": "hand", "id": 2}]
    plan = rest.plan_kind(kind, [a, b], current, OWNER)
    assert [o["descr"] for o in plan.create] == [a["descr"], b["descr"]]
    assert sorted(o["id"] for o in plan.delete) == [0, 1]  # never the hand-made one
    same = rest.plan_kind(kind, [b, a], current, OWNER)
    assert not same.changed

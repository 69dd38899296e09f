"""The contract double itself: it must reject what pfrest v2.4.0's contract forbids.

These tests sweep every request model of the contract (not a hand-picked list), so a module
request that breaks the contract cannot pass the module tests unnoticed.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from pfsense.conftest import API_KEY
from pfsense.contract_server import Contract, Firewall, load_contract

CONTRACT = Contract(load_contract())
BODY_MODELS = sorted(
    {
        spec["body"]
        for methods in CONTRACT.endpoints.values()
        for spec in methods.values()
        if isinstance(spec.get("body"), str)
    }
)
WRONG = {
    "string": 12,
    "integer": "12",
    "number": "1.5",
    "boolean": "true",
    "array": "x",
    "object": [],
}


def _fields(model: str) -> dict[str, Any]:
    return dict(CONTRACT.models[model]["fields"])


@pytest.mark.parametrize("model", BODY_MODELS)
def test_every_unconditional_required_field_is_demanded(model: str) -> None:
    required = [
        n for n, s in _fields(model).items() if s.get("required") and not s.get("available_when")
    ]
    errors = CONTRACT.check_body(model, {})
    for name in required:
        assert any(e.startswith(f"{name}: required") for e in errors), (model, name, errors)


@pytest.mark.parametrize("model", BODY_MODELS)
def test_unknown_fields_are_refused(model: str) -> None:
    assert "no_such_field: unknown field for " + model in CONTRACT.check_body(
        model, {"no_such_field": 1}
    )


@pytest.mark.parametrize("model", BODY_MODELS)
def test_every_field_refuses_a_wrong_type_and_readonly_fields_are_refused(model: str) -> None:
    for name, spec in _fields(model).items():
        errors = CONTRACT.check_body(model, {name: WRONG[spec["type"]]})
        mine = [e for e in errors if e.startswith(f"{name}:")]
        if spec.get("readonly"):
            assert f"{name}: readonly, set by the server" in mine
        else:
            assert any("is not of type" in e for e in mine), (model, name, errors)


@pytest.mark.parametrize("model", BODY_MODELS)
def test_every_enum_refuses_a_value_outside_its_set(model: str) -> None:
    for name, spec in _fields(model).items():
        if spec.get("readonly") or not ("enum" in spec or "items_enum" in spec):
            continue
        bad: Any = (
            ["not-in-the-set"]
            if "items_enum" in spec
            else (987654 if spec["type"] == "integer" else "not-in-the-set")
        )
        errors = CONTRACT.check_body(model, {name: bad})
        assert any(e.startswith(name) and "is not one of" in e for e in errors), (
            model,
            name,
            errors,
        )


def test_nested_models_nulls_constraints_and_conditions_are_checked() -> None:
    model = "PostFirewallTrafficShaperLimiterEndpointRequest"
    base = {"name": "x", "aqm": "droptail", "sched": "wf2q+"}
    assert CONTRACT.check_body(model, base) == []
    assert any(
        "bandwidth[0].bwscale: 'Gb' is not one of" in e
        for e in CONTRACT.check_body(model, {**base, "bandwidth": [{"bw": 1, "bwscale": "Gb"}]})
    )
    assert "bandwidth[0].bw: required by TrafficShaperLimiterBandwidthInner" in CONTRACT.check_body(
        model, {**base, "bandwidth": [{"bwscale": "Mb"}]}
    )
    assert "maskbits: 33 is above the maximum 32" in CONTRACT.check_body(
        model, {**base, "mask": "srcaddress", "maskbits": 33}
    )
    assert any(
        e.startswith("maskbits: only applies when")
        for e in CONTRACT.check_body(model, {**base, "maskbits": 24})
    )
    assert "qlimit: null is not allowed" not in CONTRACT.check_body(
        model, {**base, "qlimit": None}
    )  # nullable
    assert "name: null is not allowed" in CONTRACT.check_body(model, {**base, "name": None})
    # a field required only under a condition: target of outbound NAT when nonat is false
    nat = {"interface": "wan", "source": "any", "destination": "any", "nonat": False}
    assert (
        "target: required by PostFirewallNATOutboundMappingEndpointRequest"
        in CONTRACT.check_body("PostFirewallNATOutboundMappingEndpointRequest", nat)
    )
    assert (
        CONTRACT.check_body("PostFirewallNATOutboundMappingEndpointRequest", {**nat, "nonat": True})
        == []
    )


def _http(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str = API_KEY,
    ctype: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = Request(  # noqa: S310 - http to the loopback double
        url + path, data=data, method=method, headers={"X-API-Key": key, "Content-Type": ctype}
    )
    try:
        with urlopen(request, timeout=5) as response:  # noqa: S310 - http to the loopback double
            return response.status, json.loads(response.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read())


LIMITER = {
    "name": "t_in",
    "aqm": "droptail",
    "sched": "wf2q+",
    "mask": "srcaddress",
    "bandwidth": [{"bw": 5, "bwscale": "Mb"}],
    "description": "x",
}


def test_http_rejections(pf_url: str, firewall: Firewall) -> None:
    path = "/api/v2/firewall/traffic_shaper/limiter"
    assert _http(pf_url, "GET", "/api/v2/firewall/nothing_here")[0] == 404
    assert _http(pf_url, "PUT", path, LIMITER)[0] == 405
    assert _http(pf_url, "GET", "/api/v2/system/restapi/version", key="wrong")[0] == 401
    assert _http(pf_url, "POST", path, LIMITER, ctype="text/plain")[0] == 415
    assert _http(pf_url, "POST", path, b"{not json")[0] == 400
    status, answer = _http(pf_url, "POST", path, {**LIMITER, "sched": "fastest"})
    assert status == 400
    assert "sched: 'fastest' is not one of" in answer["message"]
    assert _http(pf_url, "POST", path, {**LIMITER, "number": 4})[0] == 400  # readonly
    assert _http(pf_url, "GET", path)[0] == 400  # singular GET needs its id
    assert _http(pf_url, "GET", path + "?id=0&colour=red")[0] == 400  # unknown query parameter
    assert _http(pf_url, "PATCH", path, {"description": "no id"})[0] == 400
    assert firewall.store.get("TrafficShaperLimiter", []) == []  # nothing rejected was kept


def test_objects_are_kept_the_way_pfsense_keeps_them(pf_url: str, firewall: Firewall) -> None:
    path = "/api/v2/firewall/traffic_shaper/limiter"
    status, answer = _http(pf_url, "POST", path, LIMITER)
    assert status == 200
    assert answer["data"]["id"] == 0
    assert answer["data"]["number"] == 1
    assert answer["data"]["maskbits"] == 32
    assert answer["data"]["bandwidth"][0]["bwsched"] == "none"
    _http(pf_url, "POST", path, {**LIMITER, "name": "t_out"})
    assert _http(pf_url, "DELETE", path + "?id=0")[0] == 200
    status, answer = _http(pf_url, "GET", path + "?id=0")
    assert answer["data"]["name"] == "t_out"  # ids are positions: they shift after a delete
    rule = {
        "type": "pass",
        "interface": ["openvpn"],
        "ipprotocol": "inet",
        "source": "any",
        "destination": "any",
        "dnpipe": "no_such_limiter",
    }
    status, answer = _http(pf_url, "POST", "/api/v2/firewall/rule", rule)
    assert status == 400
    assert "dnpipe 'no_such_limiter' is no TrafficShaperLimiter name" in answer["message"]
    _http(pf_url, "POST", "/api/v2/firewall/rule", {**rule, "dnpipe": "t_out"})
    assert _http(pf_url, "DELETE", path + "?id=0")[0] == 409  # in use by a rule
    status, answer = _http(pf_url, "GET", "/api/v2/firewall/apply")
    assert answer["data"]["applied"] is False  # firewall objects wait for apply
    _http(pf_url, "POST", "/api/v2/firewall/apply", {})
    assert _http(pf_url, "GET", "/api/v2/firewall/apply")[1]["data"]["applied"] is True

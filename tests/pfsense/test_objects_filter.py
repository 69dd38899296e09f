"""The role's filter pfsense_gateway_objects: the grid model as pfSense objects (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from cvmc.gridmodel import vpn
from pfsense.conftest import model_inputs, role_filter

PKI = {k: f"<{k}>" for k in ("ca_crt", "server_crt", "server_key", "crl", "tls_crypt")}


def test_keys_travel_as_secrets_and_caps_as_limiter_units() -> None:
    objects = role_filter.gateway_objects(model_inputs(PKI))
    assert objects["certificate"][0]["prv"] == {"__secret__": "server_key"}
    assert all(s["tls"] == {"__secret__": "tls_crypt"} for s in objects["openvpn_server"])
    assert "<server_key>" not in repr(objects)
    limiters = {lim["name"]: lim for lim in objects["limiter"]}
    assert limiters["grid_standard_out"]["bandwidth"] == [{"bw": 20, "bwscale": "Mb"}]
    assert limiters["grid_bulk_in"]["bandwidth"] == [{"bw": 50, "bwscale": "Mb"}]
    assert all(o["description"].startswith("[grid:test-grid] ") for o in objects["limiter"])


def test_a_class_alias_holds_the_desktops_vm_addresses() -> None:
    objects = role_filter.gateway_objects(model_inputs(PKI))
    alias = next(a for a in objects["alias"] if a["name"] == "grid_cap_bulk")
    assert alias["address"] == ["10.64.128.2", "10.64.128.3"]  # lab-desktop-1's two slots


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"desktop_classes": {"lab-desktop-1.lab.test": "turbo"}},
            r"grid_desktop_classes\[lab-desktop-1.lab.test\]: 'turbo' is no class",
        ),
        (
            {"desktop_classes": {"nowhere": "bulk"}},
            "grid_desktop_classes: 'nowhere' is not in grid_desktop_registry",
        ),
        ({"default_class": "gold"}, "grid_bandwidth_default_class: 'gold' is no class"),
        (
            {"prefix": "grid-"},
            r"'grid-standard_in' is not a usable .* shorten pfsense_gateway_prefix",
        ),
        ({"campus_networks": ["10.0.0.0/33"]}, "grid_campus_networks: '10.0.0.0/33' is not"),
        (
            {"classes": [{"name": "standard", "down": "20", "up": "10mbit"}]},
            r"grid_bandwidth_classes\[standard\].down: '20' needs a unit",
        ),
    ],
)
def test_bad_input_names_the_variable(over: dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        role_filter.pfsense_gateway_objects(model_inputs(PKI, **over))


def test_a_class_alias_above_128_entries_is_refused() -> None:
    inputs = model_inputs(PKI, desktops=70)
    inputs["desktop_classes"] = {f"lab-desktop-{i}.lab.test": "bulk" for i in range(65)}
    with pytest.raises(
        AnsibleFilterError,
        match="grid_desktop_classes: alias grid_cap_bulk would hold 130",
    ):
        role_filter.pfsense_gateway_objects(inputs)


def test_each_vm_gets_its_identity_class_as_on_the_linux_gateway() -> None:
    """Issue 15 finding 2 on pfSense: the cap follows the address the override pins for the
    certificate's common name, and the class is the model's (the map the Linux hook reads),
    never anything the client sends."""
    inputs = model_inputs(PKI)
    objects = role_filter.gateway_objects(inputs)
    want = vpn.identity_classes(
        inputs["identities"],
        inputs["desktop_classes"],
        [c["name"] for c in inputs["classes"]],
        inputs["default_class"],
    )
    aliases = {a["name"]: a for a in objects["alias"]}
    limiter_class = {lim["name"]: lim["description"].split()[1] for lim in objects["limiter"]}
    vm_rules = [r for r in objects["rule"] if r["interface"] == ["openvpn"] and r["type"] == "pass"]
    for cso in objects["openvpn_cso"]:
        address = cso["tunnel_network"].split("/")[0]
        first = next(
            r
            for r in vm_rules
            if r["source"] == "grid_research"
            or address in aliases.get(r["source"], {}).get("address", [])
        )
        assert limiter_class[first["dnpipe"]] == want[cso["common_name"]], cso["common_name"]
        assert limiter_class[first["pdnpipe"]] == want[cso["common_name"]]
    assert sorted(set(want.values())) == ["bulk", "standard"]
    assert "UV_GRID_CLASS" not in repr(objects)

"""VPN identities, tc class ids, cap classes and client configs (cvmc.gridmodel.vpn)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.gridmodel import addressing, vpn

LAYOUT = addressing.vpn_layout(
    [{"name": "rvpn0", "port": 1194}, {"name": "rvpn1", "port": 1195}], "10.64.0.0/20", 2
)
REGISTRY = [{"name": "lab-desktop-1", "index": 0}, {"name": "LAB-Desktop-2.lab", "index": 1}]
HOOK = Path(__file__).resolve().parents[2] / "roles/openvpn_gateway/files/grid_vpn_cap.py"


def test_identities_follow_the_address_plan() -> None:
    identities = vpn.vpn_identities(REGISTRY, LAYOUT, 2)
    assert [(i["cn"], i["instance"], i["address"]) for i in identities] == [
        ("lab-desktop-1-vm0", "rvpn0", "10.64.0.2"),
        ("lab-desktop-1-vm1", "rvpn0", "10.64.0.3"),
        ("lab-desktop-2-vm0", "rvpn1", "10.64.8.2"),
        ("lab-desktop-2-vm1", "rvpn1", "10.64.8.3"),
    ]
    assert identities[0]["netmask"] == "255.255.248.0"
    assert identities[2]["port"] == 1195


def test_two_desktops_with_one_identity_are_refused() -> None:
    registry = [{"name": "pc1.a.example", "index": 0}, {"name": "pc1.b.example", "index": 1}]
    with pytest.raises(ValueError, match="grid_desktop_registry"):
        vpn.vpn_identities(registry, LAYOUT, 2)


@given(st.integers(min_value=2, max_value=2045))
def test_tc_minor_is_the_offset_and_never_the_default_class(offset: int) -> None:
    net = ipaddress.IPv4Network("10.64.8.0/21")
    address = str(net.network_address + offset)
    assert vpn.tc_minor(address, str(net)) == offset
    assert vpn.tc_minor(address, str(net)) != vpn.TC_DEFAULT_MINOR


@pytest.mark.parametrize(
    ("address", "slice_cidr", "message"),
    [
        ("10.64.0.1", "10.64.0.0/21", "network, server or broadcast"),
        ("10.64.7.255", "10.64.0.0/21", "network, server or broadcast"),
        ("10.65.0.5", "10.64.0.0/21", "not inside its slice"),
        ("10.64.0.5", "10.64.0.0/15", "larger than /16"),
    ],
)
def test_tc_minor_refuses(address: str, slice_cidr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vpn.tc_minor(address, slice_cidr, name="x")


def test_cap_classes_render_for_tc() -> None:
    classes = vpn.cap_classes([{"name": "standard", "down": "20mbit", "up": "1.5mbit"}])
    assert classes["standard"] == {
        "name": "standard",
        "down_bits": 20_000_000,
        "up_bits": 1_500_000,
        "down": "20mbit",
        "up": "1500kbit",
    }
    with pytest.raises(ValueError, match=r"grid_bandwidth_classes\[x\]\.up"):
        vpn.cap_classes([{"name": "x", "down": "1mbit", "up": "fast"}])


def test_client_config_is_accepted_by_openvpn(tmp_path: Path) -> None:
    text = vpn.client_config(remote="lab-gateway", port=1195, protocol="udp", cap_class="bulk")
    assert "remote lab-gateway 1195" in text.splitlines()
    assert "setenv UV_GRID_CLASS bulk" in text.splitlines()
    openvpn = Path("/usr/sbin/openvpn")
    if not openvpn.exists():
        pytest.skip("openvpn is not installed here; the syntax check needs its real parser")
    for name in ("ca.crt", "client.crt", "client.key", "tls-crypt.key"):
        (tmp_path / name).write_text("placeholder\n")
    conf = tmp_path / "client.conf"
    conf.write_text(text.replace("/run/grid/vpn", str(tmp_path)))
    # Placeholder certificates make openvpn stop right after option parsing, at loading the
    # first certificate; an unknown or misspelt option fails earlier ("Unrecognized option").
    result = subprocess.run(
        [str(openvpn), "--config", str(conf), "--verb", "4"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "Options error" not in output
    assert "Cannot load certificate file" in output, output


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"remote": "bad host", "port": 1194, "protocol": "udp", "cap_class": "s"}, "remote"),
        ({"remote": "gw", "port": 0, "protocol": "udp", "cap_class": "s"}, "port"),
        ({"remote": "gw", "port": 1194, "protocol": "sctp", "cap_class": "s"}, "protocol"),
        ({"remote": "gw", "port": 1194, "protocol": "udp", "cap_class": "a b"}, "cap class"),
    ],
)
def test_client_config_refuses(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vpn.client_config(**kwargs)  # type: ignore[arg-type]


def _load_hook() -> object:
    import importlib.util  # noqa: PLC0415 - the hook is a script file, loaded by path

    spec = importlib.util.spec_from_file_location("grid_vpn_cap", HOOK)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["grid_vpn_cap"] = module
    spec.loader.exec_module(module)
    return module


CONFIG = {
    "instances": [{"name": "rvpn0", "network": "10.64.0.0/21", "port": 1194}],
    "classes": {
        "standard": {"down": "20mbit", "up": "10mbit"},
        "bulk": {"down": "40mbit", "up": "20mbit"},
    },
    "default_class": "standard",
    "identity_classes": {"lab-desktop-1-vm0": "bulk"},
}


def test_hook_uses_the_same_class_ids_as_the_model() -> None:
    hook = _load_hook()
    env = {
        "script_type": "client-connect",
        "dev": "tun-rvpn0",
        "ifconfig_pool_remote_ip": "10.64.1.7",
        "common_name": "lab-desktop-1-vm0",
    }
    commands, strict, line = hook.plan(env, CONFIG)  # type: ignore[attr-defined]
    minor = vpn.tc_minor("10.64.1.7", "10.64.0.0/21")
    assert strict
    assert "class bulk" in line
    classes = [c for c in commands if c[1] == "class"]
    assert [c[c.index("classid") + 1] for c in classes] == [f"1:{minor:x}"] * 2
    assert [c[c.index("rate") + 1] for c in classes] == ["40mbit", "20mbit"]
    filters = [c for c in commands if c[1] == "filter"]
    assert [c[c.index("match") + 2] for c in filters] == ["dst", "src"]
    # Bucket = last octet (7), node = third octet + 1 (2).
    assert {c[c.index("handle") + 1] for c in filters} == {"2:7:2"}


def _connect_rates(line_and_commands: tuple[list[list[str]], bool, str]) -> list[str]:
    commands = line_and_commands[0]
    return [c[c.index("rate") + 1] for c in commands if c[1] == "class"]


def test_hook_caps_by_the_certificate_identity_never_by_the_announced_class() -> None:
    """Issue 15 finding 2: a desktop that copies a slot's key and announces the biggest class
    (UV_GRID_CLASS) still gets its own identity's cap."""
    hook = _load_hook()
    env = {
        "script_type": "client-connect",
        "dev": "tun-rvpn0",
        "ifconfig_pool_remote_ip": "10.64.1.9",
        "common_name": "lab-desktop-2-vm0",
        "UV_GRID_CLASS": "bulk",
    }
    got = hook.plan(env, CONFIG)  # type: ignore[attr-defined]
    assert _connect_rates(got) == ["20mbit", "10mbit"]
    assert "class standard" in got[2]
    assert "announced 'bulk', ignored" in got[2]
    # An announcement is bounded before it reaches the log.
    env["UV_GRID_CLASS"] = "x" * 5000
    assert len(hook.plan(env, CONFIG)[2]) < 200  # type: ignore[attr-defined]
    # The bulk identity announcing the small class keeps its own (bigger) cap.
    env.update(common_name="lab-desktop-1-vm0", UV_GRID_CLASS="standard")
    assert _connect_rates(hook.plan(env, CONFIG)) == ["40mbit", "20mbit"]  # type: ignore[attr-defined]


def test_hook_refuses_an_identity_class_it_does_not_know() -> None:
    hook = _load_hook()
    config = {**CONFIG, "identity_classes": {"lab-desktop-1-vm0": "gold"}}
    env = {
        "script_type": "client-connect",
        "dev": "tun-rvpn0",
        "ifconfig_pool_remote_ip": "10.64.1.7",
        "common_name": "lab-desktop-1-vm0",
    }
    with pytest.raises(SystemExit, match="class 'gold' of 'lab-desktop-1-vm0'"):
        hook.plan(env, config)  # type: ignore[attr-defined]


IDENTITIES = [
    {"cn": "lab-desktop-1-vm0", "desktop": "lab-desktop-1"},
    {"cn": "lab-desktop-1-vm1", "desktop": "lab-desktop-1"},
    {"cn": "lab-desktop-2-vm0", "desktop": "lab-desktop-2"},
]


def test_identity_classes_come_from_the_desktop_map() -> None:
    got = vpn.identity_classes(
        IDENTITIES, {"lab-desktop-1": "bulk"}, ["standard", "bulk"], "standard"
    )
    assert got == {
        "lab-desktop-1-vm0": "bulk",
        "lab-desktop-1-vm1": "bulk",
        "lab-desktop-2-vm0": "standard",
    }
    assert set(vpn.identity_classes(IDENTITIES, None, ["standard"], "standard").values()) == {
        "standard"
    }


@pytest.mark.parametrize(
    ("desktop_classes", "message"),
    [
        ({"lab-desktop-1": "gold"}, r"^grid_desktop_classes\[lab-desktop-1\]: 'gold' is no class"),
        (
            {"lab-desktop-9": "bulk"},
            r"^grid_desktop_classes: 'lab-desktop-9' is not in grid_desktop",
        ),
        (["lab-desktop-1"], r"^grid_desktop_classes: \['lab-desktop-1'\] is not a mapping"),
    ],
)
def test_identity_classes_refuse(desktop_classes: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vpn.identity_classes(IDENTITIES, desktop_classes, ["standard", "bulk"], "standard")


def test_hook_gives_unlisted_identities_the_default_and_refuses_foreign_addresses() -> None:
    hook = _load_hook()
    env = {
        "script_type": "client-connect",
        "dev": "tun-rvpn0",
        "ifconfig_pool_remote_ip": "10.64.1.7",
        "common_name": "lab-desktop-3-vm0",
        "UV_GRID_CLASS": "gold",
    }
    _, _, line = hook.plan(env, CONFIG)  # type: ignore[attr-defined]
    assert "class standard" in line
    env["ifconfig_pool_remote_ip"] = "10.64.9.7"
    with pytest.raises(SystemExit, match="not in slice"):
        hook.plan(env, CONFIG)  # type: ignore[attr-defined]
    env["dev"] = "tun-other"
    with pytest.raises(SystemExit, match="no instance uses device"):
        hook.plan(env, CONFIG)  # type: ignore[attr-defined]


def test_hook_hands_client_events_to_sudo_with_checked_arguments() -> None:
    """Issue 15 finding 9b: OpenVPN runs unprivileged, and the client hooks reach tc only by
    running this one script as root through sudo, with every value checked there."""
    hook = _load_hook()
    env = {
        "script_type": "client-connect",
        "dev": "tun-rvpn0",
        "ifconfig_pool_remote_ip": "10.64.1.7",
        "common_name": "lab-desktop-1-vm0",
        "UV_GRID_CLASS": "bulk; reboot",
        "PATH": "/home/desktop-owner/bin",
    }
    argv = hook.sudo_argv(env, "/usr/local/libexec/grid-vpn/grid-vpn-cap")  # type: ignore[attr-defined]
    assert argv == [
        "/usr/bin/sudo",
        "-n",
        "/usr/local/libexec/grid-vpn/grid-vpn-cap",
        "--as-root",
        "client-connect",
        "tun-rvpn0",
        "10.64.1.7",
        "lab-desktop-1-vm0",
        "?",
    ]
    got = hook.env_from_args(argv[4:])  # type: ignore[attr-defined]
    assert got == {k: v for k, v in env.items() if k in {a for a, _ in hook.CLIENT_ARGS}} | {  # type: ignore[attr-defined]
        "UV_GRID_CLASS": "?"
    }
    commands, strict, _ = hook.plan(got, CONFIG)  # type: ignore[attr-defined]
    assert strict
    assert [c[c.index("rate") + 1] for c in commands if c[1] == "class"] == ["40mbit", "20mbit"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "tun-rvpn0", "10.64.1.7", "lab-desktop-1-vm0", ""], "script_type 'up'"),
        (["client-connect", "eth0", "10.64.1.7", "lab-desktop-1-vm0", ""], "dev 'eth0'"),
        (["client-connect", "tun-rvpn0", "10.64.1.7 x", "a", ""], "ifconfig_pool_remote_ip"),
        (["client-connect", "tun-rvpn0", "10.64.1.7", "../../etc", ""], "common_name"),
        (["client-connect", "tun-rvpn0", "10.64.1.7", "a", "x" * 33], "UV_GRID_CLASS"),
        (["client-connect", "tun-rvpn0", "10.64.1.7"], "takes 5 values, not 3"),
    ],
)
def test_hook_as_root_refuses_unchecked_arguments(args: list[str], message: str) -> None:
    hook = _load_hook()
    with pytest.raises(SystemExit, match=message):
        hook.env_from_args(args)  # type: ignore[attr-defined]

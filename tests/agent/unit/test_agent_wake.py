"""Wake-on-LAN on the desktop (``grid_wake_on_lan``, issue 18 item 2): the magic packet, the MAC
a heartbeat reports, and the packets a reply asks for.

The sender is real: UDP magic packets to a socket on loopback (production sends them to the
limited broadcast on port 9; tests never send traffic off this machine). The MAC lookup runs
on this machine's own interfaces (psutil, checked against sysfs). The agent's loop runs with
the fakes of agent_fakes.py.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections import namedtuple
from pathlib import Path

import psutil
import pytest
from agent.agent_fakes import make_world

from cvmc.agent.adapters.wol import BROADCAST, UdpWaker, mac_of_address
from cvmc.gridmodel.wake import magic_packet, parse_mac
from cvmc.protocol import parse_heartbeat_reply

MAC = "52:54:00:ab:cd:ef"
MONDAY_NIGHT = dt.datetime(2026, 11, 23, 2, 0)  # outside every blackout
Addr = namedtuple("Addr", "family address netmask broadcast ptp")


def test_the_magic_packet_is_six_ff_then_the_mac_sixteen_times() -> None:
    packet = magic_packet(MAC)
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("525400abcdef") * 16
    assert magic_packet("52-54-00-AB-CD-EF") == packet
    with pytest.raises(ValueError, match="not a unicast MAC address"):
        magic_packet("01:00:5e:00:00:01")  # a group address


@pytest.mark.parametrize(
    ("raw", "mac"),
    [
        ("52:54:00:AB:CD:EF", MAC),
        ("52-54-00-ab-cd-ef", MAC),
        ("00:00:00:00:00:00", None),  # loopback's
        ("ff:ff:ff:ff:ff:ff", None),  # broadcast
        ("33:33:00:00:00:01", None),  # IPv6 multicast
        ("52:54:00:ab:cd", None),
        ("52:54:00:ab:cd:efg", None),
        (None, None),
        (525400, None),
    ],
)
def test_only_a_unicast_mac_is_a_mac(raw: object, mac: str | None) -> None:
    assert parse_mac(raw) == mac


def test_the_mac_is_that_of_the_interface_holding_the_address() -> None:
    table = {
        "lo": [
            Addr(socket.AF_INET, "127.0.0.1", None, None, None),
            Addr(psutil.AF_LINK, "00:00:00:00:00:00", None, None, None),
        ],
        "eth0": [
            Addr(psutil.AF_LINK, "52:54:00:AB:CD:EF", None, None, None),
            Addr(socket.AF_INET, "10.20.1.5", "255.255.255.0", None, None),
        ],
        "eth1": [
            Addr(socket.AF_INET, "10.30.0.7", "255.255.255.0", None, None),
            Addr(psutil.AF_LINK, "52:54:00:00:00:01", None, None, None),
        ],
    }
    assert mac_of_address(table, "10.20.1.5") == MAC
    assert mac_of_address(table, "10.30.0.7") == "52:54:00:00:00:01"
    assert mac_of_address(table, "127.0.0.1") is None  # loopback has no real MAC
    assert mac_of_address(table, "10.99.0.1") is None


def test_the_mac_lookup_agrees_with_sysfs_on_this_machine() -> None:
    """Every interface of this machine with an IPv4 address and a unicast MAC: psutil's table,
    read by ``mac_of_address``, names the MAC sysfs gives."""
    checked = 0
    for name, items in psutil.net_if_addrs().items():
        sysfs = Path(f"/sys/class/net/{name}/address")
        mac = parse_mac(sysfs.read_text()) if sysfs.exists() else None
        for item in items:
            if item.family == socket.AF_INET and mac is not None:
                assert mac_of_address(psutil.net_if_addrs(), item.address) == mac
                checked += 1
    if not checked:
        pytest.skip("this machine has no interface with an IPv4 address and a MAC")


def test_the_waker_sends_each_magic_packet_to_its_target() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        waker = UdpWaker("127.0.0.1", target=receiver.getsockname())
        assert waker.wake([MAC, "52:54:00:00:00:01"]) == 2
        got = [receiver.recvfrom(200)[0] for _ in range(2)]
    assert got == [magic_packet(MAC), magic_packet("52:54:00:00:00:01")]
    assert BROADCAST == ("255.255.255.255", 9)
    # The route to loopback goes through lo, which has no MAC to report.
    assert waker.mac() is None
    # A bad address in the list stops the sending there, and it says how many went.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        assert UdpWaker("127.0.0.1", target=receiver.getsockname()).wake([MAC, "bad"]) == 1


def test_the_agent_reports_its_mac_and_sends_what_a_reply_asks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world(MONDAY_NIGHT)
    world.coordinator.wake = [MAC]
    world.run_for(3)
    assert world.coordinator.heartbeats[0]["resources"]["mac"] == "52:54:00:12:34:56"
    assert world.waker.woken == [MAC]
    # A malformed wake list is ignored, and logged; the leases in the same reply still count.
    caplog.set_level("WARNING", logger="cvmc")
    world.coordinator.wake = ["not-a-mac"]
    world.coordinator.leases = [
        {"lease_id": "l-1", "vm_name": "its-u11-boinc-20120415", "cpus": 1, "memory_mb": 512,
         "ttl_s": 300}
    ]  # fmt: skip
    world.run_for(70)
    assert world.waker.woken == [MAC]
    assert world.states() == ["running", "idle"]
    assert any("wake list ignored" in r.getMessage() for r in caplog.records)


def test_a_reply_asks_for_at_most_sixteen_wakes() -> None:
    base = {"server_time": "2026-11-23T00:00:00Z", "heartbeat_s": 60, "leases": []}
    many = [f"52:54:00:00:00:{i:02x}" for i in range(17)]
    reply = parse_heartbeat_reply({**base, "wake": many}, 0.0)
    assert (reply.wake, "at most 16" in reply.wake_problem) == ((), True)
    reply = parse_heartbeat_reply({**base, "wake": many[:16] + many[:3]}, 0.0)
    assert reply.wake == ()  # 19 items: too many, though three repeat
    reply = parse_heartbeat_reply({**base, "wake": [MAC, MAC]}, 0.0)
    assert (reply.wake, reply.wake_problem) == ((MAC,), "")

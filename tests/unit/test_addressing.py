"""The VPN address plan: slices, layout, capacity, tunnel addresses and the desktop registry."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvmc.gridmodel import addressing as a

TWO = [{"name": "vpn-a", "port": 1194}, {"name": "vpn-b", "port": 1195}]


# --------------------------------------------------------------------------------------------
# split_network, netmask, openvpn_netmask


@pytest.mark.parametrize(
    ("network", "count", "expected"),
    [
        ("10.64.0.0/16", 1, ["10.64.0.0/16"]),
        ("10.64.0.0/16", 2, ["10.64.0.0/17", "10.64.128.0/17"]),
        ("10.64.0.0/16", 3, ["10.64.0.0/18", "10.64.64.0/18", "10.64.128.0/18"]),
        ("10.64.0.0/16", 4, ["10.64.0.0/18", "10.64.64.0/18", "10.64.128.0/18", "10.64.192.0/18"]),
        ("10.64.0.0/16", 5, [f"10.64.{32 * i}.0/19" for i in range(5)]),
        ("192.168.8.0/28", 2, ["192.168.8.0/29", "192.168.8.8/29"]),
    ],
)
def test_split_network_equal_slices(network: str, count: int, expected: list[str]) -> None:
    assert a.split_network(network, count) == expected


@pytest.mark.parametrize("count", [0, -1, True])
def test_split_network_rejects_bad_count(count: int) -> None:
    with pytest.raises(ValueError, match=r"^grid_research_network: the number of slices"):
        a.split_network("10.64.0.0/16", count)


def test_split_network_rejects_host_bits_and_says_so() -> None:
    with pytest.raises(
        ValueError, match=r"^net: '10\.64\.0\.1/16' has host bits set.*10\.64\.0\.0/16"
    ):
        a.split_network("10.64.0.1/16", 2, name="net")


@pytest.mark.parametrize(
    "bad", ["10.64.0.0", "10.64.0.0/33", "300.1.1.1/8", "fe80::/64", "banana", "", 42, None]
)
def test_split_network_rejects_invalid_cidr(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^grid_research_network: .*(CIDR|IPv4)"):
        a.split_network(bad, 2)  # type: ignore[arg-type]


def test_split_network_refuses_slices_below_slash_29() -> None:
    with pytest.raises(ValueError, match=r"^grid_research_network: .*/30 slices, smaller than /29"):
        a.split_network("10.0.0.0/28", 3)


def test_netmask_forms() -> None:
    assert a.netmask("10.64.0.0/18") == "255.255.192.0"
    assert a.openvpn_netmask("10.64.0.0/18") == "10.64.0.0 255.255.192.0"
    assert a.openvpn_netmask("172.16.8.0/21") == "172.16.8.0 255.255.248.0"
    with pytest.raises(ValueError, match=r"^grid_vpn_slice: '10\.64\.1\.0/18' has host bits set"):
        a.netmask("10.64.1.0/18", name="grid_vpn_slice")


# --------------------------------------------------------------------------------------------
# vpn_layout, plan_capacity


def test_vpn_layout_derives_equal_slices() -> None:
    layout = a.vpn_layout(TWO, "10.64.0.0/16", 2)
    assert layout == [
        {
            "name": "vpn-a",
            "port": 1194,
            "network": "10.64.0.0/17",
            "server": "10.64.0.1",
            "netmask": "255.255.128.0",
            "prefix": 17,
            "openvpn_server": "10.64.0.0 255.255.128.0",
            "capacity": (2**15 - 3) // 2,
        },
        {
            "name": "vpn-b",
            "port": 1195,
            "network": "10.64.128.0/17",
            "server": "10.64.128.1",
            "netmask": "255.255.128.0",
            "prefix": 17,
            "openvpn_server": "10.64.128.0 255.255.128.0",
            "capacity": (2**15 - 3) // 2,
        },
    ]


def test_vpn_layout_keeps_explicit_networks_and_does_not_mutate_input() -> None:
    instances = [
        {"name": "vpn-a", "port": 1194, "network": "10.64.0.0/24"},
        {"name": "vpn-b", "port": 1195, "network": "10.64.4.0/22"},
    ]
    snapshot = [dict(i) for i in instances]
    layout = a.vpn_layout(instances, "10.64.0.0/16", 4)
    assert instances == snapshot
    assert [(i["network"], i["server"], i["capacity"]) for i in layout] == [
        ("10.64.0.0/24", "10.64.0.1", (256 - 3) // 4),
        ("10.64.4.0/22", "10.64.4.1", (1024 - 3) // 4),
    ]


def test_vpn_layout_names_instances_missing_a_network() -> None:
    instances = [
        {"name": "vpn-a", "port": 1194, "network": "10.64.0.0/18"},
        {"name": "vpn-b", "port": 1195},
        {"name": "vpn-c", "port": 1196},
    ]
    with pytest.raises(ValueError, match=r"^grid_vpn_instances: .*missing on: vpn-b, vpn-c$"):
        a.vpn_layout(instances, "10.64.0.0/16", 2)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([], r"^grid_vpn_instances: the list is empty"),
        (
            [{"name": "vpn-a", "port": 1194, "network": "10.64.0.5/24"}],
            r"^grid_vpn_instances\[vpn-a\]\.network: '10\.64\.0\.5/24' has host bits set",
        ),
        (
            [{"name": "vpn-a", "port": 1194, "network": "10.64.0.0/30"}],
            r"^grid_vpn_instances\[vpn-a\]\.network: 10\.64\.0\.0/30 is smaller than /29",
        ),
        ([{"name": "vpn-a", "port": 0}], r"^grid_vpn_instances\[vpn-a\]\.port: 0 is not a port"),
        ([{"name": "vpn-a", "port": "1194"}], r"^grid_vpn_instances\[vpn-a\]\.port"),
        ([{"port": 1194}], r"^grid_vpn_instances\[0\]\.name"),
        (
            [{"name": "vpn-a", "port": 1194}, {"name": "vpn-a", "port": 1195}],
            r"^grid_vpn_instances\[1\]\.name: 'vpn-a' is used by more than one",
        ),
        (["vpn-a"], r"^grid_vpn_instances\[0\]: expected a mapping"),
    ],
)
def test_vpn_layout_rejects(instances: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        a.vpn_layout(instances, "10.64.0.0/16", 2)


def test_vpn_layout_rejects_slice_that_cannot_hold_one_desktop() -> None:
    instances = [{"name": "vpn-a", "port": 1194, "network": "10.64.0.0/29"}]
    with pytest.raises(ValueError, match=r"cannot hold one desktop of 6 VMs \(5 usable"):
        a.vpn_layout(instances, "10.64.0.0/16", 6)
    assert a.vpn_layout(instances, "10.64.0.0/16", 5)[0]["capacity"] == 1


def test_vpn_layout_reports_bad_research_network_by_its_name() -> None:
    with pytest.raises(ValueError, match=r"^grid_research_network: '10\.64\.0\.0/33'"):
        a.vpn_layout(TWO, "10.64.0.0/33", 2)


def test_plan_capacity_equal_slices_is_k_times_slice_capacity() -> None:
    layout = a.vpn_layout(
        [{"name": f"v{i}", "port": 1194 + i} for i in range(3)], "10.64.0.0/22", 2
    )
    # 3 slices of /24 (4th quarter unused): (256 - 3) // 2 = 126 desktops each.
    assert [i["capacity"] for i in layout] == [126, 126, 126]
    assert a.plan_capacity(layout, 2) == 378


def test_plan_capacity_unequal_slices_counts_leading_larger_slices() -> None:
    layout = [
        {"name": "big", "port": 1, "network": "10.64.0.0/24"},  # 253 desktops of 1 slot
        {"name": "small", "port": 2, "network": "10.64.1.0/29"},  # 5 desktops
        {"name": "mid", "port": 3, "network": "10.64.2.0/28"},  # 13 desktops
    ]
    # Desktops 0..14 fill positions 0..4 of every slice; desktop 15 takes position 5 of "big",
    # desktop 16 would need position 5 of "small", which holds 5.
    assert a.plan_capacity(layout, 1) == 16
    assert a.tunnel_address(layout, 1, 15, 0)["address"] == "10.64.0.7"
    with pytest.raises(ValueError, match="plan is full"):
        a.tunnel_address(layout, 1, 16, 0)


def test_plan_capacity_rejects_empty_layout() -> None:
    with pytest.raises(ValueError, match=r"^grid_vpn_layout: the layout is empty"):
        a.plan_capacity([], 2)


# --------------------------------------------------------------------------------------------
# find_overlaps, network_contains, as_named_networks


def test_find_overlaps_reports_pairs_in_input_order() -> None:
    nets = [
        ("research", "10.64.0.0/16"),
        ("campus", "10.0.0.0/8"),
        ("dmz", "192.168.1.0/24"),
        ("slice", "10.64.128.0/17"),
    ]
    assert a.find_overlaps(nets) == [
        "research (10.64.0.0/16) overlaps campus (10.0.0.0/8)",
        "research (10.64.0.0/16) overlaps slice (10.64.128.0/17)",
        "campus (10.0.0.0/8) overlaps slice (10.64.128.0/17)",
    ]
    assert a.find_overlaps([("a", "10.64.0.0/17"), ("b", "10.64.128.0/17")]) == []
    assert a.find_overlaps([]) == []


def test_find_overlaps_names_the_bad_label() -> None:
    with pytest.raises(
        ValueError, match=r"^grid_campus_networks\[1\]: '10\.0\.0\.1/8' has host bits"
    ):
        a.find_overlaps(
            [("grid_research_network", "10.64.0.0/16"), ("grid_campus_networks[1]", "10.0.0.1/8")]
        )


def test_as_named_networks_accepts_pairs_and_dicts() -> None:
    items = [["a", "10.0.0.0/8"], {"name": "b", "network": "10.64.0.0/16"}, ("c", "10.1.0.0/16")]
    assert a.as_named_networks(items) == [
        ("a", "10.0.0.0/8"),
        ("b", "10.64.0.0/16"),
        ("c", "10.1.0.0/16"),
    ]
    with pytest.raises(ValueError, match=r"^nets\[0\]: expected a \[label, cidr\] pair"):
        a.as_named_networks([["a", "10.0.0.0/8", "extra"]], name="nets")
    with pytest.raises(ValueError, match=r"^nets\[0\]: a mapping item needs"):
        a.as_named_networks([{"name": "a"}], name="nets")


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("10.64.0.0/16", "10.64.128.0/17", True),
        ("10.64.0.0/16", "10.64.0.0/16", True),
        ("10.64.0.0/17", "10.64.0.0/16", False),
        ("10.64.0.0/16", "10.65.0.0/24", False),
    ],
)
def test_network_contains(outer: str, inner: str, expected: bool) -> None:
    assert a.network_contains(outer, inner) is expected


def test_network_contains_rejects_invalid() -> None:
    with pytest.raises(ValueError, match=r"^grid_vpn \(inner\): 'nope'"):
        a.network_contains("10.64.0.0/16", "nope", name="grid_vpn")


# --------------------------------------------------------------------------------------------
# tunnel_address(es)


def test_tunnel_address_round_robin_offsets() -> None:
    layout = a.vpn_layout(TWO, "10.64.0.0/16", 2)
    assert a.tunnel_address(layout, 2, 0, 0) == {
        "instance": "vpn-a",
        "port": 1194,
        "address": "10.64.0.2",
        "netmask": "255.255.128.0",
        "prefix": 17,
        "server": "10.64.0.1",
        "cidr": "10.64.0.2/17",
    }
    assert a.tunnel_address(layout, 2, 0, 1)["address"] == "10.64.0.3"
    assert a.tunnel_address(layout, 2, 1, 0)["cidr"] == "10.64.128.2/17"
    assert a.tunnel_address(layout, 2, 1, 1)["instance"] == "vpn-b"
    # index 2: instance 0, position 1 -> offset 2 + 1 * 2 + 0 = 4
    assert a.tunnel_address(layout, 2, 2, 0)["address"] == "10.64.0.4"
    # index 7: instance 1, position 3, slot 1 -> offset 2 + 3 * 2 + 1 = 9
    assert a.tunnel_address(layout, 2, 7, 1)["address"] == "10.64.128.9"


def test_tunnel_address_errors() -> None:
    layout = a.vpn_layout(TWO, "10.64.0.0/24", 2)  # two /25: (128 - 3) // 2 = 62 each
    with pytest.raises(
        ValueError, match=r"^grid_desktop_registry: slot must be an integer in 0\.\.1"
    ):
        a.tunnel_address(layout, 2, 0, 2)
    with pytest.raises(ValueError, match=r"^grid_desktop_registry: desktop index must be"):
        a.tunnel_address(layout, 2, -1, 0)
    assert (
        a.tunnel_address(layout, 2, 123, 1)["address"] == "10.64.0.253"
    )  # last host: .254 is 1 below broadcast
    with pytest.raises(
        ValueError,
        match=r"^grid_desktop_registry: the address plan is full: .*holds 62 desktops.*"
        r"whole plan holds 124 desktops",
    ):
        a.tunnel_address(layout, 2, 124, 0)


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(1, 5),
    slots=st.integers(1, 8),
    prefix=st.integers(20, 24),
    data=st.data(),
)
def test_slot_of_address_inverts_tunnel_address(
    count: int, slots: int, prefix: int, data: st.DataObject
) -> None:
    """Every tunnel address of the plan names back its desktop index and slot."""
    instances = [{"name": f"vpn-{i}", "port": 1194 + i} for i in range(count)]
    layout = a.vpn_layout(instances, f"10.64.0.0/{prefix}", slots)
    index = data.draw(st.integers(0, a.plan_capacity(layout, slots) - 1))
    slot = data.draw(st.integers(0, slots - 1))
    address = a.tunnel_address(layout, slots, index, slot)["address"]
    assert a.slot_of_address(layout, slots, address) == (index, slot)


def test_slot_of_address_of_no_slot_is_none() -> None:
    layout = a.vpn_layout(TWO, "10.64.0.0/24", 2)  # 10.64.0.0/25 and 10.64.0.128/25, 62 each
    assert a.slot_of_address(layout, 2, "10.64.0.2") == (0, 0)
    assert a.slot_of_address(layout, 2, "10.64.0.131") == (1, 1)
    assert a.slot_of_address(layout, 2, "10.64.0.253") == (123, 1)
    for address in (
        "10.64.0.0",  # a slice's network address
        "10.64.0.1",  # its server
        "10.64.0.126",  # beyond its 62 desktops of 2 slots (.2 to .125)
        "10.64.0.127",  # its broadcast
        "10.64.1.2",  # outside every slice
        "fd00::2",  # not IPv4
        "10.64.0.2/25",
        "",
        "10.64.0.2\n",
    ):
        assert a.slot_of_address(layout, 2, address) is None, address


def test_tunnel_addresses_per_desktop() -> None:
    layout = a.vpn_layout(TWO, "10.64.0.0/16", 2)
    registry = [{"name": "pc-b", "index": 1}, {"name": "pc-a", "index": 0}]
    result = a.tunnel_addresses(registry, layout, 2)
    assert {k: [t["cidr"] for t in v] for k, v in result.items()} == {
        "pc-b": ["10.64.128.2/17", "10.64.128.3/17"],
        "pc-a": ["10.64.0.2/17", "10.64.0.3/17"],
    }


def test_tunnel_addresses_names_the_desktop_that_does_not_fit() -> None:
    layout = a.vpn_layout(TWO, "10.64.0.0/28", 1)  # two /29: 5 desktops each
    with pytest.raises(
        ValueError, match=r"^grid_desktop_registry\[pc-x\]: the address plan is full"
    ):
        a.tunnel_addresses([{"name": "pc-x", "index": 10}], layout, 1)


# --------------------------------------------------------------------------------------------
# desktop_id and assign_indices


@pytest.mark.parametrize(
    ("host", "expected"),
    [("PC-042.campus.example.edu", "pc-042"), ("pc-042", "pc-042"), (" Lab7.x ", "lab7")],
)
def test_desktop_id(host: str, expected: str) -> None:
    assert a.desktop_id(host) == expected


@pytest.mark.parametrize("bad", ["", ".campus.edu", "two words", 5, None])
def test_desktop_id_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^desktops\[3\]: "):
        a.desktop_id(bad, name="desktops[3]")  # type: ignore[arg-type]


def test_assign_indices_keeps_fills_and_drops() -> None:
    registry = [
        {"name": "pc-a", "index": 0},
        {"name": "pc-b", "index": 1},
        {"name": "pc-c", "index": 2},
        {"name": "pc-d", "index": 5},
    ]
    names = ["pc-d", "PC-A.campus.edu", "pc-z", "pc-c", "pc-y", "pc-x", "pc-w"]
    assert a.assign_indices(registry, names) == [
        {"name": "pc-a", "index": 0},  # kept with its registry spelling
        {"name": "pc-w", "index": 1},  # pc-b is gone: its index is reused, sorted order
        {"name": "pc-c", "index": 2},
        {"name": "pc-x", "index": 3},
        {"name": "pc-y", "index": 4},
        {"name": "pc-d", "index": 5},
        {"name": "pc-z", "index": 6},
    ]


def test_assign_indices_from_empty_and_empty_names() -> None:
    assert a.assign_indices([], ["b", "a"]) == [
        {"name": "a", "index": 0},
        {"name": "b", "index": 1},
    ]
    assert a.assign_indices([{"name": "a", "index": 3}], []) == []


@pytest.mark.parametrize(
    ("registry", "names", "message"),
    [
        (
            [{"name": "pc-a", "index": 0}, {"name": "PC-A.campus", "index": 1}],
            [],
            r"^grid_desktop_registry: 'pc-a' and 'PC-A\.campus' are the same desktop",
        ),
        (
            [{"name": "pc-a", "index": 0}, {"name": "pc-b", "index": 0}],
            [],
            r"^grid_desktop_registry: 'pc-a' and 'pc-b' both have index 0",
        ),
        ([{"name": "pc-a", "index": -1}], [], r"^grid_desktop_registry\[pc-a\]\.index"),
        ([{"name": "pc-a", "index": "0"}], [], r"^grid_desktop_registry\[pc-a\]\.index"),
        ([], ["pc-a", "PC-A"], r"^grid_desktop_registry: the desktop names 'pc-a' and 'PC-A'"),
    ],
)
def test_assign_indices_rejects(
    registry: list[dict[str, object]], names: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        a.assign_indices(registry, names)


# --------------------------------------------------------------------------------------------
# properties

hostnames = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@st.composite
def derived_plans(draw: st.DrawFn) -> tuple[list[a.VpnInstance], int]:
    """A layout derived from a research network split into K equal slices."""
    k = draw(st.integers(1, 6))
    prefix = draw(st.integers(20, 26))
    base = draw(st.sampled_from(["10.64.0.0", "172.16.0.0", "192.168.0.0"]))
    slots = draw(st.integers(1, 4))
    instances = [{"name": f"vpn{i}", "port": 1194 + i} for i in range(k)]
    return a.vpn_layout(instances, f"{base}/{prefix}", slots), slots


@st.composite
def explicit_plans(draw: st.DrawFn) -> tuple[list[a.VpnInstance], int]:
    """A layout with unequal explicit slices, one inside each 10.64.i.0/24."""
    slots = draw(st.integers(1, 3))
    k = draw(st.integers(1, 5))
    # a /29 holds 5 addresses: at most 5 // slots >= 1 desktop
    prefixes = draw(st.lists(st.integers(24, 29), min_size=k, max_size=k))
    instances = [
        {"name": f"vpn{i}", "port": 1194 + i, "network": f"10.64.{i}.0/{p}"}
        for i, p in enumerate(prefixes)
    ]
    return a.vpn_layout(instances, "10.64.0.0/16", slots), slots


plans = st.one_of(derived_plans(), explicit_plans())


@settings(max_examples=60)
@given(plan=plans, data=st.data())
def test_addresses_unique_and_inside_their_slice(
    plan: tuple[list[a.VpnInstance], int], data: st.DataObject
) -> None:
    layout, slots = plan
    capacity = a.plan_capacity(layout, slots)
    names = data.draw(st.lists(hostnames, unique=True, max_size=min(capacity, 40)))
    registry = a.assign_indices([], names)
    by_name = {inst["name"]: inst for inst in layout}
    seen: set[str] = set()
    for desktop, addresses in a.tunnel_addresses(registry, layout, slots).items():
        assert desktop in names
        assert len(addresses) == slots
        for t in addresses:
            assert t["address"] not in seen
            seen.add(t["address"])
            net = ipaddress.IPv4Network(by_name[t["instance"]]["network"])
            addr = ipaddress.IPv4Address(t["address"])
            assert addr in net
            assert addr not in (net.network_address, net.network_address + 1, net.broadcast_address)
            assert t["server"] == str(net.network_address + 1)
            assert t["cidr"] == f"{addr}/{net.prefixlen}"
    assert len(seen) == slots * len(names)


@settings(max_examples=60)
@given(plan=plans, data=st.data())
def test_other_desktops_never_renumber_a_desktop(
    plan: tuple[list[a.VpnInstance], int], data: st.DataObject
) -> None:
    layout, slots = plan
    capacity = a.plan_capacity(layout, slots)
    pool = data.draw(st.lists(hostnames, unique=True, min_size=1, max_size=min(capacity, 30)))
    before = data.draw(st.lists(st.sampled_from(pool), unique=True))
    after = data.draw(st.lists(st.sampled_from(pool), unique=True))
    reg_before = a.assign_indices([], before)
    reg_after = a.assign_indices(reg_before, after)
    assert sorted(e["name"] for e in reg_after) == sorted(after)
    assert len({e["index"] for e in reg_after}) == len(reg_after)
    # indices stay below the pool size, so every desktop still fits the plan
    assert all(e["index"] < len(pool) for e in reg_after)
    addr_before = a.tunnel_addresses(reg_before, layout, slots)
    addr_after = a.tunnel_addresses(reg_after, layout, slots)
    for host in set(before) & set(after):
        assert addr_after[host] == addr_before[host]
    # running it again with the same names changes nothing
    assert a.assign_indices(reg_after, after) == reg_after


@settings(max_examples=80)
@given(plan=plans)
def test_plan_capacity_fits_exactly(plan: tuple[list[a.VpnInstance], int]) -> None:
    layout, slots = plan
    capacity = a.plan_capacity(layout, slots)
    k = len(layout)
    assert capacity >= k * min(inst["capacity"] for inst in layout)
    # Every slice holds at least one desktop, and positions fill in index order: if the last
    # index below capacity of each slice fits, all of them do.
    for instance in range(k):
        last = max(range(instance, capacity, k))
        assert a.tunnel_address(layout, slots, last, slots - 1)["instance"] == f"vpn{instance}"
    for slot in range(slots):
        with pytest.raises(ValueError, match="plan is full"):
            a.tunnel_address(layout, slots, capacity, slot)

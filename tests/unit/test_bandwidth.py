"""Bandwidth caps: tc(8) rate parsing and the tc / pfSense / VirtualBox renderings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.gridmodel import bandwidth as b

PFSENSE_TO_TC = {"Mb": "mbit", "Kb": "kbit", "b": "bit"}
VBOX_TO_TC = {"g": "gbit", "m": "mbit", "k": "kbit"}


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("20mbit", 20_000_000),
        ("20 Mbit", 20_000_000),
        ("  3 GBIT ", 3_000_000_000),
        ("100bit", 100),
        ("1.5mbit", 1_500_000),
        ("0.5kbit", 500),
        (".25kbit", 250),
        ("7.kbit", 7000),
        ("1tbit", 10**12),
        ("1kibit", 1024),
        ("2mibit", 2 * 1024**2),
        ("1gibit", 1024**3),
        ("1 GiBit", 1024**3),
    ],
)
def test_parse_rate(text: str, bits: int) -> None:
    assert b.parse_rate(text) == bits


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20", r"needs a unit: a bare number is ambiguous"),
        (20, r"needs a unit: a bare number is ambiguous; write it like '20mbit'"),
        (True, r"is not a rate"),
        (None, r"is not a rate"),
        (1.5, r"is not a rate"),
        ("", r"is not a rate"),
        ("mbit", r"is not a rate"),
        ("20 mbit/s", r"is not a rate"),
        ("0mbit", r"is not a positive rate"),
        ("0.0kbit", r"is not a positive rate"),
        ("-5mbit", r"is negative"),
        ("1.5bit", r"not a whole number of bits per second"),
        ("1.0001kbit", r"not a whole number of bits per second"),
        ("0.3kibit", r"not a whole number of bits per second"),
        ("1001gbit", r"above 1tbit"),
        ("1e6bit", r"is not a rate"),
        ("20 furlongs", r"unknown unit 'furlongs'"),
    ],
)
def test_parse_rate_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"^grid_bandwidth_classes\.lab\.up: .*" + message):
        b.parse_rate(value, name="grid_bandwidth_classes.lab.up")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "as_bits", "as_bytes"),
    [
        ("20Mbps", "20mbit", "160mbit"),
        ("20MBps", "20mbit", "160mbit"),
        ("20mbps", "20mbit", "160mbit"),
        ("20 MBPS", "20mbit", "160mbit"),
        ("2.5Mbps", "2.5mbit", "20mbit"),
        ("1bps", "1bit", "8bit"),
        ("64kbps", "64kbit", "512kbit"),
        ("64Kbps", "64kbit", "512kbit"),
        ("1Gbps", "1gbit", "8gbit"),
        ("0.1tbps", "0.1tbit", "0.8tbit"),
        ("1KiBps", "1kibit", "8kibit"),
        ("0.5mibps", "0.5mibit", "4mibit"),
        ("1GiBps", "1gibit", "8gibit"),
        ("0.0625tibps", "0.0625tibit", "0.5tibit"),
    ],
)
def test_byte_units_are_refused_as_ambiguous(text: str, as_bits: str, as_bytes: str) -> None:
    """tc reads 'mbps' as megaBYTES; an admin writing '20 Mbps' means megabits. Refuse both
    readings' spelling and show the two unambiguous forms, each one the parser accepts."""
    with pytest.raises(ValueError, match=r"^grid_bandwidth_classes\[standard\]\.down: ") as info:
        b.parse_rate(text, name="grid_bandwidth_classes[standard].down")
    message = str(info.value)
    assert "is ambiguous" in message
    assert f"write '{as_bits}' for" in message
    assert f"or '{as_bytes}' for" in message
    assert b.parse_rate(as_bytes) == b.parse_rate(as_bits) * 8


def test_every_byte_unit_in_every_case_is_refused() -> None:
    for unit in b.BYTE_UNITS:
        for spelling in {
            unit,
            unit.upper(),
            unit.capitalize(),
            unit[:-3].upper() + "bps",
            unit[:-3].upper() + "Bps",
            unit[:-3] + "Bps",
        }:
            with pytest.raises(ValueError, match="is ambiguous"):
                b.parse_rate(f"8{spelling}", name="r")


def test_parse_rate_unknown_unit_lists_accepted_units() -> None:
    with pytest.raises(ValueError, match="unknown unit") as info:
        b.parse_rate("20mbitt", name="grid_bandwidth_classes.standard.down")
    message = str(info.value)
    assert message.startswith(
        "grid_bandwidth_classes.standard.down: unknown unit 'mbitt' in '20mbitt' "
        "(use bit, kbit, mbit, gbit, "
    )
    assert all(unit in message for unit in b.UNITS)


def test_as_bits_takes_ints_as_bits_and_parses_strings() -> None:
    assert b.as_bits(1500) == 1500
    assert b.as_bits("1500kbit") == 1_500_000
    with pytest.raises(ValueError, match=r"^cap: 0 is not a positive rate"):
        b.as_bits(0, name="cap")
    with pytest.raises(ValueError, match=r"^cap: True is not a rate"):
        b.as_bits(True, name="cap")


@pytest.mark.parametrize(
    ("bits", "tc", "pfsense", "vbox"),
    [
        (20_000_000, "20mbit", {"bw": 20, "bwscale": "Mb"}, "20m"),
        (1_500_000, "1500kbit", {"bw": 1500, "bwscale": "Kb"}, "1500k"),
        (1_000_000_000, "1gbit", {"bw": 1000, "bwscale": "Mb"}, "1g"),
        (2_500_000_000, "2500mbit", {"bw": 2500, "bwscale": "Mb"}, "2500m"),
        (64_000, "64kbit", {"bw": 64, "bwscale": "Kb"}, "64k"),
        (10**12, "1000gbit", {"bw": 1_000_000, "bwscale": "Mb"}, "1000g"),
    ],
)
def test_renderings(bits: int, tc: str, pfsense: dict[str, object], vbox: str) -> None:
    assert b.tc_rate(bits) == tc
    assert b.pfsense_bandwidth(bits) == pfsense
    assert b.vbox_limit(bits) == vbox


def test_renderings_of_rates_below_a_kilobit() -> None:
    assert b.tc_rate(1001) == "1001bit"
    assert b.pfsense_bandwidth(1001) == {"bw": 1001, "bwscale": "b"}
    with pytest.raises(ValueError, match=r"^v: 1001 bit/s is not a whole number of kbit/s; Virt"):
        b.vbox_limit(1001, name="v")


@pytest.mark.parametrize("render", [b.tc_rate, b.pfsense_bandwidth, b.vbox_limit])
@pytest.mark.parametrize("bad", [0, -1000, True, "20mbit", 10**12 + 1000])
def test_renderings_reject_non_rates(render: object, bad: object) -> None:
    with pytest.raises(ValueError, match=r"^rate: "):
        render(bad, name="rate")  # type: ignore[operator]


rates = st.integers(1, b.MAX_RATE_BITS)
kilobit_rates = st.integers(1, b.MAX_RATE_BITS // 1000).map(lambda k: k * 1000)


@given(rates)
def test_tc_rate_round_trips(bits: int) -> None:
    assert b.parse_rate(b.tc_rate(bits)) == bits


@given(rates)
def test_pfsense_round_trips(bits: int) -> None:
    rendered = b.pfsense_bandwidth(bits)
    assert rendered["bwscale"] in ("b", "Kb", "Mb")
    assert rendered["bw"] >= 1
    assert b.parse_rate(f"{rendered['bw']}{PFSENSE_TO_TC[rendered['bwscale']]}") == bits


@given(kilobit_rates)
def test_vbox_round_trips(bits: int) -> None:
    rendered = b.vbox_limit(bits)
    number, suffix = rendered[:-1], rendered[-1]
    assert number.isdigit()
    assert b.parse_rate(f"{number}{VBOX_TO_TC[suffix]}") == bits


@given(st.integers(1, 10**6), st.sampled_from(sorted(b.UNITS)), st.booleans())
def test_parse_rate_any_unit_any_case(number: int, unit: str, upper: bool) -> None:
    expected = number * b.UNITS[unit]
    text = f"{number} {unit.upper() if upper else unit}"
    if expected > b.MAX_RATE_BITS:
        with pytest.raises(ValueError, match="above 1tbit"):
            b.parse_rate(text)
    else:
        assert b.parse_rate(text) == expected


@given(st.integers(1, 10**7), st.integers(1, 4), st.sampled_from(sorted(b.UNITS)))
def test_parse_rate_decimals_exact_or_refused(digits: int, places: int, unit: str) -> None:
    whole, frac = divmod(digits, 10**places)
    text = f"{whole}.{str(frac).zfill(places)}{unit}"
    scaled = digits * b.UNITS[unit]
    if scaled % 10**places:
        with pytest.raises(ValueError, match="not a whole number of bits per second"):
            b.parse_rate(text)
    elif scaled // 10**places > b.MAX_RATE_BITS:
        with pytest.raises(ValueError, match="above 1tbit"):
            b.parse_rate(text)
    else:
        assert b.parse_rate(text) * 10**places == scaled

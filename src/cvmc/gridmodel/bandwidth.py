"""Bandwidth caps: parse rate strings in tc(8) units and render them for tc, pfSense, VirtualBox.

All rates are integers in bits per second. Units are tc(8)'s bit units: ``bit``/``kbit``/``mbit``/
``gbit``/``tbit`` are bits per second in SI steps (x1000), ``kibit``... are binary steps (x1024).

tc(8) also reads ``bps``/``kbps``/``mbps``/... as **bytes** per second (x8), but the everyday
"20 Mbps" means 20 megabits: an admin who writes it would get a cap eight times higher than
meant, silently. Those spellings are refused in any case (``Mbps``, ``MBps``, ``mbps``, ``kibps``
...), and the message shows the two unambiguous forms (``20mbit``, or ``160mbit`` for 20
megabytes per second); see :data:`BYTE_UNITS`.

Every function is pure (standard library only, no I/O) and raises ``ValueError`` with a message
that starts with the name of the variable being checked.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal, TypedDict

__all__ = [
    "BYTE_UNITS",
    "MAX_RATE_BITS",
    "UNITS",
    "PfsenseBandwidth",
    "as_bits",
    "parse_rate",
    "pfsense_bandwidth",
    "tc_rate",
    "vbox_limit",
]

#: The largest rate accepted anywhere: 1 tbit/s.
MAX_RATE_BITS = 10**12

_K, _KI = 1000, 1024

#: The accepted units: tc(8)'s bit units (lowercase; matched in any case) -> bits per second.
UNITS: dict[str, int] = {
    "bit": 1,
    "kbit": _K,
    "mbit": _K**2,
    "gbit": _K**3,
    "tbit": _K**4,
    "kibit": _KI,
    "mibit": _KI**2,
    "gibit": _KI**3,
    "tibit": _KI**4,
}

#: tc(8)'s byte units (bytes per second, x8), refused as ambiguous in every spelling: the unit
#: -> bits per second of one unit as tc would read it.
BYTE_UNITS: dict[str, int] = {
    "bps": 8,
    "kbps": 8 * _K,
    "mbps": 8 * _K**2,
    "gbps": 8 * _K**3,
    "tbps": 8 * _K**4,
    "kibps": 8 * _KI,
    "mibps": 8 * _KI**2,
    "gibps": 8 * _KI**3,
    "tibps": 8 * _KI**4,
}

_RATE_RE = re.compile(r"(?P<sign>-)?(?P<int>\d*)(?:\.(?P<frac>\d*))?\s*(?P<unit>[A-Za-z]*)")

# (suffix, bits per unit), largest first, for the renderings.
_TC_UNITS = (("gbit", _K**3), ("mbit", _K**2), ("kbit", _K), ("bit", 1))
_PFSENSE_UNITS: tuple[tuple[Literal["Mb", "Kb", "b"], int], ...] = (
    ("Mb", _K**2),
    ("Kb", _K),
    ("b", 1),
)
_VBOX_UNITS = (("g", _K**3), ("m", _K**2), ("k", _K))


class PfsenseBandwidth(TypedDict):
    """pfSense REST API v2 limiter bandwidth: ``bw`` (>= 1) in ``bwscale`` units."""

    bw: int
    bwscale: Literal["b", "Kb", "Mb"]


def _units_hint() -> str:
    return ", ".join(UNITS)


_PREFIX_WORDS = {
    "": "",
    "k": "kilo",
    "m": "mega",
    "g": "giga",
    "t": "tera",
    "ki": "kibi",
    "mi": "mebi",
    "gi": "gibi",
    "ti": "tebi",
}


def _byte_unit_problem(value: str, number: str, unit: str, name: str) -> str:
    """The message for a tc byte unit (``20Mbps``): both readings, spelled unambiguously."""
    prefix = unit.lower().removesuffix("bps")
    word = _PREFIX_WORDS[prefix]
    amount = Decimal(number)
    as_bits = f"{format(amount.normalize(), 'f')}{prefix}bit"
    as_bytes = f"{format((amount * 8).normalize(), 'f')}{prefix}bit"
    return (
        f"{name}: {value!r} is ambiguous: tc(8) reads '{unit.lower()}' as {word}bytes per "
        f"second (8 times '{prefix}bit'), but in everyday use 'bps' means bits per second; write "
        f"'{as_bits}' for {number} {word}bits per second, or '{as_bytes}' for {number} "
        f"{word}bytes per second"
    )


def _check_range(bits: int, value: object, name: str) -> int:
    if bits <= 0:
        raise ValueError(f"{name}: {value!r} is not a positive rate")
    if bits > MAX_RATE_BITS:
        raise ValueError(f"{name}: {value!r} is above 1tbit, an implausible bandwidth cap")
    return bits


def parse_rate(value: str | int, *, name: str = "value") -> int:
    """Bits per second of a tc(8) rate string such as ``"20mbit"`` or ``"1.5 Mbit"``.

    Units are tc's bit units, case-insensitive, and may be separated from the number by
    whitespace. A decimal number is accepted when the result is a whole number of bits per
    second. A bare number (or an int) is refused because its unit would be a guess; so are tc's
    byte units (``mbps`` ... in any case, see :data:`BYTE_UNITS`), zero, negative rates and
    rates above 1 tbit.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{name}: {value!r} is not a rate; write it like '20mbit'")
    if isinstance(value, int):
        raise ValueError(
            f"{name}: {value!r} needs a unit: a bare number is ambiguous; write it like "
            f"'{value}mbit' or '{value}kbit' (use {_units_hint()})"
        )
    text = value.strip()
    match = _RATE_RE.fullmatch(text)
    if not match or not (match["int"] or match["frac"]):
        raise ValueError(f"{name}: {value!r} is not a rate; write it like '20mbit'")
    if match["sign"]:
        raise ValueError(f"{name}: {value!r} is negative; a rate must be positive")
    unit = match["unit"]
    if not unit:
        raise ValueError(
            f"{name}: {value!r} needs a unit: a bare number is ambiguous; write it like "
            f"'{text}mbit' (use {_units_hint()})"
        )
    if unit.lower() in BYTE_UNITS:
        number = (match["int"] or "0") + (f".{match['frac']}" if match["frac"] else "")
        raise ValueError(_byte_unit_problem(value, number, unit, name))
    per_unit = UNITS.get(unit.lower())
    if per_unit is None:
        raise ValueError(f"{name}: unknown unit {unit!r} in {value!r} (use {_units_hint()})")
    frac = match["frac"] or ""
    scaled = int((match["int"] or "0") + frac) * per_unit
    divisor = 10 ** len(frac)
    if scaled % divisor:
        raise ValueError(
            f"{name}: {value!r} is not a whole number of bits per second; use a smaller unit"
        )
    return _check_range(scaled // divisor, value, name)


def as_bits(value: str | int, *, name: str = "value") -> int:
    """An int is taken as bits per second (checked for range); a string is parsed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _check_range(value, value, name)
    return parse_rate(value, name=name)


def _check_bits(bits: int, name: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"{name}: {bits!r} is not a whole number of bits per second")
    return _check_range(bits, bits, name)


def tc_rate(bits: int, *, name: str = "value") -> str:
    """tc(8) rate in the largest of gbit/mbit/kbit/bit that divides exactly: 20000000 -> 20mbit."""
    bits = _check_bits(bits, name)
    for suffix, size in _TC_UNITS:
        if bits % size == 0:
            return f"{bits // size}{suffix}"
    raise AssertionError("unreachable: 1 bit divides every rate")  # pragma: no cover


def pfsense_bandwidth(bits: int, *, name: str = "value") -> PfsenseBandwidth:
    """pfSense REST API v2 limiter bandwidth: largest of Mb/Kb/b that divides exactly."""
    bits = _check_bits(bits, name)
    for scale, size in _PFSENSE_UNITS:
        if bits % size == 0:
            return PfsenseBandwidth(bw=bits // size, bwscale=scale)
    raise AssertionError("unreachable: 1 bit divides every rate")  # pragma: no cover


def vbox_limit(bits: int, *, name: str = "value") -> str:
    """``VBoxManage bandwidthctl ... --limit`` value in bits: ``20m`` (megabits/s).

    VBoxManage reads a bare number as megabytes/s, ``k``/``m``/``g`` as kilo/mega/gigabits/s and
    ``K``/``M``/``G`` as kilo/mega/gigabytes/s; this renders the lowercase (bit) form with the
    largest suffix that divides exactly. Rates that are not whole kilobits/s cannot be expressed.
    """
    bits = _check_bits(bits, name)
    for suffix, size in _VBOX_UNITS:
        if bits % size == 0:
            return f"{bits // size}{suffix}"
    raise ValueError(
        f"{name}: {bits} bit/s is not a whole number of kbit/s; VirtualBox's bandwidth limit "
        "cannot express it (use a multiple of 1kbit)"
    )

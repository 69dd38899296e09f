"""The grid model's scalar settings: strict types and documented ranges.

Every consumer of a ``grid_*`` number or flag (the ``grid`` role's gate, the agent's
configuration parser, the coordinator's grid file parser) reads it through these functions, so
a value means the same thing everywhere and is refused the same way. Types are strict: a YAML
``yes`` is a boolean and never the number 1, ``"2"`` is a string and never the number 2, and
a flag is ``true`` or ``false``, never a string that looks like one.

Pure (standard library only, no I/O); every error is a ``ValueError`` whose message starts with
the variable it is about.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "GRID_NAME_PATTERN",
    "INSECURE_HTTP_VARIABLE",
    "LOW_PRIORITY_VARIABLE",
    "RANGES",
    "Range",
    "coordinator_url",
    "flag",
    "grid_name",
    "image_url",
    "refuse_unknown_keys",
    "setting",
    "unknown_keys",
    "whole_number",
]


@dataclass(frozen=True)
class Range:
    """The whole numbers a setting accepts (``maximum`` None: no upper bound) and why."""

    minimum: int
    maximum: int | None
    why: str

    def describe(self) -> str:
        if self.maximum is None:
            return f"a whole number of at least {self.minimum}"
        return f"a whole number from {self.minimum} to {self.maximum}"


#: A grid's name (``grid_name``): it becomes part of certificate, unit and file names.
GRID_NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")

#: Every integer setting of the grid model, by the variable's name as messages spell it. The
#: VM type fields are ``cvmc.gridmodel.catalogue``'s and listed there (``catalogue.RANGES``).
RANGES: dict[str, Range] = {
    "grid_max_vms_per_desktop": Range(
        1,
        64,
        "each VM of a desktop has its own fixed tunnel address and slot; the coordinator "
        "leases at most 64 VMs to one desktop",
    ),
    "grid_planned_desktops": Range(
        1, None, "the address plan is sized for it; a pool of no desktops needs no plan"
    ),
    "grid_host_memory_reserve_mb": Range(
        0, None, "memory left to the desktop's own OS; 0 gives VMs everything (not advised)"
    ),
    "grid_desktop_min_memory_mb": Range(
        1, None, "the smallest desktop RAM admitted; it must hold the reserve and every VM type"
    ),
    "grid_policy.min_battery_percent": Range(
        0, 100, "a battery charge in percent; 0 never stops grid load for the battery"
    ),
    "grid_policy.owner_idle_minutes": Range(
        0,
        1440,
        "minutes without keyboard or mouse input after which a logged-on owner no longer "
        "counts as present for user_present blackouts; 0 keeps the seed's rule (any logon "
        "counts)",
    ),
    "grid_policy.suspend_minutes": Range(
        0,
        30,
        "minutes a VM saved on its owner's return is kept for a resume; 0 shuts it down as "
        "before; at most 30, since its job reconnects only within HTCondor's 40-minute job "
        "lease",
    ),
    "grid_coordinator_enrol_token_ttl_s": Range(
        300,
        90 * 86_400,
        "an enrolment token's lifetime in seconds (cvmc.gridmodel.enrolment): 5 minutes to 90 days",
    ),
    "grid_coordinator_enrol_tokens_not_before": Range(
        0,
        253_402_300_799,
        "Unix seconds; the coordinator refuses enrolment tokens issued before it (set it when "
        "restoring a backup); 0 refuses none",
    ),
}


def _bool_hint(value: object) -> str:
    return (
        f"{value!r} is true or false, not a whole number (YAML reads an unquoted yes, no, on "
        "and off as booleans)"
    )


def whole_number(value: object, *, name: str, minimum: int, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` (never a ``bool``) within ``minimum``..``maximum``."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: {_bool_hint(value)}")
    if not isinstance(value, int):
        raise ValueError(f"{name}: {value!r} is not a whole number")
    if value < minimum or (maximum is not None and value > maximum):
        wanted = Range(minimum, maximum, "").describe()
        raise ValueError(f"{name}: {value} is out of range; give {wanted}")
    return int(value)


def setting(value: object, variable: str, *, name: str | None = None) -> int:
    """An integer setting of :data:`RANGES` (``variable``), checked against its range.

    ``name`` is the label used in messages when it differs from ``variable``.
    """
    bounds = RANGES[variable]
    return whole_number(
        value, name=name or variable, minimum=bounds.minimum, maximum=bounds.maximum
    )


def unknown_keys(raw: Mapping[object, object], known: Sequence[str], name: str) -> list[str]:
    """A message for each key of the mapping ``name`` that is not one of ``known``."""
    return [
        f"{name}.{key}: unknown key (known: {', '.join(known)}); check its spelling"
        for key in sorted(str(k) for k in raw if k not in known)
    ]


def refuse_unknown_keys(raw: Mapping[object, object], known: Sequence[str], name: str) -> None:
    """``ValueError`` with :func:`unknown_keys`' first message, if there is one."""
    problems = unknown_keys(raw, known, name)
    if problems:
        raise ValueError(problems[0])


def flag(value: object, *, name: str) -> bool:
    """``value`` if it is a ``bool``; a string such as ``'yes'`` is refused, not guessed."""
    if not isinstance(value, bool):
        raise ValueError(
            f"{name}: {value!r} is not true or false (write an unquoted true or false)"
        )
    return value


def grid_name(value: object, *, name: str = "grid_name") -> str:
    """The grid's short name: 1-63 letters, digits, '.', '_' or '-', starting alphanumeric."""
    if not isinstance(value, str) or not GRID_NAME_PATTERN.match(value):
        raise ValueError(
            f"{name}: {value!r} is not a grid name; use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes part of certificate and unit names)"
        )
    return value


_HOST = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


def coordinator_url(value: object, *, name: str = "grid_coordinator_url") -> str:
    """The coordinator's URL: ``https://`` with a host name, and nothing after the path.

    Agents send credentials to it and append the API's paths to it, so a query or fragment
    would break every request.
    """
    text = value if isinstance(value, str) else None
    try:
        parts = urlsplit(text) if text is not None else None
        port = parts.port if parts is not None else None
    except ValueError:
        parts, port = None, None
    if (
        text is None
        or parts is None
        or parts.scheme != "https"
        or not parts.hostname
        or not _HOST.match(parts.hostname)
        or parts.username is not None
        or parts.query
        or parts.fragment
        or (port is not None and not 1 <= port <= 65535)
    ):
        raise ValueError(
            f"{name}: {value!r} must be an https:// URL with a host name (and no user, query "
            "or fragment); agents send credentials to it"
        )
    return text


#: The grid model variable that lets agents fetch images over plain ``http://`` (a lab only).
INSECURE_HTTP_VARIABLE = "grid_images_allow_insecure_http"
#: The switch that runs VMs at nice 19 and the idle I/O class (false: the agent's priority).
LOW_PRIORITY_VARIABLE = "grid_vm_low_priority"


def image_url(value: object, *, allow_insecure_http: bool, name: str = "image URL") -> str:
    """An absolute URL agents may fetch an image from: ``https://`` with a host name.

    Integrity holds through the signed SHA-256 whatever the transport, but licensed research
    images must not travel in clear, so ``http://`` is refused unless the grid model sets
    ``grid_images_allow_insecure_http`` (a lab). The agent applies this to the catalogue's URL
    and to every redirect it follows; the coordinator to its ``images.base_url``.
    """
    text = value if isinstance(value, str) else None
    try:
        parts = urlsplit(text) if text is not None else None
        port = parts.port if parts is not None else None
    except ValueError:
        parts, port = None, None
    schemes = ("https", "http") if allow_insecure_http else ("https",)
    if parts is not None and parts.scheme == "http" and not allow_insecure_http:
        raise ValueError(
            f"{name}: {value!r} is plain http://; images travel only over https:// (set "
            f"{INSECURE_HTTP_VARIABLE}: true to allow http:// in a lab)"
        )
    if (
        text is None
        or parts is None
        or parts.scheme not in schemes
        or not parts.hostname
        or not _HOST.match(parts.hostname)
        or parts.username is not None
        or (port is not None and not 1 <= port <= 65535)
    ):
        raise ValueError(
            f"{name}: {value!r} is not an {' or '.join(s + '://' for s in schemes)} URL with a "
            "host name (and no user)"
        )
    return text

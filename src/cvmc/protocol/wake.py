"""The ``wake`` list of a heartbeat reply (``grid_wake_on_lan``): the sleeping desktops this
desktop is asked to wake with a magic packet. Untrusted input to the agent: bounded in count,
and each item a unicast MAC address, or the whole list is dropped."""

from __future__ import annotations

from collections.abc import Sequence

from cvmc.gridmodel.wake import parse_mac

__all__ = ["MAX_WAKE", "parse_wake"]

#: Most desktops one reply asks to wake.
MAX_WAKE = 16


def parse_wake(raw: object) -> tuple[str, ...]:
    """The reply's ``wake`` list (absent: empty); ``ValueError`` if it is malformed."""
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes) or len(raw) > MAX_WAKE:
        raise ValueError(f"heartbeat reply.wake: not a list of at most {MAX_WAKE} MAC addresses")
    macs: list[str] = []
    for i, item in enumerate(raw):
        mac = parse_mac(item)
        if mac is None or mac != item:
            raise ValueError(f"heartbeat reply.wake[{i}]: {item!r} is not a unicast MAC address")
        if mac not in macs:
            macs.append(mac)
    return tuple(macs)

"""Who is logged on, on Windows: the WTS API through ctypes.

``WTSEnumerateSessionsW`` lists every session; for each, ``WTSQuerySessionInformationW``
gives the user name (``WTSUserName``) and the protocol (``WTSClientProtocolType``: 0 console,
2 RDP). A session with a user counts whatever its state: active, connected, idle, or
*disconnected*, which is what fast user switching leaves behind when the owner switches to
another account, and what an RDP user leaves after closing the window without logging off.
Agents that look only at the active console session (the complaint of BOINC and
Folding@home users) miss both.

Idleness (``grid_policy.owner_idle_minutes``, opt-in) is ``WTSSessionInfoEx``'s: a
``WTSINFOEXW`` of level 1 gives the session's ``LastInputTime`` and ``CurrentTime`` (FILETIME,
100 ns units), and the session has been idle for their difference. Where Windows gives no last
input time (0, which some versions report for the console), or the record is short or
inconsistent, the idleness is unknown, and unknown counts as present: the seed's rule.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cvmc.agent.ports import Session, Sessions

__all__ = [
    "WTSINFOEXW",
    "WTS_SESSION_INFOW",
    "WindowsSessions",
    "WtsRecord",
    "classify_wts",
    "idle_seconds",
]

WTS_CURRENT_SERVER_HANDLE = 0
WTS_USER_NAME = 5
WTS_CLIENT_PROTOCOL_TYPE = 16
WTS_SESSION_INFO_EX = 25
# wtsapi32.h's string lengths (the arrays hold one more character, the terminating NUL).
WINSTATIONNAME_LENGTH = 32
USERNAME_LENGTH = 20
DOMAIN_LENGTH = 17
#: A FILETIME tick: 100 ns.
_TICKS_PER_S = 10_000_000
#: Idleness beyond this (a year) is taken as a bad record, not a fact.
_MAX_IDLE_S = 366 * 86400
STATES = {
    0: "active",
    1: "connected",
    2: "connectquery",
    3: "shadow",
    4: "disconnected",
    5: "idle",
    6: "listen",
    7: "reset",
    8: "down",
    9: "init",
}
PROTOCOL_RDP = 2


class WTS_SESSION_INFOW(ctypes.Structure):  # noqa: N801 - the Windows SDK's name
    """``{DWORD SessionId; LPWSTR pWinStationName; WTS_CONNECTSTATE_CLASS State;}``."""

    _fields_ = (
        ("SessionId", ctypes.c_uint32),
        ("pWinStationName", ctypes.c_wchar_p),
        ("State", ctypes.c_int),
    )


class WTSINFOEX_LEVEL1_W(ctypes.Structure):  # noqa: N801 - the Windows SDK's name
    """wtsapi32.h's ``WTSINFOEX_LEVEL1_W``."""

    _fields_ = (
        ("SessionId", ctypes.c_uint32),
        ("SessionState", ctypes.c_int),
        ("SessionFlags", ctypes.c_int32),
        # WCHAR is a UTF-16 code unit (c_wchar would be 4 bytes where this is tested).
        ("WinStationName", ctypes.c_uint16 * (WINSTATIONNAME_LENGTH + 1)),
        ("UserName", ctypes.c_uint16 * (USERNAME_LENGTH + 1)),
        ("DomainName", ctypes.c_uint16 * (DOMAIN_LENGTH + 1)),
        ("LogonTime", ctypes.c_int64),
        ("ConnectTime", ctypes.c_int64),
        ("DisconnectTime", ctypes.c_int64),
        ("LastInputTime", ctypes.c_int64),
        ("CurrentTime", ctypes.c_int64),
        ("IncomingBytes", ctypes.c_uint32),
        ("OutgoingBytes", ctypes.c_uint32),
        ("IncomingFrames", ctypes.c_uint32),
        ("OutgoingFrames", ctypes.c_uint32),
        ("IncomingCompressedBytes", ctypes.c_uint32),
        ("OutgoingCompressedBytes", ctypes.c_uint32),
    )


class WTSINFOEX_LEVEL_W(ctypes.Union):  # noqa: N801 - the Windows SDK's name
    _fields_ = (("WTSInfoExLevel1", WTSINFOEX_LEVEL1_W),)


class WTSINFOEXW(ctypes.Structure):
    """wtsapi32.h's ``WTSINFOEXW``: ``{DWORD Level; WTSINFOEX_LEVEL_W Data;}``."""

    _fields_ = (("Level", ctypes.c_uint32), ("Data", WTSINFOEX_LEVEL_W))


def idle_seconds(raw: bytes) -> float | None:
    """Seconds since the session's last input, from a ``WTSSessionInfoEx`` answer; None when
    Windows does not say (no last input time, a record of another level, a short or
    inconsistent one)."""
    if len(raw) < ctypes.sizeof(WTSINFOEXW):
        return None
    info = WTSINFOEXW.from_buffer_copy(raw[: ctypes.sizeof(WTSINFOEXW)])
    if info.Level != 1:
        return None
    level1 = info.Data.WTSInfoExLevel1
    last, current = level1.LastInputTime, level1.CurrentTime
    if last <= 0 or current < last:
        return None
    idle = (current - last) / _TICKS_PER_S
    return idle if idle <= _MAX_IDLE_S else None


@dataclass(frozen=True)
class WtsRecord:
    session_id: int
    station: str
    state: int
    user: str
    protocol: int
    idle_s: float | None = None  # with owner_idle_minutes only; None: unknown


def classify_wts(records: Iterable[WtsRecord]) -> list[Session]:
    """The user sessions among WTS records (pure; tested with recorded records)."""
    sessions = []
    for rec in records:
        if not rec.user or rec.state in (6, 8, 9):  # listener, down, init: nobody there
            continue
        if rec.protocol == PROTOCOL_RDP:
            kind = "rdp"
        elif rec.state == 4:
            kind = "switched"
        else:
            kind = "console"
        sessions.append(
            Session(user=rec.user, kind=kind, state=STATES.get(rec.state, "?"), idle_s=rec.idle_s)
        )
    return sessions


class WindowsSessions(Sessions):
    """``idle``: also read each user session's idleness (owner_idle_minutes > 0)."""

    def __init__(self, wtsapi32: Any = None, *, idle: bool = False) -> None:  # noqa: ANN401 - a ctypes library
        if wtsapi32 is None:  # pragma: no cover - Windows only
            wtsapi32 = ctypes.windll.wtsapi32  # type: ignore[attr-defined,unused-ignore]
        self.wts = wtsapi32
        self.idle = idle

    def _query(self, session_id: int, info_class: int) -> bytes:
        buffer = ctypes.c_void_p()
        size = ctypes.c_uint32()
        ok = self.wts.WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session_id,
            info_class,
            ctypes.byref(buffer),
            ctypes.byref(size),
        )
        if not ok or not buffer.value:
            return b""
        try:
            return ctypes.string_at(buffer.value, size.value)
        finally:
            self.wts.WTSFreeMemory(buffer)

    def records(self) -> list[WtsRecord]:
        pointer = ctypes.POINTER(WTS_SESSION_INFOW)()
        count = ctypes.c_uint32()
        if not self.wts.WTSEnumerateSessionsW(
            WTS_CURRENT_SERVER_HANDLE, 0, 1, ctypes.byref(pointer), ctypes.byref(count)
        ):
            raise OSError("WTSEnumerateSessionsW failed")
        try:
            infos = [
                (pointer[i].SessionId, pointer[i].pWinStationName or "", pointer[i].State)
                for i in range(count.value)
            ]
        finally:
            self.wts.WTSFreeMemory(pointer)
        records = []
        for session_id, station, state in infos:
            user = self._query(session_id, WTS_USER_NAME).decode("utf-16-le").rstrip("\0")
            raw = self._query(session_id, WTS_CLIENT_PROTOCOL_TYPE)
            protocol = int.from_bytes(raw[:2], "little") if len(raw) >= 2 else 0
            idle = None
            if self.idle and user:
                idle = idle_seconds(self._query(session_id, WTS_SESSION_INFO_EX))
            records.append(WtsRecord(session_id, station, state, user, protocol, idle))
        return records

    def sessions(self) -> list[Session]:
        return classify_wts(self.records())

"""Who is logged on, on Windows: the WTS API through ctypes.

``WTSEnumerateSessionsW`` lists every session; for each, ``WTSQuerySessionInformationW``
gives the user name (``WTSUserName``) and the protocol (``WTSClientProtocolType``: 0 console,
2 RDP). A session with a user counts whatever its state: active, connected, idle, or
*disconnected*, which is what fast user switching leaves behind when the owner switches to
another account, and what an RDP user leaves after closing the window without logging off.
Agents that look only at the active console session (the complaint of BOINC and
Folding@home users) miss both.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cvmc.agent.ports import Session, Sessions

__all__ = ["WTS_SESSION_INFOW", "WindowsSessions", "WtsRecord", "classify_wts"]

WTS_CURRENT_SERVER_HANDLE = 0
WTS_USER_NAME = 5
WTS_CLIENT_PROTOCOL_TYPE = 16
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


@dataclass(frozen=True)
class WtsRecord:
    session_id: int
    station: str
    state: int
    user: str
    protocol: int


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
        sessions.append(Session(user=rec.user, kind=kind, state=STATES.get(rec.state, "?")))
    return sessions


class WindowsSessions(Sessions):
    def __init__(self, wtsapi32: Any = None) -> None:  # noqa: ANN401 - a ctypes library
        if wtsapi32 is None:  # pragma: no cover - Windows only
            wtsapi32 = ctypes.windll.wtsapi32  # type: ignore[attr-defined,unused-ignore]
        self.wts = wtsapi32

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
            records.append(WtsRecord(session_id, station, state, user, protocol))
        return records

    def sessions(self) -> list[Session]:
        return classify_wts(self.records())

"""Who is logged on, on Linux: systemd-logind's session records, or utmp without logind.

logind keeps one file per session in ``/run/systemd/sessions`` (``KEY=value`` lines: ``USER``,
``CLASS``, ``STATE``, ``ACTIVE``, ``REMOTE``, ``SERVICE``, ``TYPE``). A person's session that is
not closing counts, whether it is on the console, switched away (``ACTIVE=0``), over SSH or over
xrdp.

Which sessions are a person's is logind's session class (pam_systemd(8), ``class=``). Until
systemd 255 a logon is ``user``; systemd 256 added ``user-early`` (the default for root's
logons, which may start before systemd-user-sessions.service) and ``user-incomplete`` (a logon
not fully set up yet, upgraded to ``user`` once it is), and 258 ``user-light`` and
``user-early-light`` (a logon that does not start the user's service manager). Every
``user*`` class is a person at the console or over SSH, so it counts. ``greeter`` and
``lock-screen`` (the display manager's own sessions), ``background`` and ``background-light``
(cron, ``ssh host command`` without a terminal, Ansible) and ``manager`` / ``manager-early``
(user@.service) are no one at the desktop, so they do not. A class this module does not know
counts when the session has a seat, a terminal or a remote host: a later systemd must not
hide an owner who logged on.

Reading a few small files once a second costs next to nothing. Without logind, utmp's
``USER_PROCESS`` records count (glibc's x86-64 ``struct utmp``, 384 bytes).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

from cvmc.agent.ports import Session, Sessions

__all__ = [
    "OTHER_CLASSES",
    "OWNER_CLASSES",
    "LinuxSessions",
    "classify_logind",
    "is_owner_class",
    "parse_utmp",
]

LOGIND_DIR = "/run/systemd/sessions"
UTMP = "/var/run/utmp"
UTMP_RECORD = struct.Struct("<hxxi32s4s32s256shhiii4i20s")
USER_PROCESS = 7


def _read_record(path: str) -> dict[str, str]:
    record: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                record[key] = value
    return record


#: logind session classes of a person who logged on (pam_systemd(8); 256 and 258 added the
#: variants), and the classes of sessions that are no one at the desktop.
OWNER_CLASSES = frozenset(
    {"user", "user-early", "user-incomplete", "user-light", "user-early-light"}
)
OTHER_CLASSES = frozenset(
    {"greeter", "lock-screen", "background", "background-light", "manager", "manager-early", "none"}
)


def is_owner_class(record: Mapping[str, str]) -> bool:
    """Whether a logind record's class is a person's logon (see the module docstring)."""
    klass = record.get("CLASS", "user")
    if klass in OWNER_CLASSES:
        return True
    if klass in OTHER_CLASSES:
        return False
    return bool(record.get("SEAT") or record.get("TTY") or record.get("REMOTE") == "1")


def classify_logind(record: Mapping[str, str]) -> Session | None:
    """A Session for a logind record of a person's session, else None."""
    if not is_owner_class(record) or record.get("STATE") == "closing":
        return None
    user = record.get("USER") or f"uid {record.get('UID', '?')}"
    service = record.get("SERVICE", "")
    if "rdp" in service:
        kind = "rdp"
    elif record.get("REMOTE") == "1":
        kind = "ssh" if "ssh" in service else "remote"
    elif record.get("TYPE") == "tty":
        kind = "tty"
    elif record.get("ACTIVE") == "0":
        kind = "switched"
    else:
        kind = "console"
    return Session(user=user, kind=kind, state=record.get("STATE", "unknown"))


def parse_utmp(data: bytes) -> list[Session]:
    """USER_PROCESS records of a utmp file."""
    sessions = []
    for offset in range(0, len(data) - UTMP_RECORD.size + 1, UTMP_RECORD.size):
        fields = UTMP_RECORD.unpack_from(data, offset)
        if fields[0] != USER_PROCESS:
            continue
        user = fields[4].split(b"\0", 1)[0].decode(errors="replace")
        line = fields[2].split(b"\0", 1)[0].decode(errors="replace")
        host = fields[5].split(b"\0", 1)[0].decode(errors="replace")
        if not user:
            continue
        kind = (
            "remote"
            if host and not host.startswith(":")
            else ("tty" if line.startswith("tty") else "console")
        )
        sessions.append(Session(user=user, kind=kind, state=line))
    return sessions


class LinuxSessions(Sessions):
    def __init__(self, logind_dir: str = LOGIND_DIR, utmp: str = UTMP) -> None:
        self.logind_dir = logind_dir
        self.utmp = utmp

    def sessions(self) -> list[Session]:
        if os.path.isdir(self.logind_dir):
            found = []
            for name in sorted(os.listdir(self.logind_dir)):
                if name.endswith(".ref"):
                    continue
                try:
                    session = classify_logind(_read_record(os.path.join(self.logind_dir, name)))
                except OSError:
                    continue  # the session closed while we looked
                if session is not None:
                    found.append(session)
            return found
        try:
            with open(self.utmp, "rb") as fh:
                return parse_utmp(fh.read())
        except FileNotFoundError:
            return []

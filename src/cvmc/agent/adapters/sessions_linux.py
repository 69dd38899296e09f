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

Idleness (``grid_policy.owner_idle_minutes``, opt-in) is logind's: ``loginctl show-session``
with ``IdleHint``, ``IdleSinceHint`` and ``IdleSinceHintMonotonic`` (microseconds). For a
session with a terminal, logind derives them from the terminal's access time, which input
moves; a graphical session's desktop environment sets them itself (``SetIdleHint``), and
then the session is idle since the monotonic stamp only while ``IdleHint`` is yes. A session
logind gives no stamp for, or that ``loginctl`` cannot answer for, has unknown idleness, which
counts as present. The answer is cached for :data:`IDLE_REFRESH_S`.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from cvmc.agent.ports import Session, Sessions

__all__ = [
    "OTHER_CLASSES",
    "OWNER_CLASSES",
    "LinuxSessions",
    "classify_logind",
    "is_owner_class",
    "parse_idle",
    "parse_utmp",
]

LOGIND_DIR = "/run/systemd/sessions"
UTMP = "/var/run/utmp"
UTMP_RECORD = struct.Struct("<hxxi32s4s32s256shhiii4i20s")
USER_PROCESS = 7
#: How long one reading of the sessions' idleness is used (the owner's return is seen within it).
IDLE_REFRESH_S = 5.0
LOGINCTL = "/usr/bin/loginctl"
IDLE_PROPERTIES = ("Id", "Type", "IdleHint", "IdleSinceHintMonotonic")
GRAPHICAL_TYPES = frozenset({"x11", "wayland", "mir"})
#: Bounds on what ``loginctl`` may print (64 KiB) and on a session id's length.
_MAX_OUTPUT = 64 * 1024


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


def parse_idle(text: str, now_monotonic_us: int) -> dict[str, float | None]:
    """Seconds idle per session id from ``loginctl show-session -p Id -p Type -p IdleHint -p
    IdleSinceHintMonotonic ID...`` output (one block per session, blank-line separated).

    None: logind gives no stamp (0), a graphical session is not idle by its own hint, or the
    stamp lies in the future; such a session counts as present.
    """
    found: dict[str, float | None] = {}
    for block in text[:_MAX_OUTPUT].split("\n\n"):
        props: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        session = props.get("Id", "")
        if not session or len(session) > 64:
            continue
        stamp = props.get("IdleSinceHintMonotonic", "0")
        since = int(stamp) if stamp.isdigit() else 0
        graphical = props.get("Type") in GRAPHICAL_TYPES
        if since <= 0 or since > now_monotonic_us or (graphical and props.get("IdleHint") != "yes"):
            found[session] = None
        else:
            found[session] = (now_monotonic_us - since) / 1e6
    return found


def _loginctl(ids: Sequence[str]) -> str:
    """``loginctl show-session`` for ``ids``; what it printed, even when one id has gone."""
    done = subprocess.run(  # noqa: S603 - fixed argv, ids from logind's own directory
        [
            LOGINCTL,
            "show-session",
            *(arg for prop in IDLE_PROPERTIES for arg in ("-p", prop)),
            "--",
            *ids,
        ],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
        stdin=subprocess.DEVNULL,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    return done.stdout


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
    """``idle``: also read each session's idleness from logind (owner_idle_minutes > 0)."""

    def __init__(
        self,
        logind_dir: str = LOGIND_DIR,
        utmp: str = UTMP,
        *,
        idle: bool = False,
        show: Callable[[Sequence[str]], str] = _loginctl,
        monotonic_us: Callable[[], int] = lambda: time.monotonic_ns() // 1000,
    ) -> None:
        self.logind_dir = logind_dir
        self.utmp = utmp
        self.idle = idle
        self._show = show
        self._monotonic_us = monotonic_us
        self._idle_cache: tuple[int, tuple[str, ...], dict[str, float | None]] | None = None

    def _idleness(self, ids: tuple[str, ...]) -> dict[str, float | None]:
        now = self._monotonic_us()
        cached = self._idle_cache
        if cached is not None and cached[1] == ids and now - cached[0] < IDLE_REFRESH_S * 1e6:
            age = (now - cached[0]) / 1e6
            return {k: (None if v is None else v + age) for k, v in cached[2].items()}
        try:
            found = parse_idle(self._show(ids), now) if ids else {}
        except (OSError, subprocess.SubprocessError):
            found = {}  # no loginctl, or no answer: every session counts as present
        self._idle_cache = (now, ids, found)
        return found

    def sessions(self) -> list[Session]:
        if os.path.isdir(self.logind_dir):
            named: list[tuple[str, Session]] = []
            for name in sorted(os.listdir(self.logind_dir)):
                if name.endswith(".ref"):
                    continue
                try:
                    session = classify_logind(_read_record(os.path.join(self.logind_dir, name)))
                except OSError:
                    continue  # the session closed while we looked
                if session is not None:
                    named.append((name, session))
            if not self.idle:
                return [session for _, session in named]
            idle = self._idleness(tuple(name for name, _ in named))
            return [replace(session, idle_s=idle.get(name)) for name, session in named]
        try:
            with open(self.utmp, "rb") as fh:
                return parse_utmp(fh.read())
        except FileNotFoundError:
            return []

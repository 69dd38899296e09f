"""logind session classes (pam_systemd(8)): which count as an owner present.

Pure code on records in logind's format. Which classes real logons produce on Debian 12
(systemd 252) and Debian 13 (systemd 257) is checked for real in molecule `linux_desktop`
(verify opens logind sessions through PAM and reads them back with LinuxSessions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from cvmc.agent.adapters.sessions_linux import (
    OTHER_CLASSES,
    OWNER_CLASSES,
    LinuxSessions,
    classify_logind,
    is_owner_class,
    parse_idle,
)
from cvmc.agent.ports import Session


def record(**fields: str) -> dict[str, str]:
    base = {"UID": "1000", "USER": "owner", "STATE": "active", "ACTIVE": "1"}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("klass", "fields", "kind"),
    [
        # systemd <= 255 and later: a console or SSH logon
        ("user", {"TYPE": "tty", "TTY": "tty1", "SEAT": "seat0"}, "tty"),
        ("user", {"TYPE": "tty", "REMOTE": "1", "SERVICE": "sshd"}, "ssh"),
        # 256: root's logons, and logons still being set up
        ("user-early", {"TYPE": "tty", "TTY": "tty1", "SEAT": "seat0"}, "tty"),
        ("user-early", {"TYPE": "tty", "REMOTE": "1", "SERVICE": "sshd"}, "ssh"),
        ("user-incomplete", {"TYPE": "wayland", "SEAT": "seat0"}, "console"),
        # 258: logons that do not start the user's service manager
        ("user-light", {"TYPE": "tty", "REMOTE": "1", "SERVICE": "sshd"}, "ssh"),
        ("user-early-light", {"TYPE": "tty", "TTY": "tty2"}, "tty"),
    ],
)
def test_every_user_class_is_an_owner(klass: str, fields: dict[str, str], kind: str) -> None:
    session = classify_logind(record(CLASS=klass, **fields))
    assert session == Session("owner", kind, "active")


@pytest.mark.parametrize(
    "klass",
    [
        "greeter",
        "lock-screen",
        "background",
        "background-light",
        "manager",
        "manager-early",
        "none",
    ],
)
def test_background_manager_and_greeter_sessions_are_no_owner(klass: str) -> None:
    # Even with a seat or a remote host (a greeter has a seat; cron over nothing; `ssh host
    # command` without a terminal is background and remote).
    assert classify_logind(record(CLASS=klass, SEAT="seat0", REMOTE="1", TTY="tty1")) is None


def test_the_class_sets_are_disjoint_and_name_pam_systemds_classes() -> None:
    assert not OWNER_CLASSES & OTHER_CLASSES
    assert all(c.startswith("user") for c in OWNER_CLASSES)
    assert not any(c.startswith("user") for c in OTHER_CLASSES)


def test_an_unknown_class_counts_when_it_has_a_seat_a_terminal_or_a_remote_host() -> None:
    assert is_owner_class(record(CLASS="user-future", SEAT="seat0"))
    assert is_owner_class(record(CLASS="something-new", TTY="pts/0"))
    assert is_owner_class(record(CLASS="something-new", REMOTE="1"))
    assert not is_owner_class(record(CLASS="something-new"))


def test_a_record_without_class_is_a_user_session_as_before() -> None:
    assert classify_logind(record(TYPE="x11", SEAT="seat0")) == Session(
        "owner", "console", "active"
    )


def test_a_closing_owner_session_does_not_count() -> None:
    assert classify_logind(record(CLASS="user-early", STATE="closing")) is None


# -- idleness (grid_policy.owner_idle_minutes), from `loginctl show-session` -----------------
# The format: one KEY=value block per session, blocks separated by a blank line (loginctl(1),
# `show-session` with several ids). Real logind answers are read in molecule linux_desktop.
NOW_US = 10_000_000_000  # CLOCK_MONOTONIC, microseconds


def block(sid: str, kind: str, hint: str, since_us: int) -> str:
    return f"Id={sid}\nType={kind}\nIdleHint={hint}\nIdleSinceHintMonotonic={since_us}\n"


def test_parse_idle_reads_terminal_stamps_and_graphical_hints() -> None:
    text = "\n".join(
        [
            block("3", "tty", "no", NOW_US - 90_000_000),  # a terminal: its last input
            block("4", "x11", "yes", NOW_US - 1_200_000_000),  # a desktop idle by its hint
            block("5", "wayland", "no", NOW_US - 1_200_000_000),  # a desktop in use
            block("6", "tty", "no", 0),  # logind has no stamp
            block("7", "tty", "no", NOW_US + 5),  # a stamp in the future
        ]
    )
    assert parse_idle(text, NOW_US) == {"3": 90.0, "4": 1200.0, "5": None, "6": None, "7": None}


def test_parse_idle_ignores_garbage_and_bounds_its_input() -> None:
    assert parse_idle("", NOW_US) == {}
    assert parse_idle("Failed to get session: No such session\n", NOW_US) == {}
    assert parse_idle("Id=" + "9" * 100 + "\nType=tty\nIdleSinceHintMonotonic=1\n", NOW_US) == {}
    assert parse_idle(block("3", "tty", "no", 1) + "x" * 200_000, NOW_US) == {
        "3": (NOW_US - 1) / 1e6
    }
    # A non-numeric stamp is no stamp.
    assert parse_idle("Id=3\nType=tty\nIdleSinceHintMonotonic=-5\n", NOW_US) == {"3": None}


def logind_dir(tmp_path: Path, sessions: dict[str, dict[str, str]]) -> str:
    for sid, fields in sessions.items():
        (tmp_path / sid).write_text("".join(f"{k}={v}\n" for k, v in record(**fields).items()))
    return str(tmp_path)


def test_linux_sessions_asks_logind_only_when_the_rule_is_on_and_caches(tmp_path: Path) -> None:
    path = logind_dir(tmp_path, {"3": {"TTY": "pts/0", "TYPE": "tty"}, "4": {"TYPE": "x11"}})
    asked: list[tuple[str, ...]] = []
    clock = [NOW_US]

    def show(ids: Sequence[str]) -> str:
        asked.append(tuple(ids))
        return block("3", "tty", "no", NOW_US - 60_000_000) + "\n" + block("4", "x11", "no", 1)

    off = LinuxSessions(path, idle=False, show=show, monotonic_us=lambda: clock[0])
    assert [s.idle_s for s in off.sessions()] == [None, None]
    assert asked == []
    on = LinuxSessions(path, idle=True, show=show, monotonic_us=lambda: clock[0])
    assert [(s.user, s.idle_s) for s in on.sessions()] == [("owner", 60.0), ("owner", None)]
    clock[0] += 2_000_000  # within the refresh: the cached reading, aged
    assert [s.idle_s for s in on.sessions()] == [62.0, None]
    assert asked == [("3", "4")]
    clock[0] += 10_000_000  # past it: asked again
    on.sessions()
    assert len(asked) == 2


def test_linux_sessions_counts_everyone_present_when_loginctl_fails(tmp_path: Path) -> None:
    path = logind_dir(tmp_path, {"3": {"TTY": "pts/0"}})

    def broken(_ids: Sequence[str]) -> str:
        raise FileNotFoundError("/usr/bin/loginctl")

    sessions = LinuxSessions(path, idle=True, show=broken).sessions()
    assert [(s.user, s.idle_s) for s in sessions] == [("owner", None)]

"""logind session classes (pam_systemd(8)): which count as an owner present.

Pure code on records in logind's format. Which classes real logons produce on Debian 12
(systemd 252) and Debian 13 (systemd 257) is checked for real in molecule `linux_desktop`
(verify opens logind sessions through PAM and reads them back with LinuxSessions).
"""

from __future__ import annotations

import pytest

from cvmc.agent.adapters.sessions_linux import (
    OTHER_CLASSES,
    OWNER_CLASSES,
    classify_logind,
    is_owner_class,
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

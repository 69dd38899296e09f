"""The sleep inhibitors (grid_policy.keep_awake): cvmc.agent.adapters.inhibit.

kind: real for the Linux adapter's process handling (real child processes: a stand-in for
systemd-inhibit that records its arguments and then runs the command it was given, as
systemd-inhibit does once logind grants the lock; one that is refused as logind refuses
without polkit; a missing binary; the agent SIGKILLed while it holds the lock). This machine
has no logind; the real logind and polkit grant the lock in molecule ``linux_desktop``
(`cvmc inhibit-probe` as the service account, inside the unit's sandbox).
kind: contract for Windows: SetThreadExecutionState's documented flags and return value.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cvmc.agent.adapters.inhibit import (
    ES_CONTINUOUS,
    ES_SYSTEM_REQUIRED,
    LogindInhibitor,
    WindowsInhibitor,
)


def stand_in(tmp_path: Path, *, refuse: bool = False) -> tuple[Path, Path]:
    """A systemd-inhibit stand-in: writes its argv, then execs the command after the options
    (or, refused, prints logind's message and exits 1)."""
    record = tmp_path / "argv"
    script = tmp_path / "systemd-inhibit"
    body = (
        'echo "Failed to inhibit: Access denied" >&2; exit 1'
        if refuse
        else 'while [ "${1#--}" != "$1" ]; do shift; done; exec "$@"'
    )
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n{body}\n')
    script.chmod(0o755)
    return script, record


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_hold_keeps_one_child_with_loginds_options_until_release(tmp_path: Path) -> None:
    script, record = stand_in(tmp_path)
    inhibitor = LogindInhibitor((str(script),), who="cvmc")
    assert inhibitor.hold("research VM a on this desktop")
    child = inhibitor._child
    assert child is not None
    assert alive(child.pid)
    assert record.read_text().splitlines() == [
        "--what=sleep",
        "--who=cvmc",
        "--why=research VM a on this desktop",
        "--mode=block",
        "sleep",
        "infinity",
    ]
    assert inhibitor.hold("again")  # idempotent: the same child
    assert inhibitor._child is child
    inhibitor.release()
    assert not alive(child.pid)
    assert not inhibitor.held
    inhibitor.release()  # idempotent


def test_a_child_that_died_is_replaced_at_the_next_hold(tmp_path: Path) -> None:
    script, _ = stand_in(tmp_path)
    inhibitor = LogindInhibitor((str(script),))
    assert inhibitor.hold("a")
    first = inhibitor._child
    assert first is not None
    first.kill()
    first.wait()
    assert not inhibitor.held
    assert inhibitor.hold("a")
    assert inhibitor._child is not first
    inhibitor.release()


def test_a_refusal_is_logged_once_and_the_agent_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cvmc")
    script, _ = stand_in(tmp_path, refuse=True)
    inhibitor = LogindInhibitor((str(script),))
    assert inhibitor.hold("a") is False
    assert inhibitor.hold("a") is False
    refused = [
        r.getMessage() for r in caplog.records if getattr(r, "event", "") == "inhibit.refused"
    ]
    assert len(refused) == 1
    assert "Access denied" in refused[0]
    assert not inhibitor.held


def test_a_missing_systemd_inhibit_is_a_refusal(tmp_path: Path) -> None:
    inhibitor = LogindInhibitor((str(tmp_path / "nowhere"),))
    assert inhibitor.hold("a") is False
    inhibitor.release()


def test_the_lock_dies_with_a_killed_agent(tmp_path: Path) -> None:
    """The child holds logind's lock by its file descriptor; PR_SET_PDEATHSIG ends it when the
    agent is SIGKILLed, so a crashed agent never keeps the desktop awake."""
    script, _ = stand_in(tmp_path)
    pid_file = tmp_path / "child.pid"
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from cvmc.agent.adapters.inhibit import LogindInhibitor
                inhibitor = LogindInhibitor(({str(script)!r},))
                assert inhibitor.hold("a")
                Path({str(pid_file)!r}).write_text(str(inhibitor._child.pid))
                time.sleep(60)
                """
            ),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert alive(child)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_windows_holds_system_sleep_with_the_documented_flags() -> None:
    calls: list[int] = []

    def set_state(flags: int) -> int:
        calls.append(flags)
        return ES_CONTINUOUS  # the previous state: success

    inhibitor = WindowsInhibitor(set_state)
    assert inhibitor.hold("a")
    assert inhibitor.hold("a")  # once
    inhibitor.release()
    inhibitor.release()
    assert calls == [0x80000001, 0x80000000]
    assert ES_CONTINUOUS | ES_SYSTEM_REQUIRED == 0x80000001


def test_windows_failure_is_a_refusal() -> None:
    inhibitor = WindowsInhibitor(lambda flags: 0)  # NULL: the call failed
    assert inhibitor.hold("a") is False
    inhibitor.release()  # nothing held: no call needed

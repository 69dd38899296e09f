"""Sleep inhibitors: the desktop stays awake while a research VM runs (``grid_policy.keep_awake``).

- Linux: a logind ``block`` inhibitor for ``sleep``, held by a ``systemd-inhibit`` child
  for as long as the agent wants it. logind lets an unprivileged service account take one
  only through polkit (``org.freedesktop.login1.inhibit-block-sleep``, which systemd grants only
  to an active session): role ``linux_desktop`` installs polkitd and a rule for the account.
  The lock lives as long as the child's file descriptor: the child dies with the agent
  (``PR_SET_PDEATHSIG``) and with the unit's cgroup, so a crashed agent never keeps a desktop
  awake.
- Windows: ``SetThreadExecutionState(ES_CONTINUOUS | ES_SYSTEM_REQUIRED)`` on the agent's
  loop thread (the state belongs to the calling thread), and ``ES_CONTINUOUS`` alone to
  release it. The display may still turn off: only system sleep is held.

Neither is fatal when refused: the agent logs it once and runs on (a desktop that sleeps
vacates its VMs as an owner's return would).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from cvmc.agent.logs import log_event
from cvmc.agent.ports import SleepInhibitor

__all__ = [
    "ES_CONTINUOUS",
    "ES_SYSTEM_REQUIRED",
    "LogindInhibitor",
    "WindowsInhibitor",
]

LOG = logging.getLogger("cvmc.agent.inhibit")

#: How long a refused systemd-inhibit takes at most to exit (polkit answers at once).
_SETTLE_S = 0.5
#: The child's reason is shown by ``systemd-inhibit --list``; logind bounds it, so do we.
_MAX_WHY = 200

#: SetThreadExecutionState's flags (winbase.h, documented by Microsoft).
ES_CONTINUOUS = 0x80000000
ES_SYSTEM_REQUIRED = 0x00000001


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class LogindInhibitor(SleepInhibitor):
    """A ``systemd-inhibit --mode=block`` child that holds logind's lock while it lives."""

    def __init__(self, command: Sequence[str] = ("systemd-inhibit",), who: str = "cvmc") -> None:
        self._command = list(command)
        self._who = who
        self._child: subprocess.Popen[bytes] | None = None
        self._refused_logged = False

    @property
    def held(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def hold(self, why: str) -> bool:
        if self.held:
            return True
        self._child = None
        argv = [
            *self._command,
            # sleep alone: it already stops an idle suspend, and systemd 252 (Debian 12) checks
            # a combined what= against a polkit action no rule of ours would name.
            "--what=sleep",
            f"--who={self._who}",
            f"--why={why[:_MAX_WHY]}",
            "--mode=block",
            "sleep",
            "infinity",
        ]
        try:
            child = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads touch it in the child
                close_fds=True,
            )
        except OSError as exc:
            self._refused(f"{argv[0]}: {exc.strerror or exc}")
            return False
        try:
            child.wait(timeout=_SETTLE_S)
        except subprocess.TimeoutExpired:
            # Still running: logind granted the lock. Its stderr stays unread, and it writes
            # nothing more while it only sleeps.
            self._child = child
            self._refused_logged = False
            log_event(LOG, logging.INFO, "inhibit.held", f"desktop kept awake: {why}")
            return True
        err = child.stderr.read(4096).decode("utf-8", "replace").strip() if child.stderr else ""
        if child.stderr:
            child.stderr.close()
        self._refused(f"systemd-inhibit exited {child.returncode}: {err or 'no message'}")
        return False

    def release(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stderr:
            child.stderr.close()
        log_event(LOG, logging.INFO, "inhibit.released", "the desktop may sleep again")

    def _refused(self, detail: str) -> None:
        if not self._refused_logged:
            log_event(
                LOG,
                logging.WARNING,
                "inhibit.refused",
                f"cannot keep the desktop awake ({detail}); it may sleep while VMs run",
            )
            self._refused_logged = True


class WindowsInhibitor(SleepInhibitor):
    """``SetThreadExecutionState``; call it from the agent's loop thread only."""

    def __init__(self, set_state: Callable[[int], int] | None = None) -> None:
        if set_state is None:  # pragma: no cover - Windows only
            if sys.platform != "win32":
                raise OSError("SetThreadExecutionState exists only on Windows")
            set_state = ctypes.windll.kernel32.SetThreadExecutionState
        self._set_state = set_state
        self._held = False
        self._refused_logged = False

    def hold(self, why: str) -> bool:
        if self._held:
            return True
        # The previous state on success, 0 (NULL) on failure.
        if self._set_state(ES_CONTINUOUS | ES_SYSTEM_REQUIRED) == 0:
            if not self._refused_logged:
                log_event(
                    LOG,
                    logging.WARNING,
                    "inhibit.refused",
                    "SetThreadExecutionState failed; the desktop may sleep while VMs run",
                )
                self._refused_logged = True
            return False
        self._held = True
        log_event(LOG, logging.INFO, "inhibit.held", f"desktop kept awake: {why}")
        return True

    def release(self) -> None:
        if not self._held:
            return
        self._set_state(ES_CONTINUOUS)
        self._held = False
        log_event(LOG, logging.INFO, "inhibit.released", "the desktop may sleep again")

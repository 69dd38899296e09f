"""Small platform adapters: the system clock, per-slot identities on disk, the status file."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from typing import Any

from cvmc.agent.adapters.files import write_private
from cvmc.agent.ports import Clock, Identities, SlotIdentity

__all__ = ["DirIdentities", "SystemClock", "write_status"]

VPN_FILES = ("client.conf", "ca.crt", "client.crt", "client.key", "tls-crypt.key")


class SystemClock(Clock):
    def now(self) -> dt.datetime:
        return dt.datetime.now()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if wake is None:
            time.sleep(max(seconds, 0.0))
        else:
            wake.wait(max(seconds, 0.0))


class DirIdentities(Identities):
    """``<dir>/slot<N>/{client.conf,ca.crt,client.crt,client.key,tls-crypt.key}`` (the VM's
    OpenVPN identity, ``cvmc.gridmodel.vpn``) and, optionally, a static HTCondor token in
    ``<dir>/slot<N>/condor.token`` (or one ``<dir>/condor.token`` for all slots), as the
    desktop roles deploy them (mode 0600, owned by the service account). A slot with its VPN
    files but no token is an identity without one: its VMs take the token their lease carries."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory

    def for_slot(self, slot: int) -> SlotIdentity | None:
        if not self.directory:
            return None
        slot_dir = os.path.join(self.directory, f"slot{slot}")
        files: dict[str, bytes] = {}
        try:
            for name in VPN_FILES:
                with open(os.path.join(slot_dir, name), "rb") as fh:
                    files[name] = fh.read()
        except OSError:
            return None
        token: bytes | None = None
        for token_path in (
            os.path.join(slot_dir, "condor.token"),
            os.path.join(self.directory, "condor.token"),
        ):
            try:
                with open(token_path, "rb") as fh:
                    token = fh.read()
            except FileNotFoundError:
                continue
            except OSError:
                return None  # there, but unreadable: not an identity to start a VM with
            break
        return SlotIdentity(files=files, condor_token=token)


def write_status(path: str, status: dict[str, Any]) -> None:
    """Write ``cvmc status``'s file atomically (readable by the desktop's admins)."""
    data = {**status, "updated": dt.datetime.now().astimezone().isoformat()}
    write_private(path, json.dumps(data, indent=1).encode(), 0o644)

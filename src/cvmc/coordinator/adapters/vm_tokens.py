"""Research VMs' HTCondor tokens from the minting service's unix socket (cvmc-vm-token).

The service runs as its own user and holds the signing key; the coordinator never reads it. Each
connection gives one token line and EOF. What comes back is bounded and checked against the
wire's token shape (``cvmc.protocol.leases``) before it is used: at most ``MAX_CONDOR_TOKEN``
bytes plus a newline, within one deadline for connect and read together.
"""

from __future__ import annotations

import socket
import time

from cvmc.coordinator.ports import VmTokenError, VmTokenSource
from cvmc.protocol.leases import CONDOR_TOKEN, MAX_CONDOR_TOKEN

__all__ = ["SocketVmTokens"]


class SocketVmTokens(VmTokenSource):
    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s

    def token(self) -> str:
        deadline = time.monotonic() + self.timeout_s
        data = bytearray()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(self.path)
                sock.shutdown(socket.SHUT_WR)  # the service reads nothing
                while len(data) <= MAX_CONDOR_TOKEN + 1:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise VmTokenError(f"{self.path}: no token within {self.timeout_s:g} s")
                    sock.settimeout(left)
                    chunk = sock.recv(MAX_CONDOR_TOKEN + 2 - len(data))
                    if not chunk:
                        break
                    data += chunk
        except TimeoutError:
            raise VmTokenError(f"{self.path}: no token within {self.timeout_s:g} s") from None
        except OSError as exc:
            raise VmTokenError(f"{self.path}: {exc.strerror or exc}") from None
        if len(data) > MAX_CONDOR_TOKEN + 1:
            raise VmTokenError(f"{self.path}: the reply is longer than a token")
        text = bytes(data).decode("ascii", "replace").removesuffix("\n")
        if not CONDOR_TOKEN.match(text):
            raise VmTokenError(f"{self.path}: the reply is not a token ({len(data)} bytes)")
        return text

"""A minimal QMP client (QEMU Machine Protocol over a unix socket): greeting, capabilities,
then one command at a time. Asynchronous events are skipped while waiting for a reply.

:class:`QmpSession` keeps one connection for several commands, and can pass a file
descriptor with a command (``SCM_RIGHTS``), as ``getfd`` needs: QEMU keeps such a descriptor
per connection, so the command that uses it (``migrate`` to ``fd:NAME``) must follow on the
same one.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Any, BinaryIO

from cvmc.protocol import loads_json

__all__ = ["QmpError", "QmpSession", "qmp_command"]

MAX_LINE = 1024 * 1024


class QmpError(RuntimeError):
    """QMP could not be reached or returned an error."""


class QmpSession:
    """One negotiated QMP connection."""

    def __init__(self, path: str, timeout_s: float = 5.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stream: BinaryIO | None = None
        try:
            self._sock.settimeout(timeout_s)
            self._sock.connect(path)
            self._stream = self._sock.makefile("rb")
            greeting = loads_json(self._stream.readline(MAX_LINE) or b"{}")
            if not isinstance(greeting, dict) or "QMP" not in greeting:
                raise QmpError(f"{path}: no QMP greeting")
            self.command("qmp_capabilities")
        except (OSError, ValueError) as exc:
            self.close()
            raise QmpError(f"{path}: {exc}") from exc
        except QmpError:
            self.close()
            raise

    def command(
        self, name: str, arguments: dict[str, Any] | None = None, fds: Sequence[int] = ()
    ) -> Any:  # noqa: ANN401 - QMP returns any JSON value
        """Run ``name`` (with ``fds`` passed alongside) and return its ``return`` value."""
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        data = json.dumps(message).encode() + b"\n"
        try:
            if fds:
                socket.send_fds(self._sock, [data], list(fds))
            else:
                self._sock.sendall(data)
            while True:
                assert self._stream is not None
                line = self._stream.readline(MAX_LINE)
                if not line:
                    raise QmpError(f"{self.path}: QEMU closed the connection during {name}")
                reply = loads_json(line)
                if not isinstance(reply, dict):
                    raise QmpError(f"{self.path}: a QMP message is not an object")
                if "event" in reply:
                    continue
                if "error" in reply:
                    raise QmpError(f"{name}: {reply['error'].get('desc', reply['error'])}")
                return reply.get("return")
        except (OSError, ValueError) as exc:
            raise QmpError(f"{self.path}: {name}: {exc}") from exc

    def close(self) -> None:
        """Close the connection (the socket stays open while its file object does)."""
        if self._stream is not None:
            self._stream.close()
        self._sock.close()

    def __enter__(self) -> QmpSession:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def qmp_command(
    path: str, command: str, arguments: dict[str, Any] | None = None, timeout_s: float = 5.0
) -> Any:  # noqa: ANN401 - QMP returns any JSON value
    """Connect, negotiate, run ``command`` and return its ``return`` value."""
    with QmpSession(path, timeout_s) as session:
        return session.command(command, arguments)

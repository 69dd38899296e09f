"""A minimal QMP client (QEMU Machine Protocol over a unix socket): greeting, capabilities,
then one command at a time. Asynchronous events are skipped while waiting for a reply."""

from __future__ import annotations

import json
import socket
from typing import Any

from cvmc.protocol import loads_json

__all__ = ["QmpError", "qmp_command"]

MAX_LINE = 1024 * 1024


class QmpError(RuntimeError):
    """QMP could not be reached or returned an error."""


def qmp_command(
    path: str, command: str, arguments: dict[str, Any] | None = None, timeout_s: float = 5.0
) -> Any:  # noqa: ANN401 - QMP returns any JSON value
    """Connect, negotiate, run ``command`` and return its ``return`` value."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            stream = sock.makefile("rwb")
            greeting = loads_json(stream.readline(MAX_LINE) or b"{}")
            if not isinstance(greeting, dict) or "QMP" not in greeting:
                raise QmpError(f"{path}: no QMP greeting")
            for name, args in (("qmp_capabilities", None), (command, arguments)):
                message: dict[str, Any] = {"execute": name}
                if args:
                    message["arguments"] = args
                stream.write(json.dumps(message).encode() + b"\n")
                stream.flush()
                while True:
                    line = stream.readline(MAX_LINE)
                    if not line:
                        raise QmpError(f"{path}: QEMU closed the connection during {name}")
                    reply = loads_json(line)
                    if not isinstance(reply, dict):
                        raise QmpError(f"{path}: a QMP message is not an object")
                    if "event" in reply:
                        continue
                    if "error" in reply:
                        raise QmpError(f"{name}: {reply['error'].get('desc', reply['error'])}")
                    break
            return reply.get("return")
    except (OSError, ValueError) as exc:
        raise QmpError(f"{path}: {exc}") from exc

"""Structured logs: one JSON object per line, with an ``event`` name and typed fields.

``log_event(logger, "vm.started", slot=0, vm_name=...)`` keeps call sites short; the
:class:`JsonFormatter` writes ``{"ts", "level", "event", "msg", ...fields}``. Secrets are
never passed as fields.

Standard error gets JSON when it is not a terminal (the service under systemd, whose journal
and log shippers parse it) and plain lines when a person reads it on a terminal
(:class:`TextFormatter`: ``cvmc: error: <message>``); ``--log-format json|text`` overrides
that. The log file, when configured, is always JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "log_event", "setup_logging"]

#: ``--log-format``'s choices: ``auto`` is text on a terminal, JSON otherwise.
LOG_FORMATS: tuple[str, ...] = ("auto", "json", "text")


def log_event(logger: logging.Logger, level: int, event: str, msg: str, **fields: object) -> None:
    """Log ``msg`` as ``event`` with ``fields``."""
    logger.log(level, msg, extra={"event": event, "fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """One plain line for a person: ``cvmc: <level>: <message> (field=value, ...)``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"cvmc: {record.levelname.lower()}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " (" + ", ".join(f"{key}={value}" for key, value in fields.items()) + ")"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _stream_format(fmt: str, stream: TextIO) -> logging.Formatter:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format: {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "text" if callable(isatty) and isatty() else "json"
    return TextFormatter() if fmt == "text" else JsonFormatter()


def setup_logging(
    level: int = logging.INFO,
    path: str | None = None,
    fmt: str = "auto",
    stream: TextIO | None = None,
) -> None:
    """Log to ``stream`` (standard error by default) in ``fmt``, and as JSON to ``path``."""
    out = stream if stream is not None else sys.stderr
    formatter = _stream_format(fmt, out)
    root = logging.getLogger("cvmc")
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(out)
    console.setFormatter(formatter)
    root.addHandler(console)
    if path:
        to_file = logging.FileHandler(path, encoding="utf-8")
        to_file.setFormatter(JsonFormatter())
        root.addHandler(to_file)
    root.propagate = False

"""Structured logs: one JSON object per line, with an ``event`` name and typed fields.

``log_event(logger, "vm.started", slot=0, vm_name=...)`` keeps call sites short; the
:class:`JsonFormatter` writes ``{"ts", "level", "event", "msg", ...fields}``. Secrets are
never passed as fields.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

__all__ = ["JsonFormatter", "log_event", "setup_logging"]


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


def setup_logging(level: int = logging.INFO, path: str | None = None) -> None:
    """JSON lines to stderr (and to ``path`` when given)."""
    root = logging.getLogger("cvmc")
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    root.propagate = False

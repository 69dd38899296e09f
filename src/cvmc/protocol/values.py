"""The wire's value rules: what a number or a string in a request or reply may hold.

JSON itself bounds nothing: ``1e308`` passes a JSON Schema ``integer`` check (it has no
fractional part), integers have no maximum, and strings may hold NUL and lone surrogates
(``"\\ud800"``). The coordinator's store refuses such values (PostgreSQL's ``int4`` and
``text``), or keeps them wrongly (SQLite stores a float in an integer column), so the schemas
bound every integer to what the store holds (``MAX_INT``), give free text ``TEXT_PATTERN``,
and ``problem`` checks what a schema cannot say: a number that is not finite, a lone
surrogate (and, with a clearer message than the schema's, a fraction where an integer is
wanted). An integer written as a float (``5.0``) is an integer for JSON Schema; once the schema
has bounded it, ``integers`` makes it a Python ``int``, so that no store keeps it as a float.
The coordinator runs ``problem`` on every request body before its schema check, and
``integers`` after it, before any write; the agent reads ``MAX_SEQ`` for its sequence numbers.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "MAX_INT",
    "MAX_SEQ",
    "SEQ_PATTERN",
    "TEXT_PATTERN",
    "integer",
    "integers",
    "is_seq",
    "problem",
    "text",
]

#: The largest integer a heartbeat's integer fields may hold: the store's ``int4`` columns.
MAX_INT = 2**31 - 1
#: The largest request sequence number (``X-CVMC-Seq``, ``last_seq``): 18 decimal digits, well
#: inside the store's ``bigint``.
MAX_SEQ = 10**18 - 1
#: ``X-CVMC-Seq``: a decimal number of 1 to 18 digits (at most ``MAX_SEQ``).
SEQ_PATTERN = r"^[0-9]{1,18}$"
#: Free text: anything but NUL (PostgreSQL's ``text`` cannot hold it). ``problem`` also refuses
#: lone surrogates, which no pattern can name.
TEXT_PATTERN = "^[^\\u0000]*$"

_SURROGATE = re.compile("[\ud800-\udfff]")


def integer(minimum: int = 0, maximum: int = MAX_INT) -> dict[str, Any]:
    """The schema of an integer field the store holds."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def text(max_length: int, *, nullable: bool = False) -> dict[str, Any]:
    """The schema of a free-text field of at most ``max_length`` characters."""
    kind: str | list[str] = ["string", "null"] if nullable else "string"
    return {"type": kind, "maxLength": max_length, "pattern": TEXT_PATTERN}


def is_seq(value: object) -> bool:
    """Whether ``value`` is a sequence number the coordinator can accept or answer."""
    return type(value) is int and 0 <= value <= MAX_SEQ


def _wants_integer(schema: Any) -> bool:  # noqa: ANN401 - a JSON schema node
    kind = schema.get("type") if isinstance(schema, dict) else None
    kinds = kind if isinstance(kind, list) else [kind]
    return "integer" in kinds and "number" not in kinds


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "holds NUL (U+0000)"
    if not value.isascii() and _SURROGATE.search(value):
        return "holds a lone surrogate (not UTF-8)"
    return None


def _value_problem(schema: Any, value: object) -> str | None:  # noqa: ANN401 - a JSON schema node
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "is not a finite number"
        if _wants_integer(schema) and not value.is_integer():
            return f"is not an integer (written as the number {value!r})"
    return None


def _clean(schema: dict[str, Any], payload: object) -> bool:
    """Whether ``payload`` keeps the rules: the fast pass (no paths built) of ``problem``."""
    stack: list[tuple[Any, Any]] = [(schema, payload)]
    pop, push, search = stack.pop, stack.append, _SURROGATE.search
    while stack:
        node, value = pop()
        kind = type(value)
        if kind is str:
            if "\x00" in value or (not value.isascii() and search(value)):
                return False
        elif kind is dict:
            properties = node.get("properties", {}) if type(node) is dict else {}
            for key, item in value.items():
                if "\x00" in key or (not key.isascii() and search(key)):
                    return False
                push((properties.get(key), item))
        elif kind is list:
            items = node.get("items") if type(node) is dict else None
            for item in value:
                push((items, item))
        elif kind is float and _value_problem(node, value) is not None:
            return False
    return True


def problem(schema: dict[str, Any], payload: object) -> str | None:
    """The first value of ``payload`` that breaks the wire's value rules, as ``"path: why"``
    (``state/users``, ``slots/0/reason``; ``(body)`` for the top), or ``None``.

    It walks the parsed value with an explicit stack (no recursion), following the schema's
    ``properties`` and ``items`` where it has them: every string and object key anywhere is
    checked, and a float where the schema wants an integer is refused. The schema's own check
    (types, bounds, lengths) comes after it. A clean body (nearly every one) takes one fast
    pass that builds no paths; only a refused one is walked again to name the value.
    """
    if _clean(schema, payload):
        return None
    stack: list[tuple[Any, object, str]] = [(schema, payload, "")]
    while stack:
        node, value, path = stack.pop()
        why = _value_problem(node, value)
        if why is not None:
            return f"{path or '(body)'}: {why}"
        if isinstance(value, dict):
            properties = node.get("properties", {}) if isinstance(node, dict) else {}
            for key, item in reversed(list(value.items())):
                where = f"{path}/{key}" if path else str(key)
                if isinstance(key, str) and (why := _string_problem(key)) is not None:
                    return f"{path or '(body)'}: a key {why}"
                stack.append((properties.get(key), item, where))
        elif isinstance(value, list):
            items = node.get("items") if isinstance(node, dict) else None
            for index in reversed(range(len(value))):
                stack.append((items, value[index], f"{path}/{index}" if path else str(index)))
    return None  # pragma: no cover - _clean and this walk apply the same rules


def integers(schema: dict[str, Any], payload: object) -> object:
    """``payload`` with every integral float where ``schema`` wants an integer (``5.0``) made
    an ``int``: JSON Schema counts ``5.0`` as an integer, and a store must not keep it as a
    float (SQLite would store REAL in an integer column). Run it after the schema's check,
    which bounds the value; the payload is not changed in place."""

    def walk(node: Any, value: object) -> object:  # noqa: ANN401 - a JSON schema node
        if isinstance(value, float) and _wants_integer(node) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            properties = node.get("properties", {}) if isinstance(node, dict) else {}
            return {key: walk(properties.get(key), item) for key, item in value.items()}
        if isinstance(value, list):
            items = node.get("items") if isinstance(node, dict) else None
            return [walk(items, item) for item in value]
        return value

    return walk(schema, payload)

"""The one reader of untrusted JSON text: request bodies on the coordinator, the coordinator's
replies and signed manifests on the agent, QEMU's QMP lines.

``json.loads`` recurses once per ``[`` or ``{``: a 40 kB body of nested brackets raises
``RecursionError``, which no ``except ValueError`` catches (issue 15, finding 4). So the text
is bounded in size first, then a linear prescan counts the bracket depth (skipping string
contents, escapes included) and refuses anything deeper than ``max_depth`` before
``json.loads`` sees it. Every refusal is a :class:`JsonTextError`, a ``ValueError``, so the
callers' existing handlers for bad JSON catch it.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "JsonTextError", "loads_json"]

MAX_JSON_BYTES = 1024 * 1024
"""The largest JSON text read (an API body or reply); callers may pass a smaller cap."""

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects read; the wire formats need at most 4."""

# A string, closed or running to the end of the text, in the unrolled form whose possessive
# loops never backtrack (linear). Removing the strings, then everything but brackets, leaves
# the brackets outside strings; their running sum is the depth.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonTextError(ValueError):
    """The text is too large, nested too deeply, or not JSON."""


def loads_json(
    text: bytes | bytearray | str,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:  # noqa: ANN401 - any JSON value
    """Parse ``text`` as JSON after checking its size and nesting depth."""
    if len(text) > max_bytes:
        raise JsonTextError(f"the JSON text is larger than {max_bytes} bytes")
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode(json.detect_encoding(text))
        except UnicodeDecodeError as exc:
            raise JsonTextError(f"the JSON text is not valid Unicode ({exc.reason})") from None
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) > max_depth and max(accumulate(map(_DELTA.__getitem__, brackets))) > max_depth:
        raise JsonTextError(f"the JSON text is nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise JsonTextError(f"not JSON ({exc})") from None

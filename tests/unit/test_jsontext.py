"""``cvmc.protocol.loads_json``: the one reader of untrusted JSON (issue 15, finding 4)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.protocol import MAX_JSON_BYTES, MAX_JSON_DEPTH, JsonTextError, loads_json


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_limit_is_exact() -> None:
    assert loads_json(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    with pytest.raises(JsonTextError, match="deeper than 32"):
        loads_json(nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTextError, match="deeper than 3 "):
        loads_json('{"a": {"b": {"c": {}}}}', max_depth=3)


def test_forty_kilobytes_of_nesting_is_refused_not_a_recursion_error() -> None:
    for text in (nested(20000), '{"a":' * 8000 + "1" + "}" * 8000):
        with pytest.raises(JsonTextError):
            loads_json(text.encode())


def test_brackets_inside_strings_do_not_count() -> None:
    deep_in_string = json.dumps({"s": "[" * 100 + "{" * 100, "t": '\\"[[[[' * 50})
    assert loads_json(deep_in_string)["s"] == "[" * 100 + "{" * 100
    escaped_quote = json.dumps(['a"' + "[" * 40, "\\", "]" * 40])
    assert loads_json(escaped_quote) == ['a"' + "[" * 40, "\\", "]" * 40]


def test_an_unterminated_string_full_of_escaped_quotes_is_refused() -> None:
    with pytest.raises(JsonTextError, match="not JSON"):
        loads_json('"' + '\\"' * 200_000)


def test_size_cap_and_a_smaller_one() -> None:
    big = json.dumps("x" * MAX_JSON_BYTES)
    with pytest.raises(JsonTextError, match="larger than"):
        loads_json(big)
    assert loads_json(b'{"a": 1}', max_bytes=8) == {"a": 1}
    with pytest.raises(JsonTextError, match="larger than 7 bytes"):
        loads_json(b'{"a": 1}', max_bytes=7)


@pytest.mark.parametrize("text", [b"", b"{", b"[1, 2", b"\xff\xfe\xfa", "nope", b'{"a": 1} x'])
def test_not_json_is_one_error_type_and_a_value_error(text: bytes | str) -> None:
    with pytest.raises(JsonTextError) as caught:
        loads_json(text)
    assert isinstance(caught.value, ValueError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_shallow_documents_read_as_json_loads_reads_them(value: Any) -> None:
    text = json.dumps(value)
    assert loads_json(text) == json.loads(text)
    assert loads_json(text.encode()) == json.loads(text)

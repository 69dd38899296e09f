"""The wire's value rules (``cvmc.protocol.values``): what a number or a string may hold."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from cvmc import protocol
from cvmc.protocol import values

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": values.integer(),
        "maybe": {**values.integer(0, 100), "type": ["integer", "null"]},
        "x": {"type": "number"},
        "t": values.text(10),
        "list": {
            "type": "array",
            "items": {"type": "object", "properties": {"n": values.integer()}},
        },
    },
}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"n": 2.5}, "n: is not an integer (written as the number 2.5)"),
        ({"maybe": 5.5}, "maybe: is not an integer"),
        ({"x": float("nan")}, "x: is not a finite number"),
        ({"x": float("inf")}, "x: is not a finite number"),
        ({"t": "a\x00"}, "t: holds NUL"),
        ({"t": "a\ud800"}, "t: holds a lone surrogate"),
        ({"t": "\udfff"}, "t: holds a lone surrogate"),
        ({"list": [{"n": 1}, {"n": 2.5}]}, "list/1/n: is not an integer"),
        ({"unknown": ["ok", {"deep": "\x00"}]}, "unknown/1/deep: holds NUL"),
        ({"k\x00": 1}, "(body): a key holds NUL"),
        ({"list": [{"\ud800": 1}]}, "list/0: a key holds a lone surrogate"),
        ("\x00", "(body): holds NUL"),
    ],
)
def test_a_value_no_store_holds_is_named_by_its_path(payload: object, problem: str) -> None:
    found = values.problem(SCHEMA, payload)
    assert found is not None
    assert found.startswith(problem)


@pytest.mark.parametrize(
    "payload",
    [
        {"n": 0, "maybe": None, "x": 1e308, "t": "é ✓ 😀", "list": [{"n": 2**31 - 1}]},
        {"x": 0.5, "t": "", "other": [1, 2.5, "text"]},
        {"n": True},  # a boolean is the schema's concern (not an integer there), not a value rule
        # An integral float is an integer for JSON Schema; the schema bounds it (1e308 fails
        # its maximum), and ``integers`` makes it an int.
        {"n": 1.0, "maybe": 5.0, "list": [{"n": 1e308}]},
    ],
)
def test_values_a_store_holds_pass(payload: object) -> None:
    assert values.problem(SCHEMA, payload) is None


def test_the_schemas_bound_integers_and_refuse_nul() -> None:
    validator = jsonschema_rs.validator_for(SCHEMA)
    assert validator.is_valid({"n": values.MAX_INT})
    assert not validator.is_valid({"n": values.MAX_INT + 1})
    assert not validator.is_valid({"n": 2**70})
    assert not validator.is_valid({"n": 1e308})  # integral, but above the maximum
    assert validator.is_valid({"n": 7.0})  # an integer for JSON Schema; ``integers`` makes it int
    assert not validator.is_valid({"n": -1})
    assert not validator.is_valid({"t": "a\x00b"})
    assert validator.is_valid({"t": "ab"})
    users = protocol.HEARTBEAT_SCHEMA["properties"]["state"]["properties"]["users"]
    assert users["maximum"] == values.MAX_INT


def test_sequence_numbers() -> None:
    assert values.is_seq(0)
    assert values.is_seq(values.MAX_SEQ)
    assert len(str(values.MAX_SEQ)) == 18  # what SEQ_PATTERN allows
    for bad in (values.MAX_SEQ + 1, -1, True, 1.0, "5", None):
        assert not values.is_seq(bad)
    error = jsonschema_rs.validator_for(protocol.ERROR_SCHEMA)
    base = {"error": "replayed_sequence", "message": "m"}
    assert error.is_valid({**base, "last_seq": values.MAX_SEQ})
    assert not error.is_valid({**base, "last_seq": values.MAX_SEQ + 1})


def test_integral_floats_become_ints_where_the_schema_wants_integers() -> None:
    payload = {"n": 7.0, "maybe": 5.0, "x": 2.0, "list": [{"n": 3.0}, {"n": 4}], "other": 1.0}
    out = values.integers(SCHEMA, payload)
    assert out == {"n": 7, "maybe": 5, "x": 2.0, "list": [{"n": 3}, {"n": 4}], "other": 1.0}
    assert isinstance(out, dict)
    assert type(out["n"]) is int
    assert type(out["maybe"]) is int
    assert type(out["list"][0]["n"]) is int
    assert type(out["x"]) is float  # a number field keeps its float
    assert type(out["other"]) is float  # a key the schema does not name is left alone
    assert type(payload["n"]) is float  # the payload itself is unchanged

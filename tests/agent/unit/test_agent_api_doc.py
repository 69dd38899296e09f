"""docs/coordinator-api.md and the code that implements it say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cvmc import protocol
from cvmc.protocol import DECLINE_REASONS

DOC = Path(__file__).resolve().parents[3] / "docs" / "coordinator-api.md"
BLOCK = re.compile(r"<!-- schema: (\w+) -->\n```json\n(.*?)\n```", re.S)


def test_every_schema_in_the_doc_is_the_codes() -> None:
    text = DOC.read_text()
    found = dict(BLOCK.findall(text))
    expected = {
        "ENROL_REQUEST_SCHEMA",
        "ENROL_REPLY_SCHEMA",
        "HEARTBEAT_SCHEMA",
        "HEARTBEAT_REPLY_SCHEMA",
        "CATALOGUE_SCHEMA",
        "MANIFEST_SCHEMA",
        "ERROR_SCHEMA",
    }
    assert set(found) == expected
    for name, raw in found.items():
        assert json.loads(raw) == getattr(protocol, name), name


def test_every_error_code_and_decline_reason_is_documented() -> None:
    text = DOC.read_text()
    for code, (status, _) in protocol.ERROR_CODES.items():
        assert f"| `{code}` | {status} |" in text
    for reason in DECLINE_REASONS:
        assert f"`{reason}`" in text


def test_the_doc_examples_match_the_schemas() -> None:
    import jsonschema  # noqa: PLC0415

    text = DOC.read_text()
    examples = [
        json.loads(b)
        for b in re.findall(
            r"```json\n(\{\s*\"(?:sent_at|server_time|"
            r"desktop_id)\".*?\})\n```",
            text,
            re.S,
        )
    ]
    by_key = {next(iter(e)): e for e in examples}
    jsonschema.validate(by_key["desktop_id"], protocol.ENROL_REPLY_SCHEMA)
    jsonschema.validate(by_key["server_time"], protocol.HEARTBEAT_REPLY_SCHEMA)
    beat = by_key["sent_at"]
    beat["images"][0]["sha256"] = "0" * 64  # the doc abbreviates the digest
    jsonschema.validate(beat, protocol.HEARTBEAT_SCHEMA)

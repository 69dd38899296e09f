"""schemathesis against the service's own /openapi.json (bounded: max_examples per operation).

Every operation gets generated requests; every reply must be documented (status, content type,
body schema) and never a 5xx. The signed endpoints are fuzzed without a valid signature: what
they may answer then is their documented 4xx errors (the signature is checked before the body,
so their bodies' schema is exercised by test_coordinator_api.py instead). schemathesis' pytest
plugin does not run under pytest 9, so each operation's hypothesis strategy is driven directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from coordinator.coord_support import Clock, make_coordinator, write_setup
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from starlette.applications import Starlette

from cvmc.coordinator.adapters.web import create_app

OPERATIONS = [
    ("POST", "/api/v1/enrol"),
    ("POST", "/api/v1/heartbeat"),
    ("GET", "/api/v1/images"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Starlette:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    # Hundreds of requests from one address in seconds: the rate limits (tested in
    # test_coordinator_ratelimit.py) are raised so that every case reaches the code it fuzzes.
    unlimited = {"address_burst": 100_000, "desktop_burst": 100_000}
    coordinator = make_coordinator(
        write_setup(tmp, f"sqlite:///{tmp / 'c.db'}", server=unlimited), Clock()
    )
    return create_app(coordinator)


def test_every_operation_is_fuzzed(app: Starlette) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    found = {(op.method.upper(), op.path) for op in operations}
    assert found == set(OPERATIONS)


#: Negative cases (bodies and headers that break the schema) for the operations that take any.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS if p.startswith("/api")
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_conforms_to_the_openapi(
    app: Starlette, method: str, path: str, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]
    calls: list[int] = []

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=30, suppress_health_check=list(HealthCheck), deadline=None)
    def check(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate()
        calls.append(response.status_code)

    check()
    assert calls
    assert all(status < 500 for status in calls)
    if mode is GenerationMode.NEGATIVE and path == "/api/v1/enrol":
        assert 400 in calls  # enrolment is unsigned: broken bodies reach the schema check

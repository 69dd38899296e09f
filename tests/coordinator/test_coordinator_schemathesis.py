"""schemathesis against the service's own /openapi.json (bounded: max_examples per operation).

Every operation gets generated requests; every reply must be documented (status, content type,
body schema) and never a 5xx. First the signed endpoints are fuzzed without a valid signature:
what they may answer then is their documented 4xx errors. Then (``past authentication``) each
generated request is signed as an enrolled desktop and each enrolment carries a valid token,
so the generated bodies reach the schema check, the domain and the database, on SQLite and
PostgreSQL. schemathesis' pytest plugin does not run under pytest 9, so each operation's
hypothesis strategy is driven directly."""

from __future__ import annotations

import itertools
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import requests.auth
import schemathesis
from coordinator.coord_support import (
    GRID,
    Clock,
    enrol_body,
    make_coordinator,
    signed_headers,
    token,
    write_setup,
)
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from starlette.applications import Starlette

from cvmc.coordinator.adapters.openapi import openapi_document
from cvmc.coordinator.adapters.web import create_app
from cvmc.protocol import API_PREFIX, ENROL_REQUEST_SCHEMA

OPERATIONS = [
    ("POST", "/api/v1/enrol"),
    ("POST", "/api/v1/heartbeat"),
    ("GET", "/api/v1/images"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/admin/v1/summary"),
    ("GET", "/admin/v1/departments"),
    ("GET", "/admin/v1/desktops"),
    ("GET", "/admin/v1/declines"),
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
    (m, p, GenerationMode.NEGATIVE)
    for m, p in OPERATIONS
    if p.startswith("/api") or p in {"/admin/v1/desktops", "/admin/v1/declines"}
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


# -- past authentication -------------------------------------------------------------------
#
# The requests above reach the signed endpoints without a valid signature, so their bodies
# never pass the signature check. Below, every generated request whose signing headers the
# schema allows is signed as an enrolled desktop after schemathesis has serialized it (a
# ``requests`` auth hook sees the exact bytes sent), and every enrolment whose ``desktop`` and
# ``token`` the schema allows gets a desktop of the grid and a valid, unspent token for it. A
# negative case keeps what breaks the schema, so it must still be refused. The generated bodies
# and headers reach the schema check, the domain and the database, on SQLite and PostgreSQL.

#: Examples per (operation, generation mode, database).
SIGNED_EXAMPLES = 100

#: Desktops enrolled before the run, whose credentials sign the requests.
SIGNERS = [GRID["desktops"][i]["name"] for i in range(4)]
#: Desktops the enrolment fuzzing enrols (again and again, with a new generation each time).
ENROLLED_BY_FUZZING = [GRID["desktops"][i]["name"] for i in range(4, 10)]


class DesktopSigner(requests.auth.AuthBase):
    """Signs each prepared request as one of the enrolled desktops (in turn), with a sequence
    number above every one sent before."""

    def __init__(self, credentials: list[tuple[str, str]]) -> None:
        self._credentials = credentials
        self._seq = itertools.count(1)
        self._turn = itertools.count()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        path = urlsplit(r.url or "").path
        body = r.body.encode() if isinstance(r.body, str) else r.body or b""
        assert isinstance(body, bytes), "a streamed body cannot be signed"
        desktop_id, credential = self._credentials[next(self._turn) % len(self._credentials)]
        signed = signed_headers(r.method or "", path, desktop_id, credential, next(self._seq), body)
        signed.pop("Content-Type")  # the generated one (negative cases break it on purpose)
        r.headers.update(signed)
        return r


def _valid(schema: dict[str, Any], value: Any) -> bool:
    return bool(Draft202012Validator(schema).is_valid(value))


def _signable(case: schemathesis.Case[Any]) -> bool:
    """The case's signing headers are all there and each as the schema says (a negative case
    that breaks one of them is sent unsigned, as generated)."""
    document = openapi_document()["paths"][case.path][case.method.lower()]
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    return all(
        parameter["name"].lower() in headers
        and _valid(parameter["schema"], headers[parameter["name"].lower()])
        for parameter in document.get("parameters", [])
        if parameter["in"] == "header"
    )


def _give_valid_token(case: schemathesis.Case[Any], generation: int) -> None:
    """An enrolment body's ``desktop`` and ``token``, where the schema allows them, become a
    desktop of the grid and a valid token of a new generation for it."""
    if not isinstance(case.body, dict):
        return
    fields = ENROL_REQUEST_SCHEMA["properties"]
    desktop = ENROLLED_BY_FUZZING[generation % len(ENROLLED_BY_FUZZING)]
    if "desktop" in case.body and _valid(fields["desktop"], case.body["desktop"]):
        case.body["desktop"] = desktop
    if "token" in case.body and _valid(fields["token"], case.body["token"]):
        case.body["token"] = token(desktop, generation)


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@pytest.mark.parametrize(("method", "path", "mode"), [c for c in CASES if c[1].startswith("/api")])
def test_signed_operation_is_fuzzed_past_authentication(
    tmp_path: Path, db_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    coordinator = make_coordinator(write_setup(tmp_path, db_url), Clock())
    credentials = []
    for name in SIGNERS:
        reply = coordinator.enrol(enrol_body(name))
        credentials.append((reply["desktop_id"], reply["credential"]))
    app = create_app(coordinator)
    signer = DesktopSigner(credentials)
    generations = itertools.count(1)
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    outcome = Outcome()

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=SIGNED_EXAMPLES,
        suppress_health_check=list(HealthCheck),
        deadline=None,
        database=None,
        phases=[Phase.generate],  # every example once: no shrinking of a failure, no replay
    )
    def check(case: schemathesis.Case[Any]) -> None:
        if path == f"{API_PREFIX}/enrol":
            _give_valid_token(case, next(generations))
        try:
            response = case.call(auth=signer) if _signable(case) else case.call()
        except Exception as exc:  # the app raised: a 500 to the client
            outcome.statuses[500] += 1
            outcome.errors.append(_server_error(case, exc))
            return
        outcome.statuses[response.status_code] += 1
        if response.status_code >= 500:
            outcome.errors.append(
                f"{response.status_code} {case.method} {case.path} {case.body!r:.300}: "
                f"{response.text}"
            )
            return
        try:
            case.validate_response(response)
        except FailureGroup as exc:  # every failure listed at the end, not the first one alone
            outcome.errors.append(f"{case.method} {case.path}: {exc}")

    check()
    database = db_url.split(":", 1)[0].split("+", 1)[0]
    print(  # the figures docs/testing.md records (pytest -s shows them)
        f"\nfuzzed past authentication: {method} {path} {mode.value} on {database}: "
        f"{outcome.statuses.total()} cases, statuses {dict(sorted(outcome.statuses.items()))}"
    )
    assert not outcome.errors, "\n".join(outcome.errors)
    # The signature and the token held back nothing: requests got past them.
    assert set(outcome.statuses) - {401, 403}


def _server_error(case: schemathesis.Case[Any], exc: Exception) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{Path(last.filename).name}:{last.lineno} in {last.name}"
    return (
        f"500 {case.method} {case.path} {case.body!r:.300}: {type(exc).__name__}: {exc} ({where})"
    )

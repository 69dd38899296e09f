"""The HTTP adapter: a Starlette app around ``Coordinator`` (docs/coordinator-api.md).

Bodies are read up to the limit and refused beyond it (413 ``too_large``) before any parsing;
the service runs in a worker thread (its database calls block), except heartbeats. On an
embedded database (SQLite) a heartbeat is short enough to run on the event loop: that saves
about a third of the CPU per heartbeat. On a database server (PostgreSQL) heartbeats are
checked on the event loop and written in batches by one thread (group commit: whatever arrived
while the previous batch was in the database goes in the next one, so a lone heartbeat waits
for nobody); a thread hop and a round trip per request cost three times the CPU
(docs/performance.md). With ``rounds`` (what ``serve`` gives), allocation rounds run in a
child process while the app lives (``cvmc.coordinator.adapters.rounds``); tests call
``Coordinator.allocation_round`` themselves. ``/metrics`` is prometheus_client's exposition
(``cvmc.coordinator.adapters.prometheus``), with each heartbeat request's time from its arrival
in the app to its reply in ``cvmc_heartbeat_duration_seconds``.

Rate limits (``429 rate_limited`` with ``Retry-After``, before the body is read, so nothing is
written): each desktop's authenticated API requests take from its own bucket
(``server.desktop_rate_per_s``, ``server.desktop_burst``); enrolments and failed
authentications (401) take from the client address's bucket (``server.address_rate_per_s``,
``server.address_burst``), so a forged request in a desktop's name never uses up that desktop's
bucket. The client address is nginx's (``X-Forwarded-For`` from the loopback proxy). Both
limiters keep at most ``server.rate_limit_keys`` buckets (``cvmc.coordinator.domain.ratelimit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cvmc.coordinator.adapters.dashboard import render_dashboard, render_desktops
from cvmc.coordinator.adapters.openapi import (
    ADMIN_LIMIT_MAX,
    ADMIN_OFFSET_MAX,
    openapi_document,
)
from cvmc.coordinator.adapters.prometheus import CONTENT_TYPE, Exporter
from cvmc.coordinator.adapters.rounds import ProcessRounds
from cvmc.coordinator.domain.grid import DEPARTMENT
from cvmc.coordinator.domain.ratelimit import RateLimiter
from cvmc.coordinator.ports import HeartbeatItem, HeartbeatResult
from cvmc.coordinator.service.coordinator import ApiError, Coordinator
from cvmc.protocol import API_PREFIX

__all__ = ["create_app"]

log = logging.getLogger("cvmc.coordinator.web")


class _TooLargeError(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


#: Heartbeats written in one batch at most.
_BATCH = 256
#: A written heartbeat: its result, when, and the MAC addresses its desktop is asked to wake.
_Written = tuple[HeartbeatResult, float, list[str]]


class _HeartbeatBatcher:
    """Group commit of heartbeats: one writer thread, one batch in the database at a time."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._pending: list[tuple[HeartbeatItem, asyncio.Future[_Written]]]
        self._pending = []
        self._draining: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeats")

    async def heartbeat(
        self, headers: Mapping[str, str], path: str, body: bytes, address: str | None
    ) -> dict[str, Any]:
        coordinator = self._coordinator
        if coordinator.knows(headers):
            item = coordinator.accept_heartbeat(headers, path, body, address)
        else:  # the desktop's first request since the start: the database checks it
            item = await run_in_threadpool(
                coordinator.accept_heartbeat, headers, path, body, address
            )
        result, now, wake = await self._submit(item)
        return coordinator.heartbeat_result(item, result, now, wake)

    async def _submit(self, item: HeartbeatItem) -> _Written:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Written] = loop.create_future()
        self._pending.append((item, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                now = self._coordinator.clock()
                items = [item for item, _ in batch]
                try:
                    results, wakes = await loop.run_in_executor(
                        self._executor, self._coordinator.store_heartbeats, items, now
                    )
                except Exception as exc:
                    log.warning("heartbeats: a batch of %d failed: %s", len(batch), exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                ApiError("unavailable", "the database did not take the heartbeat")
                            )
                    continue
                for (item, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result((result, now, wakes.get(item.desktop_id, [])))
        finally:
            self._draining = None

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _number(request: Request, name: str, default: int, top: int, bottom: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not bottom <= int(raw) <= top:
        raise ApiError("malformed", f"{name} must be an integer from {bottom} to {top}")
    return int(raw)


def _department(request: Request) -> str | None:
    raw = request.query_params.get("department")
    if raw is not None and not DEPARTMENT.match(raw):
        raise ApiError("malformed", "department must be 1 to 64 of A-Z a-z 0-9 _ . -")
    return raw


Handler = Callable[[Request], Awaitable[Response]]


def _admin_handlers(coordinator: Coordinator) -> list[tuple[str, Handler]]:
    """The read-only admin API (``/admin/v1/...``) and the desktops page: what the
    dashboard shows, and each desktop, for operators (nginx keeps them private). Each is a
    GET; ``create_app`` turns an ``ApiError`` into its reply and counts the requests."""

    async def summary(_request: Request) -> Response:
        return JSONResponse(coordinator.admin_summary())

    async def departments(_request: Request) -> Response:
        return JSONResponse(coordinator.departments())

    async def desktops(request: Request) -> Response:
        department = _department(request)
        limit = _number(request, "limit", 200, ADMIN_LIMIT_MAX, 1)
        offset = _number(request, "offset", 0, ADMIN_OFFSET_MAX, 0)
        rows = await run_in_threadpool(
            coordinator.admin_desktops, department=department, limit=limit, offset=offset
        )
        return JSONResponse(rows)

    async def declines(request: Request) -> Response:
        limit = _number(request, "limit", 100, ADMIN_LIMIT_MAX, 1)
        return JSONResponse(await run_in_threadpool(coordinator.admin_declines, limit))

    async def page(request: Request) -> Response:
        department = _department(request)
        offset = _number(request, "offset", 0, ADMIN_OFFSET_MAX, 0)
        rows = await run_in_threadpool(
            coordinator.admin_desktops, department=department, limit=500, offset=offset
        )
        return HTMLResponse(render_desktops(coordinator, rows, department, offset))

    return [
        ("/admin/v1/summary", summary),
        ("/admin/v1/departments", departments),
        ("/admin/v1/desktops", desktops),
        ("/admin/v1/declines", declines),
        ("/desktops", page),
    ]


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


#: Longest ``X-CVMC-Desktop`` value used as a rate limiter's key (longer ones are cut).
_KEY_CHARS = 128


class _Limits:
    """The API's rate limits: per desktop, and per client address (see the module)."""

    def __init__(self, coordinator: Coordinator) -> None:
        server = coordinator.config.server
        self.desktops = RateLimiter(
            server.desktop_rate_per_s, server.desktop_burst, server.rate_limit_keys
        )
        self.addresses = RateLimiter(
            server.address_rate_per_s, server.address_burst, server.rate_limit_keys
        )
        self.clock = time.monotonic

    @staticmethod
    def _address(request: Request) -> str:
        return request.client.host if request.client is not None else "-"

    @staticmethod
    def _limited(wait: int) -> JSONResponse:
        response = _error(ApiError("rate_limited", f"too many requests; retry after {wait} s"))
        response.headers["Retry-After"] = str(wait)
        return response

    async def enrol(
        self, request: Request, handler: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        wait = self.addresses.hit(self._address(request), self.clock())
        return self._limited(wait) if wait is not None else await handler(request)

    async def desktop(
        self, request: Request, handler: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        now = self.clock()
        address = self._address(request)
        desktop = request.headers.get("x-cvmc-desktop", "")[:_KEY_CHARS]
        wait = self.desktops.retry_after(desktop, now) or self.addresses.retry_after(address, now)
        if wait is not None:
            return self._limited(wait)
        response = await handler(request)
        if response.status_code == 401:  # unknown desktop or bad signature: the address pays
            self.addresses.take(address, now)
        else:
            self.desktops.take(desktop, now)
        return response


def create_app(coordinator: Coordinator, *, rounds: ProcessRounds | None = None) -> Starlette:
    limit = coordinator.config.server.max_body_bytes
    inline = coordinator.store.embedded
    batcher = None if inline else _HeartbeatBatcher(coordinator)
    openapi = openapi_document()
    limits = _Limits(coordinator)
    exporter = Exporter(coordinator)
    heartbeat_seconds = exporter.heartbeat_seconds

    def counted(
        route: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except _TooLargeError:
                return _error(ApiError("too_large", f"the body is larger than {limit} bytes"))
            except ApiError as exc:
                return _error(exc)

        async def wrapper(request: Request) -> Response:
            started = time.perf_counter()
            if route == "enrol":
                response = await limits.enrol(request, answer)
            elif route in {"heartbeat", "images"}:
                response = await limits.desktop(request, answer)
            else:
                response = await answer(request)
            coordinator.metrics.requests[(route, response.status_code)] += 1
            if route == "heartbeat":
                heartbeat_seconds.observe(time.perf_counter() - started)
            return response

        return wrapper

    async def enrol(request: Request) -> Response:
        body = await _body(request, limit)
        reply = await run_in_threadpool(coordinator.enrol, body)
        return JSONResponse(reply, status_code=201)

    async def heartbeat(request: Request) -> Response:
        body = await _body(request, limit)
        # The client address (nginx's X-Forwarded-For, from the loopback proxy): Wake-on-LAN
        # finds a sleeping desktop's neighbours by the address the server saw, not a claim.
        address = request.client.host if request.client is not None else None
        if batcher is None:  # an embedded database: a heartbeat is ~0.3 ms of work, no thread hop
            return JSONResponse(
                coordinator.heartbeat(request.headers, request.url.path, body, address)
            )
        return JSONResponse(
            await batcher.heartbeat(request.headers, request.url.path, body, address)
        )

    async def images(request: Request) -> Response:
        body = await _body(request, limit)
        if body:
            raise ApiError("malformed", "GET /images takes no body")
        reply = await run_in_threadpool(coordinator.catalogue, request.headers, request.url.path)
        return JSONResponse(reply)

    async def healthz(_request: Request) -> Response:
        try:
            await run_in_threadpool(coordinator.store.ping)
        except Exception as exc:
            log.warning("healthz: the database does not answer: %s", type(exc).__name__)
            raise ApiError("unavailable", "the database does not answer") from None
        return JSONResponse({"status": "ok"})

    async def metrics(_request: Request) -> Response:
        return Response(exporter.text(), media_type=CONTENT_TYPE)

    async def dashboard(_request: Request) -> Response:
        now = coordinator.clock()
        history = await run_in_threadpool(coordinator.store.history, now - 6 * 3600)
        return HTMLResponse(render_dashboard(coordinator, history, now))

    async def openapi_json(_request: Request) -> Response:
        return JSONResponse(openapi)

    static = str(resources.files("cvmc.coordinator").joinpath("static"))
    routes: list[Any] = [
        Route(f"{API_PREFIX}/enrol", counted("enrol", enrol), methods=["POST"]),
        Route(f"{API_PREFIX}/heartbeat", counted("heartbeat", heartbeat), methods=["POST"]),
        Route(f"{API_PREFIX}/images", counted("images", images), methods=["GET"]),
        Route("/healthz", counted("healthz", healthz), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/", dashboard, methods=["GET"]),
        *(
            Route(path, counted("admin", handler), methods=["GET"])
            for path, handler in _admin_handlers(coordinator)
        ),
        Mount("/static", StaticFiles(directory=static), name="static"),
    ]
    return Starlette(routes=routes, lifespan=_lifespan(coordinator, rounds, batcher))


def _lifespan(
    coordinator: Coordinator, rounds: ProcessRounds | None, batcher: _HeartbeatBatcher | None
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """While the app lives: the allocation rounds (if given); at its end, their process and
    the heartbeat writer stop."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(rounds.run(coordinator)) if rounds is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if rounds is not None:
                rounds.close()
            if batcher is not None:
                batcher.close()

    return lifespan

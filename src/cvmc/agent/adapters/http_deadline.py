"""HTTP(S) requests with an overall deadline (issue 15, finding 8).

A socket timeout bounds one ``recv`` only: a server that drips one byte per second never
trips it, and holds a heartbeat (or a download) for as long as it likes. Here a watchdog
timer shuts the request's socket down when the deadline passes, whatever phase the request
is in (TCP connect aside, which the socket timeout bounds: the TLS handshake, the status
line and headers, the body); the blocked read then returns at once and the call raises
:class:`DeadlineError`.

Every failure is an ``OSError``: :class:`DeadlineError` (a ``TimeoutError``) at the
deadline, :class:`TransportError` for a broken reply (``http.client``'s own errors, such as a
bad status line or a short body, are not ``OSError``), and :class:`HttpStatusError` carries a
4xx/5xx status and the first 64 KiB of its body, read within the same deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any

__all__ = [
    "DeadlineError",
    "DeadlineResponse",
    "HttpStatusError",
    "TransportError",
    "open_with_deadline",
]

ERROR_BODY_MAX = 65536


class DeadlineError(TimeoutError):
    """The request's overall deadline passed."""


class TransportError(OSError):
    """The server's reply was not well-formed HTTP (or ended early)."""


class HttpStatusError(OSError):
    """The server answered with an error status; ``body`` is its first 64 KiB."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        super().__init__(f"{url}: HTTP {status}")
        self.status = status
        self.body = body


class _Watchdog:
    """Shuts down every socket it watches when ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor of the same socket: shutdown(2) on it ends the connection
        # even after ssl has wrapped (and detached) the original object.
        dup = sock.dup()
        with self._lock:
            self._socks.append(dup)
            fired = self.fired
        if fired:
            self._shutdown(dup)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            self._shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


def _connection(base: type[http.client.HTTPConnection], watchdog: _Watchdog) -> Any:  # noqa: ANN401 - a connection class for urllib's do_open
    class Connection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
            super().__init__(*args, **kwargs)

            def create(
                address: tuple[str, int],
                timeout: float | None = None,
                source_address: tuple[str, int] | None = None,
            ) -> socket.socket:
                sock = socket.create_connection(address, timeout, source_address)
                watchdog.watch(sock)
                return sock

            self._create_connection = create

    return Connection


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_connection(http.client.HTTPConnection, self._watchdog), req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._watchdog = watchdog
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _connection(http.client.HTTPSConnection, self._watchdog), req, context=self._tls
        )


class DeadlineResponse:
    """The reply: status, headers and reads that honour the deadline."""

    def __init__(self, response: http.client.HTTPResponse, watchdog: _Watchdog, url: str) -> None:
        self._response = response
        self._watchdog = watchdog
        self.url = url
        self.status: int = response.status
        self.headers: Message = response.headers

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes: fewer only at the end of the body. A body that ends before
        its ``Content-Length`` is a :class:`TransportError` (``http.client`` returns it short)."""
        try:
            data = self._response.read(amount)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _failure(self._watchdog, self.url, exc) from None
        if self._watchdog.fired:
            raise DeadlineError(f"{self.url}: no complete reply before the deadline")
        if len(data) < amount and self._response.length:
            raise TransportError(
                f"{self.url}: the body ended {self._response.length} bytes before its length"
            )
        return data


def _failure(watchdog: _Watchdog, url: str, exc: BaseException) -> OSError:
    if watchdog.fired:
        return DeadlineError(f"{url}: no complete reply before the deadline")
    if isinstance(exc, urllib.error.URLError):
        return TransportError(f"{url}: {exc.reason}")
    if isinstance(exc, OSError):
        return exc
    return TransportError(f"{url}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def open_with_deadline(
    request: urllib.request.Request,
    *,
    timeout_s: float,
    deadline_s: float,
    context: ssl.SSLContext | None = None,
    redirects: urllib.request.HTTPRedirectHandler | None = None,
) -> Iterator[DeadlineResponse]:
    """Send ``request``; the whole exchange, reads inside the block included, must end
    within ``deadline_s`` (each socket operation also within ``timeout_s``). ``redirects``
    replaces urllib's redirect handler (one that refuses some targets, for example)."""
    watchdog = _Watchdog(deadline_s)
    handlers: list[urllib.request.BaseHandler] = [
        _HttpHandler(watchdog),
        _HttpsHandler(watchdog, context),
    ]
    if redirects is not None:
        handlers.append(redirects)
    opener = urllib.request.build_opener(*handlers)
    url = request.full_url
    watchdog.start()
    try:
        try:
            response = opener.open(request, timeout=min(timeout_s, deadline_s))
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    body = exc.read(ERROR_BODY_MAX)
                except (OSError, http.client.HTTPException, ValueError):
                    body = b""
            if watchdog.fired:
                raise DeadlineError(f"{url}: no complete reply before the deadline") from None
            raise HttpStatusError(url, exc.code, body) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _failure(watchdog, url, exc) from None
        with response:
            yield DeadlineResponse(response, watchdog, url)
    finally:
        watchdog.close()

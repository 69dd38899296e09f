#!/usr/bin/env python3
"""A counting origin server for molecule vpn's cache checks (runs on the pool and campus hosts).

GET /slow/NAME answers after 3 s (64 KiB), GET /big answers 10 MiB, anything else a few bytes;
all cacheable for an hour. Every such request is counted; GET /count answers the counts (never
cached, never counted). Usage: cache_origin.py PORT
"""

from __future__ import annotations

import collections
import http.server
import json
import sys
import threading
import time

COUNTS: collections.Counter[str] = collections.Counter()
LOCK = threading.Lock()
BIG = b"x" * (10 * 1024 * 1024)


class Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/count":
            with LOCK:
                counts = {"total": sum(COUNTS.values()), "paths": dict(COUNTS)}
            self._send(json.dumps(counts).encode(), "no-store")
            return
        with LOCK:
            COUNTS[self.path] += 1
        if self.path.startswith("/slow/"):
            time.sleep(3)
            self._send(b"y" * 65536, "max-age=3600")
        elif self.path == "/big":
            self._send(BIG, "max-age=3600")
        else:
            self._send(b"ok\n", "max-age=3600")

    def _send(self, body: bytes, cache_control: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Origin).serve_forever()  # noqa: S104

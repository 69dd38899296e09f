#!/usr/bin/env python3
"""Fetch a URL, through an HTTP proxy or directly, and print what happened as one JSON line.

Usage: cache_fetch.py PROXY URL          GET URL through PROXY (http://host:port)
       cache_fetch.py PROXY HOST:PORT CONNECT
                                         ask PROXY for a tunnel to HOST:PORT
       cache_fetch.py direct URL         GET URL without a proxy (3 s timeout)
Prints {"status": ..., "bytes": ..., "seconds": ..., "x_cache": ..., "text": ...}; status 0 is
no answer, and "text" is the body when it is short text.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request


def main(proxy: str, target: str, method: str = "GET") -> dict[str, object]:
    start = time.monotonic()
    if method == "CONNECT":
        host, port = proxy.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            status = int(conn.recv(4096).split(b" ", 2)[1])
        return {"status": status}
    handlers = {} if proxy == "direct" else {"http": proxy}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(handlers))
    try:
        with opener.open(target, timeout=3 if proxy == "direct" else 60) as reply:
            body, status, headers = reply.read(), reply.status, reply.headers
    except urllib.error.HTTPError as exc:
        body, status, headers = exc.read(), exc.code, exc.headers
    except OSError:
        return {"status": 0, "seconds": time.monotonic() - start}
    return {
        "status": status,
        "bytes": len(body),
        "seconds": time.monotonic() - start,
        "x_cache": headers.get("X-Cache", ""),
        "text": body.decode(errors="replace") if len(body) <= 4096 else "",
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))

"""Token buckets per key (a desktop, a client address), in bounded memory.

Each key has a bucket of ``burst`` tokens that refills at ``rate_per_s``; a request takes one.
An empty bucket means ``429 rate_limited`` with ``Retry-After`` (the seconds until a token is
back). At most ``max_keys`` buckets are kept: the least recently used one is dropped first, so
a flood of new keys (addresses, forged desktop ids) costs memory up to that bound and no more.
A dropped key starts again with a full bucket, which is what a key unseen for long would have.
Pure: the caller gives the time.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets per key, at most ``max_keys`` of them (least recently used dropped)."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst and max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + max(now - then, 0.0) * self.rate_per_s)

    def retry_after(self, key: str, now: float) -> int | None:
        """Whole seconds until ``key`` may make a request, or None if it may now (no token
        is taken)."""
        tokens = self._tokens(key, now)
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate_per_s))

    def take(self, key: str, now: float) -> None:
        """Take one token from ``key``'s bucket (none below zero)."""
        tokens = max(self._tokens(key, now) - 1.0, 0.0)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def hit(self, key: str, now: float) -> int | None:
        """``retry_after``, and a token taken when the request may go on."""
        wait = self.retry_after(key, now)
        if wait is None:
            self.take(key, now)
        return wait

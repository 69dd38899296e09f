"""A progress bar on a terminal, for the command line's long work (``cvmc image sign``).

Drawn on standard error only when it is a terminal, at most five times a second, on one line
(carriage return); elsewhere (a pipe, a log, the journal) it writes nothing, so scripts and
logs see only the command's result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

__all__ = ["Progress"]

#: Characters of the bar itself.
WIDTH = 30
#: Least time between two drawings, in seconds.
MIN_INTERVAL_S = 0.2
_MIB = 1 << 20


class Progress:
    """``label [#####.....]  45%  1180/2620 MiB`` for ``total`` bytes of work."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(callable(isatty) and isatty())
        self.clock = clock
        self.done = 0
        self._drawn_at: float | None = None

    def line(self) -> str:
        """The bar as it stands (without the carriage return)."""
        fraction = 1.0 if self.total == 0 else min(self.done / self.total, 1.0)
        filled = int(fraction * WIDTH)
        return (
            f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {int(fraction * 100):3d}%  "
            f"{self.done // _MIB}/{self.total // _MIB} MiB"
        )

    def advance(self, count: int) -> None:
        """Count ``count`` more bytes done; redraw if it is time."""
        self.done += count
        now = self.clock()
        if self.enabled and (self._drawn_at is None or now - self._drawn_at >= MIN_INTERVAL_S):
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()

    def chunks(self, source: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``source``'s chunks through, counting each; finish at its end."""
        for chunk in source:
            self.advance(len(chunk))
            yield chunk
        self.finish()

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self.stream.write("\r" + self.line())
        self.stream.flush()

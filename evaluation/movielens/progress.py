"""A plain-text progress bar on stderr (no dependency): redrawn in place on a terminal, one
line per ~10% otherwise (logs, CI).

>>> import io
>>> out = io.StringIO()
>>> bar = ProgressBar("ease", stream=out, clock=iter(range(100)).__next__)
>>> bar(1, 2, 50, 100); bar(2, 2, 100, 100); bar.close()
>>> print(out.getvalue().strip().splitlines()[-1])
ease      [##############################] 100% chunk 2/2 rows 100/100 2s eta 0s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """A :data:`~evaluation.movielens.protocol.ProgressFn` that draws a bar."""

    def __init__(self, label: str, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.t0 = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._drawn = False

    def __call__(self, chunks_done: int, chunks_total: int, rows_done: int,
                 rows_total: int) -> None:
        frac = rows_done / rows_total if rows_total else 1.0
        elapsed = self.clock() - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        filled = round(WIDTH * frac)
        line = (f"{self.label:<9} [{'#' * filled}{'.' * (WIDTH - filled)}] {frac:4.0%} "
                f"chunk {chunks_done}/{chunks_total} rows {rows_done}/{rows_total} "
                f"{elapsed:.0f}s eta {eta:.0f}s")
        decile = int(frac * 10)
        if self.tty:
            self.stream.write("\r" + line)
            self._drawn = True
        elif decile != self._last_decile:
            self.stream.write(line + "\n")
        self._last_decile = decile
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()

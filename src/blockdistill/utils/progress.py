"""Progress of long loops as log lines, for runs without a terminal (CI, ``nohup``, a log file).

tqdm draws a bar on a terminal; written to a file, its carriage returns make one unreadable line
that appears only when the loop ends. :class:`LineProgress` prints instead, at most every
``min_interval_s`` and at the end, one line ``HH:MM:SS desc: done/total unit (rate/s, ETA)``
to stderr when stderr is not a terminal. On a terminal it prints nothing: the caller's tqdm bar
is the progress there.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["LineProgress"]


class LineProgress:
    """Log-line progress of ``total`` units (``None``: unknown).

    Args:
        desc: what is progressing, the line's prefix.
        total: the number of units, if known (the line then gives an ETA).
        unit: the units' name in the line.
        min_interval_s: the least time between two lines (the last update always prints).
        stream: where lines go (default ``sys.stderr``); nothing is printed if it is a terminal.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "ex", min_interval_s: float = 30.0,
                 stream: TextIO | None = None) -> None:
        self.desc, self.total, self.unit, self.min_interval_s = desc, total, unit, min_interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.lines = 0
        self._t0 = self._last = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        self.active = not (callable(isatty) and isatty())

    def update(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more units; print a line if due (``note`` is appended to it)."""
        self.done += n
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if not self.active or (now - self._last < self.min_interval_s and not finished):
            return
        self._last = now
        elapsed = max(now - self._t0, 1e-9)
        rate = self.done / elapsed
        of = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and not finished and rate > 0:
            eta = f", ETA {(self.total - self.done) / rate:.0f} s"
        extra = f"; {note}" if note else ""
        print(f"{time.strftime('%H:%M:%S')} {self.desc}: {self.done}{of} {self.unit} ({rate:.2f}/s, "
              f"{elapsed:.0f} s{eta}){extra}", file=self.stream, flush=True)
        self.lines += 1

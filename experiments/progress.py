"""A small progress bar on stderr (percentage, rate and time left), so that
long runs show where they are without an extra dependency."""
from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("training", total) as p: p.update(n)``."""

    def __init__(self, label: str, total: int, stream=None, min_interval_s: float = 0.5):
        self.label = label
        self.total = max(int(total), 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.min_interval_s = min_interval_s
        self.extra = ""
        self._drawn = None    # (done, extra) of the last line drawn

    def update(self, n: int = 1, extra: str = ""):
        self.done = min(self.done + int(n), self.total)
        if extra:
            self.extra = extra
        now = time.perf_counter()
        if now - self._last >= self.min_interval_s or self.done == self.total:
            self._last = now
            self._draw(now)

    def _draw(self, now):
        self._drawn = (self.done, self.extra)
        frac = self.done / self.total
        el = now - self.t0
        left = el / frac - el if frac > 0 else float("nan")
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        self.stream.write(f"\r{self.label}: [{bar}] {frac:5.1%} {el:6.1f} s, "
                          f"{left:6.1f} s left {self.extra}   ")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # The last line stays; draw it again only if it is out of date.
        if self._drawn != (self.done, self.extra):
            self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()
        return False

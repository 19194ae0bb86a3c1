"""Live progress for long Spark stages, estimated from finished tasks."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from pyspark import SparkContext

__all__ = ["Progress"]


class Progress:
    """Print ``label: done/total rows (pct) rows/s`` while Spark jobs run.

    Rows done are estimated from the share of finished tasks in the active
    stages, which is exact when partitions are equal in size (the embed stage
    makes them so). On a terminal the line redraws in place; otherwise a
    line is printed every ``interval`` seconds.
    """

    def __init__(
        self,
        sc: SparkContext,
        label: str,
        total_rows: int,
        *,
        interval: float = 5.0,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.sc = sc
        self.label = label
        self.total = max(int(total_rows), 0)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.5 if self.tty else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _fraction(self) -> float:
        tracker = self.sc.statusTracker()
        done = total = 0
        for sid in tracker.getActiveStageIds():
            info = tracker.getStageInfo(sid)
            if info is not None and info.numTasks > 1:
                done += info.numCompletedTasks
                total += info.numTasks
        return done / total if total else 0.0

    def _line(self, rows: int) -> str:
        secs = max(time.perf_counter() - self._t0, 1e-9)
        pct = 100.0 * rows / self.total if self.total else 100.0
        rate = f", {rows / secs:,.0f} rows/s" if rows else ""
        return f"  {self.label}: {rows:,}/{self.total:,} rows ({pct:.0f}%){rate}, {secs:.0f}s"

    def _loop(self) -> None:
        best = 0
        while not self._stop.wait(self.interval):
            best = max(best, int(self._fraction() * self.total))
            if self.tty:
                self.stream.write("\r" + self._line(best))
            else:
                self.stream.write(self._line(best) + "\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        self._t0 = time.perf_counter()
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name=f"progress-{self.label}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.tty:
                self.stream.write("\r" + self._line(self.total) + "\n")
                self.stream.flush()

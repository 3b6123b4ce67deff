"""Progress of a fit: a tqdm bar on a terminal or in a notebook, plain lines in a log."""

from __future__ import annotations

import sys
import time


def progress_bar(total: int, done: int, desc: str):
    """A bar with update(n) / set_postfix(**metrics) / close(): tqdm where it can draw (a terminal,
    a notebook), else `LineProgress` (output to a file or a pipe: no carriage returns)."""
    stream = sys.stderr
    if "ipykernel" in sys.modules or (hasattr(stream, "isatty") and stream.isatty()):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=done, unit="samples", unit_scale=True, desc=desc)
    return LineProgress(total, done, desc, stream)


class LineProgress:
    """One line at each evaluation point (set_postfix) and at the end: samples, percent, seconds, metrics."""

    def __init__(self, total: int, done: int, desc: str, stream):
        self.total, self.n, self.desc, self.stream = total, done, desc, stream
        self.started = time.perf_counter()
        self.metrics: dict = {}
        self.closed = False
        self.shown_at = None  # samples at the last line

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, **metrics) -> None:
        self.metrics = metrics
        self._line()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.shown_at != self.n:  # (the last evaluation point's line already says it)
                self._line(final=True)

    def _line(self, final: bool = False) -> None:
        self.shown_at = self.n
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        shown = " ".join(f"{k}={v}" for k, v in self.metrics.items())
        end = " done" if final else ""
        seconds = time.perf_counter() - self.started
        print(f"{self.desc}: {self.n:,}/{self.total:,} samples{share} {seconds:.1f} s {shown}{end}".rstrip(),
              file=self.stream, flush=True)  # fmt: skip

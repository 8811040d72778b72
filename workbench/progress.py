"""Progress that reaches a log: a tqdm bar on a terminal, periodic plain lines on stderr otherwise.

tqdm redraws one line with carriage returns, which a log file shows as one huge line at the end
(or, with ``disable=None``, not at all). :func:`progress_bar` keeps tqdm's interface (``update``,
``close``, ``set_postfix_str``, context manager) and, when stderr is not a terminal, prints a line
like ``embedding: 4096/12032 prompts (34%), 1m 02s elapsed, about 2m 00s left`` every
``interval_s`` seconds and one at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["progress_bar", "LogProgress", "format_duration"]

#: seconds between two plain progress lines in a log
DEFAULT_INTERVAL_S = 15.0


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1m 15s"``, ``3725`` -> ``"1h 02m"``, ``8.4`` -> ``"8s"``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


class LogProgress:
    """tqdm's interface, printing a plain line every ``interval_s`` seconds (and at the end)."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *,
                 interval_s: float = DEFAULT_INTERVAL_S, file: TextIO | None = None,
                 clock=time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.interval_s = float(interval_s)
        self._file = file
        self._clock = clock
        self._t0 = self._last = clock()
        self._postfix = ""
        self._closed = False

    def _line(self) -> str:
        elapsed = self._clock() - self._t0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        text = f"{self.desc}: {done} {self.unit}s"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f", {format_duration(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total and elapsed > 0:
            text += f", about {format_duration(elapsed / self.n * (self.total - self.n))} left"
        if self._postfix:
            text += f" [{self._postfix}]"
        return text

    def _print(self) -> None:
        print(self._line(), file=self._file or sys.stderr, flush=True)
        self._last = self._clock()

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if self._clock() - self._last >= self.interval_s:
            self._print()

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._postfix = str(text)

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = str(desc)

    def write(self, text: str) -> None:
        print(text, file=self._file or sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Off:
    """A bar that shows nothing (``enabled=False``)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += int(n)

    def set_postfix_str(self, *a: Any, **k: Any) -> None: ...
    def set_description(self, *a: Any, **k: Any) -> None: ...
    def write(self, text: str) -> None: ...
    def close(self) -> None: ...

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: Any) -> None: ...


def progress_bar(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True,
                 interval_s: float = DEFAULT_INTERVAL_S, **tqdm_kwargs: Any) -> Any:
    """A progress bar for ``total`` steps: tqdm on a terminal, :class:`LogProgress` lines when
    stderr is not one (logs, CI, pipes), nothing when ``enabled`` is false."""
    if not enabled:
        return _Off()
    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, **tqdm_kwargs)
    return LogProgress(total, desc, unit, interval_s=interval_s)

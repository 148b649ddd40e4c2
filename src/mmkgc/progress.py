"""Progress of long loops (feature extraction, captioning, description fusion) on a terminal or in a log.

On a terminal a rich progress bar is shown.  When stderr is not a terminal (output piped to a file, CI, a batch
job) -- where a bar shows nothing -- one line is written to stderr when the work starts, then at most every
``MMKGC_PROGRESS_SECONDS`` seconds (default 30), and when it ends::

    DB15K text: 0/12,842 to do
    DB15K text: 3,200/12,842 (24.9%) after 31 s, about 1.6 min left
    DB15K text: 12,842/12,842 done in 2.1 min
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

#: Default seconds between two progress lines when stderr is not a terminal.
DEFAULT_INTERVAL = 30.0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal and not CI (``CI`` set)."""
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("CI")


class IntervalReporter:
    """Writes ``description: done/total`` lines at most every ``interval`` seconds (see the module docstring).

    :param total: units of work (``> 0``).
    :param interval: seconds between lines (default ``MMKGC_PROGRESS_SECONDS`` or 30).
    :param stream: where the lines go (default stderr); ``clock``: a monotonic clock in seconds (tests).
    """

    def __init__(self, total: int, description: str, interval: float | None = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if interval is None:
            try:
                interval = float(os.environ.get("MMKGC_PROGRESS_SECONDS", DEFAULT_INTERVAL))
            except ValueError:
                interval = DEFAULT_INTERVAL
        self.total, self.description, self.interval = int(total), description, max(0.0, interval)
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.done = 0
        self.start = self.last = clock()
        self._write(f"{self.description}: 0/{self.total:,} to do")

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def advance(self, n: int = 1) -> None:
        """``n`` more units are done; writes a line when ``interval`` seconds passed since the last one."""
        self.done += int(n)
        now = self.clock()
        if now - self.last < self.interval or self.done >= self.total:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta = f", about {_duration(left)} left" if self.done else ""
        self._write(f"{self.description}: {self.done:,}/{self.total:,} ({100 * self.done / self.total:.1f}%) "
                    f"after {_duration(elapsed)}{eta}")

    def close(self) -> None:
        """The final line: all done (or how far it got)."""
        elapsed = self.clock() - self.start
        if self.done >= self.total:
            self._write(f"{self.description}: {self.total:,}/{self.total:,} done in {_duration(elapsed)}")
        else:
            self._write(f"{self.description}: stopped at {self.done:,}/{self.total:,} after {_duration(elapsed)}")


@contextlib.contextmanager
def progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Report the progress of ``total`` units as a context manager yielding ``advance(n)``: a rich bar on a
    terminal, :class:`IntervalReporter` lines otherwise, nothing when ``enabled`` is false or ``total`` is 0."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    if is_terminal():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn()) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return
    reporter = IntervalReporter(total, description)
    try:
        yield reporter.advance
    finally:
        reporter.close()


class DownloadProgress:
    """The progress-bar object pooch's ``HTTPDownloader(progressbar=...)`` drives (``total``, ``update``,
    ``reset``, ``close``, as tqdm), reporting bytes with :class:`IntervalReporter` lines.  Used when stderr is not a
    terminal or tqdm is not installed (tqdm is not a dependency of mmkgc).

    :param description: what is downloaded (``DB15K/train2id.txt``).
    """

    def __init__(self, description: str):
        self.description = description
        self.total = 0
        self._reporter: IntervalReporter | None = None

    def update(self, n: int) -> None:
        if self._reporter is None:
            self._reporter = IntervalReporter(max(int(self.total or 0), 1), f"{self.description} (bytes)")
        self._reporter.advance(n)

    def reset(self) -> None:
        if self._reporter is not None:
            self._reporter.done = 0

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.close()
            self._reporter = None


def download_progressbar(enabled: bool, description: str) -> bool | DownloadProgress:
    """What to pass as pooch's ``progressbar``: ``False`` (quiet), ``True`` (tqdm's bar, on a terminal with tqdm
    installed) or a :class:`DownloadProgress` (lines at intervals)."""
    if not enabled:
        return False
    import importlib.util

    if is_terminal() and importlib.util.find_spec("tqdm") is not None:
        return True
    return DownloadProgress(description)

"""The one progress display of the command line: ingest, mailbox reads, planning and apply.

``progress_for(as_json)`` picks how a command shows its progress, the same way for every job:

- **a terminal** (stderr is a TTY, no ``--json``): a live line drawn by ``rich`` for the stage
  under way: its name, a bar when the total is known, the count (``4,210/10,000``), the rate
  (``118/s``), the time left and the time spent. A finished stage stays on screen.
- **not a terminal** (cron, systemd, a pipe): quiet. A stage that runs longer than
  :data:`LOG_EVERY_SECONDS` writes a line on stderr every so often and one when it ends
  (``applying: 6,000/10,000 so far, about 33 s left, 121/s``, then ``applying:
  10,000/10,000 in 84.2 s, 119/s``), so that a journal shows a long apply is alive; a short
  one writes nothing, and a script reading the output sees what it always saw.
- **``--json``**: nothing; stdout carries the one JSON document and stderr stays for errors.

The service layer reports progress through plain callables (``progress(stage, done,
total)``); :meth:`Progress.update` is that callable, and :meth:`Progress.ingest` and
:meth:`Progress.apply` adapt the two older shapes (``(stage, count)`` and ``(done,
total)``). ``rich`` is imported only when a terminal is there to draw on.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import Task, TaskID

LOG_EVERY_SECONDS = 60.0
"""When stderr is not a terminal: how often a long stage writes a line while it runs (and how
long a stage must run to write its closing line)."""


RATE_AFTER_SECONDS = 0.5
"""A rate over less time than this says more about the clock than about the job: not shown."""


def _rate(done: int, seconds: float) -> str:
    return f", {done / seconds:,.0f}/s" if seconds >= RATE_AFTER_SECONDS and done else ""


def eta(done: int, total: int | None, seconds: float) -> str:
    """``, about 40 s left`` from the pace so far (empty when there is no total or pace)."""
    if total is None or not done or seconds < RATE_AFTER_SECONDS or done >= total:
        return ""
    left = (total - done) * seconds / done
    return f", about {left:,.0f} s left"


def _count(done: int, total: int | None) -> str:
    return f"{done:,}/{total:,}" if total is not None else f"{done:,}"


class _Lines:
    """Not a terminal: a stage running longer than ``every`` seconds writes a line every
    ``every`` seconds and one when it ends; a shorter one writes nothing."""

    def __init__(self, stream: IO[str], clock: Callable[[], float], every: float):
        self._stream = stream
        self._clock = clock
        self._every = every
        self._stage: str | None = None
        self._done = 0
        self._total: int | None = None
        self._ended: tuple[str, int, int | None] | None = None
        self._mark = clock()  # when the last stage ended (or the command began)
        self._started = self._mark
        self._last_line = self._mark

    def update(self, stage: str, done: int, total: int | None) -> None:
        if self._stage is None and (stage, done, total) == self._ended:
            return  # the same final count again: the stage was reported already
        now = self._clock()
        if stage != self._stage:
            self.end()
            # A stage reports its first count after some work: it began when the one before
            # it ended.
            self._stage, self._started, self._last_line = stage, self._mark, self._mark
        self._done, self._total = done, total
        if total is not None and done >= total:
            self.end()
        elif now - self._last_line >= self._every:
            self._last_line = now
            spent = now - self._started
            left, rate = eta(done, total, spent), _rate(done, spent)
            self._write(f"{stage}: {_count(done, total)} so far{left}{rate}")

    def end(self) -> None:
        if self._stage is None:
            return
        stage, self._stage = self._stage, None
        self._mark = self._clock()
        seconds = self._mark - self._started
        self._ended = (stage, self._done, self._total)
        if seconds >= self._every:
            self._write(
                f"{stage}: {_count(self._done, self._total)} in {seconds:.1f} s"
                f"{_rate(self._done, seconds)}"
            )

    def _write(self, line: str) -> None:
        click.echo(line, file=self._stream)


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        """Items per second over rich's recent samples (``-`` before there are any)."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-" if not speed else f"{speed:,.0f}/s", style="progress.data.speed")

    return Rate()


class _Live:
    """A terminal: rich draws the stage under way; a finished stage keeps its last line."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self._progress: RichProgress | None = None
        self._stage: str | None = None
        self._task: TaskID | None = None

    def _start(self) -> RichProgress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            _rate_column(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=Console(file=self._stream, force_terminal=True),
            refresh_per_second=8,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        progress.start()
        return progress

    def update(self, stage: str, done: int, total: int | None) -> None:
        if self._progress is None:
            self._progress = self._start()
        if stage != self._stage or self._task is None:
            self._finish_task(self._progress)
            self._stage = stage
            self._task = self._progress.add_task(stage, total=total, completed=done)
        self._progress.update(self._task, completed=done, total=total)

    def _finish_task(self, progress: RichProgress) -> None:
        if self._task is None:
            return
        task = progress.tasks[-1]
        if task.total is None:  # an open count: it ends at what it reached
            progress.update(self._task, total=task.completed)
        progress.stop_task(self._task)
        self._task = None

    def end(self) -> None:
        """Stop drawing (before the command prints its result); a later update starts anew."""
        if self._progress is None:
            return
        self._finish_task(self._progress)
        self._progress.stop()
        self._progress, self._stage = None, None


class Progress:
    """The progress of one command (see the module docstring); ``close()`` when it ends."""

    def __init__(self, display: _Lines | _Live | None):
        self._display = display

    @property
    def shown(self) -> bool:
        return self._display is not None

    def update(self, stage: str, done: int, total: int | None) -> None:
        """``stage`` has reached ``done`` of ``total`` (None: not known in advance)."""
        if self._display is not None:
            self._display.update(stage, done, total)

    __call__ = update

    def ingest(self, stage: str, count: int) -> None:
        """The shape :func:`syncengine.service.ingest` reports: a count, no total."""
        self.update(stage, count, None)

    def apply(self, done: int, total: int) -> None:
        """The shape the apply use cases report: actions done of the plan's."""
        self.update("applying", done, total)

    def close(self) -> None:
        if self._display is not None:
            self._display.end()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def progress_for(
    as_json: bool,
    *,
    stream: IO[str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    log_every: float = LOG_EVERY_SECONDS,
) -> Progress:
    """How this command shows progress: live on a terminal, quiet lines elsewhere, none with
    ``--json``."""
    if as_json:
        return Progress(None)
    out = stream if stream is not None else sys.stderr
    if _is_terminal(out):
        return Progress(_Live(out))
    return Progress(_Lines(out, clock, log_every))


def _is_terminal(stream: IO[str]) -> bool:
    """A terminal that can redraw a line (not ``TERM=dumb``, as Emacs shells set)."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or a stream-like object
        return False

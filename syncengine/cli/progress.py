"""The one progress display of the command line: ingest, mailbox reads, planning and apply.

``progress_for(as_json)`` picks how a command shows its progress, the same way for every job:

- **a terminal** (stderr is a TTY, no ``--json``): click's progress bar for the stage under
  way: its name, the bar (a moving one when the total is not known), the count
  (``4210/10000``), the percentage, the rate and the time left (``118/s, 0:00:49 left``, from
  the stage's pace so far). A finished stage stays on screen.
- **not a terminal** (cron, systemd, a pipe): quiet. A stage that runs longer than
  :data:`LOG_EVERY_SECONDS` writes a line on stderr every so often and one when it ends
  (``applying: 6,000/10,000 so far, about 33 s left, 121/s``, then ``applying:
  10,000/10,000 in 84.2 s, 119/s``), so that a journal shows a long apply is alive; a short
  one writes nothing, and a script reading the output sees what it always saw.
- **``--json``**: nothing; stdout carries the one JSON document and stderr stays for errors.

The service layer reports progress through plain callables (``progress(stage, done,
total)``); :meth:`Progress.update` is that callable, and :meth:`Progress.ingest` and
:meth:`Progress.apply` adapt the two older shapes (``(stage, count)`` and ``(done,
total)``). Not rich: installing it makes every ``import httpx`` load rich and pygments for
httpx's own command line, about 0.1 s on each command that talks to Exmail.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

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


def _left(done: int, total: int | None, seconds: float) -> str:
    """The time left as ``H:MM:SS`` from the pace so far (empty when not known yet)."""
    if total is None or not done or seconds < RATE_AFTER_SECONDS or done >= total:
        return ""
    minutes, secs = divmod(round((total - done) * seconds / done), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _count(done: int, total: int | None) -> str:
    return f"{done:,}/{total:,}" if total is not None else f"{done:,}"


class _Lines:
    """Not a terminal: a stage running longer than ``every`` seconds writes a line every
    ``every`` seconds and one when it ends; a shorter one writes nothing."""

    def __init__(self, stream: TextIO, clock: Callable[[], float], every: float):
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


def _nothing() -> Iterator[str]:
    yield from ()


class _Live:
    """A terminal: click's progress bar for the stage under way (count, bar, rate, time
    left); a finished stage keeps its last line."""

    def __init__(self, stream: TextIO, clock: Callable[[], float]):
        self._stream = stream
        self._clock = clock
        self._bar: ProgressBar[str] | None = None
        self._stage: str | None = None
        self._started = 0.0

    def update(self, stage: str, done: int, total: int | None) -> None:
        if stage != self._stage or self._bar is None:
            self.end()
            self._stage, self._started = stage, self._clock()
            self._bar = click.progressbar(
                iterable=_nothing(),  # no length hint: an open count when total is None
                length=total,
                label=f"{stage:<18}",
                show_pos=True,
                show_percent=True,
                show_eta=False,  # the time left is ours: from the stage's pace so far
                item_show_func=lambda rate: rate,
                file=self._stream,
                width=30,
            )
            self._bar.__enter__()
        bar = self._bar
        if total is not None and bar.length != total:  # the total became known or changed
            bar.length = total
        spent = self._clock() - self._started
        rate = _rate(done, spent).lstrip(", ")
        left = _left(done, total, spent)
        info = ", ".join(part for part in (rate, f"{left} left" if left else "") if part)
        bar.update(max(done - bar.pos, 0), info or None)

    def end(self) -> None:
        """Finish the stage's line (before the command prints its result)."""
        if self._bar is None:
            return
        bar, self._bar, self._stage = self._bar, None, None
        if bar.length is None:  # an open count: it ends at what it reached
            bar.length = bar.pos
        bar.finished = True
        bar.render_progress()
        bar.__exit__(None, None, None)


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
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    log_every: float = LOG_EVERY_SECONDS,
) -> Progress:
    """How this command shows progress: live on a terminal, quiet lines elsewhere, none with
    ``--json``."""
    if as_json:
        return Progress(None)
    out = stream if stream is not None else sys.stderr
    if _is_terminal(out):
        return Progress(_Live(out, clock))
    return Progress(_Lines(out, clock, log_every))


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that can redraw a line (not ``TERM=dumb``, as Emacs shells set)."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or a stream-like object
        return False

"""The new-mail watch loops, robust to every reading of the protocol we cannot confirm.

Gen 1 ``listen`` is documented only loosely (exmail-protocol.md A.4.2, protocol-decisions.md
"Robustness"): a server may hold the call (a long poll) or answer at once; a mail event may
carry ``Ver`` or come without it, the version bump arriving as a separate ``{"Ver":...}``
message. :class:`ListenLoop` works under each reading:

- it starts at the stored cursor, else at ``0`` as the reference says (never the local clock);
- it advances on any ``Ver`` it sees and de-duplicates mail by ``MailId`` (the ids seen are
  handed in and out, so the caller can keep them across restarts);
- it keeps ``min_interval`` seconds between the starts of two calls that brought no news, so a
  server that answers at once is not hammered (a backlog still drains at full speed);
- a transient failure (1002, HTTP 5xx, a timeout, a dropped connection) is logged and backed
  off exponentially, never the end of the watch; anything else is raised.

:class:`CountPoller` is the Gen 2 side (``mail/newcount`` per mailbox, no push) with the same
rule for transient failures. Both take the provider call, clock and sleep as arguments: no I/O
of their own, so a test drives them with the emulator or with a fake clock.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from syncengine.domain import MailEvent
from syncengine.errors import RetriableProviderError

log = logging.getLogger(__name__)

START_VERSION = "0"
MAX_SEEN_IDS = 5000
"""Mail ids remembered for de-duplication (the newest ones; a mail repeated later than 5,000
mails after its first delivery would be reported again)."""

Listen = Callable[[str, float], tuple[list[MailEvent], str]]
"""``listen(version, wait_seconds) -> (events, next_version)``: one Gen 1 ``listen`` call."""


@dataclass(frozen=True)
class WatchPacing:
    """How the loops pace themselves.

    ``poll_seconds`` is the longest single listen wait (above the server's usual 25 s hold);
    ``min_interval`` the least time between two listen calls that brought no news;
    ``backoff_initial`` doubles on each consecutive transient failure up to ``backoff_max``.
    """

    poll_seconds: float = 30.0
    min_interval: float = 1.0
    backoff_initial: float = 1.0
    backoff_max: float = 60.0


class Backoff:
    """Consecutive transient failures -> the pause before the next try (doubling, capped)."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self.total_failures = 0

    def failed(self) -> float:
        self.failures += 1
        self.total_failures += 1
        return float(min(self.maximum, self.initial * 2.0 ** (self.failures - 1)))

    def succeeded(self) -> None:
        self.failures = 0


class SeenMail:
    """The ids of mail already reported, oldest first, at most ``limit`` of them."""

    def __init__(self, ids: Iterable[str] = (), limit: int = MAX_SEEN_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict((i, None) for i in ids if i)
        self._limit = limit
        self._trim()

    def _trim(self) -> None:
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, mail_id: object) -> bool:
        return mail_id in self._ids

    def add(self, mail_id: str) -> None:
        if mail_id:
            self._ids[mail_id] = None
            self._ids.move_to_end(mail_id)
            self._trim()

    def ids(self) -> list[str]:
        return list(self._ids)


class ListenLoop:
    """Gen 1 ``listen`` calls one after the other until a deadline (see the module doc).

    :meth:`batches` yields ``(fresh_events, version)`` after each successful call: the events
    not seen before (not yet marked seen: the caller calls :meth:`mark_seen` once it has
    handled one, so an event it failed to hand on comes again) and the version to listen from.
    """

    def __init__(
        self,
        listen: Listen,
        *,
        version: str | None,
        seen: SeenMail | None = None,
        pacing: WatchPacing = WatchPacing(),
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._listen = listen
        self.version = version or START_VERSION
        self.seen = seen if seen is not None else SeenMail()
        self.pacing = pacing
        self._clock = clock
        self._sleep = sleep
        self.backoff = Backoff(pacing.backoff_initial, pacing.backoff_max)
        self.calls = 0
        self._quiet_since: float | None = None  # start of the last call that brought no news

    def mark_seen(self, event: MailEvent) -> None:
        self.seen.add(event.mail_id)

    def _pause(self, seconds: float, deadline: float | None) -> bool:
        """Sleep up to ``seconds`` (not past the deadline); False when the deadline is reached."""
        if deadline is not None:
            seconds = min(seconds, deadline - self._clock())
            if seconds <= 0:
                return False
        if seconds > 0:
            self._sleep(seconds)
        return True

    def batches(self, deadline: float | None) -> Iterator[tuple[list[MailEvent], str]]:
        while True:
            if self._quiet_since is not None:
                rest = self.pacing.min_interval - (self._clock() - self._quiet_since)
                if rest > 0 and not self._pause(rest, deadline):
                    return
            wait = self.pacing.poll_seconds
            started = self._clock()
            if deadline is not None:
                wait = min(wait, deadline - started)
                if wait <= 0:
                    return
            self.calls += 1
            try:
                events, version = self._listen(self.version, wait)
            except RetriableProviderError as exc:
                pause = self.backoff.failed()
                log.warning("listen failed (%s); trying again in %.1f s", exc, pause)
                self._quiet_since = None
                if not self._pause(pause, deadline):
                    return
                continue
            self.backoff.succeeded()
            fresh = [e for e in events if not e.mail_id or e.mail_id not in self.seen]
            news = bool(fresh) or version != self.version
            self._quiet_since = None if news else started
            self.version = version
            yield fresh, version


class CountPoller:
    """Gen 2: ``mail/newcount`` of each mailbox every ``interval`` seconds.

    :meth:`rounds` yields ``(email, count)`` for each successful call; a transient failure is
    logged and skipped (that mailbox keeps its last count), and consecutive failures lengthen
    the pause between rounds.
    """

    def __init__(
        self,
        count: Callable[[str], int],
        users: list[str],
        *,
        interval: float,
        pacing: WatchPacing = WatchPacing(),
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._count = count
        self.users = users
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self.backoff = Backoff(pacing.backoff_initial, pacing.backoff_max)

    def rounds(self, deadline: float | None) -> Iterator[tuple[str, int]]:
        while True:
            started = self._clock()
            failed = False
            for email in self.users:
                try:
                    value = self._count(email)
                except RetriableProviderError as exc:
                    failed = True
                    log.warning("mail/newcount for %s failed (%s); next round", email, exc)
                    continue
                yield email, value
            pause = self.interval - (self._clock() - started)
            if failed:
                pause = max(pause, self.backoff.failed())
            else:
                self.backoff.succeeded()
            now = self._clock()
            if deadline is not None:
                if now >= deadline:
                    return
                pause = min(pause, deadline - now)
            self._sleep(max(0.0, pause))

"""One policy for calls to a remote service: retry of transient answers, pacing, a time budget.

Every call the engine makes to Exmail goes through one :class:`CallPolicy` per process (built
once by the service layer's ``Engine``): the provider paces *every* HTTP request it sends
(reads, writes, token fetches) with the shared :class:`Pacer`, so ``[apply] rate_per_second``
is a true cap on what the process sends; reads are retried call by call
(:meth:`CallPolicy.retry_read`); writes are retried action by action by the executor, which
looks at the live object before redoing a write (:meth:`CallPolicy.retrying`), with the same
backoff, the same budget and the same counters.

The other outgoing calls (notifications, new-mail forwarding, the HTTP HR source) use the same
:class:`RetryPolicy` type with their own settings.

Not pure (it sleeps and reads a clock), but it knows nothing of HTTP or Exmail: the caller says
which exceptions are transient through ``retriable``, and an exception may carry a
``retry_after`` (seconds, from a ``Retry-After`` header) that lengthens the next pause.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from tenacity import (
    AttemptManager,
    DoAttempt,
    DoSleep,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently one call (or one action) is retried.

    ``max_attempts`` counts tries of the same call, the first included. Pauses grow
    exponentially from ``backoff_initial`` up to ``backoff_max`` with up to ``jitter`` seconds
    of random spread, and are at least the ``retry_after`` the failure asked for (capped at
    ``backoff_max``). ``max_retry_seconds`` caps the pauses of one call.
    """

    max_attempts: int = 8
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    max_retry_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.backoff_initial, self.backoff_max, self.jitter, self.max_retry_seconds) < 0:
            raise ValueError("backoff, jitter and max_retry_seconds must not be negative")

    def retrying(
        self,
        retriable: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], None] = time.sleep,
        budget: Budget | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` for this policy; ``budget`` (shared by a whole run) stops
        retrying once the run has spent its allowance of backoff."""
        stops: list[stop_base] = [
            stop_after_attempt(self.max_attempts),
            _StopAfterBackoff(self.max_retry_seconds),
        ]
        if budget is not None:
            stops.append(_StopWhenBudgetSpent(budget))
        backoff = wait_exponential_jitter(
            multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.jitter
        )
        cap = self.backoff_max

        def wait(state: RetryCallState) -> float:
            pause = backoff(state)
            exc = state.outcome.exception() if state.outcome is not None else None
            asked = getattr(exc, "retry_after", None)
            if isinstance(asked, int | float) and asked > 0:
                pause = max(pause, min(float(asked), cap))
            return pause

        def before_sleep(state: RetryCallState) -> None:
            pause = state.upcoming_sleep or 0.0
            if budget is not None:
                budget.spend(pause)
            exc = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and exc is not None:
                on_retry(exc)

        return _LeanFirstTry(
            retry=retry_if_exception(retriable),
            wait=wait,
            stop=stop_any(*stops),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def call(
        self,
        fn: Callable[[], T],
        retriable: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], None] = time.sleep,
        budget: Budget | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """``fn()``, tried again on a retriable failure under this policy."""
        return self.retrying(retriable, sleep=sleep, budget=budget, on_retry=on_retry)(fn)


class _FirstTry(AttemptManager):
    """The first try of a loop: keeps its failure, as tenacity's own attempt does (the
    ``with`` block swallows it; the loop then decides), with no call state built for it."""

    def __init__(self) -> None:  # no RetryCallState: the loop builds one on a failure only
        self.failure: tuple[type[BaseException], BaseException, TracebackType | None] | None
        self.failure = None

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if exc_type is not None and exc_value is not None:
            self.failure = (exc_type, exc_value, traceback)
            return True  # swallowed, as tenacity's AttemptManager does
        return None


class _LeanFirstTry(Retrying):
    """tenacity's ``Retrying`` whose first try runs outside its machinery.

    The usual action or call succeeds at once, and tenacity's loop costs about 25 µs for
    that one try (its call state, two rounds of its action list): a tenth of an apply's
    client CPU per create beside the rest. A first failure enters tenacity's own loop as
    its first attempt (the same call state: attempt 1, its failure, the time since it
    started), so the tries, pauses, stop conditions and the error raised are tenacity's.
    ``__call__`` is tenacity's, untouched.
    """

    def __iter__(self) -> Generator[AttemptManager, None, None]:
        started = time.monotonic()
        first = _FirstTry()
        yield first
        if first.failure is None:
            return
        self.begin()
        state = RetryCallState(self, fn=None, args=(), kwargs={})
        state.start_time = started
        state.set_exception(first.failure)
        while True:  # tenacity's own loop (BaseRetrying.__iter__) from the first outcome on
            do = self.iter(retry_state=state)
            if isinstance(do, DoAttempt):
                yield AttemptManager(retry_state=state)
            elif isinstance(do, DoSleep):
                state.prepare_for_next_attempt()
                self.sleep(do)
            else:
                return


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """The pause a ``Retry-After`` header value asks for: seconds, or an HTTP date (measured
    from ``now``, epoch seconds, default the current time); None when absent or unreadable.
    Every outgoing HTTP client of the engine reads the header through this."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _StopAfterBackoff(stop_base):
    """Stop when the backoff slept so far plus the next one, or the time since the first
    call, would pass ``cap`` seconds. Counting the sleeps (not only the wall clock) keeps the
    cap meaningful when tests inject a sleep that returns at once."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> bool:
        upcoming = retry_state.upcoming_sleep or 0.0
        elapsed = retry_state.seconds_since_start or 0.0
        return retry_state.idle_for + upcoming > self.cap or elapsed + upcoming > self.cap


class Budget:
    """Seconds of backoff a whole run may spend (shared by its threads); ``0`` = no limit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._spent = 0.0
        self._lock = threading.Lock()

    @property
    def spent(self) -> float:
        with self._lock:
            return self._spent

    def spend(self, pause: float) -> None:
        with self._lock:
            self._spent += pause

    def allows(self, pause: float) -> bool:
        if self.seconds <= 0:
            return True
        with self._lock:
            return self._spent + pause <= self.seconds


class _StopWhenBudgetSpent(stop_base):
    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.budget.allows(retry_state.upcoming_sleep or 0.0)


class Pacer:
    """A thread-safe token bucket: ``rate`` calls per second, at most ``burst`` saved up.

    ``acquire()`` takes one token, sleeping (outside the lock) until one is there. ``rate`` 0
    means unlimited. Clock and sleep are injectable for tests.

    ``free_first_second``: a call whose turn (its token's time) falls within one second of this
    pacer's first call goes at once instead of sleeping until its turn. Every one-second window
    still holds no more calls than without it: the calls moved earlier all land in the window
    that starts with the first call, which held exactly them (and no call comes after its turn
    anyway). A short run (a quiet night's three reads) then never sleeps; a long one is paced
    from its second second on as before.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        free_first_second: bool = False,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()
        self._free_first_second = free_first_second
        self._first: float | None = None  # when the first call was let through

    def acquire(self) -> float:
        """Take one token; returns the seconds waited.

        A token is reserved at once (the balance may go negative: a debt later callers queue
        behind), then the caller sleeps until its token has accrued. No polling loop, so a
        rounding error cannot make it spin, and callers are served in arrival order.
        """
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            if self._first is None:
                self._first = now
            elapsed = max(0.0, now - self._last)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._last = now
            self._tokens -= 1.0
            if self._tokens >= 0.0:
                return 0.0
            pause = -self._tokens / self.rate
            if self._free_first_second and now + pause < self._first + 1.0:
                return 0.0  # its turn is inside the first window anyway (see the docstring)
        self._sleep(pause)
        return pause


class CallStats:
    """What a process sent: requests per call name, and retries per call name (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._retries: Counter[str] = Counter()

    def request(self, name: str) -> None:
        with self._lock:
            self._requests[name] += 1

    def retry(self, name: str) -> None:
        with self._lock:
            self._retries[name] += 1

    def snapshot(self) -> CallCounts:
        with self._lock:
            return CallCounts(dict(self._requests), dict(self._retries))


@dataclass(frozen=True)
class CallCounts:
    """A moment's totals of :class:`CallStats`; ``since`` gives what a run added."""

    requests: dict[str, int]
    retries: dict[str, int]

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def since(self, earlier: CallCounts) -> CallCounts:
        def minus(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
            return {k: v - then.get(k, 0) for k, v in now.items() if v - then.get(k, 0)}

        return CallCounts(
            minus(self.requests, earlier.requests), minus(self.retries, earlier.retries)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.total_requests,
            "retries": self.total_retries,
            "by_call": dict(sorted(self.requests.items())),
            "retries_by_call": dict(sorted(self.retries.items())),
        }


_scope = threading.local()


class action_scope:
    """``with action_scope():`` marks the calls made by this thread as parts of one action
    whose whole attempt the executor retries (looking before it redoes a write): inside it a
    read is tried once, so that retries never nest (8 action tries x 8 read tries)."""

    def __enter__(self) -> None:
        _scope.depth = getattr(_scope, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _scope.depth -= 1


def in_action_scope() -> bool:
    return getattr(_scope, "depth", 0) > 0


class CallPolicy:
    """The one policy every Exmail call of a process follows (see the module docstring).

    ``pacer`` caps the requests per second of the whole process; ``retry`` says how each call
    (reads) or action (writes) is retried; ``budget`` is the backoff allowance of a run (reset
    by :meth:`new_run`); ``stats`` counts requests and retries for the run reports.
    """

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        *,
        rate_per_second: float = 0.0,
        burst: int = 1,
        budget_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        free_first_second: bool = False,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.pacer = Pacer(rate_per_second, burst, clock=clock, sleep=sleep,
                           free_first_second=free_first_second)  # fmt: skip
        self.budget_seconds = budget_seconds
        self.budget = Budget(budget_seconds)
        self.stats = CallStats()

    def new_run(self) -> None:
        """A new run starts with the whole budget again."""
        self.budget = Budget(self.budget_seconds)

    def pace(self, name: str) -> None:
        """Called before every request is sent: waits for the shared pace, counts it."""
        self.pacer.acquire()
        self.stats.request(name)

    def retry_read(
        self, name: str, fn: Callable[[], T], retriable: Callable[[BaseException], bool]
    ) -> T:
        """A read, repeated on a retriable failure (reads are safe to repeat); tried once
        inside an :class:`action_scope`, whose own loop retries the whole action."""
        if in_action_scope():
            return fn()
        # The usual read succeeds at once: no retry loop is built for it (a tenacity loop per
        # call was a tenth of a Gen 1 full read's client CPU, one call per member). A first
        # retriable failure enters the loop as its first attempt: same tries, same backoff.
        try:
            return fn()
        except BaseException as exc:
            if not retriable(exc) or self.retry.max_attempts <= 1:
                raise
            first: list[BaseException] = [exc]

        def attempt() -> T:
            if first:
                raise first.pop()
            return fn()

        return self.retry.call(
            attempt,
            retriable,
            sleep=self.sleep,
            budget=self.budget,
            on_retry=lambda _exc: self.stats.retry(name),
        )

    def retrying(
        self,
        name: str,
        retriable: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> Retrying:
        """The tenacity loop for one action's writes (the executor looks before redoing)."""
        return self.retry.retrying(
            retriable,
            sleep=sleep or self.sleep,
            budget=self.budget,
            on_retry=lambda _exc: self.stats.retry(name),
        )

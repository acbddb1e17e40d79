"""What one running emulator app holds besides the directory: faults, RNG, rate windows,
the call log and the wake-up signal for ``listen``.

Faults are rolled from one seeded RNG under a lock, so a given ``rng_seed`` and call order
give the same failures every run. The call log records every API call (never control calls)
with its endpoint, method, HTTP status, errcode and duration.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from syncengine.emulator.model import Directory
from syncengine.emulator.options import (
    GEN1_TOKEN_LIFETIME,
    GEN2_TOKEN_LIFETIME,
    EmulatorOptions,
    Faults,
)

MAX_CALL_LOG = 200_000


@dataclass(frozen=True)
class Roll:
    latency_ms: float
    fail: bool  # HTTP 503
    drop: bool  # connection dropped
    drop_when: str  # "before" | "after" the call takes effect
    busy: bool  # API-level "system busy" (-1 / 1002)


class Notifier:
    """Broadcast wake-up for long polls: waiters take the current Event, a wake sets it and
    installs a fresh one. Safe to call :meth:`wake_threadsafe` from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def current(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._event is None:
            self._loop = loop
            self._event = asyncio.Event()
        return self._event

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    def wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake()
        else:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed in between
                pass


class Runtime:
    """The mutable side of one emulator app (shared by its handlers and middleware)."""

    def __init__(self, api: str, directory: Directory, options: EmulatorOptions):
        self.api = api
        self.directory = directory
        self.options = options
        self.faults = Faults.from_options(options)
        self.lock = threading.Lock()
        self.rng = random.Random(options.rng_seed)
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALL_LOG)
        self.call_seq = 0
        self._windows: dict[str, deque[float]] = {}
        self.notifier = Notifier()
        self.closing = False
        self.listen_waiting = 0  # long polls parked right now (event-loop thread only)
        directory.add_listener(self.notifier.wake_threadsafe)

    # -- faults -------------------------------------------------------------------------

    def set_faults(self, changes: dict[str, Any]) -> Faults:
        changes = dict(changes)
        with self.lock:
            for key in ("seed", "rng_seed"):
                if key in changes:
                    value = changes.pop(key)
                    self.rng = random.Random(None if value is None else int(value))
            self.faults = self.faults.updated(changes)
            self._windows.clear()
            return self.faults

    def roll(self) -> Roll:
        """The faults one call suffers, drawn from the seeded RNG."""
        with self.lock:
            f = self.faults
            fail = f.fail_rate > 0 and self.rng.random() < f.fail_rate
            drop = not fail and f.drop_rate > 0 and self.rng.random() < f.drop_rate
            busy = not (fail or drop) and f.busy_rate > 0 and self.rng.random() < f.busy_rate
            return Roll(f.latency_ms, fail, drop, f.drop_when, busy)

    def allow(self, token: str) -> bool:
        """Sliding one-second window of calls per token."""
        with self.lock:
            limit = self.faults.rate_limit_per_token
            if limit <= 0:
                return True
            now = time.monotonic()
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= limit:
                return False
            window.append(now)
            return True

    def token_lifetime(self) -> float:
        with self.lock:
            if self.faults.token_lifetime is not None:
                return self.faults.token_lifetime
        return GEN1_TOKEN_LIFETIME if self.api == "v1" else GEN2_TOKEN_LIFETIME

    def listen_hold(self) -> float:
        with self.lock:
            return self.faults.listen_hold

    # -- call log -----------------------------------------------------------------------

    def record(
        self,
        endpoint: str,
        method: str,
        status: int,
        errcode: int | None,
        ms: float,
        dropped: bool = False,
    ) -> None:
        with self.lock:
            self.call_seq += 1
            self.calls.append(
                {
                    "seq": self.call_seq,
                    "endpoint": endpoint,
                    "method": method,
                    "status": status,
                    "errcode": errcode,
                    "ms": round(ms, 3),
                    "at": round(time.time() - ms / 1000.0, 6),  # when the request arrived
                    "dropped": dropped,
                }
            )

    def calls_since(self, since: int) -> dict[str, Any]:
        with self.lock:
            calls = [c for c in self.calls if c["seq"] > since]
            counts = Counter(c["endpoint"] for c in calls)
            return {"calls": calls, "counts": dict(counts), "last": self.call_seq}

    def clear_calls(self) -> None:
        with self.lock:
            self.calls.clear()
